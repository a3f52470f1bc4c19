/**
 * The model as a named plugin: decorates `app.segmenter` (an injected one in tests, else the
 * model folder from config) and stops its workers on close, after in-flight requests finished.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { createSegmenterFromFolder, type Segmenter } from '../model/segmenter.js'

export interface SegmenterPluginOptions {
  segmenter?: Segmenter
}

export default fp(async (app: FastifyInstance, opts: SegmenterPluginOptions) => {
  const { config } = app
  const segmenter = opts.segmenter ?? await createSegmenterFromFolder({
    modelPath: config.modelPath,
    executionProviders: config.executionProviders,
    requireGpu: config.requireGpu,
    cudaDeviceId: config.cudaDeviceId,
    workers: config.workers,
    threadsPerWorker: config.threadsPerWorker,
    intraOpSpinning: config.intraOpSpinning,
    maxBatch: config.maxBatch,
    maxBatchWaitMs: config.maxBatchWaitMs,
    queueSize: config.queueSize,
    maxImagePixels: config.maxImagePixels,
    featureCacheMb: config.featureCacheMb,
    logger: app.log,
  })
  app.decorate('segmenter', segmenter)
  app.addHook('onClose', async () => {
    await segmenter.close()
  })
}, { name: 'segmenter' })
