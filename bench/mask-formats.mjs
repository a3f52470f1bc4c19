// What each mask format costs to encode, by image size (npm run build first):
//
//   node bench/mask-formats.mjs [--runs 5]
//
// Masks are made the way the service makes them: logits on the model's m×m grid (smooth blobs,
// or independent noise per cell for the worst case the upsampling allows) through
// src/image/postprocess.ts to the full image size. For each: the median wall time of the PNG
// encoding (sharp, off the event loop in libuv's pool) and of the COCO RLE and polygon encoders
// (on the event loop), with the answer's size in bytes.
import path from 'node:path'
import { parseArgs } from 'node:util'
import sharp from 'sharp'
import { postprocess } from '../dist/image/postprocess.js'
import { letterboxGeometry } from '../dist/image/preprocess.js'
import { maskToPolygons } from '../dist/image/polygon.js'
import { encodeCocoRle } from '../dist/image/rle.js'
import { loadModelFolder } from '../dist/model/manifest.js'
import { median, ROOT } from './lib.mjs'

const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '5' }, model: { type: 'string', default: 'models/vlt-refshapes' } } })
const RUNS = Number(args.runs)
const { manifest } = await loadModelFolder(path.resolve(ROOT, args.model))
const m = manifest.maskSize
const S = manifest.input.size

let seed = 7
const rand = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }

/** Logits: a few Gaussian blobs (one object and some clutter), or noise in every cell. */
function logits (kind) {
  const out = new Float32Array(m * m)
  if (kind === 'noise') { for (let i = 0; i < out.length; i++) out[i] = rand() < 0.5 ? 4 : -4; return out }
  const blobs = Array.from({ length: 4 }, (_, k) => ({ x: rand() * m, y: rand() * m, r: (k === 0 ? 0.15 : 0.04) * m }))
  for (let y = 0; y < m; y++) {
    for (let x = 0; x < m; x++) {
      let v = -6
      for (const b of blobs) v = Math.max(v, 8 * Math.exp(-((x - b.x) ** 2 + (y - b.y) ** 2) / (2 * b.r * b.r)) - 4)
      out[y * m + x] = v
    }
  }
  return out
}

async function time (fn) {
  await fn()
  const ts = []
  let out
  for (let i = 0; i < RUNS; i++) { const t = performance.now(); out = await fn(); ts.push(performance.now() - t) }
  return { ms: median(ts), out }
}

console.log('| image | mask | area | png ms (bytes) | coco_rle ms (bytes) | polygon ms (bytes, parts) |')
console.log('| --- | --- | --- | --- | --- | --- |')
for (const [w, h] of [[640, 480], [1920, 1080], [4000, 3000], [6000, 6000]]) {
  for (const kind of ['blobs', 'noise']) {
    const g = letterboxGeometry(w, h, S)
    const r = postprocess(logits(kind), m, g, manifest.threshold)
    const png = await time(() => sharp(r.mask, { raw: { width: w, height: h, channels: 1 } }).toColourspace('b-w').png({ compressionLevel: 6 }).toBuffer())
    const rle = await time(() => encodeCocoRle(r.mask, w, h, r.bbox))
    const poly = await time(() => maskToPolygons(r.mask, w, h, { box: r.bbox }))
    const b64 = Math.ceil(png.out.length / 3) * 4
    console.log(`| ${w}×${h} | ${kind} | ${(r.area / (w * h) * 100).toFixed(1)} % | ${png.ms.toFixed(1)} (${b64}) | ${rle.ms.toFixed(1)} (${JSON.stringify(rle.out).length}) | ${poly.ms.toFixed(1)} (${JSON.stringify(poly.out).length}, ${poly.out.length}) |`)
  }
}
