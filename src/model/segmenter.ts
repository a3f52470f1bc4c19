/**
 * The segmenter: one image + K expressions in, K masks out. It owns the request path below the
 * route (design/LAYOUT.md):
 *
 *   tokenizer (reject expressions without a known word, 422)
 *   → feature cache (model/feature-cache.ts: a hit skips the next step and the backbone)
 *   → image/preprocess (decode, EXIF, letterbox — once per request)
 *   → engine (worker pool: queue, batch, session.run, un-letterbox + threshold in the worker)
 *   → PNG encoding of each mask
 *
 * `createSegmenter` takes an already-built engine so tests can drive the real pre- and
 * post-processing with a fake runtime; `createSegmenterFromFolder` builds the real one.
 */
import path from 'node:path'
import sharp from 'sharp'
import { ERR_INVALID_FIELD, ERR_NO_KNOWN_WORDS, expected, SegError } from '../errors.js'
import { decodeImage, type Geometry, letterbox } from '../image/preprocess.js'
import { createFeatureCache, type FeatureCacheStats } from './feature-cache.js'
import { loadGolden, loadModelFolder, type Manifest, MODEL_INPUTS, MODEL_OUTPUTS, verifyFile } from './manifest.js'
import { createWorkerPool, type Engine, type EngineLogger, type EngineStats, type InferenceJob, type JobOutput, type RunOptions } from './pool.js'
import type { GoldenCheck, SplitFiles } from './protocol.js'
import { createTokenizer, type Token, type Tokenized } from './tokenizer.js'

export interface SegmentRequest {
  image: Buffer
  expressions: string[]
  /** Overrides model.json output.threshold. */
  threshold?: number
  /** Epoch ms. */
  deadline: number
  /** The request's whole time budget, for the 504 message. */
  timeoutMs?: number
  signal?: AbortSignal
}

export interface QueryResult {
  confidence: number
  /** One weight per real (non-pad) token. */
  attention: number[]
}

export interface ExpressionResult {
  expression: string
  tokens: Token[]
  /** 8-bit greyscale PNG, 255 on the object, at the image's size after EXIF rotation. */
  png: Buffer
  score: number
  bbox: [number, number, number, number] | null
  area: number
  queries: QueryResult[]
}

export interface Timings {
  decode: number
  preprocess: number
  queue: number
  inference: number
  postprocess: number
  total: number
}

export interface SegmentResult {
  model: { name: string, version: string, provider: string }
  image: { width: number, height: number, format: string }
  results: ExpressionResult[]
  timings: Timings
  batchSize: number
  /** 'hit': the image's backbone features came from the cache; 'off': no cache (or no split graphs). */
  featureCache: 'hit' | 'miss' | 'off'
}

export interface ModelInfo {
  name: string
  version: string
  preset?: string
  inputSize: number
  maskSize: number
  maxWords: number
  numQueries: number
  threshold: number
  vocabSize: number
}

export interface Segmenter {
  readonly info: ModelInfo
  /** Resolves when the engine is ready; rejects on a fatal start error (the server exits). */
  readonly started: Promise<void>
  isReady: () => boolean
  provider: () => string
  stats: () => EngineStats
  tokenize: (text: string) => Tokenized
  segment: (req: SegmentRequest) => Promise<SegmentResult>
  /** Rows per session.run are reported to every listener added here. */
  onBatch: (fn: (rows: number) => void) => void
  /** Images per backbone pass are reported here (split graphs). */
  onEncode: (fn: (images: number) => void) => void
  cacheStats: () => FeatureCacheStats
  close: () => Promise<void>
}

export interface SegmenterOptions {
  manifest: Manifest
  vocab: string[]
  engine: Engine
  maxPixels: number
  /** Feature cache size in bytes; 0 or absent: no cache. Only useful when the engine runs split graphs. */
  featureCacheBytes?: number
  /** The engine runs the split graphs (jobs may carry features instead of the image). */
  splitGraphs?: boolean
}

export function createSegmenter ({ manifest, vocab, engine, maxPixels, featureCacheBytes = 0, splitGraphs = false }: SegmenterOptions): Segmenter {
  const cache = createFeatureCache(featureCacheBytes, JSON.stringify({ input: manifest.input, encoder: manifest.split?.image_encoder.sha256 ?? manifest.onnx.sha256, maxPixels }))
  const tokenizer = createTokenizer(vocab, { maxWords: manifest.maxWords, padId: manifest.vocab.padId, unkId: manifest.vocab.unkId })
  const info: ModelInfo = {
    name: manifest.name,
    version: manifest.version,
    preset: manifest.preset,
    inputSize: manifest.input.size,
    maskSize: manifest.maskSize,
    maxWords: manifest.maxWords,
    numQueries: manifest.numQueries,
    threshold: manifest.threshold,
    vocabSize: vocab.length,
  }
  const { maxWords, numQueries } = manifest
  const batchListeners: Array<(rows: number) => void> = []
  const encodeListeners: Array<(images: number) => void> = []
  engine.onBatch = (rows) => { for (const fn of batchListeners) fn(rows) }
  engine.onEncode = (images) => { for (const fn of encodeListeners) fn(images) }
  /** Requests between admission and engine.run (the pool waits for them to batch, not for nobody). */
  let preparing = 0
  engine.upstream = () => preparing

  /** Every expression needs at least one known word among the L the model sees. */
  function tokenizeAll (expressions: string[]): Tokenized[] {
    const all = expressions.map((e) => tokenizer.tokenize(e))
    const bad = all
      .map((t, i) => ({ i, t }))
      .filter(({ t }) => !t.tokens.some((tok) => tok.known))
    if (bad.length > 0) {
      const parts = bad.map(({ i, t }) => {
        const which = expressions.length > 1 ? `expression ${i + 1}` : 'the expression'
        return t.tokens.length === 0
          ? `${which} has no words (only punctuation or symbols)`
          : `${which} has no word the model knows (unknown: ${t.tokens.map((x) => x.text).join(', ')})`
      })
      const message = parts.join('; ')
      throw new SegError(ERR_NO_KNOWN_WORDS.code, ERR_NO_KNOWN_WORDS.statusCode, message.charAt(0).toUpperCase() + message.slice(1), {
        details: { unknownWords: bad.map(({ i, t }) => ({ index: i, words: t.tokens.map((x) => x.text) })) },
      })
    }
    return all
  }

  /** Workers free to take a job right now (none while jobs queue). */
  const idleWorkers = (): number => {
    const st = engine.stats()
    return st.queueDepth > 0 ? 0 : st.liveWorkers - st.busyWorkers
  }

  /**
   * K > 1 expressions while several workers idle: the backbone once (a job of no rows that
   * returns the features, unless they are cached), then the K head rows spread over the idle
   * workers, every one reading the same shared features. Under load nothing idles and the
   * request goes as one job (one backbone pass, one head pass over K rows).
   */
  async function runSpread (job: Omit<InferenceJob, 'tokens'>, tokens: number[][], runOpts: RunOptions): Promise<JobOutput> {
    let features = job.features
    let first: JobOutput | undefined
    if (features === undefined) {
      first = await engine.run({ ...job, tokens: [], wantFeatures: true }, runOpts)
      features = first.features
      if (features === undefined) return await engine.run({ ...job, tokens }, runOpts)
    }
    const n = Math.max(1, Math.min(tokens.length, idleWorkers()))
    const size = Math.ceil(tokens.length / n)
    const chunks: number[][][] = []
    for (let i = 0; i < tokens.length; i += size) chunks.push(tokens.slice(i, i + size))
    const outs = await Promise.all(chunks.map((c) => engine.run({ features, key: job.key, geometry: job.geometry, threshold: job.threshold, tokens: c }, runOpts)))
    const max = (f: (o: JobOutput) => number): number => Math.max(...outs.map(f))
    return {
      rows: outs.flatMap((o) => o.rows),
      queueMs: (first?.queueMs ?? 0) + max((o) => o.queueMs),
      inferenceMs: (first?.inferenceMs ?? 0) + max((o) => o.inferenceMs),
      postprocessMs: max((o) => o.postprocessMs),
      batchSize: max((o) => o.batchSize),
      features: first?.features,
    }
  }

  const run = async (job: Omit<InferenceJob, 'tokens'>, tokens: number[][], runOpts: RunOptions): Promise<JobOutput> =>
    splitGraphs && tokens.length > 1 && idleWorkers() > 1 ? await runSpread(job, tokens, runOpts) : await engine.run({ ...job, tokens }, runOpts)

  async function segment (req: SegmentRequest): Promise<SegmentResult> {
    const t0 = performance.now()
    const threshold = req.threshold ?? manifest.threshold
    if (!(threshold >= 0 && threshold <= 1)) throw ERR_INVALID_FIELD(expected('a number between 0 and 1', 'threshold', threshold))
    const tokenized = tokenizeAll(req.expressions)

    const tokens = tokenized.map((t) => t.ids)
    const runOpts = { deadline: req.deadline, timeoutMs: req.timeoutMs, signal: req.signal }
    const key = cache.enabled ? cache.key(req.image) : undefined
    const cached = key !== undefined ? cache.get(key) : undefined
    let geometry: Geometry
    let format: string
    let out: JobOutput
    let t1: number, t2: number
    if (cached !== undefined) {
      ({ geometry, format } = cached)
      t1 = t2 = performance.now()
      out = await run({ features: cached.features, key, geometry, threshold }, tokens, runOpts)
    } else {
      let pre: Awaited<ReturnType<typeof letterbox>>
      preparing++
      try {
        const image = await decodeImage(req.image, { maxPixels })
        t1 = performance.now()
        pre = await letterbox(image, manifest.input)
        t2 = performance.now()
        format = image.format
      } finally {
        preparing--
      }
      geometry = pre.geometry
      out = await run({ image: pre.data, key, wantFeatures: key !== undefined, geometry, threshold }, tokens, runOpts)
      if (key !== undefined && out.features !== undefined) cache.set(key, { features: out.features, geometry, format })
    }
    const t3 = performance.now()

    const results = await Promise.all(out.rows.map(async (row, k): Promise<ExpressionResult> => {
      const n = tokenized[k].tokens.length
      const queries: QueryResult[] = []
      for (let q = 0; q < numQueries; q++) {
        queries.push({
          confidence: row.confidence[q],
          attention: Array.from(row.attention.subarray(q * maxWords, q * maxWords + n)),
        })
      }
      const png = await sharp(row.mask, { raw: { width: geometry.width, height: geometry.height, channels: 1 } })
        .toColourspace('b-w') // one 8-bit grey channel, not sRGB
        .png({ compressionLevel: 6 })
        .toBuffer()
      return {
        expression: req.expressions[k],
        tokens: tokenized[k].tokens,
        png,
        score: row.score,
        bbox: row.bbox,
        area: row.area,
        queries,
      }
    }))
    const t4 = performance.now()
    return {
      model: { name: manifest.name, version: manifest.version, provider: engine.provider() },
      image: { width: geometry.width, height: geometry.height, format },
      results,
      timings: {
        decode: t1 - t0,
        preprocess: t2 - t1,
        queue: out.queueMs,
        inference: out.inferenceMs,
        postprocess: out.postprocessMs + (t4 - t3),
        total: t4 - t0,
      },
      batchSize: out.batchSize,
      featureCache: key === undefined ? 'off' : cached !== undefined ? 'hit' : 'miss',
    }
  }

  return {
    info,
    started: engine.started,
    isReady: engine.isReady,
    provider: engine.provider,
    stats: engine.stats,
    tokenize: tokenizer.tokenize,
    segment,
    onBatch: (fn) => { batchListeners.push(fn) },
    onEncode: (fn) => { encodeListeners.push(fn) },
    cacheStats: cache.stats,
    close: engine.close,
  }
}

export interface FolderOptions {
  modelPath: string
  executionProviders: string[]
  requireGpu: boolean
  /** The GPU of the cuda and tensorrt providers (default 0). */
  cudaDeviceId?: number
  workers: number
  threadsPerWorker: number
  /** ONNX Runtime intra-op spinning (default: ONNX Runtime's, on). */
  intraOpSpinning?: boolean
  maxBatch: number
  maxBatchWaitMs: number
  queueSize: number
  maxImagePixels: number
  /** Feature cache size in MB (0: off). */
  featureCacheMb?: number
  /** Use model.json `split` when present (default true); false: always model.onnx. */
  splitGraphs?: boolean
  logger: EngineLogger
  /** Tests: a different worker script. */
  workerUrl?: URL
}

/** Load and verify the model folder, then start the worker pool (which runs the golden case). */
export async function createSegmenterFromFolder (opts: FolderOptions): Promise<Segmenter> {
  const { manifest, vocab, modelFile } = await loadModelFolder(opts.modelPath)
  const golden = await loadGolden(manifest)
  let goldenCheck: GoldenCheck | undefined
  if (golden !== undefined) {
    goldenCheck = {
      input: golden.input,
      tokens: golden.case.tokens,
      outputs: golden.outputs,
      atol: golden.case.tolerance?.atol ?? 1e-3,
      rtol: golden.case.tolerance?.rtol ?? 0,
    }
  }
  let split: SplitFiles | undefined
  if (manifest.split !== undefined && opts.splitGraphs !== false) {
    const { image_encoder: enc, head } = manifest.split
    split = { encoderFile: path.join(manifest.dir, enc.file), headFile: path.join(manifest.dir, head.file), featureNames: enc.outputs }
    await verifyFile(split.encoderFile, enc.sha256)
    await verifyFile(split.headFile, head.sha256)
  }
  const engine = createWorkerPool({
    init: {
      modelFile: path.resolve(modelFile),
      split,
      inputNames: [...MODEL_INPUTS],
      outputNames: [...MODEL_OUTPUTS],
      executionProviders: opts.executionProviders,
      requireGpu: opts.requireGpu,
      cudaDeviceId: opts.cudaDeviceId,
      threads: opts.threadsPerWorker,
      spinning: opts.intraOpSpinning,
      size: manifest.input.size,
      maskSize: manifest.maskSize,
      maxWords: manifest.maxWords,
      numQueries: manifest.numQueries,
      golden: goldenCheck,
    },
    workers: opts.workers,
    maxBatch: opts.maxBatch,
    maxBatchWaitMs: opts.maxBatchWaitMs,
    queueSize: opts.queueSize,
    logger: opts.logger,
    workerUrl: opts.workerUrl,
  })
  // Without the split graphs there are no features to cache.
  const featureCacheBytes = split !== undefined ? Math.round((opts.featureCacheMb ?? 0) * 1024 * 1024) : 0
  return createSegmenter({ manifest, vocab, engine, maxPixels: opts.maxImagePixels, featureCacheBytes, splitGraphs: split !== undefined })
}
