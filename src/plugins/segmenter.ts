/**
 * The model as a named plugin: decorates `app.segmenter` (built by an injected factory in tests,
 * else from the model folder in config) with the metrics' engine hooks, and stops its engine on
 * close, after in-flight requests finished.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { createSegmenterFromFolder, type SegmenterFactory } from '../model/segmenter.js'

export interface SegmenterPluginOptions {
  segmenter?: SegmenterFactory
}

export default fp(async (app: FastifyInstance, opts: SegmenterPluginOptions) => {
  const { config } = app
  const build = opts.segmenter ?? (async (hooks) => await createSegmenterFromFolder({ ...config, hooks, logger: app.log }))
  const segmenter = await build(app.metrics.engineHooks)
  app.decorate('segmenter', segmenter)
  app.addHook('onClose', async () => {
    await segmenter.close()
  })
}, { name: 'segmenter', dependencies: ['metrics'] })
