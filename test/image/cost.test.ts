/**
 * Decoding small and what it costs: the one-pipeline loader (loadLetterboxed) against the
 * reference (full decode, then letterbox), and the memory estimates read from headers
 * (decodeCost, maskCost) for the cases that differ: shrink-on-load JPEG, progressive JPEG,
 * interlaced PNG, alpha, multi-page TIFF, EXIF rotation. Measured peaks are bench/memory.mjs's.
 */
import t from 'tap'
import sharp from 'sharp'
import { decodeCost, decodeImage, jpegShrinkOnLoad, letterbox, loadLetterboxed, readHeader } from '../../src/image/preprocess.js'
import { maskCost } from '../../src/image/png.js'
import { encodeWithOrientation, type RawImage } from './orientation.js'

const spec = { size: 224, padValue: 0.5, scale: 1 / 255, mean: null, std: null, kernel: 'cubic' as const }
const limits = { maxPixels: 4e7 }

/** A picture with structure (gradients and a block), w × h, 3 channels. */
function picture (w: number, h: number): RawImage {
  const data = Buffer.alloc(w * h * 3)
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3
      const inBlock = x > w / 4 && x < w / 2 && y > h / 3 && y < (2 * h) / 3
      data[i] = inBlock ? 250 : Math.round((255 * x) / w)
      data[i + 1] = inBlock ? 240 : Math.round((255 * y) / h)
      data[i + 2] = 90
    }
  }
  return { data, width: w, height: h, channels: 3 }
}
const encode = (p: RawImage) => sharp(p.data, { raw: { width: p.width, height: p.height, channels: 3 } })
const meanAbs = (a: Float32Array, b: Float32Array): number => { let s = 0; for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]); return s / a.length }

const big = picture(2400, 1800)

t.test('PNG without alpha: the one pipeline gives exactly the reference tensor', async (t) => {
  const png = await encode(big).png({ compressionLevel: 1 }).toBuffer()
  const header = await readHeader(png, limits)
  const got = await loadLetterboxed(png, header, spec, limits)
  const want = await letterbox(await decodeImage(png, limits), spec)
  t.strictSame(got.geometry, want.geometry)
  t.ok(got.data.every((v, i) => v === want.data[i]), 'same values')
})

t.test('image with alpha: alpha is dropped before the resize, as the reference does', async (t) => {
  const rgba = Buffer.alloc(600 * 400 * 4)
  for (let i = 0; i < 600 * 400; i++) rgba.set([(i * 7) % 256, (i * 13) % 256, 40, (i * 3) % 256], i * 4)
  const png = await sharp(rgba, { raw: { width: 600, height: 400, channels: 4 } }).png().toBuffer()
  const header = await readHeader(png, limits)
  t.equal(header.hasAlpha, true)
  const got = await loadLetterboxed(png, header, spec, limits)
  const want = await letterbox(await decodeImage(png, limits), spec)
  t.ok(got.data.every((v, i) => v === want.data[i]), 'same values')
})

t.test('JPEG decodes small (shrink-on-load) and stays close to the full decode', async (t) => {
  const jpg = await encode(big).jpeg({ quality: 95 }).toBuffer()
  const header = await readHeader(jpg, limits)
  const { nw, nh } = (await loadLetterboxed(jpg, header, spec, limits)).geometry
  t.equal(jpegShrinkOnLoad(header, nw, nh), 4, '2400 → 224 is a shrink of 10.7: DCT scaling by 4, the rest by the cubic kernel')
  const got = await loadLetterboxed(jpg, header, spec, limits)
  const want = await letterbox(await decodeImage(jpg, limits), spec)
  t.strictSame(got.geometry, want.geometry)
  const d = meanAbs(got.data, want.data)
  t.ok(d < 0.01, `mean |Δ| ${d.toFixed(4)} (in 0–1 units) from the full decode`)
})

t.test('EXIF rotation: the header gives the upright size, the tensor is the reference one', async (t) => {
  const stored = picture(300, 200)
  for (const k of [1, 3, 6, 8]) {
    const jpg = await encodeWithOrientation(stored, k, 'jpeg')
    const header = await readHeader(jpg, limits)
    t.strictSame([header.width, header.height, header.storedWidth, header.storedHeight], k >= 5 ? [200, 300, 300, 200] : [300, 200, 300, 200], `orientation ${k}`)
    const got = await loadLetterboxed(jpg, header, spec, limits)
    const want = await letterbox(await decodeImage(jpg, limits), spec)
    t.strictSame(got.geometry, want.geometry)
    t.ok(meanAbs(got.data, want.data) < 0.01, `orientation ${k}: close to the reference`)
  }
})

t.test('estimates from the header: what each decoder holds (flags from real headers, at 40 MP)', async (t) => {
  // The flags (progressive, interlaced, alpha, subsampling) come from real files; the size is
  // set to the largest accepted image, where the differences matter.
  const W = 7296
  const H = 5472
  const full = W * H * 3
  const cost = async (buf: Buffer) => decodeCost({ ...(await readHeader(buf, limits)), width: W, height: H, storedWidth: W, storedHeight: H }, spec)
  const baseline = await cost(await encode(big).jpeg({ quality: 90 }).toBuffer())
  const progressive = await cost(await encode(big).jpeg({ quality: 90, progressive: true }).toBuffer())
  const png = await cost(await encode(big).png({ compressionLevel: 1 }).toBuffer())
  const interlaced = await cost(await encode(big).png({ compressionLevel: 1, progressive: true }).toBuffer())
  t.ok(baseline < full / 4, `baseline JPEG ${baseline} < a quarter of one full RGB copy (${full}): it is decoded small`)
  t.ok(progressive >= baseline + W * H * 1.5 * 2, 'a progressive JPEG adds its full-size coefficients (4:2:0: 1.5 samples per pixel, 2 bytes each)')
  t.ok(png < full / 2, 'a plain PNG streams')
  t.ok(interlaced >= full, 'an interlaced PNG is decoded whole')
  const rgba = await sharp(big.data, { raw: { width: 2400, height: 1800, channels: 3 } }).ensureAlpha().png({ compressionLevel: 1 }).toBuffer()
  t.ok(await cost(rgba) >= full, 'alpha: the full-size copy without alpha is counted')
})

t.test('multi-page TIFF: the header gives the page count; one page is decoded and counted', async (t) => {
  const page = await encode(picture(800, 600)).png().toBuffer()
  const tiff = await sharp([page, page, page], { join: { animated: true } }).tiff({ compression: 'deflate' }).toBuffer()
  const header = await readHeader(tiff, limits)
  t.strictSame([header.pages, header.width, header.height], [3, 800, 600])
  const one = decodeCost(header, spec)
  t.ok(one < decodeCost({ ...header, storedHeight: 3 * 600, height: 3 * 600 }, spec), 'less than three pages would cost')
  const { geometry } = await loadLetterboxed(tiff, header, spec, limits)
  t.strictSame([geometry.width, geometry.height], [800, 600])
})

t.test('mask cost: one full-size plane and each expression\'s PNG', async (t) => {
  t.ok(maskCost(7296, 5472, 1) >= 7296 * 5472, 'at least one plane')
  t.ok(maskCost(7296, 5472, 8) > maskCost(7296, 5472, 1), 'more expressions, more PNGs')
  t.ok(maskCost(7296, 5472, 8) < 2 * 7296 * 5472, 'but never another full plane per expression')
})

t.test('EXPECTED FAILURE - the header alone refuses too many pixels (413) and non-images (415)', async (t) => {
  await t.rejects(readHeader(await encode(picture(50, 50)).png().toBuffer(), { maxPixels: 2499 }), { code: 'SEG_ERR_IMAGE_TOO_LARGE', statusCode: 413 })
  await t.rejects(readHeader(Buffer.from('not an image'), limits), { code: 'SEG_ERR_NOT_AN_IMAGE', statusCode: 415 })
})
