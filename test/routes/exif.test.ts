/** EXIF: masks come back at the size and orientation of the uploaded image after EXIF rotation. */
import t from 'tap'
import sharp from 'sharp'
import { build, form, readMask } from '../helper.js'
import { encodeWithOrientation, orientMask, type RawImage } from '../image/orientation.js'

t.test('the same stored picture with orientation tags 1–8 yields masks that are rotations of each other', async (t) => {
  const app = await build(t)
  // 64×48 stored pixels, an off-centre white L-shape on black: every orientation looks different.
  const width = 64
  const height = 48
  const stored: RawImage = { data: Buffer.alloc(width * height * 3), width, height, channels: 3 }
  const paint = (x0: number, y0: number, w: number, h: number): void => {
    for (let y = y0; y < y0 + h; y++) for (let x = x0; x < x0 + w; x++) stored.data.fill(255, (y * width + x) * 3, (y * width + x) * 3 + 3)
  }
  paint(8, 8, 12, 32)
  paint(8, 28, 36, 12)

  const masks: Array<{ data: Buffer, width: number, height: number }> = []
  for (let k = 1; k <= 8; k++) {
    const res = await app.inject({ method: 'POST', url: '/segment', headers: { accept: 'image/png' }, payload: form({ image: await encodeWithOrientation(stored, k), expression: 'the white one' }) })
    t.equal(res.statusCode, 200)
    t.equal(res.headers['x-image-size'], k >= 5 ? '48x64' : '64x48')
    masks.push(await readMask(res.rawPayload))
  }
  const base = masks[0]
  t.ok(base.data.some((v) => v === 255), 'the upright mask is not empty')
  for (let k = 2; k <= 8; k++) {
    const expected = await orientMask(base.data, base.width, base.height, k)
    const got = masks[k - 1]
    t.strictSame([got.width, got.height], [expected.width, expected.height], `orientation ${k}: size`)
    let inter = 0
    let union = 0
    for (let i = 0; i < got.data.length; i++) {
      const a = got.data[i] === 255
      const b = expected.data[i] === 255
      if (a && b) inter++
      if (a || b) union++
    }
    t.ok(inter / union >= 0.95, `orientation ${k}: IoU with the rotated upright mask ${(inter / union).toFixed(3)}`)
  }
})

t.test('JPEG orientation 6 (a phone held upright): mask is portrait', async (t) => {
  const app = await build(t)
  const landscape = await sharp({ create: { width: 40, height: 30, channels: 3, background: '#000' } })
    .withMetadata({ orientation: 6 }).jpeg().toBuffer()
  const res = await app.inject({ method: 'POST', url: '/segment', payload: form({ image: landscape, expression: 'the circle' }) })
  t.equal(res.statusCode, 200)
  t.strictSame(res.json().image, { width: 30, height: 40 })
  const mask = await readMask(Buffer.from(res.json().results[0].mask.png, 'base64'))
  t.strictSame([mask.width, mask.height], [30, 40])
})
