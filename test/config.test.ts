import t from 'tap'
import { ConfigError, GPU_DEFAULTS, deriveParallelism, envSchema, loadConfig, section } from '../src/config.js'

t.test('defaults: the model folder on 0.0.0.0:8080', async (t) => {
  const c = loadConfig({}, 2)
  t.equal(c.modelPath, 'models/vlt-refshapes-int8')
  t.equal(c.host, '0.0.0.0')
  t.equal(c.port, 8080)
  t.equal(c.logLevel, 'info')
  t.strictSame(c.executionProviders, ['cpu'])
  t.equal(c.requireGpu, false)
  t.equal(c.maxExpressions, 8)
  t.equal(c.logExpressions, false)
  t.equal(c.intraOpSpinning, false)
  t.equal(c.workers, 2)
  t.equal(c.threadsPerWorker, 2)
  t.ok(Object.isFrozen(c))
})

t.test('defaults: a request accepted just before SIGTERM may use its whole deadline', async (t) => {
  const c = loadConfig({}, 2)
  t.ok(c.shutdownGraceMs >= c.requestTimeoutMs, `SHUTDOWN_GRACE_MS ${c.shutdownGraceMs} >= REQUEST_TIMEOUT_MS ${c.requestTimeoutMs}`)
})

t.test('every schema variable maps to a config field', async (t) => {
  const c = loadConfig({}, 2) as unknown as Record<string, unknown>
  for (const key of Object.keys(envSchema.properties)) {
    const field = key.toLowerCase().replace(/_([a-z])/g, (_, ch: string) => ch.toUpperCase())
      .replace('requireGpu', 'requireGpu')
    t.ok(field in c || ['executionProviders'].includes(field), `${key} → ${field}`)
  }
})

t.test('values are coerced from strings', async (t) => {
  const c = loadConfig({
    PORT: '9000', WORKERS: '3', THREADS_PER_WORKER: '2', REQUIRE_GPU: 'true', EXECUTION_PROVIDERS: 'cuda, cpu',
    LOG_EXPRESSIONS: 'yes', MAX_BATCH_WAIT_MS: '2.5', QUEUE_SIZE: '0', HOST: '127.0.0.1', INTRA_OP_SPINNING: 'on',
  }, 2)
  t.equal(c.intraOpSpinning, true)
  t.equal(c.port, 9000)
  t.equal(c.workers, 3)
  t.equal(c.threadsPerWorker, 2)
  t.equal(c.requireGpu, true)
  t.strictSame(c.executionProviders, ['cuda', 'cpu'])
  t.equal(c.logExpressions, true)
  t.equal(c.maxBatchWaitMs, 2.5)
  t.equal(c.queueSize, 0)
  t.equal(c.host, '127.0.0.1')
})

t.test('an empty variable counts as unset', async (t) => {
  t.equal(loadConfig({ PORT: '' }, 2).port, 8080)
})

const bad: Array<[string, string]> = [
  ['PORT', 'eighty'],
  ['PORT', '70000'],
  ['LOG_LEVEL', 'loud'],
  ['WORKERS', '-1'],
  ['REQUIRE_GPU', 'maybe'],
  ['INTRA_OP_SPINNING', 'sometimes'],
  ['MAX_EXPRESSIONS', '0'],
  ['MAX_BATCH', '1.5'],
  ['EXECUTION_PROVIDERS', 'cpu,,'],
  ['EXECUTION_PROVIDERS', 'quantum'],
  ['EXECUTION_PROVIDERS', 'cpu,cpu'],
  ['REQUEST_TIMEOUT_MS', '0'],
  ['CUDA_DEVICE_ID', '-1'],
  ['CUDA_DEVICE_ID', 'gpu0'],
]
for (const [name, value] of bad) {
  t.test(`EXPECTED FAILURE - ${name}=${value} names the variable`, async (t) => {
    let caught: unknown
    try { loadConfig({ [name]: value }, 2) } catch (err) { caught = err }
    t.ok(caught instanceof ConfigError)
    t.equal((caught as ConfigError).variable, name)
    t.match((caught as Error).message, new RegExp(`^Invalid environment variable ${name}=`))
  })
}

t.test('EXPECTED FAILURE - REQUIRE_GPU without a GPU provider', async (t) => {
  t.throws(() => loadConfig({ REQUIRE_GPU: '1' }, 2), { name: 'ConfigError', message: /REQUIRE_GPU/ })
})

t.test('default parallelism: 2 threads per worker, CPUs / 2 workers, at least 2 (1 × 1 on one CPU)', async (t) => {
  const expected: Record<number, [number, number]> = { 1: [1, 1], 2: [2, 2], 3: [2, 2], 4: [2, 2], 8: [4, 2], 16: [8, 2], 64: [8, 2] }
  for (const [cpus, [w, th]] of Object.entries(expected)) {
    t.strictSame(deriveParallelism(0, 0, Number(cpus)), { workers: w, threadsPerWorker: th }, `cpus=${cpus}`)
    // Never more than 2 threads per core (the oversubscription measured in BENCHMARKS.md).
    t.ok(w * th <= Math.max(1, 2 * Number(cpus)))
  }
  t.strictSame(deriveParallelism(2, 0, 8), { workers: 2, threadsPerWorker: 4 })
  t.strictSame(deriveParallelism(0, 4, 8), { workers: 2, threadsPerWorker: 4 })
  t.strictSame(deriveParallelism(3, 3, 2), { workers: 3, threadsPerWorker: 3 })
})

t.test('a GPU provider listed first: one worker, GPU batch defaults, explicit values kept', async (t) => {
  const cpu = loadConfig({ EXECUTION_PROVIDERS: 'cpu,cuda' }, 8)
  t.equal(cpu.workers, 4, 'cpu first: the CPU defaults')
  t.equal(cpu.maxBatch, envSchema.properties.MAX_BATCH.default)
  t.equal(cpu.maxBatchWaitMs, envSchema.properties.MAX_BATCH_WAIT_MS.default)
  t.equal(cpu.cudaDeviceId, 0)

  const gpu = loadConfig({ EXECUTION_PROVIDERS: 'cuda,cpu' }, 8)
  t.equal(gpu.workers, GPU_DEFAULTS.WORKERS)
  t.equal(gpu.workers, 1, 'one worker per GPU')
  t.equal(gpu.threadsPerWorker, 8, 'the one worker may use every CPU (for nodes the GPU provider leaves to the CPU)')
  t.equal(gpu.maxBatch, GPU_DEFAULTS.MAX_BATCH)
  t.equal(gpu.maxBatchWaitMs, GPU_DEFAULTS.MAX_BATCH_WAIT_MS)
  t.ok(GPU_DEFAULTS.MAX_BATCH > envSchema.properties.MAX_BATCH.default, 'larger batches than on the CPU')

  const explicit = loadConfig({ EXECUTION_PROVIDERS: 'cuda,cpu', WORKERS: '2', MAX_BATCH: '4', MAX_BATCH_WAIT_MS: '0', CUDA_DEVICE_ID: '3' }, 8)
  t.equal(explicit.workers, 2)
  t.equal(explicit.threadsPerWorker, 4)
  t.equal(explicit.maxBatch, 4)
  t.equal(explicit.maxBatchWaitMs, 0)
  t.equal(explicit.cudaDeviceId, 3)
  t.equal(loadConfig({ EXECUTION_PROVIDERS: 'cuda', WORKERS: '' }, 8).workers, 1, 'an empty variable counts as unset')
})

t.test('the session section, what each engine worker is sent, carries the device id', async (t) => {
  const session = section(loadConfig({ EXECUTION_PROVIDERS: 'cuda,cpu', CUDA_DEVICE_ID: '2' }, 8), 'session')
  t.equal(session.cudaDeviceId, 2)
  t.strictSame(session.executionProviders, ['cuda', 'cpu'])
  t.notOk('workers' in session, 'engine settings stay on the main thread')
})

t.test('each GPU default is named in its variable\'s description', async (t) => {
  const props = envSchema.properties as Record<string, { description?: string }>
  t.same(Object.keys(GPU_DEFAULTS).sort(), ['MAX_BATCH', 'MAX_BATCH_WAIT_MS', 'WORKERS'])
  for (const [key, value] of Object.entries(GPU_DEFAULTS)) {
    t.match(props[key].description, new RegExp(`; ${value} when a GPU provider is listed first$`), key)
  }
  t.notMatch(props.QUEUE_SIZE.description, /GPU/, 'the others are unchanged')
})
