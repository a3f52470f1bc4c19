/**
 * Retry-After for a full queue, from what the service is doing right now: the jobs ahead of a
 * new request (queued + in flight) divided by the measured throughput (requests completed per
 * second over a sliding window). Clamped to 1–60 s.
 */

export interface ThroughputMeter {
  /** One request finished inference. */
  record: (now?: number) => void
  /** Completions per second over the window, or undefined before anything completed in it. */
  rate: (now?: number) => number | undefined
}

export function throughputMeter (windowMs = 30_000, maxSamples = 10_000): ThroughputMeter {
  const stamps: number[] = []
  let head = 0
  const prune = (now: number): void => {
    while (head < stamps.length && stamps[head] < now - windowMs) head++
    if (head > 1024 && head * 2 > stamps.length) { stamps.splice(0, head); head = 0 }
  }
  return {
    record (now = performance.now()) {
      stamps.push(now)
      if (stamps.length - head > maxSamples) head++
      prune(now)
    },
    rate (now = performance.now()) {
      prune(now)
      const n = stamps.length - head
      if (n === 0) return undefined
      // Over the span since the oldest sample in the window (at least 1 s), so a stall lowers it.
      const span = Math.max(1000, now - stamps[head])
      return n / (span / 1000)
    },
  }
}

export const RETRY_AFTER_MAX_S = 60

/**
 * Seconds until the work ahead of a new request is done: `ahead / rate`. Without a measured
 * rate, one second per job ahead per worker is assumed.
 */
export function retryAfterSeconds (ahead: number, rate: number | undefined, workers: number): number {
  const perSecond = rate !== undefined && rate > 0 ? rate : Math.max(1, workers)
  const s = Math.ceil(Math.max(0, ahead) / perSecond)
  return Math.min(RETRY_AFTER_MAX_S, Math.max(1, s))
}
