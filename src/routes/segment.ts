/**
 * POST /segment — multipart `image` + one or more `expression` (+ optional `threshold`, `format`).
 * JSON by default, each mask in `format` (png, coco_rle or polygon; src/image/mask-formats.ts);
 * `Accept: image/png` returns the single mask as a PNG.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { ERR_NOT_ACCEPTABLE, ERR_NOT_READY, ERR_QUEUE_FULL, ERR_SHUTTING_DOWN, ERR_UNSUPPORTED_MEDIA_TYPE, expected, SegError } from '../errors.js'
import { readSegmentForm } from '../http/form.js'
import { acceptable, mediaType } from '../http/negotiate.js'
import { encodeMask, type MaskFormat } from '../image/mask-formats.js'
import { retryAfterSeconds, throughputMeter } from '../http/retry-after.js'
import type { SegmentRequest, SegmentResult, Segmenter } from '../model/segmenter.js'
import { errorBody, segmentResponse } from '../schemas.js'

export default async function segmentRoutes (app: FastifyInstance): Promise<void> {
  const { segmenter, config, metrics, lifecycle } = app
  const throughput = throughputMeter()

  /** segmenter.segment, measuring throughput and answering a full queue with a computed Retry-After. */
  async function segment (req: SegmentRequest): Promise<SegmentResult> {
    try {
      const result = await segmenter.segment(req)
      throughput.record()
      return result
    } catch (err) {
      if (err instanceof SegError && err.code === ERR_QUEUE_FULL.code) throw queueFull(segmenter, throughput.rate(), err)
      throw err
    }
  }

  app.post('/segment', {
    onRequest: async (request) => {
      // Reject before reading a byte of the body.
      if (acceptable(request.headers.accept).length === 0) throw ERR_NOT_ACCEPTABLE(expected('application/json or image/png', 'Accept', request.headers.accept))
      if (!/^multipart\/form-data\b/i.test(request.headers['content-type'] ?? '')) throw ERR_UNSUPPORTED_MEDIA_TYPE(expected('multipart/form-data', 'Content-Type', request.headers['content-type']))
      if (lifecycle.closing) throw ERR_SHUTTING_DOWN()
      if (!segmenter.isReady()) throw ERR_NOT_READY()
    },
    schema: { response: { 200: segmentResponse, '4xx': errorBody, '5xx': errorBody } },
  }, async (request, reply) => {
    const form = await readSegmentForm(request, config)
    const format = form.format ?? 'png'
    const rep = acceptable(request.headers.accept).find((r) => r === 'json' || (form.expressions.length === 1 && format === 'png'))
    if (rep === undefined) {
      throw ERR_NOT_ACCEPTABLE(format !== 'png'
        ? `Format ${format} is answered as JSON; ask for application/json`
        : `Expected one expression for Accept: image/png but received ${form.expressions.length}; ask for application/json`)
    }

    const deadline = Date.now() - reply.elapsedTime + config.requestTimeoutMs
    const result = await segment({ image: form.image, expressions: form.expressions, threshold: form.threshold, deadline, timeoutMs: config.requestTimeoutMs, signal: disconnectSignal(request, reply) })
    metrics.observeStages(result.timings)
    request.log.info({
      width: result.image.width, height: result.image.height, format: result.image.format, maskFormat: rep === 'png' ? 'png (raw)' : format, expressions: form.expressions.length,
      batchSize: result.batchSize, timings: result.timings, ...(config.logExpressions ? { segment: { expressions: form.expressions } } : {}),
    }, 'segmentation done')

    void reply.header('x-model', `${result.model.name}@${result.model.version}`)
    if (rep === 'png') return sendPng(reply, result)
    return toJson(result, format)
  })
}

function queueFull (segmenter: Segmenter, rate: number | undefined, err: SegError): SegError {
  const s = segmenter.stats()
  const retryAfter = retryAfterSeconds(s.queueDepth + s.busyWorkers, rate, s.liveWorkers)
  return new SegError(err.code, err.statusCode, err.message, { retryAfter })
}

/** Aborted when the client goes away before the answer is written. */
function disconnectSignal (request: FastifyRequest, reply: FastifyReply): AbortSignal {
  const controller = new AbortController()
  reply.raw.once('close', () => { if (!reply.raw.writableFinished) controller.abort() })
  request.raw.once('aborted', () => controller.abort())
  return controller.signal
}

function sendPng (reply: FastifyReply, result: SegmentResult): FastifyReply {
  const r = result.results[0]
  return reply
    .type(mediaType('png'))
    .header('x-query-confidence', r.queries.map((q) => round(q.confidence)).join(','))
    .header('x-mask-score', String(round(r.score)))
    .header('x-image-size', `${result.image.width}x${result.image.height}`)
    .send(r.png)
}

function toJson (result: SegmentResult, format: MaskFormat): object {
  const ms = (v: number): number => Math.round(v * 100) / 100
  const { width, height } = result.image
  const t0 = performance.now()
  const masks = result.results.map((r) => encodeMask(format, r, width, height))
  // Encoding is post-processing: its time counts there and in the total.
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
