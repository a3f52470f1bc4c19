/** POST /segment `format`: each encoding carries the same mask as the PNG (fake model). */
import t from 'tap'
import sharp from 'sharp'
import { decodeCocoRle } from '../../src/image/rle.js'
import { build, form, readMask } from '../helper.js'
import { iou, rasterise } from '../image/rasterise.js'

/** A white frame (a part with a hole) and a separate white block on black, 96 × 64. */
async function frameImage (): Promise<Buffer> {
  const w = 96
  const h = 64
  const raw = Buffer.alloc(w * h * 3)
  const fill = (x0: number, y0: number, x1: number, y1: number, v: number): void => {
    for (let y = y0; y < y1; y++) raw.fill(v, (y * w + x0) * 3, (y * w + x1) * 3)
  }
  fill(6, 6, 54, 58, 255)
  fill(20, 20, 40, 44, 0)
  fill(66, 10, 88, 50, 255)
  return await sharp(raw, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer()
}

t.test('format', async (t) => {
  const app = await build(t)
  const img = await frameImage()
  const ask = async (format: string | undefined, expression: string | string[] = 'the white square', headers: Record<string, string> = {}) =>
    await app.inject({ method: 'POST', url: '/segment', headers, payload: form({ image: img, expression, extra: format === undefined ? [] : [['format', format]] }) })

  const pngRes = await ask(undefined)
  t.equal(pngRes.statusCode, 200)
  const ref = pngRes.json()
  t.equal(ref.format, 'png', 'png is the default')
  t.equal(ref.results[0].bbox_format, 'xywh')
  const png = await readMask(Buffer.from(ref.results[0].mask.png, 'base64'))
  const { width, height } = ref.image

  t.test('coco_rle decodes to the PNG mask', async (t) => {
    const res = await ask('coco_rle', ['the white square', 'the white one'])
    t.equal(res.statusCode, 200)
    const body = res.json()
    t.equal(body.format, 'coco_rle')
    for (const r of body.results) {
      t.strictSame(Object.keys(r.mask), ['coco_rle'])
      t.strictSame(r.mask.coco_rle.size, [height, width])
      t.ok(Buffer.from(decodeCocoRle(r.mask.coco_rle).mask).equals(png.data), 'same pixels')
      t.strictSame([r.bbox, r.area], [ref.results[0].bbox, ref.results[0].area])
    }
  })

  t.test('polygon: the frame\'s hole and both parts; IoU with the PNG mask', async (t) => {
    const res = await ask('polygon')
    t.equal(res.statusCode, 200)
    const r = res.json().results[0]
    t.strictSame(Object.keys(r.mask), ['polygon'])
    t.equal(r.mask.polygon.length, 2, 'two parts')
    t.strictSame(r.mask.polygon.map((p: { holes: unknown[] }) => p.holes.length), [1, 0], 'the frame has one hole')
    const score = iou(rasterise(r.mask.polygon, width, height), png.data)
    t.ok(score >= 0.98, `IoU ${score.toFixed(4)}`)
  })

  t.test('format png with Accept: image/png is the raw PNG; other formats are JSON only', async (t) => {
    const raw = await ask('png', 'the white square', { accept: 'image/png' })
    t.equal(raw.headers['content-type'], 'image/png')
    t.ok((await readMask(raw.rawPayload)).data.equals(png.data))
    const rle = await ask('coco_rle', 'the white square', { accept: 'image/png' })
    t.equal(rle.statusCode, 406)
    t.match(rle.json().error, { code: 'SEG_ERR_NOT_ACCEPTABLE', message: /coco_rle.*application\/json/ })
    const either = await ask('polygon', 'the white square', { accept: 'image/png, application/json;q=0.5' })
    t.equal(either.statusCode, 200)
    t.equal(either.json().format, 'polygon', 'JSON when the client accepts it too')
  })

  t.test('bad format values', async (t) => {
    const cases: Array<[string, Array<[string, string]>]> = [['unknown', [['format', 'svg']]], ['empty', [['format', '']]], ['twice', [['format', 'png'], ['format', 'png']]]]
    for (const [name, extra] of cases) {
      const res = await app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: 'the', extra }) })
      t.equal(res.statusCode, 400, name)
      t.equal(res.json().error.code, 'SEG_ERR_INVALID_FIELD', name)
    }
  })
})
