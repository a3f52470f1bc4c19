/**
 * COCO run-length encoding of a binary mask, as pycocotools writes it (`maskUtils.encode`):
 * `{ size: [height, width], counts }`, runs taken down the columns (column-major, the order
 * pycocotools uses for its Fortran-ordered arrays), alternating off / on and starting with the
 * pixels that are off (0 when the first pixel is on). `counts` is the compressed string form
 * (pycocotools' rleToString): each run, minus the run two before it from the fourth run on, in
 * 5-bit groups with a continuation bit, offset by 48 into printable ASCII.
 *
 * Pure functions over a row-major mask (width × height bytes, any non-zero byte is on).
 */

export interface CocoRle {
  /** [height, width], pycocotools' order. */
  size: [number, number]
  counts: string
}

/** [x, y, width, height] of every pixel that is on, or null when none is. */
export type Box = [number, number, number, number] | null

/**
 * The uncompressed runs, column-major. `box`, when given, must hold every pixel that is on (the
 * segmenter's bbox): only the pixels inside it are read, once, and the mask is never copied.
 */
export function rleCounts (mask: Uint8Array, width: number, height: number, box?: Box): number[] {
  if (mask.length !== width * height) throw new RangeError(`mask has ${mask.length} bytes, expected ${width} × ${height}`)
  const [bx, by, bw, bh] = box === undefined ? [0, 0, width, height] : box ?? [0, 0, 0, 0]
  const counts: number[] = []
  let on = false
  let run = 0
  /** Appends n pixels of one value, merging with the run in progress. */
  const emit = (value: boolean, n: number): void => {
    if (n === 0) return
    if (value !== on) { counts.push(run); on = value; run = 0 }
    run += n
  }
  // Everything left of the box is off, and so is every column's part above and below it.
  emit(false, bx * height)
  // Columns are read BLOCK at a time, row by row, so the mask is read in contiguous slices
  // (walking one column down the rows would touch a new cache line per pixel); each column
  // keeps the rows where it changes value.
  const BLOCK = 64
  const state = new Uint8Array(BLOCK)
  const changes: number[][] = Array.from({ length: BLOCK }, () => [])
  for (let x0 = bx; x0 < bx + bw; x0 += BLOCK) {
    const n = Math.min(BLOCK, bx + bw - x0)
    state.fill(0)
    for (let j = 0; j < n; j++) changes[j].length = 0
    for (let y = by; y < by + bh; y++) {
      const row = y * width + x0
      for (let j = 0; j < n; j++) {
        const v = mask[row + j] !== 0 ? 1 : 0
        if (v !== state[j]) { state[j] = v; changes[j].push(y) }
      }
    }
    for (let j = 0; j < n; j++) {
      const c = changes[j]
      if (state[j] === 1) c.push(by + bh)
      let y = 0
      for (let k = 0; k < c.length; k += 2) {
        emit(false, c[k] - y)
        emit(true, c[k + 1] - c[k])
        y = c[k + 1]
      }
      emit(false, height - y)
    }
  }
  emit(false, (width - bx - bw) * height)
  counts.push(run)
  return counts
}

/** pycocotools' rleToString. */
export function compressCounts (counts: readonly number[]): string {
  let s = ''
  for (let i = 0; i < counts.length; i++) {
    // pycocotools differences from the fourth run (i > 2), not the third.
    let x = i > 2 ? counts[i] - counts[i - 2] : counts[i]
    let more = true
    while (more) {
      let c = x & 0x1f
      x = Math.floor(x / 32)
      more = (c & 0x10) !== 0 ? x !== -1 : x !== 0
      if (more) c |= 0x20
      s += String.fromCharCode(c + 48)
    }
  }
  return s
}

/** pycocotools' rleFrString: the runs of a compressed `counts` string. */
export function decompressCounts (s: string): number[] {
  const counts: number[] = []
  let p = 0
  while (p < s.length) {
    let x = 0
    let k = 0
    let more = true
    let c = 0
    while (more) {
      if (p >= s.length) throw new RangeError('truncated RLE counts string')
      c = s.charCodeAt(p++) - 48
      x += (c & 0x1f) * 2 ** (5 * k)
      more = (c & 0x20) !== 0
      k++
    }
    if ((c & 0x10) !== 0) x -= 2 ** (5 * k)
    if (counts.length > 2) x += counts[counts.length - 2]
    counts.push(x)
  }
  return counts
}

/** The compressed COCO RLE of a mask. */
export function encodeCocoRle (mask: Uint8Array, width: number, height: number, box?: Box): CocoRle {
  return { size: [height, width], counts: compressCounts(rleCounts(mask, width, height, box)) }
}

/** Back to a row-major 0/255 mask (tests, clients). */
export function decodeCocoRle (rle: CocoRle): { mask: Uint8Array, width: number, height: number } {
  const [height, width] = rle.size
  const counts = decompressCounts(rle.counts)
  const mask = new Uint8Array(width * height)
  let p = 0
  for (let r = 0; r < counts.length; r++) {
    const end = p + counts[r]
    if (end > width * height) throw new RangeError('RLE runs exceed the mask size')
    if (r % 2 === 1) for (let j = p; j < end; j++) mask[(j % height) * width + Math.floor(j / height)] = 255
    p = end
  }
  if (p !== width * height) throw new RangeError(`RLE runs cover ${p} pixels, expected ${width * height}`)
  return { mask, width, height }
}
