/**
 * The split graphs on the real model folder (skipped when models/vlt-refshapes is absent):
 * image_encoder ∘ head equals model.onnx, K expressions on one image (one backbone pass) equal K
 * separate requests on model.onnx, a repeated image is a feature-cache hit, and the cache stays
 * within its size. A folder that ships only the split graphs (model.json without `onnx`) serves
 * the same answers: the first comparison is skipped when the folder has no model.onnx (the export
 * checked the split pair against PyTorch), and K-in-one is compared with K requests on the pair.
 */
import t, { type Test } from 'tap'
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import * as ort from 'onnxruntime-node'
import sharp from 'sharp'
import { buildApp } from '../../src/app.js'
import type { EngineHooks } from '../../src/engine/engine.js'
import { GRAPH_OUTPUTS as OUT } from '../../src/engine/protocol.js'
import { loadModelFolder } from '../../src/model/manifest.js'
import { createSegmenterFromFolder, type Segmenter } from '../../src/model/segmenter.js'
import { bothHooks, form, silentLogger, testConfig } from '../helper.js'

const MODEL_DIR = path.resolve(new URL('../../models/vlt-refshapes', import.meta.url).pathname)

// Seven segmenters on the real model, each starting its own worker threads: on a busy machine
// that alone takes longer than the suite's default per-file timeout.
t.setTimeout(300_000)

if (!existsSync(path.join(MODEL_DIR, 'model.json'))) {
  t.comment(`no model folder at ${MODEL_DIR}`)
  t.pass('skipped: no model folder')
} else {
  const modelJson = JSON.parse(readFileSync(path.join(MODEL_DIR, 'model.json'), 'utf8'))
  const noWhole = modelJson.onnx === undefined ? 'the model folder ships no model.onnx' : false
  const golden = JSON.parse(readFileSync(path.join(MODEL_DIR, 'golden.json'), 'utf8'))
  const goldenImage = readFileSync(path.join(MODEL_DIR, golden.image))
  const maxDiff = (a: Float32Array, b: Float32Array): number => {
    let m = a.length === b.length ? 0 : Infinity
    for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
    return m
  }
  const segmenter = async (t: Test, opts: { splitGraphs?: boolean, featureCacheMb?: number, workers?: number, hooks?: EngineHooks, dir?: string } = {}): Promise<Segmenter> => {
    const s = await createSegmenterFromFolder({
      ...testConfig({ workers: opts.workers ?? 1, maxBatch: 8, queueSize: 16, maxImagePixels: 1e8, featureCacheMb: opts.featureCacheMb ?? 64 }),
      modelPath: opts.dir ?? MODEL_DIR,
      splitGraphs: opts.splitGraphs,
      hooks: opts.hooks,
      logger: silentLogger,
    })
    t.teardown(() => s.close())
    await s.started
    return s
  }
  const req = (expressions: string[], image = goldenImage) => ({ image, expressions, deadline: Date.now() + 60_000 })

  t.test('image_encoder ∘ head equals model.onnx within 1e-4 (batch 3, features repeated along the batch)', { skip: noWhole }, async (t) => {
    const { manifest } = await loadModelFolder(MODEL_DIR)
    t.ok(manifest.split, 'model.json lists the split graphs')
    const open = (f: string) => ort.InferenceSession.create(path.join(MODEL_DIR, f), { intraOpNumThreads: 1 })
    const [whole, enc, head] = await Promise.all([open(manifest.onnx!.file), open(manifest.split!.image_encoder.file), open(manifest.split!.head.file)])
    const S = manifest.input.size
    const L = manifest.maxWords
    const B = 3
    const image = new Float32Array(B * 3 * S * S)
    let seed = 7
    for (let i = 0; i < image.length; i++) { seed = (seed * 1103515245 + 12345) >>> 0; image[i] = (seed >>> 8) / 2 ** 24 }
    const tokens = new BigInt64Array(B * L)
    for (let b = 0; b < B; b++) golden.tokens.forEach((v: number, i: number) => { tokens[b * L + i] = BigInt(i === 0 ? v + b : v) })
    const ref = await whole.run({ image: new ort.Tensor('float32', image, [B, 3, S, S]), tokens: new ort.Tensor('int64', tokens, [B, L]) })
    const names = manifest.split!.image_encoder.outputs
    const feats = await enc.run({ image: new ort.Tensor('float32', image, [B, 3, S, S]) })
    const got = await head.run({ ...Object.fromEntries(names.map((n) => [n, feats[n]])), tokens: new ort.Tensor('int64', tokens, [B, L]) })
    for (const n of OUT) t.ok(maxDiff(ref[n].data as Float32Array, got[n].data as Float32Array) <= 1e-4, `${n}: max |Δ| ${maxDiff(ref[n].data as Float32Array, got[n].data as Float32Array)} ≤ 1e-4`)

    // One image's features repeated K times against K different token rows (what the worker builds).
    const one = await enc.run({ image: new ort.Tensor('float32', image.subarray(0, 3 * S * S), [1, 3, S, S]) })
    const rep: Record<string, ort.Tensor> = { tokens: new ort.Tensor('int64', tokens, [B, L]) }
    for (const n of names) {
      const d = one[n].data as Float32Array
      const x = new Float32Array(B * d.length)
      for (let b = 0; b < B; b++) x.set(d, b * d.length)
      rep[n] = new ort.Tensor('float32', x, [B, ...one[n].dims.slice(1)])
    }
    const repOut = await head.run(rep)
    const wholeRep = await whole.run({ image: new ort.Tensor('float32', (() => { const x = new Float32Array(B * 3 * S * S); for (let b = 0; b < B; b++) x.set(image.subarray(0, 3 * S * S), b * 3 * S * S); return x })(), [B, 3, S, S]), tokens: new ort.Tensor('int64', tokens, [B, L]) })
    for (const n of OUT) t.ok(maxDiff(wholeRep[n].data as Float32Array, repOut[n].data as Float32Array) <= 1e-4, `repeated features, ${n} ≤ 1e-4`)
  })

  t.test('K expressions in one request: one backbone pass, the same answers as K separate requests (on model.onnx when the folder ships it)', async (t) => {
    const encodes: number[] = []
    const batches: number[] = []
    const split = await segmenter(t, { hooks: { onEncode: (n) => encodes.push(n), onBatch: (n) => batches.push(n) } })
    // The reference: each expression alone, without the feature cache — through model.onnx, or
    // through the split pair at batch 1 in a folder without it.
    const whole = await segmenter(t, noWhole === false ? { splitGraphs: false, featureCacheMb: 0 } : { featureCacheMb: 0 })
    const exprs = [golden.expression, 'the left one', 'the big red circle', 'square']
    const together = await split.segment(req(exprs))
    t.strictSame(encodes, [1], 'one image through the backbone')
    t.strictSame(batches, [4], 'one head pass over 4 rows')
    t.equal(together.featureCache, 'miss')
    for (let k = 0; k < exprs.length; k++) {
      const alone = await whole.segment(req([exprs[k]]))
      t.equal(alone.featureCache, 'off')
      const a = together.results[k]
      const b = alone.results[0]
      t.ok(Math.abs(a.score - b.score) <= 1e-4, `expression ${k}: score ${a.score} vs ${b.score}`)
      t.strictSame(a.bbox, b.bbox, `expression ${k}: bbox`)
      t.ok(Math.abs(a.area - b.area) <= 0.001 * a.area + 2, `expression ${k}: area ${a.area} vs ${b.area}`)
      t.ok(a.queries.every((q, i) => Math.abs(q.confidence - b.queries[i].confidence) <= 1e-4), `expression ${k}: query confidences`)
    }
  })

  t.test('with two idle workers, K rows are spread over both after one backbone pass; same answers', async (t) => {
    const encodes: number[] = []
    const batches: number[] = []
    const one = await segmenter(t, { featureCacheMb: 0 })
    const two = await segmenter(t, { workers: 2, featureCacheMb: 64, hooks: { onEncode: (n) => encodes.push(n), onBatch: (n) => batches.push(n) } })
    const exprs = [golden.expression, 'the left one', 'the big red circle', 'square', 'the small one']
    const want = await one.segment(req(exprs))
    for (const round of ['miss', 'hit'] as const) {
      encodes.length = 0
      batches.length = 0
      const got = await two.segment(req(exprs))
      t.equal(got.featureCache, round)
      t.strictSame(encodes, round === 'miss' ? [1] : [], 'one backbone pass (none on a hit)')
      t.strictSame(batches.sort(), [2, 3], 'head rows spread over the two workers')
      t.strictSame(got.results.map((r) => r.expression), exprs, 'answers in the order asked')
      for (let k = 0; k < exprs.length; k++) {
        t.strictSame(got.results[k].mask, want.results[k].mask, `${round}: expression ${k}: same mask`)
        t.ok(Math.abs(got.results[k].score - want.results[k].score) <= 1e-5, `${round}: expression ${k}: same score`)
      }
    }
  })

  t.test('a repeated image is a cache hit: no backbone pass, the same answer, counted in /metrics', async (t) => {
    const config = testConfig({ modelPath: MODEL_DIR, featureCacheMb: 64 })
    const encodes: number[] = []
    const app = buildApp(config, {
      segmenter: async (hooks) => await createSegmenterFromFolder({ ...config, hooks: bothHooks(hooks, { onEncode: (n) => encodes.push(n) }), logger: silentLogger }),
    })
    t.teardown(() => app.close())
    await app.ready()
    await app.segmenter.started
    const post = () => app.inject({ method: 'POST', url: '/segment', payload: form({ image: goldenImage, expression: golden.expression }) })
    const first = await post()
    t.equal(first.statusCode, 200)
    const second = await post()
    t.equal(second.statusCode, 200)
    t.strictSame(encodes, [1], 'the second request ran only the head')
    const a = first.json().results[0]
    const b = second.json().results[0]
    t.equal(b.mask.png, a.mask.png, 'same mask')
    t.equal(b.score, a.score)
    t.strictSame(b.queries, a.queries)
    t.equal(second.json().timings_ms.preprocess, 0, 'a hit skips decoding and letterboxing')
    const text = (await app.inject('/metrics')).payload
    t.match(text, /vlt_feature_cache_hits_total\{model="vlt-refshapes",version="[^"]+"\} 1\b/)
    t.match(text, /vlt_feature_cache_misses_total\{[^}]*\} 1\b/)
    t.match(text, /vlt_feature_cache_entries\{[^}]*\} 1\b/)
    t.match(text, /vlt_backbone_batch_size_count\{[^}]*\} 1\b/)
    t.match(text, /vlt_feature_cache_bytes\{[^}]*kind="capacity"\} 67108864\b/)
  })

  t.test('the cache stays within FEATURE_CACHE_MB (LRU eviction); 0 turns it off', async (t) => {
    // Tiny preset: 1 MB holds two images' features (BENCHMARKS.md, "Feature cache").
    const s = await segmenter(t, { featureCacheMb: 1 })
    const images = await Promise.all([0, 1, 2, 3].map((i) => sharp(goldenImage).modulate({ brightness: 0.7 + 0.1 * i }).png().toBuffer()))
    for (const img of images) t.equal((await s.segment(req(['square'], img))).featureCache, 'miss')
    const st = s.cacheStats()
    t.ok(st.bytes <= 1024 * 1024, `${st.bytes} bytes ≤ 1 MB`)
    t.ok(st.entries >= 1 && st.entries < 4, `${st.entries} entries`)
    t.equal(st.evictions, 4 - st.entries)
    t.equal((await s.segment(req(['square'], images[3]))).featureCache, 'hit', 'the newest image is still there')
    t.equal((await s.segment(req(['square'], images[0]))).featureCache, 'miss', 'the oldest was evicted')

    const off = await segmenter(t, { featureCacheMb: 0 })
    t.equal((await off.segment(req(['square']))).featureCache, 'off')
    t.equal((await off.segment(req(['square']))).featureCache, 'off')
    t.strictSame(off.cacheStats(), { hits: 0, misses: 0, evictions: 0, entries: 0, bytes: 0, capacityBytes: 0 })
  })

  t.test('a folder with only the split graphs (model.json without onnx): same answers; no model.onnx to fall back to', async (t) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vlt-split-only-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const files = [modelJson.split.image_encoder.file, modelJson.split.head.file, modelJson.vocab.file, 'golden.json', golden.image, golden.input.file, golden.outputs.mask_logits.file, golden.mask.file]
    for (const f of new Set(files)) symlinkSync(path.join(MODEL_DIR, f), path.join(dir, f))
    const { onnx: _whole, ...splitOnly } = modelJson
    writeFileSync(path.join(dir, 'model.json'), JSON.stringify(splitOnly))
    const { manifest, graphs } = await loadModelFolder(dir)
    t.equal(manifest.onnx, undefined)
    t.equal(graphs.modelFile, undefined)
    t.ok(graphs.split, 'the split graphs are verified and loaded')

    const exprs = [golden.expression, 'the big red circle']
    const want = await (await segmenter(t, { featureCacheMb: 0 })).segment(req(exprs))
    const got = await (await segmenter(t, { dir, featureCacheMb: 0 })).segment(req(exprs))
    for (let k = 0; k < exprs.length; k++) {
      t.strictSame(got.results[k].mask, want.results[k].mask, `expression ${k}: same mask`)
      t.equal(got.results[k].score, want.results[k].score, `expression ${k}: same score`)
    }
    await t.rejects(segmenter(t, { dir, splitGraphs: false }), { name: 'ManifestError', message: /ships only the split graphs/ })
  })
}
