/** The worker pool on its own: abort, drain on close, batching limits. */
import t from 'tap'
import { fakeJob as job, fakePool, later, testConfig } from '../helper.js'

t.test('a job whose client went away leaves the queue without running', async (t) => {
  const pool = fakePool(testConfig({ workers: 1, maxBatch: 8 }))
  t.teardown(() => pool.close())
  await pool.started
  const sizes: number[] = []
  pool.onBatch = (rows) => sizes.push(rows)
  const slow = pool.run(job('slow'), { deadline: later(5000) })
  const controller = new AbortController()
  const gone = pool.run(job('circle'), { deadline: later(5000), signal: controller.signal })
  const kept = pool.run(job('square', 2), { deadline: later(5000) })
  t.equal(pool.stats().queueDepth, 2)
  controller.abort()
  await t.rejects(gone, { code: 'SEG_ERR_CLIENT_CLOSED' })
  t.equal(pool.stats().queueDepth, 1)
  await slow
  const out = await kept
  t.equal(out.rows.length, 2)
  t.strictSame(sizes, [1, 2], 'the aborted job never reached a worker')
})

t.test('batches never exceed maxBatch rows (a bigger job runs alone)', async (t) => {
  const pool = fakePool(testConfig({ workers: 1, maxBatch: 3 }))
  t.teardown(() => pool.close())
  await pool.started
  const sizes: number[] = []
  pool.onBatch = (rows) => sizes.push(rows)
  const slow = pool.run(job('slow'), { deadline: later(5000) })
  const jobs = [pool.run(job('one', 2), { deadline: later(5000) }), pool.run(job('one', 2), { deadline: later(5000) }), pool.run(job('one', 5), { deadline: later(5000) }), pool.run(job('one'), { deadline: later(5000) })]
  await slow
  const outs = await Promise.all(jobs)
  t.strictSame(outs.map((o) => o.rows.length), [2, 2, 5, 1])
  t.strictSame(sizes, [1, 2, 2, 5, 1])
})

t.test('close() lets queued and in-flight jobs finish, then refuses new ones', async (t) => {
  const pool = fakePool(testConfig({ workers: 1 }))
  await pool.started
  const a = pool.run(job('slow'), { deadline: later(5000) })
  const b = pool.run(job('one'), { deadline: later(5000) })
  const closed = pool.close()
  await t.rejects(pool.run(job('one'), { deadline: later(5000) }), { code: 'SEG_ERR_SHUTTING_DOWN' })
  t.equal((await a).rows.length, 1)
  t.equal((await b).rows.length, 1)
  await closed
  t.equal(pool.isReady(), false)
})
