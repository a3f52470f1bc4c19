#!/usr/bin/env node
// Score the running service on a RefShapes-format set, over HTTP, exactly as a client would see it:
// each expression is POSTed to /segment with Accept: image/png and the returned mask is compared
// with the ground truth at the image's own size. Prints mIoU, oIoU and Prec@0.5–0.9 overall and per
// type, in the same table format as `python -m export.evaluate`, so the two can be compared.
//
//   npm run build && node bench/eval-service.mjs --data ../shared/refshapes/val [--url http://127.0.0.1:8080]
//
// Without --url it starts `node dist/server.js` itself on a free loopback port and stops it after.
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { parseArgs } from 'node:util'
import sharp from 'sharp'
import { startServer } from './lib.mjs'

const { values: args } = parseArgs({
  options: {
    data: { type: 'string', default: '../shared/refshapes/val' },
    url: { type: 'string' },
    limit: { type: 'string' },
    concurrency: { type: 'string', default: '2' },
    json: { type: 'string' },
  },
})

async function grey (buf) {
  const { data, info } = await sharp(buf).greyscale().raw().toBuffer({ resolveWithObject: true })
  return { data, width: info.width, height: info.height }
}

function summarise (records) {
  const groups = new Map([['overall', []]])
  for (const r of records) {
    groups.get('overall').push(r)
    if (!groups.has(r.type)) groups.set(r.type, [])
    groups.get(r.type).push(r)
  }
  const out = {}
  for (const [name, rows] of groups) {
    const ious = rows.map((r) => (r.union > 0 ? r.inter / r.union : 1))
    const m = { n: rows.length, mIoU: 100 * ious.reduce((a, b) => a + b, 0) / rows.length }
    m.oIoU = 100 * rows.reduce((a, r) => a + r.inter, 0) / Math.max(1, rows.reduce((a, r) => a + r.union, 0))
    for (const t of [0.5, 0.6, 0.7, 0.8, 0.9]) m[`Prec@${t}`] = 100 * ious.filter((x) => x >= t).length / rows.length
    out[name] = m
  }
  return out
}

function table (metrics) {
  const cols = ['n', 'mIoU', 'oIoU', 'Prec@0.5', 'Prec@0.6', 'Prec@0.7', 'Prec@0.8', 'Prec@0.9']
  const names = ['overall', ...Object.keys(metrics).filter((k) => k !== 'overall').sort()]
  const lines = [`| split | ${cols.join(' | ')} |`, `|${'---|'.repeat(cols.length + 1)}`]
  for (const k of names) lines.push(`| ${k} | ${metrics[k].n} | ${cols.slice(1).map((c) => metrics[k][c].toFixed(2)).join(' | ')} |`)
  return lines.join('\n')
}

const rows = (await readFile(path.join(args.data, 'annotations.jsonl'), 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l))
const todo = args.limit ? rows.slice(0, Number(args.limit)) : rows
const server = args.url ? { url: args.url } : await startServer({ stdio: ['ignore', 'inherit', 'inherit'], timeoutMs: 60_000 })
const t0 = Date.now()
const records = []
let next = 0
let failures = 0
async function workerLoop () {
  while (next < todo.length) {
    const r = todo[next++]
    const image = await readFile(path.join(args.data, r.image))
    const body = new FormData()
    body.append('image', new Blob([image], { type: 'image/jpeg' }), path.basename(r.image))
    body.append('expression', r.expression)
    const res = await fetch(`${server.url}/segment`, { method: 'POST', body, headers: { accept: 'image/png' } })
    if (res.status !== 200) { failures++; console.error(`#${r.id}: HTTP ${res.status} ${await res.text()}`); continue }
    const pred = await grey(Buffer.from(await res.arrayBuffer()))
    const gt = await grey(await readFile(path.join(args.data, r.mask)))
    if (pred.width !== gt.width || pred.height !== gt.height) throw new Error(`#${r.id}: mask ${pred.width}x${pred.height} vs ${gt.width}x${gt.height}`)
    let inter = 0; let union = 0
    for (let i = 0; i < gt.data.length; i++) {
      const p = pred.data[i] > 127; const g = gt.data[i] > 127
      if (p && g) inter++
      if (p || g) union++
    }
    records.push({ type: r.type ?? 'all', inter, union })
  }
}
try {
  await Promise.all(Array.from({ length: Number(args.concurrency) }, workerLoop))
} finally {
  await server.stop?.()
}
const metrics = summarise(records)
console.log(table(metrics))
console.log(`(${((Date.now() - t0) / 1000).toFixed(1)} s, ${failures} failed requests)`)
if (args.json) await writeFile(args.json, JSON.stringify(metrics, null, 1) + '\n')
if (failures) process.exitCode = 1
