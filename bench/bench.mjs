#!/usr/bin/env node
// The performance benchmark: the service against raw ONNX Runtime and against a plain Python
// server, side by side on this machine, printed as a markdown table with each target PASS/MISS.
//
//   npm run bench -- [--seconds 10] [--raw-seconds 3] [--rounds 3] [--soak-minutes 1]
//                    [--model models/vlt-refshapes] [--paper /tmp/vlt-paper-model] [--no-paper]
//                    [--no-python] [--out results.md] [--json results.json]
//                    [--env KEY=VALUE …]   (extra service environment; default: none, the defaults)
//
// The service and the Python baseline start once and stay up (idle between their phases). Then
// --rounds rounds, each A/B/A/B: (A) raw — bench/raw-ort.mjs in its own process: the whole network
// (model.onnx, or image_encoder then head when the folder ships only those) at batch 1, 2, 4, 8
// with one intra-op thread and with ONNX Runtime's default, image_encoder and head alone, and batch
// 1 with the service's own session settings (its intra-op threads per worker, no spinning: the
// core-ms of ONNX Runtime's work that the service's CPU per request is compared with); (B) the
// service over loopback HTTP with autocannon at concurrency 1 and 16 (every request a different
// image, more images than the feature cache holds, so every one pays the backbone; /healthz
// probed from another process while saturated), a repeated image (cache hit) vs new ones, and
// K = 1, 4, 8 expressions in one request; then the Python baseline (bench/python_baseline,
// FastAPI + uvicorn) at concurrency 1 and 16. Every ratio is computed within a round, from that
// round's raw figures (this machine's raw ceiling moves by up to 40 % between runs), and the
// targets use the median of the rounds' ratios. After the rounds: concurrency 4, K separate
// requests, a saturated soak sampling resident memory, and the `paper` preset (untrained,
// exported by `python -m bench.paper_model` into --paper when absent): load time, resident
// memory, p50 at concurrency 1. Phases never overlap.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import { loadConfig } from '../dist/config.js'
import { body, CONTENT_TYPE, cpuMs, images, median, pct, ROOT, startServer } from './lib.mjs'

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    'raw-seconds': { type: 'string', default: '3' },
    rounds: { type: 'string', default: '3' },
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
const ROUNDS = Math.max(1, Number(args.rounds))
/** The service's intra-op threads per worker (its configuration with --env applied). */
const SERVICE_THREADS = loadConfig({ ...process.env, ...SERVICE_ENV }).threadsPerWorker
const PAIRED_CONCURRENCY = [1, 16]
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
/** Where each server is in the cycle of request bodies: every load on a server continues from
 * where its last one stopped, so with more bodies than the feature cache holds none is a cache
 * hit. One cursor per server: another server's requests must not move it. */
const cursors = new Map()

/** autocannon over a cycle of request bodies. */
function load (url, { connections, seconds, bodies }) {
  let i = cursors.get(url) ?? 0
  return new Promise((resolve, reject) => {
    autocannon({
      url: url + '/segment',
      connections,
      duration: seconds,
      timeout: 60,
      requests: [{ method: 'POST', headers: { 'content-type': CONTENT_TYPE }, setupRequest: (req) => { const b = bodies[i % bodies.length]; i++; cursors.set(url, i); return { ...req, body: b } } }],
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

async function loads (server, bodies, label, concurrencies, { probe = false } = {}) {
  const out = []
  for (const c of concurrencies) {
    log(`${label}: concurrency ${c}, ${SECONDS} s`)
    const health = probe && c === 16 ? probeHealth(server.url, Math.max(1, SECONDS - 1)) : undefined
    const cpu0 = cpuMs(server.pid)
    const hits0 = await metric(server.url, 'vlt_feature_cache_hits_total')
    const r = await load(server.url, { connections: c, seconds: SECONDS, bodies })
    r.cpuPerRequest = (cpuMs(server.pid) - cpu0) / Math.max(1, r.ok) // core-ms, every thread of the server process
    r.cacheHits = await metric(server.url, 'vlt_feature_cache_hits_total') - hits0 // NaN for the Python baseline
    r.health = health !== undefined ? await health : undefined
    r.rss = server.rss()
    out.push(r)
  }
  return out
}

/** Warm-up: every connection's first requests, so start-up costs do not land in the figures. */
const warmUp = (server, bodies) => load(server.url, { connections: 4, seconds: Math.min(3, SECONDS), bodies })

/** The raw figures a round's ratios compare with (the best of the two thread settings). */
function rawFigures (raws) {
  const best = (f) => Math.min(...raws.map(f).filter((v) => v !== undefined))
  return {
    b1: best((r) => r.whole[1]?.p50),
    ips: Math.max(...raws.flatMap((r) => Object.values(r.whole).map((m) => m.imagesPerSecond))),
    encoder: best((r) => r.encoder?.p50),
    head1: best((r) => r.head?.[1]?.p50),
  }
}

async function main () {
  if (!existsSync(path.join(ROOT, 'dist/server.js'))) throw new Error('dist/server.js is missing: run `npm run build` (npm run bench does)')
  const results = { machine: { cpu: os.cpus()[0]?.model ?? 'unknown', cpus: os.availableParallelism(), memGiB: os.totalmem() / 2 ** 30, node: process.version, platform: `${os.type()} ${os.release()}` }, args }
  const manifest = JSON.parse(readFileSync(path.join(MODEL, 'model.json'), 'utf8'))
  results.model = { name: manifest.name, version: manifest.version, preset: manifest.preset, inputSize: manifest.input.size }

  // 400 images for the loads, more than the feature cache holds (190 with the tiny preset), and
  // 300 others for the sequential requests on "new" images, so none of those is a cache hit
  const { pngs: all, meta } = await images(MODEL, 700)
  const pngs = all.slice(0, 400)
  const others = all.slice(400, 699)
  const repeated = all[699] // the cache-hit image, in no other phase
  const cold = pngs.map((p) => body(p, [EXPRESSIONS[0]]))
  results.image = { width: meta.width, height: meta.height, bytes: Math.round(pngs.reduce((a, p) => a + p.length, 0) / pngs.length) }

  const fresh = (() => { let next = 0; return () => others[(next++) % others.length] })()
  const kRequest = async (url, k) => (await post(url, body(fresh(), EXPRESSIONS.slice(0, k)))).ms

  log('service: starting')
  const svc = await startKind('service', { MODEL_PATH: MODEL, ...SERVICE_ENV })
  results.service = { loadMs: svc.loadMs, rssReady: svc.rss() }
  let py
  try {
    if (!args['no-python']) {
      const check = spawnSync(args.python, ['-c', 'import fastapi, uvicorn, multipart, onnxruntime, PIL, torch'], { cwd: ROOT, encoding: 'utf8' })
      if (check.status !== 0) {
        results.python = { skipped: 'pip install -r bench/python_baseline/requirements.txt' }
        log('python baseline skipped: ' + check.stderr.trim().split('\n').pop())
      } else {
        log('python baseline: starting')
        py = await startKind('python', { MODEL_PATH: MODEL })
        results.python = { loadMs: py.loadMs, rssReady: py.rss() }
        await warmUp(py, cold)
      }
    }
    await warmUp(svc, cold)
    const hot = body(repeated, [EXPRESSIONS[1]])
    await post(svc.url, hot)

    // Rounds: raw, service, Python; the ratios within each round.
    results.rounds = []
    for (let round = 1; round <= ROUNDS; round++) {
      const R = { round }
      log(`round ${round}/${ROUNDS}: raw ONNX Runtime`)
      R.raw = [raw(MODEL, 1, args['raw-seconds']), raw(MODEL, 0, args['raw-seconds'])]
      R.rawService = raw(MODEL, SERVICE_THREADS, args['raw-seconds'], ['--spinning', '0', '--batches', '1', '--heads', ''])
      R.loads = await loads(svc, cold, `round ${round}: service`, PAIRED_CONCURRENCY, { probe: true })
      log(`round ${round}: service: cache hit vs new image, K expressions in one request`)
      const hitsBefore = await metric(svc.url, 'vlt_feature_cache_hits_total')
      const hit = []
      const miss = []
      for (let i = 0; i < SAMPLES; i++) {
        hit.push((await post(svc.url, hot)).ms)
        miss.push((await post(svc.url, body(fresh(), [EXPRESSIONS[1]]))).ms)
      }
      R.cache = { hit: median(hit), hitP90: pct(hit, 0.9), cold: median(miss), coldP90: pct(miss, 0.9), hitsCounted: await metric(svc.url, 'vlt_feature_cache_hits_total') - hitsBefore, samples: SAMPLES }
      R.k = {}
      for (const k of KS) {
        const ms = []
        for (let i = 0; i < Math.max(5, Math.round(SAMPLES / 2)); i++) ms.push(await kRequest(svc.url, k))
        R.k[k] = median(ms)
      }
      if (py !== undefined) R.python = await loads(py, cold, `round ${round}: python`, PAIRED_CONCURRENCY)
      R.ratios = roundRatios(R)
      results.rounds.push(R)
    }

    // Once, after the rounds: concurrency 4, K separate requests, the soak.
    results.service.loads4 = (await loads(svc, cold, 'service', [4]))[0]
    if (py !== undefined) results.python.loads4 = (await loads(py, cold, 'python', [4]))[0]
    log('service: K separate requests')
    results.service.k = []
    for (const k of KS) {
      const exprs = EXPRESSIONS.slice(0, k)
      const sepCold = []
      const sepSame = []
      for (let i = 0; i < Math.max(5, Math.round(SAMPLES / 2)); i++) {
        let total = 0
        for (const e of exprs) total += (await post(svc.url, body(fresh(), [e]))).ms
        sepCold.push(total)
        const img = fresh()
        total = 0
        for (const e of exprs) total += (await post(svc.url, body(img, [e]))).ms
        sepSame.push(total)
      }
      results.service.k.push({ k, separateCold: median(sepCold), separateSameImage: median(sepSame) })
    }

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
    if (py !== undefined) await py.stop()
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
/** MB of the graphs the service loads (the split pair when listed, else model.onnx). */
const onnxSize = (dir, m) => Math.round((m.split !== undefined ? [m.split.image_encoder, m.split.head] : [m.onnx]).reduce((a, g) => a + statSync(path.join(dir, g.file)).size, 0) / 1e5) / 10

/** The median of a few values (the mean of the middle two for an even count). */
function middle (xs) {
  const s = [...xs].sort((a, b) => a - b)
  const h = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[h] : (s[h - 1] + s[h]) / 2
}

/** One round's paired ratios: the service against that round's raw figures and Python's loads. */
function roundRatios (R) {
  const raw = rawFigures(R.raw)
  const svc = (c) => R.loads.find((l) => l.connections === c)
  const out = {
    raw,
    saturated: svc(16).rps / raw.ips,
    c1Excess: svc(1).p50 - raw.b1,
    c1: svc(1).p50 / raw.b1,
    ortCpu: R.rawService.whole[1].cpu,
    outsideOrt: svc(1).cpuPerRequest - R.rawService.whole[1].cpu,
    cacheHit: R.cache.hit / raw.head1,
    k: Object.fromEntries(KS.map((k) => [k, R.k[k] / (raw.encoder + k * raw.head1)])),
  }
  if (R.python !== undefined) {
    const p = (c) => R.python.find((l) => l.connections === c)
    out.python1 = svc(1).rps / p(1).rps
    out.python16 = svc(16).rps / p(16).rps
  }
  return out
}

// ---------------------------------------------------------------- report
function report (R) {
  const L = []
  const mb = (b) => (b / 2 ** 20).toFixed(0)
  const thr = (r) => (r.threads === 'ort-default' ? 'ORT default' : `${r.threads}`)
  const med = (xs) => middle(xs.filter((x) => x !== undefined && !Number.isNaN(x)))
  const rounds = R.rounds
  const S = R.service

  L.push(`Machine: ${R.machine.cpu}, ${R.machine.cpus} CPUs, ${R.machine.memGiB.toFixed(0)} GiB, ${R.machine.platform}, Node ${R.machine.node}.`)
  L.push(`Model: ${R.model.name}@${R.model.version} (preset ${R.model.preset}, ${R.model.inputSize}×${R.model.inputSize} input); requests: ${R.image.width}×${R.image.height} PNG (≈${(R.image.bytes / 1024).toFixed(0)} KiB), one expression unless stated, a different image each time unless stated.`)
  L.push(`Load: ${rounds.length} rounds (raw, service, Python in turn); ${R.args.seconds} s per concurrency, raw ${R.args['raw-seconds']} s per batch size, soak ${R.args['soak-minutes']} min. Service environment: ${R.args.env.length > 0 ? R.args.env.join(' ') : 'defaults'}.`)
  L.push('')
  L.push(`### Raw ONNX Runtime (ceiling: one process, pre-made tensors; median of the ${rounds.length} rounds)`)
  L.push('')
  L.push('| intra-op threads | graph | batch | p50 ms | p99 ms | images/s | core-ms per call |')
  L.push('|---|---|---:|---:|---:|---:|---:|')
  const cell = (i, f) => med(rounds.map((x) => f(x.raw[i])))
  rounds[0].raw.forEach((r0, i) => {
    for (const b of Object.keys(r0.whole)) L.push(`| ${thr(r0)} | ${r0.wholeGraph} | ${b} | ${r1(cell(i, (r) => r.whole[b].p50))} | ${r1(cell(i, (r) => r.whole[b].p99))} | ${r1(cell(i, (r) => r.whole[b].imagesPerSecond))} | ${r1(cell(i, (r) => r.whole[b].cpu))} |`)
    if (r0.encoder) L.push(`| ${thr(r0)} | image_encoder | 1 | ${r1(cell(i, (r) => r.encoder.p50))} | ${r1(cell(i, (r) => r.encoder.p99))} | ${r1(cell(i, (r) => r.encoder.perSecond))} | ${r1(cell(i, (r) => r.encoder.cpu))} |`)
    for (const k of Object.keys(r0.head)) L.push(`| ${thr(r0)} | head (K rows, one image) | ${k} | ${r1(cell(i, (r) => r.head[k].p50))} | ${r1(cell(i, (r) => r.head[k].p99))} | ${r1(cell(i, (r) => r.head[k].perSecond))} | ${r1(cell(i, (r) => r.head[k].cpu))} |`)
  })
  L.push('')
  L.push(`### Service and Python baseline over HTTP (${R.args.env.length > 0 ? R.args.env.join(' ') : 'default configuration'}; service ready in ${r1(S.loadMs)} ms, RSS ${mb(S.rssReady)} MiB when ready)`)
  L.push('')
  L.push('| server | round | concurrency | requests/s | p50 ms | p90 ms | p99 ms | errors | cache hits | core-ms per request | /healthz p99 ms | RSS MiB |')
  L.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
  const row = (name, round, l) => L.push(`| ${name} | ${round} | ${l.connections} | ${r1(l.rps)} | ${r1(l.p50)} | ${r1(l.p90)} | ${r1(l.p99)} | ${l.errors} | ${Number.isNaN(l.cacheHits) ? '–' : l.cacheHits} | ${r1(l.cpuPerRequest)} | ${l.health ? `${r1(l.health.p99)} (max ${r1(l.health.max)}, n=${l.health.n})` : '–'} | ${mb(l.rss)} |`)
  for (const x of rounds) for (const l of x.loads) row('service', x.round, l)
  row('service', 'after', S.loads4)
  for (const x of rounds) for (const l of x.python ?? []) row('Python (FastAPI + uvicorn)', x.round, l)
  if (R.python?.loads4) row('Python (FastAPI + uvicorn)', 'after', R.python.loads4)
  else if (R.python?.skipped) L.push(`| Python baseline | skipped: ${R.python.skipped} | | | | | | | | | | |`)
  L.push('')
  L.push(`Batch-size histogram after the loads: ${S.batchHistogram.count} session.run for ${S.batchHistogram.sum} rows (mean ${(S.batchHistogram.sum / S.batchHistogram.count).toFixed(2)} rows per run).`)
  L.push('')
  L.push('### K expressions on one image (concurrency 1, median ms)')
  L.push('')
  L.push('| K | one request, K expressions (median of rounds) | K requests, K new images | K requests, same image (cache) | raw: 1 backbone + K heads (median of rounds) |')
  L.push('|---:|---:|---:|---:|---:|')
  for (const k of S.k) L.push(`| ${k.k} | ${r1(med(rounds.map((x) => x.k[k.k])))} | ${r1(k.separateCold)} | ${r1(k.separateSameImage)} | ${r1(med(rounds.map((x) => x.ratios.raw.encoder + k.k * x.ratios.raw.head1)))} |`)
  L.push('')
  L.push(`### Feature cache (concurrency 1, ${SAMPLES} requests each, per round)`)
  L.push('')
  L.push('| round | cache hit p50 ms | p90 ms | hits counted in /metrics | new image p50 ms | p90 ms | raw head pass, batch 1, ms |')
  L.push('|---:|---:|---:|---:|---:|---:|---:|')
  for (const x of rounds) L.push(`| ${x.round} | ${r1(x.cache.hit)} | ${r1(x.cache.hitP90)} | ${x.cache.hitsCounted} | ${r1(x.cache.cold)} | ${r1(x.cache.coldP90)} | ${r1(x.ratios.raw.head1)} |`)
  L.push('')
  L.push(`### Soak: ${r1(S.soak.seconds / 60)} min at concurrency 16`)
  L.push('')
  L.push(`${r1(S.soak.rps)} requests/s, ${S.soak.errors} errors, p99 ${r1(S.soak.p99)} ms; RSS after warm-up ${mb(S.soak.rssAfterWarmup)} MiB, at the end ${mb(S.soak.rssEnd)} MiB (${(S.soak.growth * 100).toFixed(1)} %), max ${mb(S.soak.rssMax)} MiB.`)
  L.push('')
  if (R.paper?.loadMs !== undefined) {
    L.push('### `paper` preset (untrained weights), same service code')
    L.push('')
    L.push('| model | input | graphs MB | load → ready ms | RSS MiB | p50 ms (concurrency 1) | raw batch 1 p50 ms |')
    L.push('|---|---:|---:|---:|---:|---:|---:|')
    L.push(`| ${R.paper.name} | ${R.paper.inputSize} | ${R.paper.onnxMB} | ${r1(R.paper.loadMs)} | ${mb(R.paper.rss)} | ${r1(R.paper.p50)} | ${r1(R.paper.rawB1)} |`)
    L.push('')
  } else if (R.paper?.skipped) {
    L.push(`paper preset: skipped (${R.paper.skipped})`)
    L.push('')
  }

  // Paired ratios: each round against its own raw figures; the targets use the median.
  L.push('### Paired ratios (each round against the raw figures and the Python baseline of the same round)')
  L.push('')
  L.push(`| figure | target | ${rounds.map((x) => `round ${x.round}`).join(' | ')} | median | result |`)
  L.push(`|---|---|${rounds.map(() => '---:|').join('')}---:|---|`)
  const paired = (name, target, f, ok, digits = 2) => {
    const vs = rounds.map((x) => f(x.ratios))
    if (vs.some((v) => v === undefined || Number.isNaN(v))) { L.push(`| ${name} | ${target} | ${vs.map(() => '–').join(' | ')} | – | not run |`); return }
    const m = middle(vs)
    L.push(`| ${name} | ${target} | ${vs.map((v) => v.toFixed(digits)).join(' | ')} | ${m.toFixed(digits)} | ${ok === undefined ? '–' : ok(m) ? 'PASS' : 'MISS'} |`)
  }
  paired('service process core-ms per request, concurrency 1', '', (r) => r.outsideOrt + r.ortCpu, undefined, 1)
  paired(`raw batch 1 core-ms, the service's session settings (${SERVICE_THREADS} intra-op threads, no spinning)`, '', (r) => r.ortCpu, undefined, 1)
  paired('CPU per request outside ONNX Runtime, core-ms (the difference)', '≤ 4', (r) => r.outsideOrt, (m) => m <= 4, 1)
  paired('saturated: requests/s (concurrency 16) ÷ best raw images/s', '≥ 0.85', (r) => r.saturated, (m) => m >= 0.85)
  paired('concurrency 1: p50 − raw batch-1 p50, ms', '≤ 5', (r) => r.c1Excess, (m) => m <= 5, 1)
  paired('concurrency 1: p50 ÷ raw batch-1 p50', '', (r) => r.c1)
  paired('cache hit p50 ÷ raw head pass (batch 1)', '≤ 1.2', (r) => r.cacheHit, (m) => m <= 1.2)
  for (const k of KS) paired(`K = ${k} in one request ÷ (backbone + ${k} heads)`, k === 8 ? '≤ 1.1' : '', (r) => r.k[k], k === 8 ? (m) => m <= 1.1 : undefined)
  paired('service ÷ Python requests/s, concurrency 1', '≥ 1.25', (r) => r.python1, (m) => m >= 1.25)
  paired('service ÷ Python requests/s, concurrency 16', '≥ 1.25', (r) => r.python16, (m) => m >= 1.25)
  L.push('')

  const T = []
  const target = (name, ok, detail) => T.push(`| ${name} | ${ok === undefined ? 'n/a' : ok ? 'PASS' : 'MISS'} | ${detail} |`)
  const health = Math.max(...rounds.map((x) => x.loads.find((l) => l.connections === 16).health.p99))
  target('/healthz p99 < 50 ms while saturated (worst round)', health < 50, `${r1(health)} ms at concurrency 16`)
  if (R.python?.loads4) {
    const s16 = med(rounds.map((x) => x.loads.find((l) => l.connections === 16).p99))
    const p16 = med(rounds.map((x) => x.python.find((l) => l.connections === 16).p99))
    target('p99 < Python\'s at concurrency 16 (median of rounds)', s16 < p16, `${r1(s16)} vs ${r1(p16)} ms`)
  } else target('faster than the Python baseline', undefined, 'not run')
  target('RSS growth ≤ 5 % over the soak (after warm-up)', S.soak.growth <= 0.05, `${(S.soak.growth * 100).toFixed(1)} % over ${r1(S.soak.seconds / 60)} min (${mb(S.soak.rssAfterWarmup)} → ${mb(S.soak.rssEnd)} MiB)`)
  L.push('### Other targets')
  L.push('')
  L.push('| target | result | measured |')
  L.push('|---|---|---|')
  L.push(...T)
  L.push('')
  return L.join('\n') + '\n'
}

main().catch((err) => { console.error(err); process.exit(1) })
