/** GET /metrics — Prometheus text exposition. */
import type { FastifyInstance } from 'fastify'

export default async function metricsRoutes (app: FastifyInstance): Promise<void> {
  const { registry } = app.metrics
  app.get('/metrics', async (_request, reply) => {
    void reply.type(registry.contentType)
    return await registry.metrics()
  })
}
