/**
 * The Open Inference Protocol routes on the fake model: metadata, readiness, infer as JSON and
 * with binary tensor data (same masks as POST /segment), and the limits and errors of /segment in
 * the protocol's `{ "error": message }` shape. test/protocol checks them with tritonclient on the
 * real model.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, form, readMask, rectImage } from '../helper.js'

const img = await rectImage(40, 30, { x: 4, y: 4, w: 12, h: 10 })

const infer = async (app: FastifyInstance, body: unknown, url = '/v2/models/vlt-fake/infer') =>
  await app.inject({ method: 'POST', url, payload: JSON.stringify(body), headers: { 'content-type': 'application/json' } })

const request = (expressions: string[], extra: Record<string, unknown> = {}) => ({
  inputs: [
    { name: 'image', datatype: 'BYTES', shape: [1], data: [img.toString('base64')] },
    { name: 'expression', datatype: 'BYTES', shape: [expressions.length], data: expressions },
  ],
  ...extra,
})

/** BYTES elements as binary tensor data: a 4-byte little-endian length before each. */
const bytesTensor = (elements: Buffer[]): Buffer => Buffer.concat(elements.flatMap((e) => { const n = Buffer.alloc(4); n.writeUInt32LE(e.length); return [n, e] }))

t.test('server and model metadata, health', async (t) => {
  const app = await build(t)
  t.match((await app.inject('/v2')).json(), { name: 'vlt-segmentation-service', extensions: ['binary_tensor_data'] })
  t.strictSame((await app.inject('/v2/health/live')).json(), { live: true })
  t.strictSame((await app.inject('/v2/health/ready')).json(), { ready: true })
  const meta = (await app.inject('/v2/models/vlt-fake')).json()
  t.strictSame(meta, {
    name: 'vlt-fake',
    versions: ['0.0.1'],
    platform: 'onnxruntime_onnx',
    inputs: [{ name: 'image', datatype: 'BYTES', shape: [1] }, { name: 'expression', datatype: 'BYTES', shape: [-1] }],
    outputs: [
      { name: 'mask', datatype: 'BYTES', shape: [-1] },
      { name: 'query_confidence', datatype: 'FP32', shape: [-1, 4] },
      { name: 'word_attention', datatype: 'FP32', shape: [-1, 4, 5] },
      { name: 'score', datatype: 'FP32', shape: [-1] },
    ],
  })
  t.strictSame((await app.inject('/v2/models/vlt-fake/versions/0.0.1')).json(), meta)
  t.strictSame((await app.inject('/v2/models/vlt-fake/ready')).json(), { name: 'vlt-fake', ready: true })
  const wrong = await app.inject('/v2/models/vlt-fake/versions/9/ready')
  t.equal(wrong.statusCode, 404)
  t.match(wrong.json(), { error: /Version "9" of model vlt-fake is not served/ })
  const unknown = await app.inject('/v2/models/nope')
  t.equal(unknown.statusCode, 404)
  t.strictSame(Object.keys(unknown.json()), ['error'])
  const route = await app.inject('/v2/nothing/here')
  t.equal(route.statusCode, 404)
  t.match(route.json(), { error: 'Route GET /v2/nothing/here not found' })
})

t.test('readiness before the workers started: 400 false', async (t) => {
  const app = await build(t, { wait: false })
  const res = await app.inject('/v2/health/ready')
  t.equal(res.statusCode, 400)
  t.strictSame(res.json(), { ready: false })
  const model = await app.inject('/v2/models/vlt-fake/ready')
  t.equal(model.statusCode, 400)
  t.strictSame(model.json(), { name: 'vlt-fake', ready: false })
  await app.segmenter.started
})

t.test('infer (JSON): the masks, confidences and attention /segment gives', async (t) => {
  const app = await build(t)
  const exprs = ['the white square', 'left one']
  const res = await infer(app, request(exprs, { id: 'req-1', parameters: { threshold: 0.5 } }))
  t.equal(res.statusCode, 200)
  t.equal(res.headers['x-model'], 'vlt-fake@0.0.1')
  const body = res.json()
  t.match(body, { model_name: 'vlt-fake', model_version: '0.0.1', id: 'req-1' })
  const out = Object.fromEntries(body.outputs.map((o: any) => [o.name, o]))
  t.strictSame(Object.keys(out), ['mask', 'query_confidence', 'word_attention', 'score'])
  t.match(out.mask, { datatype: 'BYTES', shape: [2] })
  t.match(out.query_confidence, { datatype: 'FP32', shape: [2, 4] })
  t.match(out.word_attention, { datatype: 'FP32', shape: [2, 4, 5] })
  t.equal(out.word_attention.data.length, 2 * 4 * 5)

  const seg = (await app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: exprs, threshold: '0.5' }) })).json()
  for (let k = 0; k < 2; k++) {
    t.equal(out.mask.data[k], seg.results[k].mask.png, `mask ${k}: the PNG of /segment`)
    const n = seg.results[k].tokens.length
    seg.results[k].queries.forEach((q: any, j: number) => {
      t.ok(Math.abs(out.query_confidence.data[k * 4 + j] - q.confidence) < 1e-6)
      const row = out.word_attention.data.slice((k * 4 + j) * 5, (k * 4 + j + 1) * 5)
      t.ok(row.slice(0, n).every((v: number, i: number) => Math.abs(v - q.attention[i]) < 1e-6) && row.slice(n).every((v: number) => v === 0))
    })
  }
  const mask = await readMask(Buffer.from(out.mask.data[0], 'base64'))
  t.equal(mask.width, 40)
  t.equal(mask.height, 30)

  const raw = (await infer(app, request(['the white square'], { parameters: { format: 'uint8', threshold: 0.5 }, outputs: [{ name: 'mask' }] }))).json()
  t.equal(raw.outputs.length, 1)
  t.match(raw.outputs[0], { name: 'mask', datatype: 'UINT8', shape: [1, 30, 40] })
  const png = await readMask(Buffer.from(seg.results[0].mask.png, 'base64'))
  t.strictSame(raw.outputs[0].data, Array.from(png.data), 'UINT8 mask: the pixels of the PNG')
  t.ok(raw.outputs[0].data.some((v: number) => v === 255) && raw.outputs[0].data.some((v: number) => v === 0), 'the mask has both values')
})

t.test('infer with binary tensor data both ways', async (t) => {
  const app = await build(t)
  const json = Buffer.from(JSON.stringify({
    inputs: [
      { name: 'image', datatype: 'BYTES', shape: [1], parameters: { binary_data_size: img.length + 4 } },
      { name: 'expression', datatype: 'BYTES', shape: [1], parameters: { binary_data_size: 'the white square'.length + 4 } },
    ],
    parameters: { binary_data_output: true },
  }))
  const payload = Buffer.concat([json, bytesTensor([img]), bytesTensor([Buffer.from('the white square')])])
  const res = await app.inject({ method: 'POST', url: '/v2/models/vlt-fake/infer', payload, headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(json.length) } })
  t.equal(res.statusCode, 200)
  const n = Number(res.headers['inference-header-content-length'])
  const head = JSON.parse(res.rawPayload.subarray(0, n).toString())
  t.match(head.outputs[0], { name: 'mask', datatype: 'BYTES', shape: [1], parameters: { binary_data_size: Number } })
  const maskBytes = res.rawPayload.subarray(n, n + head.outputs[0].parameters.binary_data_size)
  const png = maskBytes.subarray(4, 4 + maskBytes.readUInt32LE(0))
  const seg = (await app.inject({ method: 'POST', url: '/segment', payload: form({ image: img, expression: 'the white square' }), headers: { accept: 'image/png' } })).rawPayload
  t.ok(png.equals(seg), 'the same PNG as POST /segment with Accept: image/png')
  const total = head.outputs.reduce((a: number, o: any) => a + o.parameters.binary_data_size, 0)
  t.equal(res.rawPayload.length, n + total, 'the body is the JSON header and every output\'s binary data')
})

t.test('the limits and errors of /segment, in the protocol\'s error shape', async (t) => {
  const app = await build(t, { config: { maxImageBytes: 4096, maxExpressions: 2, maxTextLength: 20 } })
  const big = Buffer.alloc(5000, 1)
  const cases: Array<[string, unknown, number, RegExp]> = [
    ['not JSON', '{', 400, /not valid JSON/],
    ['no inputs', {}, 400, /Expected an array of input tensors for inputs/],
    ['no expression', { inputs: [request(['x']).inputs[0]] }, 400, /input tensor expression/],
    ['unknown input', { inputs: [...request(['the']).inputs, { name: 'colour', datatype: 'BYTES', shape: [1], data: ['red'] }] }, 400, /Expected the input image or expression for an input but received "colour"/],
    ['wrong datatype', { inputs: [{ ...request(['the']).inputs[0], datatype: 'UINT8' }, request(['the']).inputs[1]] }, 400, /Expected BYTES for the datatype of image/],
    ['shape ≠ data', { inputs: [request(['the']).inputs[0], { name: 'expression', datatype: 'BYTES', shape: [2], data: ['the'] }] }, 400, /says 2 elements; its data has 1/],
    ['too many expressions', request(['the', 'the', 'the']), 400, /at most 2 values for expression/],
    ['expression too long', request(['the white square on the left']), 400, /at most 20 characters/],
    ['empty expression', request(['  ']), 400, /non-empty text/],
    ['bad threshold', request(['the'], { parameters: { threshold: 2 } }), 400, /between 0 and 1 for threshold/],
    ['bad format', request(['the'], { parameters: { format: 'jpeg' } }), 400, /one of png, uint8 for parameter format/],
    ['unknown parameter', request(['the'], { parameters: { colour: 'red' } }), 400, /received "colour"/],
    ['unknown output', request(['the'], { outputs: [{ name: 'logits' }] }), 400, /received "logits"/],
    ['not base64', { inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: ['not base64!'] }, request(['the']).inputs[1]] }, 400, /base64 text of the image/],
    ['too many bytes', { inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: [big.toString('base64')] }, request(['the']).inputs[1]] }, 413, /too large/],
    ['not an image', { inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: [Buffer.from('hello there').toString('base64')] }, request(['the']).inputs[1]] }, 415, /not an image/],
    ['no known word', request(['zzz']), 422, /no word the model knows/],
  ]
  for (const [name, body, status, message] of cases) {
    const res = typeof body === 'string'
      ? await app.inject({ method: 'POST', url: '/v2/models/vlt-fake/infer', payload: body, headers: { 'content-type': 'application/json' } })
      : await infer(app, body)
    t.equal(res.statusCode, status, name)
    t.strictSame(Object.keys(res.json()), ['error'], `${name}: { error }`)
    t.match(res.json().error, message, name)
  }
  const pixels = await build(t, { config: { maxImagePixels: 100 } })
  const res = await infer(pixels, request(['the']))
  t.equal(res.statusCode, 413, 'MAX_IMAGE_PIXELS')
  t.match(res.json().error, /pixels/)
  const noModel = await infer(app, request(['the']), '/v2/models/other/infer')
  t.equal(noModel.statusCode, 404)
})

t.test('API keys apply to /v2 too, with the protocol\'s error shape', async (t) => {
  const app = await build(t, { config: { apiKeys: ['k'] } })
  const res = await infer(app, request(['the']))
  t.equal(res.statusCode, 401)
  t.strictSame(Object.keys(res.json()), ['error'])
  const ok = await app.inject({ method: 'POST', url: '/v2/models/vlt-fake/infer', payload: JSON.stringify(request(['the white square'])), headers: { 'content-type': 'application/json', authorization: 'Bearer k' } })
  t.equal(ok.statusCode, 200)
})
