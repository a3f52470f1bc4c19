/**
 * The encodings a /segment JSON result can carry its mask in (form field `format`):
 *   png       base64 8-bit greyscale PNG, 255 on the object (the default; `Accept: image/png` sends it raw)
 *   coco_rle  compressed COCO RLE `{ size: [h, w], counts }` (src/image/rle.ts)
 *   polygon   outer rings and holes in pixel coordinates (src/image/polygon.ts)
 */
import { POLYGON_TOLERANCE, maskToPolygons, type PolygonPart } from './polygon.js'
import { type Box, type CocoRle, encodeCocoRle } from './rle.js'

export const MASK_FORMATS = ['png', 'coco_rle', 'polygon'] as const
export type MaskFormat = typeof MASK_FORMATS[number]

export const isMaskFormat = (s: string): s is MaskFormat => (MASK_FORMATS as readonly string[]).includes(s)

export type EncodedMask = { png: string } | { coco_rle: CocoRle } | { polygon: PolygonPart[] }

/** One result's mask in `format`, from the full-size mask (read in place, never copied). */
export function encodeMask (format: MaskFormat, r: { png: Buffer, mask: Uint8Array, bbox: Box }, width: number, height: number): EncodedMask {
  switch (format) {
    case 'png': return { png: r.png.toString('base64') }
    case 'coco_rle': return { coco_rle: encodeCocoRle(r.mask, width, height, r.bbox) }
    case 'polygon': return { polygon: maskToPolygons(r.mask, width, height, { box: r.bbox, tolerance: POLYGON_TOLERANCE }) }
  }
}
