/** Optional access control: API keys (Bearer, constant-time), open paths, per-key token bucket. */
import t from 'tap'
import { build, form, rectImage } from '../helper.js'
import { checkResponse } from '../openapi-validator.js'
import { matchKey, tokenBucket } from '../../src/plugins/auth.js'
import { createHash } from 'node:crypto'
import { loadConfig } from '../../src/config.js'

const img = await rectImage(32, 32, { x: 4, y: 4, w: 8, h: 8 })
const KEYS = ['k-alpha-0123456789', 'k-beta-9876543210']

t.test('config: off by default; keys and open paths are comma-separated lists', async (t) => {
  const d = loadConfig({}, 2)
  t.strictSame(d.apiKeys, [])
  t.strictSame(d.authOpenPaths, ['/healthz', '/readyz', '/metrics'])
  t.equal(d.rateLimitRps, 0)
  const c = loadConfig({ API_KEYS: ' a , b,,', AUTH_OPEN_PATHS: '/healthz', RATE_LIMIT_RPS: '2.5', RATE_LIMIT_BURST: '3' }, 2)
  t.strictSame(c.apiKeys, ['a', 'b'])
  t.strictSame(c.authOpenPaths, ['/healthz'])
  t.equal(c.rateLimitRps, 2.5)
  t.equal(c.rateLimitBurst, 3)
})

t.test('matchKey and the token bucket', async (t) => {
  const digests = KEYS.map((k) => createHash('sha256').update(k).digest())
  t.equal(matchKey(KEYS[1], digests), 1)
  t.equal(matchKey(KEYS[0], digests), 0)
  t.equal(matchKey('k-alpha-012345678', digests), -1, 'a prefix does not match')
  t.equal(matchKey('', digests), -1)
  const b = tokenBucket(2, 3, 0)
  t.strictSame([b.take(0), b.take(0), b.take(0)], [0, 0, 0], 'a burst of 3')
  t.equal(b.take(0), 0.5, 'then wait 1/rate')
  t.equal(b.take(500), 0, 'refilled after 0.5 s')
})

t.test('no API_KEYS: everything is open', async (t) => {
  const app = await build(t)
  const res = await app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: 'the circle' }) })
  t.equal(res.statusCode, 200)
})

t.test('with API_KEYS', async (t) => {
  const app = await build(t, { config: { apiKeys: KEYS } })
  const post = (headers: Record<string, string>) => app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: 'the circle' }), headers })

  t.test('BAD CALL - no key → 401 with WWW-Authenticate', async (t) => {
    const res = await post({})
    t.equal(res.statusCode, 401)
    t.equal(res.json().error.code, 'SEG_ERR_UNAUTHORIZED')
    t.equal(res.headers['www-authenticate'], 'Bearer')
    t.strictSame(checkResponse('POST', '/segment', res), [])
  })
  t.test('BAD CALL - wrong key, other scheme, empty bearer → 401', async (t) => {
    for (const h of [`Bearer ${KEYS[0]}x`, `Basic ${Buffer.from('u:p').toString('base64')}`, 'Bearer ', KEYS[0]]) {
      const res = await post({ authorization: h })
      t.equal(res.statusCode, 401, h)
      t.equal(res.json().error.code, 'SEG_ERR_UNAUTHORIZED')
      t.notMatch(res.payload, KEYS[0], 'the key is not echoed')
    }
  })
  t.test('either key is accepted (scheme case-insensitive)', async (t) => {
    t.equal((await post({ authorization: `Bearer ${KEYS[0]}` })).statusCode, 200)
    t.equal((await post({ authorization: `bearer ${KEYS[1]}` })).statusCode, 200)
  })
  t.test('health, readiness and metrics stay open', async (t) => {
    for (const url of ['/healthz', '/readyz', '/metrics']) t.equal((await app.inject(url)).statusCode, 200, url)
    t.equal((await app.inject('/openapi.yaml')).statusCode, 401, 'other paths are not')
  })
})

t.test('per-key rate limit → 429 + Retry-After; keys are independent', async (t) => {
  const app = await build(t, { config: { apiKeys: KEYS, rateLimitRps: 0.5, rateLimitBurst: 2 } })
  const post = (key: string) => app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: 'the circle' }), headers: { authorization: `Bearer ${key}` } })
  t.equal((await post(KEYS[0])).statusCode, 200)
  t.equal((await post(KEYS[0])).statusCode, 200)
  const limited = await post(KEYS[0])
  t.equal(limited.statusCode, 429)
  t.equal(limited.json().error.code, 'SEG_ERR_RATE_LIMITED')
  t.equal(limited.headers['retry-after'], '2', '1 token at 0.5/s')
  t.strictSame(checkResponse('POST', '/segment', limited), [])
  t.equal((await post(KEYS[1])).statusCode, 200, 'the other key has its own bucket')
  t.equal((await app.inject('/healthz')).statusCode, 200, 'open paths are not limited')
})

t.test('AUTH_OPEN_PATHS is configurable', async (t) => {
  const app = await build(t, { config: { apiKeys: KEYS, authOpenPaths: ['/healthz'] } })
  t.equal((await app.inject('/healthz')).statusCode, 200)
  t.equal((await app.inject('/metrics')).statusCode, 401)
})
