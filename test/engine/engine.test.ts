/** The engine on its own: abort, drain on close, batching limits. */
import t from 'tap'
import { fakeJob as job, fakeEngine, later, testConfig } from '../helper.js'

t.test('a job whose client went away leaves the queue without running', async (t) => {
  const sizes: number[] = []
  const engine = fakeEngine(testConfig({ workers: 1, maxBatch: 8 }), { hooks: { onBatch: (rows) => sizes.push(rows) } })
  t.teardown(() => engine.close())
  await engine.started
  const slow = engine.run(job('slow'), { deadline: later(5000) })
  const controller = new AbortController()
  const gone = engine.run(job('circle'), { deadline: later(5000), signal: controller.signal })
  const kept = engine.run(job('square', 2), { deadline: later(5000) })
  t.equal(engine.stats().queueDepth, 2)
  controller.abort()
  await t.rejects(gone, { code: 'SEG_ERR_CLIENT_CLOSED' })
  t.equal(engine.stats().queueDepth, 1)
  await slow
  const out = await kept
  t.equal(out.rows.length, 2)
  t.strictSame(sizes, [1, 2], 'the aborted job never reached a worker')
})

t.test('batches never exceed maxBatch rows (a bigger job runs alone)', async (t) => {
  const sizes: number[] = []
  const engine = fakeEngine(testConfig({ workers: 1, maxBatch: 3 }), { hooks: { onBatch: (rows) => sizes.push(rows) } })
  t.teardown(() => engine.close())
  await engine.started
  const slow = engine.run(job('slow'), { deadline: later(5000) })
  const jobs = [engine.run(job('one', 2), { deadline: later(5000) }), engine.run(job('one', 2), { deadline: later(5000) }), engine.run(job('one', 5), { deadline: later(5000) }), engine.run(job('one'), { deadline: later(5000) })]
  await slow
  const outs = await Promise.all(jobs)
  t.strictSame(outs.map((o) => o.rows.length), [2, 2, 5, 1])
  t.strictSame(sizes, [1, 2, 2, 5, 1])
})

t.test('close() lets queued and in-flight jobs finish, then refuses new ones', async (t) => {
  const engine = fakeEngine(testConfig({ workers: 1 }))
  await engine.started
  const a = engine.run(job('slow'), { deadline: later(5000) })
  const b = engine.run(job('one'), { deadline: later(5000) })
  const closed = engine.close()
  await t.rejects(engine.run(job('one'), { deadline: later(5000) }), { code: 'SEG_ERR_SHUTTING_DOWN' })
  t.equal((await a).rows.length, 1)
  t.equal((await b).rows.length, 1)
  await closed
  t.equal(engine.isReady(), false)
})
