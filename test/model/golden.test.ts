/**
 * Cross-language parity on the model folder's golden case (docs/architecture.md, "The golden case"):
 * TS preprocessing vs the Python input tensor, ONNX Runtime outputs vs golden.json, and the
 * post-processed mask vs the Python evaluator's mask.
 */
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import * as ort from 'onnxruntime-node'
import sharp from 'sharp'
import { decodeImage, letterbox } from '../../src/image/preprocess.js'
import { postprocess } from '../../src/image/postprocess.js'
import { loadGolden, loadModelFolder } from '../../src/model/manifest.js'
import { createTokenizer } from '../../src/model/tokenizer.js'
import { DEFAULT_MODEL_DIR } from '../helper.js'

const ROOT = path.resolve(new URL('../..', import.meta.url).pathname)
// the float model the export made, and the shipped default (its INT8 variant, with its own golden case)
const MODEL_DIRS = [...new Set([path.join(ROOT, 'models/vlt-refshapes'), DEFAULT_MODEL_DIR])]
const present = MODEL_DIRS.filter((d) => existsSync(path.join(d, 'model.json')))

if (present.length === 0) {
  t.comment(`no model folder at ${MODEL_DIRS.join(', ')}`)
  t.pass('skipped: no model folder')
} else {
  const stats = (a: Float32Array, b: Float32Array): { mean: number, max: number } => {
    let sum = 0
    let max = 0
    for (let i = 0; i < a.length; i++) {
      const d = Math.abs(a[i] - b[i])
      sum += d
      if (d > max) max = d
    }
    return { mean: sum / a.length, max }
  }

  for (const MODEL_DIR of present) {
    t.test(`golden case of ${path.relative(ROOT, MODEL_DIR)}`, async (t) => {
      const { manifest, vocab, graphs } = await loadModelFolder(MODEL_DIR)
      const golden = (await loadGolden(manifest))!
      t.ok(golden, 'model.json names a golden case')
      const g = golden.case
      const S = manifest.input.size

      const tokenizer = createTokenizer(vocab, { maxWords: manifest.maxWords, padId: manifest.vocab.padId, unkId: manifest.vocab.unkId })
      t.strictSame(tokenizer.tokenize(g.expression).ids, g.tokens, 'tokenizer ids equal golden.tokens')

      const imageBytes = readFileSync(path.join(MODEL_DIR, g.image))
      const decoded = await decodeImage(imageBytes, { maxPixels: 1e8 })
      const { data: input, geometry } = await letterbox(decoded, manifest.input)
      t.equal(input.length, 3 * S * S)
      t.strictSame(golden.case.input.shape, [1, 3, S, S])
      const pre = stats(input, golden.input)
      t.comment(`preprocessing parity: mean |Δ| = ${(pre.mean * 255).toFixed(3)}/255, max |Δ| = ${(pre.max * 255).toFixed(1)}/255`)
      t.ok(pre.mean <= 1 / 255, `mean |Δ| ${pre.mean} ≤ 1/255`)
      const lb = (g as unknown as { letterbox?: { nw: number, nh: number, dx: number, dy: number } }).letterbox
      if (lb !== undefined) t.match(geometry, { nw: lb.nw, nh: lb.nh, dx: lb.dx, dy: lb.dy }, 'letterbox geometry equals Python\'s')

      // What the service runs: the split graphs when the folder lists them, else model.onnx.
      const open = async (f: string) => await ort.InferenceSession.create(f, { executionProviders: ['cpu'], intraOpNumThreads: 1 })
      const sessions = graphs.split !== undefined ? [await open(graphs.split.encoderFile), await open(graphs.split.headFile)] : [await open(graphs.modelFile!)]
      t.teardown(async () => { for (const s of sessions) await s.release() })
      const run = async (image: Float32Array): Promise<Record<string, Float32Array>> => {
        const feeds: Record<string, ort.Tensor> = {
          image: new ort.Tensor('float32', image, [1, 3, S, S]),
          tokens: new ort.Tensor('int64', BigInt64Array.from(g.tokens.map(BigInt)), [1, manifest.maxWords]),
        }
        let out = sessions.length === 1 ? await sessions[0].run(feeds) : await sessions[0].run({ image: feeds.image })
        if (sessions.length === 2) out = await sessions[1].run({ ...out, tokens: feeds.tokens })
        return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]))
      }

      // 1. The Python input tensor through ONNX Runtime: within golden.json's atol.
      const exact = await run(golden.input)
      const atol = g.tolerance.atol
      for (const [name, want] of Object.entries(golden.outputs)) {
        const s = stats(exact[name], want)
        t.comment(`golden input → ${name}: max |Δ| = ${s.max.toExponential(2)}`)
        t.ok(s.max <= atol, `${name} within atol ${atol}`)
      }

      // 2. The TS input tensor through ONNX Runtime: close to golden (the inputs differ by rounding).
      // A quantized graph's uint8 activations turn that rounding into whole quantization steps, so its
      // outputs may differ by up to 5 % of their mean magnitude; the mask check (3.) bounds the effect.
      const quantized = 'quantization' in (JSON.parse(readFileSync(path.join(MODEL_DIR, 'model.json'), 'utf8')) as object)
      const ours = await run(input)
      for (const [name, want] of Object.entries(golden.outputs)) {
        const s = stats(ours[name], want)
        const bound = quantized ? Math.max(0.05, 0.05 * want.reduce((a, x) => a + Math.abs(x), 0) / want.length) : 0.05
        t.comment(`TS preprocessing → ${name}: max |Δ| = ${s.max.toExponential(2)}, mean |Δ| = ${s.mean.toExponential(2)}`)
        t.ok(s.mean <= bound, `${name} mean |Δ| ${s.mean} ≤ ${bound}`)
      }

      // 3. Post-processing vs the Python evaluator's mask at the image's size.
      const maskFile = g.mask!
      const { data: pyMask, info } = await sharp(path.join(MODEL_DIR, maskFile.file)).toColourspace('b-w').raw().toBuffer({ resolveWithObject: true })
      t.strictSame([info.width, info.height], [maskFile.width, maskFile.height])
      t.strictSame([geometry.width, geometry.height], [maskFile.width, maskFile.height])
      const thr = maskFile.threshold ?? manifest.threshold
      for (const [label, logits, maxFraction] of [['golden logits', golden.outputs.mask_logits, 0], ['TS pipeline', ours.mask_logits, 0.01]] as const) {
        const m = postprocess(logits, manifest.maskSize, geometry, thr)
        let diff = 0
        for (let i = 0; i < pyMask.length; i++) if ((pyMask[i] > 127) !== (m.mask[i] > 127)) diff++
        const frac = diff / pyMask.length
        t.comment(`${label} → mask: ${diff} of ${pyMask.length} pixels differ from the Python mask (${(frac * 100).toFixed(3)}%)`)
        t.ok(frac <= Math.max(maxFraction, 0.001), `${label}: mask agrees with Python's`)
      }
    })
  }
}
