/**
 * GET /docs — interactive API documentation: Swagger UI over openapi.yaml (the same file as
 * GET /openapi.yaml). Swagger UI's assets come from the @fastify/swagger-ui package, so the page
 * works offline; "Try it out" sends requests to this server.
 */
import { fileURLToPath } from 'node:url'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyInstance } from 'fastify'
import { OPENAPI_FILE } from './openapi.js'

export const DOCS_PREFIX = '/docs'

export default async function docsRoutes (app: FastifyInstance): Promise<void> {
  await app.register(swagger, { mode: 'static', specification: { path: fileURLToPath(OPENAPI_FILE), baseDir: fileURLToPath(new URL('.', OPENAPI_FILE)) } })
  await app.register(swaggerUi, {
    routePrefix: DOCS_PREFIX,
    staticCSP: true,
    // No badge fetched from validator.swagger.io. "Try it out" sends to the spec's server, `/`:
    // the origin the page came from.
    uiConfig: { validatorUrl: null, deepLinking: true, tryItOutEnabled: false },
  })
}
