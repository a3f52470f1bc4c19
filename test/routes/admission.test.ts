/**
 * Admission by memory through the real routes and engine around the fake model: the budget is
 * 100 MiB with 75 MiB reserved, so one small request (its upload, the decoder's overhead, one
 * mask plane: about 17 MiB) fits and a second one waits. Workers are never the bottleneck here
 * (two of them), so what is seen is the budget's doing.
 */
import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { build, form, rectImage, until } from '../helper.js'
import { checkResponse } from '../openapi-validator.js'

t.setTimeout(300_000)

const img = await rectImage(32, 32, { x: 4, y: 4, w: 8, h: 8 })
const budgetConfig = { workers: 2, maxBatch: 1, memoryBudgetMb: 100, memoryReserveMb: 75 }
type App = Awaited<ReturnType<typeof build>>
/** With a declared Content-Length, as curl and browsers send (an undeclared body is charged the largest size). */
async function segment (app: App, expression: string, image = img) {
  const req = new Request('http://x/', { method: 'POST', body: form({ image, expression }) })
  const payload = Buffer.from(await req.arrayBuffer())
  return await app.inject({ method: 'POST', url: '/segment', payload, headers: { 'content-type': req.headers.get('content-type')! } })
}
const stats = (app: App) => app.budget.stats()

t.test('the estimate is taken from the header before decoding; a second request waits until the first releases it', async (t) => {
  const batches: number[] = []
  const app = await build(t, { config: budgetConfig, workerData: { slowMs: 1500 }, hooks: { onBatch: (n) => batches.push(n) } })
  t.equal(stats(app).capacityBytes, 25 * 1024 * 1024)
  const first = segment(app, 'slow')
  await until(() => batches.length === 1)
  const held = stats(app).inUseBytes
  t.ok(held > 16 * 1024 * 1024 && held <= 25 * 1024 * 1024, `the first request holds ${held} bytes`)
  const second = segment(app, 'the white square')
  await until(() => stats(app).waiting === 1)
  t.equal(batches.length, 1, 'the second one has not run: it waits for memory, not for a worker')
  t.equal(app.segmenter.stats().busyWorkers, 1, 'while a worker is idle')
  const [a, b] = await Promise.all([first, second])
  t.strictSame([a.statusCode, b.statusCode], [200, 200])
  t.equal(batches.length, 2)
  await until(() => stats(app).inUseBytes === 0)
  t.equal(stats(app).leases, 0, 'every lease released on completion')
  const metrics = (await app.inject('/metrics')).payload
  t.match(metrics, /vlt_memory_budget_bytes\{kind="capacity"\} 26214400\b/)
  t.match(metrics, /vlt_memory_budget_bytes\{kind="peak_in_use"\} [1-9]/)
  t.match(metrics, /vlt_memory_budget_waiting 0\b/)
})

t.test('an upload of undeclared size is charged the largest body until it is read, then what it holds', async (t) => {
  const app = await build(t, { config: budgetConfig })
  t.equal((await segment(app, 'the white square')).statusCode, 200)
  const declared = stats(app).peakInUseBytes
  const chunked = await app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: 'the white square' }) })
  t.equal(chunked.statusCode, 200)
  t.ok(declared < app.config.maxImageBytes, `declared: at most ${declared} bytes at once`)
  t.ok(stats(app).peakInUseBytes >= app.config.maxImageBytes, 'undeclared: the largest body while it arrived')
  await until(() => stats(app).inUseBytes === 0)
})

t.test('EXPECTED FAILURE - no room to wait: 503 SEG_ERR_MEMORY_BUSY with Retry-After, counted', async (t) => {
  const app = await build(t, { config: { ...budgetConfig, queueSize: 0 }, workerData: { slowMs: 1500 } })
  const first = segment(app, 'slow')
  await until(() => stats(app).leases >= 1 && app.segmenter.stats().busyWorkers === 1)
  const refused = await segment(app, 'the white square')
  t.equal(refused.statusCode, 503)
  t.equal(refused.json().error.code, 'SEG_ERR_MEMORY_BUSY')
  t.ok(Number(refused.headers['retry-after']) >= 1, `Retry-After ${refused.headers['retry-after']}`)
  t.strictSame(checkResponse('POST', '/segment', refused), [])
  t.equal((await first).statusCode, 200)
  t.match((await app.inject('/metrics')).payload, /vlt_memory_budget_refusals_total\{reason="queue_full"\} 1\b/)
  await until(() => stats(app).inUseBytes === 0)
})

t.test('EXPECTED FAILURE - upload refused before its body is read when the budget cannot hold it', async (t) => {
  // 1 MiB for requests: even the upload's declared size cannot be held next to a running request.
  const app = await build(t, { config: { workers: 1, memoryBudgetMb: 100, memoryReserveMb: 99.99 } })
  const r = await segment(app, 'the', Buffer.alloc(20_000, 1))
  t.equal(r.statusCode, 413, 'an upload larger than what one request may ever hold')
  t.equal(r.json().error.code, 'SEG_ERR_IMAGE_TOO_LARGE')
  t.equal(r.headers.connection, 'close', 'the unread body is not waited for')
  t.equal(stats(app).inUseBytes, 0)
})

t.test('EXPECTED FAILURE - deadline while waiting: 504; a 504 in a worker keeps its lease until the worker is done', async (t) => {
  const batches: number[] = []
  const app = await build(t, { config: { ...budgetConfig, requestTimeoutMs: 1000 }, workerData: { slowMs: 4000 }, hooks: { onBatch: (n) => batches.push(n) } })
  const first = segment(app, 'slow')
  await until(() => stats(app).leases >= 1)
  const second = segment(app, 'the white square')
  const [a, b] = await Promise.all([first, second])
  t.equal(a.statusCode, 504)
  t.equal(b.statusCode, 504)
  t.equal(b.json().error.code, 'SEG_ERR_DEADLINE')
  t.ok(stats(app).refusals.deadline >= 1, 'the second gave up waiting for memory')
  // The first request's job was running (4 s) when its deadline (1 s) passed: its memory is in
  // use until the worker answers, so the budget still counts it.
  if (batches.length === 1) t.ok(stats(app).inUseBytes > 0, 'still held while the worker runs')
  await until(() => stats(app).inUseBytes === 0)
  t.equal(stats(app).leases, 0, 'released once the worker answered')
})

t.test('EXPECTED FAILURE - a client that leaves while waiting for memory leaves the queue', async (t) => {
  const app = await build(t, { config: budgetConfig, workerData: { slowMs: 1500 } })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  const first = segment(app, 'slow')
  await until(() => app.segmenter.stats().busyWorkers === 1)
  const req = new Request('http://x/', { method: 'POST', body: form({ image: img, expression: 'the white square' }) })
  const body = Buffer.from(await req.arrayBuffer())
  const client = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/segment', headers: { 'content-type': req.headers.get('content-type')!, 'content-length': body.length } })
  client.on('error', () => {})
  client.end(body)
  await until(() => stats(app).waiting === 1)
  client.destroy()
  await until(() => stats(app).waiting === 0)
  t.equal(stats(app).refusals.client_closed, 1)
  t.equal((await first).statusCode, 200)
  await until(() => stats(app).inUseBytes === 0)
})

t.test('EXPECTED FAILURE - errors release the memory: undecodable image, not an image, a form without an expression', async (t) => {
  const app = await build(t, { config: budgetConfig })
  const truncated = (await rectImage(64, 64, { x: 4, y: 4, w: 8, h: 8 }, 'jpeg')).subarray(0, 400)
  const broken = await segment(app, 'the white square', truncated)
  t.equal(broken.statusCode, 400)
  const text = await segment(app, 'the white square', Buffer.from('no image here'))
  t.equal(text.statusCode, 415)
  const req = new Request('http://x/', { method: 'POST', body: form({ image: img }) })
  const noExpression = await app.inject({ method: 'POST', url: '/segment', payload: Buffer.from(await req.arrayBuffer()), headers: { 'content-type': req.headers.get('content-type')! } })
  t.equal(noExpression.statusCode, 400, 'refused while reading the form, before the segmenter')
  await until(() => stats(app).inUseBytes === 0)
  t.equal(stats(app).leases, 0)
  t.equal((await segment(app, 'the white square')).statusCode, 200, 'and the next request is served')
})

t.test('EXPECTED FAILURE - a v2 infer body is charged before it is read: refused in the protocol\'s shape when the budget cannot hold it', async (t) => {
  // 25 MiB for requests; a 10 MiB file is about 13.3 MiB as base64, within the body limit, and
  // charged twice (the body and the image decoded from it).
  const app = await build(t, { config: budgetConfig })
  const body = (image: Buffer) => JSON.stringify({
    inputs: [
      { name: 'image', datatype: 'BYTES', shape: [1], data: [image.toString('base64')] },
      { name: 'expression', datatype: 'BYTES', shape: [1], data: ['the white square'] },
    ],
  })
  const big = await app.inject({ method: 'POST', url: '/v2/models/vlt-fake/infer', payload: body(Buffer.alloc(10 * 1024 * 1024, 1)), headers: { 'content-type': 'application/json' } })
  t.equal(big.statusCode, 413, 'twice the declared body is more than one request may ever hold')
  t.type(big.json().error, 'string', 'the protocol\'s { error } shape')
  t.equal(stats(app).inUseBytes, 0)
  const small = await app.inject({ method: 'POST', url: '/v2/models/vlt-fake/infer', payload: body(img), headers: { 'content-type': 'application/json' } })
  t.equal(small.statusCode, 200, 'a small body fits')
  await until(() => stats(app).inUseBytes === 0)
  t.equal(stats(app).leases, 0, 'its lease was released with its work')
})

t.test('EXPECTED FAILURE - a model that does not serve (404) releases the upload\'s lease', async (t) => {
  const app = await build(t, { config: budgetConfig })
  const req = new Request('http://x/', { method: 'POST', body: form({ image: img, expression: 'the white square', extra: [['model', 'nope']] }) })
  const payload = Buffer.from(await req.arrayBuffer())
  const r = await app.inject({ method: 'POST', url: '/segment', payload, headers: { 'content-type': req.headers.get('content-type')! } })
  t.equal(r.statusCode, 404)
  t.equal(r.json().error.code, 'SEG_ERR_MODEL_NOT_FOUND')
  await until(() => stats(app).leases === 0)
  t.equal(stats(app).inUseBytes, 0)
})
