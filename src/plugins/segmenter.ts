/**
 * The model as a named plugin: decorates `app.segmenter` (built by an injected factory in tests,
 * else from the model folder in config) with the metrics' engine hooks and the memory budget,
 * and stops its engine on close, after in-flight requests finished. Once the workers are ready,
 * what they and the model hold is measured and set as the budget's reserve (unless
 * MEMORY_RESERVE_MB gives it).
 */
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { measuredReserve } from '../budget/budget.js'
import { createSegmenterFromFolder, type SegmenterFactory } from '../model/segmenter.js'

export interface SegmenterPluginOptions {
  segmenter?: SegmenterFactory
}

export default fp(async (app: FastifyInstance, opts: SegmenterPluginOptions) => {
  const { config } = app
  const build = opts.segmenter ?? (async (hooks, budget) => await createSegmenterFromFolder({ ...config, hooks, budget, logger: app.log }))
  const segmenter = await build(app.metrics.engineHooks, app.budget)
  app.decorate('segmenter', segmenter)
  if (config.memoryReserveMb === 0) {
    segmenter.started.then(() => {
      app.budget.setReserve(measuredReserve(process.memoryUsage.rss(), app.budget.stats().limitBytes, config.workers, segmenter.cacheStats().capacityBytes))
    }, () => {})
  }
  app.addHook('onClose', async () => {
    await segmenter.close()
  })
}, { name: 'segmenter', dependencies: ['metrics', 'budget'] })
