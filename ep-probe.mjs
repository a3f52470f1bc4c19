import * as ort from 'onnxruntime-node'
try {
  const s = await ort.InferenceSession.create(process.argv[2], { executionProviders: [process.argv[3] ?? 'cuda', 'cpu'] })
  console.log('created', s.inputNames)
} catch (e) { console.log('ERR', JSON.stringify(e.message)) }
