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

t.test('an unknown path is 404 whatever the method', async (t) => {
  const app = await build(t)
  for (const method of ['GET', 'POST', 'TRACE'] as const) {
    const res = await app.inject({ method, url: '/nowhere' })
    t.equal(res.statusCode, 404, `${method} /nowhere`)
    t.equal(res.headers.allow, undefined)
    t.equal(res.json().error.code, 'SEG_ERR_NOT_FOUND')
  }
})
