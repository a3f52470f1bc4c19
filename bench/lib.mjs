// Helpers the bench scripts share: statistics, request bodies and images, starting a server.
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import path from 'node:path'
import sharp from 'sharp'

export const ROOT = path.resolve(new URL('..', import.meta.url).pathname)

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
export const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }
export const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))] }

export const freePort = () => new Promise((resolve, reject) => {
  const srv = createServer().listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)) })
  srv.on('error', reject)
})

/** Resident memory of a process (threads included), bytes. */
export function rss (pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : NaN
  } catch { return NaN }
}

const CLOCK_TICK_MS = 1000 / 100 // Linux's USER_HZ (getconf CLK_TCK) is 100 on every kernel the bench runs on

/** CPU time (user + system) of a process, all its threads, or of one thread (`tid`), in ms. */
export function cpuMs (pid, tid) {
  const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ') // fields from the 3rd on; comm may hold spaces
  return (Number(f[11]) + Number(f[12])) * CLOCK_TICK_MS // utime, stime (fields 14, 15)
}

// ---------------------------------------------------------------- images and request bodies
const BOUNDARY = '----vltbench7d1c'
export const CONTENT_TYPE = `multipart/form-data; boundary=${BOUNDARY}`

/** A multipart /segment body: the PNG as `image`, one `expression` field per expression. */
export function body (png, expressions) {
  const parts = [Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="image.png"\r\nContent-Type: image/png\r\n\r\n`), png, Buffer.from('\r\n')]
  for (const e of expressions) parts.push(Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="expression"\r\n\r\n${e}\r\n`))
  parts.push(Buffer.from(`--${BOUNDARY}--\r\n`))
  return Buffer.concat(parts)
}

/** `n` different PNGs of the model folder's golden scene (hue and brightness vary). */
export async function images (modelDir, n) {
  const golden = JSON.parse(readFileSync(path.join(modelDir, 'golden.json'), 'utf8'))
  const base = readFileSync(path.join(modelDir, golden.image))
  const out = []
  for (let i = 0; i < n; i++) out.push(await sharp(base).modulate({ hue: (i * 37) % 360, brightness: 0.85 + (i % 7) * 0.05 }).png().toBuffer())
  return { pngs: out, expression: golden.expression, meta: await sharp(base).metadata() }
}

// ---------------------------------------------------------------- servers
async function waitReady (url, child, timeoutMs) {
  const t0 = performance.now()
  while (performance.now() - t0 < timeoutMs) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode} before it was ready`)
    try {
      const res = await fetch(url)
      if (res.ok) return performance.now() - t0
    } catch {}
    await sleep(50)
  }
  throw new Error(`${url} not ready after ${timeoutMs} ms`)
}

/**
 * Spawn a server on a free loopback port and wait until `readyPath` answers 200.
 * `command(port)` gives [executable, arguments, spawn options]. Without one: the service
 * (dist/server.js, LOG_LEVEL warn) with `env` added to this process's environment.
 */
export async function startServer ({ command, env = {}, readyPath = '/readyz', stdio = ['ignore', 'ignore', 'inherit'], timeoutMs = 600_000 } = {}) {
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const t0 = performance.now()
  const [exe, argv, options] = command !== undefined
    ? command(port)
    : [process.execPath, [path.join(ROOT, 'dist/server.js')], { cwd: ROOT, env: { ...process.env, HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'warn', ...env } }]
  const child = spawn(exe, argv, { stdio, ...options })
  try {
    await waitReady(url + readyPath, child, timeoutMs)
  } catch (err) {
    child.kill('SIGTERM')
    throw err
  }
  const loadMs = performance.now() - t0
  return {
    url,
    loadMs,
    pid: child.pid,
    rss: () => rss(child.pid),
    async stop () {
      if (child.exitCode !== null) return
      child.kill('SIGTERM')
      await Promise.race([new Promise((resolve) => child.once('exit', resolve)), sleep(15_000)])
      if (child.exitCode === null) child.kill('SIGKILL')
    },
  }
}
