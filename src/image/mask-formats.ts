/**
 * The encodings a /segment JSON result can carry its mask in (form field `format`):
 *   png       base64 8-bit greyscale PNG, 255 on the object (the default; `Accept: image/png` sends it raw)
 *   coco_rle  compressed COCO RLE `{ size: [h, w], counts }` (src/image/rle.ts)
 *   polygon   outer rings and holes in pixel coordinates (src/image/polygon.ts)
 *
 * The engine's workers encode each mask in the request's format as soon as they have made it
 * (encodeMaskIn), so the full-size plane never leaves the worker; the route only turns the PNG's
 * bytes into base64 (toJsonMask).
 */
import { encodeMaskPng } from './png.js'
import { POLYGON_TOLERANCE, maskToPolygons, type PolygonPart } from './polygon.js'
import { type Box, type CocoRle, encodeCocoRle } from './rle.js'

export const MASK_FORMATS = ['png', 'coco_rle', 'polygon'] as const
export type MaskFormat = typeof MASK_FORMATS[number]

export const isMaskFormat = (s: string): s is MaskFormat => (MASK_FORMATS as readonly string[]).includes(s)

/**
 * What a worker can return: a client's format, or `raw` — the plane itself, 0 / 255 row-major
 * (the v2 protocol's UINT8 mask tensor; src/routes/v2.ts).
 */
export type MaskEncoding = MaskFormat | 'raw'

/** A mask as a worker encodes it: the PNG's bytes, the JSON form of the other encodings, or the raw plane. */
export type Mask = { png: Uint8Array } | { coco_rle: CocoRle } | { polygon: PolygonPart[] } | { raw: Uint8Array }

/** A mask as a JSON result carries it. */
export type EncodedMask = { png: string } | { coco_rle: CocoRle } | { polygon: PolygonPart[] }

/** Whether `format` is encoded from the mask in PNG's scanline layout (image/png.ts) rather than a plain row-major plane. */
export const wantsScanlines = (format: MaskEncoding): boolean => format === 'png'

/**
 * One mask in `format`, from the full-size plane (read in place, never copied): in scanline
 * layout for png (see wantsScanlines), else 0 / 255 row-major.
 */
export function encodeMaskIn (format: MaskEncoding, plane: Uint8Array, width: number, height: number, bbox: Box): Mask {
  switch (format) {
    case 'png': return { png: encodeMaskPng(plane, width, height) }
    case 'coco_rle': return { coco_rle: encodeCocoRle(plane, width, height, bbox) }
    case 'polygon': return { polygon: maskToPolygons(plane, width, height, { box: bbox, tolerance: POLYGON_TOLERANCE }) }
    case 'raw': return { raw: plane }
  }
}

/** The mask as a JSON result carries it (a PNG as base64). */
export function toJsonMask (mask: Mask): EncodedMask {
  if ('raw' in mask) throw new Error('a raw mask has no JSON encoding')
  return 'png' in mask ? { png: Buffer.from(mask.png.buffer, mask.png.byteOffset, mask.png.byteLength).toString('base64') } : mask
}
