/**
 * Messages between the pool (main thread) and an inference worker.
 *
 *   main → worker   { type: 'run', batchId, jobs: [RunJob…] }        one session.run over all rows
 *   worker → main   { type: 'ready', provider, golden }               after model load + golden check
 *                   { type: 'failed', message, fatal }                could not start (exits next)
 *                   { type: 'result', batchId, results | error, … }   one per 'run'
 *                   { type: 'log', level, msg, data }                 worker log lines
 *
 * A batch is a list of jobs (one image + K token rows each) so the pool can gather concurrent
 * requests into one session.run (dynamic micro-batching); the worker answers per job, so a job
 * whose client left or whose deadline passed is simply dropped on the main side.
 *
 * With the split graphs (model.json `split`), a job carries either the image tensor or the
 * image's cached backbone features (ImageFeatures, in a SharedArrayBuffer: posting it shares the
 * memory, nothing is copied). The worker runs image_encoder once per distinct image of the batch
 * and head once over all token rows, and returns the features of the images it encoded when the
 * job asks for them (so the main thread can cache them).
 */
import type { Geometry } from '../image/preprocess.js'

export interface WorkerInit {
  /** Absolute path of model.onnx. */
  modelFile: string
  /** The same network split at the backbone; when set the worker loads these instead of model.onnx. */
  split?: SplitFiles
  inputNames: readonly string[]
  outputNames: readonly string[]
  /** Preference order, e.g. ['cuda', 'cpu']. */
  executionProviders: string[]
  requireGpu: boolean
  /** ONNX Runtime device_id for the cuda and tensorrt providers (absent: 0). */
  cudaDeviceId?: number
  threads: number
  /** ONNX Runtime's session.intra_op.allow_spinning (absent: ONNX Runtime's default, on). */
  spinning?: boolean
  /** S, m, L, Nq */
  size: number
  maskSize: number
  maxWords: number
  numQueries: number
  golden?: GoldenCheck
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
  /** K rows of L ids */
  tokens: number[][]
  geometry: Geometry
  threshold: number
}

export interface RowResult {
  /** 0/255, geometry.width × geometry.height */
  mask: Uint8Array
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
