/**
 * Service configuration: one JSON schema over the environment variables, validated once at
 * start-up (src/server.ts) and exposed as a typed, frozen object (`app.config`).
 *
 * Nothing else reads `process.env`. An invalid value stops the server with a message that names
 * the variable. Never branch on NODE_ENV: every behaviour has its own variable.
 */
import os from 'node:os'
import { Ajv } from 'ajv'

export const PROVIDERS = ['cpu', 'cuda', 'tensorrt', 'webgpu', 'dml', 'coreml'] as const
export type ExecutionProvider = typeof PROVIDERS[number]

/** The environment schema. Every variable is optional; defaults are given here. */
export const envSchema = {
  type: 'object',
  additionalProperties: true,
  properties: {
    MODEL_PATH: { type: 'string', minLength: 1, default: 'models/vlt-refshapes', description: 'model folder (model.onnx, model.json, vocab.txt, golden.json)' },
    HOST: { type: 'string', minLength: 1, default: '0.0.0.0' },
    PORT: { type: 'integer', minimum: 0, maximum: 65535, default: 8080 },
    LOG_LEVEL: { type: 'string', enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' },
    EXECUTION_PROVIDERS: { type: 'string', pattern: '^\\s*[a-z]+(\\s*,\\s*[a-z]+)*\\s*$', default: 'cpu', description: `comma-separated, in order of preference: ${PROVIDERS.join(', ')}` },
    REQUIRE_GPU: { type: 'boolean', default: false, description: 'exit instead of falling back to CPU when no GPU provider loads' },
    WORKERS: { type: 'integer', minimum: 0, maximum: 64, default: 0, description: 'inference worker threads; 0 = derive from the CPU count (max(2, CPUs / 2))' },
    THREADS_PER_WORKER: { type: 'integer', minimum: 0, maximum: 256, default: 0, description: 'ONNX Runtime intra-op threads per worker; 0 = derive from the CPU count (2; 1 on one CPU)' },
    INTRA_OP_SPINNING: { type: 'boolean', default: false, description: 'ONNX Runtime intra-op threads busy-wait between parallel sections; off by default, because spinning threads take the cores the event loop, decoding and the other worker need (only matters with THREADS_PER_WORKER > 1)' },
    MAX_IMAGE_BYTES: { type: 'integer', minimum: 1024, default: 20 * 1024 * 1024, description: 'bytes of the uploaded file (413 SEG_ERR_PAYLOAD_TOO_LARGE)' },
    MAX_IMAGE_PIXELS: { type: 'integer', minimum: 1, default: 40_000_000, description: 'width × height of the image, checked on its header before decoding (413 SEG_ERR_IMAGE_TOO_LARGE)' },
    MAX_TEXT_LENGTH: { type: 'integer', minimum: 1, maximum: 10_000, default: 500, description: 'characters per expression (400 SEG_ERR_EXPRESSION_TOO_LONG)' },
    MAX_EXPRESSIONS: { type: 'integer', minimum: 1, maximum: 64, default: 8, description: 'expressions per request (400 SEG_ERR_TOO_MANY_EXPRESSIONS)' },
    MAX_FORM_FIELDS: { type: 'integer', minimum: 1, maximum: 1000, default: 16, description: 'text fields per multipart body (413 SEG_ERR_TOO_MANY_FIELDS)' },
    MAX_FORM_PARTS: { type: 'integer', minimum: 2, maximum: 1000, default: 20, description: 'parts (fields + files) per multipart body (413 SEG_ERR_TOO_MANY_PARTS)' },
    MAX_BATCH: { type: 'integer', minimum: 1, maximum: 256, default: 8, description: 'rows per session.run' },
    MAX_BATCH_WAIT_MS: { type: 'number', minimum: 0, maximum: 1000, default: 2, description: 'how long a worker waits to fill a batch' },
    FEATURE_CACHE_MB: { type: 'number', minimum: 0, maximum: 1_000_000, default: 64, description: 'LRU cache of backbone features by image content (a repeated image skips the backbone); 0 = off' },
    QUEUE_SIZE: { type: 'integer', minimum: 0, maximum: 100_000, default: 64, description: 'requests waiting for a worker before 503' },
    REQUEST_TIMEOUT_MS: { type: 'integer', minimum: 1, maximum: 600_000, default: 15_000, description: 'per-request deadline (504 after it)' },
    SHUTDOWN_GRACE_MS: { type: 'integer', minimum: 0, maximum: 600_000, default: 15_000, description: 'time accepted requests get to finish on SIGTERM/SIGINT; the default equals REQUEST_TIMEOUT_MS\'s, so a request accepted just before the signal can still finish' },
    SHUTDOWN_DELAY_MS: { type: 'integer', minimum: 0, maximum: 600_000, default: 0, description: 'on SIGTERM/SIGINT, keep listening this long (readiness 503, new /segment 503) before closing the listener' },
    API_KEYS: { type: 'string', default: '', description: 'comma-separated API keys; when set, requests need Authorization: Bearer <key> (401 SEG_ERR_UNAUTHORIZED)' },
    AUTH_OPEN_PATHS: { type: 'string', default: '/healthz,/readyz,/metrics', description: 'comma-separated paths that need no API key' },
    RATE_LIMIT_RPS: { type: 'number', minimum: 0, maximum: 100_000, default: 0, description: 'requests per second per API key (token bucket; 0 = no limit; 429 SEG_ERR_RATE_LIMITED)' },
    RATE_LIMIT_BURST: { type: 'integer', minimum: 1, maximum: 100_000, default: 20, description: 'token bucket size per API key' },
    LOG_EXPRESSIONS: { type: 'boolean', default: false, description: 'include expression text in logs' },
  },
} as const

export interface Config {
  modelPath: string
  host: string
  port: number
  logLevel: string
  executionProviders: ExecutionProvider[]
  requireGpu: boolean
  workers: number
  threadsPerWorker: number
  intraOpSpinning: boolean
  maxImageBytes: number
  maxImagePixels: number
  maxTextLength: number
  maxExpressions: number
  maxFormFields: number
  maxFormParts: number
  maxBatch: number
  maxBatchWaitMs: number
  featureCacheMb: number
  queueSize: number
  requestTimeoutMs: number
  shutdownGraceMs: number
  shutdownDelayMs: number
  logExpressions: boolean
  /** Empty: no access control. */
  apiKeys: string[]
  authOpenPaths: string[]
  rateLimitRps: number
  rateLimitBurst: number
}

export class ConfigError extends Error {
  readonly variable: string
  constructor (variable: string, message: string) {
    super(message)
    this.name = 'ConfigError'
    this.variable = variable
  }
}

const ajv = new Ajv({ coerceTypes: true, useDefaults: true, allErrors: false, strict: false })
const validateEnv = ajv.compile(envSchema)

type Env = Record<string, string | undefined>

/**
 * Validate the environment and return the typed config. Throws ConfigError naming the variable.
 * `cpuCount` is injectable so the derived defaults can be tested.
 */
export function loadConfig (env: Env = {}, cpuCount: number = os.availableParallelism()): Config {
  const data: Record<string, unknown> = {}
  for (const key of Object.keys(envSchema.properties)) {
    const raw = env[key]
    // An empty variable means "unset" (as in `PORT= npm start`).
    if (raw !== undefined && raw.trim() !== '') data[key] = raw.trim()
  }
  for (const [key, spec] of Object.entries(envSchema.properties)) {
    if (spec.type !== 'boolean') continue
    const raw = data[key]
    if (typeof raw === 'string') {
      const v = raw.toLowerCase()
      if (['1', 'true', 'yes', 'on'].includes(v)) data[key] = true
      else if (['0', 'false', 'no', 'off'].includes(v)) data[key] = false
    }
  }
  if (!validateEnv(data)) {
    const e = validateEnv.errors![0]
    const variable = e.instancePath.replace(/^\//, '') || String(e.params?.missingProperty ?? 'environment')
    throw new ConfigError(variable, `Invalid environment variable ${variable}=${JSON.stringify(env[variable] ?? '')}: ${e.message ?? 'invalid'}`)
  }
  const v = data as Record<string, any>

  const providers = String(v.EXECUTION_PROVIDERS).split(',').map((s) => s.trim().toLowerCase()).filter((s) => s !== '')
  for (const p of providers) {
    if (!(PROVIDERS as readonly string[]).includes(p)) {
      throw new ConfigError('EXECUTION_PROVIDERS', `Invalid environment variable EXECUTION_PROVIDERS=${JSON.stringify(env.EXECUTION_PROVIDERS)}: unknown provider ${JSON.stringify(p)} (known: ${PROVIDERS.join(', ')})`)
    }
  }
  if (new Set(providers).size !== providers.length) {
    throw new ConfigError('EXECUTION_PROVIDERS', `Invalid environment variable EXECUTION_PROVIDERS=${JSON.stringify(env.EXECUTION_PROVIDERS)}: a provider is listed twice`)
  }
  if (v.REQUIRE_GPU === true && !providers.some((p) => p !== 'cpu')) {
    throw new ConfigError('REQUIRE_GPU', 'Invalid environment variable REQUIRE_GPU=true: EXECUTION_PROVIDERS lists no GPU provider')
  }

  const { workers, threadsPerWorker } = deriveParallelism(v.WORKERS, v.THREADS_PER_WORKER, cpuCount)

  return Object.freeze({
    modelPath: v.MODEL_PATH,
    host: v.HOST,
    port: v.PORT,
    logLevel: v.LOG_LEVEL,
    executionProviders: providers as ExecutionProvider[],
    requireGpu: v.REQUIRE_GPU,
    workers,
    threadsPerWorker,
    intraOpSpinning: v.INTRA_OP_SPINNING,
    maxImageBytes: v.MAX_IMAGE_BYTES,
    maxImagePixels: v.MAX_IMAGE_PIXELS,
    maxTextLength: v.MAX_TEXT_LENGTH,
    maxExpressions: v.MAX_EXPRESSIONS,
    maxFormFields: v.MAX_FORM_FIELDS,
    maxFormParts: v.MAX_FORM_PARTS,
    maxBatch: v.MAX_BATCH,
    maxBatchWaitMs: v.MAX_BATCH_WAIT_MS,
    featureCacheMb: v.FEATURE_CACHE_MB,
    queueSize: v.QUEUE_SIZE,
    requestTimeoutMs: v.REQUEST_TIMEOUT_MS,
    shutdownGraceMs: v.SHUTDOWN_GRACE_MS,
    shutdownDelayMs: v.SHUTDOWN_DELAY_MS,
    logExpressions: v.LOG_EXPRESSIONS,
    apiKeys: list(v.API_KEYS),
    authOpenPaths: list(v.AUTH_OPEN_PATHS),
    rateLimitRps: v.RATE_LIMIT_RPS,
    rateLimitBurst: v.RATE_LIMIT_BURST,
  })
}

const list = (s: string): string[] => String(s).split(',').map((x) => x.trim()).filter((x) => x !== '')

/**
 * Default: every worker gets 2 intra-op threads, so a lone request runs on two cores, and there are
 * CPUs / 2 workers but never fewer than 2, so that one worker's post-processing and messaging
 * overlap the other's session.run. On 2 CPUs that is 2 × 2 = 4 threads on 2 cores: measured on
 * this project's 2-vCPU machine (BENCHMARKS.md), 2 × 2 with INTRA_OP_SPINNING off gave a 17 ms p50
 * for a lone request against 27 ms for 2 × 1, at about 7 % fewer requests/s when saturated;
 * 1 × 2 was worse on both. Explicit values are kept as given.
 */
export function deriveParallelism (workers: number, threads: number, cpuCount: number): { workers: number, threadsPerWorker: number } {
  const cpus = Math.max(1, cpuCount)
  if (workers > 0 && threads > 0) return { workers, threadsPerWorker: threads }
  if (workers > 0) return { workers, threadsPerWorker: Math.max(1, Math.floor(cpus / workers)) }
  if (threads > 0) return { workers: Math.max(1, Math.floor(cpus / threads)), threadsPerWorker: threads }
  if (cpus === 1) return { workers: 1, threadsPerWorker: 1 }
  return { workers: Math.max(2, Math.min(8, Math.floor(cpus / 2))), threadsPerWorker: 2 }
}

/** A config for tests and tools: the defaults, with overrides. */
export function defaultConfig (overrides: Partial<Config> = {}): Config {
  return Object.freeze({ ...loadConfig({}, 2), ...overrides })
}
