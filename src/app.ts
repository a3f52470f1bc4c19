/**
 * buildApp(config, deps): the whole service as a Fastify instance — plugins, routes and the one
 * error handler — without listening and without reading process.env (src/server.ts does both).
 */
import { randomUUID } from 'node:crypto'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import multipart from '@fastify/multipart'
import type { Config } from './config.js'
import { errorHandler, ERR_METHOD_NOT_ALLOWED, ERR_NOT_FOUND } from './errors.js'
import type { FolderLoader } from './model/repository.js'
import type { SegmenterFactory } from './model/segmenter.js'
import authPlugin from './plugins/auth.js'
import budgetPlugin, { type BudgetPluginOptions } from './plugins/budget.js'
import metricsPlugin, { type Metrics } from './plugins/metrics.js'
import modelsPlugin from './plugins/models.js'
import docsRoutes from './routes/docs.js'
import healthRoutes from './routes/health.js'
import metricsRoutes from './routes/metrics.js'
import modelsRoutes from './routes/models.js'
import openapiRoutes from './routes/openapi.js'
import pageRoutes from './routes/page.js'
import segmentRoutes from './routes/segment.js'
import v2Routes from './routes/v2.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    metrics: Metrics
    lifecycle: { closing: boolean }
  }
}

export interface AppDeps {
  /** Builds the one model (tests: around a fake model); otherwise MODELS_DIR or MODEL_PATH is loaded. */
  segmenter?: SegmenterFactory
  /** How each folder of MODELS_DIR / MODEL_PATH becomes a segmenter (tests: a fake engine). */
  loadFolder?: FolderLoader
  /** Fastify logger option or instance; default: no logging. */
  logger?: FastifyServerOptions['logger']
  loggerInstance?: FastifyServerOptions['loggerInstance']
  /** Tests: where the memory limit is read from (src/budget/memory-limit.ts). */
  memoryProbe?: BudgetPluginOptions['probe']
}

export function buildApp (config: Config, deps: AppDeps = {}): FastifyInstance {
  const app = Fastify({
    ...(deps.loggerInstance !== undefined ? { loggerInstance: deps.loggerInstance } : { logger: deps.logger ?? false }),
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    // Shutdown answers are ours (JSON, Retry-After), not Fastify's bare 503.
    return503OnClosing: false,
    // Non-multipart bodies are refused before parsing; this only bounds what might still be read.
    bodyLimit: 1024 * 1024,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    // Node's own limits, behind the route's (408/504 at REQUEST_TIMEOUT_MS): headers must arrive
    // within HEADERS_TIMEOUT_MS, a whole request soon after the deadline; checked every second
    // (Node checks every 30 s by default).
    requestTimeout: config.headersTimeoutMs + config.requestTimeoutMs + 1000,
    http: {
      headersTimeout: config.headersTimeoutMs,
      requestTimeout: config.headersTimeoutMs + config.requestTimeoutMs + 1000,
      connectionsCheckingInterval: Math.min(1000, config.headersTimeoutMs),
    },
  }) as unknown as FastifyInstance
  app.server.maxConnections = config.maxConnections

  app.decorate('config', config)
  app.decorate('lifecycle', { closing: false })
  app.addHook('preClose', async () => { app.lifecycle.closing = true })
  app.addHook('onSend', async (request, reply) => {
    void reply.header('x-request-id', request.id)
    // While shutting down, do not keep connections open for more requests.
    if (app.lifecycle.closing) void reply.header('connection', 'close')
  })

  app.setErrorHandler(errorHandler)
  // A path the service has, asked with another method, is 405 with Allow (RFC 9110); else 404.
  // Decided on arrival, before a body is read (Fastify would otherwise parse, or refuse, the body
  // of e.g. QUERY first).
  // Paths with parameters (/v2/models/:name/…) match any one segment in their place.
  const routes = new Map<string, { pattern: RegExp, methods: Set<string> }>()
  app.addHook('onRoute', (route) => {
    const entry = routes.get(route.url) ?? {
      pattern: new RegExp(`^${route.url.split('/').map((s) => s.startsWith(':') ? '[^/]+' : s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('/')}$`),
      methods: new Set<string>(),
    }
    for (const m of [route.method].flat()) entry.methods.add(m)
    routes.set(route.url, entry)
  })
  app.addHook('onRequest', async (request, reply) => {
    if (!request.is404) return
    const path = request.url.split('?')[0]
    const methods = new Set<string>()
    for (const r of routes.values()) if (r.pattern.test(path)) for (const m of r.methods) methods.add(m)
    if (methods.size === 0) return
    const allow = [...methods].sort().join(', ')
    void reply.header('allow', allow)
    throw ERR_METHOD_NOT_ALLOWED(request.method, path, allow)
  })
  app.setNotFoundHandler(async (request) => { throw ERR_NOT_FOUND(request.method, request.url.split('?')[0]) })

  void app.register(authPlugin)
  void app.register(multipart, {
    limits: {
      fileSize: config.maxImageBytes,
      files: 1,
      fields: config.maxFormFields,
      parts: config.maxFormParts,
      fieldSize: Math.max(1024, config.maxTextLength * 4),
      fieldNameSize: 100,
      headerPairs: 100,
    },
  })
  void app.register(budgetPlugin, { probe: deps.memoryProbe })
  void app.register(metricsPlugin)
  void app.register(modelsPlugin, { segmenter: deps.segmenter, loadFolder: deps.loadFolder })
  void app.register(healthRoutes)
  void app.register(metricsRoutes)
  void app.register(modelsRoutes)
  void app.register(v2Routes, { prefix: '/v2' })
  void app.register(openapiRoutes)
  void app.register(docsRoutes)
  void app.register(segmentRoutes)
  void app.register(pageRoutes)
  return app
}
