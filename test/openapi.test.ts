/** openapi.yaml and the running app cannot drift: real responses are validated against it. */
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { adminReload, ADMIN_KEY, build, fakeRepo, form, type FormFields, rectImage, testConfig, writeFakeModel } from './helper.js'
import { checkExample, checkResponse, checkSegmentForm, spec } from './openapi-validator.js'

const img = await rectImage(40, 30, { x: 4, y: 4, w: 10, h: 10 })

t.test('openapi.yaml is OpenAPI 3.x and lists every route', async (t) => {
  t.match(spec.openapi, /^3\./)
  t.strictSame(Object.keys(spec.paths).sort(), [
    '/admin/reload', '/docs', '/healthz', '/metrics', '/models', '/openapi.yaml', '/readyz', '/segment',
    '/v2', '/v2/health/live', '/v2/health/ready', '/v2/models/{name}', '/v2/models/{name}/infer', '/v2/models/{name}/ready',
    '/v2/models/{name}/versions/{version}', '/v2/models/{name}/versions/{version}/infer', '/v2/models/{name}/versions/{version}/ready',
  ])
  t.equal(spec.info.license?.identifier, 'MIT', 'a licence')
  // 401/429 are possible on every operation once API_KEYS (and RATE_LIMIT_RPS) are set; admin
  // routes check ADMIN_API_KEYS instead and have no rate limit, so 401 only
  for (const [path, ops] of Object.entries<any>(spec.paths)) {
    for (const [method, op] of Object.entries<any>(ops)) {
      if (path.startsWith('/admin/')) t.ok('401' in op.responses && !('429' in op.responses), `${method.toUpperCase()} ${path} lists 401 and not 429`)
      else t.ok('401' in op.responses && '429' in op.responses, `${method.toUpperCase()} ${path} lists 401 and 429`)
    }
  }
  t.strictSame(Object.keys(spec.paths['/segment'].post.responses).sort(), ['200', '400', '401', '404', '406', '408', '413', '415', '422', '429', '500', '503', '504'])
})

t.test('every example in openapi.yaml conforms to its schema', async (t) => {
  let n = 0
  const visit = (node: any, where: string): void => {
    if (node === null || typeof node !== 'object') return
    if (node.schema !== undefined && (node.example !== undefined || node.examples !== undefined)) {
      const values = node.example !== undefined ? [node.example] : Object.values<any>(node.examples).map((e) => e.value)
      for (const value of values) {
        n++
        const problems = checkExample(node.schema, value)
        t.strictSame(problems, [], `${where}: example conforms`)
      }
    }
    for (const [k, v] of Object.entries(node)) if (k !== 'example' && k !== 'examples') visit(v, `${where}/${k}`)
  }
  visit(spec.paths, '#/paths')
  visit(spec.components.responses, '#/components/responses')
  t.ok(n >= 12, `${n} examples checked`)
  t.not(checkExample({ $ref: '#/components/schemas/Health' }, { status: 'down', uptime_s: 1 }).length, 0, 'control: a wrong example is caught')
})

t.test('the limits in openapi.yaml are the service\'s defaults', async (t) => {
  const config = testConfig()
  const form = spec.components.schemas.SegmentForm.properties
  t.equal(form.image.minLength, 1, 'a non-empty file')
  t.equal(form.image.maxLength, config.maxImageBytes, 'MAX_IMAGE_BYTES')
  t.equal(spec.components.schemas.Expression.maxLength, config.maxTextLength, 'MAX_TEXT_LENGTH')
  t.equal(form.expression.oneOf[1].maxItems, config.maxExpressions, 'MAX_EXPRESSIONS')
})

t.test('GET /openapi.yaml serves the file', async (t) => {
  const app = await build(t, { wait: false })
  const res = await app.inject('/openapi.yaml')
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^application\/yaml/)
  t.match(res.payload, /^openapi: 3\./)
  t.strictSame(checkResponse('GET', '/openapi.yaml', res), [])
})

async function segment (t: Test, app: FastifyInstance, fields: FormFields & { expression?: string | string[] }, headers: Record<string, string> = {}, expectValidRequest?: boolean) {
  const requestProblems = checkSegmentForm({ image: fields.image, expression: fields.expression, threshold: fields.threshold, ...Object.fromEntries(fields.extra ?? []) })
  if (expectValidRequest !== undefined) t.equal(requestProblems.length === 0, expectValidRequest, `request ${expectValidRequest ? 'conforms' : 'does not conform'} to the request schema ${requestProblems.join('; ')}`)
  const res = await app.inject({ method: 'POST', url: '/segment', payload: form(fields), headers })
  t.strictSame(checkResponse('POST', '/segment', res), [], `response ${res.statusCode} conforms`)
  return res
}

t.test('POST /segment responses conform, for every status code', async (t) => {
  const app = await build(t, { config: { maxImageBytes: 32 * 1024, requestTimeoutMs: 30_000, queueSize: 0, maxBatch: 1 } })
  const cases: Array<[string, FormFields, Record<string, string>, number, boolean]> = [
    ['JSON', { image: img, expression: 'the white square' }, {}, 200, true],
    ['JSON, two expressions + threshold', { image: img, expression: ['the white square', 'left one'], threshold: '0.5' }, {}, 200, true],
    ['empty mask', { image: img, expression: 'the square', threshold: '1' }, {}, 200, true],
    ['PNG', { image: img, expression: 'the white square' }, { accept: 'image/png' }, 200, true],
    ['COCO RLE', { image: img, expression: ['the white square', 'left one'], extra: [['format', 'coco_rle']] }, {}, 200, true],
    ['polygons', { image: img, expression: 'the white square', extra: [['format', 'polygon']] }, {}, 200, true],
    ['polygons of an empty mask', { image: img, expression: 'the square', threshold: '1', extra: [['format', 'polygon']] }, {}, 200, true],
    ['format png, Accept: image/png', { image: img, expression: 'the white square', extra: [['format', 'png']] }, { accept: 'image/png' }, 200, true],
    ['unknown format', { image: img, expression: 'the', extra: [['format', 'svg']] }, {}, 400, false],
    ['406: polygons for Accept: image/png', { image: img, expression: 'the', extra: [['format', 'polygon']] }, { accept: 'image/png' }, 406, true],
    ['missing image', { expression: 'the' }, {}, 400, false],
    ['missing expression', { image: img }, {}, 400, false],
    ['unknown field', { image: img, expression: 'the', extra: [['colour', 'red']] }, {}, 400, false],
    ['bad threshold', { image: img, expression: 'the', threshold: '2' }, {}, 400, false],
    ['406', { image: img, expression: 'the' }, { accept: 'text/html' }, 406, true],
    ['413', { image: Buffer.alloc(40 * 1024), expression: 'the' }, {}, 413, true],
    ['415', { image: Buffer.from('not an image at all'), expression: 'the' }, {}, 415, true],
    ['422', { image: img, expression: 'gibberish words' }, {}, 422, true],
    ['a model', { image: img, expression: 'the', extra: [['model', 'vlt-fake@0.0.1']] }, {}, 200, true],
    ['404 model', { image: img, expression: 'the', extra: [['model', 'other']] }, {}, 404, true],
  ]
  for (const [name, fields, headers, status, validRequest] of cases) {
    const res = await segment(t, app, fields, headers, validRequest)
    t.equal(res.statusCode, status, name)
  }
  // 504 on an app with a short deadline: 'slow' outlives it.
  const short = await build(t, { config: { requestTimeoutMs: 200, queueSize: 0, maxBatch: 1 } })
  const late = await segment(t, short, { image: img, expression: 'slow' }, {}, true)
  t.equal(late.statusCode, 504, '504')
  // 503: while 'slow' holds the only worker, the queue (size 0) is full. The deadline is the
  // default one here, so that a busy machine cannot turn the 503 into a 504.
  const one = await build(t, { config: { queueSize: 0, maxBatch: 1 } })
  const busy = one.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: 'slow' }) })
  for (let i = 0; i < 3000 && one.segmenter.stats().busyWorkers === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  const full = await segment(t, one, { image: img, expression: 'the' })
  t.equal(full.statusCode, 503)
  await busy
})

t.test('health, readiness and metrics responses conform', async (t) => {
  const app = await build(t, { wait: false })
  const starting = await app.inject('/readyz')
  t.equal(starting.statusCode, 503)
  t.strictSame(checkResponse('GET', '/readyz', starting), [])
  await app.segmenter.started
  for (const path of ['/healthz', '/readyz', '/metrics']) {
    const res = await app.inject(path)
    t.equal(res.statusCode, 200)
    t.strictSame(checkResponse('GET', path, res), [], path)
  }
})

t.test('GET /models, POST /admin/reload and the v2 routes conform', async (t) => {
  const { app, root } = await fakeRepo(t, (root) => writeFakeModel(root, 'vlt-fake', '1'))
  const get = async (path: string, url = path) => {
    const res = await app.inject(url)
    t.strictSame(checkResponse('GET', path, res), [], `${url} ${res.statusCode}`)
    return res
  }
  await get('/models')
  await get('/readyz')
  await get('/v2')
  await get('/v2/health/live')
  await get('/v2/health/ready')
  await get('/v2/models/{name}', '/v2/models/vlt-fake')
  await get('/v2/models/{name}', '/v2/models/nothing')
  await get('/v2/models/{name}/versions/{version}', '/v2/models/vlt-fake/versions/1')
  await get('/v2/models/{name}/ready', '/v2/models/vlt-fake/ready')
  await get('/v2/models/{name}/versions/{version}/ready', '/v2/models/vlt-fake/versions/2/ready')

  const body = (expression: string, extra = {}) => JSON.stringify({
    inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: [img.toString('base64')] }, { name: 'expression', datatype: 'BYTES', shape: [1], data: [expression] }],
    ...extra,
  })
  for (const [url, payload, status] of [
    ['/v2/models/vlt-fake/infer', body('the white square'), 200],
    ['/v2/models/vlt-fake/infer', body('the white square', { parameters: { format: 'uint8' } }), 200],
    ['/v2/models/vlt-fake/infer', body('the', { parameters: { threshold: 5 } }), 400],
    ['/v2/models/vlt-fake/infer', body('zzz'), 422],
    ['/v2/models/other/infer', body('the'), 404],
  ] as const) {
    const res = await app.inject({ method: 'POST', url, payload, headers: { 'content-type': 'application/json' } })
    t.equal(res.statusCode, status, url)
    t.strictSame(checkResponse('POST', '/v2/models/{name}/infer', res), [], `${url} ${status}`)
  }
  const versioned = await app.inject({ method: 'POST', url: '/v2/models/vlt-fake/versions/1/infer', payload: body('the', { parameters: { binary_data_output: true } }), headers: { 'content-type': 'application/json' } })
  t.equal(versioned.statusCode, 200)
  t.strictSame(checkResponse('POST', '/v2/models/{name}/versions/{version}/infer', versioned), [], 'binary answer')

  writeFakeModel(root, 'vlt-fake', '2')
  await adminReload(app)
  const reloaded = await app.inject({ method: 'POST', url: '/admin/reload', headers: { authorization: `Bearer ${ADMIN_KEY}` } })
  t.strictSame(checkResponse('POST', '/admin/reload', reloaded), [], 'reload 200')
  const denied = await app.inject({ method: 'POST', url: '/admin/reload' })
  t.equal(denied.statusCode, 401)
  t.strictSame(checkResponse('POST', '/admin/reload', denied), [], 'reload 401')
  await get('/models')
})

t.test('the validator catches drift', async (t) => {
  const fake = (statusCode: number, body: unknown, headers: Record<string, string> = {}) => ({
    statusCode,
    headers: { 'content-type': 'application/json', 'x-request-id': 'r', ...headers },
    json: () => body,
  }) as never
  t.not(checkResponse('POST', '/segment', fake(418, {})).length, 0, 'undeclared status')
  t.not(checkResponse('POST', '/segment', fake(400, { error: { code: 'SEG_ERR_NEW', message: 'x' } })).length, 0, 'unknown error code')
  t.not(checkResponse('GET', '/healthz', fake(200, { status: 'ok' })).length, 0, 'missing field')
  t.not(checkResponse('POST', '/segment', fake(503, { error: { code: 'SEG_ERR_QUEUE_FULL', message: 'x' } })).length, 0, 'missing Retry-After')
  const real = (await build(t)).inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: 'the white square', extra: [['format', 'coco_rle']] }) })
  const body = (await real).json()
  t.strictSame(checkResponse('POST', '/segment', fake(200, body, { 'x-model': 'm@1' })), [], 'the real body conforms')
  const edited = (edit: (r: any) => void) => { const b = structuredClone(body); edit(b.results[0]); return fake(200, b, { 'x-model': 'm@1' }) }
  t.not(checkResponse('POST', '/segment', edited((r) => { r.mask.png = 'AAAA' })).length, 0, 'two encodings in one mask')
  t.not(checkResponse('POST', '/segment', edited((r) => { r.mask.coco_rle.size = [30] })).length, 0, 'RLE size not [h, w]')
  t.not(checkResponse('POST', '/segment', edited((r) => { r.mask = { polygon: [{ outer: [0, 0, 1, 0] }] } })).length, 0, 'a polygon part without holes, too few points')
  t.not(checkResponse('POST', '/segment', edited((r) => { r.bbox_format = 'xyxy' })).length, 0, 'another bbox format')
})
