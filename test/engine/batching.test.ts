/**
 * Dynamic micro-batching: a lone request waits at most MAX_BATCH_WAIT_MS, and only when company
 * can come (not while another worker idles, not on an idle service); concurrent requests share
 * one session.run, and the batch-size histogram shows it.
 */
import t from 'tap'
import { build, fakeEngine, fakeJob as job, form, later, rectImage, testConfig } from '../helper.js'

/** A request announced to the engine that is still being prepared until `done` is called. */
function onItsWay (engine: ReturnType<typeof fakeEngine>): () => void {
  let done!: () => void
  void engine.announce(async () => await new Promise<void>((resolve) => { done = resolve }))
  return done
}

t.test('a lone request waits for company at most MAX_BATCH_WAIT_MS', async (t) => {
  // Generous slack: these must hold on a loaded machine too; the point is the bound, not speed.
  for (const wait of [0, 300]) {
    const engine = fakeEngine(testConfig({ workers: 1, maxBatch: 8, maxBatchWaitMs: wait }))
    t.teardown(() => engine.close())
    await engine.started
    const decoded = onItsWay(engine) // another request is being decoded: company can come
    t.teardown(decoded)
    await engine.run(job('one'), { deadline: later(5000) }) // warm
    const t0 = performance.now()
    const out = await engine.run(job('one'), { deadline: later(5000) })
    const ms = performance.now() - t0
    t.ok(ms <= wait + 250, `MAX_BATCH_WAIT_MS=${wait}: answered in ${ms.toFixed(1)} ms`)
    t.ok(out.queueMs <= wait + 100, `queued ${out.queueMs.toFixed(1)} ms`)
    if (wait > 0) t.ok(out.queueMs >= wait - 5, 'a lone request on the only worker does wait for company')
    t.equal(out.batchSize, 1)
  }
})

t.test('on an idle service (nothing busy, nothing on its way), a lone request does not wait', async (t) => {
  const engine = fakeEngine(testConfig({ workers: 1, maxBatch: 8, maxBatchWaitMs: 2000 }))
  t.teardown(() => engine.close())
  await engine.started
  const t0 = performance.now()
  const out = await engine.run(job('one'), { deadline: later(5000) })
  t.ok(performance.now() - t0 < 1000, `answered in ${(performance.now() - t0).toFixed(1)} ms, not after 2000`)
  t.ok(out.queueMs < 50, `queued ${out.queueMs.toFixed(2)} ms`)
  t.teardown(onItsWay(engine))
  const held = await engine.run(job('one'), { deadline: later(5000) })
  t.ok(held.queueMs >= 2000 - 5, `with a request on its way it waits for it (${held.queueMs.toFixed(0)} ms)`)
})

t.test('with another worker idle, a lone request does not wait at all', async (t) => {
  const engine = fakeEngine(testConfig({ workers: 2, maxBatch: 8, maxBatchWaitMs: 2000 }))
  t.teardown(() => engine.close())
  await engine.started
  const t0 = performance.now()
  const out = await engine.run(job('one'), { deadline: later(5000) })
  t.ok(performance.now() - t0 < 1000, `answered in ${(performance.now() - t0).toFixed(1)} ms, not after 2000`)
  t.ok(out.queueMs < 50, `queued ${out.queueMs.toFixed(2)} ms`)
})

t.test('concurrent requests share one session.run, within the wait', async (t) => {
  const sizes: number[] = []
  const engine = fakeEngine(testConfig({ workers: 1, maxBatch: 8, maxBatchWaitMs: 1000 }), { hooks: { onBatch: (rows) => sizes.push(rows) } })
  t.teardown(() => engine.close())
  await engine.started
  t.teardown(onItsWay(engine)) // as the segmenter announces while the others are still being decoded
  const t0 = performance.now()
  const outs = await Promise.all([job('one'), job('the', 2), job('circle'), job('square')].map((j) => engine.run(j, { deadline: later(5000) })))
  t.strictSame(sizes, [5], 'one batch of 5 rows')
  t.strictSame(outs.map((o) => o.batchSize), [5, 5, 5, 5])
  t.ok(performance.now() - t0 < 1000 + 500, 'not held past the wait')

  // A batch that reaches MAX_BATCH leaves at once.
  sizes.length = 0
  const t1 = performance.now()
  await Promise.all([job('one', 4), job('one', 4)].map((j) => engine.run(j, { deadline: later(5000) })))
  t.strictSame(sizes, [8])
  t.ok(performance.now() - t1 < 700, `a full batch leaves without waiting for the 1000 ms (${(performance.now() - t1).toFixed(1)} ms)`)
})

t.test('the batch-size histogram in /metrics shows batched requests', async (t) => {
  const app = await build(t, { config: { workers: 1, maxBatch: 8, maxBatchWaitMs: 500 } })
  const img = await rectImage(32, 32, { x: 4, y: 4, w: 8, h: 8 })
  const codes = await Promise.all([0, 1, 2, 3].map(() => app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: 'the circle' }) }).then((r) => r.statusCode)))
  t.strictSame(codes, [200, 200, 200, 200])
  const text = (await app.inject('/metrics')).payload
  const count = Number(/vlt_inference_batch_size_count\{model="vlt-fake",version="0.0.1"\} (\d+)/.exec(text)?.[1])
  const sum = Number(/vlt_inference_batch_size_sum\{model="vlt-fake",version="0.0.1"\} (\d+)/.exec(text)?.[1])
  t.equal(sum, 4, 'four rows in all')
  t.ok(count < 4, `${count} session.run for 4 concurrent requests`)
  t.match(text, /vlt_inference_batch_size_bucket\{le="1",model="vlt-fake",version="0.0.1"\} 0/)
})
