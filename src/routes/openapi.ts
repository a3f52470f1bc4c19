/** GET /openapi.yaml — the API description (openapi.yaml at the package root). */
import { readFileSync } from 'node:fs'
import type { FastifyInstance } from 'fastify'

export const OPENAPI_FILE = new URL('../../openapi.yaml', import.meta.url)

export default async function openapiRoutes (app: FastifyInstance): Promise<void> {
  const spec = readFileSync(OPENAPI_FILE, 'utf8')
  app.get('/openapi.yaml', async (_request, reply) => {
    void reply.type('application/yaml; charset=utf-8')
    return spec
  })
}
