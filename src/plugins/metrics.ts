/**
 * Prometheus metrics (prom-client, one registry per app): request count and latency by route
 * and status; per model and version: requests, stage durations, queue depth, batch sizes, feature
 * cache, workers, provider, state, requests in flight and reloads.
 *
 * Registered before the models: each model's engine is built with `engineHooks(name, version)`
 * (batch sizes), and the gauges read `app.models` when scraped.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { EngineHooks } from '../engine/engine.js'
import type { Deployment, ReloadOutcome } from '../model/repository.js'
import type { Timings } from '../model/segmenter.js'

/** The model and version a measurement belongs to. */
export interface ModelLabels { model: string, version: string }

export interface Metrics {
  registry: Registry
  observeStages: (timings: Timings, model: ModelLabels) => void
  /** One answered request of a model (segment or v2 infer), by status code. */
  observeModelRequest: (model: ModelLabels, statusCode: number) => void
  /** A model version loaded, rejected or removed. */
  observeReload: (outcome: ReloadOutcome) => void
  /** For a model's engine. */
  engineHooks: (name: string, version: string) => EngineHooks
}

export default fp(async (app: FastifyInstance) => {
  const registry = new Registry()
  // Node.js process metrics under their standard names (process_*, nodejs_*), as stock dashboards expect.
  collectDefaultMetrics({ register: registry })
  /** Every deployment with an engine: the serving versions and those still draining. */
  const deployments = (): Deployment[] => app.models.list().flatMap((m) => [...(m.serving !== undefined ? [m.serving] : []), ...m.draining])
  const labels = (d: Deployment): ModelLabels => ({ model: d.name, version: d.version })

  const requests = new Counter({
    name: 'vlt_http_requests_total',
    help: 'HTTP requests by route and status',
    labelNames: ['method', 'route', 'status_code'] as const,
    registers: [registry],
  })
  const latency = new Histogram({
    name: 'vlt_http_request_duration_seconds',
    help: 'HTTP request latency by route and status',
    labelNames: ['method', 'route', 'status_code'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  })
  const stages = new Histogram({
    name: 'vlt_segment_stage_duration_seconds',
    help: 'Duration of each segmentation stage (decode, preprocess, queue, inference, postprocess, total), by model and version',
    labelNames: ['model', 'version', 'stage'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  })
  const batches = new Histogram({
    name: 'vlt_inference_batch_size',
    help: 'Rows (expressions) per session.run',
    labelNames: ['model', 'version'] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64],
    registers: [registry],
  })
  const encoderBatches = new Histogram({
    name: 'vlt_backbone_batch_size',
    help: 'Images per backbone (image_encoder) pass; K expressions on one image count once, cache hits not at all',
    labelNames: ['model', 'version'] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64],
    registers: [registry],
  })
  /** A gauge (or counter) read from every deployment at scrape time; series of closed versions disappear. */
  const perModel = <L extends string>(kind: 'gauge' | 'counter', name: string, help: string, extra: readonly L[], read: (d: Deployment) => Array<[Record<L, string>, number]>): void => {
    const opts = {
      name,
      help,
      labelNames: ['model', 'version', ...extra] as Array<'model' | 'version' | L>,
      registers: [registry],
      collect (this: Gauge | Counter) {
        this.reset()
        for (const d of deployments()) {
          for (const [l, v] of read(d)) {
            const all = { ...labels(d), ...l } as Record<string, string>
            if (this instanceof Gauge) this.set(all, v)
            else this.inc(all, v)
          }
        }
      },
    }
    if (kind === 'gauge') new Gauge(opts)
    else new Counter(opts)
  }
  const none = [] as const
  perModel('counter', 'vlt_feature_cache_hits_total', 'Requests whose image features came from the feature cache', none, (d) => [[{}, d.segmenter.cacheStats().hits]])
  perModel('counter', 'vlt_feature_cache_misses_total', 'Requests that looked up the feature cache and ran the backbone', none, (d) => [[{}, d.segmenter.cacheStats().misses]])
  perModel('counter', 'vlt_feature_cache_evictions_total', 'Feature cache entries evicted to stay within FEATURE_CACHE_MB', none, (d) => [[{}, d.segmenter.cacheStats().evictions]])
  perModel('gauge', 'vlt_feature_cache_bytes', 'Bytes held by the feature cache (used, capacity)', ['kind'] as const, (d) => {
    const c = d.segmenter.cacheStats()
    return [[{ kind: 'used' }, c.bytes], [{ kind: 'capacity' }, c.capacityBytes]]
  })
  perModel('gauge', 'vlt_feature_cache_entries', 'Images in the feature cache', none, (d) => [[{}, d.segmenter.cacheStats().entries]])
  perModel('gauge', 'vlt_inference_queue_depth', 'Jobs waiting in the engine queue for a worker', none, (d) => [[{}, d.segmenter.stats().queueDepth]])
  perModel('gauge', 'vlt_inference_workers', 'Engine workers by state (configured, live, busy)', ['state'] as const, (d) => {
    const s = d.segmenter.stats()
    return [[{ state: 'configured' }, s.workers], [{ state: 'live' }, s.liveWorkers], [{ state: 'busy' }, s.busyWorkers]]
  })
  perModel('gauge', 'vlt_inference_worker_restarts', 'Engine workers replaced after a crash since the version was loaded', none, (d) => [[{}, d.segmenter.stats().restarts]])
  perModel('gauge', 'vlt_execution_provider', 'The ONNX Runtime execution provider in use (value 1)', ['provider'] as const, (d) => [[{ provider: d.segmenter.provider() }, 1]])
  perModel('gauge', 'vlt_model_state', 'State of each loaded model version (value 1): loading, ready, unavailable (no live worker) or draining', ['state'] as const, (d) => [[{ state: app.models.stateOf(d) }, 1]])
  perModel('gauge', 'vlt_model_inflight_requests', 'Requests routed to the model version and not yet answered', none, (d) => [[{}, d.leases]])
  perModel('gauge', 'vlt_model_info', 'A served model version and its sizes (value 1)', ['preset', 'provider', 'input_size', 'max_words', 'num_queries'] as const, (d) => {
    const { info } = d.segmenter
    return [[{ preset: info.preset ?? '', provider: d.segmenter.provider(), input_size: String(info.inputSize), max_words: String(info.maxWords), num_queries: String(info.numQueries) }, 1]]
  })
  // The memory budget is process-wide: one for all models.
  new Gauge({
    name: 'vlt_memory_budget_bytes',
    help: 'The memory budget: limit (what the service may use), reserve (model, workers, runtime, margin), capacity (limit − reserve, for requests), in_use (leases of requests now), peak_in_use (largest in_use since start)',
    labelNames: ['kind'] as const,
    registers: [registry],
    collect () {
      const b = app.budget.stats()
      this.set({ kind: 'limit' }, b.limitBytes)
      this.set({ kind: 'reserve' }, b.reserveBytes)
      this.set({ kind: 'capacity' }, b.capacityBytes)
      this.set({ kind: 'in_use' }, b.inUseBytes)
      this.set({ kind: 'peak_in_use' }, b.peakInUseBytes)
    },
  })
  new Gauge({
    name: 'vlt_memory_budget_waiting',
    help: 'Requests waiting for their share of the memory budget',
    registers: [registry],
    collect () { this.set(app.budget.stats().waiting) },
  })
  new Counter({
    name: 'vlt_memory_budget_refusals_total',
    help: 'Requests the memory budget refused or gave up on: busy (upload refused, 503), queue_full (503), too_large (413), deadline (504 while waiting), client_closed',
    labelNames: ['reason'] as const,
    registers: [registry],
    collect () {
      this.reset()
      for (const [reason, n] of Object.entries(app.budget.stats().refusals)) this.inc({ reason }, n)
    },
  })
  new Gauge({
    name: 'vlt_ready',
    help: '1 when /readyz answers 200',
    registers: [registry],
    collect () { this.set(app.models.isReady() && !app.lifecycle.closing ? 1 : 0) },
  })
  const modelRequests = new Counter({
    name: 'vlt_model_requests_total',
    help: 'Requests routed to a model version (POST /segment and v2 infer), by status code',
    labelNames: ['model', 'version', 'status_code'] as const,
    registers: [registry],
  })
  const reloads = new Counter({
    name: 'vlt_model_reloads_total',
    help: 'Model versions loaded (at start or by a reload), rejected (failed to load or its golden case; the previous version kept serving) or removed',
    labelNames: ['model', 'version', 'result'] as const,
    registers: [registry],
  })

  app.addHook('onResponse', async (request, reply) => {
    const labels = {
      method: request.method,
      route: request.routeOptions.url ?? 'not_found',
      status_code: String(reply.statusCode),
    }
    requests.inc(labels)
    latency.observe(labels, reply.elapsedTime / 1000)
  })

  const metrics: Metrics = {
    registry,
    engineHooks: (model, version) => ({
      onBatch: (rows) => batches.observe({ model, version }, rows),
      onEncode: (images) => encoderBatches.observe({ model, version }, images),
    }),
    observeStages (t, model) {
      for (const [stage, ms] of Object.entries(t)) stages.observe({ ...model, stage }, ms / 1000)
    },
    observeModelRequest (model, statusCode) {
      modelRequests.inc({ ...model, status_code: String(statusCode) })
    },
    observeReload (o) {
      if (o.result !== 'unchanged') reloads.inc({ model: o.model, version: o.version ?? '', result: o.result })
    },
  }
  app.decorate('metrics', metrics)
}, { name: 'metrics', dependencies: ['budget'] })
