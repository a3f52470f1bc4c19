/**
 * The models as a named plugin: decorates `app.models` (the model registry, src/model/repository.ts)
 * and `app.segmenter` (the default model's serving segmenter). The source is MODELS_DIR when set,
 * else the one folder MODEL_PATH; tests inject a segmenter factory or a folder loader. Models found
 * at start are loaded before the app is ready (their workers start in the background:
 * `app.models.started`); MODELS_POLL_MS > 0 rescans on a timer. Every model's segmenter is
 * admitted by the one memory budget (`app.budget`, src/plugins/budget.ts); once the models found at
 * start are ready, what the process holds becomes the budget's reserve (unless MEMORY_RESERVE_MB
 * gives it). On close, accepted requests finish, then every model's engine stops.
 */
import fp from 'fastify-plugin'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import { measuredReserve } from '../budget/budget.js'
import { ERR_MEMORY_BUSY, ERR_QUEUE_FULL, SegError, toErrorResponse } from '../errors.js'
import { retryAfterSeconds, throughputMeter, type ThroughputMeter } from '../http/retry-after.js'
import { createModelRegistry, type FolderLoader, fixedSource, folderSource, type ModelRegistry, repositorySource } from '../model/repository.js'
import { createSegmenterFromFolder, type SegmentRequest, type SegmentResult, type Segmenter, type SegmenterFactory } from '../model/segmenter.js'

export interface ModelsPluginOptions {
  /** One model built by the caller (tests). */
  segmenter?: SegmenterFactory
  /** How a model folder becomes a segmenter (tests: a fake engine); default: createSegmenterFromFolder. */
  loadFolder?: FolderLoader
}

declare module 'fastify' {
  interface FastifyInstance {
    models: ModelRegistry
    /**
     * One segmentation on a model (`ref`: name, name@version, or undefined for the default) — the
     * path POST /segment and v2 infer share: route with a lease, run, count per model and version,
     * log, release. A full queue gets a Retry-After computed from that model's throughput.
     */
    segmentWith: (ref: string | undefined, req: SegmentRequest, log: FastifyBaseLogger, version?: string) => Promise<SegmentResult>
    /** The default model's serving segmenter (undefined once it is removed). */
    segmenter: Segmenter
  }
}

export default fp(async (app: FastifyInstance, opts: ModelsPluginOptions) => {
  const { config, metrics } = app
  // The engine's log lines (worker started, crashed, replaced) carry the model and version.
  // Every model's requests are admitted by the one process-wide memory budget (app.budget).
  const loadFolder: FolderLoader = opts.loadFolder ?? (async (dir, hooks, { name, version }) => await createSegmenterFromFolder({ ...config, modelPath: dir, hooks, budget: app.budget, logger: app.log.child({ model: name, version }) }))
  const build = opts.segmenter
  const source = build !== undefined
    ? fixedSource(async (hooks) => await build(hooks, app.budget), metrics.engineHooks)
    : config.modelsDir !== '' ? repositorySource(config.modelsDir, loadFolder) : folderSource(config.modelPath, loadFolder)
  const models = createModelRegistry({
    source,
    defaultModel: config.defaultModel,
    logger: app.log,
    events: { hooks: metrics.engineHooks, onReload: metrics.observeReload },
  })
  app.decorate('models', models)
  app.decorate('segmenter', { getter: () => models.get() as Segmenter })
  await models.start()
  if (config.memoryReserveMb === 0) {
    // What the models loaded at start and their workers hold is the budget's reserve
    // (MEMORY_RESERVE_MB sets it instead; versions loaded later are not re-measured). It is measured
    // again as each of them becomes ready, so it is set as soon as the first one serves and counts
    // them all once the last one does.
    const serving = models.list().flatMap((m) => m.serving !== undefined ? [m.serving.segmenter] : [])
    const measure = (): void => {
      const cacheBytes = serving.reduce((n, s) => n + s.cacheStats().capacityBytes, 0)
      app.budget.setReserve(measuredReserve(process.memoryUsage.rss(), app.budget.stats().limitBytes, config.workers * Math.max(1, serving.length), cacheBytes))
    }
    for (const s of serving) s.started.then(measure, () => {})
  }

  const meters = new WeakMap<Segmenter, ThroughputMeter>()
  app.decorate('segmentWith', async (ref: string | undefined, req: SegmentRequest, log: FastifyBaseLogger, version?: string): Promise<SegmentResult> => {
    let lease: ReturnType<typeof models.acquire>
    try {
      lease = models.acquire(ref, version)
    } catch (err) {
      // No segmenter takes the request: the memory leases it brought end here.
      for (const l of req.leases ?? []) l.release()
      throw err
    }
    const { segmenter, deployment: d } = lease
    const labels = { model: d.name, version: d.version }
    let meter = meters.get(segmenter)
    if (meter === undefined) { meter = throughputMeter(); meters.set(segmenter, meter) }
    try {
      const result = await segmenter.segment(req)
      meter.record()
      metrics.observeModelRequest(labels, 200)
      metrics.observeStages(result.timings, labels)
      log.info({
        model: `${d.name}@${d.version}`,
        width: result.image.width,
        height: result.image.height,
        format: result.image.format,
        maskFormat: req.format ?? 'png',
        expressions: req.expressions.length,
        batchSize: result.batchSize,
        timings: result.timings,
        ...(config.logExpressions ? { segment: { expressions: req.expressions } } : {}),
      }, 'segmentation done')
      return result
    } catch (err) {
      metrics.observeModelRequest(labels, toErrorResponse(err).statusCode)
      if (err instanceof SegError && (err.code === ERR_QUEUE_FULL.code || err.code === ERR_MEMORY_BUSY.code)) {
        const s = segmenter.stats()
        throw new SegError(err.code, err.statusCode, err.message, { retryAfter: retryAfterSeconds(s.queueDepth + s.busyWorkers, meter.rate(), s.liveWorkers) })
      }
      throw err
    } finally {
      lease.release()
    }
  })

  let poll: NodeJS.Timeout | undefined
  if (config.modelsPollMs > 0 && opts.segmenter === undefined) {
    poll = setInterval(() => {
      models.reload('poll').catch((err) => app.log.error({ reason: (err as Error).message }, 'model rescan failed'))
    }, config.modelsPollMs)
    poll.unref()
  }
  app.addHook('onClose', async () => {
    if (poll !== undefined) clearInterval(poll)
    await models.close()
  })
}, { name: 'models', dependencies: ['metrics', 'budget'] })
