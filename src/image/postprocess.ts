/**
 * Post-processing: mask logits (m×m) → binary mask at the image's size, mirroring the export's
 * Python evaluator (docs/vlt.md §1, "eval" row) step for step:
 *
 *   Python (torch)                                                 here
 *   p = logits.sigmoid()                                           sigmoid()
 *   p = F.interpolate(p, (S, S), mode='bilinear', align_corners=False)        resizeBilinear()
 *   p = p[..., dy:dy+nh, dx:dx+nw]                                 crop()
 *   p = F.interpolate(p, (H, W), mode='bilinear', align_corners=False)        resizeBilinear()
 *   mask = p > threshold                                           threshold()
 *
 * The bilinear resize is PyTorch's (align_corners=False, antialias=False):
 *   src = (dst + 0.5) · (in / out) − 0.5, clamped below at 0; i0 = floor(src);
 *   i1 = min(i0 + 1, in − 1); weights (1 − (src − i0), src − i0).
 */
import type { Geometry } from './preprocess.js'

/** A single-channel float image, row-major. */
export interface Plane {
  data: Float32Array
  width: number
  height: number
}

export function sigmoid (logits: Float32Array): Float32Array {
  const out = new Float32Array(logits.length)
  for (let i = 0; i < logits.length; i++) out[i] = 1 / (1 + Math.exp(-logits[i]))
  return out
}

interface AxisWeights { i0: Int32Array, i1: Int32Array, w1: Float32Array }

/** Source indices and weights along one axis (PyTorch area_pixel_compute_source_index). */
function axisWeights (inSize: number, outSize: number): AxisWeights {
  const scale = inSize / outSize
  const i0 = new Int32Array(outSize)
  const i1 = new Int32Array(outSize)
  const w1 = new Float32Array(outSize)
  for (let d = 0; d < outSize; d++) {
    const src = Math.max((d + 0.5) * scale - 0.5, 0)
    const a = Math.floor(src)
    i0[d] = Math.min(a, inSize - 1)
    i1[d] = Math.min(a + 1, inSize - 1)
    w1[d] = src - a
  }
  return { i0, i1, w1 }
}

/** F.interpolate(mode='bilinear', align_corners=False, antialias=False) on one plane. */
export function resizeBilinear (src: Plane, width: number, height: number): Plane {
  const xw = axisWeights(src.width, width)
  const yw = axisWeights(src.height, height)
  const out = new Float32Array(width * height)
  const s = src.data
  const sw = src.width
  for (let y = 0; y < height; y++) {
    const r0 = yw.i0[y] * sw
    const r1 = yw.i1[y] * sw
    const b = yw.w1[y]
    const a = 1 - b
    const o = y * width
    for (let x = 0; x < width; x++) {
      const c0 = xw.i0[x]
      const c1 = xw.i1[x]
      const q = xw.w1[x]
      const p = 1 - q
      out[o + x] = a * (p * s[r0 + c0] + q * s[r0 + c1]) + b * (p * s[r1 + c0] + q * s[r1 + c1])
    }
  }
  return { data: out, width, height }
}

/** p[y:y+h, x:x+w] */
export function crop (src: Plane, x: number, y: number, width: number, height: number): Plane {
  const out = new Float32Array(width * height)
  for (let r = 0; r < height; r++) {
    const start = (r + y) * src.width + x
    out.set(src.data.subarray(start, start + width), r * width)
  }
  return { data: out, width, height }
}

/** Probabilities at the image's size: sigmoid → S×S → un-letterbox → W×H. */
export function probabilityMap (logits: Float32Array, maskSize: number, g: Geometry): Plane {
  const p = { data: sigmoid(logits), width: maskSize, height: maskSize }
  const full = resizeBilinear(p, g.size, g.size)
  const inner = crop(full, g.dx, g.dy, g.nw, g.nh)
  return resizeBilinear(inner, g.width, g.height)
}

export interface MaskSummary {
  /**
   * 0 / 255 per pixel, row-major, the image's size; with `scanlines`, each row is preceded by a
   * 0 byte (PNG's scanline layout, for image/png.ts).
   */
  mask: Uint8Array
  width: number
  height: number
  /** Pixels on the object. */
  area: number
  /** [x, y, w, h] of the pixels on the object, or null when the mask is empty. */
  bbox: [number, number, number, number] | null
  /** Mean probability inside the mask (0 when empty). */
  score: number
}

/** A threshold applies to probabilities: model.json's and a request's must lie in [0, 1]. */
export const isThreshold = (v: number): boolean => v >= 0 && v <= 1

/** mask = p > threshold, with its area, bounding box and mean probability inside. */
export function threshold (p: Plane, thr: number): MaskSummary {
  const { width, height, data } = p
  const mask = new Uint8Array(width * height)
  let area = 0
  let sum = 0
  let x0 = width
  let y0 = height
  let x1 = -1
  let y1 = -1
  for (let y = 0; y < height; y++) {
    const o = y * width
    for (let x = 0; x < width; x++) {
      const v = data[o + x]
      if (v > thr) {
        mask[o + x] = 255
        area++
        sum += v
        if (x < x0) x0 = x
        if (x > x1) x1 = x
        if (y < y0) y0 = y
        if (y > y1) y1 = y
      }
    }
  }
  const bbox: MaskSummary['bbox'] = area === 0 ? null : [x0, y0, x1 - x0 + 1, y1 - y0 + 1]
  return { mask, width, height, area, bbox, score: area === 0 ? 0 : sum / area }
}

/**
 * The whole post-processing of one row: the same arithmetic as
 * threshold(probabilityMap(…)), without its intermediate planes — the first resize computes only
 * the letterbox window (the crop), and the second is thresholded as it is computed, into the one
 * full-size plane (laid out as PNG scanlines when `scanlines` is set).
 */
export function postprocess (logits: Float32Array, maskSize: number, g: Geometry, thr: number, scanlines = false): MaskSummary {
  const p = sigmoid(logits)
  // S×S resize restricted to rows dy…dy+nh, columns dx…dx+nw.
  const xw = axisWeights(maskSize, g.size)
  const yw = axisWeights(maskSize, g.size)
  const inner = new Float32Array(g.nw * g.nh)
  for (let y = 0; y < g.nh; y++) {
    const r0 = yw.i0[y + g.dy] * maskSize
    const r1 = yw.i1[y + g.dy] * maskSize
    const b = yw.w1[y + g.dy]
    const a = 1 - b
    const o = y * g.nw
    for (let x = 0; x < g.nw; x++) {
      const c0 = xw.i0[x + g.dx]
      const c1 = xw.i1[x + g.dx]
      const q = xw.w1[x + g.dx]
      const pp = 1 - q
      inner[o + x] = a * (pp * p[r0 + c0] + q * p[r0 + c1]) + b * (pp * p[r1 + c0] + q * p[r1 + c1])
    }
  }
  // W×H resize, thresholded on the fly.
  const { width, height } = g
  const xs = axisWeights(g.nw, width)
  const ys = axisWeights(g.nh, height)
  const stride = scanlines ? width + 1 : width
  const lead = scanlines ? 1 : 0
  const mask = new Uint8Array(stride * height)
  let area = 0
  let sum = 0
  let x0 = width
  let y0 = height
  let x1 = -1
  let y1 = -1
  const sw = g.nw
  for (let y = 0; y < height; y++) {
    const r0 = ys.i0[y] * sw
    const r1 = ys.i1[y] * sw
    const b = ys.w1[y]
    const a = 1 - b
    const o = y * stride + lead
    let rowHit = false
    for (let x = 0; x < width; x++) {
      const c0 = xs.i0[x]
      const c1 = xs.i1[x]
      const q = xs.w1[x]
      const pp = 1 - q
      // Rounded to float32 as the plane would store it, so the comparison is the same.
      const v = Math.fround(a * (pp * inner[r0 + c0] + q * inner[r0 + c1]) + b * (pp * inner[r1 + c0] + q * inner[r1 + c1]))
      if (v > thr) {
        mask[o + x] = 255
        area++
        sum += v
        if (x < x0) x0 = x
        if (x > x1) x1 = x
        rowHit = true
      }
    }
    if (rowHit) {
      if (y < y0) y0 = y
      y1 = y
    }
  }
  const bbox: MaskSummary['bbox'] = area === 0 ? null : [x0, y0, x1 - x0 + 1, y1 - y0 + 1]
  return { mask, width, height, area, bbox, score: area === 0 ? 0 : sum / area }
}
