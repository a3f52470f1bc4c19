/**
 * Reads the POST /segment multipart form: `image` (one file), `expression` (repeatable text),
 * `threshold` (optional number) and `model` (optional: name or name@version). Rejects early with coded errors; never buffers more than
 * the configured limits.
 */
import type { FastifyRequest } from 'fastify'
import {
  ERR_EXPRESSION_TOO_LONG, ERR_INVALID_FIELD, ERR_MISSING_FIELD, ERR_MULTIPART, ERR_THRESHOLD, ERR_TOO_MANY_EXPRESSIONS, ERR_TOO_MANY_FILES, expected, SegError,
} from '../errors.js'
import { isThreshold } from '../image/postprocess.js'

export interface SegmentForm {
  image: Buffer
  filename?: string
  expressions: string[]
  threshold?: number
  /** name or name@version; absent: the default model. */
  model?: string
}

export interface FormLimits {
  maxExpressions: number
  maxTextLength: number
}

export async function readSegmentForm (request: FastifyRequest, limits: FormLimits): Promise<SegmentForm> {
  let image: Buffer | undefined
  let filename: string | undefined
  const expressions: string[] = []
  let threshold: number | undefined
  let sawThreshold = false
  let model: string | undefined

  try {
    for await (const part of request.parts()) {
      if (part.type === 'file') {
        if (part.fieldname !== 'image') {
          part.file.resume()
          throw ERR_INVALID_FIELD(expected('the file field image', 'a file upload', part.fieldname))
        }
        if (image !== undefined) throw ERR_TOO_MANY_FILES()
        image = await part.toBuffer()
        filename = part.filename
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
        case 'model':
          if (model !== undefined) throw ERR_INVALID_FIELD('Expected one value for model but received several')
          model = parseModelRef(value)
          break
        case 'image':
          throw ERR_INVALID_FIELD(expected('a file', 'image', 'a text field'))
        default:
          throw ERR_INVALID_FIELD(expected('one of image, expression, threshold, model', 'a form field', part.fieldname))
      }
    }
  } catch (err) {
    if (err instanceof SegError || (err as { code?: string }).code !== undefined) throw err
    throw ERR_MULTIPART((err as Error).message)
  }

  if (image === undefined) throw ERR_MISSING_FIELD(expected('an image file', 'image', undefined))
  if (image.length === 0) throw ERR_INVALID_FIELD(expected('a non-empty file', 'image', 'an empty file'))
  if (expressions.length === 0) throw ERR_MISSING_FIELD(expected('at least one text field', 'expression', undefined))
  return { image, filename, expressions, threshold, model }
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
