/**
 * The process: `node dist/server.js` (what `npm start` runs after building) — configuration
 * errors, start-up refusal, SIGTERM with a request in flight → that request finishes, exit 0, and
 * SIGHUP with a model repository → a new version rolls in, one failing its golden case is refused.
 */
import t from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
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

if (!existsSync(path.join(MODEL_DIR, 'model.json'))) {
  t.pass('skipped: no model folder')
} else {
  t.test('EXPECTED FAILURE - a graph file that does not match model.json: exit 1', async (t) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vlt-model-'))
    const m = JSON.parse(readFileSync(path.join(MODEL_DIR, 'model.json'), 'utf8'))
    // every file of the folder is there; the first graph's recorded sha256 is wrong (model.onnx,
    // or image_encoder.onnx in a split-only folder)
    for (const f of readdirSync(MODEL_DIR)) if (f !== 'model.json') symlinkSync(path.join(MODEL_DIR, f), path.join(dir, f))
    const graph = m.onnx ?? m.split.image_encoder
    graph.sha256 = '0'.repeat(64)
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

  /** The default model's files as `root/<name>/<version>/` (links; model.json and golden.json rewritten). */
  const modelVersion = (root: string, version: string, golden?: (g: any) => void): void => {
    const dir = path.join(root, 'vlt-refshapes', version)
    mkdirSync(dir, { recursive: true })
    for (const f of readdirSync(MODEL_DIR)) if (f !== 'model.json' && f !== 'golden.json') symlinkSync(path.join(MODEL_DIR, f), path.join(dir, f))
    const m = JSON.parse(readFileSync(path.join(MODEL_DIR, 'model.json'), 'utf8'))
    writeFileSync(path.join(dir, 'model.json'), JSON.stringify({ ...m, version }))
    const g = JSON.parse(readFileSync(path.join(MODEL_DIR, 'golden.json'), 'utf8'))
    golden?.(g)
    writeFileSync(path.join(dir, 'golden.json'), JSON.stringify(g))
  }

  t.test('SIGHUP: a version failing its golden case is refused (the old one keeps serving); a good one rolls in', async (t) => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'vlt-repo-'))
    modelVersion(root, '1.0.0')
    const s = start({ MODELS_DIR: root, LOG_LEVEL: 'info' })
    t.teardown(() => { if (s.child.exitCode === null) s.child.kill('SIGKILL') })
    const address = await waitFor(() => s.lines.find((l) => /Server listening at/.test(l.msg))?.msg.match(/http:\/\/[\d.:]+/)?.[0] as string | undefined)
    await waitFor(() => s.lines.find((l) => l.msg === 'ready'), 120_000)
    const golden = JSON.parse(readFileSync(path.join(MODEL_DIR, 'golden.json'), 'utf8'))
    const image = readFileSync(path.join(MODEL_DIR, golden.image))
    const served = async (): Promise<string | null> => {
      const res = await fetch(`${address}/segment`, { method: 'POST', body: form({ image, expression: golden.expression }) })
      t.equal(res.status, 200)
      return res.headers.get('x-model')
    }
    t.equal(await served(), 'vlt-refshapes@1.0.0')

    // The golden case's confidences moved by 0.5: every worker of 2.0.0 fails it.
    modelVersion(root, '2.0.0', (g) => { g.outputs.query_confidence.data = g.outputs.query_confidence.data.map((row: number[]) => row.map((v) => v + 0.5)) })
    s.child.kill('SIGHUP')
    const rejected = await waitFor(() => s.lines.find((l) => l.msg === 'model version rejected; the previous version keeps serving'), 120_000)
    t.match(rejected, { model: 'vlt-refshapes', version: '2.0.0', keeps: '1.0.0', reason: /golden case mismatch/ })
    t.equal(await served(), 'vlt-refshapes@1.0.0', 'the previous version keeps serving')
    t.equal((await fetch(`${address}/readyz`)).status, 200)
    const metrics = await (await fetch(`${address}/metrics`)).text()
    t.match(metrics, 'vlt_model_reloads_total{model="vlt-refshapes",version="2.0.0",result="rejected"} 1')

    modelVersion(root, '2.1.0')
    s.child.kill('SIGHUP')
    await waitFor(() => s.lines.find((l) => l.msg === 'model version serving' && l.version === '2.1.0'), 120_000)
    t.equal(await served(), 'vlt-refshapes@2.1.0')
    await waitFor(() => s.lines.find((l) => l.msg === 'model version closed' && l.version === '1.0.0'), 60_000)
    const models = await (await fetch(`${address}/models`)).json() as any
    t.match(models.models, [{ name: 'vlt-refshapes', serving: { version: '2.1.0', state: 'ready' }, draining: [] }])
    s.child.kill('SIGTERM')
    t.equal(await s.exited, 0, 'SIGHUP did not stop the process; SIGTERM does, with exit 0')
  })
}
