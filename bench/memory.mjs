// What a maximum-size request holds, measured, next to what the service estimates for it from
// the image's header; then a burst of such uploads under a memory budget on the bare process.
//
//   npm run bench:memory -- [--images DIR] [--runs 3] [--burst 16] [--budget-mb 1536] [--json out.json]
//
// Images: DIR, or bench/large-images.mjs's set written to a temporary folder. Per-request peak:
// for each image and run, a fresh service (dist/server.js, the real model, 2 workers × 2 threads)
// answers one small request (the model's golden image: the sessions' memory for a batch of one is
// then in place), its peak resident size is reset (`echo 5 > /proc/PID/clear_refs`, Linux), it is
// sent the image, and its peak (VmHWM) less its resident size before is that request's peak,
// worker threads included. A fresh process each time, because memory a process freed is reused
// without showing as growth. The largest of --runs is reported. Burst: a second server with MEMORY_BUDGET_MB=--budget-mb gets --burst uploads at once
// (bench/burst.mjs), its peak resident size and the budget's figures from /metrics.
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { burst } from './burst.mjs'
import { makeLargeImages } from './large-images.mjs'
import { ROOT, startServer } from './lib.mjs'
import { decodeCost, readHeader } from '../dist/image/preprocess.js'
import { maskCost } from '../dist/image/png.js'
import { loadModelFolder } from '../dist/model/manifest.js'

const { values } = parseArgs({
  options: {
    images: { type: 'string' },
    runs: { type: 'string', default: '3' },
    burst: { type: 'string', default: '16' },
    'budget-mb': { type: 'string', default: '1536' },
    json: { type: 'string' },
  },
})
const MiB = 1024 * 1024
const mib = (b) => (b / MiB).toFixed(1)
const status = (pid) => readFileSync(`/proc/${pid}/status`, 'utf8')
const kB = (pid, field) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status(pid))[1]) * 1024
const resetPeak = (pid) => writeFileSync(`/proc/${pid}/clear_refs`, '5')

const dir = values.images ?? mkdtempSync(path.join(tmpdir(), 'vlt-large-'))
if (values.images === undefined) await makeLargeImages(dir)
const files = readdirSync(dir).sort().map((name) => ({ name, data: readFileSync(path.join(dir, name)) }))
const MODEL_DIR = path.join(ROOT, 'models/vlt-refshapes')
const { manifest } = await loadModelFolder(MODEL_DIR)
const golden = JSON.parse(readFileSync(path.join(MODEL_DIR, 'golden.json'), 'utf8'))
const small = { name: 'golden.png', data: readFileSync(path.join(MODEL_DIR, golden.image)) }
const EXPRESSION = 'the large circle'

const BOUNDARY = '----vltmemory'
const body = (f) => Buffer.concat([
  Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="${f.name}"\r\n\r\n`), f.data,
  Buffer.from(`\r\n--${BOUNDARY}\r\nContent-Disposition: form-data; name="expression"\r\n\r\n${EXPRESSION}\r\n--${BOUNDARY}--\r\n`),
])
async function post (url, f) {
  const res = await fetch(`${url}/segment`, { method: 'POST', headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, accept: 'image/png' }, body: body(f) })
  await res.arrayBuffer()
  return res.status
}

const env = { WORKERS: '2', THREADS_PER_WORKER: '2', LOG_LEVEL: 'warn' }
const perRequest = []
for (const f of files) {
  const header = await readHeader(f.data, { maxPixels: 40_000_000 })
  const estimate = f.data.length + decodeCost(header, manifest.input) + maskCost(header.width, header.height, 1)
  let peak = 0
  let ms = 0
  const codes = []
  for (let i = 0; i < Number(values.runs); i++) {
    const server = await startServer({ env: { ...env, MEMORY_BUDGET_MB: '0' } })
    try {
      await post(server.url, small)
      const before = kB(server.pid, 'VmRSS')
      resetPeak(server.pid)
      const t0 = performance.now()
      codes.push(await post(server.url, f))
      ms = Math.max(ms, performance.now() - t0)
      peak = Math.max(peak, kB(server.pid, 'VmHWM') - before)
    } finally {
      await server.stop()
    }
  }
  perRequest.push({ file: f.name, bytes: f.data.length, format: header.format, size: `${header.width}×${header.height}`, pages: header.pages, progressive: header.progressive, statuses: codes, estimateBytes: estimate, peakBytes: peak, maxMs: Math.round(ms) })
}

console.log(`Per-request peak (a fresh process per run, after one small request; the largest of ${values.runs} runs; 2 workers × 2 threads):\n`)
console.log('| image | upload | pixels | estimate (upload + decode + mask) | measured peak | estimate / peak | answer |')
console.log('|---|---:|---:|---:|---:|---:|---|')
for (const r of perRequest) {
  console.log(`| ${r.file} (${r.format}${r.pages > 1 ? `, ${r.pages} pages` : ''}${r.progressive ? ', progressive' : ''}) | ${mib(r.bytes)} MiB | ${r.size} | ${mib(r.estimateBytes)} MiB | ${mib(r.peakBytes)} MiB | ${(r.estimateBytes / r.peakBytes).toFixed(2)} | ${[...new Set(r.statuses)].join(', ')} in ≤ ${r.maxMs} ms |`)
}

let burstFigures
{
  const server = await startServer({ env: { ...env, MEMORY_BUDGET_MB: values['budget-mb'] } })
  try {
    const idle = kB(server.pid, 'VmRSS')
    resetPeak(server.pid)
    const { figures, failures } = await burst({ url: server.url, files, concurrency: Number(values.burst), timeoutMs: 15_000, expression: EXPRESSION })
    const peak = kB(server.pid, 'VmHWM')
    const metrics = await (await fetch(`${server.url}/metrics`)).text()
    const metric = (re) => { const m = re.exec(metrics); return m ? Number(m[1]) : NaN }
    burstFigures = {
      ...figures,
      results: undefined,
      idleRssBytes: idle,
      peakRssBytes: peak,
      budget: {
        limitBytes: metric(/vlt_memory_budget_bytes\{kind="limit"\} (\d+)/),
        reserveBytes: metric(/vlt_memory_budget_bytes\{kind="reserve"\} (\d+)/),
        capacityBytes: metric(/vlt_memory_budget_bytes\{kind="capacity"\} (\d+)/),
        peakInUseBytes: metric(/vlt_memory_budget_bytes\{kind="peak_in_use"\} (\d+)/),
        refusals: Object.fromEntries([...metrics.matchAll(/vlt_memory_budget_refusals_total\{reason="(\w+)"\} (\d+)/g)].map((m) => [m[1], Number(m[2])])),
      },
      failures,
    }
  } finally {
    await server.stop()
  }
}
const b = burstFigures
console.log(`\nBurst on the bare process (MEMORY_BUDGET_MB=${values['budget-mb']}, 2 workers × 2 threads): ${b.concurrency} uploads at once of ${b.files.map((f) => f.name).join(', ')}`)
console.log(`  budget: limit ${mib(b.budget.limitBytes)} MiB, reserve ${mib(b.budget.reserveBytes)} MiB (measured), for requests ${mib(b.budget.capacityBytes)} MiB; largest sum of leases ${mib(b.budget.peakInUseBytes)} MiB; refusals ${JSON.stringify(b.budget.refusals)}`)
console.log(`  answers: ${Object.entries(b.byStatus).map(([k, n]) => `${n} × ${k}`).join(', ')}; answer time median ${b.answerMs.p50} / max ${b.answerMs.max} ms`)
console.log(`  resident memory: ${mib(b.idleRssBytes)} MiB before, peak ${mib(b.peakRssBytes)} MiB during the burst`)
console.log(`  /healthz during the burst: ${b.healthz.answered} answered, ${b.healthz.failed} failed; p50 ${b.healthz.p50} / p99 ${b.healthz.p99} / max ${b.healthz.max} ms; the service's event-loop delay p99 ${b.eventLoopLagMs?.p99} / max ${b.eventLoopLagMs?.max} ms`)
for (const f of b.failures) console.log(`  FAIL ${f}`)
if (values.json !== undefined) writeFileSync(values.json, JSON.stringify({ perRequest, burst: burstFigures }, null, 2))
