/**
 * The session's execution providers from the config, and the one-line reason when a GPU provider
 * library does not load (the container test, docker/test-cuda.sh, checks the missing-driver case
 * in the real CUDA image).
 */
import t from 'tap'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { conciseOrtMessage, explainProviderFailure, providerLibraryDir, sessionProviders } from '../../src/engine/execution-providers.js'

const ORT_MESSAGE = 'OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library\nmore'

t.test('cuda and tensorrt get the device id; the others stay names', async (t) => {
  t.strictSame(sessionProviders(['cuda', 'cpu'], 0), [{ name: 'cuda', deviceId: 0 }, 'cpu'])
  t.strictSame(sessionProviders(['tensorrt', 'cuda', 'cpu'], 2), [{ name: 'tensorrt', deviceId: 2 }, { name: 'cuda', deviceId: 2 }, 'cpu'])
  t.strictSame(sessionProviders(['webgpu', 'cpu'], 1), ['webgpu', 'cpu'])
})

t.test('provider libraries are looked for beside onnxruntime-node\'s libonnxruntime', async (t) => {
  const dir = providerLibraryDir()
  t.match(dir, /onnxruntime-node[/\\]bin[/\\]napi-v6[/\\]/)
  if (process.platform === 'linux') t.ok(existsSync(path.join(dir, 'libonnxruntime.so.1')), `${dir} holds libonnxruntime.so.1`)
})

t.test('a provider library that is not installed is named, with where it comes from', { skip: process.platform !== 'linux' && 'Linux only' }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vlt-ep-'))
  const cuda = explainProviderFailure('cuda', ORT_MESSAGE, dir)
  t.equal(cuda, `libonnxruntime_providers_cuda.so is not installed in ${dir} (onnxruntime-node ships without provider libraries; docker/Dockerfile.cuda adds it from the onnxruntime-gpu wheel of the same version)`)
  t.match(explainProviderFailure('tensorrt', ORT_MESSAGE, dir), /^libonnxruntime_providers_tensorrt\.so is not installed in .* \(onnxruntime-node ships without provider libraries\)$/)
  writeFileSync(path.join(dir, 'libonnxruntime_providers_cuda.so'), '')
  t.match(explainProviderFailure('cuda', ORT_MESSAGE, dir), /^libonnxruntime_providers_shared\.so is not installed in /, 'the pair is needed')
})

t.test('a provider library the linker rejects: the linker\'s message, on one line', { skip: process.platform !== 'linux' && 'Linux only' }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vlt-ep-'))
  writeFileSync(path.join(dir, 'libonnxruntime_providers_shared.so'), 'not an ELF file\n')
  writeFileSync(path.join(dir, 'libonnxruntime_providers_cuda.so'), 'not an ELF file\n')
  const why = explainProviderFailure('cuda', ORT_MESSAGE, dir)
  t.match(why, /^libonnxruntime_providers_cuda\.so cannot load: .*libonnxruntime_providers_shared\.so.*(invalid ELF header|file too short)/)
  t.notMatch(why, /\n/)
})

t.test('other providers: the first line of ONNX Runtime\'s message', async (t) => {
  t.equal(explainProviderFailure('webgpu', 'no adapter\nstack'), 'no adapter')
})

// The shape of ONNX Runtime 1.30's message for a failed CUDA runtime call (source locations and
// C++ signatures first, then the CUDA error and the call), as the CUDA image logs it.
const sig = 'std::conditional_t<THRW, void, onnxruntime::common::Status> onnxruntime::CudaCall(ERRTYPE, const char*, const char*, SUCCTYPE, const char*, const char*, int) [with ERRTYPE = cudaError; bool THRW = true; SUCCTYPE = cudaError; std::conditional_t<THRW, void, common::Status> = void]'
const cudaFailure = (code: number, text: string): string =>
  `/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:154 ${sig} /onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:146 ${sig} CUDA failure ${code}: ${text} ; GPU=-1 ; hostname=h ; file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_execution_provider.cc ; line=352 ; expr=cudaSetDevice(info_.device_id); `

t.test('a CUDA runtime error: the error, the call and what it means for the host, on one line', async (t) => {
  const old = conciseOrtMessage(cudaFailure(35, 'CUDA driver version is insufficient for CUDA runtime version'))
  t.equal(old, 'CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version (cudaSetDevice(info_.device_id)): the NVIDIA driver is older than CUDA 13 needs: R580 (580.65.06) or newer')
  t.match(conciseOrtMessage(cudaFailure(100, 'no CUDA-capable device is detected')), /^CUDA failure 100: no CUDA-capable device is detected \(cudaSetDevice\(info_\.device_id\)\): no CUDA-capable GPU is visible/)
  t.match(conciseOrtMessage(cudaFailure(2, 'out of memory')), /^CUDA failure 2: out of memory \(cudaSetDevice\(info_\.device_id\)\)$/)
  // the libraries loaded: no dlopen diagnosis, the CUDA error is the cause
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vlt-ep-'))
  t.equal(explainProviderFailure('cuda', cudaFailure(35, 'x'), dir), 'CUDA failure 35: x (cudaSetDevice(info_.device_id)): the NVIDIA driver is older than CUDA 13 needs: R580 (580.65.06) or newer')
})

t.test('other messages: the first line without ONNX Runtime\'s source locations', async (t) => {
  t.equal(conciseOrtMessage('/onnxruntime_src/onnxruntime/core/session/inference_session.cc:12 void f() [with T = int] something broke\nstack'), 'something broke')
  t.equal(conciseOrtMessage('OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library'), 'OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library')
})
