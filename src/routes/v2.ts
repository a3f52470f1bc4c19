/**
 * The Open Inference Protocol (the "v2" REST API of KServe and Triton), registered under /v2:
 *
 *   GET  /v2                                          server metadata
 *   GET  /v2/health/live, /v2/health/ready            200 true, 400 false
 *   GET  /v2/models/{name}[/versions/{v}]             model metadata: input and output tensors
 *   GET  /v2/models/{name}[/versions/{v}]/ready       200 true, 400 false
 *   POST /v2/models/{name}[/versions/{v}]/infer       inference
 *
 * Infer inputs: `image` BYTES [1], the encoded file (JSON: its base64 text, since JSON strings
 * cannot carry raw bytes; binary tensor data: the bytes themselves), and `expression` BYTES [K],
 * UTF-8 text. Request parameters: `threshold` (0–1), `format` (png, the default, or uint8) and
 * `timeout` (µs, as Triton's; it can only shorten REQUEST_TIMEOUT_MS).
 * Outputs: `mask` — with format png, BYTES [K], each an 8-bit greyscale PNG at the image's size,
 * exactly the bytes POST /segment returns (JSON numbers cost 2–4 bytes a pixel; a PNG of a mask
 * is far smaller, docs/models.md); with format uint8, UINT8 [K, H, W], 0 or 255 per pixel —
 * `query_confidence` FP32 [K, Nq] (the QBM's weight of each query), `word_attention` FP32
 * [K, Nq, L] (each query's attention over the words, 0 on padding) and `score` FP32 [K].
 * The mask encodings of POST /segment's `format` field are the ones to add to V2_FORMATS.
 *
 * Triton's binary tensor data extension is understood both ways (the header
 * Inference-Header-Content-Length, `binary_data_size` on inputs, `binary_data` /
 * `binary_data_output` on outputs), so tritonclient works with its defaults.
 *
 * The limits of POST /segment apply unchanged: image bytes (413), pixels (413), the number and
 * length of expressions (400), the deadline (504), queue and memory budget (503). Errors are `{ "error": message }`.
 */
import { readFileSync } from 'node:fs'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import {
  ERR_INVALID_FIELD, ERR_MEMORY_BUSY, ERR_MISSING_FIELD, ERR_NOT_READY, ERR_PAYLOAD_TOO_LARGE, ERR_SHUTTING_DOWN, ERR_TOO_MANY_EXPRESSIONS, ERR_VALIDATION,
  expected, modelNotFound, SegError, toErrorResponse,
} from '../errors.js'
import { checkExpression, parseThreshold } from '../http/form.js'
import type { Deployment } from '../model/repository.js'
import type { Mask } from '../image/mask-formats.js'
import type { SegmentResult } from '../model/segmenter.js'
import { admitUpload, disconnectSignal } from './segment.js'

const PACKAGE = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { name: string, version: string }

/** Mask encodings of the `format` parameter. */
export const V2_FORMATS = ['png', 'uint8'] as const
type V2Format = typeof V2_FORMATS[number]

const OUTPUTS = ['mask', 'query_confidence', 'word_attention', 'score'] as const
type OutputName = typeof OUTPUTS[number]
/** Ours, the binary data extension's, and Triton's `timeout` (µs; the sooner of it and REQUEST_TIMEOUT_MS applies). */
const PARAMETERS = ['threshold', 'format', 'binary_data_output', 'timeout'] as const

type Datatype = 'BYTES' | 'UINT8' | 'FP32'
interface OutTensor { name: OutputName, datatype: Datatype, shape: number[], values: Buffer[] | Uint8Array | Float32Array }

interface RequestInput { name?: unknown, shape?: unknown, datatype?: unknown, parameters?: Record<string, unknown>, data?: unknown }
interface RequestOutput { name?: unknown, parameters?: Record<string, unknown> }
interface InferRequest { id?: unknown, parameters?: Record<string, unknown>, inputs?: unknown, outputs?: unknown }

const bad = (message: string): SegError => ERR_VALIDATION(message)

export default async function v2Routes (app: FastifyInstance): Promise<void> {
  const { models, config, lifecycle } = app
  // The image as base64 text is 4/3 of its bytes; expressions and JSON syntax take the rest.
  const bodyLimit = Math.ceil(config.maxImageBytes * 4 / 3) + config.maxExpressions * config.maxTextLength * 8 + 64 * 1024

  // Every body is read raw: JSON, or JSON followed by binary tensor data.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit }, (_request, body, done) => { done(null, body) })

  app.setErrorHandler((err, request, reply) => {
    const { statusCode, body, retryAfter } = toErrorResponse(err)
    if (statusCode >= 500 && !(err instanceof SegError)) request.log.error({ err }, 'request failed')
    else request.log.info({ code: body.error.code, statusCode }, 'request rejected')
    if (retryAfter !== undefined) void reply.header('retry-after', String(retryAfter))
    return reply.code(statusCode).type('application/json; charset=utf-8').send({ error: body.error.message })
  })
  app.setNotFoundHandler(async (request, reply) => {
    return reply.code(404).send({ error: `Route ${request.method} ${request.url.split('?')[0]} not found` })
  })

  const errorSchema = { type: 'object', required: ['error'], properties: { error: { type: 'string' } } } as const

  app.get('', async () => ({ name: PACKAGE.name, version: PACKAGE.version, extensions: ['binary_tensor_data'] }))
  app.get('/health/live', async () => ({ live: true }))
  app.get('/health/ready', async (_request, reply) => {
    const ready = !lifecycle.closing && models.isReady()
    if (!ready) void reply.code(400)
    return { ready }
  })

  /** The serving deployment of `name` (and `version`, when given), else 404. */
  function deploymentOf (name: string, version?: string): Deployment {
    const m = models.list().find((x) => x.name === name)
    const d = m?.serving
    if (d === undefined) throw modelNotFound(`Model ${JSON.stringify(name)} is not served`, { model: name })
    if (version !== undefined && version !== d.version) throw modelNotFound(`Version ${JSON.stringify(version)} of model ${name} is not served (serving ${d.version})`, { model: name, version })
    return d
  }

  interface Params { name: string, version?: string }

  const metadata = async (request: FastifyRequest<{ Params: Params }>): Promise<object> => {
    const d = deploymentOf(request.params.name, request.params.version)
    const { maxWords: L, numQueries: Nq } = d.segmenter.info
    return {
      name: d.name,
      versions: [d.version],
      platform: 'onnxruntime_onnx',
      inputs: [
        { name: 'image', datatype: 'BYTES', shape: [1] },
        { name: 'expression', datatype: 'BYTES', shape: [-1] },
      ],
      outputs: [
        { name: 'mask', datatype: 'BYTES', shape: [-1] },
        { name: 'query_confidence', datatype: 'FP32', shape: [-1, Nq] },
        { name: 'word_attention', datatype: 'FP32', shape: [-1, Nq, L] },
        { name: 'score', datatype: 'FP32', shape: [-1] },
      ],
    }
  }
  app.get('/models/:name', metadata)
  app.get('/models/:name/versions/:version', metadata)

  const ready = async (request: FastifyRequest<{ Params: Params }>, reply: FastifyReply): Promise<object> => {
    const d = deploymentOf(request.params.name, request.params.version)
    const ok = !lifecycle.closing && d.segmenter.isReady()
    if (!ok) void reply.code(400)
    return { name: d.name, ready: ok }
  }
  app.get('/models/:name/ready', ready)
  app.get('/models/:name/versions/:version/ready', ready)

  const infer = async (request: FastifyRequest<{ Params: Params }>, reply: FastifyReply): Promise<Buffer | object> => {
    const { name, version } = request.params
    const parsed = parseInferBody(request.body as Buffer | undefined, request.headers['inference-header-content-length'])
    const { image, expressions, threshold, format, outputs, timeoutMs } = readInferRequest(parsed, config)
    const budget = Math.min(config.requestTimeoutMs, timeoutMs ?? Infinity)
    const deadline = Date.now() - reply.elapsedTime + budget
    // The worker encodes the masks: PNGs, or the raw planes for the UINT8 tensor.
    const upload = request.upload!
    // From here the segmenter (or segmentWith, when no model takes it) releases the upload's lease.
    upload.handedOver = true
    const req = { image, expressions, threshold, format: format === 'uint8' ? 'raw' as const : 'png' as const, deadline, timeoutMs: budget, signal: disconnectSignal(request, reply), leases: [upload.lease] }
    const result = await app.segmentWith(name, req, request.log, version)
    void reply.header('x-model', `${result.model.name}@${result.model.version}`)
    const tensors = outputTensors(result, format).filter((t) => outputs.has(t.name))
    const head = { model_name: result.model.name, model_version: result.model.version, ...(parsed.json.id !== undefined ? { id: String(parsed.json.id) } : {}) }
    const binary = [...outputs.entries()].some(([, b]) => b)
    if (!binary) return { ...head, outputs: tensors.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape, data: jsonData(t) })) }
    const chunks: Buffer[] = []
    const described = tensors.map((t) => {
      if (outputs.get(t.name) !== true) return { name: t.name, datatype: t.datatype, shape: t.shape, data: jsonData(t) }
      const bytes = binaryData(t)
      chunks.push(bytes)
      return { name: t.name, datatype: t.datatype, shape: t.shape, parameters: { binary_data_size: bytes.length } }
    })
    const json = Buffer.from(JSON.stringify({ ...head, outputs: described }))
    void reply.type('application/octet-stream').header('inference-header-content-length', String(json.length))
    return Buffer.concat([json, ...chunks])
  }
  const inferOptions = {
    onRequest: async (request: FastifyRequest<{ Params: Params }>, reply: FastifyReply) => {
      if (lifecycle.closing) throw ERR_SHUTTING_DOWN()
      if (!models.anyReady()) throw ERR_NOT_READY()
      // The body is held whole and its image decoded beside it: twice its declared size comes
      // from the process-wide memory budget before a byte is read, like a /segment upload.
      const upload = { lease: admitUpload(request, reply, app.budget, bodyLimit, () => ERR_MEMORY_BUSY('uploads in progress'), 2), handedOver: false }
      request.upload = upload
      reply.raw.once('close', () => { if (!upload.handedOver) upload.lease.release() })
    },
    schema: { response: { '4xx': errorSchema, '5xx': errorSchema } },
  }
  app.post('/models/:name/infer', inferOptions, infer)
  app.post('/models/:name/versions/:version/infer', inferOptions, infer)
}

interface ParsedBody {
  json: InferRequest
  /** Binary tensor data after the JSON header (empty without the extension). */
  binary: Buffer
}

/** JSON, or (Inference-Header-Content-Length) a JSON header followed by binary tensor data. */
export function parseInferBody (body: Buffer | undefined, headerLength: string | string[] | undefined): ParsedBody {
  if (body === undefined || body.length === 0) throw ERR_MISSING_FIELD('Expected a JSON inference request but received an empty body')
  let jsonLength = body.length
  if (headerLength !== undefined) {
    const n = Number(headerLength)
    if (!Number.isInteger(n) || n <= 0 || n > body.length) throw bad(expected(`an integer from 1 to ${body.length}`, 'Inference-Header-Content-Length', String(headerLength)))
    jsonLength = n
  }
  let json: unknown
  try {
    json = JSON.parse(body.subarray(0, jsonLength).toString('utf8'))
  } catch (err) {
    throw bad(`The inference request is not valid JSON: ${(err as Error).message}`)
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw bad('Expected a JSON object for the inference request')
  return { json: json as InferRequest, binary: body.subarray(jsonLength) }
}

interface InferInputs {
  image: Buffer
  expressions: string[]
  threshold?: number
  format: V2Format
  /** The `timeout` parameter in ms. */
  timeoutMs?: number
  /** Requested outputs → whether each is sent as binary data. */
  outputs: Map<OutputName, boolean>
}

interface Limits { maxImageBytes: number, maxExpressions: number, maxTextLength: number }

/** Check the request against the model's inputs and the service's limits. */
export function readInferRequest ({ json, binary }: ParsedBody, limits: Limits): InferInputs {
  const params = json.parameters ?? {}
  if (typeof params !== 'object' || Array.isArray(params)) throw bad('Expected an object for parameters')
  for (const k of Object.keys(params)) if (!(PARAMETERS as readonly string[]).includes(k)) throw ERR_INVALID_FIELD(expected(`one of ${PARAMETERS.join(', ')}`, 'a parameter', k))
  let threshold: number | undefined
  if (params.threshold !== undefined) threshold = parseThreshold(String(params.threshold))
  let format: V2Format = 'png'
  if (params.format !== undefined) {
    if (!(V2_FORMATS as readonly unknown[]).includes(params.format)) throw ERR_INVALID_FIELD(expected(`one of ${V2_FORMATS.join(', ')}`, 'parameter format', String(params.format)))
    format = params.format as V2Format
  }
  let timeoutMs: number | undefined
  if (params.timeout !== undefined) {
    if (!Number.isInteger(params.timeout) || (params.timeout as number) <= 0) throw ERR_INVALID_FIELD(expected('a positive integer (µs)', 'parameter timeout', String(params.timeout)))
    timeoutMs = Math.max(1, Math.ceil((params.timeout as number) / 1000))
  }
  if (!Array.isArray(json.inputs)) throw ERR_MISSING_FIELD(expected('an array of input tensors', 'inputs', undefined))

  let offset = 0
  let image: Buffer | undefined
  let expressions: string[] | undefined
  for (const input of json.inputs as RequestInput[]) {
    if (input === null || typeof input !== 'object') throw bad('Expected an object for each input tensor')
    const name = String(input.name)
    if (name !== 'image' && name !== 'expression') throw ERR_INVALID_FIELD(expected('the input image or expression', 'an input', name))
    if ((name === 'image' && image !== undefined) || (name === 'expression' && expressions !== undefined)) throw ERR_INVALID_FIELD(`Expected one input ${name} but received several`)
    if (input.datatype !== 'BYTES') throw ERR_INVALID_FIELD(expected('BYTES', `the datatype of ${name}`, String(input.datatype)))
    const count = elementCount(input.shape, name)
    if (name === 'expression' && count > limits.maxExpressions) throw ERR_TOO_MANY_EXPRESSIONS(`Expected at most ${limits.maxExpressions} values for expression but received ${count}`)
    if (name === 'image' && count !== 1) throw ERR_INVALID_FIELD(expected('shape [1]', 'image', JSON.stringify(input.shape)))
    let elements: Buffer[]
    const size = input.parameters?.binary_data_size
    if (size !== undefined) {
      if (!Number.isInteger(size) || (size as number) < 0 || offset + (size as number) > binary.length) throw bad(`binary_data_size of ${name} does not fit the binary data`)
      elements = splitBytes(binary.subarray(offset, offset + (size as number)), name)
      offset += size as number
    } else {
      if (!Array.isArray(input.data)) throw ERR_MISSING_FIELD(expected('an array of strings', `the data of ${name}`, undefined))
      const flat = (input.data as unknown[]).flat(Infinity as 1)
      if (!flat.every((v) => typeof v === 'string')) throw ERR_INVALID_FIELD(expected('strings', `the data of ${name}`, 'other values'))
      elements = name === 'image' ? (flat as string[]).map((s) => decodeBase64(s, limits.maxImageBytes)) : (flat as string[]).map((s) => Buffer.from(s, 'utf8'))
    }
    if (elements.length !== count) throw ERR_INVALID_FIELD(`The shape of ${name} says ${count} elements; its data has ${elements.length}`)
    if (name === 'image') {
      image = elements[0]
      if (image.length > limits.maxImageBytes) throw ERR_PAYLOAD_TOO_LARGE('The uploaded file is too large')
      if (image.length === 0) throw ERR_INVALID_FIELD(expected('a non-empty file', 'image', 'an empty file'))
    } else {
      const texts: string[] = []
      for (const e of elements) {
        let text: string
        try {
          text = new TextDecoder('utf-8', { fatal: true }).decode(e)
        } catch {
          throw ERR_INVALID_FIELD('Expected UTF-8 text for expression but received bytes that are not UTF-8')
        }
        texts.push(checkExpression(text, texts.length, limits))
      }
      expressions = texts
    }
  }
  if (image === undefined) throw ERR_MISSING_FIELD(expected('an input tensor image', 'inputs', undefined))
  if (expressions === undefined || expressions.length === 0) throw ERR_MISSING_FIELD(expected('an input tensor expression with at least one element', 'inputs', undefined))

  const outputs = new Map<OutputName, boolean>()
  const binaryDefault = params.binary_data_output === true
  if (json.outputs === undefined) {
    for (const o of OUTPUTS) outputs.set(o, binaryDefault)
  } else {
    if (!Array.isArray(json.outputs)) throw bad('Expected an array for outputs')
    for (const o of json.outputs as RequestOutput[]) {
      const name = String(o?.name)
      if (!(OUTPUTS as readonly string[]).includes(name)) throw ERR_INVALID_FIELD(expected(`one of ${OUTPUTS.join(', ')}`, 'an output', name))
      const b = o.parameters?.binary_data
      outputs.set(name as OutputName, b === undefined ? binaryDefault : b === true)
    }
  }
  return { image, expressions, threshold, format, outputs, timeoutMs }
}

function elementCount (shape: unknown, name: string): number {
  if (!Array.isArray(shape) || shape.length === 0 || !shape.every((d) => Number.isInteger(d) && d >= 0)) throw ERR_INVALID_FIELD(expected('a shape of non-negative integers', `the shape of ${name}`, JSON.stringify(shape)))
  return (shape as number[]).reduce((a, d) => a * d, 1)
}

/** BYTES binary data: each element is a 4-byte little-endian length and that many bytes. */
function splitBytes (data: Buffer, name: string): Buffer[] {
  const out: Buffer[] = []
  let i = 0
  while (i < data.length) {
    if (i + 4 > data.length) throw bad(`The binary data of ${name} ends inside an element's length`)
    const n = data.readUInt32LE(i)
    if (i + 4 + n > data.length) throw bad(`The binary data of ${name} is shorter than its elements' lengths`)
    out.push(data.subarray(i + 4, i + 4 + n))
    i += 4 + n
  }
  return out
}

function decodeBase64 (s: string, maxBytes: number): Buffer {
  // Refuse by length before decoding: 4 characters carry 3 bytes.
  if (Math.floor(s.length * 3 / 4) > maxBytes + 2) throw ERR_PAYLOAD_TOO_LARGE('The uploaded file is too large')
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(s)) throw ERR_INVALID_FIELD('Expected the base64 text of the image file for image (JSON cannot carry raw bytes)')
  return Buffer.from(s, 'base64')
}

/** The mask's bytes in the encoding the request asked the worker for. */
function maskOf (mask: Mask, want: 'png' | 'raw'): Uint8Array {
  if (want === 'png' && 'png' in mask) return mask.png
  if (want === 'raw' && 'raw' in mask) return mask.raw
  throw new Error(`expected a ${want} mask from the worker`)
}

function outputTensors (result: SegmentResult, format: V2Format): OutTensor[] {
  const K = result.results.length
  const { width, height } = result.image
  const first = result.results[0]
  const Nq = first.queries.length
  const L = result.maxWords
  const confidence = new Float32Array(K * Nq)
  const attention = new Float32Array(K * Nq * L)
  result.results.forEach((r, k) => r.queries.forEach((q, j) => {
    confidence[k * Nq + j] = q.confidence
    attention.set(q.attention.slice(0, L), (k * Nq + j) * L)
  }))
  let mask: OutTensor
  if (format === 'png') {
    mask = { name: 'mask', datatype: 'BYTES', shape: [K], values: result.results.map((r) => { const png = maskOf(r.mask, 'png'); return Buffer.from(png.buffer, png.byteOffset, png.byteLength) }) }
  } else {
    const all = new Uint8Array(K * width * height)
    result.results.forEach((r, k) => all.set(maskOf(r.mask, 'raw'), k * width * height))
    mask = { name: 'mask', datatype: 'UINT8', shape: [K, height, width], values: all }
  }
  return [
    mask,
    { name: 'query_confidence', datatype: 'FP32', shape: [K, Nq], values: confidence },
    { name: 'word_attention', datatype: 'FP32', shape: [K, Nq, L], values: attention },
    { name: 'score', datatype: 'FP32', shape: [K], values: Float32Array.from(result.results.map((r) => r.score)) },
  ]
}

/** Row-major flat data; BYTES as base64 text (they are PNG files, not text). */
function jsonData (t: OutTensor): unknown[] {
  if (t.datatype === 'BYTES') return (t.values as Buffer[]).map((b) => b.toString('base64'))
  return Array.from(t.values as Uint8Array | Float32Array)
}

function binaryData (t: OutTensor): Buffer {
  if (t.datatype === 'BYTES') {
    return Buffer.concat((t.values as Buffer[]).flatMap((b) => { const n = Buffer.alloc(4); n.writeUInt32LE(b.length); return [n, b] }))
  }
  const v = t.values as Uint8Array | Float32Array
  // Float32Array is little-endian on every platform Node runs on here (x64, arm64).
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength)
}
