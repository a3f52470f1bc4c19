/**
 * inferBatch on a split backend, without ONNX Runtime: the encoder runs once per distinct image
 * of a batch (jobs with the same key share it, cached features skip it), every token row reads
 * its own image's features, and features come back only to the jobs that asked.
 */
import t from 'tap'
import { letterboxGeometry } from '../../src/image/preprocess.js'
import type { RunJob } from '../../src/engine/protocol.js'
import { type Backend, type FeatureBatch, inferBatch, shareFeatures } from '../../src/engine/worker-core.js'

const S = 4
const L = 3
const init = { size: S, maxWords: L }
const plane = 3 * S * S

/** Features: map 0 = [mean of the image], map 1 = [first pixel, last pixel]. Head: logit = mean · 10 + first token id. */
function fakeSplit (): Backend & { encodes: number[], heads: number[] } {
  const encodes: number[] = []
  const heads: number[] = []
  return {
    provider: 'cpu',
    encodes,
    heads,
    async encode (image, batch) {
      encodes.push(batch)
      const m0 = new Float32Array(batch)
      const m1 = new Float32Array(batch * 2)
      for (let b = 0; b < batch; b++) {
        const img = image.subarray(b * plane, (b + 1) * plane)
        m0[b] = img.reduce((a, v) => a + v, 0) / plane
        m1[2 * b] = img[0]
        m1[2 * b + 1] = img[plane - 1]
      }
      return { maps: [m0, m1], shapes: [[1], [2]], batch }
    },
    async head (f: FeatureBatch, tokens) {
      heads.push(f.batch)
      const logits = new Float32Array(f.batch)
      for (let b = 0; b < f.batch; b++) logits[b] = f.maps[0][b] * 10 + Number(tokens[b * L]) + f.maps[1][2 * b + 1]
      return { mask_logits: logits, query_confidence: new Float32Array(f.batch), word_attention: new Float32Array(f.batch) }
    },
  }
}

const image = (v: number): Float32Array => new Float32Array(plane).fill(v)
const job = (id: number, img: Partial<RunJob>, ids: number[]): RunJob => ({ id, ...img, tokens: ids.map((i) => [i, 0, 0]), geometry: letterboxGeometry(S, S, S), threshold: 0.5 })

t.test('one encoder row per distinct image; rows read their own image; features only when asked', async (t) => {
  const be = fakeSplit()
  const cached = shareFeatures([Float32Array.from([0.3]), Float32Array.from([0.3, 0.15])], [[1], [2]])
  t.ok(cached.data.buffer instanceof SharedArrayBuffer)
  const jobs = [
    job(1, { image: image(0.1), key: 'a', wantFeatures: true }, [1, 2]),
    job(2, { features: cached, key: 'c' }, [3]),
    job(3, { image: image(0.1), key: 'a', wantFeatures: true }, [4]), // same image as job 1
    job(4, { image: image(0.2) }, [5, 6, 7]), // no key, no cache
  ]
  const { out, encoded, features } = await inferBatch(be, jobs, init)
  t.strictSame(be.encodes, [2], 'images a and the keyless one: one encoder run of 2 rows')
  t.equal(encoded, 2)
  t.strictSame(be.heads, [7], 'one head run over all 7 rows')
  const want = [0.1 * 10 + 1 + 0.1, 0.1 * 10 + 2 + 0.1, 0.3 * 10 + 3 + 0.15, 0.1 * 10 + 4 + 0.1, 0.2 * 10 + 5 + 0.2, 0.2 * 10 + 6 + 0.2, 0.2 * 10 + 7 + 0.2]
  Array.from(out.mask_logits).forEach((v, i) => t.ok(Math.abs(v - want[i]) < 1e-5, `row ${i}: ${v} ≈ ${want[i]}`))
  t.strictSame([...features.keys()].sort(), [0, 2], 'features for the jobs that asked')
  t.equal(features.get(0), features.get(2), 'the same image shares one copy')
  t.ok(features.get(0)!.data.buffer instanceof SharedArrayBuffer)
  t.strictSame(features.get(0)!.shapes, [[1], [2]])
  t.ok(Math.abs(features.get(0)!.data[0] - 0.1) < 1e-6)
})

t.test('a job of no rows only encodes; a batch of cached features only runs the head', async (t) => {
  const be = fakeSplit()
  const r = await inferBatch(be, [job(1, { image: image(0.4), wantFeatures: true }, [])], init)
  t.strictSame(be.encodes, [1])
  t.strictSame(be.heads, [], 'no head run for no rows')
  t.equal(r.out.mask_logits.length, 0)
  const f = r.features.get(0)!
  const again = await inferBatch(be, [job(2, { features: f }, [1, 2])], init)
  t.strictSame(be.encodes, [1], 'no second encoder run')
  t.strictSame(be.heads, [2])
  t.equal(again.encoded, 0)
  t.ok(Math.abs(again.out.mask_logits[1] - (0.4 * 10 + 2 + 0.4)) < 1e-5)
})

t.test('one row per new image: the head reads the encoder\'s own outputs (no copy); mixed batches still copy', async (t) => {
  const be = fakeSplit()
  let seen: Float32Array[] = []
  const encode = be.encode!
  const head = be.head!
  let made: Float32Array[] = []
  be.encode = async (image, batch) => { const f = await encode(image, batch); made = f.maps; return f }
  be.head = async (f, tokens) => { seen = f.maps; return await head(f, tokens) }
  const jobs = [job(1, { image: image(0.1), key: 'a', wantFeatures: true }, [1]), job(2, { image: image(0.2) }, [2]), job(3, { image: image(0.3), key: 'c' }, [3])]
  const { out, features } = await inferBatch(be, jobs, init)
  t.ok(seen.length === 2 && seen.every((m, i) => m === made[i]), 'the same arrays the encoder returned')
  const want = [0.1 * 10 + 1 + 0.1, 0.2 * 10 + 2 + 0.2, 0.3 * 10 + 3 + 0.3]
  Array.from(out.mask_logits).forEach((v, i) => t.ok(Math.abs(v - want[i]) < 1e-5, `row ${i}: ${v} ≈ ${want[i]}`))
  t.ok(Math.abs(features.get(0)!.data[0] - 0.1) < 1e-6, 'shared features still those of job 1')

  // the same image twice (one encoder row for two jobs): rows are built, not the encoder's arrays
  const dup = await inferBatch(be, [job(4, { image: image(0.5), key: 'd' }, [1]), job(5, { image: image(0.5), key: 'd' }, [2])], init)
  t.ok(seen.every((m, i) => m !== made[i]), 'copied into rows')
  t.equal(seen[0].length, 2)
  t.ok(Math.abs(dup.out.mask_logits[1] - (0.5 * 10 + 2 + 0.5)) < 1e-5)
})

t.test('a whole backend gets every row with its own copy of the image', async (t) => {
  let seen = 0
  const be: Backend = {
    provider: 'cpu',
    async run (feeds) {
      seen = feeds.batch
      t.equal(feeds.image.length, feeds.batch * plane)
      return { mask_logits: new Float32Array(feeds.batch), query_confidence: new Float32Array(feeds.batch), word_attention: new Float32Array(feeds.batch) }
    },
  }
  const r = await inferBatch(be, [job(1, { image: image(0.1) }, [1, 2]), job(2, { image: image(0.2) }, [3])], init)
  t.equal(seen, 3)
  t.equal(r.encoded, 0)
  await t.rejects(inferBatch(be, [job(3, { features: shareFeatures([new Float32Array(1)], [[1]]) }, [1])], init), /needs its image/)
})
