import t from 'tap'
import { build, form, rectImage } from '../helper.js'

t.test('GET /metrics: Prometheus text with the service metrics', async (t) => {
  const app = await build(t)
  const img = await rectImage(32, 32, { x: 4, y: 4, w: 8, h: 8 })
  t.equal((await app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: ['the circle', 'one'] }) })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: 'zzz' }) })).statusCode, 422)
  const res = await app.inject('/metrics')
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/plain/)
  const text = res.payload
  t.match(text, /vlt_http_requests_total\{method="POST",route="\/segment",status_code="200"\} 1/)
  t.match(text, /vlt_http_requests_total\{method="POST",route="\/segment",status_code="422"\} 1/)
  t.match(text, /vlt_http_request_duration_seconds_bucket\{le="[^"]+",method="POST",route="\/segment",status_code="200"\}/)
  for (const stage of ['decode', 'preprocess', 'queue', 'inference', 'postprocess', 'total']) {
    t.match(text, new RegExp(`vlt_segment_stage_duration_seconds_count\\{model="vlt-fake",version="0.0.1",stage="${stage}"\\} 1`), stage)
  }
  const fake = 'model="vlt-fake",version="0.0.1"'
  t.match(text, `vlt_inference_queue_depth{${fake}} 0`)
  t.match(text, `vlt_inference_batch_size_bucket{le="2",${fake}} 1`)
  t.match(text, `vlt_inference_workers{${fake},state="live"} 1`)
  t.match(text, `vlt_execution_provider{${fake},provider="cpu"} 1`)
  t.match(text, `vlt_model_info{${fake},preset="fake",provider="cpu",input_size="32",max_words="5",num_queries="4"} 1`)
  t.match(text, `vlt_model_state{${fake},state="ready"} 1`)
  t.match(text, `vlt_model_requests_total{${fake},status_code="200"} 1`)
  t.match(text, `vlt_model_requests_total{${fake},status_code="422"} 1`)
  t.match(text, 'vlt_model_reloads_total{model="vlt-fake",version="0.0.1",result="loaded"} 1')
  t.match(text, /vlt_ready 1/)
  // prom-client's default metrics keep their standard names (no service prefix)
  t.match(text, /^process_cpu_user_seconds_total \d/m)
  t.match(text, /^process_resident_memory_bytes \d/m)
  t.match(text, /^nodejs_eventloop_lag_seconds \d/m)
  t.notMatch(text, /^vlt_(process|nodejs)_/m, 'no prefixed copies')
})

t.test('logs: request id and timings; expressions only when configured', async (t) => {
  const img = await rectImage(32, 32, { x: 4, y: 4, w: 8, h: 8 })
  for (const logExpressions of [false, true]) {
    const lines: any[] = []
    const { buildApp } = await import('../../src/app.js')
    const { fakeSegmenter, testConfig } = await import('../helper.js')
    const config = testConfig({ logExpressions })
    const stream = { write: (s: string) => { lines.push(JSON.parse(s)) } }
    const app = buildApp(config, { segmenter: fakeSegmenter(config), logger: { level: 'info', stream } })
    t.teardown(() => app.close())
    await app.ready()
    await app.segmenter.started
    const res = await app.inject({ method: 'POST', url: '/segment', headers: { 'x-request-id': 'req-123' }, payload: form({ image: img, expression: 'the secret circle' }) })
    t.equal(res.headers['x-request-id'], 'req-123')
    const done = lines.find((l) => l.msg === 'segmentation done')
    t.ok(done)
    t.equal(done.reqId, 'req-123')
    t.type(done.timings.inference, 'number')
    const all = JSON.stringify(lines)
    if (logExpressions) t.strictSame(done.segment, { expressions: ['the secret circle'] })
    else t.notMatch(all, /secret/, 'expression text is not logged')
  }
})
