/**
 * GET /healthz — liveness: answers 200 whenever the event loop runs.
 * GET /readyz  — readiness: 200 once every model serves (its workers loaded it and passed the
 *                golden case) and the default model is among them; 503 before that, when a
 *                model has no live worker, and from the moment shutdown begins. The body reports
 *                the default model at the top and each model under `models`.
 */
import type { FastifyInstance } from 'fastify'
import type { DeploymentState } from '../model/repository.js'

const workers = {
  type: 'object',
  required: ['configured', 'live'],
  properties: { configured: { type: 'integer' }, live: { type: 'integer' } },
} as const

const readiness = {
  type: 'object',
  required: ['status', 'model', 'provider', 'workers', 'models'],
  properties: {
    status: { type: 'string', enum: ['ready', 'starting', 'unavailable', 'shutting_down'] },
    model: { type: 'string' },
    provider: { type: 'string' },
    workers,
    models: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'version', 'state', 'provider', 'workers'],
        properties: {
          name: { type: 'string' },
          version: { type: 'string' },
          state: { type: 'string', enum: ['loading', 'ready', 'unavailable', 'draining'] },
          provider: { type: 'string' },
          workers,
        },
      },
    },
  },
} as const

export default async function healthRoutes (app: FastifyInstance): Promise<void> {
  const { models, lifecycle } = app

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
    const list = models.list().filter((m) => m.serving !== undefined)
    const per = list.map((m) => {
      const s = m.serving!.segmenter.stats()
      return { name: m.name, version: m.serving!.version, state: m.servingState as DeploymentState, provider: m.serving!.segmenter.provider(), workers: { configured: s.workers, live: s.liveWorkers } }
    })
    const status = lifecycle.closing ? 'shutting_down' : models.isReady() ? 'ready' : per.some((m) => m.state === 'loading') ? 'starting' : 'unavailable'
    if (status !== 'ready') void reply.code(503).header('retry-after', '5')
    const def = per.find((m) => m.name === models.defaultName())
    return {
      status,
      model: def !== undefined ? `${def.name}@${def.version}` : '',
      provider: def?.provider ?? 'none',
      workers: def?.workers ?? { configured: 0, live: 0 },
      models: per,
    }
  })
}
