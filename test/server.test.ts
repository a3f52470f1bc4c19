/**
 * The process: `node dist/server.js` (what `npm start` runs after building) — configuration
 * errors, start-up refusal, and SIGTERM with a request in flight → that request finishes, exit 0.
 */
import t from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { form, jsonLines } from './helper.js'

const ROOT = path.resolve(new URL('..', import.meta.url).pathname)
const SERVER = path.join(ROOT, 'dist', 'server.js')
const MODEL_DIR = path.join(ROOT, 'models', 'vlt-refshapes')

if (!existsSync(SERVER)) {
  // `npm test` builds first; a bare `tap` run may not have.
  const r = spawnSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(ROOT, 'tsconfig.build.json')], { stdio: 'inherit' })
  if (r.status !== 0) throw new Error('build failed')
}

interface Running { child: ChildProcess, lines: any[], stderr: string[], exited: Promise<number | null> }

function start (env: Record<string, string>): Running {
  const child = spawn(process.execPath, [SERVER], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: '0', WORKERS: '1', THREADS_PER_WORKER: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines = jsonLines(child.stdout!)
  const stderr: string[] = []
  child.stderr!.on('data', (c: Buffer) => stderr.push(c.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  return { child, lines, stderr, exited }
}

async function waitFor<T> (fn: () => T | undefined, ms = 20_000): Promise<T> {
  const until = Date.now() + ms
  for (;;) {
    const v = fn()
    if (v !== undefined) return v
    if (Date.now() > until) throw new Error('timed out waiting')
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

t.test('EXPECTED FAILURE - an invalid variable stops the server, naming it', async (t) => {
  const s = start({ PORT: 'eighty' })
  t.equal(await s.exited, 2)
  t.match(s.stderr.join(''), /configuration error: Invalid environment variable PORT="eighty"/)
})

if (!existsSync(path.join(MODEL_DIR, 'model.onnx'))) {
  t.pass('skipped: no model folder')
} else {
  t.test('EXPECTED FAILURE - a model.onnx that does not match model.json: exit 1', async (t) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vlt-model-'))
    for (const f of ['model.onnx', 'vocab.txt']) symlinkSync(path.join(MODEL_DIR, f), path.join(dir, f))
    const m = JSON.parse(readFileSync(path.join(MODEL_DIR, 'model.json'), 'utf8'))
    m.onnx.sha256 = '0'.repeat(64)
    writeFileSync(path.join(dir, 'model.json'), JSON.stringify(m))
    const s = start({ MODEL_PATH: dir })
    t.equal(await s.exited, 1)
    t.ok(s.lines.some((l) => l.level === 60 && /sha256 .* does not match model.json/.test(l.err?.message ?? '')), 'fatal log names the mismatch')
  })

  t.test('SIGTERM: the request in flight finishes, then exit 0', async (t) => {
    const s = start({ MODEL_PATH: MODEL_DIR, LOG_LEVEL: 'info' })
    t.teardown(() => { if (s.child.exitCode === null) s.child.kill('SIGKILL') })
    const address = await waitFor(() => s.lines.find((l) => /Server listening at/.test(l.msg))?.msg.match(/http:\/\/[\d.:]+/)?.[0] as string | undefined)
    await waitFor(() => s.lines.find((l) => l.msg === 'ready'))
    t.equal((await fetch(`${address}/readyz`)).status, 200)

    const golden = JSON.parse(readFileSync(path.join(MODEL_DIR, 'golden.json'), 'utf8'))
    const image = readFileSync(path.join(MODEL_DIR, golden.image))
    const inflight = fetch(`${address}/segment`, { method: 'POST', body: form({ image, expression: Array(8).fill(golden.expression) }) })
    await waitFor(() => s.lines.find((l) => l.msg === 'incoming request' && l.req?.url === '/segment'))
    s.child.kill('SIGTERM')
    const res = await inflight
    t.equal(res.status, 200, 'accepted request answered')
    t.equal(((await res.json()) as { results: unknown[] }).results.length, 8)
    t.equal(await s.exited, 0)
    t.ok(s.lines.some((l) => l.msg === 'shutting down' && l.signal === 'SIGTERM'))
  })
}
