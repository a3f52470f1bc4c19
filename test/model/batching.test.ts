/**
 * Dynamic micro-batching: a lone request waits at most MAX_BATCH_WAIT_MS, and only when company
 * can come (not while another worker idles, not on an idle service); concurrent requests share
 * one session.run, the batch-size histogram shows it; and the feature cache's LRU bound on its own.
 */
import t from 'tap'
import { letterboxGeometry } from '../../src/image/preprocess.js'
import { createFeatureCache, entryBytes } from '../../src/model/feature-cache.js'
import { build, FAKE_JOB_SIZE as S, fakeJob as job, fakePool, form, later, rectImage, testConfig } from '../helper.js'

t.test('a lone request waits for company at most MAX_BATCH_WAIT_MS', async (t) => {
  // Generous slack: these must hold on a loaded machine too; the point is the bound, not speed.
  for (const wait of [0, 300]) {
    const pool = fakePool(testConfig({ workers: 1, maxBatch: 8, maxBatchWaitMs: wait }))
    t.teardown(() => pool.close())
    await pool.started
    pool.upstream = () => 1 // another request is being decoded: company can come
    await pool.run(job('one'), { deadline: later(5000) }) // warm
    const t0 = performance.now()
    const out = await pool.run(job('one'), { deadline: later(5000) })
    const ms = performance.now() - t0
    t.ok(ms <= wait + 250, `MAX_BATCH_WAIT_MS=${wait}: answered in ${ms.toFixed(1)} ms`)
    t.ok(out.queueMs <= wait + 100, `queued ${out.queueMs.toFixed(1)} ms`)
    if (wait > 0) t.ok(out.queueMs >= wait - 5, 'a lone request on the only worker does wait for company')
    t.equal(out.batchSize, 1)
  }
})

t.test('on an idle service (nothing busy, nothing on its way), a lone request does not wait', async (t) => {
  const pool = fakePool(testConfig({ workers: 1, maxBatch: 8, maxBatchWaitMs: 2000 }))
  t.teardown(() => pool.close())
  await pool.started
  let upstream = 0
  pool.upstream = () => upstream
  const t0 = performance.now()
  const out = await pool.run(job('one'), { deadline: later(5000) })
  t.ok(performance.now() - t0 < 1000, `answered in ${(performance.now() - t0).toFixed(1)} ms, not after 2000`)
  t.ok(out.queueMs < 50, `queued ${out.queueMs.toFixed(2)} ms`)
  upstream = 1
  const held = await pool.run(job('one'), { deadline: later(5000) })
  t.ok(held.queueMs >= 2000 - 5, `with a request on its way it waits for it (${held.queueMs.toFixed(0)} ms)`)
})

t.test('with another worker idle, a lone request does not wait at all', async (t) => {
  const pool = fakePool(testConfig({ workers: 2, maxBatch: 8, maxBatchWaitMs: 2000 }))
  t.teardown(() => pool.close())
  await pool.started
  const t0 = performance.now()
  const out = await pool.run(job('one'), { deadline: later(5000) })
  t.ok(performance.now() - t0 < 1000, `answered in ${(performance.now() - t0).toFixed(1)} ms, not after 2000`)
  t.ok(out.queueMs < 50, `queued ${out.queueMs.toFixed(2)} ms`)
})

t.test('concurrent requests share one session.run, within the wait', async (t) => {
  const pool = fakePool(testConfig({ workers: 1, maxBatch: 8, maxBatchWaitMs: 1000 }))
  t.teardown(() => pool.close())
  await pool.started
  pool.upstream = () => 1 // as the segmenter reports while the others are still being decoded
  const sizes: number[] = []
  pool.onBatch = (rows) => sizes.push(rows)
  const t0 = performance.now()
  const outs = await Promise.all([job('one'), job('the', 2), job('circle'), job('square')].map((j) => pool.run(j, { deadline: later(5000) })))
  t.strictSame(sizes, [5], 'one batch of 5 rows')
  t.strictSame(outs.map((o) => o.batchSize), [5, 5, 5, 5])
  t.ok(performance.now() - t0 < 1000 + 500, 'not held past the wait')

  // A batch that reaches MAX_BATCH leaves at once.
  sizes.length = 0
  const t1 = performance.now()
  await Promise.all([job('one', 4), job('one', 4)].map((j) => pool.run(j, { deadline: later(5000) })))
  t.strictSame(sizes, [8])
  t.ok(performance.now() - t1 < 700, `a full batch leaves without waiting for the 1000 ms (${(performance.now() - t1).toFixed(1)} ms)`)
})

t.test('the batch-size histogram in /metrics shows batched requests', async (t) => {
  const app = await build(t, { config: { workers: 1, maxBatch: 8, maxBatchWaitMs: 500 } })
  const img = await rectImage(32, 32, { x: 4, y: 4, w: 8, h: 8 })
  const codes = await Promise.all([0, 1, 2, 3].map(() => app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: 'the circle' }) }).then((r) => r.statusCode)))
  t.strictSame(codes, [200, 200, 200, 200])
  const text = (await app.inject('/metrics')).payload
  const count = Number(/vlt_inference_batch_size_count (\d+)/.exec(text)?.[1])
  const sum = Number(/vlt_inference_batch_size_sum (\d+)/.exec(text)?.[1])
  t.equal(sum, 4, 'four rows in all')
  t.ok(count < 4, `${count} session.run for 4 concurrent requests`)
  t.match(text, /vlt_inference_batch_size_bucket\{le="1"\} 0/)
})

t.test('feature cache: LRU within its byte bound', async (t) => {
  const entry = (n: number) => ({ features: { data: new Float32Array(new SharedArrayBuffer(n * 4)), shapes: [[n]] }, geometry: letterboxGeometry(S, S, S), format: 'png' })
  const one = entryBytes(entry(1000))
  const cache = createFeatureCache(3 * one, 'salt')
  t.equal(cache.enabled, true)
  t.equal(cache.key(Buffer.from('a')), cache.key(Buffer.from('a')))
  t.not(cache.key(Buffer.from('a')), cache.key(Buffer.from('b')))
  t.not(createFeatureCache(1, 'other').key(Buffer.from('a')), cache.key(Buffer.from('a')), 'the salt (preprocessing, encoder) is part of the key')
  for (const k of ['a', 'b', 'c']) cache.set(k, entry(1000))
  t.ok(cache.get('a'), 'a is used again: b is now the oldest')
  cache.set('d', entry(1000))
  t.equal(cache.get('b'), undefined, 'b evicted')
  t.ok(cache.get('a'))
  t.ok(cache.get('c'))
  t.ok(cache.get('d'))
  t.match(cache.stats(), { entries: 3, bytes: 3 * one, evictions: 1, hits: 4, misses: 1, capacityBytes: 3 * one })
  cache.set('huge', entry(4000))
  t.equal(cache.get('huge'), undefined, 'an entry larger than the whole cache is not stored')
  t.equal(cache.stats().entries, 3)
  cache.set('e', entry(2000))
  t.ok(cache.stats().bytes <= 3 * one)
  t.equal(createFeatureCache(0, 'x').enabled, false)
})
