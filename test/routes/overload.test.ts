/**
 * Overload, through the real engine and routes around the fake model ('slow' sleeps 400 ms in
 * the worker):
 * - a full queue answers 503 with a Retry-After computed from the queue and measured throughput;
 * - a request past its deadline gets 504 and its queued work never reaches a worker ('hold' keeps
 *   the worker busy until the test opens its gate, so this does not depend on timing);
 * - a client that disconnects has its queued work dropped.
 * Worker failure is in worker-failure.test.ts.
 */
import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { build, form, gate, rectImage, sleep, until } from '../helper.js'
import { checkResponse } from '../openapi-validator.js'
import { retryAfterSeconds, throughputMeter } from '../../src/http/retry-after.js'

// Each app starts its own worker threads; on a busy machine that takes seconds.
t.setTimeout(300_000)

const img = await rectImage(32, 32, { x: 4, y: 4, w: 8, h: 8 })
type App = Awaited<ReturnType<typeof build>>
const segment = (app: App, expression: string) =>
  app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression }) })

t.test('throughput meter and Retry-After arithmetic', async (t) => {
  const m = throughputMeter(10_000)
  t.equal(m.rate(0), undefined, 'no rate before any completion')
  for (let i = 0; i < 20; i++) m.record(1000 + i * 250) // 4 per second for 5 s
  t.equal(m.rate(6000), 20 / 5, '20 completions over the 5 s since the oldest')
  t.equal(m.rate(30_000), undefined, 'all samples left the window')
  t.equal(retryAfterSeconds(10, 4, 1), 3, 'ceil(10 / 4)')
  t.equal(retryAfterSeconds(0, 4, 1), 1, 'at least 1 s')
  t.equal(retryAfterSeconds(10_000, 0.5, 1), 60, 'at most 60 s')
  t.equal(retryAfterSeconds(6, undefined, 2), 3, 'no measurement: 1 job per second per worker')
})

t.test('EXPECTED FAILURE - full queue: 503 with Retry-After = work ahead / measured throughput', async (t) => {
  const app = await build(t, { config: { workers: 1, maxBatch: 1, queueSize: 8 } })
  // Measure: three 400 ms jobs back to back → about 2.5–3 completions per second.
  for (let i = 0; i < 3; i++) t.equal((await segment(app, 'slow')).statusCode, 200)
  // Fill: one in flight + 8 queued.
  const flood = Array.from({ length: 9 }, () => segment(app, 'slow'))
  await until(() => app.segmenter.stats().queueDepth === 8)
  const full = await segment(app, 'the circle')
  t.equal(full.statusCode, 503)
  t.equal(full.json().error.code, 'SEG_ERR_QUEUE_FULL')
  t.strictSame(checkResponse('POST', '/segment', full), [])
  const retryAfter = Number(full.headers['retry-after'])
  // 9 jobs ahead at ≤ 3 completions/s (each takes ≥ 400 ms) → at least 3 s; a constant would
  // not depend on either. Slower machines measure a lower rate and so a longer wait.
  t.ok(retryAfter >= 3 && retryAfter <= 60, `Retry-After ${retryAfter} s for 9 jobs ahead`)
  for (const r of await Promise.all(flood)) t.equal(r.statusCode, 200)
})

t.test('EXPECTED FAILURE - deadline: 504, and the queued work never reaches a worker', async (t) => {
  const sizes: number[] = []
  const held = gate()
  const app = await build(t, { config: { workers: 1, maxBatch: 1, queueSize: 8, requestTimeoutMs: 700 }, workerData: { gate: held.gate }, hooks: { onBatch: (rows) => sizes.push(rows) } })
  t.teardown(held.open) // before app.close (teardowns run last-in first-out)
  // A holds the only worker until the gate opens, so C stays queued past its 700 ms deadline
  // however slow the machine is.
  const a = segment(app, 'hold')
  await until(() => app.segmenter.stats().busyWorkers === 1)
  const c = await segment(app, 'the circle')
  t.equal(c.statusCode, 504)
  t.equal(c.json().error.code, 'SEG_ERR_DEADLINE')
  t.strictSame(checkResponse('POST', '/segment', c), [])
  held.open()
  t.equal((await a).statusCode, 504, 'A passed its deadline too, while it held the worker')
  await until(() => app.segmenter.stats().busyWorkers === 0 && app.segmenter.stats().queueDepth === 0)
  await sleep(50)
  t.strictSame(sizes, [1], 'only A ever ran; C was dropped from the queue')
})

t.test('EXPECTED FAILURE - a client that disconnects has its queued work dropped', async (t) => {
  const sizes: number[] = []
  const app = await build(t, { config: { workers: 1, maxBatch: 1, queueSize: 8 }, hooks: { onBatch: (rows) => sizes.push(rows) } })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  const first = segment(app, 'slow')
  await until(() => app.segmenter.stats().busyWorkers === 1)

  const fd = form({ image: img, expression: 'the circle' })
  const req = new Request('http://x/', { method: 'POST', body: fd })
  const body = Buffer.from(await req.arrayBuffer())
  const client = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/segment', headers: { 'content-type': req.headers.get('content-type')!, 'content-length': body.length } })
  client.on('error', () => {})
  client.end(body)
  await until(() => app.segmenter.stats().queueDepth === 1)
  client.destroy()
  await until(() => app.segmenter.stats().queueDepth === 0)
  t.pass('left the queue when the client went away')
  t.equal((await first).statusCode, 200)
  await sleep(50)
  t.strictSame(sizes, [1], 'the abandoned job never ran')
})
