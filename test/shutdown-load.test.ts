/**
 * SIGTERM under load, on the real process (`node dist/server.js`) and the real model: requests
 * keep flowing on fresh connections while the signal arrives.
 * - every request the server accepted before the signal gets a complete 200 answer;
 * - after it, a request is refused at the socket or answered 503 SEG_ERR_SHUTTING_DOWN;
 * - /readyz answers 503 at once (during SHUTDOWN_DELAY_MS, while still listening);
 * - the process exits 0 within SHUTDOWN_DELAY_MS + SHUTDOWN_GRACE_MS.
 */
import t from 'tap'
import http from 'node:http'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { multipartBody } from './fixtures/make-bad-inputs.js'
import { jsonLines } from './helper.js'

const ROOT = path.resolve(new URL('..', import.meta.url).pathname)
const SERVER = path.join(ROOT, 'dist', 'server.js')
const MODEL_DIR = path.join(ROOT, 'models', 'vlt-refshapes')
const DELAY_MS = 1500
const GRACE_MS = 20_000
const CLIENTS = 4

if (!existsSync(path.join(MODEL_DIR, 'model.json'))) {
  t.pass('skipped: no model folder')
} else {
  if (!existsSync(SERVER)) {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(ROOT, 'tsconfig.build.json')], { stdio: 'inherit' })
    if (r.status !== 0) throw new Error('build failed')
  }

  interface Outcome { id: string, status?: number, body?: string, error?: string, startedAt: number, endedAt?: number }

  function send (port: number, id: string, body: Buffer, contentType: string): Promise<Outcome> {
    const o: Outcome = { id, startedAt: performance.now() }
    return new Promise((resolve) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/segment', agent: false, headers: { 'content-type': contentType, 'content-length': body.length, 'x-request-id': id } }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => { o.status = res.statusCode; o.body = Buffer.concat(chunks).toString(); o.endedAt = performance.now(); resolve(o) })
        res.on('error', (e) => { o.error = e.message; resolve(o) })
      })
      req.on('error', (e: NodeJS.ErrnoException) => { o.error = e.code ?? e.message; o.endedAt = performance.now(); resolve(o) })
      req.end(body)
    })
  }

  function get (port: number, p: string): Promise<{ status?: number, body?: string, error?: string }> {
    return new Promise((resolve) => {
      http.get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
        let b = ''
        res.on('data', (c) => { b += c })
        res.on('end', () => resolve({ status: res.statusCode, body: b }))
      }).on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }))
    })
  }

  t.test('SIGTERM under load: accepted requests complete, new ones are refused or 503, exit 0', async (t) => {
    const child = spawn(process.execPath, [SERVER], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: '0', WORKERS: '1', THREADS_PER_WORKER: '1', MODEL_PATH: MODEL_DIR,
        LOG_LEVEL: 'info', SHUTDOWN_DELAY_MS: String(DELAY_MS), SHUTDOWN_GRACE_MS: String(GRACE_MS), QUEUE_SIZE: '64', REQUEST_TIMEOUT_MS: '60000',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
    const lines = jsonLines(child.stdout!)
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    const waitFor = async <T>(fn: () => T | undefined, ms = 60_000): Promise<T> => {
      const end = Date.now() + ms
      for (;;) {
        const v = fn()
        if (v !== undefined) return v
        if (Date.now() > end) throw new Error('timed out waiting')
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    }
    const port = Number(await waitFor(() => lines.find((l) => /Server listening at/.test(l.msg))?.msg.match(/:(\d+)$/)?.[1]))
    await waitFor(() => lines.find((l) => l.msg === 'ready'))

    const golden = JSON.parse(readFileSync(path.join(MODEL_DIR, 'golden.json'), 'utf8'))
    const image = readFileSync(path.join(MODEL_DIR, golden.image))
    const { body, contentType } = multipartBody([{ name: 'image', value: image, filename: 'g.png', type: 'image/png' }, { name: 'expression', value: golden.expression }])

    let signalled = false
    let n = 0
    const outcomes: Outcome[] = []
    const loops = Array.from({ length: CLIENTS }, async (_, c) => {
      for (;;) {
        const o = await send(port, `load-${c}-${n++}`, body, contentType)
        outcomes.push(o)
        // After the signal, stop once the server no longer takes work.
        if (signalled && (o.error !== undefined || o.status === 503)) return
      }
    })
    // Let traffic flow until several requests completed, then signal with requests in flight.
    await waitFor(() => outcomes.filter((o) => o.status === 200).length >= 6 ? true : undefined)
    const signalAt = performance.now()
    child.kill('SIGTERM')
    signalled = true

    await waitFor(() => lines.find((l) => l.msg === 'shutting down'), 5000)
    const ready = await get(port, '/readyz')
    t.equal(ready.status, 503, '/readyz is 503 at once')
    t.match(JSON.parse(ready.body ?? '{}'), { status: 'shutting_down' })

    const code = await exited
    const exitMs = performance.now() - signalAt
    await Promise.all(loops)
    t.equal(code, 0, 'exit code 0')
    t.ok(exitMs < DELAY_MS + GRACE_MS, `exited ${Math.round(exitMs)} ms after SIGTERM (limit ${DELAY_MS + GRACE_MS})`)

    // "Accepted before the signal": the server logged the request before it logged the signal.
    const cut = lines.findIndex((l) => l.msg === 'shutting down')
    const acceptedBefore = new Set(lines.slice(0, cut).filter((l) => l.msg === 'incoming request').map((l) => l.reqId))
    let inflightAtSignal = 0
    for (const o of outcomes) {
      if (acceptedBefore.has(o.id)) {
        if ((o.endedAt ?? 0) > signalAt) inflightAtSignal++
        t.equal(o.status, 200, `${o.id} (accepted before the signal) answered 200`)
        const json = JSON.parse(o.body ?? '{}')
        t.ok(Array.isArray(json.results) && json.results.length === 1 && typeof json.results[0].mask?.png === 'string', `${o.id}: a complete answer`)
      } else if (o.error !== undefined) {
        t.match(o.error, /^(ECONNREFUSED|ECONNRESET|EPIPE|socket hang up)$/, `${o.id}: refused (${o.error})`)
      } else {
        t.equal(o.status, 503, `${o.id} (after the signal) answered 503`)
        t.equal(JSON.parse(o.body ?? '{}').error?.code, 'SEG_ERR_SHUTTING_DOWN')
      }
    }
    t.ok(inflightAtSignal >= 1, `${inflightAtSignal} accepted request(s) were still in flight at the signal`)
    t.ok(outcomes.some((o) => !acceptedBefore.has(o.id)), 'some requests came after the signal')
    t.comment(`requests: ${outcomes.length}; accepted before the signal: ${acceptedBefore.size}; in flight at the signal: ${inflightAtSignal}; after: ${outcomes.filter((o) => !acceptedBefore.has(o.id)).map((o) => o.error ?? o.status).join(',')}`)
  })
}
