/**
 * An engine worker's loop, independent of the runtime behind it: start the backend, run the
 * golden case, then answer 'run' messages with one batched inference and per-row post-processing.
 * src/engine/worker.ts plugs in ONNX Runtime; tests plug in a deterministic fake.
 *
 * Two kinds of backend:
 * - whole: one graph, image + tokens → outputs; every token row carries a copy of its image.
 * - split: image_encoder (image → feature maps) and head (feature maps + tokens → outputs). A batch
 *   runs the encoder once over its distinct images (jobs without cached features; jobs with the
 *   same key share one row) and the head once over all token rows, each row reading its image's
 *   feature maps: K expressions on one image cost one backbone pass, a cached image none.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { encodeMaskIn, wantsScanlines } from '../image/mask-formats.js'
import { postprocess } from '../image/postprocess.js'
import { type FromWorker, type GoldenReport, GRAPH_OUTPUTS, type GraphOutput, type GraphShape, type ImageFeatures, type JobResult, type RunJob, type ToWorker, type WorkerInit } from './protocol.js'

/** Batched inputs: image [B,3,S,S], tokens [B,L] (int64). */
export interface Feeds {
  image: Float32Array
  tokens: BigInt64Array
  batch: number
}

/** Outputs, batch-major: mask_logits [B,1,m,m], query_confidence [B,Nq], word_attention [B,Nq,L]. */
export type Outputs = Record<GraphOutput, Float32Array>

/** Feature maps of a batch: one batch-major array per map, and each map's shape without the batch axis. */
export interface FeatureBatch {
  maps: Float32Array[]
  shapes: number[][]
  batch: number
}

export interface Backend {
  provider: string
  /** The whole network (a whole backend). */
  run?: (feeds: Feeds) => Promise<Outputs>
  /** image [B,3,S,S] → feature maps (a split backend, with head). */
  encode?: (image: Float32Array, batch: number) => Promise<FeatureBatch>
  /** feature maps [B,…] + tokens [B,L] → outputs. */
  head?: (features: FeatureBatch, tokens: BigInt64Array) => Promise<Outputs>
}

export type BackendFactory = (init: WorkerInit, log: (level: 'info' | 'warn' | 'error', msg: string, data?: Record<string, unknown>) => void) => Promise<Backend>

function post (msg: FromWorker, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage(msg, transfer)
}

export function buildTokens (jobs: RunJob[], maxWords: number): BigInt64Array {
  const rows = jobs.reduce((n, j) => n + j.tokens.length, 0)
  const tokens = new BigInt64Array(rows * maxWords)
  let b = 0
  for (const job of jobs) {
    for (const row of job.tokens) {
      if (row.length !== maxWords) throw new Error(`a token row has ${row.length} ids; the model takes ${maxWords}`)
      for (let i = 0; i < maxWords; i++) tokens[b * maxWords + i] = BigInt(row[i])
      b++
    }
  }
  return tokens
}

/** Whole-graph feeds: each token row with its own copy of the image. */
export function buildFeeds (jobs: RunJob[], init: Pick<GraphShape, 'size' | 'maxWords'>): Feeds {
  const plane = 3 * init.size * init.size
  const batch = jobs.reduce((n, j) => n + j.tokens.length, 0)
  const image = new Float32Array(batch * plane)
  let b = 0
  for (const job of jobs) {
    if (job.image === undefined) throw new Error('this model has no split graphs: a job needs its image')
    for (let k = 0; k < job.tokens.length; k++) image.set(job.image, (b++) * plane)
  }
  return { image, tokens: buildTokens(jobs, init.maxWords), batch }
}

const sizeOf = (shape: number[]): number => shape.reduce((a, v) => a * v, 1)

/** One image's feature maps as views (no copy) into a FeatureBatch or an ImageFeatures. */
function imageMaps (f: FeatureBatch, i: number): Float32Array[] {
  return f.maps.map((m, j) => { const n = sizeOf(f.shapes[j]); return m.subarray(i * n, (i + 1) * n) })
}
function cachedMaps (f: ImageFeatures): Float32Array[] {
  let off = 0
  return f.shapes.map((shape) => { const n = sizeOf(shape); const v = f.data.subarray(off, off + n); off += n; return v })
}

/** Copy one image's maps into memory shared with the main thread (for the feature cache). */
export function shareFeatures (maps: Float32Array[], shapes: number[][]): ImageFeatures {
  const total = maps.reduce((n, m) => n + m.length, 0)
  const data = new Float32Array(new SharedArrayBuffer(total * 4))
  let off = 0
  for (const m of maps) { data.set(m, off); off += m.length }
  return { data, shapes: shapes.map((s) => [...s]) }
}

export interface BatchOutput {
  out: Outputs
  /** Backbone passes (images through the encoder) in this batch. */
  encoded: number
  /** Index in `jobs` → the features computed for that job's image, for jobs with wantFeatures. */
  features: Map<number, ImageFeatures>
}

/**
 * One batch through the backend. Split: the encoder over the distinct uncached images (one row
 * each), then the head over every token row, row b reading its image's maps. Whole: one run.
 */
export async function inferBatch (backend: Backend, jobs: RunJob[], init: Pick<GraphShape, 'size' | 'maxWords'>): Promise<BatchOutput> {
  if (backend.encode === undefined || backend.head === undefined) {
    return { out: await backend.run!(buildFeeds(jobs, init)), encoded: 0, features: new Map() }
  }
  const plane = 3 * init.size * init.size
  // Distinct images to encode: jobs without features, deduplicated by key.
  const slotOf: number[] = new Array(jobs.length).fill(-1)
  const byKey = new Map<string, number>()
  const toEncode: Float32Array[] = []
  jobs.forEach((job, j) => {
    if (job.features !== undefined) return
    if (job.image === undefined) throw new Error('a job needs its image or its features')
    const known = job.key !== undefined ? byKey.get(job.key) : undefined
    if (known !== undefined) { slotOf[j] = known; return }
    slotOf[j] = toEncode.length
    if (job.key !== undefined) byKey.set(job.key, toEncode.length)
    toEncode.push(job.image)
  })
  let encoded: FeatureBatch | undefined
  if (toEncode.length > 0) {
    const images = new Float32Array(toEncode.length * plane)
    toEncode.forEach((img, i) => images.set(img, i * plane))
    encoded = await backend.encode(images, toEncode.length)
  }
  const shapes = encoded?.shapes ?? jobs.find((j) => j.features !== undefined)!.features!.shapes
  const perJob: Float32Array[][] = jobs.map((job, j) => job.features !== undefined ? cachedMaps(job.features) : imageMaps(encoded!, slotOf[j]))

  const rows = jobs.reduce((n, j) => n + j.tokens.length, 0)
  // One row per job, each its own freshly encoded image, in order (the usual batch of new
  // images): the encoder's outputs are already the head's inputs, row for row; no copy.
  const asEncoded = encoded !== undefined && toEncode.length === rows && jobs.every((job, j) => job.tokens.length === 1 && slotOf[j] === j)
  const maps = asEncoded ? encoded!.maps : shapes.map((shape) => new Float32Array(rows * sizeOf(shape)))
  let b = 0
  if (!asEncoded) {
    jobs.forEach((job, j) => {
      for (let k = 0; k < job.tokens.length; k++) {
        perJob[j].forEach((m, f) => {
          if (m.length !== sizeOf(shapes[f])) throw new Error(`cached features have shape ${JSON.stringify(job.features?.shapes)}, the encoder gives ${JSON.stringify(shapes)}`)
          maps[f].set(m, b * m.length)
        })
        b++
      }
    })
  }
  // Jobs of no rows only want the features (a K-row request spread over several workers).
  const out = rows > 0
    ? await backend.head({ maps, shapes, batch: rows }, buildTokens(jobs, init.maxWords))
    : Object.fromEntries(GRAPH_OUTPUTS.map((n) => [n, new Float32Array(0)])) as Outputs

  const features = new Map<number, ImageFeatures>()
  const shared = new Map<number, ImageFeatures>()
  jobs.forEach((job, j) => {
    if (job.wantFeatures !== true || job.features !== undefined) return
    let f = shared.get(slotOf[j])
    if (f === undefined) { f = shareFeatures(perJob[j], shapes); shared.set(slotOf[j], f) }
    features.set(j, f)
  })
  return { out, encoded: toEncode.length, features }
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
      const job: RunJob = { id: 0, image: g.input, tokens: [g.tokens], geometry: { width: init.size, height: init.size, size: init.size, nw: init.size, nh: init.size, dx: 0, dy: 0 }, threshold: 0.5 }
      const { out } = await inferBatch(backend, [job], init)
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
      let batch: BatchOutput
      try {
        batch = await inferBatch(backend, msg.jobs, init)
        out = batch.out
      } catch (err) {
        post({ type: 'result', batchId: msg.batchId, error: (err as Error).message, inferenceMs: performance.now() - t0, postprocessMs: 0 })
        return
      }
      const t1 = performance.now()
      const results: JobResult[] = []
      const transfer: ArrayBuffer[] = []
      let b = 0
      msg.jobs.forEach((job, j) => {
        const rows = job.tokens.map(() => {
          const logits = out.mask_logits.subarray(b * m2, (b + 1) * m2)
          // One full-size plane at a time: each row's mask is encoded before the next is made.
          const format = job.format ?? 'png'
          const summary = postprocess(logits, maskSize, job.geometry, job.threshold, wantsScanlines(format))
          const mask = encodeMaskIn(format, summary.mask, summary.width, summary.height, summary.bbox)
          const confidence = out.query_confidence.slice(b * numQueries, (b + 1) * numQueries)
          const attention = out.word_attention.slice(b * numQueries * maxWords, (b + 1) * numQueries * maxWords)
          b++
          if ('png' in mask) transfer.push(mask.png.buffer as ArrayBuffer)
          else if ('raw' in mask) transfer.push(mask.raw.buffer as ArrayBuffer)
          return { mask, area: summary.area, bbox: summary.bbox, score: summary.score, confidence, attention }
        })
        results.push({ id: job.id, rows, features: batch.features.get(j) })
      })
      post({ type: 'result', batchId: msg.batchId, results, inferenceMs: t1 - t0, postprocessMs: performance.now() - t1, encoded: batch.encoded }, transfer)
    })()
  })
}
