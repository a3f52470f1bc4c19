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
 */
import type { Geometry } from '../image/preprocess.js'

export interface WorkerInit {
  /** Absolute path of model.onnx. */
  modelFile: string
  inputNames: readonly string[]
  outputNames: readonly string[]
  /** Preference order, e.g. ['cuda', 'cpu']. */
  executionProviders: string[]
  requireGpu: boolean
  threads: number
  /** S, m, L, Nq */
  size: number
  maskSize: number
  maxWords: number
  numQueries: number
  golden?: GoldenCheck
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
  /** [3, S, S] */
  image: Float32Array
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
}

export type ToWorker = { type: 'run', batchId: number, jobs: RunJob[] }

export type FromWorker =
  | { type: 'ready', provider: string, golden: GoldenReport | null }
  | { type: 'failed', message: string, fatal: boolean }
  | { type: 'result', batchId: number, results?: JobResult[], error?: string, inferenceMs: number, postprocessMs: number }
  | { type: 'log', level: 'info' | 'warn' | 'error', msg: string, data?: Record<string, unknown> }

export interface GoldenReport {
  /** max |Δ| per output */
  maxAbsDiff: Record<string, number>
}
