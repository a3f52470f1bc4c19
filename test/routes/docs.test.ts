/** GET /docs: Swagger UI over openapi.yaml, every asset from this server. */
import t from 'tap'
import { parse } from 'yaml'
import { readFileSync } from 'node:fs'
import { build } from '../helper.js'

const spec = parse(readFileSync(new URL('../../openapi.yaml', import.meta.url), 'utf8'))

t.test('GET /docs: the page, its assets and the spec, all from this origin', async (t) => {
  const app = await build(t, { wait: false })
  const page = await app.inject('/docs')
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /^text\/html/)
  t.match(page.headers['content-security-policy'], /default-src 'self'/)
  const assets = [...page.payload.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1])
  t.ok(assets.some((a) => a.endsWith('swagger-ui-bundle.js')), 'loads Swagger UI')
  for (const a of assets) {
    t.match(a, /^\/docs\//, `${a} is served here`)
    const res = await app.inject(a)
    t.equal(res.statusCode, 200, `GET ${a}`)
  }
  const init = await app.inject('/docs/static/swagger-initializer.js')
  t.match(init.payload, /"validatorUrl":null/, 'no validator badge fetched from elsewhere')

  const json = await app.inject('/docs/json')
  t.equal(json.statusCode, 200)
  const served = json.json()
  t.strictSame(served.servers.map((s: { url: string }) => s.url), ['/'], '"Try it out" targets this server')
  t.strictSame(served, spec, 'the same document as openapi.yaml')
})
