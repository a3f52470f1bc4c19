/**
 * The segmenter: one image + K expressions in, K masks out, for one model. Its `segment` is the
 * request path below the route, in five steps (docs/architecture.md):
 *
 *   validate   the threshold (model.json's unless the request gives one)
 *   tokenize   model/tokenizer; an expression without a known word is refused (422)
 *   admit      the image's header gives what the request will hold (decoding, the output masks);
 *              it waits for that much of the memory budget (budget/budget.ts)
 *   prepare    the image's cached backbone features (engine/feature-cache), or image/preprocess
 *              (decode small, EXIF, letterbox — once per request)
 *   run        the engine: queue, batch, session.run, un-letterbox, threshold and the mask's
 *              encoding (PNG, COCO RLE or polygons) in a worker
 *   encode     each mask as the worker encoded it, each query's confidence and word attention
 *
 * Every step ends at the request's deadline (504) or when its client leaves; the memory lease is
 * released only when the work it stands for has really ended (a decode in progress finishes, a
 * worker answers), not when the answer is sent.
 *
 * `createSegmenter` takes an already-built engine so tests can drive the real pre- and
 * post-processing with a fake runtime; `createSegmenterFromFolder` builds the real one.
 */
import type { Budget, Lease } from '../budget/budget.js'
import { stat } from 'node:fs/promises'
import type { ConfigSection } from '../config.js'
import { ERR_CLIENT_CLOSED, ERR_DEADLINE, ERR_THRESHOLD, noKnownWords } from '../errors.js'
import { createEngine, type Engine, type EngineHooks, type EngineLogger, type EngineSettings, type InferenceJob, type JobOutput } from '../engine/engine.js'
import { type CachedImage, createFeatureCache, type FeatureCache, type FeatureCacheStats } from '../engine/feature-cache.js'
import type { ImageFeatures, RowResult } from '../engine/protocol.js'
import type { Mask, MaskEncoding } from '../image/mask-formats.js'
import { maskCost } from '../image/png.js'
import { isThreshold } from '../image/postprocess.js'
import { decodeCost, type ImageHeader, loadLetterboxed, readHeader } from '../image/preprocess.js'
import { featureSalt, loadModelFolder, type Manifest, ManifestError } from './manifest.js'
import { createTokenizer, type Token, type Tokenized } from './tokenizer.js'

export interface SegmentRequest {
  image: Buffer
  expressions: string[]
  /** Overrides model.json output.threshold. */
  threshold?: number
  /** The masks' encoding; absent: png. */
  format?: MaskEncoding
  /** Epoch ms. */
  deadline: number
  /** The request's whole time budget, for the 504 message. */
  timeoutMs?: number
  signal?: AbortSignal
  /** Memory leases taken for this request before (its upload): released with the request's work. */
  leases?: Lease[]
}

export interface QueryResult {
  confidence: number
  /** One weight per real (non-pad) token. */
  attention: number[]
}

export interface ExpressionResult {
  expression: string
  tokens: Token[]
  /**
   * The mask at the image's size after EXIF rotation, in the request's format (image/mask-formats.ts),
   * as the engine's worker encoded it: a PNG is 8-bit greyscale, 255 on the object.
   */
  mask: Mask
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
  /** L of the model that answered: each query's attention covers the real tokens, at most L. */
  maxWords: number
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
  /** Bytes of the graph files each worker loads (model.onnx, or image_encoder.onnx + head.onnx); 0 when unknown. */
  weightsBytes: number
  /** model.json as parsed (GET /models, v2 model metadata). */
  metadata: Record<string, unknown>
}

export interface Segmenter extends Pick<Engine, 'started' | 'isReady' | 'provider' | 'stats' | 'close'> {
  readonly info: ModelInfo
  segment: (req: SegmentRequest) => Promise<SegmentResult>
  cacheStats: () => FeatureCacheStats
}

export interface SegmenterOptions {
  manifest: Manifest
  vocab: string[]
  engine: Engine
  /** MAX_IMAGE_PIXELS */
  maxImagePixels: number
  /** Absent: no cache. Only useful when the engine runs the split graphs. */
  cache?: FeatureCache
  /** The memory budget requests are admitted by; absent: no admission control. */
  budget?: Budget
  /** Bytes of the graph files each worker loads (ModelInfo.weightsBytes). */
  weightsBytes?: number
}

/** The image as the engine takes it, and what the answer needs to know about it. */
interface PreparedImage {
  job: Pick<InferenceJob, 'image' | 'features' | 'key' | 'wantFeatures' | 'geometry'>
  format: string
  cache: SegmentResult['featureCache']
  /** performance.now() after decoding and after letterboxing (both at the lookup on a hit). */
  decodedAt: number
  letterboxedAt: number
}

export function createSegmenter ({ manifest, vocab, engine, maxImagePixels, cache = createFeatureCache(0, ''), budget, weightsBytes = 0 }: SegmenterOptions): Segmenter {
  const tokenizer = createTokenizer(vocab, { maxWords: manifest.maxWords, ...manifest.vocab })

  async function segment (req: SegmentRequest): Promise<SegmentResult> {
    const t0 = performance.now()
    const work = holdWork(req.leases ?? [])
    try {
      const threshold = req.threshold ?? manifest.threshold
      if (!isThreshold(threshold)) throw ERR_THRESHOLD(threshold)
      const tokenized = tokenize(req.expressions)
      // The upload's digest is computed on the thread pool (WebCrypto), not on the event loop; the
      // cache key is made from it.
      const key = cache.enabled ? cache.key(Buffer.from(await within(work.track(crypto.subtle.digest('SHA-256', req.image)), req))) : undefined
      const hit = key !== undefined ? cache.get(key) : undefined
      const header = hit === undefined ? await within(work.track(readHeader(req.image, { maxPixels: maxImagePixels })), req) : undefined
      const size = hit?.geometry ?? header!
      const cost = (header !== undefined ? decodeCost(header, manifest.input) : 0) + maskCost(size.width, size.height, req.expressions.length, req.format)
      if (budget !== undefined) work.add(await budget.acquire(cost, { ...req, held: (req.leases ?? []).reduce((n, l) => n + l.bytes, 0) }))
      const image = hit !== undefined ? fromCache(key!, hit) : await within(work.track(prepareImage(req.image, header!, key)), req)
      const out = await engine.run({ ...image.job, threshold, format: req.format, tokens: tokenized.map((t) => t.ids) }, { ...req, onFinished: work.hold() })
      remember(image, out.features)
      const ran = performance.now()
      const results = out.rows.map((row, k) => encode(row, req.expressions[k], tokenized[k]))
      const done = performance.now()
      return answer(image, out, results, t0, ran, done)
    } finally {
      work.end()
    }
  }

  function answer (image: PreparedImage, out: JobOutput, results: ExpressionResult[], t0: number, ran: number, done: number): SegmentResult {
    const { geometry } = image.job
    return {
      model: { name: manifest.name, version: manifest.version, provider: engine.provider() },
      maxWords: manifest.maxWords,
      image: { width: geometry.width, height: geometry.height, format: image.format },
      results,
      timings: {
        decode: image.decodedAt - t0,
        preprocess: image.letterboxedAt - image.decodedAt,
        queue: out.queueMs,
        inference: out.inferenceMs,
        postprocess: out.postprocessMs + (done - ran),
        total: done - t0,
      },
      batchSize: out.batchSize,
      featureCache: image.cache,
    }
  }

  /** Every expression needs at least one known word among the L the model sees (else 422). */
  function tokenize (expressions: string[]): Tokenized[] {
    const all = expressions.map((e) => tokenizer.tokenize(e))
    const unknown = all.flatMap((t, index) => t.tokens.some((tok) => tok.known) ? [] : [{ index, words: t.tokens.map((x) => x.text) }])
    if (unknown.length > 0) throw noKnownWords(unknown, expressions.length)
    return all
  }

  function fromCache (key: string, hit: CachedImage): PreparedImage {
    const now = performance.now()
    return { job: { features: hit.features, key, geometry: hit.geometry }, format: hit.format, cache: 'hit', decodedAt: now, letterboxedAt: now }
  }

  /** The decoded (small) and letterboxed tensor, announced to the engine while it is made. */
  async function prepareImage (bytes: Buffer, header: ImageHeader, key: string | undefined): Promise<PreparedImage> {
    return await engine.announce(async (): Promise<PreparedImage> => {
      const { data, geometry } = await loadLetterboxed(bytes, header, manifest.input, { maxPixels: maxImagePixels })
      const now = performance.now()
      const job = { image: data, key, wantFeatures: key !== undefined, geometry }
      // One pipeline decodes and resizes: its time is reported as decoding.
      return { job, format: header.format, cache: key !== undefined ? 'miss' : 'off', decodedAt: now, letterboxedAt: now }
    })
  }

  /** After a miss, the features the engine computed for the image go into the cache. */
  function remember (image: PreparedImage, features: ImageFeatures | undefined): void {
    if (image.cache === 'miss' && features !== undefined) cache.set(image.job.key!, { features, geometry: image.job.geometry, format: image.format })
  }

  /** One row of the engine's answer as the client sees it: the encoded mask, each query's confidence and attention. */
  function encode (row: RowResult, expression: string, tokenized: Tokenized): ExpressionResult {
    const { maxWords: L, numQueries } = manifest
    const n = tokenized.tokens.length
    const queries = Array.from({ length: numQueries }, (_, q): QueryResult => ({
      confidence: row.confidence[q],
      attention: Array.from(row.attention.subarray(q * L, q * L + n)),
    }))
    return { expression, tokens: tokenized.tokens, mask: row.mask, score: row.score, bbox: row.bbox, area: row.area, queries }
  }

  return {
    info: modelInfo(manifest, vocab, weightsBytes),
    started: engine.started,
    isReady: engine.isReady,
    provider: engine.provider,
    stats: engine.stats,
    segment,
    cacheStats: cache.stats,
    close: engine.close,
  }
}

/**
 * The work of one request that holds its memory lease: the segment call itself and each piece
 * started with track()/hold() (a decode, an engine job). The lease is released when all of them
 * have ended, even when the request was answered before (504, client gone).
 */
function holdWork (leases: Lease[]): { add: (lease: Lease) => void, hold: () => () => void, track: <T>(p: Promise<T>) => Promise<T>, end: () => void } {
  const held = [...leases]
  let pending = 0
  const hold = (): () => void => {
    pending++
    let done = false
    return () => {
      if (done) return
      done = true
      if (--pending === 0) for (const l of held) l.release()
    }
  }
  const end = hold()
  return {
    add: (lease) => { held.push(lease) },
    hold,
    track: <T>(p: Promise<T>): Promise<T> => {
      const done = hold()
      p.then(done, done)
      return p
    },
    end,
  }
}

/** `p`, unless the request's deadline passes (504) or its client leaves first; `p` itself runs on. */
async function within<T> (p: Promise<T>, req: Pick<SegmentRequest, 'deadline' | 'timeoutMs' | 'signal'>): Promise<T> {
  if (req.signal?.aborted === true) { p.catch(() => {}); throw ERR_CLIENT_CLOSED() }
  const left = req.deadline - Date.now()
  let timer: NodeJS.Timeout | undefined
  let onAbort: (() => void) | undefined
  const stop = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(ERR_DEADLINE(Math.round(req.timeoutMs ?? left))), Math.max(0, left))
    onAbort = () => reject(ERR_CLIENT_CLOSED())
    req.signal?.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([p, stop])
  } finally {
    clearTimeout(timer)
    if (onAbort !== undefined) req.signal?.removeEventListener('abort', onAbort)
    p.catch(() => {})
  }
}

function modelInfo (manifest: Manifest, vocab: string[], weightsBytes: number): ModelInfo {
  const { name, version, preset, maskSize, maxWords, numQueries, threshold } = manifest
  return { name, version, preset, inputSize: manifest.input.size, maskSize, maxWords, numQueries, threshold, vocabSize: vocab.length, weightsBytes, metadata: manifest.raw }
}

/** The config sections a segmenter built from a model folder reads. */
export type SegmenterSettings = ConfigSection<'segmenter'> & EngineSettings

export interface FolderOptions extends SegmenterSettings {
  /** The model folder. */
  modelPath: string
  /** Use model.json `split` when present (default true); false: always model.onnx (a folder without it then refuses to start). */
  splitGraphs?: boolean
  hooks?: EngineHooks
  logger: EngineLogger
  /** Tests: a different worker script. */
  workerUrl?: URL
  budget?: Budget
}

/** Builds a segmenter whose engine reports to `hooks` (app.ts passes the metrics' hooks) and whose requests are admitted by `budget`. */
export type SegmenterFactory = (hooks: EngineHooks, budget?: Budget) => Segmenter | Promise<Segmenter>

/** Load and verify the model folder, then start its engine (whose workers run the golden case). */
export async function createSegmenterFromFolder (opts: FolderOptions): Promise<Segmenter> {
  const { manifest, vocab, graphs } = await loadModelFolder(opts.modelPath)
  const split = opts.splitGraphs === false ? undefined : graphs.split
  if (split === undefined && graphs.modelFile === undefined) throw new ManifestError(`${manifest.dir} ships only the split graphs (no model.onnx in model.json), and they were turned off`)
  // Without the split graphs there are no features to cache.
  const cache = createFeatureCache(split !== undefined ? Math.round(opts.featureCacheMb * 1024 * 1024) : 0, featureSalt(manifest))
  const files = split !== undefined ? [split.encoderFile, split.headFile] : [graphs.modelFile as string]
  const weightsBytes = (await Promise.all(files.map(async (f) => (await stat(f)).size))).reduce((a, b) => a + b, 0)
  const engine = createEngine({ model: { ...graphs, split }, settings: opts, hooks: opts.hooks, logger: opts.logger, workerUrl: opts.workerUrl })
  return createSegmenter({ manifest, vocab, engine, maxImagePixels: opts.maxImagePixels, cache, budget: opts.budget, weightsBytes })
}
