/**
 * GET /healthz — liveness: answers 200 whenever the event loop runs.
 * GET /readyz  — readiness: 200 once every worker loaded the model and passed the golden case,
 *                503 before that and from the moment shutdown begins.
 */
import type { FastifyInstance } from 'fastify'

const readiness = {
  type: 'object',
  required: ['status', 'model', 'provider', 'workers'],
  properties: {
    status: { type: 'string', enum: ['ready', 'starting', 'shutting_down'] },
    model: { type: 'string' },
    provider: { type: 'string' },
    workers: {
      type: 'object',
      required: ['configured', 'live'],
      properties: { configured: { type: 'integer' }, live: { type: 'integer' } },
    },
  },
} as const

export default async function healthRoutes (app: FastifyInstance): Promise<void> {
  const { segmenter, lifecycle } = app

  app.get('/healthz', {
    schema: {
      response: {
        200: {
          type: 'object',
          required: ['status', 'uptime_s'],
          properties: { status: { type: 'string', enum: ['ok'] }, uptime_s: { type: 'number' } },
        },
      },
    },
  }, async () => ({ status: 'ok' as const, uptime_s: Math.round(process.uptime() * 10) / 10 }))

  app.get('/readyz', { schema: { response: { 200: readiness, 503: readiness } } }, async (_request, reply) => {
    const stats = segmenter.stats()
    const status = lifecycle.closing ? 'shutting_down' : segmenter.isReady() ? 'ready' : 'starting'
    if (status !== 'ready') void reply.code(503).header('retry-after', '5')
    return {
      status,
      model: `${segmenter.info.name}@${segmenter.info.version}`,
      provider: segmenter.provider(),
      workers: { configured: stats.workers, live: stats.liveWorkers },
    }
  })
}
