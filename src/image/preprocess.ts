/**
 * Image preprocessing: bytes → letterboxed CHW float32 tensor + the geometry that postprocessing
 * needs to undo the letterbox. A fixed pipeline that mirrors the export's Python preprocessing
 * (design/VLT.md §1, "image in"):
 *
 *   Python (PIL / numpy)                          here (sharp / Float32Array)
 *   img = ImageOps.exif_transpose(Image.open(f))  sharp(buf).rotate()            EXIF orientation first
 *   img = img.convert('RGB')                      .removeAlpha().toColourspace('srgb')  8-bit sRGB, alpha dropped
 *   scale = min(S / w, S / h)                     letterboxGeometry()
 *   nw, nh = int(w * scale), int(h * scale)
 *   img = img.resize((nw, nh), Image.BICUBIC)     .resize(nw, nh, { kernel: 'cubic', fit: 'fill' })
 *   canvas = np.full((S, S, 3), 0.5)              data.fill(input.pad_value)
 *   dx, dy = (S - nw) // 2, (S - nh) // 2
 *   canvas[dy:dy+nh, dx:dx+nw] = np.asarray(img) / 255     × input.scale, no mean/std
 *   x = canvas.transpose(2, 0, 1)[None]           HWC → CHW, [1, 3, S, S]
 *
 * S, the pad value, the scale and mean/std come only from model.json (`input`).
 */
import sharp from 'sharp'
import type { KernelEnum, Metadata } from 'sharp'
import {
  ERR_IMAGE_DECODE, ERR_IMAGE_FORMAT, ERR_IMAGE_TOO_LARGE, ERR_NOT_AN_IMAGE, SegError,
} from '../errors.js'

export type SharpKernel = Extract<keyof KernelEnum, string>

/** What preprocessing needs from model.json `input`. */
export interface InputSpec {
  /** S: the square network input side. */
  size: number
  /** Canvas fill, in the tensor's units (0.5 for VLT). */
  padValue: number
  /** Multiplier from 8-bit values to the tensor (1/255). */
  scale: number
  /** Per-channel mean / std in the tensor's units, or null (VLT uses none). */
  mean: number[] | null
  std: number[] | null
  /** sharp kernel standing in for PIL's resize filter. */
  kernel: SharpKernel
}

/** The letterbox, needed again in postprocessing. */
export interface Geometry {
  /** The image's size after EXIF orientation (the size of the answer mask). */
  width: number
  height: number
  /** Network input side S. */
  size: number
  /** Resized image size and its top-left offset on the S×S canvas. */
  nw: number
  nh: number
  dx: number
  dy: number
}

export interface DecodedImage {
  /** 8-bit RGB, HWC, after EXIF orientation. */
  data: Buffer
  width: number
  height: number
  format: string
}

/** Formats accepted on input (sharp's metadata names; AVIF is 'heif' with av1 compression). */
export const ACCEPTED_FORMATS = ['jpeg', 'png', 'webp', 'gif', 'tiff', 'heif'] as const

export interface DecodeOptions {
  maxPixels: number
}

/**
 * Decode any accepted image to 8-bit sRGB RGB after EXIF orientation. Throws coded errors:
 * 415 not an image / unsupported format, 413 too many pixels, 400 corrupt data.
 */
export async function decodeImage (input: Buffer, opts: DecodeOptions): Promise<DecodedImage> {
  // SVG (and gzip-compressed SVGZ) can reference external resources: refuse it without parsing.
  const markup = sniffMarkup(input)
  if (markup === 'svg') throw ERR_IMAGE_FORMAT('svg')
  if (markup !== undefined) throw ERR_NOT_AN_IMAGE()
  let meta: Metadata
  try {
    // limitInputPixels is enforced at decode; metadata is header-only and cheap.
    meta = await sharp(input, { limitInputPixels: false }).metadata()
  } catch {
    // A recognisable header whose data cannot be read is a broken image, not a non-image.
    if (sniffFormat(input) !== undefined) throw ERR_IMAGE_DECODE('the data is corrupt or truncated')
    throw ERR_NOT_AN_IMAGE()
  }
  const format = meta.format as string | undefined
  if (format === undefined || !(ACCEPTED_FORMATS as readonly string[]).includes(format)) {
    throw ERR_IMAGE_FORMAT(format ?? 'unknown')
  }
  if (format === 'heif' && meta.compression !== 'av1') throw ERR_IMAGE_FORMAT(`HEIF (${meta.compression ?? 'unknown'})`)
  const pixels = (meta.width ?? 0) * (meta.height ?? 0)
  if (pixels > opts.maxPixels) {
    throw ERR_IMAGE_TOO_LARGE(`The image has ${meta.width}×${meta.height} pixels; at most ${opts.maxPixels} are accepted`)
  }
  try {
    const { data, info } = await sharp(input, { limitInputPixels: opts.maxPixels, failOn: 'error', pages: 1 })
      .rotate() // EXIF orientation first (PIL ImageOps.exif_transpose)
      .removeAlpha() // PIL convert('RGB') drops alpha without compositing
      .toColourspace('srgb') // greyscale, CMYK, 16-bit → 8-bit sRGB
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true })
    if (info.channels !== 3) throw new Error(`expected 3 channels after conversion, got ${info.channels}`)
    return { data, width: info.width, height: info.height, format: format === 'heif' ? 'avif' : format }
  } catch (err) {
    if (err instanceof SegError) throw err
    throw ERR_IMAGE_DECODE('the data is corrupt or truncated')
  }
}

/** The accepted format a buffer's magic bytes announce, if any. */
export function sniffFormat (b: Uint8Array): string | undefined {
  const ascii = (from: number, to: number): string => Buffer.from(b.subarray(from, to)).toString('latin1')
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg'
  if (b.length >= 8 && ascii(0, 8) === '\x89PNG\r\n\x1a\n') return 'png'
  if (b.length >= 6 && (ascii(0, 6) === 'GIF87a' || ascii(0, 6) === 'GIF89a')) return 'gif'
  if (b.length >= 12 && ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'webp'
  if (b.length >= 4 && (ascii(0, 4) === 'II*\x00' || ascii(0, 4) === 'MM\x00*')) return 'tiff'
  if (b.length >= 12 && ascii(4, 8) === 'ftyp' && /^avi[fs]$/.test(ascii(8, 12))) return 'avif'
  return undefined
}

/** 'svg' for SVG, 'markup' for other XML/HTML or gzip data, undefined otherwise (looked at before sharp sees the bytes). */
export function sniffMarkup (b: Uint8Array): 'svg' | 'markup' | undefined {
  if (b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b) return 'markup'
  const head = Buffer.from(b.subarray(0, 4096)).toString('latin1').replace(/^(\xef\xbb\xbf|\s)+/, '')
  if (!head.startsWith('<')) return undefined
  return /<svg[\s>]/i.test(head) ? 'svg' : 'markup'
}

/** scale = min(S/w, S/h); nw, nh = int(w·scale), int(h·scale); dx, dy = (S−nw)//2, (S−nh)//2. */
export function letterboxGeometry (width: number, height: number, size: number): Geometry {
  const scale = Math.min(size / width, size / height)
  // Python int() truncates the float product; at least one pixel survives.
  const nw = Math.max(1, Math.min(size, Math.floor(width * scale)))
  const nh = Math.max(1, Math.min(size, Math.floor(height * scale)))
  return { width, height, size, nw, nh, dx: Math.floor((size - nw) / 2), dy: Math.floor((size - nh) / 2) }
}

/** Resize (the model's resize filter) and paste centred on the padded canvas: [3, S, S] float32. */
export async function letterbox (image: DecodedImage, spec: InputSpec): Promise<{ data: Float32Array, geometry: Geometry }> {
  const geometry = letterboxGeometry(image.width, image.height, spec.size)
  const { nw, nh } = geometry
  let resized: Buffer
  if (nw === image.width && nh === image.height) {
    resized = image.data
  } else {
    resized = await sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } })
      .resize(nw, nh, { fit: 'fill', kernel: spec.kernel, fastShrinkOnLoad: false })
      .raw()
      .toBuffer()
  }
  return { data: toCHW(resized, geometry, spec), geometry }
}

/** HWC uint8 (nw×nh) → CHW float32 (S×S) with the pad value around it. */
export function toCHW (rgb: Uint8Array, g: Geometry, spec: Pick<InputSpec, 'padValue' | 'scale' | 'mean' | 'std'>): Float32Array {
  const { size, nw, nh, dx, dy } = g
  const plane = size * size
  const out = new Float32Array(3 * plane)
  out.fill(spec.padValue)
  for (let c = 0; c < 3; c++) {
    const mean = spec.mean?.[c] ?? 0
    const std = spec.std?.[c] ?? 1
    const base = c * plane
    for (let y = 0; y < nh; y++) {
      const row = base + (y + dy) * size + dx
      const src = y * nw * 3 + c
      for (let x = 0; x < nw; x++) {
        out[row + x] = (rgb[src + 3 * x] * spec.scale - mean) / std
      }
    }
  }
  return out
}

/** decode + letterbox. */
export async function preprocess (input: Buffer, spec: InputSpec, opts: DecodeOptions): Promise<{ data: Float32Array, geometry: Geometry, format: string }> {
  const image = await decodeImage(input, opts)
  const { data, geometry } = await letterbox(image, spec)
  return { data, geometry, format: image.format }
}
