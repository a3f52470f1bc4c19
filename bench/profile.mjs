// Where the time and the CPU of one /segment request go (npm run build first):
//
//   node bench/profile.mjs [--requests 120] [--model models/vlt-refshapes]
//
// 1) the CPU stages in this process, on the bench's request image: median wall ms of 200 runs and
//    core-ms per run (process.cpuUsage over the 200: every thread of the process, libvips' too);
// 2) ONNX Runtime alone, in this process, with the service's session settings (the graphs the
//    service loads, intra-op threads per worker, no spinning): core-ms of one inference;
// 3) a server started with the default configuration, sent sequential requests (new images,
//    then one repeated image = cache hits): the median of each stage of the answer's timings_ms,
//    the server's total and the client's wall time, and the server process's CPU per request
//    (/proc: all threads, and the main thread alone, which runs HTTP, multipart and JSON). CPU
//    outside ONNX Runtime = the process's core-ms per request − ONNX Runtime's core-ms per
//    inference (2); the target is ≤ 4 core-ms. Then each server thread's share.
import { createHash } from 'node:crypto'
import { readdirSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import * as ort from 'onnxruntime-node'
import sharp from 'sharp'
import { loadConfig } from '../dist/config.js'
import { encodeMaskPng } from '../dist/image/png.js'
import { postprocess } from '../dist/image/postprocess.js'
import { loadLetterboxed, readHeader } from '../dist/image/preprocess.js'
import { loadModelFolder } from '../dist/model/manifest.js'
import { body, CONTENT_TYPE, cpuMs, images, median, ROOT, startServer } from './lib.mjs'

const { values: args } = parseArgs({ options: { requests: { type: 'string', default: '120' }, model: { type: 'string', default: 'models/vlt-refshapes' }, json: { type: 'string' } } })
const MODEL = path.resolve(ROOT, args.model)
const N = Number(args.requests)
const { manifest, graphs } = await loadModelFolder(MODEL)
const { pngs, expression } = await images(MODEL, N)
const result = { stages: {}, ort: {}, server: {} }
const f2 = (v) => v.toFixed(2)

// 1) CPU stages in-process
const png = pngs[0]
const spec = manifest.input
async function time (key, name, fn, runs = 200) {
  for (let i = 0; i < 20; i++) await fn()
  const ts = []
  const c0 = process.cpuUsage()
  for (let i = 0; i < runs; i++) { const t = performance.now(); await fn(); ts.push(performance.now() - t) }
  const c = process.cpuUsage(c0)
  const row = { wall: median(ts), cpu: (c.user + c.system) / 1000 / runs }
  result.stages[key] = row
  console.log(`| ${name} | ${f2(row.wall)} | ${f2(row.cpu)} |`)
  return row
}
const meta = await sharp(png).metadata()
console.log(`In-process stages (${meta.width}×${meta.height} PNG, ${png.length} bytes; median wall ms and core-ms per run, 200 runs):\n\n| stage | wall ms | core-ms |\n|---|---:|---:|`)
let header, pre, mask
const decode = { maxPixels: 4e7 }
await time('sha256', 'sha256 of the upload (cache key)', () => createHash('sha256').update(png).digest('hex'))
await time('header', 'header check (sharp metadata)', async () => { header = await readHeader(png, decode) })
await time('letterbox', 'decode + letterbox (one sharp pipeline, then CHW float)', async () => { pre = await loadLetterboxed(png, header, spec, decode) })
const m = manifest.maskSize
const logits = new Float32Array(m * m).map((_, i) => Math.sin(i / 50) * 4)
await time('postprocess', 'postprocess (sigmoid, un-letterbox, threshold)', () => { mask = postprocess(logits, m, pre.geometry, 0.35, true) })
await time('png', 'PNG encode of the mask', () => encodeMaskPng(mask.mask, mask.width, mask.height))

// 2) ONNX Runtime alone, the service's session settings
const session = loadConfig(process.env, (await import('node:os')).availableParallelism())
const options = { executionProviders: ['cpu'], intraOpNumThreads: session.threadsPerWorker, interOpNumThreads: 1, graphOptimizationLevel: 'all', ...(session.intraOpSpinning ? {} : { extra: { session: { intra_op: { allow_spinning: '0' } } } }) }
const S = manifest.input.size
const image = new ort.Tensor('float32', pre.data, [1, 3, S, S])
const tokens = new ort.Tensor('int64', new BigInt64Array(manifest.maxWords).map((_, i) => BigInt(i < 4 ? 2 + i : 0)), [1, manifest.maxWords])
let encodeRun, headRun
if (graphs.split !== undefined) {
  const enc = await ort.InferenceSession.create(graphs.split.encoderFile, options)
  const head = await ort.InferenceSession.create(graphs.split.headFile, options)
  const feats = await enc.run({ image })
  encodeRun = () => enc.run({ image })
  headRun = () => head.run({ ...Object.fromEntries(graphs.split.featureNames.map((n) => [n, feats[n]])), tokens })
} else {
  const whole = await ort.InferenceSession.create(graphs.modelFile, options)
  encodeRun = async () => {}
  headRun = () => whole.run({ image, tokens })
}
console.log(`\nONNX Runtime alone (${graphs.split !== undefined ? 'image_encoder + head' : 'model.onnx'}, ${session.threadsPerWorker} intra-op threads, spinning ${session.intraOpSpinning ? 'on' : 'off'}; batch 1):\n\n| graph | wall ms | core-ms |\n|---|---:|---:|`)
result.ort.encoder = await time('ortEncoder', 'image_encoder', encodeRun, 100)
result.ort.head = await time('ortHead', graphs.split !== undefined ? 'head' : 'model.onnx', headRun, 100)
delete result.stages.ortEncoder
delete result.stages.ortHead

// 3) a real server
const server = await startServer({ env: { MODEL_PATH: MODEL } })
const threads = () => Object.fromEntries(readdirSync(`/proc/${server.pid}/task`).map((tid) => [tid, cpuMs(server.pid, tid)]))
const perThread = {}
try {
  async function run (key, label, pick, ortCpu) {
    const stages = {}
    const wall = []
    let c0, m0, t0
    for (let i = 0; i < N; i++) {
      if (i === 10) { c0 = cpuMs(server.pid); m0 = cpuMs(server.pid, server.pid); t0 = threads() }
      const t = performance.now()
      const j = await (await fetch(`${server.url}/segment`, { method: 'POST', body: body(pick(i), [expression]), headers: { 'content-type': CONTENT_TYPE, accept: 'application/json' } })).json()
      if (i < 10) continue // warm-up
      wall.push(performance.now() - t)
      for (const [k, v] of Object.entries(j.timings_ms)) (stages[k] ??= []).push(v)
    }
    const n = N - 10
    const t1 = threads()
    perThread[key] = Object.keys(t1).map((tid) => ({ tid, main: tid === String(server.pid), cpu: (t1[tid] - (t0[tid] ?? 0)) / n })).filter((x) => x.cpu >= 0.05).sort((a, b) => b.cpu - a.cpu)
    const cpu = (cpuMs(server.pid) - c0) / n
    const main = (cpuMs(server.pid, server.pid) - m0) / n
    const row = { ...Object.fromEntries(['decode', 'preprocess', 'queue', 'inference', 'postprocess', 'total'].map((k) => [k, median(stages[k])])), wall: median(wall), cpu, mainThread: main, ort: ortCpu, outsideOrt: cpu - ortCpu }
    result.server[key] = row
    console.log(`| ${label} | ${['decode', 'preprocess', 'queue', 'inference', 'postprocess', 'total', 'wall'].map((k) => f2(row[k])).join(' | ')} | ${f2(cpu)} | ${f2(main)} | ${f2(ortCpu)} | ${f2(row.outsideOrt)} |`)
  }
  console.log(`\nServer (default configuration, concurrency 1, ${N - 10} requests after 10 of warm-up; median ms of timings_ms; inference = backbone + head in the worker; postprocess = worker post-processing + PNG; core-ms per request from /proc, 10 ms ticks):\n`)
  console.log('| requests | decode | preprocess | queue | inference | postprocess | server total | client wall | process core-ms | main thread core-ms | ONNX Runtime core-ms (2) | outside ONNX Runtime core-ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
  await run('cold', 'new image each time', (i) => pngs[i], result.ort.encoder.cpu + result.ort.head.cpu)
  await run('hit', 'one repeated image (cache hits)', () => pngs[0], result.ort.head.cpu)
  // Threads carry no names (all "node"); the busiest are the engine worker running the sessions
  // and ONNX Runtime's pool threads, then the main thread, libuv's (sharp) and V8's (GC).
  console.log('\nCPU per request of each server thread using ≥ 0.05 core-ms (/proc/PID/task), new images:\n')
  console.log(perThread.cold.map((x) => `${x.main ? 'main' : x.tid} ${f2(x.cpu)}`).join(', '))
  result.threads = perThread
} finally {
  await server.stop()
}
const miss = result.server.cold.outsideOrt
console.log(`\nTarget: CPU outside ONNX Runtime ≤ 4 core-ms per request (new image): ${f2(miss)} core-ms — ${miss <= 4 ? 'PASS' : 'MISS'}`)
if (args.json) (await import('node:fs')).writeFileSync(args.json, JSON.stringify(result, null, 1))
