/**
 * Test helpers for the mask encoders: masks drawn from rectangles and discs, and an even-odd
 * rasteriser of polygon rings on pixel centres (the COCO convention src/image/polygon.ts states).
 */
import type { PolygonPart } from '../../src/image/polygon.js'

export interface Mask { mask: Uint8Array, width: number, height: number }

/** A mask with `rects` ([x, y, w, h]) set to `value` in order: 255 draws, 0 cuts holes. */
export function drawRects (width: number, height: number, rects: Array<[number, number, number, number, number?]>): Mask {
  const mask = new Uint8Array(width * height)
  for (const [x, y, w, h, value = 255] of rects) {
    for (let yy = y; yy < y + h; yy++) mask.fill(value, yy * width + x, yy * width + x + w)
  }
  return { mask, width, height }
}

/** Discs ([cx, cy, r, value]) drawn in order on pixel centres. */
export function drawDiscs (width: number, height: number, discs: Array<[number, number, number, number]>): Mask {
  const mask = new Uint8Array(width * height)
  for (const [cx, cy, r, value] of discs) {
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= r * r) mask[y * width + x] = value
    }
  }
  return { mask, width, height }
}

/** Every ring of every part, filled even-odd on pixel centres. */
export function rasterise (parts: PolygonPart[], width: number, height: number): Uint8Array {
  const out = new Uint8Array(width * height)
  const rings = parts.flatMap((p) => [p.outer, ...p.holes])
  for (let y = 0; y < height; y++) {
    const cy = y + 0.5
    const xs: number[] = []
    for (const r of rings) {
      for (let i = 0, j = r.length - 2; i < r.length; j = i, i += 2) {
        const [x0, y0, x1, y1] = [r[j], r[j + 1], r[i], r[i + 1]]
        if ((y0 > cy) !== (y1 > cy)) xs.push(x0 + (cy - y0) * (x1 - x0) / (y1 - y0))
      }
    }
    xs.sort((a, b) => a - b)
    for (let k = 0; k + 1 < xs.length; k += 2) {
      for (let x = Math.max(0, Math.ceil(xs[k] - 0.5)); x < width && x + 0.5 < xs[k + 1]; x++) out[y * width + x] = 255
    }
  }
  return out
}

export function iou (a: Uint8Array, b: Uint8Array): number {
  let i = 0
  let u = 0
  for (let k = 0; k < a.length; k++) {
    const x = a[k] !== 0
    const y = b[k] !== 0
    if (x && y) i++
    if (x || y) u++
  }
  return u === 0 ? 1 : i / u
}

/** The segmenter's bbox of a mask. */
export function bbox ({ mask, width, height }: Mask): [number, number, number, number] | null {
  let x0 = width; let y0 = height; let x1 = -1; let y1 = -1
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (mask[y * width + x] === 0) continue
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y)
    }
  }
  return x1 < 0 ? null : [x0, y0, x1 - x0 + 1, y1 - y0 + 1]
}
