/**
 * Mask → 8-bit greyscale PNG, without sharp, so that the engine workers encode the masks they
 * compute: the full-size mask never leaves the worker, and a request holds one full-size plane
 * at a time however many expressions it has.
 *
 * The mask is produced directly in PNG's scanline layout (one filter byte, 0 = none, before each
 * row; postprocess.ts writes into it), so the encoder adds no copy of its own: it deflates those
 * scanlines into one IDAT chunk.
 */
import { constants, deflateSync } from 'node:zlib'

const SIGNATURE = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])

const CRC_TABLE = (() => {
  const t = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = (c & 1) !== 0 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    t[n] = c >>> 0
  }
  return t
})()

function crc32 (bytes: Uint8Array, from: number, to: number): number {
  let c = 0xffffffff
  for (let i = from; i < to; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}

/** Bytes of the scanline buffer of a width × height mask: a filter byte and `width` pixels per row. */
export const scanlineBytes = (width: number, height: number): number => (width + 1) * height

/**
 * PNG of a mask given as scanlines (see scanlineBytes; each row's filter byte must be 0). The
 * result owns its ArrayBuffer, so it can be transferred between threads.
 */
export function encodeMaskPng (scanlines: Uint8Array, width: number, height: number): Uint8Array {
  if (scanlines.length !== scanlineBytes(width, height)) throw new Error(`expected ${scanlineBytes(width, height)} scanline bytes for ${width}×${height}, got ${scanlines.length}`)
  // Run-length matching only: a mask is runs of 0 and 255, which it finds at a fraction of the
  // default strategy's cost, and no larger.
  const idat = deflateSync(scanlines, { level: 6, strategy: constants.Z_RLE })
  const chunks: Array<[string, Uint8Array]> = [['IHDR', ihdr(width, height)], ['IDAT', idat], ['IEND', new Uint8Array(0)]]
  const total = SIGNATURE.length + chunks.reduce((n, [, data]) => n + 12 + data.length, 0)
  const out = new Uint8Array(new ArrayBuffer(total))
  const view = new DataView(out.buffer)
  out.set(SIGNATURE, 0)
  let o = SIGNATURE.length
  for (const [type, data] of chunks) {
    view.setUint32(o, data.length)
    for (let i = 0; i < 4; i++) out[o + 4 + i] = type.charCodeAt(i)
    out.set(data, o + 8)
    view.setUint32(o + 8 + data.length, crc32(out, o + 4, o + 8 + data.length))
    o += 12 + data.length
  }
  return out
}

function ihdr (width: number, height: number): Uint8Array {
  const b = new Uint8Array(13)
  const v = new DataView(b.buffer)
  v.setUint32(0, width)
  v.setUint32(4, height)
  b[8] = 8 // bit depth
  b[9] = 0 // colour type: greyscale
  // compression, filter method, interlace: 0
  return b
}

/**
 * Bytes that producing and encoding the masks of one request hold at their peak: one full-size
 * plane (the scanlines), and K finished PNGs. A mask is a bilinear upscale of at most S × S
 * values, so its PNG (or its COCO RLE, or its polygons) is far smaller than the plane; W × H / 16
 * per mask is a generous bound. Raw masks (`format` 'raw', the v2 UINT8 tensor) come back whole:
 * K planes, and the K × H × W tensor they are copied into.
 */
export function maskCost (width: number, height: number, expressions: number, format?: string): number {
  if (format === 'raw') return scanlineBytes(width, height) + 2 * expressions * width * height + 1024 * 1024
  return scanlineBytes(width, height) + expressions * Math.ceil(width * height / 16) + 1024 * 1024
}
