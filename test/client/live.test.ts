/**
 * Both clients against the live service with the default model (skipped, with a note, without
 * the model folder): the TypeScript client here, the Python client's suite (clients/python/tests,
 * its live tests included) in a child process, one tap assertion per pytest test.
 */
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { buildApp } from '../../src/app.js'
import { SegmentationClient } from '../../src/client/index.js'
import { decodeCocoRle } from '../../src/image/rle.js'
import { DEFAULT_MODEL_DIR, readMask, testConfig } from '../helper.js'
import { iou, rasterise } from '../image/rasterise.js'

// One service, two clients, a Python process: slow on a busy two-core machine.
t.setTimeout(300_000)

const root = path.resolve(new URL('../..', import.meta.url).pathname)
const MODEL_DIR = DEFAULT_MODEL_DIR
const VAL_DIR = path.resolve(root, '../shared/refshapes/val')

if (!existsSync(path.join(MODEL_DIR, 'model.json')) || !existsSync(path.join(VAL_DIR, 'annotations.jsonl'))) {
  t.comment(`needs ${MODEL_DIR} and ${VAL_DIR}`)
  t.pass('skipped: no model folder or validation set')
} else {
  const app = buildApp(testConfig({ modelPath: MODEL_DIR, workers: 1, threadsPerWorker: 2 }))
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  await app.segmenter.started
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  const cases = readFileSync(path.join(VAL_DIR, 'annotations.jsonl'), 'utf8').trim().split('\n').slice(0, 4).map((l) => JSON.parse(l) as { image: string, expression: string })

  t.test('TypeScript client: every format carries the PNG mask', async (t) => {
    const client = new SegmentationClient({ baseUrl: url })
    for (const c of cases) {
      const image = readFileSync(path.join(VAL_DIR, c.image))
      const png = await readMask(Buffer.from((await client.segmentPng(image, c.expression)).png))
      const rle = (await client.segment(image, c.expression, { format: 'coco_rle' })).results[0]
      t.ok('coco_rle' in rle.mask && Buffer.from(decodeCocoRle(rle.mask.coco_rle).mask).equals(png.data), `${c.expression}: coco_rle`)
      const poly = (await client.segment(image, c.expression, { format: 'polygon' })).results[0]
      const score = 'polygon' in poly.mask ? iou(rasterise(poly.mask.polygon, png.width, png.height), png.data) : 0
      t.ok(score >= 0.98, `${c.expression}: polygon IoU ${score.toFixed(4)}`)
    }
  })

  t.test('Python client (clients/python/tests, live tests included)', async (t) => {
    const probe = spawnSync('python3', ['-c', 'import numpy, PIL, pycocotools'], { encoding: 'utf8' })
    if (probe.status !== 0) {
      t.comment(`python3 with numpy, Pillow and pycocotools is needed (pip install -r export/requirements.txt): ${probe.stderr ?? probe.error}`)
      t.pass('skipped: no python3 with pycocotools')
      return
    }
    // Async, so the service in this process keeps answering.
    const child = spawn('python3', ['-m', 'pytest', '-q', '-rA', '-p', 'no:cacheprovider', 'clients/python/tests'], {
      cwd: root,
      env: { ...process.env, VLT_URL: url, VLT_VAL_DIR: VAL_DIR, VLT_REQUIRE_LIVE: '1', VLT_LIVE_CASES: '4' },
    })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.stderr.on('data', (d: Buffer) => { out += d.toString() })
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
    const lines = out.split('\n').filter((l) => /^(PASSED|FAILED|ERROR|SKIPPED) /.test(l))
    for (const l of lines) t.ok(l.startsWith('PASSED '), l)
    t.ok(lines.some((l) => l.includes('test_live.py')), 'the live tests ran')
    t.equal(code, 0, `pytest exit status\n${code === 0 ? '' : out.slice(-4000)}`)
  })
}
