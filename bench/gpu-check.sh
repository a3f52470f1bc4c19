#!/usr/bin/env bash
# The GPU check: ONNX Runtime's CUDA execution provider through onnxruntime-node on this machine's
# NVIDIA GPU, with what is already here (no network). It
#   1. stops with exit code 3 when no NVIDIA GPU is visible (nvidia-smi),
#   2. finds the CUDA provider libraries of onnxruntime-node's version (libonnxruntime_providers_
#      cuda.so and _shared.so: $ORT_CUDA_PROVIDERS_DIR, onnxruntime-node's own folder, an installed
#      onnxruntime-gpu Python package, or a search under /usr /opt /root /home) and the CUDA 13
#      libraries they need (the linker cache, NVIDIA's Python wheels such as PyTorch's, /usr/local/cuda,
#      $CUDA_HOME), and prints where each came from; exit code 4 when something is missing,
#   3. exports the `paper` preset (untrained, bench/paper_model.py; needs PyTorch) unless
#      GPU_CHECK_PAPER_MODEL names a model folder already exported, or GPU_CHECK_PAPER_MODEL=skip,
#   4. runs bench/gpu-check.mjs on the shipped model and the paper preset: golden case on CUDA vs
#      CPU (max |Δ| <= 1e-3), batch-1 latency, batch-8/32 throughput, as a markdown table.
#
#   bash bench/gpu-check.sh              (from the repository root, after npm ci)
#   bash bench/gpu-check.sh --find       (steps 1 and 2 only: report what was found)
#
# Needs node >= 20 ($NODE or on PATH) and node_modules/onnxruntime-node (npm ci on a machine with
# network; onnxruntime-node and onnxruntime-common are all it uses here). Environment:
#   ORT_CUDA_PROVIDERS_DIR   folder with the two provider libraries
#   GPU_CHECK_SECONDS        timed seconds per row (default 5)
#   CUDA_DEVICE_ID           the GPU (default 0)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
NODE=${NODE:-node}
FIND_ONLY=0
[ "${1:-}" = --find ] && FIND_ONLY=1
say() { echo "gpu-check: $*" >&2; }

# ---- 1. a GPU --------------------------------------------------------------------------------
if ! command -v nvidia-smi >/dev/null 2>&1; then
  say "no NVIDIA GPU visible: nvidia-smi is not installed (no NVIDIA driver here). Nothing measured."
  exit 3
fi
if ! GPUS=$(nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>&1) || [ -z "$GPUS" ]; then
  say "no NVIDIA GPU visible: nvidia-smi says: $(echo "$GPUS" | head -1). Nothing measured."
  exit 3
fi
say "GPU: $(echo "$GPUS" | tr '\n' ';')"

# ---- 2. provider and CUDA libraries ----------------------------------------------------------
command -v "$NODE" >/dev/null || { say "node not found (set NODE)"; exit 4; }
ORT_DIR=node_modules/onnxruntime-node/bin/napi-v6/linux/x64
[ -f "$ORT_DIR/libonnxruntime.so.1" ] || { say "no $ORT_DIR/libonnxruntime.so.1: run npm ci first (or carry node_modules/onnxruntime-node and onnxruntime-common)"; exit 4; }
ORT_VERSION=$("$NODE" -p "require('./node_modules/onnxruntime-node/package.json').version")
say "onnxruntime-node $ORT_VERSION, node $("$NODE" --version)"

PY=$(command -v python3 || true)
PROVIDERS=''
PROVIDERS_FROM=''
candidates=()
[ -n "${ORT_CUDA_PROVIDERS_DIR:-}" ] && candidates+=("$ORT_CUDA_PROVIDERS_DIR|ORT_CUDA_PROVIDERS_DIR")
candidates+=("$ORT_DIR|onnxruntime-node's folder")
if [ -n "$PY" ]; then
  # an installed onnxruntime-gpu: its version from the package metadata, without importing it
  pyort=$("$PY" - <<'PY' 2>/dev/null || true
import importlib.util, importlib.metadata as md
spec = importlib.util.find_spec("onnxruntime")
if spec and spec.submodule_search_locations:
    try: v = md.version("onnxruntime-gpu")
    except md.PackageNotFoundError: v = "?"
    print(spec.submodule_search_locations[0] + "/capi|onnxruntime-gpu " + v + " (Python)")
PY
)
  [ -n "$pyort" ] && candidates+=("$pyort")
fi
for c in "${candidates[@]}"; do
  d=${c%%|*}
  if [ -f "$d/libonnxruntime_providers_cuda.so" ] && [ -f "$d/libonnxruntime_providers_shared.so" ]; then PROVIDERS=$d; PROVIDERS_FROM=${c#*|}; break; fi
done
if [ -z "$PROVIDERS" ]; then
  found=$(timeout 120 find /usr /opt /root /home -xdev -name libonnxruntime_providers_cuda.so 2>/dev/null | head -1 || true)
  if [ -n "$found" ] && [ -f "$(dirname "$found")/libonnxruntime_providers_shared.so" ]; then PROVIDERS=$(dirname "$found"); PROVIDERS_FROM="found on disk"; fi
fi
if [ -z "$PROVIDERS" ]; then
  say "MISSING: libonnxruntime_providers_cuda.so / _shared.so of ONNX Runtime $ORT_VERSION (looked in: ${candidates[*]%%|*} and under /usr /opt /root /home)."
  say "  They come with the onnxruntime-gpu==$ORT_VERSION wheel (pip install onnxruntime-gpu==$ORT_VERSION, or set ORT_CUDA_PROVIDERS_DIR)."
  exit 4
fi
say "provider libraries: $PROVIDERS ($PROVIDERS_FROM)"
case "$PROVIDERS_FROM" in
  onnxruntime-gpu\ "$ORT_VERSION"\ *|"onnxruntime-node's folder"|ORT_CUDA_PROVIDERS_DIR) ;;
  onnxruntime-gpu\ *) say "MISMATCH: $PROVIDERS_FROM, onnxruntime-node $ORT_VERSION: the provider must be of the same release"; exit 4 ;;
  *) say "warning: the version of $PROVIDERS is not known; it must be ONNX Runtime $ORT_VERSION" ;;
esac

# The CUDA libraries the provider needs (ldd) and cuDNN (opened at run time): each from the linker
# cache or the first folder that has it.
dirs=()
if [ -n "$PY" ]; then
  while IFS= read -r d; do dirs+=("$d"); done < <("$PY" - <<'PY' 2>/dev/null || true
import importlib.util, glob, os
spec = importlib.util.find_spec("nvidia")
for root in (spec.submodule_search_locations if spec else []):
    for d in sorted(glob.glob(os.path.join(root, "*", "lib"))): print(d)
PY
)
fi
# (/usr/local/nvidia: where GPU containers often get the driver's libcuda.so.1)
for d in "${CUDA_HOME:-/nonexistent}/lib64" /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu; do [ -d "$d" ] && dirs+=("$d"); done
LIBPATH=''
missing=''
for soname in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudnn.so.9 libcuda.so.1; do
  where=$(ldconfig -p 2>/dev/null | awk -v s="$soname" '$1 == s { print $NF; exit }')
  if [ -z "$where" ]; then
    for d in "${dirs[@]}"; do if [ -e "$d/$soname" ]; then where=$d/$soname; case ":$LIBPATH:" in *":$d:"*) ;; *) LIBPATH=$LIBPATH${LIBPATH:+:}$d ;; esac; break; fi; done
  fi
  if [ -n "$where" ]; then say "  $soname: $where"; else say "  $soname: MISSING"; missing="$missing $soname"; fi
done
if [ -n "$missing" ]; then
  say "MISSING CUDA libraries:$missing (CUDA 13 runtime, cuBLAS, cuRAND, cuDNN 9: e.g. the nvidia-* wheels of a CUDA 13 PyTorch, or CUDA_HOME)"
  exit 4
fi
export LD_LIBRARY_PATH=$LIBPATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ "$FIND_ONLY" = 1 ] && { say "found everything (--find: nothing run)"; exit 0; }

# ---- 3. onnxruntime-node with the provider beside it, in a scratch folder --------------------
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/node_modules/onnxruntime-node" "$WORK/$ORT_DIR"
cp -r node_modules/onnxruntime-common "$WORK/node_modules/"
cp -r node_modules/onnxruntime-node/package.json node_modules/onnxruntime-node/dist "$WORK/node_modules/onnxruntime-node/"
cp "$ORT_DIR/libonnxruntime.so.1" "$ORT_DIR/onnxruntime_binding.node" "$WORK/$ORT_DIR/"
P=$(cd "$PROVIDERS" && pwd)
ln -s "$P/libonnxruntime_providers_cuda.so" "$P/libonnxruntime_providers_shared.so" "$WORK/$ORT_DIR/"
cp bench/gpu-check.mjs "$WORK/"

MODELS=(--model "$ROOT/models/vlt-refshapes")
PAPER=${GPU_CHECK_PAPER_MODEL:-}
if [ "$PAPER" = skip ]; then say "paper preset: skipped (GPU_CHECK_PAPER_MODEL=skip)"
elif [ -n "$PAPER" ]; then MODELS+=(--model "$PAPER")
elif [ -n "$PY" ] && "$PY" -c 'import torch, onnx' 2>/dev/null; then
  say "exporting the paper preset (untrained; bench/paper_model.py)"
  "$PY" -m bench.paper_model --out "$WORK/paper" >&2
  MODELS+=(--model "$WORK/paper")
else say "paper preset: skipped (no PyTorch + onnx here to export it; or set GPU_CHECK_PAPER_MODEL)"
fi

# ---- 4. measure ------------------------------------------------------------------------------
say "running bench/gpu-check.mjs (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
(cd "$WORK" && "$NODE" gpu-check.mjs "${MODELS[@]}" --device "${CUDA_DEVICE_ID:-0}" --seconds "${GPU_CHECK_SECONDS:-5}")
