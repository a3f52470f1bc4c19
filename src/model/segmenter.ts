/**
 * The segmenter: one image + K expressions in, K masks out, for one model. Its `segment` is the
 * request path below the route, in five steps (docs/architecture.md):
 *
 *   validate   the threshold (model.json's unless the request gives one)
 *   tokenize   model/tokenizer; an expression without a known word is refused (422)
 *   prepare    the image's cached backbone features (engine/feature-cache), or image/preprocess
 *              (decode, EXIF, letterbox — once per request)
 *   run        the engine: queue, batch, session.run, un-letterbox + threshold in a worker
 *   encode     image/png for each mask, and each query's confidence and word attention
 *
 * `createSegmenter` takes an already-built engine so tests can drive the real pre- and
 * post-processing with a fake runtime; `createSegmenterFromFolder` builds the real one.
 */
import { stat } from 'node:fs/promises'
import type { ConfigSection } from '../config.js'
import { ERR_THRESHOLD, noKnownWords } from '../errors.js'
import { createEngine, type Engine, type EngineHooks, type EngineLogger, type EngineSettings, type InferenceJob } from '../engine/engine.js'
import { createFeatureCache, type FeatureCache, type FeatureCacheStats } from '../engine/feature-cache.js'
import type { ImageFeatures, RowResult } from '../engine/protocol.js'
import { encodeMaskPng } from '../image/png.js'
import { isThreshold } from '../image/postprocess.js'
import { decodeImage, type Geometry, letterbox } from '../image/preprocess.js'
import { featureSalt, loadModelFolder, type Manifest } from './manifest.js'
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
  /** The same mask, 0 / 255 per pixel, row-major (the engine's buffer, not a copy): the other encodings read it. */
  mask: Uint8Array
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

export function createSegmenter ({ manifest, vocab, engine, maxImagePixels, cache = createFeatureCache(0, ''), weightsBytes = 0 }: SegmenterOptions): Segmenter {
  const tokenizer = createTokenizer(vocab, { maxWords: manifest.maxWords, ...manifest.vocab })

  async function segment (req: SegmentRequest): Promise<SegmentResult> {
    const t0 = performance.now()
    const threshold = req.threshold ?? manifest.threshold
    if (!isThreshold(threshold)) throw ERR_THRESHOLD(threshold)
    const tokenized = tokenize(req.expressions)
    const image = await prepareImage(req.image)
    const out = await engine.run({ ...image.job, threshold, tokens: tokenized.map((t) => t.ids) }, req)
    remember(image, out.features)
    const ran = performance.now()
    const { geometry } = image.job
    const results = await Promise.all(out.rows.map(async (row, k) => await encode(row, req.expressions[k], tokenized[k], geometry)))
    const done = performance.now()
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

  /** A cache hit, or the decoded and letterboxed tensor (announced to the engine while it is made). */
  async function prepareImage (bytes: Buffer): Promise<PreparedImage> {
    const key = cache.enabled ? cache.key(bytes) : undefined
    const hit = key !== undefined ? cache.get(key) : undefined
    if (hit !== undefined) {
      const now = performance.now()
      return { job: { features: hit.features, key, geometry: hit.geometry }, format: hit.format, cache: 'hit', decodedAt: now, letterboxedAt: now }
    }
    return await engine.announce(async (): Promise<PreparedImage> => {
      const decoded = await decodeImage(bytes, { maxPixels: maxImagePixels })
      const decodedAt = performance.now()
      const { data, geometry } = await letterbox(decoded, manifest.input)
      const job = { image: data, key, wantFeatures: key !== undefined, geometry }
      return { job, format: decoded.format, cache: key !== undefined ? 'miss' : 'off', decodedAt, letterboxedAt: performance.now() }
    })
  }

  /** After a miss, the features the engine computed for the image go into the cache. */
  function remember (image: PreparedImage, features: ImageFeatures | undefined): void {
    if (image.cache === 'miss' && features !== undefined) cache.set(image.job.key!, { features, geometry: image.job.geometry, format: image.format })
  }

  /** One row of the engine's answer as the client sees it: the mask as PNG, each query's confidence and attention. */
  async function encode (row: RowResult, expression: string, tokenized: Tokenized, geometry: Geometry): Promise<ExpressionResult> {
    const { maxWords: L, numQueries } = manifest
    const n = tokenized.tokens.length
    const queries = Array.from({ length: numQueries }, (_, q): QueryResult => ({
      confidence: row.confidence[q],
      attention: Array.from(row.attention.subarray(q * L, q * L + n)),
    }))
    const png = await encodeMaskPng(row.mask, geometry.width, geometry.height)
    return { expression, tokens: tokenized.tokens, png, mask: row.mask, score: row.score, bbox: row.bbox, area: row.area, queries }
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

function modelInfo (manifest: Manifest, vocab: string[], weightsBytes: number): ModelInfo {
  const { name, version, preset, maskSize, maxWords, numQueries, threshold } = manifest
  return { name, version, preset, inputSize: manifest.input.size, maskSize, maxWords, numQueries, threshold, vocabSize: vocab.length, weightsBytes, metadata: manifest.raw }
}

/** The config sections a segmenter built from a model folder reads. */
export type SegmenterSettings = ConfigSection<'segmenter'> & EngineSettings

export interface FolderOptions extends SegmenterSettings {
  /** The model folder. */
  modelPath: string
  /** Use model.json `split` when present (default true); false: always model.onnx. */
  splitGraphs?: boolean
  hooks?: EngineHooks
  logger: EngineLogger
  /** Tests: a different worker script. */
  workerUrl?: URL
}

/** Builds a segmenter whose engine reports to `hooks` (app.ts passes the metrics' hooks). */
export type SegmenterFactory = (hooks: EngineHooks) => Segmenter | Promise<Segmenter>

/** Load and verify the model folder, then start its engine (whose workers run the golden case). */
export async function createSegmenterFromFolder (opts: FolderOptions): Promise<Segmenter> {
  const { manifest, vocab, graphs } = await loadModelFolder(opts.modelPath)
  const split = opts.splitGraphs === false ? undefined : graphs.split
  // Without the split graphs there are no features to cache.
  const cache = createFeatureCache(split !== undefined ? Math.round(opts.featureCacheMb * 1024 * 1024) : 0, featureSalt(manifest))
  const files = split !== undefined ? [split.encoderFile, split.headFile] : [graphs.modelFile]
  const weightsBytes = (await Promise.all(files.map(async (f) => (await stat(f)).size))).reduce((a, b) => a + b, 0)
  const engine = createEngine({ model: { ...graphs, split }, settings: opts, hooks: opts.hooks, logger: opts.logger, workerUrl: opts.workerUrl })
  return createSegmenter({ manifest, vocab, engine, maxImagePixels: opts.maxImagePixels, cache, weightsBytes })
}
