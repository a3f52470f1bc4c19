/**
 * Admission by memory (src/budget/budget.ts): leases within the capacity, refusal when it is
 * taken or the waiting queue is full, first-in first-out waiting, release, deadline, cancel.
 */
import t from 'tap'
import { createBudget, measuredReserve } from '../../src/budget/budget.js'

const MiB = 1024 * 1024
const budget = (opts: { limitMb?: number, reserveMb?: number, queueSize?: number } = {}) => createBudget({
  limit: { bytes: (opts.limitMb ?? 100) * MiB, source: 'MEMORY_BUDGET_MB' },
  reserveBytes: opts.reserveMb === undefined ? 0 : opts.reserveMb * MiB,
  queueSize: opts.queueSize ?? 4,
})
const later = (ms: number): number => Date.now() + ms
const LONG = 600_000

t.test('capacity is the limit less the reserve; leases add up and are released once', async (t) => {
  const b = budget({ limitMb: 100, reserveMb: 40 })
  t.equal(b.stats().capacityBytes, 60 * MiB)
  const a = b.tryAcquire(30 * MiB)!
  const c = await b.acquire(30 * MiB, { deadline: later(LONG) })
  t.equal(b.stats().inUseBytes, 60 * MiB)
  t.equal(b.tryAcquire(1), undefined, 'nothing more fits')
  t.equal(b.stats().refusals.busy, 1)
  a.release()
  a.release()
  t.equal(b.stats().inUseBytes, 30 * MiB, 'a second release changes nothing')
  c.release()
  t.strictSame([b.stats().inUseBytes, b.stats().leases, b.stats().peakInUseBytes], [0, 0, 60 * MiB])
})

t.test('a request that waits is admitted when memory is released, in arrival order', async (t) => {
  const b = budget({ limitMb: 100 })
  const held = b.tryAcquire(80 * MiB)!
  const order: string[] = []
  const big = b.acquire(50 * MiB, { deadline: later(LONG) }).then((l) => { order.push('big'); return l })
  const small = b.acquire(10 * MiB, { deadline: later(LONG) }).then((l) => { order.push('small'); return l })
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(b.stats().waiting, 2, 'the small one does not overtake the big one at the head')
  t.strictSame(order, [])
  held.release()
  const leases = await Promise.all([big, small])
  t.strictSame(order, ['big', 'small'])
  t.equal(b.stats().inUseBytes, 60 * MiB)
  for (const l of leases) l.release()
})

t.test('EXPECTED FAILURE - refusals: waiting queue full (503), larger than the capacity (413)', async (t) => {
  const b = budget({ limitMb: 100, queueSize: 1 })
  const held = b.tryAcquire(100 * MiB)!
  const waiting = b.acquire(10 * MiB, { deadline: later(LONG) })
  await t.rejects(b.acquire(10 * MiB, { deadline: later(LONG) }), { code: 'SEG_ERR_MEMORY_BUSY', statusCode: 503 })
  await t.rejects(b.acquire(101 * MiB, { deadline: later(LONG) }), { code: 'SEG_ERR_IMAGE_TOO_LARGE', statusCode: 413 })
  t.equal(b.tryAcquire(101 * MiB), undefined)
  t.strictSame(b.stats().refusals, { busy: 0, queue_full: 1, too_large: 2, deadline: 0, client_closed: 0 })
  held.release()
  ;(await waiting).release()
  t.equal(b.stats().inUseBytes, 0)
})

t.test('EXPECTED FAILURE - a wait ends at the deadline (504) and leaves the queue', async (t) => {
  const b = budget({ limitMb: 100 })
  const held = b.tryAcquire(100 * MiB)!
  const t0 = Date.now()
  await t.rejects(b.acquire(10 * MiB, { deadline: later(50), timeoutMs: 50 }), { code: 'SEG_ERR_DEADLINE', statusCode: 504 })
  t.ok(Date.now() - t0 >= 45, 'not before the deadline')
  t.equal(b.stats().waiting, 0)
  t.equal(b.stats().refusals.deadline, 1)
  held.release()
  t.equal(b.stats().inUseBytes, 0, 'the expired request never took its lease')
})

t.test('EXPECTED FAILURE - a client that leaves while waiting leaves the queue; those behind it may then fit', async (t) => {
  const b = budget({ limitMb: 100 })
  const held = b.tryAcquire(60 * MiB)!
  const controller = new AbortController()
  const head = b.acquire(50 * MiB, { deadline: later(LONG), signal: controller.signal })
  const behind = b.acquire(30 * MiB, { deadline: later(LONG) })
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(b.stats().waiting, 2)
  controller.abort()
  await t.rejects(head, { code: 'SEG_ERR_CLIENT_CLOSED' })
  const l = await behind
  t.equal(b.stats().inUseBytes, 90 * MiB, 'the one behind fitted once the head left')
  t.equal(b.stats().refusals.client_closed, 1)
  l.release()
  held.release()
  const aborted = new AbortController()
  aborted.abort()
  await t.rejects(b.acquire(1, { deadline: later(LONG), signal: aborted.signal }), { code: 'SEG_ERR_CLIENT_CLOSED' })
})

t.test('before the reserve is known nothing is admitted; setting it admits the waiters', async (t) => {
  const b = createBudget({ limit: { bytes: 100 * MiB, source: 'cgroup v2' }, queueSize: 4 })
  t.equal(b.stats().capacityBytes, 0)
  t.equal(b.tryAcquire(1), undefined)
  const waiting = b.acquire(10 * MiB, { deadline: later(LONG) })
  b.setReserve(50 * MiB)
  const l = await waiting
  t.equal(b.stats().capacityBytes, 50 * MiB)
  l.release()
})

t.test('the measured reserve: resident memory, each worker\'s working set, a margin', async (t) => {
  const one = measuredReserve(200 * MiB, 1536 * MiB, 1)
  const two = measuredReserve(200 * MiB, 1536 * MiB, 2)
  t.ok(one > 200 * MiB && two > one, 'more than the resident memory, more with more workers')
  t.ok(measuredReserve(200 * MiB, 4096 * MiB, 2) > two, 'the margin grows with the limit')
  t.equal(measuredReserve(200 * MiB, 1536 * MiB, 2, 64 * MiB), two + 64 * MiB, 'the feature cache at its capacity is kept too')
})
