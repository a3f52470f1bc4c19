/** The feature cache on its own: content keys, the LRU order and the byte bound. */
import t from 'tap'
import { createFeatureCache, entryBytes } from '../../src/engine/feature-cache.js'
import { letterboxGeometry } from '../../src/image/preprocess.js'
import { FAKE_JOB_SIZE as S } from '../helper.js'

t.test('feature cache: LRU within its byte bound', async (t) => {
  const entry = (n: number) => ({ features: { data: new Float32Array(new SharedArrayBuffer(n * 4)), shapes: [[n]] }, geometry: letterboxGeometry(S, S, S), format: 'png' })
  const one = entryBytes(entry(1000))
  const cache = createFeatureCache(3 * one, 'salt')
  t.equal(cache.enabled, true)
  t.equal(cache.key(Buffer.from('a')), cache.key(Buffer.from('a')))
  t.not(cache.key(Buffer.from('a')), cache.key(Buffer.from('b')))
  t.not(createFeatureCache(1, 'other').key(Buffer.from('a')), cache.key(Buffer.from('a')), 'the salt (preprocessing, encoder) is part of the key')
  for (const k of ['a', 'b', 'c']) cache.set(k, entry(1000))
  t.ok(cache.get('a'), 'a is used again: b is now the oldest')
  cache.set('d', entry(1000))
  t.equal(cache.get('b'), undefined, 'b evicted')
  t.ok(cache.get('a'))
  t.ok(cache.get('c'))
  t.ok(cache.get('d'))
  t.match(cache.stats(), { entries: 3, bytes: 3 * one, evictions: 1, hits: 4, misses: 1, capacityBytes: 3 * one })
  cache.set('huge', entry(4000))
  t.equal(cache.get('huge'), undefined, 'an entry larger than the whole cache is not stored')
  t.equal(cache.stats().entries, 3)
  cache.set('e', entry(2000))
  t.ok(cache.stats().bytes <= 3 * one)
  t.equal(createFeatureCache(0, 'x').enabled, false)
})
