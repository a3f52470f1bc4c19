// Where the time of one /segment request goes, on a quiet machine (npm run build first):
//
//   node bench/profile.mjs [--requests 120]
//
// 1) the CPU stages in this process, on the bench's request image (median of 200 runs each);
// 2) a server started with the default configuration, sent sequential requests (new images, then
//    one repeated image = cache hits): the median of each stage of the answer's timings_ms, the
//    server's total and the client's wall time (HTTP, multipart and JSON make up the difference).
import { createHash } from 'node:crypto'
import path from 'node:path'
import { parseArgs } from 'node:util'
import sharp from 'sharp'
import { encodeMaskPng } from '../dist/image/png.js'
import { postprocess } from '../dist/image/postprocess.js'
import { decodeImage, letterbox } from '../dist/image/preprocess.js'
import { loadModelFolder } from '../dist/model/manifest.js'
import { body, CONTENT_TYPE, images, median, ROOT, startServer } from './lib.mjs'

const { values: args } = parseArgs({ options: { requests: { type: 'string', default: '120' }, model: { type: 'string', default: 'models/vlt-refshapes' } } })
const MODEL = path.resolve(ROOT, args.model)
const N = Number(args.requests)
const { manifest } = await loadModelFolder(MODEL)
const { pngs, expression } = await images(MODEL, N)

// 1) CPU stages in-process
const png = pngs[0]
const spec = manifest.input
async function time (name, fn) {
  for (let i = 0; i < 20; i++) await fn()
  const ts = []
  for (let i = 0; i < 200; i++) { const t = performance.now(); await fn(); ts.push(performance.now() - t) }
  console.log(`| ${name} | ${median(ts).toFixed(2)} |`)
}
const meta = await sharp(png).metadata()
console.log(`In-process stages (${meta.width}×${meta.height} PNG, ${png.length} bytes; median ms of 200):\n\n| stage | ms |\n|---|---:|`)
let img, pre, mask
await time('sha256 of the upload (cache key)', () => createHash('sha256').update(png).digest('hex'))
await time('decode (header check + PNG → RGB)', async () => { img = await decodeImage(png, { maxPixels: 4e7 }) })
await time('letterbox (resize + CHW float)', async () => { pre = await letterbox(img, spec) })
const m = manifest.maskSize
const logits = new Float32Array(m * m).map((_, i) => Math.sin(i / 50) * 4)
await time('postprocess (sigmoid, un-letterbox, threshold)', () => { mask = postprocess(logits, m, pre.geometry, 0.35, true) })
await time('PNG encode of the mask', () => encodeMaskPng(mask.mask, mask.width, mask.height))

// 2) a real server
const server = await startServer({ env: { MODEL_PATH: MODEL } })
try {
  async function run (label, pick) {
    const stages = {}
    const wall = []
    for (let i = 0; i < N; i++) {
      const t = performance.now()
      const j = await (await fetch(`${server.url}/segment`, { method: 'POST', body: body(pick(i), [expression]), headers: { 'content-type': CONTENT_TYPE, accept: 'application/json' } })).json()
      if (i < 10) continue // warm-up
      wall.push(performance.now() - t)
      for (const [k, v] of Object.entries(j.timings_ms)) (stages[k] ??= []).push(v)
    }
    const row = ['decode', 'preprocess', 'queue', 'inference', 'postprocess', 'total'].map((k) => median(stages[k]).toFixed(2))
    console.log(`| ${label} | ${row.join(' | ')} | ${median(wall).toFixed(2)} |`)
  }
  console.log(`\nServer stages (default configuration, concurrency 1, median ms of ${N - 10} requests; inference = backbone + head in the worker; postprocess = worker post-processing + PNG):\n`)
  console.log('| requests | decode | preprocess | queue | inference | postprocess | server total | client wall |\n|---|---:|---:|---:|---:|---:|---:|---:|')
  await run('new image each time', (i) => pngs[i])
  await run('one repeated image (cache hits)', () => pngs[0])
} finally {
  await server.stop()
}
