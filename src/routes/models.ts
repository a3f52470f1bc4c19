/**
 * GET /models          — every model: the serving version with its model.json, state, provider,
 *                        workers, requests in flight and memory; a version being loaded, versions
 *                        draining, and the last rejected version with the reason.
 * POST /admin/reload   — rescan the models and roll in what changed (the same as SIGHUP); answers
 *                        when every new version serves or was rejected (draining goes on after).
 *                        Needs `Authorization: Bearer <key>` with a key of ADMIN_API_KEYS.
 */
import type { FastifyInstance } from 'fastify'
import { ERR_UNAUTHORIZED } from '../errors.js'
import type { Deployment, ModelStatus } from '../model/repository.js'
import { digest, matchKey } from '../plugins/auth.js'
import { errorBody } from '../schemas.js'

const version = {
  type: 'object',
  required: ['version', 'state', 'provider', 'loaded_at', 'inflight', 'workers', 'memory'],
  properties: {
    version: { type: 'string' },
    state: { type: 'string', enum: ['loading', 'ready', 'unavailable', 'draining'] },
    provider: { type: 'string' },
    loaded_at: { type: 'string' },
    inflight: { type: 'integer' },
    queue_depth: { type: 'integer' },
    workers: {
      type: 'object',
      required: ['configured', 'live', 'busy'],
      properties: { configured: { type: 'integer' }, live: { type: 'integer' }, busy: { type: 'integer' }, restarts: { type: 'integer' } },
    },
    memory: {
      type: 'object',
      required: ['weights_bytes', 'weights_in_workers_bytes', 'feature_cache_bytes', 'feature_cache_capacity_bytes'],
      properties: {
        weights_bytes: { type: 'integer' },
        weights_in_workers_bytes: { type: 'integer' },
        feature_cache_bytes: { type: 'integer' },
        feature_cache_capacity_bytes: { type: 'integer' },
      },
    },
  },
} as const

export const modelsResponse = {
  type: 'object',
  required: ['default', 'models'],
  properties: {
    default: { type: 'string' },
    models: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'default', 'serving', 'draining'],
        properties: {
          name: { type: 'string' },
          default: { type: 'boolean' },
          serving: { anyOf: [{ type: 'object', required: ['metadata'], properties: { ...version.properties, metadata: { type: 'object', additionalProperties: true } } }, { type: 'null' }] },
          loading: { anyOf: [{ type: 'object', required: ['version', 'since'], properties: { version: { type: 'string' }, since: { type: 'string' } } }, { type: 'null' }] },
          draining: { type: 'array', items: version },
          last_rejected: {
            anyOf: [
              { type: 'object', required: ['reason', 'at'], properties: { version: { type: 'string' }, reason: { type: 'string' }, at: { type: 'string' } } },
              { type: 'null' },
            ],
          },
        },
      },
    },
  },
} as const

const reloadResponse = {
  type: 'object',
  required: ['results', 'models'],
  properties: {
    results: {
      type: 'array',
      items: {
        type: 'object',
        required: ['model', 'result'],
        properties: {
          model: { type: 'string' },
          version: { type: 'string' },
          result: { type: 'string', enum: ['loaded', 'rejected', 'removed', 'unchanged'] },
          previous: { type: 'string' },
          reason: { type: 'string' },
        },
      },
    },
    models: modelsResponse.properties.models,
  },
} as const

export default async function modelsRoutes (app: FastifyInstance): Promise<void> {
  const { models, config } = app
  const adminKeys = config.adminApiKeys.map(digest)

  function describe (d: Deployment): Record<string, unknown> {
    const s = d.segmenter.stats()
    const c = d.segmenter.cacheStats()
    return {
      version: d.version,
      state: models.stateOf(d),
      provider: d.segmenter.provider(),
      loaded_at: d.loadedAt.toISOString(),
      inflight: d.leases,
      queue_depth: s.queueDepth,
      workers: { configured: s.workers, live: s.liveWorkers, busy: s.busyWorkers, restarts: s.restarts },
      memory: {
        weights_bytes: d.segmenter.info.weightsBytes,
        weights_in_workers_bytes: d.segmenter.info.weightsBytes * s.liveWorkers,
        feature_cache_bytes: c.bytes,
        feature_cache_capacity_bytes: c.capacityBytes,
      },
    }
  }

  const summary = (m: ModelStatus): Record<string, unknown> => ({
    name: m.name,
    default: m.default,
    serving: m.serving !== undefined ? { ...describe(m.serving), metadata: m.serving.segmenter.info.metadata } : null,
    loading: m.loading !== undefined ? { version: m.loading.version, since: m.loading.since.toISOString() } : null,
    draining: m.draining.map(describe),
    last_rejected: m.lastRejected !== undefined ? { version: m.lastRejected.version, reason: m.lastRejected.reason, at: m.lastRejected.at.toISOString() } : null,
  })

  app.get('/models', { schema: { response: { 200: modelsResponse } } }, async () => ({
    default: models.defaultName() ?? '',
    models: models.list().map(summary),
  }))

  app.post('/admin/reload', {
    onRequest: async (request, reply) => {
      const m = /^Bearer[ ]+(\S+)\s*$/i.exec(request.headers.authorization ?? '')
      if (adminKeys.length === 0) throw ERR_UNAUTHORIZED('Admin routes are off: set ADMIN_API_KEYS')
      if (m === null || matchKey(m[1], adminKeys) < 0) {
        void reply.header('www-authenticate', 'Bearer')
        throw ERR_UNAUTHORIZED('An admin key is required: send Authorization: Bearer <key> with a key of ADMIN_API_KEYS')
      }
    },
    schema: { response: { 200: reloadResponse, '4xx': errorBody, '5xx': errorBody } },
  }, async (request) => {
    request.log.info('reload requested')
    const results = await models.reload('admin')
    return { results, models: models.list().map(summary) }
  })
}
