/**
 * The bad-input corpus (test/fixtures/make-bad-inputs.ts) against POST /segment: each case gets
 * its exact status and error code, every answer conforms to openapi.yaml, no error leaks a path
 * or a stack, and the server is healthy and serves a normal request afterwards.
 */
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, form, rectImage } from '../helper.js'
import { checkResponse } from '../openapi-validator.js'
import { badImages, expressionCases, multipartBody, oddValidImages, type RawPart } from '../fixtures/make-bad-inputs.js'

// Each app starts its own worker threads; on a busy machine that takes seconds.
t.setTimeout(300_000)

const MAX_TEXT = 500
const app = await build(t, { config: { maxTextLength: MAX_TEXT, maxExpressions: 3, maxFormFields: 6, maxFormParts: 8, maxImageBytes: 2 * 1024 * 1024 } })
const img = await rectImage(64, 48, { x: 8, y: 8, w: 16, h: 24 })

async function post (payload: FormData | Buffer | string, headers: Record<string, string> = {}) {
  const res = await app.inject({ method: 'POST', url: '/segment', payload, headers })
  t.strictSame(checkResponse('POST', '/segment', res), [], `answer ${res.statusCode} conforms to openapi.yaml`)
  if (res.statusCode >= 400) {
    t.match(res.headers['content-type'], /^application\/json/)
    t.notMatch(res.payload, /\/work\/|\/home\/|node_modules|at \w+ \(|\.ts:\d+/, 'no paths or stack frames')
  }
  return res
}
const raw = async (parts: RawPart[]) => {
  const { body, contentType } = multipartBody(parts)
  return await post(body, { 'content-type': contentType })
}
const expectError = (t: Test, res: Awaited<ReturnType<typeof post>>, status: number, code: string) => {
  t.equal(res.statusCode, status, `status ${status}`)
  t.equal(res.json().error?.code, code, code)
  if (res.statusCode !== status || res.json().error?.code !== code) t.comment(res.payload)
}

async function healthy (t: Test, app: FastifyInstance): Promise<void> {
  t.equal((await app.inject('/healthz')).statusCode, 200, 'healthz 200')
  t.equal((await app.inject('/readyz')).statusCode, 200, 'readyz 200')
  const ok = await app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: 'the white square' }) })
  t.equal(ok.statusCode, 200, 'a normal request still succeeds')
}

t.test('odd but valid images are served (200)', async (t) => {
  for (const c of await oddValidImages()) {
    const res = await post(form({ image: { data: c.data, filename: c.filename, type: c.type }, expression: 'the white square' }))
    t.equal(res.statusCode, 200, c.name)
    if (res.statusCode === 200) {
      t.strictSame(res.json().image, { width: 64, height: 48 }, `${c.name}: first frame/page, original size`)
      t.ok(res.json().results[0].area > 0, `${c.name}: the rectangle is found`)
    } else {
      t.comment(res.payload)
    }
  }
})

t.test('BAD CALL - broken and hostile files', async (t) => {
  for (const c of await badImages()) {
    const res = await post(form({ image: { data: c.data, filename: c.filename, type: c.type }, expression: 'the white square' }))
    t.test(c.name, async (t) => expectError(t, res, c.status, c.code))
  }
})

t.test('BAD CALL - expressions', async (t) => {
  for (const c of expressionCases(MAX_TEXT)) {
    const res = await raw([{ name: 'image', value: img, filename: 'a.png', type: 'image/png' }, { name: 'expression', value: c.value }])
    t.test(c.name, async (t) => {
      t.equal(res.statusCode, c.status)
      if (c.code !== undefined) t.equal(res.json().error.code, c.code)
    })
  }
})

t.test('BAD CALL - form structure', async (t) => {
  const image: RawPart = { name: 'image', value: img, filename: 'a.png', type: 'image/png' }
  const expr: RawPart = { name: 'expression', value: 'the white square' }
  t.test('two image parts', async (t) => expectError(t, await raw([image, image, expr]), 400, 'SEG_ERR_TOO_MANY_FILES'))
  t.test('no image part', async (t) => expectError(t, await raw([expr]), 400, 'SEG_ERR_MISSING_FIELD'))
  t.test('no expression', async (t) => expectError(t, await raw([image]), 400, 'SEG_ERR_MISSING_FIELD'))
  t.test('the image as a text field', async (t) => expectError(t, await raw([{ name: 'image', value: 'abc' }, expr]), 400, 'SEG_ERR_INVALID_FIELD'))
  t.test('a file in another field', async (t) => expectError(t, await raw([{ ...image, name: 'picture' }, expr]), 400, 'SEG_ERR_INVALID_FIELD'))
  t.test('an unknown field', async (t) => expectError(t, await raw([image, expr, { name: 'colour', value: 'red' }]), 400, 'SEG_ERR_INVALID_FIELD'))
  t.test('too many expressions', async (t) => expectError(t, await raw([image, expr, expr, expr, expr]), 400, 'SEG_ERR_TOO_MANY_EXPRESSIONS'))
  // The field and part limits bite before the expression count when they are the smaller ones.
  const limited = async (t: Test, config: Record<string, number>, parts: RawPart[]) => {
    const small = await build(t, { config: { maxExpressions: 20, ...config } })
    const { body, contentType } = multipartBody(parts)
    return await small.inject({ method: 'POST', url: '/segment', payload: body, headers: { 'content-type': contentType } })
  }
  t.test('too many text fields', async (t) => {
    expectError(t, await limited(t, { maxFormFields: 4, maxFormParts: 20 }, [image, ...Array(5).fill(expr)]), 413, 'SEG_ERR_TOO_MANY_FIELDS')
  })
  t.test('too many parts', async (t) => {
    expectError(t, await limited(t, { maxFormFields: 10, maxFormParts: 4 }, [image, ...Array(5).fill(expr)]), 413, 'SEG_ERR_TOO_MANY_PARTS')
  })
  t.test('upload larger than MAX_IMAGE_BYTES', async (t) => expectError(t, await raw([{ ...image, value: Buffer.alloc(2 * 1024 * 1024 + 1, 1) }, expr]), 413, 'SEG_ERR_PAYLOAD_TOO_LARGE'))
})

t.test('BAD CALL - malformed bodies', async (t) => {
  const good = multipartBody([{ name: 'image', value: img, filename: 'a.png', type: 'image/png' }, { name: 'expression', value: 'the' }])
  t.test('boundary in the header does not match the body', async (t) => {
    expectError(t, await post(good.body, { 'content-type': 'multipart/form-data; boundary=something-else' }), 400, 'SEG_ERR_MULTIPART')
  })
  t.test('no boundary parameter', async (t) => {
    expectError(t, await post(good.body, { 'content-type': 'multipart/form-data' }), 400, 'SEG_ERR_MULTIPART')
  })
  t.test('unterminated part', async (t) => {
    expectError(t, await post(good.body.subarray(0, good.body.length - 200), { 'content-type': good.contentType }), 400, 'SEG_ERR_MULTIPART')
  })
  t.test('no closing delimiter', async (t) => {
    expectError(t, await post(good.body.subarray(0, good.body.length - 30), { 'content-type': good.contentType }), 400, 'SEG_ERR_MULTIPART')
  })
  t.test('empty body (no parts at all)', async (t) => {
    expectError(t, await post(Buffer.alloc(0), { 'content-type': good.contentType }), 400, 'SEG_ERR_MISSING_FIELD')
  })
  t.test('JSON body', async (t) => {
    expectError(t, await post(JSON.stringify({ expression: 'the' }), { 'content-type': 'application/json' }), 415, 'SEG_ERR_UNSUPPORTED_MEDIA_TYPE')
  })
  t.test('raw image body', async (t) => {
    expectError(t, await post(img, { 'content-type': 'image/png' }), 415, 'SEG_ERR_UNSUPPORTED_MEDIA_TYPE')
  })
  t.test('no content type', async (t) => {
    expectError(t, await post(good.body, {}), 415, 'SEG_ERR_UNSUPPORTED_MEDIA_TYPE')
  })
})

t.test('after the corpus: healthy, and a normal request succeeds', async (t) => {
  await healthy(t, app)
  const m = (await app.inject('/metrics')).payload
  t.notMatch(m, /status_code="5\d\d"/, 'no 5xx recorded')
})
