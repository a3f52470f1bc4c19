/**
/**
 * POST /segment — multipart `image` + one or more `expression` (+ optional `threshold`, `format`,
 * and `model`: name or name@version, else the default model). JSON by default, each mask in
 * `format` (png, coco_rle or polygon; src/image/mask-formats.ts); `Accept: image/png` returns the
 * single mask as a PNG.
 *
 * One deadline (REQUEST_TIMEOUT_MS) runs from the request's arrival: while the body arrives it
 * ends in 408 (as does a body that stalls for BODY_IDLE_TIMEOUT_MS), afterwards in 504. Before a
 * byte of the body is read, the upload takes its declared size from the process-wide memory
 * budget (503 when it does not fit), whichever model it is for; that model's segmenter then takes
 * what decoding and the masks will need.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Budget, Lease } from '../budget/budget.js'
import {
  ERR_MEMORY_BUSY, ERR_MEMORY_TOO_LARGE, ERR_NOT_ACCEPTABLE, ERR_NOT_READY, ERR_PAYLOAD_TOO_LARGE, ERR_SHUTTING_DOWN, ERR_UNSUPPORTED_MEDIA_TYPE, expected, SegError,
} from '../errors.js'
import { watchBody } from '../http/body-watch.js'
import { readSegmentForm } from '../http/form.js'
import { acceptable, mediaType } from '../http/negotiate.js'
import { type MaskFormat, toJsonMask } from '../image/mask-formats.js'
import { retryAfterSeconds } from '../http/retry-after.js'
import type { SegmentResult } from '../model/segmenter.js'
import { errorBody, segmentResponse } from '../schemas.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The upload's share of the memory budget (POST /segment), until it is handed to the segmenter. */
    upload?: { lease: Lease, handedOver: boolean }
  }
}

export default async function segmentRoutes (app: FastifyInstance): Promise<void> {
  const { models, config, lifecycle, budget } = app
  // The most a /segment body can be: the image and the multipart framing of every part and field.
  const maxBodyBytes = config.maxImageBytes + config.maxFormParts * (Math.max(1024, config.maxTextLength * 4) + 1024)

  /** An upload refused for memory: Retry-After from the default model's queue (the model is named in the body, unread). */
  function uploadsBusy (): SegError {
    const err = ERR_MEMORY_BUSY('uploads in progress')
    const s = models.get()?.stats()
    if (s === undefined) return err
    return new SegError(err.code, err.statusCode, err.message, { retryAfter: retryAfterSeconds(s.queueDepth + s.busyWorkers, undefined, s.liveWorkers) })
  }

  app.post('/segment', {
    onRequest: async (request, reply) => {
      // Reject before reading a byte of the body.
      if (acceptable(request.headers.accept).length === 0) throw ERR_NOT_ACCEPTABLE(expected('application/json or image/png', 'Accept', request.headers.accept))
      if (!/^multipart\/form-data\b/i.test(request.headers['content-type'] ?? '')) throw ERR_UNSUPPORTED_MEDIA_TYPE(expected('multipart/form-data', 'Content-Type', request.headers['content-type']))
      if (lifecycle.closing) throw ERR_SHUTTING_DOWN()
      if (!models.anyReady()) throw ERR_NOT_READY()
      const upload = { lease: admitUpload(request, reply, budget, maxBodyBytes, uploadsBusy), handedOver: false }
      request.upload = upload
      // Whatever ends the request before the segmenter has the lease (an error, the client
      // leaving) releases it with the response.
      reply.raw.once('close', () => { if (!upload.handedOver) upload.lease.release() })
    },
    schema: { response: { 200: segmentResponse, '4xx': errorBody, '5xx': errorBody } },
  }, async (request, reply) => {
    // The deadline counts from the arrival of the request (its headers), not from here.
    const deadline = Date.now() - reply.elapsedTime + config.requestTimeoutMs
    const upload = request.upload!
    try {
      const signal = disconnectSignal(request, reply)
      const declared = Number(request.headers['content-length'])
      // A declared size is allocated at once; otherwise the buffer grows from 1 MiB as bytes come.
      const imageCapacity = Math.min(config.maxImageBytes, declared > 0 ? declared : 1024 * 1024)
      const form = await watchBody(request, { deadline, timeoutMs: config.requestTimeoutMs, idleMs: config.bodyIdleTimeoutMs }, async (onReading) => await readSegmentForm(request, config, { imageCapacity, onReading }))
      // From here on the upload is the image's buffer; the rest of the body is garbage.
      upload.lease.shrink(form.image.buffer.byteLength)
      const format = form.format ?? 'png'
      const rep = acceptable(request.headers.accept).find((r) => r === 'json' || (form.expressions.length === 1 && format === 'png'))
      if (rep === undefined) {
        throw ERR_NOT_ACCEPTABLE(format !== 'png'
          ? `Format ${format} is answered as JSON; ask for application/json`
          : `Expected one expression for Accept: image/png but received ${form.expressions.length}; ask for application/json`)
      }
      // From here the segmenter releases it, when the request's work has ended (segmentWith, when
      // no model takes the request).
      upload.handedOver = true
      const req = { image: form.image, expressions: form.expressions, threshold: form.threshold, format, deadline, timeoutMs: config.requestTimeoutMs, signal, leases: [upload.lease] }
      // segmentWith counts, times and logs the request per model and version.
      const result = await app.segmentWith(form.model, req, request.log)
      return answer(reply, rep, format, result)
    } catch (err) {
      // The rest of a body that was not read is not waited for.
      if (err instanceof SegError && err.statusCode === 408) void reply.header('connection', 'close')
      throw err
    }
  })

  function answer (reply: FastifyReply, rep: 'json' | 'png', format: MaskFormat, result: SegmentResult): FastifyReply | object {
    void reply.header('x-model', `${result.model.name}@${result.model.version}`)
    if (rep === 'png') return sendPng(reply, result)
    return toJson(result, format)
  }
}

/**
 * The upload's lease, taken before its body is read: its declared size (or the largest body, when
 * none is declared), times `factor` for a body held beside what is decoded from it (v2 infer).
 * Refused with 413 when the declared size is over the limit, 503 when the budget is taken; the
 * unread body is then not waited for.
 */
export function admitUpload (request: FastifyRequest, reply: FastifyReply, budget: Budget, maxBodyBytes: number, busy: () => SegError, factor = 1): Lease {
  const declared = Number(request.headers['content-length'])
  if (declared > maxBodyBytes) {
    void reply.header('connection', 'close')
    throw ERR_PAYLOAD_TOO_LARGE(`The request body is ${declared} bytes; at most ${maxBodyBytes} are accepted`)
  }
  const bytes = factor * (declared > 0 ? declared : maxBodyBytes)
  const lease = budget.tryAcquire(bytes)
  if (lease === undefined) {
    void reply.header('connection', 'close')
    if (bytes > budget.stats().capacityBytes) throw ERR_MEMORY_TOO_LARGE(`The upload needs ${bytes} bytes of memory; the server can give one request at most ${budget.stats().capacityBytes}`)
    throw busy()
  }
  return lease
}

/** Aborted when the client goes away before the answer is written. */
export function disconnectSignal (request: FastifyRequest, reply: FastifyReply): AbortSignal {
  const controller = new AbortController()
  reply.raw.once('close', () => { if (!reply.raw.writableFinished) controller.abort() })
  request.raw.once('aborted', () => controller.abort())
  return controller.signal
}

function sendPng (reply: FastifyReply, result: SegmentResult): FastifyReply {
  const r = result.results[0]
  if (!('png' in r.mask)) throw new Error('a raw PNG answer needs the png format')
  const { png } = r.mask
  return reply
    .type(mediaType('png'))
    .header('x-query-confidence', r.queries.map((q) => round(q.confidence)).join(','))
    .header('x-mask-score', String(round(r.score)))
    .header('x-image-size', `${result.image.width}x${result.image.height}`)
    .send(Buffer.from(png.buffer, png.byteOffset, png.byteLength))
}

function toJson (result: SegmentResult, format: MaskFormat): object {
  const ms = (v: number): number => Math.round(v * 100) / 100
  const { width, height } = result.image
  const t0 = performance.now()
  const masks = result.results.map((r) => toJsonMask(r.mask))
  // Base64 is post-processing: its time counts there and in the total.
  const encodeMs = performance.now() - t0
  return {
    model: result.model,
    image: { width, height },
    format,
    results: result.results.map((r, k) => ({
      expression: r.expression,
      tokens: r.tokens,
      mask: masks[k],
      score: round(r.score),
      bbox: r.bbox,
      bbox_format: 'xywh',
      area: r.area,
      queries: r.queries.map((q) => ({ confidence: round(q.confidence), attention: q.attention.map(round) })),
    })),
    timings_ms: {
      decode: ms(result.timings.decode),
      preprocess: ms(result.timings.preprocess),
      queue: ms(result.timings.queue),
      inference: ms(result.timings.inference),
      postprocess: ms(result.timings.postprocess + encodeMs),
      total: ms(result.timings.total + encodeMs),
    },
  }
}

const round = (v: number): number => Math.round(v * 1e6) / 1e6
