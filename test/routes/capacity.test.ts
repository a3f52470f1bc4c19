/** 503 (queue full, not ready, worker crashed) and 504 (deadline) through the real engine. */
import t from 'tap'
import { build, form, rectImage } from '../helper.js'

const img = await rectImage(32, 32, { x: 4, y: 4, w: 8, h: 8 })
const segment = (app: Awaited<ReturnType<typeof build>>, expression: string) =>
  app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression }) })

t.test('EXPECTED FAILURE - queue full → 503 + Retry-After', async (t) => {
  const app = await build(t, { config: { workers: 1, queueSize: 0, maxBatch: 1 } })
  const first = segment(app, 'the slow one')
  for (let i = 0; i < 3000 && app.segmenter.stats().busyWorkers === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  const second = await segment(app, 'the circle')
  t.equal(second.statusCode, 503)
  t.equal(second.headers['retry-after'], '1')
  t.equal(second.json().error.code, 'SEG_ERR_QUEUE_FULL')
  t.match(second.json().error.message, /Too many requests are waiting/)
  t.equal((await first).statusCode, 200)
})

t.test('queued requests wait for a free worker and are batched', async (t) => {
  const sizes: number[] = []
  const app = await build(t, { config: { workers: 1, queueSize: 8, maxBatch: 8 }, hooks: { onBatch: (rows) => sizes.push(rows) } })
  const slow = segment(app, 'the slow one')
  for (let i = 0; i < 3000 && app.segmenter.stats().busyWorkers === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  const rest = await Promise.all([segment(app, 'the circle'), segment(app, 'the square'), segment(app, 'left one')])
  for (const r of rest) t.equal(r.statusCode, 200)
  t.equal((await slow).statusCode, 200)
  t.strictSame(sizes, [1, 3], 'the three waiting requests went in one session.run')
})

t.test('EXPECTED FAILURE - deadline passed → 504', async (t) => {
  const app = await build(t, { config: { requestTimeoutMs: 150 } })
  const res = await segment(app, 'the slow one')
  t.equal(res.statusCode, 504)
  t.equal(res.json().error.code, 'SEG_ERR_DEADLINE')
  t.match(res.json().error.message, /^The request did not finish within 150 ms$/)
  // The worker is still usable afterwards (waiting for the abandoned run to end, then a request
  // that needs a fraction of the 150 ms — or, on a saturated machine, at least not a 5xx but 504).
  for (let i = 0; i < 3000 && app.segmenter.stats().busyWorkers > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  const next = await segment(app, 'the circle')
  t.ok(next.statusCode === 200 || next.statusCode === 504, `next request ${next.statusCode}`)
  t.equal(app.segmenter.stats().liveWorkers, 1)
})

t.test('EXPECTED FAILURE - worker crash → 503 for its requests, then replaced', async (t) => {
  const app = await build(t, { config: { workers: 1 } })
  const res = await segment(app, 'crash')
  t.equal(res.statusCode, 503)
  t.equal(res.json().error.code, 'SEG_ERR_WORKER_CRASHED')
  t.equal(res.headers['retry-after'], '1')
  // Until the replacement is up there is no live worker: not ready.
  t.equal((await app.inject('/readyz')).statusCode, 503)
  for (let i = 0; i < 600 && !app.segmenter.isReady(); i++) await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal((await app.inject('/readyz')).statusCode, 200)
  t.equal(app.segmenter.stats().restarts, 1)
  t.equal((await segment(app, 'the circle')).statusCode, 200)
})

t.test('EXPECTED FAILURE - model not loaded → 503 NOT_READY', async (t) => {
  const app = await build(t, { workerData: { failStart: true }, wait: false })
  await t.rejects(app.segmenter.started, /fake start failure/)
  const res = await segment(app, 'the circle')
  t.equal(res.statusCode, 503)
  t.equal(res.json().error.code, 'SEG_ERR_NOT_READY')
  t.equal(res.headers['retry-after'], '5')
  t.equal((await app.inject('/readyz')).statusCode, 503)
})
