/**
 * LRU cache of backbone features, keyed by the image's content: a second request on the same
 * image (another expression, another threshold) skips decoding, letterboxing and the backbone,
 * and runs only the head.
 *
 * Where it lives: in the main thread, with the features in SharedArrayBuffers, while the encoder
 * runs in the workers. Posting a shared buffer to a worker shares it (no copy), so
 * - any worker can serve a hit: the engine keeps balancing load freely, with no routing by hash
 *   that would queue a hot image behind a busy worker while another one idles;
 * - the size bound (FEATURE_CACHE_MB) is one exact global bound, not one per worker, and one
 *   image is never cached twice in two workers;
 * - a hit is known before the job is queued, so it also skips decode and letterbox (which run on
 *   the main side), and the hit/miss counters need no messages from the workers.
 * The encoder itself stays off the event loop, in the workers like every session.run; the cost
 * of a miss is one copy of the features into shared memory (their size per preset: BENCHMARKS.md,
 * "Design choices").
 *
 * The key is sha256 over the preprocessing parameters, the encoder's own sha256 and the uploaded
 * bytes (the segmenter passes their sha256, computed off the event loop): the same bytes always
 * decode to the same tensor under the same parameters.
 */
import { createHash } from 'node:crypto'
import type { Geometry } from '../image/preprocess.js'
import type { ImageFeatures } from './protocol.js'

export interface CachedImage {
  features: ImageFeatures
  geometry: Geometry
  format: string
}

export interface FeatureCacheStats {
  hits: number
  misses: number
  evictions: number
  entries: number
  bytes: number
  capacityBytes: number
}

export interface FeatureCache {
  readonly enabled: boolean
  /** The content key of an upload (call only when enabled). */
  key: (image: Buffer) => string
  /** Counts a hit or a miss. */
  get: (key: string) => CachedImage | undefined
  set: (key: string, value: CachedImage) => void
  stats: () => FeatureCacheStats
  clear: () => void
}

/** Bytes one entry is charged: its features plus a small fixed overhead. */
export const entryBytes = (v: CachedImage): number => v.features.data.byteLength + 512

/**
 * @param capacityBytes 0 disables the cache
 * @param salt what else the features depend on (preprocessing parameters, encoder identity)
 */
export function createFeatureCache (capacityBytes: number, salt: string): FeatureCache {
  const map = new Map<string, { value: CachedImage, bytes: number }>()
  let bytes = 0
  let hits = 0
  let misses = 0
  let evictions = 0
  const enabled = capacityBytes > 0
  const prefix = createHash('sha256').update(salt).digest()

  return {
    enabled,
    key: (image) => createHash('sha256').update(prefix).update(image).digest('hex'),
    get (key) {
      const e = map.get(key)
      if (e === undefined) { misses++; return undefined }
      hits++
      map.delete(key)
      map.set(key, e) // most recently used last
      return e.value
    },
    set (key, value) {
      if (!enabled) return
      const size = entryBytes(value)
      if (size > capacityBytes) return
      const old = map.get(key)
      if (old !== undefined) { map.delete(key); bytes -= old.bytes }
      while (bytes + size > capacityBytes) {
        const [oldestKey, oldest] = map.entries().next().value!
        map.delete(oldestKey)
        bytes -= oldest.bytes
        evictions++
      }
      map.set(key, { value, bytes: size })
      bytes += size
    },
    stats: () => ({ hits, misses, evictions, entries: map.size, bytes, capacityBytes }),
    clear () { map.clear(); bytes = 0 },
  }
}
