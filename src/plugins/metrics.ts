/**
 * Prometheus metrics (prom-client, one registry per app): request count and latency by route
 * and status, per-stage durations, queue depth, batch sizes, workers, provider and model info.
 *
 * Registered before the segmenter: the engine is built with `engineHooks` (batch sizes), and the
 * gauges read `app.segmenter` when scraped.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { EngineHooks } from '../engine/engine.js'
import type { Timings } from '../model/segmenter.js'

export interface Metrics {
  registry: Registry
  observeStages: (timings: Timings) => void
  /** For the engine's constructor. */
  engineHooks: EngineHooks
}

export default fp(async (app: FastifyInstance) => {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'vlt_' })
  const segmenter = () => app.segmenter

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
    help: 'Duration of each /segment stage (decode, preprocess, queue, inference, postprocess, total)',
    labelNames: ['stage'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  })
  const batches = new Histogram({
    name: 'vlt_inference_batch_size',
    help: 'Rows (expressions) per session.run',
    buckets: [1, 2, 4, 8, 16, 32, 64],
    registers: [registry],
  })
  const encoderBatches = new Histogram({
    name: 'vlt_backbone_batch_size',
    help: 'Images per backbone (image_encoder) pass; K expressions on one image count once, cache hits not at all',
    buckets: [1, 2, 4, 8, 16, 32, 64],
    registers: [registry],
  })
  const cacheCounter = (name: string, help: string, read: () => number): Counter => new Counter({
    name,
    help,
    registers: [registry],
    collect () { this.reset(); this.inc(read()) },
  })
  cacheCounter('vlt_feature_cache_hits_total', 'Requests whose image features came from the feature cache', () => segmenter().cacheStats().hits)
  cacheCounter('vlt_feature_cache_misses_total', 'Requests that looked up the feature cache and ran the backbone', () => segmenter().cacheStats().misses)
  cacheCounter('vlt_feature_cache_evictions_total', 'Feature cache entries evicted to stay within FEATURE_CACHE_MB', () => segmenter().cacheStats().evictions)
  new Gauge({
    name: 'vlt_feature_cache_bytes',
    help: 'Bytes held by the feature cache (used, capacity)',
    labelNames: ['kind'] as const,
    registers: [registry],
    collect () {
      const c = segmenter().cacheStats()
      this.set({ kind: 'used' }, c.bytes)
      this.set({ kind: 'capacity' }, c.capacityBytes)
    },
  })
  new Gauge({
    name: 'vlt_feature_cache_entries',
    help: 'Images in the feature cache',
    registers: [registry],
    collect () { this.set(segmenter().cacheStats().entries) },
  })

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
    name: 'vlt_inference_queue_depth',
    help: 'Jobs waiting in the engine queue for a worker',
    registers: [registry],
    collect () { this.set(segmenter().stats().queueDepth) },
  })
  new Gauge({
    name: 'vlt_inference_workers',
    help: 'Engine workers by state (configured, live, busy)',
    labelNames: ['state'] as const,
    registers: [registry],
    collect () {
      const s = segmenter().stats()
      this.set({ state: 'configured' }, s.workers)
      this.set({ state: 'live' }, s.liveWorkers)
      this.set({ state: 'busy' }, s.busyWorkers)
    },
  })
  new Gauge({
    name: 'vlt_inference_worker_restarts',
    help: 'Engine workers replaced after a crash since start',
    registers: [registry],
    collect () { this.set(segmenter().stats().restarts) },
  })
  new Gauge({
    name: 'vlt_execution_provider',
    help: 'The ONNX Runtime execution provider in use (value 1)',
    labelNames: ['provider'] as const,
    registers: [registry],
    collect () {
      this.reset()
      this.set({ provider: segmenter().provider() }, 1)
    },
  })
  new Gauge({
    name: 'vlt_ready',
    help: '1 when /readyz answers 200',
    registers: [registry],
    collect () { this.set(segmenter().isReady() && !app.lifecycle.closing ? 1 : 0) },
  })
  new Gauge({
    name: 'vlt_model_info',
    help: 'The served model (value 1)',
    labelNames: ['name', 'version', 'preset', 'provider', 'input_size', 'max_words', 'num_queries'] as const,
    registers: [registry],
    collect () {
      const { info } = segmenter()
      this.reset()
      this.set({
        name: info.name,
        version: info.version,
        preset: info.preset ?? '',
        provider: segmenter().provider(),
        input_size: String(info.inputSize),
        max_words: String(info.maxWords),
        num_queries: String(info.numQueries),
      }, 1)
    },
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
    engineHooks: {
      onBatch: (rows) => batches.observe(rows),
      onEncode: (images) => encoderBatches.observe(images),
    },
    observeStages (t) {
      for (const [stage, ms] of Object.entries(t)) stages.observe({ stage }, ms / 1000)
    },
  }
  app.decorate('metrics', metrics)
}, { name: 'metrics', dependencies: ['budget'] })
