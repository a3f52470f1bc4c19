/** GET / and its files (src/public), without a browser. test/e2e/page.test.ts drives it in Chromium. */
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { PUBLIC_DIR, loadAssets } from '../../src/routes/page.js'
import { build } from '../helper.js'

t.test('GET / serves the page', async (t) => {
  const app = await build(t, { wait: false })
  const res = await app.inject('/')
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/html; charset=utf-8/)
  t.match(res.payload, /^<!doctype html>/i)
  t.match(res.payload, /<script type="module" src="\/app\.js">/)
  t.match(res.headers['content-security-policy'], /default-src 'self'/)
  t.equal(res.headers['x-content-type-options'], 'nosniff')
  t.equal(res.headers['cache-control'], 'no-cache')
  t.ok(res.headers.etag)
  t.notMatch(res.payload, /https?:\/\/(?!localhost)/, 'nothing loaded from elsewhere')

  const again = await app.inject({ url: '/', headers: { 'if-none-match': String(res.headers.etag) } })
  t.equal(again.statusCode, 304)
  t.equal(again.payload, '')

  const head = await app.inject({ method: 'HEAD', url: '/' })
  t.equal(head.statusCode, 200)
})

t.test('the page\'s script, style and examples', async (t) => {
  const app = await build(t, { wait: false })
  const cases: Array<[string, RegExp]> = [
    ['/app.js', /^text\/javascript/],
    ['/style.css', /^text\/css/],
    ['/examples/examples.json', /^application\/json/],
  ]
  for (const [url, type] of cases) {
    const res = await app.inject(url)
    t.equal(res.statusCode, 200, url)
    t.match(res.headers['content-type'], type, url)
  }
  const js = (await app.inject('/app.js')).payload
  t.notMatch(js, /\bimport\s.+\sfrom\s/, 'app.js imports nothing')
  t.notMatch(js, /https?:\/\//, 'app.js fetches nothing from elsewhere')

  const { examples } = (await app.inject('/examples/examples.json')).json()
  t.ok(examples.length >= 3, 'a few bundled examples')
  // the suggestions only use words the bundled model knows (when its folder is here)
  const vocabFile = new URL('../../models/vlt-refshapes/vocab.txt', import.meta.url)
  const vocab = new Set(existsSync(vocabFile) ? readFileSync(vocabFile, 'utf8').split('\n').map((s) => s.trim()) : [])
  for (const ex of examples) {
    const img = await app.inject(`/examples/${ex.file}`)
    t.equal(img.statusCode, 200, ex.file)
    t.equal(img.headers['content-type'], 'image/jpeg')
    t.match(img.headers['cache-control'], /max-age=/)
    t.ok(ex.expressions.length > 0, `${ex.file} has suggested expressions`)
    if (vocab.size > 1) {
      for (const e of ex.expressions) t.strictSame(e.split(/\s+/).filter((w: string) => !vocab.has(w)), [], `every word of "${e}" is in the vocabulary`)
    }
  }
})

t.test('unknown files are still 404 JSON; only files under src/public are served', async (t) => {
  const app = await build(t, { wait: false })
  for (const url of ['/index.html', '/nope.js', '/examples/../../routes/page.ts', '/../package.json', '/examples/']) {
    const res = await app.inject(url)
    t.equal(res.statusCode, 404, url)
    t.equal(res.json().error.code, 'SEG_ERR_NOT_FOUND')
  }
  const assets = loadAssets()
  t.ok(assets.has('/'))
  for (const url of assets.keys()) t.notMatch(url, /\.\.|\\/, url)
  t.equal(loadAssets(path.join(PUBLIC_DIR, 'does-not-exist')).size, 0)
})
