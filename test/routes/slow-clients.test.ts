/**
 * Slow and stalled clients, over real sockets: a body that stops arriving is cut with 408 after
 * BODY_IDLE_TIMEOUT_MS; one that trickles on gets 408 at the request's deadline; a body that
 * arrives slowly but whole spends the same deadline, which is counted from the first byte (504);
 * headers have their own timeout; idle keep-alive connections and the number of connections are
 * bounded. Timeouts are small and every check on time is a lower bound or a generous upper one,
 * so a slow machine does not change the outcome.
 */
import t from 'tap'
import net from 'node:net'
import { build, form, rectImage, sleep, until } from '../helper.js'

t.setTimeout(300_000)

const img = await rectImage(64, 64, { x: 8, y: 8, w: 16, h: 16 })
const GENEROUS = 20_000

async function multipart (expression: string): Promise<{ body: Buffer, contentType: string }> {
  const req = new Request('http://x/', { method: 'POST', body: form({ image: img, expression }) })
  return { body: Buffer.from(await req.arrayBuffer()), contentType: req.headers.get('content-type')! }
}

/** answeredAt: the first byte of the answer (Infinity when none came); closedAt: when the server closed the connection. */
interface Answer { status: number, headers: string, body: string, answeredAt: number, closedAt: number }

/** A raw client: writes `head` and then whatever `feed` writes; resolves with the answer once the server closes or answers. */
function rawRequest (port: number, head: string, feed: (socket: net.Socket) => void): { done: Promise<Answer>, socket: net.Socket } {
  const socket = net.connect(port, '127.0.0.1')
  let data = ''
  let answeredAt = Infinity
  const done = new Promise<Answer>((resolve) => {
    socket.on('data', (c) => { if (data === '') answeredAt = Date.now(); data += c.toString('latin1') })
    socket.on('error', () => {})
    socket.on('close', () => {
      const [headers = '', body = ''] = data.split('\r\n\r\n')
      const m = /^HTTP\/1\.1 (\d+)/.exec(headers)
      resolve({ status: m !== null ? Number(m[1]) : 0, headers, body, answeredAt, closedAt: Date.now() })
    })
  })
  socket.on('connect', () => { socket.write(head); feed(socket) })
  return { done, socket }
}

const segmentHead = (contentType: string, length: number) =>
  `POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: ${contentType}\r\nContent-Length: ${length}\r\n\r\n`

async function listen (t: Parameters<typeof build>[0], config: Parameters<typeof build>[1]) {
  const app = await build(t, config)
  await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, port: (app.server.address() as net.AddressInfo).port }
}

t.test('EXPECTED FAILURE - a body that stalls is cut with 408 after BODY_IDLE_TIMEOUT_MS, the connection closed', async (t) => {
  const { app, port } = await listen(t, { config: { bodyIdleTimeoutMs: 300, requestTimeoutMs: 60_000 } })
  const { body, contentType } = await multipart('the white square')
  const t0 = Date.now()
  const { done } = rawRequest(port, segmentHead(contentType, body.length), (s) => s.write(body.subarray(0, 200)))
  const a = await done
  const ms = a.answeredAt - t0
  t.equal(a.status, 408)
  t.match(a.headers, /connection: close/i)
  t.ok(a.closedAt - a.answeredAt < GENEROUS, 'and the connection closed right after')
  t.equal(JSON.parse(a.body).error.code, 'SEG_ERR_REQUEST_TIMEOUT')
  t.match(JSON.parse(a.body).error.message, /No byte of the request body arrived for 300 ms/)
  t.ok(ms >= 300 && ms < GENEROUS, `answered and closed after ${ms} ms, not before the idle timeout, long before the deadline`)
  await until(() => app.budget.stats().inUseBytes === 0)
  t.pass('its upload lease was released')
})

t.test('EXPECTED FAILURE - a body that trickles on gets 408 at the deadline, counted from the first byte', async (t) => {
  const { app, port } = await listen(t, { config: { bodyIdleTimeoutMs: 10_000, requestTimeoutMs: 1000 } })
  const { body, contentType } = await multipart('the white square')
  let timer: NodeJS.Timeout | undefined
  const t0 = Date.now()
  const { done } = rawRequest(port, segmentHead(contentType, body.length), (s) => {
    let i = 0
    // One byte every 50 ms: never idle for long, never done (the body has thousands of bytes).
    timer = setInterval(() => { if (!s.destroyed && i < body.length) s.write(body.subarray(i, ++i)) }, 50)
  })
  const a = await done
  clearInterval(timer)
  const ms = a.answeredAt - t0
  t.equal(a.status, 408)
  t.match(JSON.parse(a.body).error.message, /did not arrive within 1000 ms/)
  t.ok(ms >= 1000 && ms < GENEROUS, `answered after ${ms} ms`)
  await until(() => app.budget.stats().inUseBytes === 0)
})

t.test('EXPECTED FAILURE - a slow upload that completes spends the same deadline: 408 or 504, never later', async (t) => {
  // The body takes about 600 ms to arrive; the work then needs 3 s ('slow'); the deadline is
  // 1.5 s from the first byte. Which of 408/504 it is depends on how fast the body went in, not
  // whether the answer comes in time.
  const batches: number[] = []
  const { app, port } = await listen(t, { config: { bodyIdleTimeoutMs: 10_000, requestTimeoutMs: 1500, keepAliveTimeoutMs: 300 }, workerData: { slowMs: 3000 }, hooks: { onBatch: (n) => batches.push(n) } })
  const { body, contentType } = await multipart('slow')
  const t0 = Date.now()
  const { done } = rawRequest(port, segmentHead(contentType, body.length), (s) => {
    const chunks = 6
    const size = Math.ceil(body.length / chunks)
    for (let k = 0; k < chunks; k++) setTimeout(() => { if (!s.destroyed) s.write(body.subarray(k * size, (k + 1) * size)) }, k * 100)
  })
  const a = await done
  const ms = a.answeredAt - t0
  t.ok(a.status === 504 || a.status === 408, `status ${a.status}`)
  t.ok(ms >= 1500 && ms < 1500 + GENEROUS, `answered after ${ms} ms, not at body end + 1.5 s`)
  if (a.status === 504) t.equal(JSON.parse(a.body).error.code, 'SEG_ERR_DEADLINE')
  await until(() => app.budget.stats().inUseBytes === 0)
  t.ok(batches.length <= 1)
})

t.test('headers have their own timeout; idle keep-alive connections are closed', async (t) => {
  const { port } = await listen(t, { config: { headersTimeoutMs: 300, keepAliveTimeoutMs: 300 } })
  const t0 = Date.now()
  const partial = rawRequest(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n', () => {})
  const a = await partial.done
  t.ok(a.closedAt - t0 >= 300 && a.closedAt - t0 < GENEROUS, `incomplete headers: closed after ${a.closedAt - t0} ms`)
  t.not(a.status, 200)

  const keep = rawRequest(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', () => {})
  const k = await keep.done
  t.equal(k.status, 200, 'answered')
  t.ok(k.closedAt - t0 < GENEROUS * 2, 'then the idle keep-alive connection was closed by the server')
})

t.test('EXPECTED FAILURE - connections beyond MAX_CONNECTIONS are closed at once', async (t) => {
  const { app, port } = await listen(t, { config: { maxConnections: 2 } })
  const open = [net.connect(port, '127.0.0.1'), net.connect(port, '127.0.0.1')]
  for (const s of open) { s.on('error', () => {}); await new Promise((resolve) => s.once('connect', resolve)) }
  await until(() => (app.server as unknown as { _connections: number })._connections === 2)
  const third = rawRequest(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', () => {})
  const a = await third.done
  t.equal(a.status, 0, 'no answer: the third connection was dropped')
  for (const s of open) s.destroy()
  await sleep(50)
  const again = rawRequest(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', () => {})
  t.equal((await again.done).status, 200, 'a connection is accepted again once others closed')
})
