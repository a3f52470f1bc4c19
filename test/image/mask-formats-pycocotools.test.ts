/**
 * The encoders read back by an independent reader: pycocotools (export/requirements.txt) decodes
 * the RLE and rasterises the polygons of purpose-made masks (test/fixtures/check_mask_formats.py).
 */
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { maskToPolygons } from '../../src/image/polygon.js'
import { encodeCocoRle } from '../../src/image/rle.js'
import { bbox, drawDiscs, drawRects, type Mask } from './rasterise.js'

const probe = spawnSync('python3', ['-c', 'import numpy, pycocotools'], { encoding: 'utf8' })
if (probe.status !== 0) {
  t.comment(`python3 with numpy and pycocotools is needed (pip install -r export/requirements.txt): ${probe.stderr ?? probe.error}`)
  t.pass('skipped: no pycocotools')
} else {
  /** Masks whose polygons must come back pixel for pixel (straight pixel edges), then round ones. */
  const exact: Array<[string, Mask, number, number]> = [
    ['one pixel', drawRects(5, 4, [[2, 1, 1, 1]]), 1, 0],
    ['a frame: one part, one hole', drawRects(30, 20, [[2, 2, 20, 15], [6, 5, 8, 6, 0]]), 1, 1],
    ['an island inside a hole', drawRects(30, 30, [[1, 1, 28, 28], [5, 5, 20, 20, 0], [10, 10, 6, 6]]), 2, 1],
    ['three parts, two holes in one', drawRects(60, 40, [[0, 0, 25, 25], [3, 3, 5, 5, 0], [12, 12, 6, 9, 0], [30, 5, 10, 30], [45, 30, 15, 10]]), 3, 2],
    ['parts meeting at a corner', drawRects(20, 20, [[2, 2, 6, 6], [8, 8, 6, 6], [14, 2, 4, 6]]), 3, 0],
    ['a staircase and an L', drawRects(40, 30, [[0, 0, 4, 4], [4, 4, 4, 4], [8, 8, 4, 4], [20, 2, 3, 20], [20, 19, 15, 3]]), 4, 0],
    ['touching the image border', drawRects(16, 9, [[0, 0, 16, 9], [4, 2, 3, 3, 0]]), 1, 1],
  ]
  const round: Array<[string, Mask, number, number]> = [
    ['a ring (disc with a hole) and a disc', drawDiscs(160, 120, [[60, 60, 45, 255], [60, 60, 20, 0], [130, 40, 18, 255]]), 2, 1],
    ['a small disc', drawDiscs(40, 40, [[20, 20, 6, 255]]), 1, 0],
  ]
  const all = [...exact, ...round]
  const cases = all.map(([name, m]) => ({
    name,
    width: m.width,
    height: m.height,
    mask: Buffer.from(m.mask).toString('base64'),
    rle: encodeCocoRle(m.mask, m.width, m.height, bbox(m)),
    polygon: maskToPolygons(m.mask, m.width, m.height, { box: bbox(m) }),
  }))
  const run = spawnSync('python3', [new URL('../fixtures/check_mask_formats.py', import.meta.url).pathname], { input: JSON.stringify(cases), encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
  t.equal(run.status, 0, run.stderr)
  const results = JSON.parse(run.stdout) as Array<{ name: string, rle: boolean, rle_same: boolean, polygon_iou: number, polygon_exact: boolean }>

  t.test('COCO RLE: pycocotools decodes the mask, and writes the same string', async (t) => {
    for (const r of results) t.ok(r.rle && r.rle_same, r.name)
  })

  t.test('polygons: the parts and holes we drew', async (t) => {
    for (const [k, [name, , parts, holes]] of all.entries()) {
      const p = cases[k].polygon
      t.strictSame([p.length, p.reduce((a, x) => a + x.holes.length, 0)], [parts, holes], `${name}: ${parts} parts, ${holes} holes`)
    }
  })

  t.test('polygons rasterised by pycocotools: exact on straight-edged masks, IoU ≥ 0.98 on round ones', async (t) => {
    for (const r of results.slice(0, exact.length)) t.ok(r.polygon_exact, `${r.name}: same pixels`)
    for (const r of results.slice(exact.length)) t.ok(r.polygon_iou >= 0.98, `${r.name}: IoU ${r.polygon_iou.toFixed(4)}`)
  })
}
