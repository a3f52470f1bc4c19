/**
 * An engine worker thread: one ONNX Runtime session per worker, so the blocking session.run
 * never runs on the event loop. The loop itself is in worker-core.ts.
 *
 * With the split graphs (init.split) the worker loads image_encoder.onnx and head.onnx instead of
 * model.onnx, so a batch can run the backbone once per image (worker-core.ts).
 *
 * Execution providers are tried in the configured order (the cuda and tensorrt providers on
 * CUDA_DEVICE_ID). If a GPU provider cannot be loaded the worker falls back to CPU with a warning,
 * unless REQUIRE_GPU is set: then it fails (fatal). Either way the reason is one line
 * (execution-providers.ts).
 */
import os from 'node:os'
import * as ort from 'onnxruntime-node'
import { GRAPH_INPUTS, GRAPH_OUTPUTS, type WorkerInit } from './protocol.js'
import { explainProviderFailure, sessionProviders } from './execution-providers.js'
import { type Backend, type BackendFactory, type Outputs, serveWorker } from './worker-core.js'

/**
 * Niceness of this thread and of the intra-op threads ONNX Runtime starts from it (threads inherit
 * it when created): under saturation the event loop — /healthz, request parsing, answers — gets
 * the CPU first, and inference takes the rest. On Linux setpriority(0) applies to the calling
 * thread only; raising one's own niceness needs no privilege.
 */
const INFERENCE_NICENESS = 5

const createOrtBackend: BackendFactory = async (init: WorkerInit, log) => {
  try {
    os.setPriority(Math.min(19, os.getPriority() + INFERENCE_NICENESS))
  } catch {}
  const { session } = init
  const options = (providers: string[]): ort.InferenceSession.SessionOptions => ({
    executionProviders: sessionProviders(providers, session.cudaDeviceId) as ort.InferenceSession.ExecutionProviderConfig[],
    intraOpNumThreads: session.threadsPerWorker,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    ...(session.intraOpSpinning ? {} : { extra: { session: { intra_op: { allow_spinning: '0' } } } }),
  })
  const gpu = session.executionProviders.filter((p) => p !== 'cpu')
  if (init.split === undefined && init.modelFile === undefined) throw new Error('the model has neither model.onnx nor split graphs')
  const files = init.split !== undefined ? [init.split.encoderFile, init.split.headFile] : [init.modelFile as string]
  const open = async (providers: string[]): Promise<ort.InferenceSession[]> => {
    const sessions: ort.InferenceSession[] = []
    for (const f of files) sessions.push(await ort.InferenceSession.create(f, options(providers)))
    return sessions
  }
  let sessions: ort.InferenceSession[] | undefined
  let provider = 'cpu'
  if (gpu.length > 0) {
    try {
      sessions = await open([...gpu, 'cpu'])
      provider = gpu[0]
    } catch (err) {
      const reason = explainProviderFailure(gpu[0], (err as Error).message)
      if (session.requireGpu) throw new Error(`execution provider ${gpu.join(',')} could not be loaded and REQUIRE_GPU is set: ${reason}`)
      if (!session.executionProviders.includes('cpu')) throw new Error(`execution provider ${gpu.join(',')} could not be loaded and cpu is not in EXECUTION_PROVIDERS: ${reason}`)
      log('warn', 'GPU execution provider unavailable; running on CPU', { requested: gpu, reason })
    }
  }
  sessions ??= await open(['cpu'])
  const { size, maxWords } = init
  const expect = (s: ort.InferenceSession, file: string, inputs: readonly string[], outputs: readonly string[]): void => {
    const name = file.split('/').pop()
    for (const n of inputs) if (!s.inputNames.includes(n)) throw new Error(`${name} has inputs ${s.inputNames.join(', ')}; expected ${inputs.join(', ')}`)
    for (const n of outputs) if (!s.outputNames.includes(n)) throw new Error(`${name} has outputs ${s.outputNames.join(', ')}; expected ${outputs.join(', ')}`)
  }
  const outputs = (result: ort.InferenceSession.ReturnType): Outputs =>
    Object.fromEntries(GRAPH_OUTPUTS.map((n) => [n, result[n].data as Float32Array])) as Outputs

  if (init.split === undefined) {
    const s = sessions[0]
    expect(s, files[0], GRAPH_INPUTS, GRAPH_OUTPUTS)
    return {
      provider,
      async run (feeds) {
        return outputs(await s.run({
          image: new ort.Tensor('float32', feeds.image, [feeds.batch, 3, size, size]),
          tokens: new ort.Tensor('int64', feeds.tokens, [feeds.batch, maxWords]),
        }, [...GRAPH_OUTPUTS]))
      },
    }
  }

  const [enc, head] = sessions
  const names = init.split.featureNames
  expect(enc, init.split.encoderFile, ['image'], names)
  expect(head, init.split.headFile, [...names, 'tokens'], GRAPH_OUTPUTS)
  const backend: Backend = {
    provider,
    async encode (image, batch) {
      const r = await enc.run({ image: new ort.Tensor('float32', image, [batch, 3, size, size]) }, names)
      return { maps: names.map((n) => r[n].data as Float32Array), shapes: names.map((n) => r[n].dims.slice(1)), batch }
    },
    async head (features, tokens) {
      const feeds: Record<string, ort.Tensor> = { tokens: new ort.Tensor('int64', tokens, [features.batch, maxWords]) }
      names.forEach((n, i) => { feeds[n] = new ort.Tensor('float32', features.maps[i], [features.batch, ...features.shapes[i]]) })
      return outputs(await head.run(feeds, [...GRAPH_OUTPUTS]))
    },
  }
  return backend
}

void serveWorker(createOrtBackend)
