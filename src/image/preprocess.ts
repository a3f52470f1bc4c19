/**
 * Image preprocessing: bytes → letterboxed CHW float32 tensor + the geometry that postprocessing
 * needs to undo the letterbox. A fixed pipeline that mirrors the export's Python preprocessing
 * (docs/vlt.md §1, "image in"):
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

// sharp's operation cache would keep decoded images alive after their request, outside the
// memory budget; every upload is new bytes anyway.
sharp.cache(false)

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

/** What the image's header says, read before any pixel is decoded. */
export interface ImageHeader {
  /** The format's label: jpeg, png, webp, gif, tiff or avif. */
  format: string
  /** Size after EXIF orientation (the size of the answer mask). */
  width: number
  height: number
  /** Size as stored (before orientation): what the decoder produces. */
  storedWidth: number
  storedHeight: number
  /** EXIF orientation 1–8 (1 when absent). */
  orientation: number
  /** Pages or frames in the file; only the first is decoded. */
  pages: number
  /** Bands as stored, and bytes per sample (1, or 2 for 16-bit). */
  channels: number
  sampleBytes: number
  hasAlpha: boolean
  /** Progressive JPEG or interlaced PNG: the decoder keeps the whole image in memory. */
  progressive: boolean
  /** JPEG only, e.g. '4:2:0'. */
  chromaSubsampling?: string
}

/**
 * Read and check the header: 415 not an image / unsupported format, 413 too many pixels, 400 a
 * header that announces an image but cannot be read. Only the header is parsed (sharp's metadata
 * does not decode pixels), so this is cheap for any upload.
 */
export async function readHeader (input: Buffer, opts: DecodeOptions): Promise<ImageHeader> {
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
  const storedWidth = meta.width ?? 0
  // A multi-page file may report all its pages stacked; one page is decoded.
  const storedHeight = meta.pageHeight !== undefined && meta.pageHeight > 0 ? Math.min(meta.pageHeight, meta.height ?? 0) : (meta.height ?? 0)
  const pixels = storedWidth * storedHeight
  if (pixels > opts.maxPixels) {
    throw ERR_IMAGE_TOO_LARGE(`The image has ${storedWidth}×${storedHeight} pixels; at most ${opts.maxPixels} are accepted`)
  }
  if (!(storedWidth > 0 && storedHeight > 0)) throw ERR_IMAGE_DECODE('the header gives no size')
  const orientation = meta.orientation !== undefined && meta.orientation >= 1 && meta.orientation <= 8 ? meta.orientation : 1
  const swap = orientation >= 5
  return {
    format: format === 'heif' ? 'avif' : format,
    width: swap ? storedHeight : storedWidth,
    height: swap ? storedWidth : storedHeight,
    storedWidth,
    storedHeight,
    orientation,
    pages: Math.max(1, meta.pages ?? 1),
    channels: Math.max(1, meta.channels ?? 3),
    sampleBytes: ['ushort', 'short'].includes(String(meta.depth)) ? 2 : ['uint', 'int', 'float', 'complex'].includes(String(meta.depth)) ? 4 : ['double', 'dpcomplex'].includes(String(meta.depth)) ? 8 : 1,
    hasAlpha: meta.hasAlpha === true,
    progressive: meta.isProgressive === true,
    chromaSubsampling: meta.chromaSubsampling,
  }
}

/**
 * Decode any accepted image at full size to 8-bit sRGB RGB after EXIF orientation (the
 * reference decode of the tests and tools; the service uses loadLetterboxed). Throws coded
 * errors: 415 not an image / unsupported format, 413 too many pixels, 400 corrupt data.
 */
export async function decodeImage (input: Buffer, opts: DecodeOptions): Promise<DecodedImage> {
  const header = await readHeader(input, opts)
  return await decodeFull(input, header, opts)
}

async function decodeFull (input: Buffer, header: ImageHeader, opts: DecodeOptions): Promise<DecodedImage> {
  try {
    const { data, info } = await sharp(input, { limitInputPixels: opts.maxPixels, failOn: 'error', pages: 1 })
      .rotate() // EXIF orientation first (PIL ImageOps.exif_transpose)
      .removeAlpha() // PIL convert('RGB') drops alpha without compositing
      .toColourspace('srgb') // greyscale, CMYK, 16-bit → 8-bit sRGB
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true })
    if (info.channels !== 3) throw new Error(`expected 3 channels after conversion, got ${info.channels}`)
    return { data, width: info.width, height: info.height, format: header.format }
  } catch (err) {
    if (err instanceof SegError) throw err
    throw ERR_IMAGE_DECODE('the data is corrupt or truncated')
  }
}

/**
 * The network's input straight from the upload, holding little: one sharp pipeline that decodes,
 * orients and resizes to the letterbox window (nw × nh) in one pass. libvips streams it, and
 * JPEG (DCT scaling) and WebP decode at a fraction of their size (shrink-on-load), so no
 * full-size copy of the pixels is made. The resize sees the image as stored (sharp orients after
 * it, with the target swapped), 8-bit sRGB conversion comes after the resize. For a 90° or 270°
 * orientation the two axes are thus resampled in the other order than PIL's rotate-then-resize,
 * which can round an edge pixel differently (test/routes/real-model.test.ts measures it).
 *
 * An image with alpha is the exception: PIL drops alpha before resizing, while a resize with
 * alpha weights colours by it (premultiplication), so such an image is decoded at full size
 * without alpha first, then letterboxed (decodeCost counts that copy).
 */
export async function loadLetterboxed (input: Buffer, header: ImageHeader, spec: InputSpec, opts: DecodeOptions): Promise<{ data: Float32Array, geometry: Geometry }> {
  if (header.hasAlpha) return await letterbox(await decodeFull(input, header, opts), spec)
  const geometry = letterboxGeometry(header.width, header.height, spec.size)
  let rgb: Buffer
  try {
    const { data, info } = await sharp(input, { limitInputPixels: opts.maxPixels, failOn: 'error', pages: 1 })
      .rotate()
      .resize(geometry.nw, geometry.nh, { fit: 'fill', kernel: spec.kernel, fastShrinkOnLoad: header.format === 'webp' })
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true })
    if (info.channels !== 3 || info.width !== geometry.nw || info.height !== geometry.nh) {
      throw new Error(`expected ${geometry.nw}×${geometry.nh}×3 after resizing, got ${info.width}×${info.height}×${info.channels}`)
    }
    rgb = data
  } catch (err) {
    if (err instanceof SegError) throw err
    throw ERR_IMAGE_DECODE('the data is corrupt or truncated')
  }
  return { data: toCHW(rgb, geometry, spec), geometry }
}

/** JPEG's shrink-on-load factor for this resize, as sharp picks it with fastShrinkOnLoad off. */
export function jpegShrinkOnLoad (header: ImageHeader, nw: number, nh: number): number {
  // The target as stored: sharp swaps it for a 90° or 270° orientation.
  const [tw, th] = header.orientation >= 5 ? [nh, nw] : [nw, nh]
  const shrink = Math.min(header.storedWidth / tw, header.storedHeight / th)
  let s = shrink >= 16 ? 8 : shrink >= 8 ? 4 : shrink >= 4 ? 2 : 1
  if (s > 1 && Math.floor(shrink) === s) s /= 2
  return s
}

const MiB = 1024 * 1024
/** libvips' own buffers for one pipeline, besides the pixels counted below. */
const PIPELINE_OVERHEAD = 16 * MiB
/** Rows of the widest stage a streaming pipeline holds at once (tiles in flight, the resize window). */
const WINDOW_ROWS = 256

/**
 * Bytes that preparing this image (loadLetterboxed) holds at its peak, from its header alone: what
 * its decoder must keep in memory, the streaming window, the full-size copy of an image with
 * alpha, the resized pixels and the tensor. Upper bounds, checked against measured peaks by
 * bench/memory.mjs (RELIABILITY.md).
 */
export function decodeCost (h: ImageHeader, spec: Pick<InputSpec, 'size'>): number {
  const { nw, nh } = letterboxGeometry(h.width, h.height, spec.size)
  const W = h.storedWidth
  const H = h.storedHeight
  const full = W * H
  const sample = Math.max(3, h.channels) * h.sampleBytes
  const window = (width: number): number => width * sample * WINDOW_ROWS
  let decoder: number
  switch (h.format) {
    case 'jpeg': {
      const s = h.hasAlpha ? 1 : jpegShrinkOnLoad(h, nw, nh)
      // A progressive JPEG keeps every DCT coefficient (2 bytes per sample) of the full image.
      const samples = h.channels === 1 ? 1 : h.channels >= 4 ? h.channels : h.chromaSubsampling === '4:2:0' ? 1.5 : h.chromaSubsampling === '4:2:2' ? 2 : 3
      decoder = window(Math.ceil(W / s)) + (h.progressive ? full * samples * 2 : 0)
      break
    }
    case 'png':
      // An interlaced PNG is decoded whole; a plain one row by row.
      decoder = h.progressive ? full * sample : window(W)
      break
    case 'webp': {
      // libwebp decodes the whole (scaled) picture to RGBA.
      const scale = h.hasAlpha ? 1 : Math.max(1, Math.min(W / (h.orientation >= 5 ? nh : nw), H / (h.orientation >= 5 ? nw : nh)))
      decoder = Math.ceil(W / scale) * Math.ceil(H / scale) * 4
      break
    }
    case 'gif':
      // One RGBA frame buffer of the canvas.
      decoder = full * 4 + window(W)
      break
    case 'tiff':
      // A strip can be the whole image.
      decoder = full * sample + window(W)
      break
    default:
      // AVIF: the decoded planes and their interleaved copy.
      decoder = full * (sample + 4)
  }
  const fullCopy = h.hasAlpha ? full * 3 + window(W) : 0
  return PIPELINE_OVERHEAD + decoder + fullCopy + nw * nh * 3 + 3 * spec.size * spec.size * 4
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
