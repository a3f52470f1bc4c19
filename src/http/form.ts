/**
 * Reads the POST /segment multipart form: `image` (one file), `expression` (repeatable text),
 * `threshold` (optional number), `format` (optional mask encoding) and `model` (optional: name or
 * name@version). Rejects early with coded errors; never buffers more than the configured limits.
 */
import type { FastifyRequest } from 'fastify'
import { isMaskFormat, MASK_FORMATS, type MaskFormat } from '../image/mask-formats.js'
import {
  ERR_EXPRESSION_TOO_LONG, ERR_INVALID_FIELD, ERR_MISSING_FIELD, ERR_MULTIPART, ERR_PAYLOAD_TOO_LARGE, ERR_THRESHOLD, ERR_TOO_MANY_EXPRESSIONS, ERR_TOO_MANY_FILES, expected, SegError,
} from '../errors.js'
import { isThreshold } from '../image/postprocess.js'

export interface SegmentForm {
  image: Buffer
  filename?: string
  expressions: string[]
  threshold?: number
  /** How JSON results carry the mask; absent: png. */
  format?: MaskFormat
  /** name or name@version; absent: the default model. */
  model?: string
}

export interface FormLimits {
  maxExpressions: number
  maxTextLength: number
}

export interface FormOptions {
  /** Bytes the image can have at most (the declared body size, or MAX_IMAGE_BYTES): its buffer is allocated once. */
  imageCapacity: number
  /** Called once the body is being read (request.raw is piped into the parser), e.g. to watch its bytes arrive. */
  onReading?: () => void
}

export async function readSegmentForm (request: FastifyRequest, limits: FormLimits, opts: FormOptions): Promise<SegmentForm> {
  let image: Buffer | undefined
  let filename: string | undefined
  const expressions: string[] = []
  let threshold: number | undefined
  let sawThreshold = false
  let format: MaskFormat | undefined
  let model: string | undefined

  try {
    const parts = request.parts()[Symbol.asyncIterator]()
    // The first next() runs the parser's set-up, which pipes the request into it.
    let next = parts.next()
    opts.onReading?.()
    for (;;) {
      const r = await next
      if (r.done === true) break
      const part = r.value
      if (part.type === 'file') {
        if (part.fieldname !== 'image') {
          part.file.resume()
          throw ERR_INVALID_FIELD(expected('the file field image', 'a file upload', part.fieldname))
        }
        if (image !== undefined) throw ERR_TOO_MANY_FILES()
        image = await collect(part.file, opts.imageCapacity)
        if (part.file.truncated) throw ERR_PAYLOAD_TOO_LARGE('The uploaded file is too large')
        filename = part.filename
        next = parts.next()
        continue
      }
      const value = typeof part.value === 'string' ? part.value : String(part.value)
      if (part.valueTruncated) {
        const tooLong = expected(`at most ${limits.maxTextLength} characters`, part.fieldname, value)
        throw part.fieldname === 'expression' ? ERR_EXPRESSION_TOO_LONG(tooLong) : ERR_INVALID_FIELD(tooLong)
      }
      switch (part.fieldname) {
        case 'expression':
          expressions.push(checkExpression(value, expressions.length, limits))
          break
        case 'threshold':
          if (sawThreshold) throw ERR_INVALID_FIELD('Expected one value for threshold but received several')
          sawThreshold = true
          threshold = parseThreshold(value)
          break
        case 'format':
          if (format !== undefined) throw ERR_INVALID_FIELD('Expected one value for format but received several')
          if (!isMaskFormat(value.trim())) throw ERR_INVALID_FIELD(expected(`one of ${MASK_FORMATS.join(', ')}`, 'format', value))
          format = value.trim() as MaskFormat
          break
        case 'model':
          if (model !== undefined) throw ERR_INVALID_FIELD('Expected one value for model but received several')
          model = parseModelRef(value)
          break
        case 'image':
          throw ERR_INVALID_FIELD(expected('a file', 'image', 'a text field'))
        default:
          throw ERR_INVALID_FIELD(expected('one of image, expression, threshold, format, model', 'a form field', part.fieldname))
      }
      // Asked for only once this part is accepted: a request refused here leaves no pending read behind.
      next = parts.next()
    }
  } catch (err) {
    if (err instanceof SegError || (err as { code?: string }).code !== undefined) throw err
    throw ERR_MULTIPART((err as Error).message)
  }

  if (image === undefined) throw ERR_MISSING_FIELD(expected('an image file', 'image', undefined))
  if (image.length === 0) throw ERR_INVALID_FIELD(expected('a non-empty file', 'image', 'an empty file'))
  if (expressions.length === 0) throw ERR_MISSING_FIELD(expected('at least one text field', 'expression', undefined))
  return { image, filename, expressions, threshold, format, model }
}

/**
 * The file's bytes in one buffer allocated up front (`capacity`, grown only when a body without a
 * declared size is larger), instead of a list of chunks and their concatenation: the upload is
 * held once, as the memory budget counts it.
 */
async function collect (file: AsyncIterable<Buffer>, capacity: number): Promise<Buffer> {
  let buf = Buffer.allocUnsafeSlow(Math.max(1, capacity))
  let n = 0
  for await (const chunk of file) {
    if (n + chunk.length > buf.length) {
      const bigger = Buffer.allocUnsafeSlow(Math.max(n + chunk.length, 2 * buf.length))
      buf.copy(bigger, 0, 0, n)
      buf = bigger
    }
    chunk.copy(buf, n)
    n += chunk.length
  }
  return buf.subarray(0, n)
}

/** A model reference: name or name@version, each part letters, digits, . _ - (src/model/repository.ts). */
export function parseModelRef (value: string): string {
  const s = value.trim()
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9][A-Za-z0-9._+-]*)?$/.test(s)) throw ERR_INVALID_FIELD(expected('a model name or name@version', 'model', value))
  return s
}

export function checkExpression (value: string, count: number, limits: FormLimits): string {
  if (count >= limits.maxExpressions) {
    throw ERR_TOO_MANY_EXPRESSIONS(`Expected at most ${limits.maxExpressions} values for expression but received more`)
  }
  if ([...value].length > limits.maxTextLength) {
    throw ERR_EXPRESSION_TOO_LONG(expected(`at most ${limits.maxTextLength} characters`, 'expression', value))
  }
  // Field values are decoded as UTF-8; bytes that are not UTF-8 become U+FFFD.
  if (value.includes('\uFFFD')) throw ERR_INVALID_FIELD('Expected UTF-8 text for expression but received bytes that are not UTF-8')
  if (value.trim() === '') throw ERR_INVALID_FIELD(expected('a non-empty text', 'expression', value))
  return value
}

export function parseThreshold (value: string): number {
  const s = value.trim()
  const n = Number(s)
  if (s === '' || !isThreshold(n)) throw ERR_THRESHOLD(value)
  return n
}
