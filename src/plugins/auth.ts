/**
 * Optional access control: when API_KEYS is set, every request outside AUTH_OPEN_PATHS needs
 * `Authorization: Bearer <key>` (401 otherwise), and each key gets a token bucket of
 * RATE_LIMIT_BURST requests refilled at RATE_LIMIT_RPS per second (429 + Retry-After when empty;
 * no limit when RATE_LIMIT_RPS is 0). Paths under /admin/ are left to their routes, which take
 * ADMIN_API_KEYS instead.
 *
 * Keys are compared as SHA-256 digests with crypto.timingSafeEqual, against every configured
 * key, so neither the length nor the content of a guess shows in the time taken. Only a short
 * fingerprint of the key's digest is ever logged.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { ERR_RATE_LIMITED, ERR_UNAUTHORIZED, SegError } from '../errors.js'

export const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest()

/** The index of the configured key that matches `presented`, or -1; the time taken is independent of both. */
export function matchKey (presented: string, keyDigests: Buffer[]): number {
  const d = digest(presented)
  let found = -1
  for (let i = 0; i < keyDigests.length; i++) {
    if (timingSafeEqual(d, keyDigests[i]) && found === -1) found = i
  }
  return found
}

export interface TokenBucket {
  /** Take one token; returns 0 when allowed, else the seconds until one is available. */
  take: (now?: number) => number
}

export function tokenBucket (ratePerSecond: number, burst: number, now: number = performance.now()): TokenBucket {
  let tokens = burst
  let last = now
  return {
    take (t = performance.now()) {
      tokens = Math.min(burst, tokens + ((t - last) / 1000) * ratePerSecond)
      last = t
      if (tokens >= 1) { tokens -= 1; return 0 }
      return (1 - tokens) / ratePerSecond
    },
  }
}

export default fp(async (app: FastifyInstance) => {
  const { apiKeys, authOpenPaths, rateLimitRps, rateLimitBurst } = app.config
  if (apiKeys.length === 0) return
  const keyDigests = apiKeys.map(digest)
  const fingerprints = keyDigests.map((d) => d.toString('hex').slice(0, 8))
  const buckets = apiKeys.map(() => rateLimitRps > 0 ? tokenBucket(rateLimitRps, rateLimitBurst) : undefined)
  const open = new Set(authOpenPaths)

  app.addHook('onRequest', async (request, reply) => {
    const path = request.url.split('?')[0]
    // Admin routes check their own keys (ADMIN_API_KEYS, src/routes/models.ts).
    if (open.has(path) || path.startsWith('/admin/')) return
    const header = request.headers.authorization
    const m = typeof header === 'string' ? /^Bearer[ ]+(\S+)\s*$/i.exec(header) : null
    if (m === null) {
      void reply.header('www-authenticate', 'Bearer')
      throw ERR_UNAUTHORIZED(header === undefined ? 'An API key is required: send Authorization: Bearer <key>' : 'Expected Authorization: Bearer <key>')
    }
    const i = matchKey(m[1], keyDigests)
    if (i < 0) {
      void reply.header('www-authenticate', 'Bearer error="invalid_token"')
      throw ERR_UNAUTHORIZED('The API key is not valid')
    }
    request.log = request.log.child({ apiKey: fingerprints[i] })
    const wait = buckets[i]?.take() ?? 0
    if (wait > 0) {
      const retryAfter = Math.max(1, Math.ceil(wait))
      const e = ERR_RATE_LIMITED(retryAfter)
      throw new SegError(e.code, e.statusCode, e.message, { retryAfter })
    }
  })
}, { name: 'auth' })
