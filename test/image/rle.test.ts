import t from 'tap'
import fc from 'fast-check'
import { compressCounts, decodeCocoRle, decompressCounts, encodeCocoRle, rleCounts } from '../../src/image/rle.js'
import { bbox, drawRects } from './rasterise.js'

t.test('runs go down the columns and start with the pixels that are off (by hand)', async (t) => {
  // 3 wide, 2 high:  . # #      column-major: . . | # . | # #
  //                  . . #      → 2 off, 1 on, 1 off, 2 on
  const m = Uint8Array.from([0, 255, 255, 0, 0, 255])
  t.strictSame(rleCounts(m, 3, 2), [2, 1, 1, 2])
  // Each run below 16 is one character, '0' + run (the fourth run minus the second: 2 − 1).
  t.strictSame(encodeCocoRle(m, 3, 2), { size: [2, 3], counts: '2111' })
  // The first pixel on: a leading run of 0.
  t.strictSame(rleCounts(Uint8Array.from([255, 0]), 1, 2), [0, 1, 1])
  t.strictSame(rleCounts(new Uint8Array(6), 3, 2), [6], 'empty mask: one run')
})

t.test('a negative difference is written in two groups with the sign bit (by hand)', async (t) => {
  // 2 − 40 = −38: low 5 bits 11010 (26) with more to come (+32) → 'j'; then −38 >> 5 = −2,
  // low bits 11110 (30), the sign bit set and nothing more → 'N'.
  t.equal(compressCounts([0, 40, 1, 2]).slice(-2), 'jN')
  t.strictSame(decompressCounts(compressCounts([0, 40, 1, 2])), [0, 40, 1, 2])
})

t.test('compress ↔ decompress for any runs', async (t) => {
  t.doesNotThrow(() => fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 2 ** 30 }), { maxLength: 50 }), (counts) => {
    const back = decompressCounts(compressCounts(counts))
    return back.length === counts.length && back.every((c, i) => c === counts[i])
  }), { numRuns: 300 }))
})

t.test('decode(encode(mask)) is the mask; the bbox shortcut gives the same runs', async (t) => {
  t.doesNotThrow(() => fc.assert(fc.property(
    fc.integer({ min: 1, max: 24 }), fc.integer({ min: 1, max: 24 }), fc.array(fc.tuple(fc.nat(23), fc.nat(23), fc.nat(12), fc.nat(12), fc.constantFrom(0, 255)), { maxLength: 6 }),
    (w, h, rects) => {
      const m = drawRects(w, h, rects.map(([x, y, rw, rh, v]) => [Math.min(x, w - 1), Math.min(y, h - 1), Math.min(rw, w - Math.min(x, w - 1)), Math.min(rh, h - Math.min(y, h - 1)), v]))
      const back = decodeCocoRle(encodeCocoRle(m.mask, w, h))
      const full = rleCounts(m.mask, w, h)
      return back.width === w && back.height === h && Buffer.from(back.mask).equals(Buffer.from(m.mask)) &&
        JSON.stringify(rleCounts(m.mask, w, h, bbox(m))) === JSON.stringify(full) && full.reduce((a, b) => a + b, 0) === w * h
    }
  ), { numRuns: 200 }))
})

t.test('bad input', async (t) => {
  t.throws(() => rleCounts(new Uint8Array(5), 3, 2), RangeError)
  t.throws(() => decodeCocoRle({ size: [2, 3], counts: '7' }), RangeError, 'runs exceed the size')
  t.throws(() => decodeCocoRle({ size: [2, 3], counts: '2' }), RangeError, 'runs short of the size')
})
