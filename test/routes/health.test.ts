/** Liveness, the readiness lifecycle (starting → ready → shutting down) and graceful shutdown. */
import t from 'tap'
import net from 'node:net'
import { build, form, rectImage } from '../helper.js'

t.test('GET /healthz → 200 at once, even before the model is loaded', async (t) => {
  const app = await build(t, { wait: false })
  const res = await app.inject('/healthz')
  t.equal(res.statusCode, 200)
  t.equal(res.json().status, 'ok')
})

t.test('readiness: 503 starting → 200 ready', async (t) => {
  const app = await build(t, { wait: false })
  const before = await app.inject('/readyz')
  t.equal(before.statusCode, 503)
  t.equal(before.headers['retry-after'], '5')
  t.strictSame(before.json(), {
    status: 'starting', model: 'vlt-fake@0.0.1', provider: 'pending', workers: { configured: 1, live: 0 },
    models: [{ name: 'vlt-fake', version: '0.0.1', state: 'loading', provider: 'pending', workers: { configured: 1, live: 0 } }],
  })
  await app.segmenter.started
  const after = await app.inject('/readyz')
  t.equal(after.statusCode, 200)
  t.strictSame(after.json(), {
    status: 'ready', model: 'vlt-fake@0.0.1', provider: 'cpu', workers: { configured: 1, live: 1 },
    models: [{ name: 'vlt-fake', version: '0.0.1', state: 'ready', provider: 'cpu', workers: { configured: 1, live: 1 } }],
  })
})

/** Send one raw HTTP/1.1 request and return the status line and body. */
function rawRequest (port: number, head: string, finish: Promise<void>): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(head)
      void finish.then(() => socket.write('\r\n'))
    })
    let data = ''
    socket.on('data', (chunk) => { data += chunk.toString() })
    socket.on('error', reject)
    socket.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d+)/.exec(data)?.[1] ?? 0)
      resolve({ status, body: data.split('\r\n\r\n').slice(1).join('\r\n\r\n') })
    })
  })
}

t.test('shutdown: readiness turns 503 at once, the request in flight finishes, then close resolves', async (t) => {
  const app = await build(t)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const port = (app.server.address() as net.AddressInfo).port
  const img = await rectImage(32, 32, { x: 4, y: 4, w: 8, h: 8 })
  // Closed, the app serves no model any more: keep a handle on the one that served.
  const segmenter = app.segmenter

  // A request in flight (the fake model sleeps 400 ms on 'slow').
  const inflight = fetch(`http://127.0.0.1:${port}/segment`, { method: 'POST', body: form({ image: img, expression: 'the slow one' }) })
  // A readiness probe whose headers are still arriving when shutdown begins.
  let release!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  const probe = rawRequest(port, 'GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n', released)
  // Until the request is on the worker (on a busy machine that takes more than a moment).
  for (let i = 0; i < 3000 && app.segmenter.stats().busyWorkers === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  await new Promise((resolve) => setTimeout(resolve, 100))

  let closed = false
  const closing = app.close().then(() => { closed = true })
  await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(app.lifecycle.closing, true)
  release()
  const ready = await probe
  t.equal(ready.status, 503, 'readiness is 503 once shutdown began')
  t.match(ready.body, /"status":"shutting_down"/)
  t.equal(closed, false, 'close waits for the request in flight')

  const res = await inflight
  t.equal(res.status, 200, 'the accepted request finished')
  t.equal(((await res.json()) as { results: unknown[] }).results.length, 1)
  await closing
  t.equal(closed, true)
  t.equal(segmenter.isReady(), false)
})
