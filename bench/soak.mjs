#!/usr/bin/env node
/**
 * Soak test: starts the real server (node dist/server.js, the real model), drives mixed valid
 * and invalid traffic at a fixed concurrency on loopback for N minutes, and reports requests by
 * status and error code, unexpected 5xx (anything but the designed 503/504; must be 0), client
 * errors, latency percentiles of the valid requests, and the server's resident memory and open
 * file descriptors at start, middle and end (from /proc/<pid>).
 *
 *   npm run soak -- --minutes 10 [--concurrency 8] [--workers 0] [--model models/vlt-refshapes] [--json out.json]
 *
 * Exits 1 when there was an unexpected 5xx or a request failed at the socket.
 */
import { spawn } from 'node:child_process'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { deflateSync } from 'node:zlib'

const ROOT = path.resolve(new URL('..', import.meta.url).pathname)

function args () {
  const a = { minutes: 1, concurrency: 8, workers: 0, model: path.join(ROOT, 'models', 'vlt-refshapes'), json: undefined }
  const argv = process.argv.slice(2)
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, '')
    const v = argv[i + 1]
    if (!(k in a)) throw new Error(`unknown option --${k}`)
    a[k] = k === 'model' || k === 'json' ? v : Number(v)
    i++
  }
  return a
}
const opts = args()

// ---------------------------------------------------------------- traffic

function multipart (parts, boundary = '----soak-boundary') {
  const chunks = []
  for (const p of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"`
    if (p.filename !== undefined) head += `; filename="${p.filename}"`
    head += '\r\n'
    if (p.type !== undefined) head += `Content-Type: ${p.type}\r\n`
    chunks.push(Buffer.from(head + '\r\n'), Buffer.isBuffer(p.value) ? p.value : Buffer.from(p.value), Buffer.from('\r\n'))
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`))
  return { body: Buffer.concat(chunks), type: `multipart/form-data; boundary=${boundary}` }
}

function crc32 (buf) {
  let c = 0xffffffff
  for (const b of buf) {
    c ^= b
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
  }
  return (c ^ 0xffffffff) >>> 0
}
function chunk (type, data) {
  const len = Buffer.alloc(4); len.writeUInt32BE(data.length)
  const td = Buffer.concat([Buffer.from(type), data])
  const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(td))
  return Buffer.concat([len, td, crc])
}
function pngBomb () {
  const ihdr = Buffer.alloc(13); ihdr.writeUInt32BE(60000, 0); ihdr.writeUInt32BE(60000, 4); ihdr[8] = 8; ihdr[9] = 2
  return Buffer.concat([Buffer.from('\x89PNG\r\n\x1a\n', 'latin1'), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(Buffer.alloc(1 << 20))), chunk('IEND', Buffer.alloc(0))])
}

function trafficMix (model) {
  const golden = JSON.parse(readFileSync(path.join(model, 'golden.json'), 'utf8'))
  const image = readFileSync(path.join(model, golden.image))
  const img = { name: 'image', value: image, filename: 'g.png', type: 'image/png' }
  const expr = (value) => ({ name: 'expression', value })
  const mp = (parts) => { const { body, type } = multipart(parts); return { body, type } }
  const good = mp([img, expr(golden.expression)])
  return [
    // [name, weight, { body, type }]
    ['valid, one expression', 40, good],
    ['valid, three expressions', 10, mp([img, expr(golden.expression), expr('the big red circle'), expr('the shape on the left')])],
    ['valid, image/png answer', 5, { ...good, accept: 'image/png' }],
    ['truncated PNG', 5, mp([{ ...img, value: image.subarray(0, image.length >> 1) }, expr('the star')])],
    ['text file as image', 5, mp([{ ...img, value: Buffer.from('not a picture\n'.repeat(20)), filename: 'a.txt' }, expr('the star')])],
    ['PNG bomb 60000x60000', 3, mp([{ ...img, value: pngBomb() }, expr('the star')])],
    ['SVG', 3, mp([{ ...img, value: Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"><image href="http://192.0.2.1/x.png"/></svg>') }, expr('the star')])],
    ['empty file', 3, mp([{ ...img, value: Buffer.alloc(0) }, expr('the star')])],
    ['no known words', 5, mp([img, expr('zxqv blorp')])],
    ['10 000-char expression', 3, mp([img, expr('the '.repeat(2500))])],
    ['missing image', 3, mp([expr('the star')])],
    ['unknown field', 3, mp([img, expr('the star'), { name: 'colour', value: 'red' }])],
    ['unterminated multipart', 4, { body: good.body.subarray(0, good.body.length - 100), type: good.type }],
    ['JSON body', 3, { body: Buffer.from('{"expression":"the star"}'), type: 'application/json' }],
    ['random bytes', 3, mp([{ ...img, value: Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 2654435761) >>> 24)) }, expr('the star')])],
  ]
}

// ---------------------------------------------------------------- process

function procStats (pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN)
    const threads = Number(/Threads:\s+(\d+)/.exec(status)?.[1] ?? NaN)
    const fds = readdirSync(`/proc/${pid}/fd`).length
    return { rssMiB: Math.round(rssKb / 102.4) / 10, fds, threads }
  } catch {
    return { rssMiB: NaN, fds: NaN, threads: NaN }
  }
}

async function freePort () {
  const srv = net.createServer()
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const { port } = srv.address()
  await new Promise((resolve) => srv.close(resolve))
  return port
}

async function startServer () {
  const port = await freePort()
  const child = spawn(process.execPath, [path.join(ROOT, 'dist', 'server.js')], {
    cwd: ROOT,
    env: { ...process.env, HOST: '127.0.0.1', PORT: String(port), MODEL_PATH: opts.model, LOG_LEVEL: 'warn', ...(opts.workers > 0 ? { WORKERS: String(opts.workers) } : {}) },
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  child.on('exit', (code) => { if (!stopping) { console.error(`soak: the server exited unexpectedly (code ${code})`); process.exit(1) } })
  return { child, port }
}
let stopping = false

function request (agent, port, method, p, body, type, accept) {
  return new Promise((resolve) => {
    const t0 = performance.now()
    const headers = { accept: accept ?? 'application/json' }
    if (body !== undefined) { headers['content-type'] = type; headers['content-length'] = body.length }
    const req = http.request({ host: '127.0.0.1', port, method, path: p, agent, headers }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        let code
        if (res.statusCode >= 400) { try { code = JSON.parse(text).error?.code } catch { code = 'NOT_JSON' } }
        resolve({ status: res.statusCode, code, ms: performance.now() - t0 })
      })
      res.on('error', (e) => resolve({ error: e.code ?? e.message, ms: performance.now() - t0 }))
    })
    req.on('error', (e) => resolve({ error: e.code ?? e.message, ms: performance.now() - t0 }))
    req.end(body)
  })
}

async function waitReady (port) {
  for (let i = 0; i < 600; i++) {
    const r = await request(undefined, port, 'GET', '/readyz')
    if (r.status === 200) return
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  throw new Error('server not ready after 120 s')
}

const pct = (xs, p) => { if (xs.length === 0) return NaN; const s = [...xs].sort((a, b) => a - b); return Math.round(s[Math.min(s.length - 1, Math.floor(p * s.length))]) }

// ---------------------------------------------------------------- main

const mix = trafficMix(opts.model)
const totalWeight = mix.reduce((n, m) => n + m[1], 0)
let seed = 12345
const rnd = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff }
const pick = () => { let r = rnd() * totalWeight; for (const m of mix) { r -= m[1]; if (r <= 0) return m } return mix[0] }

const { child, port } = await startServer()
await waitReady(port)
const startedAt = new Date()
const durationMs = opts.minutes * 60_000
const samples = [{ at: 'start', t: 0, ...procStats(child.pid) }]
console.log(`soak: ${opts.minutes} min, concurrency ${opts.concurrency}, server pid ${child.pid} on :${port}, ${os.cpus().length} CPUs, node ${process.version}`)

const byStatus = new Map()
const byCase = new Map()
const validLatency = []
let unexpected5xx = 0
let socketErrors = 0
let total = 0
const agent = new http.Agent({ keepAlive: true, maxSockets: opts.concurrency })
const t0 = performance.now()
let midTaken = false
const sampler = setInterval(() => {
  const t = performance.now() - t0
  if (!midTaken && t >= durationMs / 2) { midTaken = true; samples.push({ at: 'middle', t: Math.round(t / 1000), ...procStats(child.pid) }) }
}, 250)

await Promise.all(Array.from({ length: opts.concurrency }, async () => {
  while (performance.now() - t0 < durationMs) {
    const [name, , req] = pick()
    const r = await request(agent, port, 'POST', '/segment', req.body, req.type, req.accept)
    total++
    const key = r.error !== undefined ? `socket error ${r.error}` : `${r.status}${r.code ? ' ' + r.code : ''}`
    byStatus.set(key, (byStatus.get(key) ?? 0) + 1)
    const c = byCase.get(name) ?? new Map()
    c.set(key, (c.get(key) ?? 0) + 1)
    byCase.set(name, c)
    if (r.error !== undefined) socketErrors++
    else if (r.status >= 500 && r.status !== 503 && r.status !== 504) unexpected5xx++
    if (name.startsWith('valid') && r.status === 200) validLatency.push(r.ms)
  }
}))
clearInterval(sampler)
const elapsedS = (performance.now() - t0) / 1000
agent.destroy()
await new Promise((resolve) => setTimeout(resolve, 500))
samples.push({ at: 'end', t: Math.round(elapsedS), ...procStats(child.pid) })
const health = await request(undefined, port, 'GET', '/healthz')
const ready = await request(undefined, port, 'GET', '/readyz')

stopping = true
child.kill('SIGTERM')
const exitCode = await new Promise((resolve) => child.on('exit', (code) => resolve(code)))

const report = {
  command: `npm run soak -- ${process.argv.slice(2).join(' ')}`.trim(),
  date: startedAt.toISOString(),
  host: { cpus: os.cpus().length, node: process.version, loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100) },
  durationS: Math.round(elapsedS),
  concurrency: opts.concurrency,
  requests: total,
  requestsPerSecond: Math.round((total / elapsedS) * 10) / 10,
  byStatus: Object.fromEntries([...byStatus].sort()),
  unexpected5xx,
  socketErrors,
  validLatencyMs: { count: validLatency.length, p50: pct(validLatency, 0.5), p95: pct(validLatency, 0.95), p99: pct(validLatency, 0.99), max: pct(validLatency, 1) },
  server: samples,
  afterwards: { healthz: health.status, readyz: ready.status, exitCodeOnSigterm: exitCode },
  byCase: Object.fromEntries([...byCase].map(([k, v]) => [k, Object.fromEntries(v)])),
}
console.log(JSON.stringify(report, null, 2))
if (opts.json !== undefined) writeFileSync(opts.json, JSON.stringify(report, null, 2) + '\n')
const ok = unexpected5xx === 0 && socketErrors === 0 && health.status === 200 && ready.status === 200 && exitCode === 0
console.log(ok ? 'soak: PASS' : 'soak: FAIL')
process.exit(ok ? 0 : 1)
