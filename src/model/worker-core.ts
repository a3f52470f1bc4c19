/**
 * The inference worker's loop, independent of the runtime behind it: start the backend, run the
 * golden case, then answer 'run' messages (batch the rows, one backend.run, post-process each
 * row). src/model/worker.ts plugs in ONNX Runtime; tests plug in a deterministic fake.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { postprocess } from '../image/postprocess.js'
import type { FromWorker, GoldenReport, JobResult, RunJob, ToWorker, WorkerInit } from './protocol.js'

/** Batched inputs: image [B,3,S,S], tokens [B,L] (int64). */
export interface Feeds {
  image: Float32Array
  tokens: BigInt64Array
  batch: number
}

/** Outputs, batch-major: mask_logits [B,1,m,m], query_confidence [B,Nq], word_attention [B,Nq,L]. */
export type Outputs = Record<'mask_logits' | 'query_confidence' | 'word_attention', Float32Array>

export interface Backend {
  provider: string
  run: (feeds: Feeds) => Promise<Outputs>
}

export type BackendFactory = (init: WorkerInit, log: (level: 'info' | 'warn' | 'error', msg: string, data?: Record<string, unknown>) => void) => Promise<Backend>

function post (msg: FromWorker, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage(msg, transfer)
}

export function buildFeeds (jobs: RunJob[], init: Pick<WorkerInit, 'size' | 'maxWords'>): Feeds {
  const plane = 3 * init.size * init.size
  const batch = jobs.reduce((n, j) => n + j.tokens.length, 0)
  const image = new Float32Array(batch * plane)
  const tokens = new BigInt64Array(batch * init.maxWords)
  let b = 0
  for (const job of jobs) {
    for (const row of job.tokens) {
      image.set(job.image, b * plane)
      for (let i = 0; i < init.maxWords; i++) tokens[b * init.maxWords + i] = BigInt(row[i] ?? 0)
      b++
    }
  }
  return { image, tokens, batch }
}

export function checkGolden (out: Outputs, expected: Record<string, Float32Array>, atol: number, rtol: number): { report: GoldenReport, problems: string[] } {
  const maxAbsDiff: Record<string, number> = {}
  const problems: string[] = []
  for (const [name, want] of Object.entries(expected)) {
    const got = (out as Record<string, Float32Array>)[name]
    if (got === undefined) continue
    if (got.length !== want.length) {
      problems.push(`${name}: ${got.length} values, golden has ${want.length}`)
      continue
    }
    let max = 0
    let bad = 0
    for (let i = 0; i < want.length; i++) {
      const d = Math.abs(got[i] - want[i])
      if (!(d <= atol + rtol * Math.abs(want[i]))) bad++
      if (d > max || Number.isNaN(d)) max = Number.isNaN(d) ? Infinity : d
    }
    maxAbsDiff[name] = max
    if (bad > 0) problems.push(`${name}: ${bad} values beyond atol ${atol} (max |Δ| ${max})`)
  }
  return { report: { maxAbsDiff }, problems }
}

export async function serveWorker (factory: BackendFactory): Promise<void> {
  const init = workerData as WorkerInit
  const log = (level: 'info' | 'warn' | 'error', msg: string, data?: Record<string, unknown>): void => post({ type: 'log', level, msg, data })
  let backend: Backend
  try {
    backend = await factory(init, log)
  } catch (err) {
    post({ type: 'failed', message: (err as Error).message, fatal: true })
    return
  }

  let golden: GoldenReport | null = null
  if (init.golden !== undefined) {
    const g = init.golden
    try {
      const tokens = BigInt64Array.from(g.tokens.map((v) => BigInt(v)))
      const out = await backend.run({ image: g.input, tokens, batch: 1 })
      const { report, problems } = checkGolden(out, g.outputs, g.atol, g.rtol)
      if (problems.length > 0) {
        post({ type: 'failed', message: `golden case mismatch on ${backend.provider}: ${problems.join('; ')}`, fatal: true })
        return
      }
      golden = report
    } catch (err) {
      post({ type: 'failed', message: `golden case failed to run: ${(err as Error).message}`, fatal: true })
      return
    }
  }
  post({ type: 'ready', provider: backend.provider, golden })

  const { maskSize, numQueries, maxWords } = init
  const m2 = maskSize * maskSize
  parentPort!.on('message', (msg: ToWorker) => {
    if (msg.type !== 'run') return
    void (async () => {
      const t0 = performance.now()
      let out: Outputs
      try {
        out = await backend.run(buildFeeds(msg.jobs, init))
      } catch (err) {
        post({ type: 'result', batchId: msg.batchId, error: (err as Error).message, inferenceMs: performance.now() - t0, postprocessMs: 0 })
        return
      }
      const t1 = performance.now()
      const results: JobResult[] = []
      const transfer: ArrayBuffer[] = []
      let b = 0
      for (const job of msg.jobs) {
        const rows = job.tokens.map(() => {
          const logits = out.mask_logits.subarray(b * m2, (b + 1) * m2)
          const summary = postprocess(logits, maskSize, job.geometry, job.threshold)
          const confidence = out.query_confidence.slice(b * numQueries, (b + 1) * numQueries)
          const attention = out.word_attention.slice(b * numQueries * maxWords, (b + 1) * numQueries * maxWords)
          b++
          transfer.push(summary.mask.buffer as ArrayBuffer)
          return { mask: summary.mask, area: summary.area, bbox: summary.bbox, score: summary.score, confidence, attention }
        })
        results.push({ id: job.id, rows })
      }
      post({ type: 'result', batchId: msg.batchId, results, inferenceMs: t1 - t0, postprocessMs: performance.now() - t1 }, transfer)
    })()
  })
}
