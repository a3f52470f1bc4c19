/**
 * The body's two clocks while it arrives: no byte for `idleMs` (a stalled client), or the
 * request's deadline passing before the last byte (a trickling one). Either ends the read with
 * 408 SEG_ERR_REQUEST_TIMEOUT; the route then answers with `Connection: close`, which drops the
 * rest of the body. Once the body is complete, the deadline is the rest of the pipeline's to
 * keep (504).
 *
 * Bytes are seen as 'data' events of the request, listened to only once the multipart parser is
 * piped in (earlier, a listener would consume them). While the parser holds the stream paused
 * (backpressure) the silence is ours, not the client's, and is not counted.
 */
import type { FastifyRequest } from 'fastify'
import { ERR_REQUEST_TIMEOUT } from '../errors.js'

export interface BodyClock {
  /** Epoch ms: the request's deadline. */
  deadline: number
  /** The whole time budget, for the message. */
  timeoutMs: number
  idleMs: number
}

/** Runs `read` (given a callback to call once the body is being read) under the body's clocks. */
export async function watchBody<T> (request: FastifyRequest, clock: BodyClock, read: (onReading: () => void) => Promise<T>): Promise<T> {
  const raw = request.raw
  return await new Promise<T>((resolve, reject) => {
    let done = false
    let last = Date.now()
    let idleTimer: NodeJS.Timeout | undefined
    const touch = (): void => { last = Date.now() }
    const finish = (): void => {
      done = true
      clearTimeout(idleTimer)
      clearTimeout(deadlineTimer)
      raw.off('data', touch)
    }
    const fail = (message: string): void => {
      if (done) return
      finish()
      reject(ERR_REQUEST_TIMEOUT(message))
    }
    const checkIdle = (): void => {
      if (done || raw.complete) return
      const paused = raw.readableFlowing !== true || raw.readableLength >= raw.readableHighWaterMark
      if (paused) touch()
      else if (Date.now() - last >= clock.idleMs) { fail(`No byte of the request body arrived for ${clock.idleMs} ms`); return }
      idleTimer = setTimeout(checkIdle, Math.max(10, clock.idleMs - (Date.now() - last)))
    }
    const deadlineTimer = setTimeout(() => {
      if (!raw.complete) fail(`The request body did not arrive within ${clock.timeoutMs} ms`)
    }, Math.max(0, clock.deadline - Date.now()))
    const onReading = (): void => {
      raw.on('data', touch)
      touch()
      idleTimer = setTimeout(checkIdle, clock.idleMs)
    }
    read(onReading).then((v) => { finish(); resolve(v) }, (err) => { finish(); reject(err) })
  })
}
