/** EXIF orientation helpers for tests: store a picture so that orientation k displays it upright. */
import sharp from 'sharp'
import type { Sharp } from 'sharp'

export interface RawImage { data: Buffer, width: number, height: number, channels: 3 }

async function op (img: RawImage, f: (s: Sharp) => Sharp): Promise<RawImage> {
  const { data, info } = await f(sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })).raw().toBuffer({ resolveWithObject: true })
  return { data, width: info.width, height: info.height, channels: 3 }
}

/** What a viewer does to the stored pixels for orientation k (the EXIF definition). */
export async function orient (img: RawImage, k: number): Promise<RawImage> {
  switch (k) {
    case 1: return img
    case 2: return await op(img, (s) => s.flop())
    case 3: return await op(img, (s) => s.rotate(180))
    case 4: return await op(img, (s) => s.flip())
    case 5: return await op(await op(img, (s) => s.rotate(90)), (s) => s.flop()) // transpose
    case 6: return await op(img, (s) => s.rotate(90))
    case 7: return await op(await op(img, (s) => s.rotate(90)), (s) => s.flip()) // transverse
    case 8: return await op(img, (s) => s.rotate(270))
    default: throw new Error(`orientation ${k}`)
  }
}

/** The stored pixels that orientation k displays as `upright` (the inverse of orient). */
export async function storeFor (upright: RawImage, k: number): Promise<RawImage> {
  const inverse: Record<number, number> = { 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6 }
  return await orient(upright, inverse[k])
}

/** Encode stored pixels with an EXIF orientation tag. */
export async function encodeWithOrientation (stored: RawImage, k: number, format: 'png' | 'jpeg' = 'png'): Promise<Buffer> {
  const s = sharp(stored.data, { raw: { width: stored.width, height: stored.height, channels: 3 } }).withMetadata({ orientation: k })
  return format === 'png' ? await s.png().toBuffer() : await s.jpeg({ quality: 95 }).toBuffer()
}

/** Orientation k applied to a single-channel mask (width × height bytes). */
export async function orientMask (mask: Buffer, width: number, height: number, k: number): Promise<{ data: Buffer, width: number, height: number }> {
  const rgb = Buffer.alloc(width * height * 3)
  for (let i = 0; i < mask.length; i++) rgb.fill(mask[i], i * 3, i * 3 + 3)
  const o = await orient({ data: rgb, width, height, channels: 3 }, k)
  const out = Buffer.alloc(o.width * o.height)
  for (let i = 0; i < out.length; i++) out[i] = o.data[i * 3]
  return { data: out, width: o.width, height: o.height }
}
