#!/usr/bin/env node
// The performance benchmark: the service against raw ONNX Runtime and against a plain Python
// server, side by side on this machine, printed as a markdown table with each target PASS/MISS.
//
//   npm run bench -- [--seconds 10] [--soak-minutes 1] [--model models/vlt-refshapes]
//                    [--paper /tmp/vlt-paper-model] [--no-paper] [--no-python] [--out results.md]
//                    [--env KEY=VALUE …]   (extra service environment; default: none, the defaults)
//
// Phases (never two at once, so they do not share the CPUs):
//   1. raw: bench/raw-ort.mjs in its own process — model.onnx at batch 1, 2, 4, 8 with one
//      intra-op thread and with ONNX Runtime's default, image_encoder and head alone;
//   2. the service (`node dist/server.js`, default configuration) over loopback HTTP with
//      autocannon at concurrency 1, 4, 16 — every request a different image, more images than
//      the feature cache holds, so every one pays the backbone — with /healthz probed from another
//      process while saturated; then K = 1, 4, 8 expressions in one request vs K requests; a
//      repeated image (cache hit) vs new ones; then a saturated soak sampling resident memory;
//   3. the Python baseline (bench/python_baseline, FastAPI + uvicorn) under the same loads;
//   4. the `paper` preset (untrained, exported by `python -m bench.paper_model` into --paper when
//      absent) served by the same code: load time, resident memory, p50 at concurrency 1.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import { body, CONTENT_TYPE, images, median, pct, ROOT, startServer } from './lib.mjs'

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    'raw-seconds': { type: 'string', default: '3' },
    'soak-minutes': { type: 'string', default: '1' },
    model: { type: 'string', default: 'models/vlt-refshapes' },
    paper: { type: 'string', default: path.join(os.tmpdir(), 'vlt-paper-model') },
    'no-paper': { type: 'boolean', default: false },
    'no-python': { type: 'boolean', default: false },
    python: { type: 'string', default: 'python' },
    samples: { type: 'string', default: '20' },
    env: { type: 'string', multiple: true, default: [] },
    out: { type: 'string' },
    json: { type: 'string' },
  },
})
/** --env KEY=VALUE (repeatable): extra environment for the service, e.g. --env WORKERS=1. */
const SERVICE_ENV = Object.fromEntries(args.env.map((kv) => { const i = kv.indexOf('='); return [kv.slice(0, i), kv.slice(i + 1)] }))
const SECONDS = Number(args.seconds)
const SOAK_S = Number(args['soak-minutes']) * 60
const SAMPLES = Number(args.samples)
const MODEL = path.resolve(ROOT, args.model)
const CONCURRENCY = [1, 4, 16]
const KS = [1, 4, 8]
const log = (...a) => console.error('[bench]', ...a)
const r1 = (v) => (v === undefined || v === null || Number.isNaN(v) ? '–' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2))
const EXPRESSIONS = ['the red circle', 'the square on the left', 'the biggest shape', 'the blue triangle', 'the small one at the top', 'the green square', 'the rightmost shape', 'the circle below the square']

// ---------------------------------------------------------------- servers
/** The service (dist/server.js) or the Python baseline (uvicorn), ready. */
const startKind = (kind, env = {}) => kind === 'service'
  ? startServer({ env })
  : startServer({
    readyPath: '/healthz',
    command: (port) => [args.python, ['-m', 'uvicorn', 'bench.python_baseline.app:app', '--host', '127.0.0.1', '--port', String(port), '--log-level', 'warning', '--no-access-log'], { cwd: ROOT, env: { ...process.env, ...env } }],
  })

// ---------------------------------------------------------------- load
/** autocannon over a cycle of request bodies. */
function load (url, { connections, seconds, bodies }) {
  let i = 0
  return new Promise((resolve, reject) => {
    autocannon({
      url: url + '/segment',
      connections,
      duration: seconds,
      timeout: 60,
      requests: [{ method: 'POST', headers: { 'content-type': CONTENT_TYPE }, setupRequest: (req) => ({ ...req, body: bodies[(i++) % bodies.length] }) }],
    }, (err, r) => {
      if (err) { reject(err); return }
      resolve({
        connections,
        ok: r['2xx'],
        errors: r.errors + r.timeouts + r.non2xx,
        rps: r['2xx'] / (r.duration || seconds),
        p50: r.latency.p50,
        p90: r.latency.p90,
        p99: r.latency.p99,
        mean: r.latency.average,
      })
    })
  })
}

/** /healthz latencies probed from a separate process (its own event loop) for `seconds`. */
function probeHealth (url, seconds) {
  const code = `
    const http = require('node:http'); const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const lat = []; const end = Date.now() + ${seconds * 1000}
    const one = () => new Promise((res) => { const t = performance.now(); http.get(${JSON.stringify(url + '/healthz')}, { agent }, (r) => { r.resume(); r.on('end', () => { lat.push(performance.now() - t); res() }) }).on('error', () => { lat.push(Infinity); res() }) })
    ;(async () => { while (Date.now() < end) { await one(); await new Promise((r) => setTimeout(r, 20)) } process.stdout.write(JSON.stringify(lat)); agent.destroy() })()`
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d) => { out += d })
    child.on('exit', () => { const lat = JSON.parse(out || '[]'); resolve({ n: lat.length, p50: pct(lat, 0.5), p99: pct(lat, 0.99), max: Math.max(...lat) }) })
  })
}

/** Sequential requests (concurrency 1), client-side latency in ms. */
async function post (url, b) {
  const t = performance.now()
  const res = await fetch(url + '/segment', { method: 'POST', headers: { 'content-type': CONTENT_TYPE }, body: b })
  const text = await res.text()
  if (!res.ok) throw new Error(`POST /segment ${res.status}: ${text.slice(0, 200)}`)
  return { ms: performance.now() - t, json: JSON.parse(text) }
}

/** A metric summed over its series (one per model and version; the bench serves one model). */
async function metric (url, name) {
  const text = await (await fetch(url + '/metrics')).text()
  const values = [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'gm'))].map((m) => Number(m[1]))
  return values.length > 0 ? values.reduce((a, b) => a + b, 0) : NaN
}

// ---------------------------------------------------------------- phases
function raw (model, threads, seconds, extra = []) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bench/raw-ort.mjs'), '--model', model, '--threads', String(threads), '--seconds', String(seconds), ...extra], { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 24 })
  if (r.status !== 0) throw new Error(`raw-ort failed: ${r.stderr}`)
  return JSON.parse(r.stdout.trim().split('\n').pop())
}

async function loads (server, bodies, label, { probe = false } = {}) {
  const out = []
  // Warm-up: every connection's first requests, so start-up costs do not land in the figures.
  await load(server.url, { connections: 4, seconds: Math.min(3, SECONDS), bodies })
  for (const c of CONCURRENCY) {
    log(`${label}: concurrency ${c}, ${SECONDS} s`)
    const health = probe && c === CONCURRENCY[CONCURRENCY.length - 1] ? probeHealth(server.url, Math.max(1, SECONDS - 1)) : undefined
    const r = await load(server.url, { connections: c, seconds: SECONDS, bodies })
    r.health = health !== undefined ? await health : undefined
    r.rss = server.rss()
    out.push(r)
  }
  return out
}

async function main () {
  if (!existsSync(path.join(ROOT, 'dist/server.js'))) throw new Error('dist/server.js is missing: run `npm run build` (npm run bench does)')
  const results = { machine: { cpu: os.cpus()[0]?.model ?? 'unknown', cpus: os.availableParallelism(), memGiB: os.totalmem() / 2 ** 30, node: process.version, platform: `${os.type()} ${os.release()}` }, args }
  const manifest = JSON.parse(readFileSync(path.join(MODEL, 'model.json'), 'utf8'))
  results.model = { name: manifest.name, version: manifest.version, preset: manifest.preset, inputSize: manifest.input.size }

  const { pngs, meta } = await images(MODEL, 400)
  const cold = pngs.map((p) => body(p, [EXPRESSIONS[0]]))
  results.image = { width: meta.width, height: meta.height, bytes: Math.round(pngs.reduce((a, p) => a + p.length, 0) / pngs.length) }

  // 1. raw ceiling
  log('raw ONNX Runtime')
  results.raw = [raw(MODEL, 1, args['raw-seconds']), raw(MODEL, 0, args['raw-seconds'])]

  // 2. the service, default configuration
  log('service: starting')
  const svc = await startKind('service', { MODEL_PATH: MODEL, ...SERVICE_ENV })
  results.service = { loadMs: svc.loadMs, rssReady: svc.rss() }
  try {
    results.service.loads = await loads(svc, cold, 'service', { probe: true })

    log('service: K expressions')
    let next = 0
    const fresh = () => pngs[(next++) % pngs.length]
    results.service.k = []
    for (const k of KS) {
      const exprs = EXPRESSIONS.slice(0, k)
      const one = []
      const sepCold = []
      const sepSame = []
      for (let i = 0; i < Math.max(5, Math.round(SAMPLES / 2)); i++) {
        one.push((await post(svc.url, body(fresh(), exprs))).ms)
        let total = 0
        for (const e of exprs) total += (await post(svc.url, body(fresh(), [e]))).ms
        sepCold.push(total)
        const img = fresh()
        total = 0
        for (const e of exprs) total += (await post(svc.url, body(img, [e]))).ms
        sepSame.push(total)
      }
      results.service.k.push({ k, one: median(one), separateCold: median(sepCold), separateSameImage: median(sepSame) })
    }

    log('service: cache hit vs cold')
    const hot = body(pngs[0], [EXPRESSIONS[1]])
    await post(svc.url, hot)
    const hitsBefore = await metric(svc.url, 'vlt_feature_cache_hits_total')
    const hit = []
    const miss = []
    for (let i = 0; i < SAMPLES; i++) {
      hit.push((await post(svc.url, hot)).ms)
      miss.push((await post(svc.url, body(fresh(), [EXPRESSIONS[1]]))).ms)
    }
    const hitsAfter = await metric(svc.url, 'vlt_feature_cache_hits_total')
    results.service.cache = { hit: median(hit), hitP90: pct(hit, 0.9), cold: median(miss), coldP90: pct(miss, 0.9), hitsCounted: hitsAfter - hitsBefore, samples: SAMPLES }

    log(`service: soak ${SOAK_S} s at concurrency 16`)
    const samples = []
    const sampler = setInterval(() => samples.push({ t: performance.now(), rss: svc.rss() }), 1000)
    const soak = await load(svc.url, { connections: 16, seconds: Math.max(2, Math.round(SOAK_S)), bodies: cold })
    clearInterval(sampler)
    const warm = samples.filter((s) => s.t >= samples[0].t + Math.min(30_000, SOAK_S * 1000 * 0.2))
    const ref = median(warm.slice(0, Math.max(1, Math.ceil(warm.length * 0.1))).map((s) => s.rss))
    const end = median(warm.slice(-Math.max(1, Math.ceil(warm.length * 0.1))).map((s) => s.rss))
    results.service.soak = { seconds: SOAK_S, rps: soak.rps, errors: soak.errors, p99: soak.p99, rssAfterWarmup: ref, rssEnd: end, rssMax: Math.max(...samples.map((s) => s.rss)), growth: end / ref - 1 }
    results.service.batchHistogram = { count: await metric(svc.url, 'vlt_inference_batch_size_count'), sum: await metric(svc.url, 'vlt_inference_batch_size_sum') }
  } finally {
    await svc.stop()
  }

  // 3. python baseline
  if (!args['no-python']) {
    const check = spawnSync(args.python, ['-c', 'import fastapi, uvicorn, multipart, onnxruntime, PIL, torch'], { cwd: ROOT, encoding: 'utf8' })
    if (check.status !== 0) {
      results.python = { skipped: 'pip install -r bench/python_baseline/requirements.txt' }
      log('python baseline skipped: ' + check.stderr.trim().split('\n').pop())
    } else {
      log('python baseline: starting')
      const py = await startKind('python', { MODEL_PATH: MODEL })
      results.python = { loadMs: py.loadMs, rssReady: py.rss() }
      try {
        results.python.loads = await loads(py, cold, 'python')
      } finally {
        await py.stop()
      }
    }
  }

  // 4. paper preset
  if (!args['no-paper']) {
    const dir = path.resolve(args.paper)
    if (!existsSync(path.join(dir, 'model.json'))) {
      log(`paper preset: exporting into ${dir} (python -m bench.paper_model)`)
      const r = spawnSync(args.python, ['-m', 'bench.paper_model', '--out', dir], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] })
      if (r.status !== 0) results.paper = { skipped: 'export failed' }
    }
    if (existsSync(path.join(dir, 'model.json'))) {
      log('paper preset: raw batch 1')
      const pm = JSON.parse(readFileSync(path.join(dir, 'model.json'), 'utf8'))
      const praw = raw(dir, 0, Math.max(2, Number(args['raw-seconds'])), ['--batches', '1', '--heads', '1'])
      log('paper preset: service')
      const ps = await startKind('service', { MODEL_PATH: dir, ...SERVICE_ENV })
      try {
        const lat = []
        const b = body(pngs[1], [EXPRESSIONS[0]])
        await post(ps.url, b)
        for (let i = 0; i < Math.max(5, Math.round(SAMPLES / 2)); i++) lat.push((await post(ps.url, body(fresh2(pngs, i), [EXPRESSIONS[0]]))).ms)
        results.paper = { name: pm.name, inputSize: pm.input.size, loadMs: ps.loadMs, rss: ps.rss(), p50: median(lat), rawB1: praw.whole[1].p50, rawLoadMs: praw.loadMs, onnxMB: onnxSize(dir, pm) }
      } finally {
        await ps.stop()
      }
    }
  }

  const md = report(results)
  process.stdout.write(md)
  if (args.out) writeFileSync(args.out, md)
  if (args.json) writeFileSync(args.json, JSON.stringify(results, null, 1))
}

const fresh2 = (pngs, i) => pngs[(pngs.length - 1 - i) % pngs.length]
const onnxSize = (dir, m) => Math.round(readFileSync(path.join(dir, m.onnx.file)).length / 1e5) / 10

// ---------------------------------------------------------------- report
function report (R) {
  const L = []
  const mb = (b) => (b / 2 ** 20).toFixed(0)
  const rawBest = (f) => R.raw.reduce((best, r) => { const v = f(r); return v !== undefined && (best === undefined || v < best.v) ? { v, r } : best }, undefined)
  const rawMax = (f) => R.raw.reduce((best, r) => { const v = f(r); return v !== undefined && (best === undefined || v > best.v) ? { v, r } : best }, undefined)
  const thr = (r) => (r.threads === 'ort-default' ? 'ORT default' : `${r.threads}`)

  L.push(`Machine: ${R.machine.cpu}, ${R.machine.cpus} CPUs, ${R.machine.memGiB.toFixed(0)} GiB, ${R.machine.platform}, Node ${R.machine.node}.`)
  L.push(`Model: ${R.model.name}@${R.model.version} (preset ${R.model.preset}, ${R.model.inputSize}×${R.model.inputSize} input); requests: ${R.image.width}×${R.image.height} PNG (≈${(R.image.bytes / 1024).toFixed(0)} KiB), one expression unless stated, a different image each time unless stated.`)
  L.push(`Load: ${R.args.seconds} s per concurrency, raw ${R.args['raw-seconds']} s per batch size, soak ${R.args['soak-minutes']} min. Service environment: ${R.args.env.length > 0 ? R.args.env.join(' ') : 'defaults'}.`)
  L.push('')
  L.push('### Raw ONNX Runtime (ceiling: one process, pre-made tensors)')
  L.push('')
  L.push('| intra-op threads | graph | batch | p50 ms | p99 ms | images/s |')
  L.push('|---|---|---:|---:|---:|---:|')
  for (const r of R.raw) {
    for (const [b, m] of Object.entries(r.whole)) L.push(`| ${thr(r)} | model.onnx | ${b} | ${r1(m.p50)} | ${r1(m.p99)} | ${r1(m.imagesPerSecond)} |`)
    if (r.encoder) L.push(`| ${thr(r)} | image_encoder | 1 | ${r1(r.encoder.p50)} | ${r1(r.encoder.p99)} | ${r1(r.encoder.perSecond)} |`)
    for (const [k, m] of Object.entries(r.head)) L.push(`| ${thr(r)} | head (K rows, one image) | ${k} | ${r1(m.p50)} | ${r1(m.p99)} | ${r1(m.perSecond)} |`)
  }
  L.push('')
  const S = R.service
  L.push(`### Service over HTTP (${R.args.env.length > 0 ? R.args.env.join(' ') : 'default configuration'}; ready in ${r1(S.loadMs)} ms, RSS ${mb(S.rssReady)} MiB when ready)`)
  L.push('')
  L.push('| server | concurrency | requests/s | p50 ms | p90 ms | p99 ms | errors | /healthz p99 ms | RSS MiB |')
  L.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|')
  const row = (name, l) => L.push(`| ${name} | ${l.connections} | ${r1(l.rps)} | ${r1(l.p50)} | ${r1(l.p90)} | ${r1(l.p99)} | ${l.errors} | ${l.health ? `${r1(l.health.p99)} (max ${r1(l.health.max)}, n=${l.health.n})` : '–'} | ${mb(l.rss)} |`)
  for (const l of S.loads) row('service', l)
  if (R.python?.loads) for (const l of R.python.loads) row('Python (FastAPI + uvicorn)', l)
  else if (R.python?.skipped) L.push(`| Python baseline | skipped: ${R.python.skipped} | | | | | | | |`)
  L.push('')
  L.push(`Batch-size histogram after the loads: ${S.batchHistogram.count} session.run for ${S.batchHistogram.sum} rows (mean ${(S.batchHistogram.sum / S.batchHistogram.count).toFixed(2)} rows per run).`)
  L.push('')
  L.push('### K expressions on one image (concurrency 1, median ms)')
  L.push('')
  L.push('| K | one request, K expressions | K requests, K new images | K requests, same image (cache) | raw: 1 backbone + K heads |')
  L.push('|---:|---:|---:|---:|---:|')
  const enc = rawBest((r) => r.encoder?.p50)
  const head1 = rawBest((r) => r.head?.[1]?.p50)
  const kBudget = (k) => enc.v + k * head1.v
  for (const k of S.k) L.push(`| ${k.k} | ${r1(k.one)} | ${r1(k.separateCold)} | ${r1(k.separateSameImage)} | ${r1(kBudget(k.k))} |`)
  L.push('')
  L.push(`### Feature cache (concurrency 1, ${S.cache.samples} requests each)`)
  L.push('')
  L.push('| request | p50 ms | p90 ms |')
  L.push('|---|---:|---:|')
  L.push(`| repeated image (cache hit; ${S.cache.hitsCounted} hits counted in /metrics) | ${r1(S.cache.hit)} | ${r1(S.cache.hitP90)} |`)
  L.push(`| new image (backbone) | ${r1(S.cache.cold)} | ${r1(S.cache.coldP90)} |`)
  L.push(`| raw head pass, batch 1 | ${r1(head1.v)} | |`)
  L.push('')
  L.push(`### Soak: ${r1(S.soak.seconds / 60)} min at concurrency 16`)
  L.push('')
  L.push(`${r1(S.soak.rps)} requests/s, ${S.soak.errors} errors, p99 ${r1(S.soak.p99)} ms; RSS after warm-up ${mb(S.soak.rssAfterWarmup)} MiB, at the end ${mb(S.soak.rssEnd)} MiB (${(S.soak.growth * 100).toFixed(1)} %), max ${mb(S.soak.rssMax)} MiB.`)
  L.push('')
  if (R.paper?.loadMs !== undefined) {
    L.push('### `paper` preset (untrained weights), same service code')
    L.push('')
    L.push('| model | input | model.onnx MB | load → ready ms | RSS MiB | p50 ms (concurrency 1) | raw batch 1 p50 ms |')
    L.push('|---|---:|---:|---:|---:|---:|---:|')
    L.push(`| ${R.paper.name} | ${R.paper.inputSize} | ${R.paper.onnxMB} | ${r1(R.paper.loadMs)} | ${mb(R.paper.rss)} | ${r1(R.paper.p50)} | ${r1(R.paper.rawB1)} |`)
    L.push('')
  } else if (R.paper?.skipped) {
    L.push(`paper preset: skipped (${R.paper.skipped})`)
    L.push('')
  }

  // Targets
  const T = []
  const target = (name, ok, detail) => T.push(`| ${name} | ${ok === undefined ? 'n/a' : ok ? 'PASS' : 'MISS'} | ${detail} |`)
  const rawB1 = rawBest((r) => r.whole[1]?.p50)
  const c1 = S.loads.find((l) => l.connections === 1)
  target('concurrency 1: p50 ≤ 1.15 × raw batch-1 + 5 ms', c1.p50 <= 1.15 * rawB1.v + 5, `${r1(c1.p50)} ms vs ${r1(1.15 * rawB1.v + 5)} ms (raw ${r1(rawB1.v)} ms, ${thr(rawB1.r)} threads; ratio ${(c1.p50 / rawB1.v).toFixed(2)})`)
  const bestIps = rawMax((r) => Math.max(...Object.values(r.whole).map((m) => m.imagesPerSecond)))
  const satRps = Math.max(...S.loads.map((l) => l.rps))
  target('saturated: requests/s ≥ 0.9 × best raw images/s', satRps >= 0.9 * bestIps.v, `${r1(satRps)} vs ${r1(bestIps.v)} images/s (ratio ${(satRps / bestIps.v).toFixed(2)})`)
  for (const k of S.k) target(`K = ${k.k} in one request ≤ 1.1 × (backbone + K heads)`, k.one <= 1.1 * kBudget(k.k), `${r1(k.one)} vs ${r1(kBudget(k.k))} ms (ratio ${(k.one / kBudget(k.k)).toFixed(2)})`)
  target('cache hit ≤ 1.1 × one head pass', S.cache.hit <= 1.1 * head1.v, `${r1(S.cache.hit)} vs ${r1(head1.v)} ms (ratio ${(S.cache.hit / head1.v).toFixed(2)})`)
  const sat = S.loads[S.loads.length - 1]
  target('/healthz p99 < 50 ms while saturated', sat.health.p99 < 50, `${r1(sat.health.p99)} ms at concurrency ${sat.connections}`)
  if (R.python?.loads) {
    for (const l of S.loads) {
      const p = R.python.loads.find((x) => x.connections === l.connections)
      target(`requests/s ≥ Python at concurrency ${l.connections}`, l.rps >= p.rps, `${r1(l.rps)} vs ${r1(p.rps)} (ratio ${(l.rps / p.rps).toFixed(2)})`)
    }
    const p16 = R.python.loads[R.python.loads.length - 1]
    target(`p99 < Python's at concurrency ${sat.connections}`, sat.p99 < p16.p99, `${r1(sat.p99)} vs ${r1(p16.p99)} ms`)
  } else target('faster than the Python baseline', undefined, 'not run')
  target('RSS growth ≤ 5 % over the soak (after warm-up)', S.soak.growth <= 0.05, `${(S.soak.growth * 100).toFixed(1)} % over ${r1(S.soak.seconds / 60)} min (${mb(S.soak.rssAfterWarmup)} → ${mb(S.soak.rssEnd)} MiB)`)
  L.push('### Targets')
  L.push('')
  L.push('| target | result | measured |')
  L.push('|---|---|---|')
  L.push(...T)
  L.push('')
  return L.join('\n') + '\n'
}

main().catch((err) => { console.error(err); process.exit(1) })
