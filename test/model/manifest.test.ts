/**
 * model.json's graph layouts without any ONNX file: `onnx` alone, `split` alone (the graphs the
 * service loads), or both; neither, or names other than the engine's contract, refuse to parse.
 * The feature cache's salt follows the encoder.
 */
import t from 'tap'
import { featureSalt, parseManifest } from '../../src/model/manifest.js'
import { fakeModelJson } from '../fixtures/fake-model.js'

const FEATURES = ['fv0', 'fv1', 'fv2']
const split = (encoderSha = 'a'.repeat(64)) => ({
  image_encoder: { file: 'image_encoder.onnx', sha256: encoderSha, inputs: ['image'], outputs: FEATURES },
  head: { file: 'head.onnx', sha256: 'b'.repeat(64), inputs: [...FEATURES, 'tokens'], outputs: ['mask_logits', 'query_confidence', 'word_attention'] },
})
const withoutOnnx = (overrides: Record<string, unknown> = {}): Record<string, any> => {
  const { onnx: _onnx, ...rest } = fakeModelJson(overrides)
  return rest
}

t.test('onnx alone: model.onnx, no split', async (t) => {
  const m = parseManifest(fakeModelJson(), '/x')
  t.equal(m.onnx?.file, 'model.onnx')
  t.equal(m.split, undefined)
  t.equal(JSON.parse(featureSalt(m)).encoder, '0'.repeat(64), 'salted with model.onnx when it is the only graph')
})

t.test('split alone: no onnx needed; the salt is the encoder\'s sha256', async (t) => {
  const m = parseManifest(withoutOnnx({ split: split('c'.repeat(64)) }), '/x')
  t.equal(m.onnx, undefined)
  t.equal(m.split?.head.file, 'head.onnx')
  t.equal(JSON.parse(featureSalt(m)).encoder, 'c'.repeat(64))
})

t.test('both: the encoder\'s sha256 salts the cache, not model.onnx\'s', async (t) => {
  const m = parseManifest(fakeModelJson({ split: split('d'.repeat(64)) }), '/x')
  t.equal(m.onnx?.file, 'model.onnx')
  t.equal(JSON.parse(featureSalt(m)).encoder, 'd'.repeat(64))
})

t.test('EXPECTED FAILURE - neither onnx nor split', async (t) => {
  t.throws(() => parseManifest(withoutOnnx(), '/x'), { name: 'ManifestError', message: /missing onnx \(model.onnx\) and split/ })
})

t.test('EXPECTED FAILURE - half a split, or split names other than the contract', async (t) => {
  const s = split()
  t.throws(() => parseManifest(withoutOnnx({ split: { head: s.head } }), '/x'), /missing split.image_encoder/)
  t.throws(() => parseManifest(withoutOnnx({ split: { image_encoder: s.image_encoder } }), '/x'), /missing split.head/)
  t.throws(() => parseManifest(withoutOnnx({ split: { ...s, image_encoder: { ...s.image_encoder, inputs: ['pixels'] } } }), '/x'), /split.image_encoder.inputs lacks "image"/)
  t.throws(() => parseManifest(withoutOnnx({ split: { ...s, head: { ...s.head, inputs: ['fv0', 'fv1', 'tokens'] } } }), '/x'), /split.head.inputs lacks "fv2"/)
  t.throws(() => parseManifest(withoutOnnx({ split: { ...s, head: { ...s.head, outputs: ['mask_logits'] } } }), '/x'), /split.head.outputs lacks "query_confidence"/)
})
