/**
 * Property-based fuzzing of POST /segment (fast-check, bounded): random multipart bodies and
 * random bytes as images. Every answer is 2xx, 4xx or 503; every 4xx/503 is a JSON error body
 * with a code openapi.yaml lists; the server is healthy and serves a normal request at the end.
 */
import t from 'tap'
import fc from 'fast-check'
import { build, form, rectImage } from '../helper.js'
import { spec } from '../openapi-validator.js'
import { multipartBody, type RawPart } from '../fixtures/make-bad-inputs.js'

const CODES = new Set<string>(spec.components.schemas.Error.properties.error.properties.code.enum)
const RUNS = 150

const app = await build(t, { config: { maxImageBytes: 256 * 1024, maxTextLength: 100, maxExpressions: 4, maxFormFields: 8, maxFormParts: 10, queueSize: 4 } })
const png = await rectImage(24, 16, { x: 4, y: 4, w: 8, h: 8 })
const jpeg = await rectImage(24, 16, { x: 4, y: 4, w: 8, h: 8 }, 'jpeg')

const seen = new Map<string, number>()
function check (res: Awaited<ReturnType<typeof app.inject>>): boolean {
  const s = res.statusCode
  const key = s < 300 ? String(s) : `${s} ${String((res.json() as { error?: { code?: string } }).error?.code)}`
  seen.set(key, (seen.get(key) ?? 0) + 1)
  if (s >= 200 && s < 300) return true
  if (!((s >= 400 && s < 500) || s === 503)) throw new Error(`status ${s}: ${res.payload.slice(0, 300)}`)
  const body = res.json() as { error?: { code?: unknown, message?: unknown } }
  if (typeof body.error?.code !== 'string' || typeof body.error.message !== 'string') throw new Error(`no error body: ${res.payload.slice(0, 300)}`)
  if (!CODES.has(body.error.code)) throw new Error(`code ${body.error.code} is not in openapi.yaml`)
  return true
}

// Image bytes: random, a real image, or a real image cut, flipped or prefixed.
const imageBytes = fc.oneof(
  fc.uint8Array({ maxLength: 2048 }).map((a) => Buffer.from(a)),
  fc.constantFrom(png, jpeg),
  fc.tuple(fc.constantFrom(png, jpeg), fc.nat()).map(([b, n]) => b.subarray(0, n % (b.length + 1))),
  fc.tuple(fc.constantFrom(png, jpeg), fc.nat(), fc.integer({ min: 0, max: 255 })).map(([b, i, v]) => { const c = Buffer.from(b); c[i % c.length] = v; return c }),
  fc.tuple(fc.constantFrom('\x89PNG\r\n\x1a\n', '\xff\xd8\xff', 'GIF89a', 'RIFF\0\0\0\0WEBP', 'II*\0', '<svg>'), fc.uint8Array({ maxLength: 512 }))
    .map(([magic, rest]) => Buffer.concat([Buffer.from(magic, 'latin1'), Buffer.from(rest)]))
)
const text = fc.oneof(
  fc.string({ maxLength: 120 }),
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.constantFrom('the white square', 'left one', '', ' ', '0.5', 'NaN', '__proto__'),
  fc.uint8Array({ maxLength: 80 }).map((a) => Buffer.from(a))
)
const fieldName = fc.oneof(fc.constantFrom('image', 'expression', 'threshold', 'constructor', '__proto__'), fc.string({ maxLength: 12 }).filter((s) => !/["\r\n]/.test(s)))
const part: fc.Arbitrary<RawPart> = fc.oneof(
  fc.record({ name: fieldName, value: text }),
  fc.record({ name: fieldName, value: imageBytes, filename: fc.constantFrom('a.png', 'x.jpg', 'noext', ''), type: fc.constantFrom('image/png', 'text/plain', 'application/octet-stream', '') })
)

t.test('random multipart bodies', async (t) => {
  await fc.assert(fc.asyncProperty(fc.array(part, { maxLength: 12 }), fc.constantFrom('b0undary', 'x', '----WebKitFormBoundaryabc'), fc.nat(), fc.boolean(),
    async (parts, boundary, cut, truncate) => {
      const { body, contentType } = multipartBody(parts, boundary)
      const payload = truncate ? body.subarray(0, cut % (body.length + 1)) : body
      return check(await app.inject({ method: 'POST', url: '/segment', payload, headers: { 'content-type': contentType } }))
    }), { numRuns: RUNS, seed: 20260101, endOnFailure: true })
})

t.test('random bytes as the image of a well-formed request', async (t) => {
  await fc.assert(fc.asyncProperty(imageBytes, fc.constantFrom('the white square', 'the', 'circle left'),
    async (image, expression) => check(await app.inject({ method: 'POST', url: '/segment', payload: form({ image, expression }) }))),
  { numRuns: RUNS, seed: 7, endOnFailure: true })
})

t.test('random raw bodies and content types', async (t) => {
  await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 4096 }), fc.constantFrom('multipart/form-data; boundary=x', 'multipart/form-data', 'multipart/mixed; boundary=x', 'application/json', 'text/plain', 'image/png', 'application/x-www-form-urlencoded'),
    async (bytes, type) => check(await app.inject({ method: 'POST', url: '/segment', payload: Buffer.from(bytes), headers: { 'content-type': type } }))),
  { numRuns: 50, seed: 11, endOnFailure: true })
})

t.test('healthy afterwards', async (t) => {
  t.comment(`answers seen: ${[...seen].sort().map(([k, n]) => `${k} ×${n}`).join(', ')}`)
  t.ok(seen.size >= 8, 'the fuzzer reached many different answers')
  t.equal((await app.inject('/healthz')).statusCode, 200)
  t.equal((await app.inject('/readyz')).statusCode, 200)
  const ok = await app.inject({ method: 'POST', url: '/segment', payload: form({ image: png, expression: 'the white square' }) })
  t.equal(ok.statusCode, 200)
  t.notMatch((await app.inject('/metrics')).payload, /status_code="5\d\d"/, 'no 5xx at all')
})
