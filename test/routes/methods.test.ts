/** A path the service has, asked with a method it does not serve: 405 with Allow; an unknown path: 404. */
import t from 'tap'
import { build } from '../helper.js'

t.test('405 + Allow on every known path, for any other method', async (t) => {
  const app = await build(t)
  // The methods each path serves, from Fastify's own route table (GET routes also answer HEAD).
  const cases: Array<[string, string[]]> = [
    ['/healthz', ['GET', 'HEAD']],
    ['/readyz', ['GET', 'HEAD']],
    ['/metrics', ['GET', 'HEAD']],
    ['/openapi.yaml', ['GET', 'HEAD']],
    ['/docs', ['GET', 'HEAD']],
    ['/', ['GET', 'HEAD']],
    ['/segment', ['POST']],
  ]
  for (const [url, allowed] of cases) {
    for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE', 'QUERY'] as const) {
      t.equal(app.hasRoute({ url, method }), allowed.includes(method), `${method} ${url} is ${allowed.includes(method) ? '' : 'not '}a route`)
      if (allowed.includes(method)) continue
      const res = await app.inject({ method, url: `${url}?x=1` })
      t.equal(res.statusCode, 405, `${method} ${url} → 405`)
      t.equal(res.headers.allow, allowed.join(', '), `${method} ${url}: Allow: ${allowed.join(', ')}`)
      if (method === 'HEAD') continue // no body
      t.equal(res.json().error.code, 'SEG_ERR_METHOD_NOT_ALLOWED')
      t.match(res.json().error.message, `Method ${method} is not allowed on ${url}`)
    }
  }
})

t.test('405 + Allow on a path with parameters; 404 for one the routes do not have', async (t) => {
  const app = await build(t)
  for (const [method, url, allow] of [
    ['QUERY', '/v2/models/vlt-fake/ready', 'GET, HEAD'],
    ['DELETE', '/v2/models/anything/versions/1', 'GET, HEAD'],
    ['GET', '/v2/models/vlt-fake/infer', 'POST'],
  ] as const) {
    const res = await app.inject({ method, url })
    t.equal(res.statusCode, 405, `${method} ${url}`)
    t.equal(res.headers.allow, allow, `${method} ${url}: Allow`)
    // /v2 answers in the protocol's error shape: { error: message }
    t.match(res.json().error, `Method ${method} is not allowed on ${url}`)
  }
  const deeper = await app.inject({ method: 'GET', url: '/v2/models/a/b/ready' })
  t.equal(deeper.statusCode, 404, 'a parameter is one path segment')
})

t.test('an unknown path is 404 whatever the method', async (t) => {
  const app = await build(t)
  for (const method of ['GET', 'POST', 'TRACE'] as const) {
    const res = await app.inject({ method, url: '/nowhere' })
    t.equal(res.statusCode, 404, `${method} /nowhere`)
    t.equal(res.headers.allow, undefined)
    t.equal(res.json().error.code, 'SEG_ERR_NOT_FOUND')
  }
})
