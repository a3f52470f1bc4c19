/**
 * Worker failure, through the real engine and routes around the fake model ('crash' kills the
 * worker thread, 'slow' sleeps 400 ms): a dying worker fails only its in-flight requests (503,
 * no hang), queued work survives, readiness follows the live workers, and the service recovers
 * without a restart.
 */
import t from 'tap'
import { build, form, rectImage, until } from '../helper.js'
import { checkResponse } from '../openapi-validator.js'

// Each app starts its own worker threads; on a busy machine that takes seconds.
t.setTimeout(300_000)

const img = await rectImage(32, 32, { x: 4, y: 4, w: 8, h: 8 })
type App = Awaited<ReturnType<typeof build>>
const segment = (app: App, expression: string) =>
  app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression }) })

t.test('EXPECTED FAILURE - a crash fails every request of its batch with 503, not a hang', async (t) => {
  const app = await build(t, { config: { workers: 1, maxBatch: 8, queueSize: 8 } })
  const first = segment(app, 'slow')
  await until(() => app.segmenter.stats().busyWorkers === 1)
  // These two queue behind 'slow' and go together into the next session.run, which crashes.
  const [a, b] = await Promise.all([segment(app, 'crash'), segment(app, 'the circle')])
  t.equal((await first).statusCode, 200)
  for (const r of [a, b]) {
    t.equal(r.statusCode, 503)
    t.equal(r.json().error.code, 'SEG_ERR_WORKER_CRASHED')
    t.strictSame(checkResponse('POST', '/segment', r), [])
  }
  await until(() => app.segmenter.isReady())
  t.equal((await segment(app, 'the circle')).statusCode, 200)
})

t.test('EXPECTED FAILURE - queued work survives a crash and is served by the replacement', async (t) => {
  const app = await build(t, { config: { workers: 1, maxBatch: 1, queueSize: 8 } })
  const crash = segment(app, 'crash')
  const queued = segment(app, 'the white square')
  t.equal((await crash).statusCode, 503)
  const res = await queued
  t.equal(res.statusCode, 200, 'answered by the new worker')
  t.equal(app.segmenter.stats().restarts, 1)
})

t.test('EXPECTED FAILURE - one of two workers dies: still ready with one live, then two again', async (t) => {
  const app = await build(t, { config: { workers: 2, maxBatch: 1 } })
  t.equal((await segment(app, 'crash')).statusCode, 503)
  const ready = await app.inject('/readyz')
  t.equal(ready.statusCode, 200, 'the other worker still serves')
  t.strictSame(ready.json().workers, { configured: 2, live: 1 })
  t.equal((await segment(app, 'the circle')).statusCode, 200)
  await until(() => app.segmenter.stats().liveWorkers === 2)
  t.strictSame((await app.inject('/readyz')).json().workers, { configured: 2, live: 2 })
  t.match((await app.inject('/metrics')).payload, /vlt_inference_worker_restarts\{model="vlt-fake",version="0.0.1"\} 1/)
})

t.test('EXPECTED FAILURE - repeated crashes: replaced every time, no restart of the service', async (t) => {
  const app = await build(t, { config: { workers: 1, maxBatch: 1 } })
  for (let i = 1; i <= 3; i++) {
    t.equal((await segment(app, 'crash')).statusCode, 503, `crash ${i}`)
    await until(() => app.segmenter.isReady())
    t.equal((await segment(app, 'the circle')).statusCode, 200, `served after crash ${i}`)
  }
  t.equal(app.segmenter.stats().restarts, 3)
})
