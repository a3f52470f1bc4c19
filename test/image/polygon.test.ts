import t from 'tap'
import fc from 'fast-check'
import { maskToPolygons, POLYGON_TOLERANCE } from '../../src/image/polygon.js'
import { bbox, drawDiscs, drawRects, iou, rasterise } from './rasterise.js'

/** Twice the signed area, y down. */
const area2 = (r: number[]): number => {
  let s = 0
  for (let i = 0; i < r.length; i += 2) { const j = (i + 2) % r.length; s += r[i] * r[j + 1] - r[j] * r[i + 1] }
  return s
}

t.test('rings by hand: vertices on pixel corners, outer clockwise on screen, holes the other way', async (t) => {
  const px = drawRects(3, 3, [[0, 0, 1, 1]])
  t.strictSame(maskToPolygons(px.mask, 3, 3), [{ outer: [0, 0, 1, 0, 1, 1, 0, 1], holes: [] }])
  const ring = drawRects(3, 3, [[0, 0, 3, 3], [1, 1, 1, 1, 0]])
  t.strictSame(maskToPolygons(ring.mask, 3, 3), [{ outer: [0, 0, 3, 0, 3, 3, 0, 3], holes: [[1, 1, 1, 2, 2, 2, 2, 1]] }])
  // Pixels meeting only at a corner are two parts.
  const diag = drawRects(2, 2, [[0, 0, 1, 1], [1, 1, 1, 1]])
  t.strictSame(maskToPolygons(diag.mask, 2, 2), [{ outer: [0, 0, 1, 0, 1, 1, 0, 1], holes: [] }, { outer: [1, 1, 2, 1, 2, 2, 1, 2], holes: [] }])
  t.strictSame(maskToPolygons(new Uint8Array(4), 2, 2), [], 'empty mask')
  t.strictSame(maskToPolygons(new Uint8Array(4), 2, 2, { box: null }), [], 'empty bbox')
})

t.test('unsimplified rings rasterise back to the mask exactly, for any mask', async (t) => {
  t.doesNotThrow(() => fc.assert(fc.property(
    fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 20 }), fc.uint8Array({ minLength: 400, maxLength: 400 }), fc.integer({ min: 1, max: 254 }),
    (w, h, noise, cut) => {
      const mask = Uint8Array.from(noise.subarray(0, w * h), (v) => (v > cut ? 255 : 0))
      const parts = maskToPolygons(mask, w, h, { tolerance: 0 })
      return Buffer.from(rasterise(parts, w, h)).equals(Buffer.from(mask)) &&
        parts.every((p) => area2(p.outer) > 0 && p.holes.every((hole) => area2(hole) < 0)) &&
        JSON.stringify(maskToPolygons(mask, w, h, { tolerance: 0, box: bbox({ mask, width: w, height: h }) })) === JSON.stringify(parts)
    }
  ), { numRuns: 150 }), 'same pixels; outer rings clockwise on screen, holes counter-clockwise; the bbox shortcut changes nothing')
})

t.test('purpose-made masks: holes, islands in holes, several parts, exact after simplification', async (t) => {
  // Frame with two holes, an island inside the first hole, and a separate bar.
  const m = drawRects(40, 30, [[2, 2, 20, 20], [5, 5, 8, 8, 0], [7, 7, 3, 3], [15, 5, 4, 12, 0], [26, 3, 10, 24]])
  const parts = maskToPolygons(m.mask, 40, 30)
  t.equal(parts.length, 3, 'frame, island, bar')
  t.strictSame(parts.map((p) => p.holes.length).sort(), [0, 0, 2])
  t.strictSame(parts.map((p) => p.outer.length / 2), [4, 4, 4], 'rectangles keep their four corners')
  t.ok(Buffer.from(rasterise(parts, 40, 30)).equals(Buffer.from(m.mask)), 'same pixels')
})

t.test(`simplified at ${POLYGON_TOLERANCE} px: fewer vertices, the same pixels on discs, holes kept`, async (t) => {
  const m = drawDiscs(120, 100, [[45, 50, 30, 255], [45, 50, 12, 0], [100, 30, 12, 255]])
  const exact = maskToPolygons(m.mask, 120, 100, { tolerance: 0 })
  const parts = maskToPolygons(m.mask, 120, 100)
  t.equal(parts.length, 2)
  t.strictSame(parts.map((p) => p.holes.length), exact.map((p) => p.holes.length))
  const n = (ps: typeof parts): number => ps.reduce((a, p) => a + p.outer.length + p.holes.reduce((b, h) => b + h.length, 0), 0) / 2
  t.ok(n(parts) < n(exact), `${n(parts)} vertices instead of ${n(exact)}`)
  // Within 0.5 px of the pixel boundary, no pixel centre changes side on these discs.
  t.equal(iou(rasterise(parts, 120, 100), m.mask), 1)
  const coarse = maskToPolygons(m.mask, 120, 100, { tolerance: 1 })
  t.ok(n(coarse) < n(parts) && iou(rasterise(coarse, 120, 100), m.mask) < 1, 'a larger tolerance drops more vertices, and pixels')
})

t.test('bad input', async (t) => {
  t.throws(() => maskToPolygons(new Uint8Array(5), 3, 2), RangeError)
})
