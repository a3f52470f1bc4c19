// A burst of maximum-size uploads at once, while /healthz is asked every 100 ms: what the memory
// budget and the deadline are for. Used by the container test (docker/test.sh) and by
// bench/memory.mjs on the bare process; needs nothing but Node (no node_modules).
//
//   node bench/burst.mjs --url http://127.0.0.1:8080 --images DIR [--concurrency 16]
//        [--timeout-ms 15000] [--expression 'the large circle'] [--json out.json]
//
// Every file of DIR is sent in turn (request i sends file i mod n) with Accept: image/png. It
// passes when every request is answered within timeout + 5 s with 200, 503 + Retry-After, 504
// or 408, and every /healthz during the burst answered 200 within 5 s (the compose health
// check's timeout). /healthz is asked from a separate process, so that the uploads' own work in
// this one does not count in its latency. Prints the figures (statuses by file, answer times,
// /healthz latency percentiles, the service's event-loop delay) and exits 1 when it fails.
import { spawn } from 'node:child_process'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'

const BOUNDARY = '----vltburst5e2a'
const ALLOWED = new Set([200, 408, 503, 504])

function body (image, name, expression) {
  return Buffer.concat([
    Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="${name}"\r\nContent-Type: application/octet-stream\r\n\r\n`),
    image,
    Buffer.from(`\r\n--${BOUNDARY}\r\nContent-Disposition: form-data; name="expression"\r\n\r\n${expression}\r\n--${BOUNDARY}--\r\n`),
  ])
}

const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(p * s.length))] }

/**
 * The service's own event-loop delay figures (prom-client's, reset at each scrape): read once
 * before the burst to start afresh, once after it for the burst's. Undefined when /metrics is
 * closed (API keys).
 */
async function eventLoopLag (url) {
  try {
    const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5000) })).text()
    const read = (name) => { const m = new RegExp(`^\\w*nodejs_eventloop_lag_${name}_seconds (\\S+)`, 'm').exec(text); return m ? +(Number(m[1]) * 1000).toFixed(1) : undefined }
    return { p99: read('p99'), max: read('max') }
  } catch { return undefined }
}

/** Runs the burst; returns the figures and the list of failures (empty when it passed). */
export async function burst ({ url, files, concurrency = 16, timeoutMs = 15_000, expression = 'the large circle' }) {
  const limitMs = timeoutMs + 5000
  await eventLoopLag(url)
  // The poller: one line per /healthz, its latency in ms or FAIL; it stops when its stdin closes.
  const poller = spawn(process.execPath, ['--input-type=module', '-e', `
    let running = true
    process.stdin.on('close', () => { running = false }).resume()
    while (running) {
      const t0 = performance.now()
      try {
        const res = await fetch(${JSON.stringify(url + '/healthz')}, { signal: AbortSignal.timeout(5000) })
        await res.arrayBuffer()
        console.log(res.status === 200 ? (performance.now() - t0).toFixed(2) : 'FAIL')
      } catch { console.log('FAIL') }
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  `], { stdio: ['pipe', 'pipe', 'inherit'] })
  let pollOutput = ''
  poller.stdout.on('data', (c) => { pollOutput += c })
  const pollerDone = new Promise((resolve) => poller.once('exit', resolve))
  const bodies = files.map((f) => body(f.data, f.name, expression))
  const t0 = performance.now()
  const results = await Promise.all(Array.from({ length: concurrency }, async (_, i) => {
    const file = files[i % files.length]
    const start = performance.now()
    try {
      const res = await fetch(`${url}/segment`, {
        method: 'POST',
        headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, accept: 'image/png' },
        body: bodies[i % files.length],
        // Past this the answer is late anyway; waiting longer would only hide a hang.
        signal: AbortSignal.timeout(limitMs + 10_000),
      })
      const buf = Buffer.from(await res.arrayBuffer())
      let code
      if (res.status !== 200) { try { code = JSON.parse(buf.toString()).error?.code } catch {} }
      return { file: file.name, status: res.status, ms: performance.now() - start, retryAfter: res.headers.get('retry-after'), code, png: res.status === 200 && buf.subarray(1, 4).toString() === 'PNG' }
    } catch (err) {
      return { file: file.name, status: 0, ms: performance.now() - start, error: err.name }
    }
  }))
  const wallMs = performance.now() - t0
  poller.stdin.end()
  await pollerDone
  const lines = pollOutput.trim().split('\n').filter((l) => l !== '')
  const health = lines.filter((l) => l !== 'FAIL').map(Number)
  const healthFailures = lines.length - health.length
  const lag = await eventLoopLag(url)
  const failures = []
  for (const r of results) {
    if (r.status === 0) failures.push(`${r.file}: no answer (${r.error}) after ${Math.round(r.ms)} ms`)
    else if (!ALLOWED.has(r.status)) failures.push(`${r.file}: status ${r.status} ${r.code ?? ''}`)
    else if (r.status === 503 && !(Number(r.retryAfter) >= 1)) failures.push(`${r.file}: 503 without Retry-After`)
    else if (r.status === 200 && !r.png) failures.push(`${r.file}: 200 without a PNG`)
    if (r.ms > limitMs) failures.push(`${r.file}: answered after ${Math.round(r.ms)} ms > ${limitMs} ms`)
  }
  if (healthFailures > 0) failures.push(`/healthz failed ${healthFailures} times during the burst`)
  if (health.length === 0) failures.push('/healthz never answered during the burst')
  const byStatus = {}
  for (const r of results) {
    const k = `${r.status}${r.code !== undefined ? ' ' + r.code : ''}`
    byStatus[k] = (byStatus[k] ?? 0) + 1
  }
  const times = results.map((r) => r.ms)
  return {
    figures: {
      concurrency,
      files: files.map((f) => ({ name: f.name, bytes: f.data.length })),
      byStatus,
      answerMs: { min: Math.round(Math.min(...times)), p50: Math.round(pct(times, 0.5)), max: Math.round(Math.max(...times)), limit: limitMs },
      wallMs: Math.round(wallMs),
      eventLoopLagMs: lag,
      healthz: { answered: health.length, failed: healthFailures, p50: +pct(health, 0.5).toFixed(1), p99: +pct(health, 0.99).toFixed(1), max: +Math.max(...health).toFixed(1) },
      results,
    },
    failures,
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      images: { type: 'string' },
      concurrency: { type: 'string', default: '16' },
      'timeout-ms': { type: 'string', default: '15000' },
      expression: { type: 'string', default: 'the large circle' },
      json: { type: 'string' },
    },
  })
  if (values.url === undefined || values.images === undefined) { console.error('usage: node bench/burst.mjs --url URL --images DIR [--concurrency N] [--timeout-ms MS] [--json FILE]'); process.exit(2) }
  const files = readdirSync(values.images).sort().map((name) => ({ name, data: readFileSync(path.join(values.images, name)) }))
  const { figures, failures } = await burst({ url: values.url, files, concurrency: Number(values.concurrency), timeoutMs: Number(values['timeout-ms']), expression: values.expression })
  if (values.json !== undefined) writeFileSync(values.json, JSON.stringify({ figures, failures }, null, 2))
  const f = figures
  console.log(`burst: ${f.concurrency} uploads of ${f.files.map((x) => `${x.name} (${(x.bytes / 1e6).toFixed(2)} MB)`).join(', ')}`)
  console.log(`  answers: ${Object.entries(f.byStatus).map(([k, n]) => `${n} × ${k}`).join(', ')}; answer time min ${f.answerMs.min} / median ${f.answerMs.p50} / max ${f.answerMs.max} ms (limit ${f.answerMs.limit}); burst ${f.wallMs} ms`)
  console.log(`  /healthz during the burst: ${f.healthz.answered} answered, ${f.healthz.failed} failed; latency p50 ${f.healthz.p50} / p99 ${f.healthz.p99} / max ${f.healthz.max} ms; the service's event-loop delay p99 ${f.eventLoopLagMs?.p99} / max ${f.eventLoopLagMs?.max} ms`)
  for (const x of failures) console.log(`  FAIL ${x}`)
  process.exit(failures.length > 0 ? 1 : 0)
}
