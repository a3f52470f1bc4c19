/**
 * Inference worker thread: one ONNX Runtime session per worker, so the blocking session.run
 * never runs on the event loop. The loop itself is in worker-core.ts.
 *
 * Execution providers are tried in the configured order. If a GPU provider cannot be loaded the
 * worker falls back to CPU with a warning, unless REQUIRE_GPU is set: then it fails (fatal).
 */
import * as ort from 'onnxruntime-node'
import type { WorkerInit } from './protocol.js'
import { type Backend, type BackendFactory, serveWorker } from './worker-core.js'

const createOrtBackend: BackendFactory = async (init: WorkerInit, log) => {
  const options = (providers: string[]): ort.InferenceSession.SessionOptions => ({
    executionProviders: providers,
    intraOpNumThreads: init.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
  })
  const gpu = init.executionProviders.filter((p) => p !== 'cpu')
  let session: ort.InferenceSession | undefined
  let provider = 'cpu'
  if (gpu.length > 0) {
    try {
      session = await ort.InferenceSession.create(init.modelFile, options([...gpu, 'cpu']))
      provider = gpu[0]
    } catch (err) {
      const reason = (err as Error).message.split('\n')[0]
      if (init.requireGpu) throw new Error(`execution provider ${gpu.join(',')} could not be loaded and REQUIRE_GPU is set: ${reason}`)
      if (!init.executionProviders.includes('cpu')) throw new Error(`execution provider ${gpu.join(',')} could not be loaded and cpu is not in EXECUTION_PROVIDERS: ${reason}`)
      log('warn', 'GPU execution provider unavailable; running on CPU', { requested: gpu, reason })
    }
  }
  session ??= await ort.InferenceSession.create(init.modelFile, options(['cpu']))

  for (const name of init.inputNames) {
    if (!session.inputNames.includes(name)) throw new Error(`model.onnx has inputs ${session.inputNames.join(', ')}; expected ${init.inputNames.join(', ')}`)
  }
  for (const name of init.outputNames) {
    if (!session.outputNames.includes(name)) throw new Error(`model.onnx has outputs ${session.outputNames.join(', ')}; expected ${init.outputNames.join(', ')}`)
  }
  const s = session
  const { size, maxWords } = init

  const backend: Backend = {
    provider,
    async run (feeds) {
      const result = await s.run({
        image: new ort.Tensor('float32', feeds.image, [feeds.batch, 3, size, size]),
        tokens: new ort.Tensor('int64', feeds.tokens, [feeds.batch, maxWords]),
      }, ['mask_logits', 'query_confidence', 'word_attention'])
      return {
        mask_logits: result.mask_logits.data as Float32Array,
        query_confidence: result.query_confidence.data as Float32Array,
        word_attention: result.word_attention.data as Float32Array,
      }
    },
  }
  return backend
}

void serveWorker(createOrtBackend)
