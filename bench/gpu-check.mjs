#!/usr/bin/env node
// The CUDA execution provider on a real GPU, through onnxruntime-node (the service's runtime):
// loads each model folder's graphs on CUDA (no CPU fallback listed: a provider that does not load
// is an error here), checks the golden case against the CPU result (max |Δ| ≤ --atol for every
// output, model.onnx and the split graphs, whichever the folder ships), then times model.onnx (the
// split pair composed when the folder ships no model.onnx) on CUDA: batch-1 latency and
// throughput at the larger batches. Prints a markdown table (for BENCHMARKS.md) and one JSON line.
// Run by bench/gpu-check.sh, which finds the provider and CUDA libraries and sets them up first.
//
//   node bench/gpu-check.mjs --model models/vlt-refshapes [--model /tmp/vlt-paper-model] \
//        [--device 0] [--seconds 5] [--batches 8,32] [--atol 1e-3]
//
// --provider cpu runs the same steps with the CPU in CUDA's place: a check of this script on a
// machine without a GPU (test/bench/gpu-check.test.ts), not a measurement of anything.
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import * as ort from 'onnxruntime-node'

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', multiple: true, default: ['models/vlt-refshapes'] },
    device: { type: 'string', default: '0' },
    seconds: { type: 'string', default: '5' },
    batches: { type: 'string', default: '8,32' },
    atol: { type: 'string', default: '1e-3' },
    provider: { type: 'string', default: 'cuda' },
  },
})
if (!['cuda', 'cpu'].includes(args.provider)) throw new Error('--provider: cuda or cpu')
const seconds = Number(args.seconds)
const atol = Number(args.atol)
const cuda = { executionProviders: [args.provider === 'cuda' ? { name: 'cuda', deviceId: Number(args.device) } : 'cpu'], graphOptimizationLevel: 'all' }
const cpu = { executionProviders: ['cpu'], graphOptimizationLevel: 'all' }
const OUTPUTS = ['mask_logits', 'query_confidence', 'word_attention']

function goldenFeeds (dir, manifest) {
  const g = JSON.parse(readFileSync(path.join(dir, manifest.golden ?? 'golden.json'), 'utf8'))
  const buf = readFileSync(path.join(dir, g.input.file))
  const image = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4)
  const tokens = BigInt64Array.from({ length: manifest.max_words }, (_, i) => BigInt(g.tokens[i] ?? 0))
  return { image, tokens }
}

const maxDiff = (a, b) => {
  if (a.length !== b.length) return Infinity
  let m = 0
  for (let i = 0; i < a.length; i++) { const d = Math.abs(a[i] - b[i]); if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d }
  return m
}

async function runGraphs (sessions, split, image, tokens, S, L, b = 1) {
  const img = new ort.Tensor('float32', image, [b, 3, S, S])
  const tok = new ort.Tensor('int64', tokens, [b, L])
  if (!split) return sessions.whole.run({ image: img, tokens: tok }, OUTPUTS)
  const fv = await sessions.encoder.run({ image: img })
  const feeds = { tokens: tok }
  for (const [k, v] of Object.entries(fv)) feeds[k] = v
  return sessions.head.run(feeds, OUTPUTS)
}

async function open (dir, manifest, options) {
  const s = manifest.onnx !== undefined ? { whole: await ort.InferenceSession.create(path.join(dir, manifest.onnx.file), options) } : {}
  if (manifest.split !== undefined) {
    s.encoder = await ort.InferenceSession.create(path.join(dir, manifest.split.image_encoder.file), options)
    s.head = await ort.InferenceSession.create(path.join(dir, manifest.split.head.file), options)
  }
  return s
}

const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))] }

async function time (fn, budgetS) {
  for (let i = 0; i < 5; i++) await fn() // warm-up: cuDNN algorithm search, arena growth
  const ms = []
  const end = performance.now() + budgetS * 1000
  while (performance.now() < end || ms.length < 10) {
    const t0 = performance.now()
    await fn()
    ms.push(performance.now() - t0)
  }
  return ms
}

const rows = []
let failed = false
for (const m of args.model) {
  const dir = path.resolve(m)
  const manifest = JSON.parse(readFileSync(path.join(dir, 'model.json'), 'utf8'))
  const S = manifest.input.size
  const L = manifest.max_words
  const name = `${manifest.name}@${manifest.version} (${manifest.preset ?? '?'}, ${S}px)`
  const t0 = performance.now()
  const onGpu = await open(dir, manifest, cuda)
  const loadMs = performance.now() - t0
  const onCpu = await open(dir, manifest, cpu)
  const { image, tokens } = goldenFeeds(dir, manifest)
  const diffs = {}
  // model.onnx and the split pair, whichever the folder ships; the timings use model.onnx if any
  const layouts = [...(manifest.onnx !== undefined ? [false] : []), ...(manifest.split !== undefined ? [true] : [])]
  const timed = layouts[0]
  const graph = timed ? 'image_encoder + head' : 'model.onnx'
  for (const split of layouts) {
    const a = await runGraphs(onGpu, split, image, tokens, S, L)
    const b = await runGraphs(onCpu, split, image, tokens, S, L)
    for (const o of OUTPUTS) diffs[`${split ? 'split' : 'model.onnx'} ${o}`] = maxDiff(a[o].data, b[o].data)
  }
  const worst = Math.max(...Object.values(diffs))
  const ok = worst <= atol
  if (!ok) failed = true
  console.error(`gpu-check: ${name}: loaded on ${args.provider} in ${loadMs.toFixed(0)} ms; golden case ${args.provider} vs CPU max |Δ| ${worst.toExponential(2)} ${ok ? '<=' : 'EXCEEDS'} ${atol} ${JSON.stringify(diffs)}`)

  const lat = await time(() => runGraphs(onGpu, timed, image, tokens, S, L), seconds)
  rows.push({ model: name, graph, batch: 1, p50: pct(lat, 0.5), p90: pct(lat, 0.9), ips: 1000 / pct(lat, 0.5), diff: worst, ok })
  for (const b of args.batches.split(',').map(Number)) {
    const img = new Float32Array(b * image.length)
    for (let i = 0; i < b; i++) img.set(image, i * image.length)
    const tok = new BigInt64Array(b * L)
    for (let i = 0; i < b; i++) tok.set(tokens, i * L)
    const ms = await time(() => runGraphs(onGpu, timed, img, tok, S, L, b), seconds)
    rows.push({ model: name, graph, batch: b, p50: pct(ms, 0.5), p90: pct(ms, 0.9), ips: b * 1000 / pct(ms, 0.5), diff: worst, ok })
  }
}

const f = (x, d = 2) => Number.isFinite(x) ? x.toFixed(d) : String(x)
console.log('| model | provider | graph | batch | p50 ms | p90 ms | images/s (at p50) | golden max abs diff vs CPU |')
console.log('|---|---|---|---:|---:|---:|---:|---|')
for (const r of rows) console.log(`| ${r.model} | ${args.provider} | ${r.graph} | ${r.batch} | ${f(r.p50)} | ${f(r.p90)} | ${f(r.ips, 1)} | ${r.diff.toExponential(2)} ${r.ok ? '(<= ' + atol + ')' : 'FAIL'} |`)
console.log(JSON.stringify({ provider: args.provider, ort: ort.env.versions?.common, device: Number(args.device), seconds, rows }))
process.exit(failed ? 1 : 0)
