/**
 * Admission control by memory: the requests' share of the memory the service may use, handed out
 * in leases.
 *
 *   capacity = limit (memory-limit.ts) − reserve (the model, the workers, the runtime)
 *
 * A request takes a lease for what it will hold (its upload, then its decode and output
 * estimate) before it holds it. A lease is granted only while the leases in use plus the new
 * one fit in the capacity:
 * - `tryAcquire` grants at once or refuses (the upload, before its body is read: 503);
 * - `acquire` waits in a bounded first-in first-out queue until it fits; it is refused at once
 *   when the queue is full (503), when it could never fit (413), and gives up at the request's
 *   deadline (504) or when the client leaves.
 * A lease is released when the memory it stands for is freed (the caller knows when), and the
 * waiters that then fit are granted in order; the head of the queue is never overtaken, so a
 * large request is not starved by small ones.
 *
 * Until the reserve is known (the workers are ready) the capacity is 0: nothing is admitted, and
 * nothing is asked for either, since /segment answers 503 before readiness.
 */
import { ERR_CLIENT_CLOSED, ERR_DEADLINE, ERR_MEMORY_BUSY, ERR_MEMORY_TOO_LARGE } from '../errors.js'
import type { MemoryLimit } from './memory-limit.js'

export interface Lease {
  readonly bytes: number
  /** Gives back all but `bytes` (when the holder learns it needs less); never grows. */
  shrink: (bytes: number) => void
  /** Idempotent. */
  release: () => void
}

export interface AcquireOptions {
  /** Epoch ms; the wait ends with 504 then. */
  deadline: number
  /** The request's whole time budget, for the 504 message. */
  timeoutMs?: number
  signal?: AbortSignal
  /** What the request holds already (its upload): a lease that could never fit beside it is refused at once. */
  held?: number
}

export type RefusalReason = 'busy' | 'queue_full' | 'too_large' | 'deadline' | 'client_closed'

export interface BudgetStats {
  limitBytes: number
  limitSource: MemoryLimit['source']
  reserveBytes: number
  capacityBytes: number
  inUseBytes: number
  leases: number
  waiting: number
  /** Largest sum of leases in use since start. */
  peakInUseBytes: number
  refusals: Record<RefusalReason, number>
}

export interface Budget {
  /** Sets what the model, the workers and the runtime hold (once they are ready). */
  setReserve: (bytes: number) => void
  tryAcquire: (bytes: number) => Lease | undefined
  acquire: (bytes: number, opts: AcquireOptions) => Promise<Lease>
  stats: () => BudgetStats
}

export interface BudgetOptions {
  limit: MemoryLimit
  /** Leases waiting at most (QUEUE_SIZE). */
  queueSize: number
  /** Known at once (MEMORY_RESERVE_MB); otherwise set with setReserve when the workers are ready. */
  reserveBytes?: number
}

interface Waiter {
  bytes: number
  grant: () => void
}

const MiB = 1024 * 1024

/**
 * What one engine worker's inference adds to the resident memory under saturation, beyond what it
 * holds once ready (ONNX Runtime's arenas at the largest batches, the thread's heap); measured for
 * the default model in RELIABILITY.md, "Memory budget".
 */
export const WORKER_WORKING_SET = 192 * MiB
/** Kept free in any case: garbage not yet collected, allocator slack, estimates that fall short. */
export const MARGIN_FRACTION = 0.1
export const MIN_MARGIN = 64 * MiB

/**
 * The reserve when it is measured: the resident memory once the workers are ready (the model,
 * the sessions, the runtime), each worker's inference working set, the feature cache at its
 * capacity, and a safety margin.
 */
export function measuredReserve (rssBytes: number, limitBytes: number, workers: number, cacheBytes = 0): number {
  return Math.round(rssBytes + workers * WORKER_WORKING_SET + cacheBytes + Math.max(MIN_MARGIN, MARGIN_FRACTION * limitBytes))
}

const mib = (bytes: number): string => `${Math.ceil(bytes / MiB)} MiB`

export function createBudget ({ limit, queueSize, reserveBytes }: BudgetOptions): Budget {
  let reserve = reserveBytes
  let inUse = 0
  let leases = 0
  let peak = 0
  const waiters: Waiter[] = []
  const refusals: Record<RefusalReason, number> = { busy: 0, queue_full: 0, too_large: 0, deadline: 0, client_closed: 0 }

  const capacity = (): number => reserve === undefined ? 0 : Math.max(0, limit.bytes - reserve)
  const fits = (bytes: number): boolean => inUse + bytes <= capacity()

  function lease (initial: number): Lease {
    let bytes = initial
    inUse += bytes
    leases++
    if (inUse > peak) peak = inUse
    let released = false
    return {
      get bytes () { return bytes },
      shrink (to) {
        if (released || !(to >= 0 && to < bytes)) return
        inUse -= bytes - to
        bytes = to
        grantWaiters()
      },
      release () {
        if (released) return
        released = true
        inUse -= bytes
        leases--
        grantWaiters()
      },
    }
  }

  function grantWaiters (): void {
    while (waiters.length > 0 && fits(waiters[0].bytes)) waiters.shift()!.grant()
  }

  function tooLarge (bytes: number): boolean {
    return reserve !== undefined && bytes > capacity()
  }

  function tryAcquire (bytes: number): Lease | undefined {
    if (!fits(bytes)) {
      refusals[tooLarge(bytes) ? 'too_large' : 'busy']++
      return undefined
    }
    return lease(bytes)
  }

  async function acquire (bytes: number, opts: AcquireOptions): Promise<Lease> {
    if (tooLarge(bytes + (opts.held ?? 0))) {
      refusals.too_large++
      throw ERR_MEMORY_TOO_LARGE(`This request needs about ${mib(bytes + (opts.held ?? 0))} of memory; the server can give one request at most ${mib(capacity())}`)
    }
    if (opts.signal?.aborted === true) {
      refusals.client_closed++
      throw ERR_CLIENT_CLOSED()
    }
    if (waiters.length === 0 && fits(bytes)) return lease(bytes)
    if (waiters.length >= queueSize) {
      refusals.queue_full++
      throw ERR_MEMORY_BUSY(`${waiters.length} requests are waiting for memory`)
    }
    const timeLeft = opts.deadline - Date.now()
    return await new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        bytes,
        grant: () => { cleanup(); resolve(lease(bytes)) },
      }
      const leave = (reason: RefusalReason, err: Error): void => {
        const i = waiters.indexOf(waiter)
        if (i < 0) return
        waiters.splice(i, 1)
        cleanup()
        refusals[reason]++
        reject(err)
        // The head may have left: those behind it may fit now.
        if (i === 0) grantWaiters()
      }
      const onAbort = (): void => leave('client_closed', ERR_CLIENT_CLOSED())
      const timer = setTimeout(() => leave('deadline', ERR_DEADLINE(Math.round(opts.timeoutMs ?? timeLeft))), Math.max(0, timeLeft))
      opts.signal?.addEventListener('abort', onAbort, { once: true })
      const cleanup = (): void => {
        clearTimeout(timer)
        opts.signal?.removeEventListener('abort', onAbort)
      }
      waiters.push(waiter)
    })
  }

  return {
    setReserve (bytes) {
      reserve = Math.max(0, bytes)
      grantWaiters()
    },
    tryAcquire,
    acquire,
    stats: () => ({
      limitBytes: limit.bytes,
      limitSource: limit.source,
      reserveBytes: reserve ?? 0,
      capacityBytes: capacity(),
      inUseBytes: inUse,
      leases,
      waiting: waiters.length,
      peakInUseBytes: peak,
      refusals: { ...refusals },
    }),
  }
}
