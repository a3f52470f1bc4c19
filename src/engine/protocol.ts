/**
 * The engine's contract with the graphs and with its worker threads: the tensor names it feeds
 * and reads, and the messages between the engine (main thread) and a worker.
 *
 *   main → worker   { type: 'run', batchId, jobs: [RunJob…] }        one session.run over all rows
 *   worker → main   { type: 'ready', provider, golden }               after model load + golden check
 *                   { type: 'failed', message, fatal }                could not start (exits next)
 *                   { type: 'result', batchId, results | error, … }   one per 'run'
 *                   { type: 'log', level, msg, data }                 worker log lines
 *
 * A batch is a list of jobs (one image + K token rows each) so the engine can gather concurrent
 * requests into one session.run (dynamic micro-batching); the worker answers per job, so a job
 * whose client left or whose deadline passed is simply dropped on the main side.
 *
 * With the split graphs (model.json `split`), a job carries either the image tensor or the
 * image's cached backbone features (ImageFeatures, in a SharedArrayBuffer: posting it shares the
 * memory, nothing is copied). The worker runs image_encoder once per distinct image of the batch
 * and head once over all token rows, and returns the features of the images it encoded when the
 * job asks for them (so the main thread can cache them).
 */
import type { ConfigSection } from '../config.js'
import type { Mask, MaskEncoding } from '../image/mask-formats.js'
import type { Geometry } from '../image/preprocess.js'

/** What the engine feeds the network (model.onnx; head.onnx takes `tokens` and the feature maps). */
export const GRAPH_INPUTS = ['image', 'tokens'] as const
/** What the engine reads back (model.onnx and head.onnx). */
export const GRAPH_OUTPUTS = ['mask_logits', 'query_confidence', 'word_attention'] as const
export type GraphOutput = typeof GRAPH_OUTPUTS[number]

/** The network's sizes: S (input side), m (mask logits side), L (words), Nq (queries). */
export interface GraphShape {
  size: number
  maskSize: number
  maxWords: number
  numQueries: number
}

/** The graph files a worker loads. */
export interface GraphFiles {
  /** Absolute path of model.onnx; absent when the folder ships only the split graphs. */
  modelFile?: string
  /** The same network split at the backbone; when set the worker loads these instead of model.onnx. */
  split?: SplitFiles
}

/** How a worker opens its ONNX Runtime sessions (the config's `session` section). */
export type SessionSettings = ConfigSection<'session'>

/** What the engine needs to know of a model: its graphs, their sizes and the golden case. */
export interface ModelGraphs extends GraphFiles, GraphShape {
  golden?: GoldenCheck
}

export interface WorkerInit extends ModelGraphs {
  session: SessionSettings
}

export interface SplitFiles {
  /** Absolute paths. */
  encoderFile: string
  headFile: string
  /** image_encoder's outputs = head's feature inputs, in order (fv0, fv1, fv2). */
  featureNames: string[]
}

/**
 * Backbone features of one image: every feature map concatenated (C order, batch axis dropped),
 * in memory shared between threads.
 */
export interface ImageFeatures {
  /** Backed by a SharedArrayBuffer. */
  data: Float32Array
  /** One shape per feature map, without the batch axis, e.g. [[256,7,7],[128,14,14],[64,28,28]]. */
  shapes: number[][]
}

/** The golden case run by every worker before it reports ready. */
export interface GoldenCheck {
  input: Float32Array
  tokens: number[]
  outputs: Record<string, Float32Array>
  atol: number
  rtol: number
}

export interface RunJob {
  id: number
  /** [3, S, S]; absent when `features` is given. */
  image?: Float32Array
  /** The image's backbone features (a cache hit): the worker runs only the head. */
  features?: ImageFeatures
  /** Content key of the image: jobs of one batch with the same key share one backbone pass. */
  key?: string
  /** Return the backbone features computed for this job's image (to be cached). */
  wantFeatures?: boolean
  /** K rows of exactly L ids (the tokenizer pads them). */
  tokens: number[][]
  geometry: Geometry
  threshold: number
  /** The encoding of the masks the worker returns; absent: png. */
  format?: MaskEncoding
}

export interface RowResult {
  /**
   * The mask (255 on the object, geometry.width × geometry.height) in the job's format (an 8-bit
   * greyscale PNG by default): the worker encodes it, so the full-size plane never leaves the worker.
   */
  mask: Mask
  area: number
  bbox: [number, number, number, number] | null
  score: number
  /** Nq */
  confidence: Float32Array
  /** Nq × L */
  attention: Float32Array
}

export interface JobResult {
  id: number
  rows: RowResult[]
  /** When the job asked for them and its image went through the backbone in this batch. */
  features?: ImageFeatures
}

export type ToWorker = { type: 'run', batchId: number, jobs: RunJob[] }

export type FromWorker =
  | { type: 'ready', provider: string, golden: GoldenReport | null }
  | { type: 'failed', message: string, fatal: boolean }
  | { type: 'result', batchId: number, results?: JobResult[], error?: string, inferenceMs: number, postprocessMs: number, encoded?: number }
  | { type: 'log', level: 'info' | 'warn' | 'error', msg: string, data?: Record<string, unknown> }

export interface GoldenReport {
  /** max |Δ| per output */
  maxAbsDiff: Record<string, number>
}
