/**
 * Coded errors of the segmentation service, and the one place that turns any error into the
 * JSON body `{ error: { code, message } }`.
 *
 * Codes are stable: clients may branch on them. Messages are for people; they never carry stack
 * traces or file-system paths. Every 5xx that is not one of our own coded errors is answered as
 * `SEG_ERR_INTERNAL` / 'Internal Server Error'.
 */
import { format } from 'node:util'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'

export interface SegErrorOptions {
  /** Seconds, sent as `Retry-After` (503 only). */
  retryAfter?: number
  /** Extra machine-readable detail returned under `error.details`. */
  details?: Record<string, unknown>
}

/** An error whose code, HTTP status and message are meant for the client. */
export class SegError extends Error {
  readonly code: string
  readonly statusCode: number
  readonly retryAfter?: number
  readonly details?: Record<string, unknown>

  constructor (code: string, statusCode: number, message: string, opts: SegErrorOptions = {}) {
    super(message)
    this.name = 'SegError'
    this.code = code
    this.statusCode = statusCode
    this.retryAfter = opts.retryAfter
    this.details = opts.details
  }
}

export type SegErrorFactory = ((...args: unknown[]) => SegError) & { code: string, statusCode: number }

/**
 * `createError('SEG_ERR_X', 'Could not do %s', 400)` returns a constructor-like function whose
 * arguments fill the `%s` placeholders (the `@fastify/error` convention).
 */
export function createError (code: string, template: string, statusCode: number, opts: SegErrorOptions = {}): SegErrorFactory {
  const make = (...args: unknown[]): SegError => new SegError(code, statusCode, format(template, ...args), opts)
  return Object.assign(make, { code, statusCode })
}

/** `Expected <what> for <name> but received <value>` (the one template for validation messages). */
export function expected (what: string, name: string, value: unknown): string {
  return `Expected ${what} for ${name} but received ${describe(value)}`
}

function describe (value: unknown): string {
  if (value === undefined) return 'nothing'
  if (typeof value === 'string') {
    const shown = value.length > 40 ? `${value.slice(0, 40)}…` : value
    return JSON.stringify(shown)
  }
  return String(value)
}

// 400: the request is malformed.
export const ERR_BAD_REQUEST = createError('SEG_ERR_BAD_REQUEST', '%s', 400)
export const ERR_INVALID_FIELD = createError('SEG_ERR_INVALID_FIELD', '%s', 400)
export const ERR_MISSING_FIELD = createError('SEG_ERR_MISSING_FIELD', '%s', 400)
export const ERR_MULTIPART = createError('SEG_ERR_MULTIPART', 'Could not read the multipart body: %s', 400)
export const ERR_IMAGE_DECODE = createError('SEG_ERR_IMAGE_DECODE', 'Could not decode the image: %s', 400)
export const ERR_VALIDATION = createError('SEG_ERR_VALIDATION', '%s', 400)
export const ERR_EXPRESSION_TOO_LONG = createError('SEG_ERR_EXPRESSION_TOO_LONG', '%s', 400)
export const ERR_TOO_MANY_EXPRESSIONS = createError('SEG_ERR_TOO_MANY_EXPRESSIONS', '%s', 400)
export const ERR_TOO_MANY_FILES = createError('SEG_ERR_TOO_MANY_FILES', 'Expected one file for image but received several', 400)
// 401 / 429: access control (only when API_KEYS is set).
export const ERR_UNAUTHORIZED = createError('SEG_ERR_UNAUTHORIZED', '%s', 401)
export const ERR_RATE_LIMITED = createError('SEG_ERR_RATE_LIMITED', 'Too many requests for this API key; try again in %s s', 429)
// 404 / 405
export const ERR_NOT_FOUND = createError('SEG_ERR_NOT_FOUND', 'Route %s %s not found', 404)
export const ERR_METHOD_NOT_ALLOWED = createError('SEG_ERR_METHOD_NOT_ALLOWED', 'Method %s is not allowed on %s; allowed: %s', 405)
// 408: the body did not arrive in time (the connection is closed after the answer).
export const ERR_REQUEST_TIMEOUT = createError('SEG_ERR_REQUEST_TIMEOUT', '%s', 408)
export const ERR_MODEL_NOT_FOUND = createError('SEG_ERR_MODEL_NOT_FOUND', '%s', 404)
// 406: nothing the client accepts can be produced.
export const ERR_NOT_ACCEPTABLE = createError('SEG_ERR_NOT_ACCEPTABLE', '%s', 406)
// 413: too many bytes or pixels.
export const ERR_PAYLOAD_TOO_LARGE = createError('SEG_ERR_PAYLOAD_TOO_LARGE', '%s', 413)
export const ERR_IMAGE_TOO_LARGE = createError('SEG_ERR_IMAGE_TOO_LARGE', '%s', 413)
/** An image that needs more memory than the server can give one request is too large for this deployment. */
export const ERR_MEMORY_TOO_LARGE = (message: string): SegError => ERR_IMAGE_TOO_LARGE(message)
export const ERR_TOO_MANY_FIELDS = createError('SEG_ERR_TOO_MANY_FIELDS', 'The multipart body has too many fields', 413)
export const ERR_TOO_MANY_PARTS = createError('SEG_ERR_TOO_MANY_PARTS', 'The multipart body has too many parts', 413)
// 415: the body or the file is not something we can read.
export const ERR_UNSUPPORTED_MEDIA_TYPE = createError('SEG_ERR_UNSUPPORTED_MEDIA_TYPE', '%s', 415)
export const ERR_NOT_AN_IMAGE = createError('SEG_ERR_NOT_AN_IMAGE', 'The uploaded file is not an image in a supported format (JPEG, PNG, WebP, GIF, TIFF or AVIF)', 415)
export const ERR_IMAGE_FORMAT = createError('SEG_ERR_IMAGE_FORMAT', 'Image format %s is not supported; use JPEG, PNG, WebP, GIF, TIFF or AVIF', 415)
// 422: well-formed but meaningless to the model.
export const ERR_NO_KNOWN_WORDS = createError('SEG_ERR_NO_KNOWN_WORDS', '%s', 422)
// 499: the client went away (nobody reads the answer; it only settles the job).
export const ERR_CLIENT_CLOSED = createError('SEG_ERR_CLIENT_CLOSED', 'The client closed the connection', 499)
// 503 / 504: capacity and time.
export const ERR_NOT_READY = createError('SEG_ERR_NOT_READY', 'The model is not loaded yet', 503, { retryAfter: 5 })
export const ERR_SHUTTING_DOWN = createError('SEG_ERR_SHUTTING_DOWN', 'The server is shutting down', 503, { retryAfter: 5 })
export const ERR_QUEUE_FULL = createError('SEG_ERR_QUEUE_FULL', 'Too many requests are waiting (%s queued); try again shortly', 503, { retryAfter: 1 })
export const ERR_MEMORY_BUSY = createError('SEG_ERR_MEMORY_BUSY', 'The memory this server may use is taken by other requests (%s); try again shortly', 503, { retryAfter: 1 })
export const ERR_WORKER_CRASHED = createError('SEG_ERR_WORKER_CRASHED', 'The inference worker stopped while handling this request; try again', 503, { retryAfter: 1 })
export const ERR_DEADLINE = createError('SEG_ERR_DEADLINE', 'The request did not finish within %s ms', 504)
export const ERR_INTERNAL = createError('SEG_ERR_INTERNAL', 'Internal Server Error', 500)

/** The threshold field (a probability): one message wherever a threshold is checked. */
export const ERR_THRESHOLD = (value: unknown): SegError => ERR_INVALID_FIELD(expected('a number between 0 and 1', 'threshold', value))

/**
 * 422 for expressions of which the model knows no word. `unknown` lists each such expression's
 * index and its words (none when it had only punctuation or symbols); `count` is how many
 * expressions the request had.
 */
export function noKnownWords (unknown: Array<{ index: number, words: string[] }>, count: number): SegError {
  const parts = unknown.map(({ index, words }) => {
    const which = count > 1 ? `expression ${index + 1}` : 'the expression'
    return words.length === 0
      ? `${which} has no words (only punctuation or symbols)`
      : `${which} has no word the model knows (unknown: ${words.join(', ')})`
  })
  const message = parts.join('; ')
  const e = ERR_NO_KNOWN_WORDS(message.charAt(0).toUpperCase() + message.slice(1))
  return new SegError(e.code, e.statusCode, e.message, { details: { unknownWords: unknown } })
}

/** 404 for a model (or a version of it) that does not serve; `details` names what does. */
export function modelNotFound (message: string, details: Record<string, unknown>): SegError {
  return new SegError(ERR_MODEL_NOT_FOUND.code, ERR_MODEL_NOT_FOUND.statusCode, message, { details })
}

export interface ErrorBody {
  error: { code: string, message: string, details?: Record<string, unknown> }
}

const wrongContentType = (): SegError => ERR_UNSUPPORTED_MEDIA_TYPE('Expected multipart/form-data for the request body but received another content type')

/** Fastify / @fastify/multipart error codes → ours. */
const FRAMEWORK_ERRORS: Record<string, (message: string) => SegError> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: wrongContentType,
  FST_INVALID_MULTIPART_CONTENT_TYPE: wrongContentType,
  FST_ERR_CTP_BODY_TOO_LARGE: () => ERR_PAYLOAD_TOO_LARGE('The request body is too large'),
  FST_REQ_FILE_TOO_LARGE: () => ERR_PAYLOAD_TOO_LARGE('The uploaded file is too large'),
  FST_PARTS_LIMIT: () => ERR_TOO_MANY_PARTS(),
  FST_FILES_LIMIT: () => ERR_TOO_MANY_FILES(),
  FST_FIELDS_LIMIT: () => ERR_TOO_MANY_FIELDS(),
  FST_PROTO_VIOLATION: ERR_MULTIPART,
  FST_INVALID_JSON_FIELD_ERROR: ERR_MULTIPART,
  FST_MP_PREMATURE_CLOSE: ERR_MULTIPART,
  FST_ERR_CTP_EMPTY_JSON_BODY: (message) => ERR_VALIDATION(`Could not read the multipart body: ${message}`),
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: (message) => ERR_VALIDATION(`Could not read the multipart body: ${message}`),
}

const body = (e: SegError): ErrorBody => {
  const error: ErrorBody['error'] = { code: e.code, message: e.message }
  if (e.details !== undefined) error.details = e.details
  return { error }
}

/** Normalise anything thrown into (status, body, retryAfter). */
export function toErrorResponse (err: unknown): { statusCode: number, body: ErrorBody, retryAfter?: number } {
  const e = toSegError(err)
  return { statusCode: e.statusCode, body: body(e), retryAfter: e.retryAfter }
}

function toSegError (err: unknown): SegError {
  if (err instanceof SegError) return err
  const fe = err as Partial<FastifyError> & { validation?: unknown }
  if (fe !== null && typeof fe === 'object') {
    if (fe.validation !== undefined) return ERR_VALIDATION(String(fe.message))
    const mapped = fe.code !== undefined ? FRAMEWORK_ERRORS[fe.code] : undefined
    if (mapped !== undefined) return mapped(String(fe.message))
    // Malformed multipart (busboy) errors carry no code; they are the client's fault.
    if (typeof fe.message === 'string' && /multipart|boundary|Unexpected end of form/i.test(fe.message)) {
      return new SegError(ERR_MULTIPART.code, ERR_MULTIPART.statusCode, 'Could not read the multipart body')
    }
    const status = typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500 ? fe.statusCode : 500
    if (status < 500) return new SegError(ERR_BAD_REQUEST.code, status, String(fe.message))
  }
  return ERR_INTERNAL()
}

/** The central error handler (registered once in buildApp). */
export function errorHandler (err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const { statusCode, body, retryAfter } = toErrorResponse(err)
  if (statusCode >= 500 && !(err instanceof SegError)) {
    request.log.error({ err, request: { method: request.method, url: request.url } }, 'request failed')
  } else {
    request.log.info({ code: body.error.code, statusCode }, 'request rejected')
  }
  if (retryAfter !== undefined) void reply.header('retry-after', String(retryAfter))
  return reply.code(statusCode).type('application/json; charset=utf-8').send(body)
}
