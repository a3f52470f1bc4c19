import t from 'tap'
import { readFileSync } from 'node:fs'
import { crop, postprocess, probabilityMap, resizeBilinear, sigmoid, threshold } from '../../src/image/postprocess.js'
import { letterboxGeometry } from '../../src/image/preprocess.js'

interface PlaneJson { width: number, height: number, data: number[] }
const { cases } = JSON.parse(readFileSync(new URL('../fixtures/bilinear_cases.json', import.meta.url), 'utf8')) as { cases: Array<{ in: PlaneJson, out: PlaneJson }> }

t.test('resizeBilinear matches torch F.interpolate(bilinear, align_corners=False)', async (t) => {
  for (const c of cases) {
    const out = resizeBilinear({ data: Float32Array.from(c.in.data), width: c.in.width, height: c.in.height }, c.out.width, c.out.height)
    let max = 0
    for (let i = 0; i < out.data.length; i++) max = Math.max(max, Math.abs(out.data[i] - c.out.data[i]))
    t.ok(max < 1e-5, `${c.in.width}×${c.in.height} → ${c.out.width}×${c.out.height}: max |Δ| ${max}`)
  }
})

t.test('resizeBilinear: 2×1 → 4×1 by hand', async (t) => {
  // src = (d + 0.5)·0.5 − 0.5 → [0(clamped), 0.25, 0.75, 1.25 → i0=1,i1=1]
  const out = resizeBilinear({ data: Float32Array.from([0, 4]), width: 2, height: 1 }, 4, 1)
  t.strictSame(Array.from(out.data), [0, 1, 3, 4])
})

t.test('sigmoid', async (t) => {
  const s = sigmoid(Float32Array.from([0, 100, -100]))
  t.equal(s[0], 0.5)
  t.ok(s[1] > 0.999 && s[2] < 0.001)
})

t.test('crop takes the letterbox window', async (t) => {
  const p = { data: Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]), width: 4, height: 3 }
  t.strictSame(Array.from(crop(p, 1, 1, 2, 2).data), [5, 6, 9, 10])
})

t.test('threshold: mask, area, bbox, score', async (t) => {
  const p = { data: Float32Array.from([0.1, 0.9, 0.8, 0.2, 0.5, 0.1]), width: 3, height: 2 }
  const m = threshold(p, 0.35)
  t.strictSame(Array.from(m.mask), [0, 255, 255, 0, 255, 0])
  t.equal(m.area, 3)
  t.strictSame(m.bbox, [1, 0, 2, 2])
  t.ok(Math.abs(m.score - (0.9 + 0.8 + 0.5) / 3) < 1e-6)
})

t.test('threshold: an empty mask has no bbox', async (t) => {
  const m = threshold({ data: new Float32Array(6), width: 3, height: 2 }, 0.35)
  t.equal(m.area, 0)
  t.equal(m.bbox, null)
  t.equal(m.score, 0)
})

t.test('probabilityMap undoes the letterbox', async (t) => {
  // A 4×2 image in an S=8 canvas: nw=8, nh=4, dy=2. Logits +10 on the top half of the
  // canvas' content rows and −10 elsewhere map back to the top half of the image.
  const g = letterboxGeometry(4, 2, 8)
  t.strictSame(g, { width: 4, height: 2, size: 8, nw: 8, nh: 4, dx: 0, dy: 2 })
  const m = 8
  const logits = new Float32Array(m * m).fill(-10)
  for (let y = 2; y < 4; y++) for (let x = 0; x < 8; x++) logits[y * m + x] = 10
  const p = probabilityMap(logits, m, g)
  t.equal(p.width, 4)
  t.equal(p.height, 2)
  const r = postprocess(logits, m, g, 0.5)
  t.strictSame(Array.from(r.mask), [255, 255, 255, 255, 0, 0, 0, 0])
})

t.test('postprocess equals threshold(probabilityMap()) exactly', async (t) => {
  let seed = 3
  const rand = () => { seed = (seed * 1103515245 + 12345) >>> 0; return (seed >>> 8) / 2 ** 24 }
  for (const [w, h, S, m] of [[320, 256, 224, 112], [97, 301, 64, 32], [50, 50, 32, 16], [1000, 3, 64, 32]]) {
    const g = letterboxGeometry(w, h, S)
    const logits = new Float32Array(m * m).map(() => (rand() - 0.5) * 12)
    const want = threshold(probabilityMap(logits, m, g), 0.35)
    const got = postprocess(logits, m, g, 0.35)
    t.strictSame(Array.from(got.mask), Array.from(want.mask), `${w}×${h}: mask`)
    t.strictSame([got.area, got.bbox, got.width, got.height], [want.area, want.bbox, want.width, want.height])
    t.ok(Math.abs(got.score - want.score) < 1e-9, 'score')
  }
})
