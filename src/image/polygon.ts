/**
 * Polygons of a binary mask: for each part (4-connected pixels that are on) its outer ring and
 * the rings of its holes, in image pixel coordinates.
 *
 * Conventions (the COCO polygon convention, so pycocotools' frPyObjects rasterises a ring back):
 * - Vertices lie on pixel corners: pixel (x, y) is the square [x, x+1) × [y, y+1), so the ring
 *   of a mask that is only pixel (0, 0) is (0,0) (1,0) (1,1) (0,1). A pixel is inside a part when
 *   its centre is inside the outer ring and outside every hole ring.
 * - Rings are flat [x0, y0, x1, y1, …], implicitly closed (the first point is not repeated).
 *   Outer rings run clockwise on screen (y down), holes counter-clockwise; rings never cross, and
 *   touch at most at a vertex (two parts meeting corner to corner are two parts).
 * - Each ring is simplified with Douglas–Peucker at POLYGON_TOLERANCE pixels: a vertex is dropped
 *   only when the pixel boundary it stands for stays within the tolerance of the simplified ring.
 *   Straight pixel edges are exact whatever the tolerance (only their end corners are kept).
 *
 * Pure functions over a row-major mask (width × height bytes, any non-zero byte is on).
 */
import type { Box } from './rle.js'

/** Douglas–Peucker tolerance in pixels. Below 0.5 px diagonal staircases survive (many vertices); at 0.5 they become straight lines. */
export const POLYGON_TOLERANCE = 0.5

export interface PolygonPart {
  /** The part's boundary, clockwise on screen. */
  outer: number[]
  /** The boundaries of its holes, counter-clockwise on screen. */
  holes: number[][]
}

// Directions of boundary edges, in clockwise order on screen so that d + 1 is a right turn.
const DX = [1, 0, -1, 0] // east, south, west, north
const DY = [0, 1, 0, -1]
// From an edge's start vertex to the centre of the pixel on its right (the pixel it bounds).
const PX = [0.5, -0.5, -0.5, 0.5]
const PY = [0.5, 0.5, -0.5, -0.5]

interface Ring {
  /** Corner points, flat. */
  pts: number[]
  /** Twice the signed area (shoelace, y down): > 0 for outer rings. */
  area2: number
  /** The bounding box of the ring: minX, minY, maxX, maxY. */
  box: [number, number, number, number]
  /** Centre of a pixel that is on and lies just inside this ring's edge (holes: the parent's pixel). */
  probe: [number, number]
}

/**
 * The parts of a mask. `box`, when given, must hold every pixel that is on (the segmenter's
 * bbox): only it is read. Memory: a few numbers per boundary edge, nothing of the mask's size.
 */
export function maskToPolygons (mask: Uint8Array, width: number, height: number, opts: { box?: Box, tolerance?: number } = {}): PolygonPart[] {
  if (mask.length !== width * height) throw new RangeError(`mask has ${mask.length} bytes, expected ${width} × ${height}`)
  const box: Box = opts.box === undefined ? [0, 0, width, height] : opts.box
  if (box === null) return []
  const tolerance = opts.tolerance ?? POLYGON_TOLERANCE
  const rings = traceRings(mask, width, height, box)
  const outers = rings.filter((r) => r.area2 > 0)
  const holes = rings.filter((r) => r.area2 < 0)
  const parts: PolygonPart[] = outers.map((r) => ({ outer: simplifyRing(r.pts, tolerance), holes: [] }))
  if (holes.length > 0) {
    // The parent of a hole is the smallest outer ring around a pixel that touches the hole.
    const bySize = outers.map((r, i) => ({ r, i })).sort((a, b) => a.r.area2 - b.r.area2)
    for (const h of holes) {
      const [px, py] = h.probe
      const parent = bySize.find(({ r }) => px > r.box[0] && px < r.box[2] && py > r.box[1] && py < r.box[3] && inside(r.pts, px, py))
      if (parent === undefined) throw new Error('a hole ring without an outer ring around it')
      parts[parent.i].holes.push(simplifyRing(h.pts, tolerance))
    }
  }
  return parts
}

/**
 * Every boundary ring, following pixel edges with the pixels that are on to the right. Where
 * two pixels that are on meet only at a corner, the walk turns right, keeping them apart.
 */
function traceRings (mask: Uint8Array, width: number, height: number, [bx, by, bw, bh]: [number, number, number, number]): Ring[] {
  const W1 = width + 1
  if ((height + 1) * W1 > 2 ** 31 - 1) throw new RangeError(`a ${width} × ${height} mask is too large for polygon tracing`)
  // Boundary edges: start vertex (y · (width + 1) + x) and direction, pixels that are on to the
  // right. Found by comparing each pixel of the box (and the row and column after it) with the
  // pixel above and the pixel to the left; outside the box every pixel is off.
  const startV: number[] = []
  const dir: number[] = []
  const x1 = bx + bw
  const y1 = by + bh
  for (let y = by; y <= y1; y++) {
    const row = y * width
    for (let x = bx; x <= x1; x++) {
      const cur = y < y1 && x < x1 && mask[row + x] !== 0
      if (x < x1) {
        const up = y > by && mask[row - width + x] !== 0
        if (cur && !up) {
          startV.push(y * W1 + x); dir.push(0) // top of (x, y), eastwards
        } else if (!cur && up) {
          startV.push(y * W1 + x + 1); dir.push(2) // bottom of (x, y − 1), westwards
        }
      }
      if (y < y1) {
        const left = x > bx && mask[row + x - 1] !== 0
        if (cur && !left) {
          startV.push((y + 1) * W1 + x); dir.push(3) // left of (x, y), northwards
        } else if (!cur && left) {
          startV.push(y * W1 + x); dir.push(1) // right of (x − 1, y), southwards
        }
      }
    }
  }
  // Outgoing edges by vertex: an open-addressing table (typed arrays, no Map). A vertex has one
  // outgoing edge, or two where diagonal pixels meet (the second in `second`).
  const E = startV.length
  let bits = 4
  while ((1 << bits) < 2 * E) bits++
  const size = 1 << bits
  const keys = new Int32Array(size).fill(-1)
  const first = new Int32Array(size)
  const second = new Int32Array(size).fill(-1)
  const slot = (v: number): number => {
    let h = Math.imul(v, 0x9E3779B1) >>> (32 - bits)
    while (keys[h] !== -1 && keys[h] !== v) h = (h + 1) & (size - 1)
    return h
  }
  for (let e = 0; e < E; e++) {
    const h = slot(startV[e])
    if (keys[h] === -1) { keys[h] = startV[e]; first[h] = e } else second[h] = e
  }

  const used = new Uint8Array(startV.length)
  const rings: Ring[] = []
  for (let e0 = 0; e0 < startV.length; e0++) {
    if (used[e0] === 1) continue
    const pts: number[] = []
    let e = e0
    let minX = Infinity
    let minY = Infinity
    let maxX = -Infinity
    let maxY = -Infinity
    do {
      used[e] = 1
      const d = dir[e]
      const v = startV[e]
      const vx = v % W1
      const vy = (v - vx) / W1
      const next = v + DX[d] + DY[d] * W1
      const h = slot(next)
      const a = first[h]
      const b = second[h]
      // At a corner where diagonal pixels meet, take the right turn (stay with this pixel).
      const n = b === -1 ? a : dir[a] === (d + 1) % 4 ? a : b
      // Keep only corners: the vertex where this edge ends is one when the direction changes there.
      if (dir[n] !== d) {
        const nx = vx + DX[d]
        const ny = vy + DY[d]
        pts.push(nx, ny)
        if (nx < minX) minX = nx
        if (nx > maxX) maxX = nx
        if (ny < minY) minY = ny
        if (ny > maxY) maxY = ny
      }
      e = n
    } while (e !== e0)
    // The pixel to the right of the first edge is on (the edge's own pixel).
    const d = dir[e0]
    const v = startV[e0]
    const vx = v % W1
    const vy = (v - vx) / W1
    const probe: [number, number] = [vx + PX[d], vy + PY[d]]
    rings.push({ pts: startTopLeft(pts), area2: shoelace(pts), box: [minX, minY, maxX, maxY], probe })
  }
  return rings
}

/** The same ring, starting at its topmost vertex (leftmost among those). */
function startTopLeft (pts: number[]): number[] {
  let k = 0
  for (let i = 2; i < pts.length; i += 2) {
    if (pts[i + 1] < pts[k + 1] || (pts[i + 1] === pts[k + 1] && pts[i] < pts[k])) k = i
  }
  return k === 0 ? pts : [...pts.slice(k), ...pts.slice(0, k)]
}

/** Twice the signed area of a flat ring (y down: clockwise on screen is positive). */
function shoelace (pts: number[]): number {
  let s = 0
  const n = pts.length
  for (let i = 0; i < n; i += 2) {
    const j = (i + 2) % n
    s += pts[i] * pts[j + 1] - pts[j] * pts[i + 1]
  }
  return s
}

/** Even-odd point-in-ring test. */
function inside (pts: number[], px: number, py: number): boolean {
  let c = false
  const n = pts.length
  for (let i = 0, j = n - 2; i < n; j = i, i += 2) {
    const yi = pts[i + 1]
    const yj = pts[j + 1]
    if ((yi > py) !== (yj > py) && px < (pts[j] - pts[i]) * (py - yi) / (yj - yi) + pts[i]) c = !c
  }
  return c
}

/**
 * Douglas–Peucker on a closed ring: split at the first vertex and the vertex farthest from it,
 * simplify both chains. A ring that would drop below three vertices is kept as it was.
 */
export function simplifyRing (pts: number[], tolerance: number): number[] {
  const n = pts.length / 2
  if (n <= 4 || tolerance <= 0) return pts.slice()
  let far = 0
  let best = -1
  for (let i = 1; i < n; i++) {
    const d = (pts[2 * i] - pts[0]) ** 2 + (pts[2 * i + 1] - pts[1]) ** 2
    if (d > best) { best = d; far = i }
  }
  const keep = new Uint8Array(n)
  keep[0] = 1
  keep[far] = 1
  const t2 = tolerance * tolerance
  const stack: Array<[number, number]> = [[0, far], [far, n]]
  while (stack.length > 0) {
    const [a, b] = stack.pop()!
    const ax = pts[2 * a]
    const ay = pts[2 * a + 1]
    const bx = pts[2 * (b % n)]
    const by = pts[2 * (b % n) + 1]
    const dx = bx - ax
    const dy = by - ay
    const len2 = dx * dx + dy * dy
    let worst = -1
    let at = -1
    for (let i = a + 1; i < b; i++) {
      const px = pts[2 * i] - ax
      const py = pts[2 * i + 1] - ay
      // Squared distance to the segment a–b.
      const t = len2 === 0 ? 0 : Math.max(0, Math.min(1, (px * dx + py * dy) / len2))
      const d = (px - t * dx) ** 2 + (py - t * dy) ** 2
      if (d > worst) { worst = d; at = i }
    }
    if (at >= 0 && worst > t2) {
      keep[at] = 1
      stack.push([a, at], [at, b])
    }
  }
  const outPts: number[] = []
  for (let i = 0; i < n; i++) if (keep[i] === 1) outPts.push(pts[2 * i], pts[2 * i + 1])
  return outPts.length >= 6 ? outPts : pts.slice()
}
