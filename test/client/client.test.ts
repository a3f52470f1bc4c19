/** The TypeScript client over real HTTP: the app with the fake model, and stub servers for retries and timeouts. */
import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { SegmentationClient, SegmentationError } from '../../src/client/index.js'
import { decodeCocoRle } from '../../src/image/rle.js'
import { build, readMask, rectImage } from '../helper.js'
import { iou, rasterise } from '../image/rasterise.js'

const listen = async (server: http.Server): Promise<string> => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

t.test('against the service (fake model)', async (t) => {
  const app = await build(t)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const client = new SegmentationClient({ baseUrl: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/` })
  const img = await rectImage(64, 48, { x: 8, y: 8, w: 16, h: 24 })

  const png = await client.segmentPng(img, 'the white square')
  const ref = await readMask(Buffer.from(png.png))
  t.equal(png.confidences.length, 4)
  t.equal(png.model, 'vlt-fake@0.0.1')

  const asJson = await client.segment(img, ['the white square'])
  t.equal(asJson.format, 'png')
  const first = asJson.results[0]
  t.ok('png' in first.mask && (await readMask(Buffer.from(first.mask.png, 'base64'))).data.equals(ref.data), 'JSON png = Accept: image/png')

  const rle = (await client.segment(img, 'the white square', { format: 'coco_rle' })).results[0]
  t.ok('coco_rle' in rle.mask && Buffer.from(decodeCocoRle(rle.mask.coco_rle).mask).equals(ref.data), 'coco_rle = png')
  const poly = (await client.segment(img, 'the white square', { format: 'polygon', threshold: 0.35 })).results[0]
  t.ok('polygon' in poly.mask && iou(rasterise(poly.mask.polygon, 64, 48), ref.data) >= 0.98, 'polygon ≈ png')
  t.equal(poly.bbox_format, 'xywh')

  const err = await client.segment(Buffer.from('not an image'), 'the white square').catch((e: unknown) => e)
  t.ok(err instanceof SegmentationError)
  t.match(err, { code: 'SEG_ERR_NOT_AN_IMAGE', status: 415 })
  t.equal((await client.ready()).ready, true)
})

t.test('503 + Retry-After is retried; other errors are not; timeouts', async (t) => {
  let calls = 0
  let plan: Array<[number, Record<string, string>, unknown]> = []
  const server = http.createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      const [status, headers, body] = plan[Math.min(calls, plan.length - 1)]
      calls++
      if (status === 0) return // never answer
      res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body))
    })
  })
  const url = await listen(server)
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const busy: [number, Record<string, string>, unknown] = [503, { 'retry-after': '0' }, { error: { code: 'SEG_ERR_QUEUE_FULL', message: 'busy' } }]
  const answer = { model: { name: 'm', version: '1', provider: 'cpu' }, image: { width: 1, height: 1 }, format: 'png', results: [], timings_ms: { decode: 0, preprocess: 0, inference: 0, postprocess: 0, total: 0 } }

  plan = [busy, busy, [200, {}, answer]]
  calls = 0
  const retries: unknown[] = []
  const client = new SegmentationClient({ baseUrl: url, retries: 3, onRetry: (i) => retries.push(i) })
  t.strictSame((await client.segment(new Uint8Array([1]), 'x')).model, answer.model)
  t.equal(calls, 3)
  t.strictSame(retries, [{ attempt: 1, status: 503, code: 'SEG_ERR_QUEUE_FULL', waitMs: 0 }, { attempt: 2, status: 503, code: 'SEG_ERR_QUEUE_FULL', waitMs: 0 }])

  plan = [busy]
  calls = 0
  t.match(await new SegmentationClient({ baseUrl: url, retries: 2 }).segment(new Uint8Array([1]), 'x').catch((e: unknown) => e), { code: 'SEG_ERR_QUEUE_FULL', status: 503, retryAfter: 0 })
  t.equal(calls, 3, 'one try and two retries')

  plan = [[400, {}, { error: { code: 'SEG_ERR_INVALID_FIELD', message: 'no' } }]]
  calls = 0
  t.match(await client.segment(new Uint8Array([1]), 'x').catch((e: unknown) => e), { code: 'SEG_ERR_INVALID_FIELD', status: 400 })
  t.equal(calls, 1, '400 is not retried')

  plan = [[0, {}, null]]
  t.match(await new SegmentationClient({ baseUrl: url, timeoutMs: 200, retries: 0 }).segment(new Uint8Array([1]), 'x').catch((e: unknown) => e), { code: 'CLIENT_TIMEOUT', status: 0 })

  const closed = http.createServer()
  const gone = await listen(closed)
  await new Promise((resolve) => closed.close(resolve))
  t.match(await new SegmentationClient({ baseUrl: gone }).segment(new Uint8Array([1]), 'x').catch((e: unknown) => e), { code: 'CLIENT_NETWORK', status: 0 })
})
