/**
 * POST /segment — multipart `image` + one or more `expression` (+ optional `threshold`, and
 * `model`: name or name@version, else the default model). JSON by default; `Accept: image/png`
 * returns the single mask as a PNG.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { ERR_NOT_ACCEPTABLE, ERR_NOT_READY, ERR_SHUTTING_DOWN, ERR_UNSUPPORTED_MEDIA_TYPE, expected } from '../errors.js'
import { readSegmentForm } from '../http/form.js'
import { acceptable, mediaType } from '../http/negotiate.js'
import type { SegmentResult } from '../model/segmenter.js'
import { errorBody, segmentResponse } from '../schemas.js'

export default async function segmentRoutes (app: FastifyInstance): Promise<void> {
  const { models, config, lifecycle } = app

  app.post('/segment', {
    onRequest: async (request) => {
      // Reject before reading a byte of the body.
      if (acceptable(request.headers.accept).length === 0) throw ERR_NOT_ACCEPTABLE(expected('application/json or image/png', 'Accept', request.headers.accept))
      if (!/^multipart\/form-data\b/i.test(request.headers['content-type'] ?? '')) throw ERR_UNSUPPORTED_MEDIA_TYPE(expected('multipart/form-data', 'Content-Type', request.headers['content-type']))
      if (lifecycle.closing) throw ERR_SHUTTING_DOWN()
      if (!models.anyReady()) throw ERR_NOT_READY()
    },
    schema: { response: { 200: segmentResponse, '4xx': errorBody, '5xx': errorBody } },
  }, async (request, reply) => {
    const form = await readSegmentForm(request, config)
    const rep = acceptable(request.headers.accept).find((r) => r === 'json' || form.expressions.length === 1)
    if (rep === undefined) throw ERR_NOT_ACCEPTABLE(`Expected one expression for Accept: image/png but received ${form.expressions.length}; ask for application/json`)

    const deadline = Date.now() - reply.elapsedTime + config.requestTimeoutMs
    const req = { image: form.image, expressions: form.expressions, threshold: form.threshold, deadline, timeoutMs: config.requestTimeoutMs, signal: disconnectSignal(request, reply) }
    const result = await app.segmentWith(form.model, req, request.log)

    void reply.header('x-model', `${result.model.name}@${result.model.version}`)
    if (rep === 'png') return sendPng(reply, result)
    return toJson(result)
  })
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
  return reply
    .type(mediaType('png'))
    .header('x-query-confidence', r.queries.map((q) => round(q.confidence)).join(','))
    .header('x-mask-score', String(round(r.score)))
    .header('x-image-size', `${result.image.width}x${result.image.height}`)
    .send(r.png)
}

function toJson (result: SegmentResult): object {
  const ms = (v: number): number => Math.round(v * 100) / 100
  return {
    model: result.model,
    image: { width: result.image.width, height: result.image.height },
    results: result.results.map((r) => ({
      expression: r.expression,
      tokens: r.tokens,
      mask: { png: r.png.toString('base64') },
      score: round(r.score),
      bbox: r.bbox,
      area: r.area,
      queries: r.queries.map((q) => ({ confidence: round(q.confidence), attention: q.attention.map(round) })),
    })),
    timings_ms: {
      decode: ms(result.timings.decode),
      preprocess: ms(result.timings.preprocess),
      queue: ms(result.timings.queue),
      inference: ms(result.timings.inference),
      postprocess: ms(result.timings.postprocess),
      total: ms(result.timings.total),
    },
  }
}

const round = (v: number): number => Math.round(v * 1e6) / 1e6
