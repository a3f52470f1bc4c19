/**
 * The last post-processing step on the main thread: a mask (0/255 per pixel, from
 * postprocess.ts in an engine worker) → 8-bit greyscale PNG. Kept apart from postprocess.ts so
 * the worker threads, which import that file, do not load sharp.
 */
import sharp from 'sharp'

export async function encodeMaskPng (mask: Uint8Array, width: number, height: number): Promise<Buffer> {
  return await sharp(mask, { raw: { width, height, channels: 1 } })
    .toColourspace('b-w') // one 8-bit grey channel, not sRGB
    .png({ compressionLevel: 6 })
    .toBuffer()
}
