/**
 * Service configuration: one table of environment variables, validated once at start-up
 * (src/server.ts) and exposed as a typed, frozen object (`app.config`).
 *
 * Each row of SETTINGS names a variable, the section of the service that reads it, its JSON
 * schema (type, range, default, description), where the value is not used as it comes, a parser
 * and, where a GPU wants another default, that default (used when a GPU provider is listed first
 * in EXECUTION_PROVIDERS and the variable is unset). The env schema, the Config type
 * (MAX_BATCH_WAIT_MS → `maxBatchWaitMs`) and the mapping are all derived from it. A consumer
 * takes its section (`ConfigSection<'engine'>`), and the whole config object is passed where a
 * section is expected, so no field is copied under another name.
 *
 * Nothing else reads `process.env`. An invalid value stops the server with a message that names
 * the variable. Never branch on NODE_ENV: every behaviour has its own variable.
 */
import os from 'node:os'
import { Ajv } from 'ajv'

export const PROVIDERS = ['cpu', 'cuda', 'tensorrt', 'webgpu', 'dml', 'coreml'] as const
export type ExecutionProvider = typeof PROVIDERS[number]

/**
 * Who reads a setting: `server` (src/server.ts, src/app.ts), `http` (the routes' request limits),
 * `auth` (src/plugins/auth.ts), `models` (the model repository, src/model/repository.ts), `segmenter`
 * (src/model/segmenter.ts), `engine` (src/engine/engine.ts, main thread), `session` (the ONNX Runtime
 * sessions, sent to each engine worker) and `budget` (src/budget/, the memory budget).
 */
export type Section = 'server' | 'http' | 'auth' | 'models' | 'segmenter' | 'engine' | 'session' | 'budget'

interface Setting {
  section: Section
  schema: { readonly type: 'string' | 'integer' | 'number' | 'boolean', readonly default: unknown, readonly [k: string]: unknown }
  /** Turns the validated value into the config field (throws an Error whose message says what is wrong). */
  parse?: (value: any) => unknown
  /**
   * The default when the first execution provider is a GPU one, in place of the schema's (a value
   * set in the environment is kept). The schema's description gets it appended.
   */
  gpuDefault?: number
}

const list = (s: string): string[] => String(s).split(',').map((x) => x.trim()).filter((x) => x !== '')

function parseProviders (value: string): ExecutionProvider[] {
  const providers = list(value).map((s) => s.toLowerCase())
  for (const p of providers) {
    if (!(PROVIDERS as readonly string[]).includes(p)) throw new Error(`unknown provider ${JSON.stringify(p)} (known: ${PROVIDERS.join(', ')})`)
  }
  if (new Set(providers).size !== providers.length) throw new Error('a provider is listed twice')
  return providers as ExecutionProvider[]
}

/** Every variable is optional; its default is in its schema. */
const SETTINGS = {
  MODEL_PATH: { section: 'models', schema: { type: 'string', minLength: 1, default: 'models/vlt-refshapes-int8', description: 'model folder (model.json, its graphs, vocab.txt, golden.json), served alone when MODELS_DIR is not set' } },
  MODELS_DIR: { section: 'models', schema: { type: 'string', default: '', description: 'model repository: one folder per model, either <name>/<version>/ (the highest version is served) or <name>/ holding model.json itself; when set, MODEL_PATH is not used' } },
  DEFAULT_MODEL: { section: 'models', schema: { type: 'string', pattern: '^([A-Za-z0-9][A-Za-z0-9._-]*)?$', default: '', description: 'the model a request without a model field gets; empty = the first model by name' } },
  MODELS_POLL_MS: { section: 'models', schema: { type: 'integer', minimum: 0, maximum: 86_400_000, default: 0, description: 'rescan the models every this many ms and roll in what changed (0 = only on SIGHUP or POST /admin/reload)' } },
  ADMIN_API_KEYS: { section: 'auth', schema: { type: 'string', default: '', description: 'comma-separated keys for the admin routes (POST /admin/reload, Authorization: Bearer <key>); empty = admin routes refuse every request' }, parse: list },
  HOST: { section: 'server', schema: { type: 'string', minLength: 1, default: '0.0.0.0' } },
  PORT: { section: 'server', schema: { type: 'integer', minimum: 0, maximum: 65535, default: 8080 } },
  LOG_LEVEL: { section: 'server', schema: { type: 'string', enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' } },
  EXECUTION_PROVIDERS: { section: 'session', schema: { type: 'string', pattern: '^\\s*[a-z]+(\\s*,\\s*[a-z]+)*\\s*$', default: 'cpu', description: `comma-separated, in order of preference: ${PROVIDERS.join(', ')}` }, parse: parseProviders },
  REQUIRE_GPU: { section: 'session', schema: { type: 'boolean', default: false, description: 'exit instead of falling back to CPU when no GPU provider loads' } },
  CUDA_DEVICE_ID: { section: 'session', schema: { type: 'integer', minimum: 0, maximum: 255, default: 0, description: 'the GPU the cuda and tensorrt providers run on (ONNX Runtime device_id); one process per GPU' } },
  // One worker on a GPU: the device runs one session.run at a time anyway, and a second session
  // would only hold a second copy of the weights and of ONNX Runtime's memory arena on it; requests
  // queued behind the running batch go together into the next one.
  WORKERS: { section: 'engine', schema: { type: 'integer', minimum: 0, maximum: 64, default: 0, description: 'engine worker threads; 0 = derive from the CPU count (max(2, CPUs / 2))' }, gpuDefault: 1 },
  THREADS_PER_WORKER: { section: 'session', schema: { type: 'integer', minimum: 0, maximum: 256, default: 0, description: 'ONNX Runtime intra-op threads per worker; 0 = derive from the CPU count (2; 1 on one CPU)' } },
  INTRA_OP_SPINNING: { section: 'session', schema: { type: 'boolean', default: false, description: 'ONNX Runtime intra-op threads busy-wait between parallel sections; off by default, because spinning threads take the cores the event loop, decoding and the other worker need (only matters with THREADS_PER_WORKER > 1)' } },
  MAX_IMAGE_BYTES: { section: 'http', schema: { type: 'integer', minimum: 1024, default: 20 * 1024 * 1024, description: 'bytes of the uploaded file (413 SEG_ERR_PAYLOAD_TOO_LARGE)' } },
  MAX_IMAGE_PIXELS: { section: 'segmenter', schema: { type: 'integer', minimum: 1, default: 40_000_000, description: 'width × height of the image, checked on its header before decoding (413 SEG_ERR_IMAGE_TOO_LARGE)' } },
  MAX_TEXT_LENGTH: { section: 'http', schema: { type: 'integer', minimum: 1, maximum: 10_000, default: 500, description: 'characters per expression (400 SEG_ERR_EXPRESSION_TOO_LONG)' } },
  MAX_EXPRESSIONS: { section: 'http', schema: { type: 'integer', minimum: 1, maximum: 64, default: 8, description: 'expressions per request (400 SEG_ERR_TOO_MANY_EXPRESSIONS)' } },
  MAX_FORM_FIELDS: { section: 'http', schema: { type: 'integer', minimum: 1, maximum: 1000, default: 16, description: 'text fields per multipart body (413 SEG_ERR_TOO_MANY_FIELDS)' } },
  MAX_FORM_PARTS: { section: 'http', schema: { type: 'integer', minimum: 2, maximum: 1000, default: 20, description: 'parts (fields + files) per multipart body (413 SEG_ERR_TOO_MANY_PARTS)' } },
  // Bigger batches and a little more wait on a GPU: there a batch of 32 rows is expected to cost far
  // less than 32 batches of one (bench/gpu-check.sh measures batch 1, 8 and 32; BENCHMARKS.md says
  // where it has run), where on the CPU a batch costs about the sum of its rows (BENCHMARKS.md, raw
  // ONNX Runtime).
  MAX_BATCH: { section: 'engine', schema: { type: 'integer', minimum: 1, maximum: 256, default: 8, description: 'rows per session.run' }, gpuDefault: 32 },
  MAX_BATCH_WAIT_MS: { section: 'engine', schema: { type: 'number', minimum: 0, maximum: 1000, default: 2, description: 'how long a worker waits to fill a batch' }, gpuDefault: 5 },
  FEATURE_CACHE_MB: { section: 'segmenter', schema: { type: 'number', minimum: 0, maximum: 1_000_000, default: 64, description: 'LRU cache of backbone features by image content (a repeated image skips the backbone); 0 = off' } },
  QUEUE_SIZE: { section: 'engine', schema: { type: 'integer', minimum: 0, maximum: 100_000, default: 64, description: 'requests waiting for a worker before 503' } },
  REQUEST_TIMEOUT_MS: { section: 'http', schema: { type: 'integer', minimum: 1, maximum: 600_000, default: 15_000, description: 'one deadline for the whole request, from its arrival through upload, decoding, queueing, inference and encoding (504 after it; 408 while the body is still arriving)' } },
  BODY_IDLE_TIMEOUT_MS: { section: 'http', schema: { type: 'integer', minimum: 1, maximum: 600_000, default: 5_000, description: 'a request body from which no byte arrives for this long is cut (408 SEG_ERR_REQUEST_TIMEOUT)' } },
  HEADERS_TIMEOUT_MS: { section: 'server', schema: { type: 'integer', minimum: 1, maximum: 600_000, default: 10_000, description: 'time a client gets to send the request headers (the connection is closed after it)' } },
  KEEP_ALIVE_TIMEOUT_MS: { section: 'server', schema: { type: 'integer', minimum: 1, maximum: 600_000, default: 5_000, description: 'an idle keep-alive connection is closed after this long' } },
  MAX_CONNECTIONS: { section: 'server', schema: { type: 'integer', minimum: 1, maximum: 100_000, default: 256, description: 'open client connections; more are closed at once' } },
  MEMORY_BUDGET_MB: { section: 'budget', schema: { type: 'number', minimum: 0, maximum: 16_777_216, default: 0, description: 'memory the service may use, in MiB; 0 = the cgroup limit (v2 memory.max, v1 memory.limit_in_bytes), else the physical memory. With a cgroup limit too, the smaller one counts' } },
  MEMORY_RESERVE_MB: { section: 'budget', schema: { type: 'number', minimum: 0, maximum: 16_777_216, default: 0, description: 'memory kept for the model, the workers and the runtime, in MiB; 0 = measured: resident memory once the workers are ready, plus the inference working set of each worker and a safety margin' } },
  SHUTDOWN_GRACE_MS: { section: 'server', schema: { type: 'integer', minimum: 0, maximum: 600_000, default: 15_000, description: 'time accepted requests get to finish on SIGTERM/SIGINT; the default equals REQUEST_TIMEOUT_MS\'s, so a request accepted just before the signal can still finish' } },
  SHUTDOWN_DELAY_MS: { section: 'server', schema: { type: 'integer', minimum: 0, maximum: 600_000, default: 0, description: 'on SIGTERM/SIGINT, keep listening this long (readiness 503, new /segment 503) before closing the listener' } },
  API_KEYS: { section: 'auth', schema: { type: 'string', default: '', description: 'comma-separated API keys; when set, requests need Authorization: Bearer <key> (401 SEG_ERR_UNAUTHORIZED)' }, parse: list },
  AUTH_OPEN_PATHS: { section: 'auth', schema: { type: 'string', default: '/healthz,/readyz,/metrics', description: 'comma-separated paths that need no API key' }, parse: list },
  RATE_LIMIT_RPS: { section: 'auth', schema: { type: 'number', minimum: 0, maximum: 100_000, default: 0, description: 'requests per second per API key (token bucket; 0 = no limit; 429 SEG_ERR_RATE_LIMITED)' } },
  RATE_LIMIT_BURST: { section: 'auth', schema: { type: 'integer', minimum: 1, maximum: 100_000, default: 20, description: 'token bucket size per API key' } },
  LOG_EXPRESSIONS: { section: 'http', schema: { type: 'boolean', default: false, description: 'include expression text in logs' } },
} as const satisfies Record<string, Setting>

type Settings = typeof SETTINGS
type Variable = keyof Settings

/** MAX_BATCH_WAIT_MS → maxBatchWaitMs */
type FieldName<S extends string> = S extends `${infer Head}_${infer Tail}` ? `${Lowercase<Head>}${Capitalize<FieldName<Tail>>}` : Lowercase<S>
type SchemaValue<S> = S extends { enum: ReadonlyArray<infer E> } ? E
  : S extends { type: 'integer' | 'number' } ? number
    : S extends { type: 'boolean' } ? boolean
      : string
type FieldValue<V extends Variable> = Settings[V] extends { parse: (value: any) => infer R } ? R : SchemaValue<Settings[V]['schema']>

export type Config = { readonly [V in Variable as FieldName<V>]: FieldValue<V> }

/** The fields of one or more sections, e.g. ConfigSection<'engine' | 'session'>. */
export type ConfigSection<S extends Section> = Pick<Config, { [V in Variable]: Settings[V]['section'] extends S ? FieldName<V> : never }[Variable]>

const fieldName = (variable: string): string => variable.toLowerCase().replace(/_([a-z])/g, (_, ch: string) => ch.toUpperCase())

/** The environment schema, derived from SETTINGS. */
export const envSchema = {
  type: 'object',
  additionalProperties: true,
  properties: Object.fromEntries((Object.entries(SETTINGS) as Array<[string, Setting]>).map(([v, s]) => [v, withGpuDefault(s)])) as { [V in Variable]: Settings[V]['schema'] },
} as const

function withGpuDefault ({ schema, gpuDefault }: Setting): Setting['schema'] {
  if (gpuDefault === undefined) return schema
  return { ...schema, description: `${String(schema.description)}; ${gpuDefault} when a GPU provider is listed first` }
}

/** The defaults that replace the schema's when a GPU provider is listed first, from SETTINGS. */
export const GPU_DEFAULTS = Object.fromEntries((Object.entries(SETTINGS) as Array<[string, Setting]>)
  .filter(([, s]) => s.gpuDefault !== undefined).map(([v, s]) => [v, s.gpuDefault])) as
  { readonly [V in Variable as Settings[V] extends { gpuDefault: number } ? V : never]: Settings[V] extends { gpuDefault: infer D } ? D : never }

/** The fields of `config` that belong to `sections` (what a worker thread is sent, for instance). */
export function section<S extends Section> (config: ConfigSection<S>, ...sections: S[]): ConfigSection<S> {
  const out: Record<string, unknown> = {}
  for (const [v, s] of Object.entries(SETTINGS)) {
    if ((sections as Section[]).includes(s.section)) out[fieldName(v)] = (config as Record<string, unknown>)[fieldName(v)]
  }
  return out as ConfigSection<S>
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

const invalid = (variable: string, raw: unknown, why: string): ConfigError =>
  new ConfigError(variable, `Invalid environment variable ${variable}=${JSON.stringify(raw ?? '')}: ${why}`)

/**
 * Validate the environment and return the typed config. Throws ConfigError naming the variable.
 * `cpuCount` is injectable so the derived defaults can be tested.
 */
export function loadConfig (env: Env = {}, cpuCount: number = os.availableParallelism()): Config {
  const data: Record<string, unknown> = {}
  for (const [key, { schema }] of Object.entries(SETTINGS)) {
    const raw = env[key]
    // An empty variable means "unset" (as in `PORT= npm start`).
    if (raw === undefined || raw.trim() === '') continue
    const v = raw.trim()
    data[key] = schema.type === 'boolean' ? parseBoolean(v) : v
  }
  const given = new Set(Object.keys(data)) // before validation fills in the defaults
  if (!validateEnv(data)) {
    const e = validateEnv.errors![0]
    const variable = e.instancePath.replace(/^\//, '') || String(e.params?.missingProperty ?? 'environment')
    throw invalid(variable, env[variable], e.message ?? 'invalid')
  }
  const config: Record<string, unknown> = {}
  for (const [key, setting] of Object.entries(SETTINGS) as Array<[string, Setting]>) {
    try {
      config[fieldName(key)] = setting.parse !== undefined ? setting.parse(data[key]) : data[key]
    } catch (err) {
      throw invalid(key, env[key], (err as Error).message)
    }
  }
  const c = config as { -readonly [K in keyof Config]: Config[K] }
  if (c.executionProviders.length > 0 && c.executionProviders[0] !== 'cpu') {
    for (const [key, value] of Object.entries(GPU_DEFAULTS)) if (!given.has(key)) config[fieldName(key)] = value
  }
  if (c.requireGpu && !c.executionProviders.some((p) => p !== 'cpu')) {
    throw new ConfigError('REQUIRE_GPU', 'Invalid environment variable REQUIRE_GPU=true: EXECUTION_PROVIDERS lists no GPU provider')
  }
  Object.assign(c, deriveParallelism(c.workers, c.threadsPerWorker, cpuCount))
  return Object.freeze(c)
}

/** Booleans as people write them in an environment; anything else is left for the schema to refuse. */
function parseBoolean (v: string): boolean | string {
  const s = v.toLowerCase()
  if (['1', 'true', 'yes', 'on'].includes(s)) return true
  if (['0', 'false', 'no', 'off'].includes(s)) return false
  return v
}

/**
 * Default: every worker gets 2 intra-op threads, so a lone request runs on two cores, and there are
 * CPUs / 2 workers but never fewer than 2, so that one worker's post-processing and messaging
 * overlap the other's session.run. On 2 CPUs that is 2 × 2 = 4 threads on 2 cores, with
 * INTRA_OP_SPINNING off; the measurement behind this choice is BENCHMARKS.md, "Parallelism
 * settings". Explicit values are kept as given.
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
