#!/bin/sh
# Can ONNX Runtime's CUDA execution provider load here? Run at build time by docker/Dockerfile.cuda
# (the build fails when it fails) and kept in the image as /usr/local/bin/check-cuda-libs.
#
#   check-cuda-libs DIR [SONAME...]
#
# DIR holds libonnxruntime_providers_cuda.so and libonnxruntime_providers_shared.so (next to
# onnxruntime-node's libonnxruntime.so.1, where ONNX Runtime looks for them). Fails when
#   - either provider library is missing,
#   - `ldd` reports a library it needs as "not found", other than libcuda.so.1: that one is the
#     NVIDIA driver's, which the NVIDIA Container Toolkit mounts when the container starts with a GPU,
#   - `ldd -r` reports an undefined symbol other than a driver API one (cu[A-Z]*, from libcuda.so.1)
#     or Provider_GetHost (from libonnxruntime_providers_shared.so, which ONNX Runtime loads first),
#   - a SONAME given after DIR is not in the dynamic linker's cache (ldconfig -p): the libraries the
#     provider opens itself at run time, not listed by ldd (cuDNN: libcudnn.so.9).
# Prints one summary line per library, then OK or the problems.
set -eu
dir=${1:?usage: check-cuda-libs DIR [SONAME...]}
shift
problems=''
for name in libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so; do
  lib=$dir/$name
  if [ ! -f "$lib" ]; then problems="$problems
  $name: not in $dir"; continue; fi
  deps=$(ldd "$lib" 2>&1) || { problems="$problems
  $name: ldd failed: $deps"; continue; }
  missing=$(printf '%s\n' "$deps" | awk '/not found/ { print $1 }' | grep -vx 'libcuda.so.1' || true)
  driver=$(printf '%s\n' "$deps" | awk '/not found/ { print $1 }' | grep -x 'libcuda.so.1' || true)
  undefined=''
  [ -z "$missing" ] && undefined=$(ldd -r "$lib" 2>&1 | sed -n 's/^undefined symbol: \([^ ,\t]*\).*/\1/p' | grep -v -e '^cu[A-Z]' -e '^Provider_GetHost$' || true)
  found=$(printf '%s\n' "$deps" | grep -c '=> /' || true)
  echo "check-cuda-libs: $name: $found libraries found$([ -n "$driver" ] && echo ', libcuda.so.1 left to the driver')$([ -n "$missing" ] && echo ", MISSING: $(echo $missing)")"
  for m in $missing; do problems="$problems
  $name needs $m: not found"; done
  for s in $undefined; do problems="$problems
  $name: undefined symbol $s"; done
done
for soname in "$@"; do
  if ldconfig -p | grep -q "^[[:space:]]*$soname "; then
    echo "check-cuda-libs: $soname (opened at run time): $(ldconfig -p | awk -v s="$soname" '$1 == s { print $NF; exit }')"
  else
    problems="$problems
  $soname (opened by the CUDA provider at run time): not in the linker cache (ldconfig -p)"
  fi
done
if [ -n "$problems" ]; then
  echo "check-cuda-libs: FAILED:$problems" >&2
  exit 1
fi
echo "check-cuda-libs: OK"
