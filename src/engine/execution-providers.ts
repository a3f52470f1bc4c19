/**
 * The execution providers of an ONNX Runtime session, from the config, and a one-line account of
 * why a GPU provider did not load.
 *
 * onnxruntime-node 1.30 passes one option to the CUDA and TensorRT providers: the device id. The
 * CUDA provider's other options (gpu_mem_limit, arena_extend_strategy, cudnn_conv_algo_search,
 * IO binding to device memory) are not reachable from JavaScript; they keep ONNX Runtime's
 * defaults (README, "GPU").
 *
 * When a provider library fails to load, ONNX Runtime's JavaScript error says only "Failed to load
 * shared library" (the reason goes to its own stderr log). The dynamic linker's message names the
 * library that is missing, so the library is opened once more here to get it.
 */
import { existsSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'

export type SessionProvider = string | { name: 'cuda' | 'tensorrt', deviceId: number }

/** `providers` in preference order → the session option `executionProviders`. */
export function sessionProviders (providers: readonly string[], cudaDeviceId: number): SessionProvider[] {
  return providers.map((p) => p === 'cuda' || p === 'tensorrt' ? { name: p, deviceId: cudaDeviceId } : p)
}

/** Where ONNX Runtime looks for provider libraries: beside onnxruntime-node's libonnxruntime. */
export function providerLibraryDir (): string {
  const pkg = path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'))
  return path.join(pkg, 'bin', 'napi-v6', process.platform, process.arch)
}

/** A driver library that only a GPU container gets (mounted by the NVIDIA Container Toolkit). */
const DRIVER_HINT = 'the NVIDIA driver\'s library, there only when the container is given a GPU: Docker --gpus all with the NVIDIA Container Toolkit, Kubernetes an nvidia.com/gpu limit'

/**
 * One line that says why `provider` did not load: the provider library is absent, or the library
 * the dynamic linker could not find, or else ONNX Runtime's own message (`ortMessage`: a driver
 * or device error once the libraries load).
 */
export function explainProviderFailure (provider: string, ortMessage: string, dir: string = providerLibraryDir()): string {
  const first = conciseOrtMessage(ortMessage)
  if (provider !== 'cuda' && provider !== 'tensorrt') return first
  // The libraries loaded and the CUDA runtime answered with an error: that error is the cause.
  if (/CUDA failure \d+:/.test(first)) return first
  const file = `libonnxruntime_providers_${provider}.so`
  const lib = path.join(dir, file)
  if (process.platform !== 'linux') return first
  const shared = path.join(dir, 'libonnxruntime_providers_shared.so')
  const absent = [lib, shared].find((f) => !existsSync(f))
  if (absent !== undefined) {
    const from = provider === 'cuda' ? '; docker/Dockerfile.cuda adds it from the onnxruntime-gpu wheel of the same version' : ''
    return `${path.basename(absent)} is not installed in ${dir} (onnxruntime-node ships without provider libraries${from})`
  }
  const reason = dlopenError(shared) ?? dlopenError(lib)
  if (reason === undefined) return first
  const missing = /^([^:\s]+\.so[.\d]*): cannot open shared object file/m.exec(reason)?.[1]
  if (missing !== undefined) {
    return `${file} cannot load: ${missing} not found (${missing === 'libcuda.so.1' ? DRIVER_HINT : 'a CUDA 13 library: see docker/Dockerfile.cuda'})`
  }
  return `${file} cannot load: ${reason.split('\n')[0]}`
}

/** The dynamic linker's error for `file`, or undefined when it loads. */
function dlopenError (file: string): string | undefined {
  try {
    // RTLD_LAZY: as far as loading goes, ONNX Runtime's own dlopen; functions bind on first call.
    process.dlopen({ exports: {} }, file, os.constants.dlopen.RTLD_LAZY)
    return undefined
  } catch (err) {
    const message = (err as Error).message
    // Loaded, but not a Node.js addon (which it is not meant to be): the libraries are all there.
    if (/did not self-register|Module did not|napi_register_module/i.test(message)) return undefined
    return message.replace(/^Error:\s*/, '')
  }
}

/** CUDA runtime errors whose cause is the host, not the image. */
const CUDA_HINTS: Record<string, string> = {
  35: 'the NVIDIA driver is older than CUDA 13 needs: R580 (580.65.06) or newer',
  100: 'no CUDA-capable GPU is visible to this process',
}

/**
 * ONNX Runtime's message without its source locations and C++ signatures: a CUDA runtime error as
 * `CUDA failure N: text (call)`, anything else as its first line with the `/onnxruntime_src/…]`
 * prefixes removed.
 */
export function conciseOrtMessage (message: string): string {
  const cuda = /CUDA failure (\d+): ([^;]*?)\s*;(?:.*?expr=([^;]*?);)?/s.exec(message)
  if (cuda !== null) {
    const hint = CUDA_HINTS[cuda[1]]
    return `CUDA failure ${cuda[1]}: ${cuda[2].trim()}${cuda[3] !== undefined ? ` (${cuda[3].trim()})` : ''}${hint !== undefined ? `: ${hint}` : ''}`
  }
  return message.split('\n')[0].replace(/(?:\/onnxruntime_src\/\S+:\d+ [^\]]*\]\s*)+/g, '').trim()
}
