/**
 * The inference engine: a pool of worker threads (one ONNX Runtime session each) behind one
 * bounded queue. One engine serves one model.
 *
 * - run(job) takes one image (its tensor, or its cached backbone features) with K token rows.
 *   With the split graphs, K > 1 rows and several idle workers, the backbone runs once (a job of
 *   no rows that returns the features) and the K head rows are spread over the idle workers, all
 *   reading the same shared features; otherwise the job is queued whole.
 * - A free worker takes queued jobs, oldest first, up to `maxBatch` rows, into a single
 *   session.run (dynamic micro-batching). It waits at most `maxBatchWaitMs` after the oldest job
 *   arrived for the batch to fill, and only when company can come: another worker is busy, or a
 *   request announced with announce() is still being prepared (decoded, letterboxed). It does
 *   not wait while another worker is idle too (the next job would find that one), nor on an idle
 *   service, where a lone request would wait for nobody. While every worker is busy, jobs gather
 *   in the queue and the next free worker takes them together.
 * - The queue holds at most `queueSize` jobs; one more is refused at once (503 + Retry-After).
 * - Each job has a deadline: a queued job is dropped (504); an in-flight one is answered 504 and
 *   its result discarded when it arrives.
 * - An aborted job (its client disconnected) leaves the queue before it costs a session.run.
 * - A worker that dies fails its in-flight jobs with 503 and is replaced; the replacement runs
 *   the golden case again before it takes work.
 */
import { Worker } from 'node:worker_threads'
import { type ConfigSection, section } from '../config.js'
import { ERR_CLIENT_CLOSED, ERR_DEADLINE, ERR_INTERNAL, ERR_NOT_READY, ERR_QUEUE_FULL, ERR_SHUTTING_DOWN, ERR_WORKER_CRASHED } from '../errors.js'
import type { FromWorker, ImageFeatures, ModelGraphs, RowResult, RunJob, ToWorker, WorkerInit } from './protocol.js'

export interface EngineLogger {
  info: (obj: object, msg: string) => void
  warn: (obj: object, msg: string) => void
  error: (obj: object, msg: string) => void
}

/** The config sections the engine reads: its own (workers, batching, queue) and the workers' sessions. */
export type EngineSettings = ConfigSection<'engine' | 'session'>

/** Observers of the engine's work, given at construction (metrics). */
export interface EngineHooks {
  /** Rows of every session.run (the batch-size histogram). */
  onBatch?: (rows: number) => void
  /** Images that went through the backbone in one batch (split graphs). */
  onEncode?: (images: number) => void
}

export interface EngineOptions {
  model: ModelGraphs
  settings: EngineSettings
  hooks?: EngineHooks
  logger: EngineLogger
  /** The worker script (tests pass a fake one). */
  workerUrl?: URL
  /** Delay before a crashed worker is replaced (doubles per consecutive failure). */
  restartDelayMs?: number
}

export type InferenceJob = Omit<RunJob, 'id'>

export interface RunOptions {
  /** Epoch ms after which the answer is useless (504). */
  deadline: number
  /** The whole time budget (for the 504 message); default: the time left at submission. */
  timeoutMs?: number
  /** Aborted when the client disconnects. */
  signal?: AbortSignal
  /**
   * Called once, after run() settled, when the engine holds none of the job's work any more: it
   * left the queue, or the worker that ran it answered or died. A job answered 504 while a
   * worker runs it is still held until then (the caller's memory accounting waits for this).
   */
  onFinished?: () => void
}

export interface JobOutput {
  rows: RowResult[]
  /** ms from run() until a worker took the job */
  queueMs: number
  inferenceMs: number
  postprocessMs: number
  /** rows in the session.run that served the job */
  batchSize: number
  /** The image's backbone features, when the job asked for them (split graphs only). */
  features?: ImageFeatures
}

export interface EngineStats {
  provider: string
  workers: number
  liveWorkers: number
  busyWorkers: number
  queueDepth: number
  restarts: number
}

export interface Engine {
  /** Resolves when every worker has loaded the model and passed the golden case; rejects on a fatal start error. */
  readonly started: Promise<void>
  isReady: () => boolean
  provider: () => string
  run: (job: InferenceJob, opts: RunOptions) => Promise<JobOutput>
  /**
   * Counts a request as on its way while `prepare` runs (decoding, letterboxing), so that a free
   * worker may wait for it to share a batch; returns what `prepare` returns.
   */
  announce: <T>(prepare: () => Promise<T>) => Promise<T>
  stats: () => EngineStats
  /** Finish queued and in-flight work, then stop the workers. */
  close: () => Promise<void>
}

interface Pending {
  id: number
  job: InferenceJob
  rows: number
  enqueuedAt: number
  dispatchedAt: number
  deadline: number
  resolve: (out: JobOutput) => void
  reject: (err: Error) => void
  settled: boolean
  cleanup: () => void
  /** The engine no longer holds the job (called once). */
  leave: () => void
}

type SlotState = 'starting' | 'idle' | 'busy' | 'dead'

interface Slot {
  index: number
  worker: Worker
  state: SlotState
  batchId: number
  inflight: Pending[]
  provider: string
  exited: boolean
}

export function createEngine ({ model, settings, hooks = {}, logger, workerUrl = defaultWorkerUrl(), restartDelayMs = 500 }: EngineOptions): Engine {
  const init: WorkerInit = { ...model, session: section(settings, 'session') }
  const { workers, maxBatch, maxBatchWaitMs, queueSize } = settings
  const slots: Slot[] = []
  const queue: Pending[] = []
  let nextJobId = 1
  let nextBatchId = 1
  let restarts = 0
  let consecutiveFailures = 0
  let provider = 'pending'
  let startedOk = false
  let closing = false
  let closed = false
  let batchTimer: NodeJS.Timeout | undefined
  let drainWaiters: Array<() => void> = []
  /** Requests announced and still being prepared. */
  let announced = 0

  let resolveStarted!: () => void
  let rejectStarted!: (err: Error) => void
  const started = new Promise<void>((resolve, reject) => { resolveStarted = resolve; rejectStarted = reject })
  started.catch(() => {}) // observed by the caller; avoid an unhandled rejection here
  let startingCount = workers

  function settle (p: Pending, fn: () => void): void {
    if (p.settled) return
    p.settled = true
    p.cleanup()
    fn()
  }

  function spawn (index: number): Slot {
    const worker = new Worker(workerUrl, { workerData: init, name: `engine-worker-${index}` })
    const slot: Slot = { index, worker, state: 'starting', batchId: 0, inflight: [], provider: 'pending', exited: false }
    slots[index] = slot
    worker.on('message', (msg: FromWorker) => onMessage(slot, msg))
    worker.on('error', (err) => onExit(slot, `error: ${err.message}`))
    worker.on('exit', (code) => onExit(slot, `exit code ${code}`))
    return slot
  }

  function onMessage (slot: Slot, msg: FromWorker): void {
    switch (msg.type) {
      case 'log':
        logger[msg.level]({ worker: slot.index, ...msg.data }, msg.msg)
        return
      case 'failed':
        logger.error({ worker: slot.index, reason: msg.message }, 'engine worker failed to start')
        if (!startedOk) rejectStarted(new Error(msg.message))
        slot.state = 'dead'
        void slot.worker.terminate()
        return
      case 'ready':
        slot.state = 'idle'
        slot.provider = msg.provider
        provider = msg.provider
        consecutiveFailures = 0
        logger.info({ worker: slot.index, provider: msg.provider, golden: msg.golden?.maxAbsDiff }, 'engine worker ready')
        if (!startedOk && --startingCount === 0) {
          startedOk = true
          resolveStarted()
        }
        pump()
        return
      case 'result': {
        if (msg.batchId !== slot.batchId) return
        const inflight = slot.inflight
        slot.inflight = []
        slot.state = 'idle'
        if (msg.encoded !== undefined && msg.encoded > 0) hooks.onEncode?.(msg.encoded)
        for (const p of inflight) {
          p.leave()
          settle(p, () => {
            if (msg.error !== undefined) {
              logger.error({ worker: slot.index, reason: msg.error }, 'inference failed')
              p.reject(ERR_INTERNAL())
              return
            }
            const r = msg.results?.find((x) => x.id === p.id)
            if (r === undefined) { p.reject(ERR_INTERNAL()); return }
            p.resolve({
              rows: r.rows,
              queueMs: p.dispatchedAt - p.enqueuedAt,
              inferenceMs: msg.inferenceMs,
              postprocessMs: msg.postprocessMs,
              batchSize: inflight.reduce((n, q) => n + q.rows, 0),
              features: r.features,
            })
          })
        }
        pump()
        checkDrained()
      }
    }
  }

  function onExit (slot: Slot, why: string): void {
    // 'error' is followed by 'exit': handle the first one only.
    if (slot.exited) return
    slot.exited = true
    const wasStarting = slot.state === 'starting'
    const lost = slot.inflight
    slot.inflight = []
    slot.state = 'dead'
    for (const p of lost) {
      p.leave()
      settle(p, () => p.reject(ERR_WORKER_CRASHED()))
    }
    if (closed) return
    if (!startedOk) {
      if (wasStarting) rejectStarted(new Error(`engine worker ${slot.index} stopped during start-up (${why})`))
      return
    }
    logger.error({ worker: slot.index, reason: why, failedJobs: lost.length }, 'engine worker stopped; replacing it')
    // Replace it, backing off while replacements keep failing.
    restarts++
    const delay = Math.min(30_000, restartDelayMs * 2 ** consecutiveFailures)
    consecutiveFailures++
    setTimeout(() => { if (!closed) spawn(slot.index) }, delay).unref()
    pump()
    checkDrained()
  }

  function liveSlots (): Slot[] {
    return slots.filter((s) => s.state === 'idle' || s.state === 'busy')
  }

  function pump (): void {
    if (batchTimer !== undefined) { clearTimeout(batchTimer); batchTimer = undefined }
    while (queue.length > 0) {
      const idle = slots.filter((s) => s.state === 'idle')
      const slot = idle[0]
      if (slot === undefined) return
      const queuedRows = queue.reduce((n, p) => n + p.rows, 0)
      const waitLeft = queue[0].enqueuedAt + maxBatchWaitMs - performance.now()
      const company = slots.some((s) => s.state === 'busy') || announced > 0
      if (queuedRows < maxBatch && waitLeft > 0 && idle.length === 1 && company && !closing) {
        batchTimer = setTimeout(pump, waitLeft)
        return
      }
      dispatch(slot)
    }
  }

  function dispatch (slot: Slot): void {
    const batch: Pending[] = []
    let rows = 0
    while (queue.length > 0) {
      const p = queue[0]
      if (batch.length > 0 && rows + p.rows > maxBatch) break
      queue.shift()
      batch.push(p)
      rows += p.rows
    }
    const now = performance.now()
    for (const p of batch) p.dispatchedAt = now
    slot.state = 'busy'
    slot.batchId = nextBatchId++
    slot.inflight = batch
    const msg: ToWorker = { type: 'run', batchId: slot.batchId, jobs: batch.map((p) => ({ id: p.id, ...p.job })) }
    // Image tensors are moved, not copied, when they own their buffer (nothing reads them after this).
    const transfer: ArrayBuffer[] = []
    for (const p of batch) {
      const img = p.job.image
      if (img !== undefined && img.buffer instanceof ArrayBuffer && img.byteOffset === 0 && img.byteLength === img.buffer.byteLength && !transfer.includes(img.buffer)) transfer.push(img.buffer)
    }
    slot.worker.postMessage(msg, transfer)
    if (rows > 0) hooks.onBatch?.(rows)
  }

  function checkDrained (): void {
    if (queue.length === 0 && slots.every((s) => s.inflight.length === 0)) {
      const waiters = drainWaiters
      drainWaiters = []
      for (const w of waiters) w()
    }
  }

  /** Workers free to take a job right now (none while jobs queue). */
  function idleWorkers (): number {
    return queue.length > 0 ? 0 : slots.filter((s) => s.state === 'idle').length
  }

  async function run (job: InferenceJob, ro: RunOptions): Promise<JobOutput> {
    // The jobs this run submitted that the engine still holds; onFinished waits for all of them.
    let outstanding = 0
    let settled = false
    let notified = false
    const notify = (): void => {
      if (settled && outstanding === 0 && !notified) {
        notified = true
        ro.onFinished?.()
      }
    }
    const tracked = async (j: InferenceJob): Promise<JobOutput> => {
      outstanding++
      return await submit(j, ro, () => { outstanding--; notify() })
    }
    const spread = init.split !== undefined && job.tokens.length > 1 && idleWorkers() > 1
    try {
      return spread ? await runSpread(job, ro, tracked) : await tracked(job)
    } finally {
      settled = true
      notify()
    }
  }

  /**
   * K > 1 rows while several workers idle: the backbone once (a job of no rows that returns the
   * features, unless the job carries them), then the K head rows in chunks over the idle workers.
   * Under load nothing idles and the request goes as one job (one backbone pass, one head pass
   * over K rows).
   */
  async function runSpread (job: InferenceJob, ro: RunOptions, submit: (job: InferenceJob) => Promise<JobOutput>): Promise<JobOutput> {
    const { tokens, key, geometry, threshold, format } = job
    let features = job.features
    let first: JobOutput | undefined
    if (features === undefined) {
      first = await submit({ ...job, tokens: [], wantFeatures: true })
      features = first.features
      if (features === undefined) return await submit(job)
    }
    const n = Math.max(1, Math.min(tokens.length, idleWorkers()))
    const size = Math.ceil(tokens.length / n)
    const chunks: number[][][] = []
    for (let i = 0; i < tokens.length; i += size) chunks.push(tokens.slice(i, i + size))
    const outs = await Promise.all(chunks.map((c) => submit({ features, key, geometry, threshold, format, tokens: c })))
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

  /** Queue one job (one image, its rows) for the next free worker; `onLeave` once the engine no longer holds it. */
  function submit (job: InferenceJob, ro: RunOptions, onLeave: () => void): Promise<JobOutput> {
    const refuse = (err: Error): Promise<JobOutput> => { onLeave(); return Promise.reject(err) }
    if (closing) return refuse(ERR_SHUTTING_DOWN())
    if (!startedOk || liveSlots().length === 0) return refuse(ERR_NOT_READY())
    if (ro.signal?.aborted === true) return refuse(ERR_CLIENT_CLOSED())
    const timeLeft = ro.deadline - Date.now()
    let left = false
    return new Promise<JobOutput>((resolve, reject) => {
      const p: Pending = {
        id: nextJobId++,
        job,
        rows: job.tokens.length,
        enqueuedAt: performance.now(),
        dispatchedAt: 0,
        deadline: ro.deadline,
        resolve,
        reject,
        settled: false,
        cleanup: () => {},
        leave: () => { if (!left) { left = true; onLeave() } },
      }
      const onDeadline = (): void => {
        removeQueued(p)
        settle(p, () => p.reject(ERR_DEADLINE(Math.round(ro.timeoutMs ?? timeLeft))))
        checkDrained()
      }
      const onAbort = (): void => {
        removeQueued(p)
        settle(p, () => p.reject(ERR_CLIENT_CLOSED()))
        checkDrained()
      }
      const timer = setTimeout(onDeadline, Math.max(0, timeLeft))
      ro.signal?.addEventListener('abort', onAbort, { once: true })
      p.cleanup = () => {
        clearTimeout(timer)
        ro.signal?.removeEventListener('abort', onAbort)
      }
      queue.push(p)
      pump()
      if (queue.includes(p) && queue.length > queueSize) {
        removeQueued(p)
        settle(p, () => p.reject(ERR_QUEUE_FULL(queue.length)))
      }
    })
  }

  function removeQueued (p: Pending): void {
    const i = queue.indexOf(p)
    if (i >= 0) {
      queue.splice(i, 1)
      p.leave()
    }
  }

  async function close (): Promise<void> {
    if (closed) return
    closing = true
    pump()
    if (queue.length > 0 || slots.some((s) => s.inflight.length > 0)) {
      await new Promise<void>((resolve) => drainWaiters.push(resolve))
    }
    closed = true
    if (batchTimer !== undefined) clearTimeout(batchTimer)
    await Promise.all(slots.map(async (s) => { s.state = 'dead'; await s.worker.terminate() }))
  }

  async function announce<T> (prepare: () => Promise<T>): Promise<T> {
    announced++
    try {
      return await prepare()
    } finally {
      announced--
    }
  }

  const engine: Engine = {
    started,
    isReady: () => startedOk && !closing && liveSlots().length > 0,
    provider: () => provider,
    run,
    announce,
    stats: () => ({
      provider,
      workers,
      liveWorkers: liveSlots().length,
      busyWorkers: slots.filter((s) => s.state === 'busy').length,
      queueDepth: queue.length,
      restarts,
    }),
    close,
  }

  for (let i = 0; i < workers; i++) spawn(i)
  return engine
}

/** worker.js next to this file (worker.ts when running from sources under a TypeScript loader). */
function defaultWorkerUrl (): URL {
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js'
  return new URL(`./worker${ext}`, import.meta.url)
}
