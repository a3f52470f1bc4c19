#!/usr/bin/env node
// The ceiling: onnxruntime-node in one process on pre-made tensors, no HTTP, no image decoding,
// no post-processing. Prints one JSON object (latencies in ms) on stdout.
//
//   node bench/raw-ort.mjs --model models/vlt-refshapes --threads 0 --seconds 3 --batches 1,2,4,8
//
// --threads 0 leaves intra-op threads to ONNX Runtime (one per physical core); --spinning 0 turns
// their busy-waiting off (the service's default), so core-ms per call is the work itself.
// Measured: the whole network at each batch size — model.onnx, or image_encoder.onnx then
// head.onnx when the folder ships only the split graphs (`whole.graph` says which);
// image_encoder.onnx at batch 1; head.onnx at batch 1 and at each K of --heads (one image's
// features repeated K times), when model.json has `split`. Each figure also has `cpu`: core-ms
// per call (process.cpuUsage, every thread of this process).
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import * as ort from 'onnxruntime-node'

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: 'models/vlt-refshapes' },
    threads: { type: 'string', default: '0' },
    seconds: { type: 'string', default: '3' },
    batches: { type: 'string', default: '1,2,4,8' },
    heads: { type: 'string', default: '4,8' },
    spinning: { type: 'string', default: '' },
  },
})
const dir = path.resolve(args.model)
const manifest = JSON.parse(readFileSync(path.join(dir, 'model.json'), 'utf8'))
const S = manifest.input.size
const L = manifest.max_words
const threads = Number(args.threads)
const seconds = Number(args.seconds)
// --spinning 0: intra-op threads sleep between parallel sections, as the service's do by default
const options = { executionProviders: ['cpu'], interOpNumThreads: 1, graphOptimizationLevel: 'all', ...(threads > 0 ? { intraOpNumThreads: threads } : {}), ...(args.spinning === '0' ? { extra: { session: { intra_op: { allow_spinning: '0' } } } } : {}) }

let seed = 1
const rand = () => { seed = (seed * 1103515245 + 12345) >>> 0; return (seed >>> 8) / 2 ** 24 }
const images = (b) => { const x = new Float32Array(b * 3 * S * S); for (let i = 0; i < x.length; i++) x[i] = rand(); return new ort.Tensor('float32', x, [b, 3, S, S]) }
const tokens = (b) => {
  const t = new BigInt64Array(b * L)
  for (let r = 0; r < b; r++) for (let i = 0; i < 4; i++) t[r * L + i] = BigInt(2 + ((r * 7 + i * 13) % 40))
  return new ort.Tensor('int64', t, [b, L])
}

/** Run `fn` for `seconds` after 3 warm-up calls; latency percentiles (ms) and calls/s. */
async function measure (fn, secs = seconds) {
  for (let i = 0; i < 3; i++) await fn()
  const lat = []
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  while (performance.now() - t0 < secs * 1000 || lat.length < 5) {
    const a = performance.now()
    await fn()
    lat.push(performance.now() - a)
  }
  const elapsed = (performance.now() - t0) / 1000
  const c = process.cpuUsage(c0)
  lat.sort((a, b) => a - b)
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]
  return { runs: lat.length, p50: q(0.5), p90: q(0.9), p99: q(0.99), mean: lat.reduce((a, v) => a + v, 0) / lat.length, perSecond: lat.length / elapsed, cpu: (c.user + c.system) / 1000 / lat.length }
}

const out = { model: manifest.name, version: manifest.version, preset: manifest.preset, inputSize: S, threads: threads > 0 ? threads : 'ort-default', spinning: args.spinning !== '0', wholeGraph: manifest.onnx !== undefined ? 'model.onnx' : 'image_encoder + head', whole: {}, encoder: null, head: {} }
const t0 = performance.now()
let enc, head
if (manifest.split !== undefined) {
  enc = await ort.InferenceSession.create(path.join(dir, manifest.split.image_encoder.file), options)
  head = await ort.InferenceSession.create(path.join(dir, manifest.split.head.file), options)
}
const names = manifest.split?.image_encoder.outputs
/** The whole network on a batch: model.onnx, or the encoder then the head on its features. */
let whole
if (manifest.onnx !== undefined) {
  const session = await ort.InferenceSession.create(path.join(dir, manifest.onnx.file), options)
  whole = (feeds) => session.run(feeds)
} else {
  whole = async (feeds) => {
    const f = await enc.run({ image: feeds.image })
    return await head.run({ ...Object.fromEntries(names.map((n) => [n, f[n]])), tokens: feeds.tokens })
  }
}
out.loadMs = performance.now() - t0
for (const b of args.batches.split(',').map(Number)) {
  const feeds = { image: images(b), tokens: tokens(b) }
  const m = await measure(() => whole(feeds))
  out.whole[b] = { ...m, imagesPerSecond: m.perSecond * b }
}
if (manifest.split !== undefined) {
  const image = images(1)
  out.encoder = await measure(() => enc.run({ image }))
  const feats = await enc.run({ image })
  for (const k of new Set([1, ...args.heads.split(',').filter(Boolean).map(Number)])) {
    const feeds = { tokens: tokens(k) }
    for (const n of names) {
      const d = feats[n].data
      const x = new Float32Array(k * d.length)
      for (let r = 0; r < k; r++) x.set(d, r * d.length)
      feeds[n] = new ort.Tensor('float32', x, [k, ...feats[n].dims.slice(1)])
    }
    out.head[k] = await measure(() => head.run(feeds))
  }
}
process.stdout.write(JSON.stringify(out) + '\n')
