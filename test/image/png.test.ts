/**
 * The workers' PNG encoder (src/image/png.ts): postprocess writes the mask as scanlines, the
 * encoder deflates them; the PNG is 8-bit greyscale and decodes to the same mask.
 */
import t from 'tap'
import sharp from 'sharp'
import { encodeMaskPng, scanlineBytes } from '../../src/image/png.js'
import { postprocess } from '../../src/image/postprocess.js'
import { letterboxGeometry } from '../../src/image/preprocess.js'

t.test('postprocess in scanline layout = the plain mask with a 0 byte before each row', async (t) => {
  const m = 8
  const logits = new Float32Array(m * m).map((_, i) => Math.sin(i / 3) * 4)
  const g = letterboxGeometry(37, 23, 32)
  const plain = postprocess(logits, m, g, 0.5)
  const lines = postprocess(logits, m, g, 0.5, true)
  t.equal(lines.mask.length, scanlineBytes(37, 23))
  t.strictSame([lines.area, lines.bbox, lines.score], [plain.area, plain.bbox, plain.score])
  for (let y = 0; y < 23; y++) {
    t.equal(lines.mask[y * 38], 0, `row ${y}: filter byte`)
    t.ok(Buffer.from(lines.mask.subarray(y * 38 + 1, y * 38 + 38)).equals(Buffer.from(plain.mask.subarray(y * 37, y * 37 + 37))), `row ${y}: pixels`)
  }
})

t.test('the PNG is 8-bit grey, decodes to the mask, and owns its buffer', async (t) => {
  const m = 8
  const logits = new Float32Array(m * m).map((_, i) => (i % 5) - 2)
  const g = letterboxGeometry(301, 157, 64)
  const plain = postprocess(logits, m, g, 0.5)
  const png = encodeMaskPng(postprocess(logits, m, g, 0.5, true).mask, 301, 157)
  t.equal(png.byteOffset, 0)
  t.equal(png.byteLength, png.buffer.byteLength, 'transferable without detaching anything else')
  const meta = await sharp(png).metadata()
  t.strictSame([meta.format, meta.width, meta.height, meta.channels, meta.depth], ['png', 301, 157, 1, 'uchar'])
  const { data } = await sharp(png).extractChannel(0).raw().toBuffer({ resolveWithObject: true })
  t.ok(data.equals(Buffer.from(plain.mask)), 'same pixels')
})

t.test('EXPECTED FAILURE - scanlines of the wrong size are refused', async (t) => {
  t.throws(() => encodeMaskPng(new Uint8Array(10), 3, 3), /expected 12 scanline bytes/)
})
