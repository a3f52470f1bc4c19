import t from 'tap'
import { build, form, readMask, rectImage } from '../helper.js'

t.test('POST /segment (fake model)', async (t) => {
  const app = await build(t, { config: { maxExpressions: 3, maxTextLength: 40, maxImageBytes: 64 * 1024 } })
  const img = await rectImage(64, 48, { x: 8, y: 8, w: 16, h: 24 })

  t.test('JSON: one result per expression, mask at image size', async (t) => {
    const res = await app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: 'the white square' }) })
    t.equal(res.statusCode, 200)
    t.match(res.headers['content-type'], /application\/json/)
    t.equal(res.headers['x-model'], 'vlt-fake@0.0.1')
    t.ok(res.headers['x-request-id'])
    const body = res.json()
    t.strictSame(body.model, { name: 'vlt-fake', version: '0.0.1', provider: 'cpu' })
    t.strictSame(body.image, { width: 64, height: 48 })
    t.equal(body.results.length, 1)
    const r = body.results[0]
    t.equal(r.expression, 'the white square')
    t.strictSame(r.tokens, [{ text: 'the', id: 2, known: true }, { text: 'white', id: 3, known: true }, { text: 'square', id: 5, known: true }])
    t.equal(r.queries.length, 4)
    for (const q of r.queries) t.equal(q.attention.length, 3)
    t.ok(r.area > 300 && r.area < 500, `area ${r.area}`)
    t.ok(r.bbox[0] >= 6 && r.bbox[0] <= 10 && r.bbox[1] >= 6 && r.bbox[1] <= 10, `bbox ${r.bbox}`)
    const mask = await readMask(Buffer.from(r.mask.png, 'base64'))
    t.equal(mask.width, 64)
    t.equal(mask.height, 48)
    t.equal(mask.channels, 1)
    t.ok(mask.data.every((v) => v === 0 || v === 255))
    t.equal(mask.data.filter((v) => v === 255).length, r.area)
    for (const k of ['decode', 'preprocess', 'inference', 'postprocess', 'total']) t.type(body.timings_ms[k], 'number')
  })

  t.test('Accept: image/png returns the mask with headers', async (t) => {
    const res = await app.inject({ method: 'POST', url: '/segment', headers: { accept: 'image/png' }, payload: form({ image: img, expression: 'the white square' }) })
    t.equal(res.statusCode, 200)
    t.equal(res.headers['content-type'], 'image/png')
    t.equal(String(res.headers['x-query-confidence']).split(',').length, 4)
    t.ok(Number(res.headers['x-mask-score']) > 0.35)
    t.equal(res.headers['x-model'], 'vlt-fake@0.0.1')
    const mask = await readMask(res.rawPayload)
    t.strictSame([mask.width, mask.height, mask.channels], [64, 48, 1])
  })

  t.test('an empty mask is a valid answer', async (t) => {
    const black = await rectImage(20, 20, { x: 0, y: 0, w: 0, h: 0 })
    const res = await app.inject({ method: 'POST', url: '/segment', payload: form({ image: black, expression: 'the circle' }) })
    t.equal(res.statusCode, 200)
    const r = res.json().results[0]
    t.equal(r.area, 0)
    t.equal(r.bbox, null)
    t.equal(r.score, 0)
  })

  t.test('threshold overrides the model default', async (t) => {
    const res = await app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: 'the square', threshold: '1' }) })
    t.equal(res.statusCode, 200)
    t.equal(res.json().results[0].area, 0)
  })

  t.test('several expressions in one request equal separate requests', async (t) => {
    const exprs = ['the white square', 'left one', 'right circle']
    const together = (await app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: exprs }) })).json()
    t.equal(together.results.length, 3)
    for (let i = 0; i < exprs.length; i++) {
      const alone = (await app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: exprs[i] }) })).json()
      t.strictSame(together.results[i], alone.results[0], exprs[i])
    }
  })

  t.test('unknown words are reported but do not fail when one word is known', async (t) => {
    const res = await app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: 'the blobby thing' }) })
    t.equal(res.statusCode, 200)
    t.strictSame(res.json().results[0].tokens.map((x: { known: boolean }) => x.known), [true, false, false])
  })

  const bad = async (payload: FormData | string, headers: Record<string, string> = {}) =>
    await app.inject({ method: 'POST', url: '/segment', payload, headers })

  t.test('BAD CALL - missing image → 400', async (t) => {
    const res = await bad(form({ expression: 'the square' }))
    t.equal(res.statusCode, 400)
    t.equal(res.json().error.code, 'SEG_ERR_MISSING_FIELD')
    t.match(res.json().error.message, /^Expected an image file for image but received nothing/)
  })

  t.test('BAD CALL - missing expression → 400', async (t) => {
    const res = await bad(form({ image: img }))
    t.equal(res.statusCode, 400)
    t.equal(res.json().error.code, 'SEG_ERR_MISSING_FIELD')
    t.match(res.json().error.message, /^Expected at least one text field for expression/)
  })

  t.test('BAD CALL - blank expression → 400', async (t) => {
    const res = await bad(form({ image: img, expression: '   ' }))
    t.equal(res.statusCode, 400)
    t.equal(res.json().error.code, 'SEG_ERR_INVALID_FIELD')
    t.match(res.json().error.message, /^Expected a non-empty text for expression/)
  })

  t.test('BAD CALL - too long expression → 400', async (t) => {
    const res = await bad(form({ image: img, expression: 'the '.repeat(20) }))
    t.equal(res.statusCode, 400)
    t.match(res.json().error.message, /^Expected at most 40 characters for expression/)
  })

  t.test('BAD CALL - too many expressions → 400', async (t) => {
    const res = await bad(form({ image: img, expression: ['the', 'the', 'the', 'the'] }))
    t.equal(res.statusCode, 400)
    t.match(res.json().error.message, /^Expected at most 3 values for expression/)
  })

  for (const th of ['abc', '-0.1', '1.5', '']) {
    t.test(`BAD CALL - threshold ${JSON.stringify(th)} → 400`, async (t) => {
      const res = await bad(form({ image: img, expression: 'the square', threshold: th }))
      t.equal(res.statusCode, 400)
      t.equal(res.json().error.code, 'SEG_ERR_INVALID_FIELD')
      t.match(res.json().error.message, /^Expected a number between 0 and 1 for threshold/)
    })
  }

  t.test('BAD CALL - unexpected field → 400', async (t) => {
    const res = await bad(form({ image: img, expression: 'the', extra: [['colour', 'red']] }))
    t.equal(res.statusCode, 400)
    t.match(res.json().error.message, /^Expected one of image, expression, threshold, format, model for a form field but received "colour"/)
  })

  t.test('BAD CALL - broken multipart → 400', async (t) => {
    const res = await bad('--xyz\r\nContent-Disposition: form-data; name="expression"\r\n\r\nthe', { 'content-type': 'multipart/form-data; boundary=xyz' })
    t.equal(res.statusCode, 400)
    t.equal(res.json().error.code, 'SEG_ERR_MULTIPART')
  })

  t.test('BAD CALL - Accept: text/html → 406', async (t) => {
    const res = await bad(form({ image: img, expression: 'the' }), { accept: 'text/html' })
    t.equal(res.statusCode, 406)
    t.equal(res.json().error.code, 'SEG_ERR_NOT_ACCEPTABLE')
    t.match(res.json().error.message, /^Expected application\/json or image\/png for Accept/)
  })

  t.test('BAD CALL - Accept: image/png with two expressions → 406', async (t) => {
    const res = await bad(form({ image: img, expression: ['the', 'one'] }), { accept: 'image/png' })
    t.equal(res.statusCode, 406)
    t.match(res.json().error.message, /^Expected one expression for Accept: image\/png but received 2/)
  })

  t.test('Accept: image/png, application/json;q=0.5 with two expressions falls back to JSON', async (t) => {
    const res = await bad(form({ image: img, expression: ['the', 'one'] }), { accept: 'image/png, application/json;q=0.5' })
    t.equal(res.statusCode, 200)
    t.equal(res.json().results.length, 2)
  })

  t.test('BAD CALL - file too large → 413', async (t) => {
    const res = await bad(form({ image: Buffer.alloc(65 * 1024, 7), expression: 'the' }))
    t.equal(res.statusCode, 413)
    t.equal(res.json().error.code, 'SEG_ERR_PAYLOAD_TOO_LARGE')
  })

  t.test('BAD CALL - not multipart → 415', async (t) => {
    const res = await bad(JSON.stringify({ expression: 'the' }), { 'content-type': 'application/json' })
    t.equal(res.statusCode, 415)
    t.equal(res.json().error.code, 'SEG_ERR_UNSUPPORTED_MEDIA_TYPE')
  })

  t.test('BAD CALL - not an image → 415', async (t) => {
    const res = await bad(form({ image: Buffer.from('hello, this is text and not a picture'), expression: 'the' }))
    t.equal(res.statusCode, 415)
    t.equal(res.json().error.code, 'SEG_ERR_NOT_AN_IMAGE')
  })

  t.test('BAD CALL - SVG is outside the list → 415', async (t) => {
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>')
    const res = await bad(form({ image: svg, expression: 'the' }))
    t.equal(res.statusCode, 415)
    t.equal(res.json().error.code, 'SEG_ERR_IMAGE_FORMAT')
    t.match(res.json().error.message, /svg/)
  })

  t.test('BAD CALL - truncated JPEG → 400', async (t) => {
    const jpg = await rectImage(64, 64, { x: 8, y: 8, w: 16, h: 16 }, 'jpeg')
    const res = await bad(form({ image: jpg.subarray(0, Math.floor(jpg.length / 2)), expression: 'the' }))
    t.equal(res.statusCode, 400)
    t.equal(res.json().error.code, 'SEG_ERR_IMAGE_DECODE')
  })

  t.test('BAD CALL - no known words → 422 naming them', async (t) => {
    const res = await bad(form({ image: img, expression: 'purple blobby thing' }))
    t.equal(res.statusCode, 422)
    t.equal(res.json().error.code, 'SEG_ERR_NO_KNOWN_WORDS')
    t.match(res.json().error.message, /unknown: purple, blobby, thing/)
    t.strictSame(res.json().error.details, { unknownWords: [{ index: 0, words: ['purple', 'blobby', 'thing'] }] })
  })

  t.test('BAD CALL - punctuation only → 422', async (t) => {
    const res = await bad(form({ image: img, expression: '?!' }))
    t.equal(res.statusCode, 422)
    t.match(res.json().error.message, /has no words/)
  })

  t.test('EXPECTED FAILURE - unknown route → 404', async (t) => {
    const res = await app.inject({ method: 'GET', url: '/nope' })
    t.equal(res.statusCode, 404)
    t.equal(res.json().error.code, 'SEG_ERR_NOT_FOUND')
  })

  t.test('no stack traces or paths in error bodies', async (t) => {
    const res = await bad(form({ image: Buffer.from('GIF89a garbage'), expression: 'the' }))
    t.ok(res.statusCode >= 400)
    t.notMatch(res.payload, /\/work\/|node_modules|at \w+ \(/)
  })
})
