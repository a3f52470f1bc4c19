/**
 * GET / — a page to try the model in a browser (src/public: index.html, app.js, style.css and a
 * few bundled RefShapes examples). The files are read once at start-up, from src/public under the
 * package root (the same place from src/ under tsx and from dist/ after the build), and served
 * with an ETag; no build step, nothing fetched from elsewhere.
 */
import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'

export const PUBLIC_DIR = fileURLToPath(new URL('../../src/public/', import.meta.url))

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.jpg': 'image/jpeg',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
}

/** Everything the page needs comes from this origin; images are drawn from blob: URLs. */
const CSP = [
  "default-src 'self'", "img-src 'self' blob: data:", "script-src 'self'", "style-src 'self'",
  "connect-src 'self'", "object-src 'none'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
].join('; ')

interface Asset { body: Buffer, type: string, etag: string, cacheControl: string }

/** url path → file, for every file under `dir` with a known type. */
export function loadAssets (dir: string = PUBLIC_DIR): Map<string, Asset> {
  const assets = new Map<string, Asset>()
  if (!existsSync(dir)) return assets
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue
    const file = path.join(entry.parentPath, entry.name)
    const type = TYPES[path.extname(entry.name).toLowerCase()]
    if (type === undefined) continue
    const body = readFileSync(file)
    const url = '/' + path.relative(dir, file).split(path.sep).join('/')
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`
    // Page code revalidates (cheap 304s, never stale after a deploy); the example images barely change.
    const cacheControl = url.startsWith('/examples/') && !url.endsWith('.json') ? 'public, max-age=86400' : 'no-cache'
    assets.set(url === '/index.html' ? '/' : url, { body, type, etag, cacheControl })
  }
  return assets
}

export default async function pageRoutes (app: FastifyInstance): Promise<void> {
  const assets = loadAssets()
  for (const [url, asset] of assets) {
    app.get(url, async (request, reply) => {
      void reply
        .header('etag', asset.etag)
        .header('cache-control', asset.cacheControl)
        .header('x-content-type-options', 'nosniff')
      if (asset.type.startsWith('text/html')) void reply.header('content-security-policy', CSP).header('referrer-policy', 'no-referrer')
      const match = request.headers['if-none-match']
      if (match !== undefined && match.split(',').some((m) => m.trim() === asset.etag || m.trim() === '*')) {
        return reply.code(304).send()
      }
      return reply.type(asset.type).send(asset.body)
    })
  }
}
