#!/usr/bin/env bash
# Container test of docker/Dockerfile.cuda on a machine without a GPU (and without NVIDIA's
# registry). Builds the CUDA image on a stand-in base, debian:trixie-slim, with the CUDA 13
# libraries from NVIDIA's wheels on PyPI (CUDA_LIBS=pypi: the versions of the Dockerfile's
# CUDA_PYPI_PACKAGES, cuDNN left out: it is opened only when a GPU runs a convolution), so the build's
# ldd check (docker/check-cuda-libs.sh) runs on the same provider libraries as the real image. Then:
#   1. check-cuda-libs in the built image: every library the provider needs is found, except the
#      driver's libcuda.so.1;
#   2. EXECUTION_PROVIDERS=cuda,cpu without a GPU: exactly one warning line names the CUDA failure
#      (libcuda.so.1 not found), the service falls back to CPU and says provider "cpu" on /readyz, on
#      /metrics and in a /segment answer; the GPU defaults hold (one worker);
#   2b. with a stand-in libcuda.so.1 compiled here (no working driver): the provider library loads
#      into onnxruntime-node's process and stops at the CUDA runtime's first call (exit 1 with
#      REQUIRE_GPU=true, "CUDA failure N" in the fatal line), which the ldd check alone cannot show;
#   3. the same with REQUIRE_GPU=true: the container exits non-zero within the time limit, and its
#      fatal log line says what is missing.
# What needs a GPU (the provider running the model) is bench/gpu-check.sh's part.
#
#   bash docker/test-cuda.sh        (part of npm run test:docker)
#
# Environment:
#   DOCKER_TEST_CUDA_IMAGE          image tag (default vlt-segmentation-service:cuda-standin)
#   DOCKER_TEST_CUDA_MAX_IMAGE_MB   image size limit (default 1600; 0 skips it)
#   DOCKER_TEST_CUDA_BASE           stand-in base (default debian:trixie-slim)
#   SHARED_DIR                      folder with tools/docker-setup.sh (as in docker/test.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${SHARED_DIR:-}" ]; then SHARED=$SHARED_DIR
elif [ -d "$ROOT/shared/tools" ]; then SHARED=$ROOT/shared
else SHARED=$(cd "$ROOT/.." && pwd)/shared
fi
IMAGE=${DOCKER_TEST_CUDA_IMAGE:-vlt-segmentation-service:cuda-standin}
MAX_IMAGE_MB=${DOCKER_TEST_CUDA_MAX_IMAGE_MB:-1600}
BASE=${DOCKER_TEST_CUDA_BASE:-debian:trixie-slim}
DOCKERFILE=$ROOT/docker/Dockerfile.cuda
PROVIDER_DIR=/app/node_modules/onnxruntime-node/bin/napi-v6/linux/x64
START=$(date +%s)
NAME=vlt-cuda-test-$$

log() { printf '[cuda-test %3ds] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }
command -v curl >/dev/null || fail "curl is needed"

# ---- engine and base images (as docker/test.sh) -------------------------------------------------
SETUP=$SHARED/tools/docker-setup.sh
NODE_IMAGE=$(awk 'toupper($1)=="ARG" && $2 ~ /^NODE_IMAGE=/ { sub(/^NODE_IMAGE=/, "", $2); print $2; exit }' "$DOCKERFILE")
if ! docker info >/dev/null 2>&1; then
  [ -f "$SETUP" ] || fail "no Docker engine, and no $SETUP to install one"
  log "installing/starting the Docker engine ($SETUP)"
  as_root nice -n 15 bash "$SETUP" >&2
fi
for img in "$NODE_IMAGE" "$BASE"; do
  if ! docker image inspect "$img" >/dev/null 2>&1 && ! timeout 120 docker pull -q "$img" >/dev/null 2>&1; then
    [ -f "$SETUP" ] || fail "cannot pull $img"
    log "no registry: building local stand-in base images ($SETUP)"
    as_root nice -n 15 bash "$SETUP" >&2
  fi
done

cleanup() {
  local rc=$?
  set +e
  docker rm -f "$NAME" >/dev/null 2>&1
  log "$([ "$rc" = 0 ] && echo PASS || echo FAIL) in $(( $(date +%s) - START ))s"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build on the stand-in base -----------------------------------------------------------------
# The Dockerfile's CUDA_PYPI_PACKAGES without cuDNN (one source of the versions).
PACKAGES=$(sed -n 's/^ARG CUDA_PYPI_PACKAGES="\(.*\)"$/\1/p' "$DOCKERFILE" | tr ' ' '\n' | grep -v '^nvidia-cudnn' | tr '\n' ' ')
[ -n "$PACKAGES" ] || fail "no ARG CUDA_PYPI_PACKAGES=\"...\" in $DOCKERFILE"
log "building $IMAGE on $BASE with $PACKAGES(docker/Dockerfile.cuda, CUDA_LIBS=pypi)"
T0=$(date +%s)
DOCKER_BUILDKIT=1 nice -n 15 docker build -f "$DOCKERFILE" \
  --build-arg CUDA_IMAGE="$BASE" --build-arg CUDA_LIBS=pypi \
  --build-arg CUDA_PYPI_PACKAGES="$PACKAGES" --build-arg RUNTIME_SONAMES= \
  -t "$IMAGE" "$ROOT" >&2 || fail "docker build (a failed check-cuda-libs step means a library the CUDA provider needs is missing)"
SIZE_MB=$(( $(docker image inspect -f '{{.Size}}' "$IMAGE") / 1000000 ))
log "built in $(( $(date +%s) - T0 ))s (cached layers count as done); image $IMAGE: ${SIZE_MB} MB"
if [ "$MAX_IMAGE_MB" != 0 ] && [ "$SIZE_MB" -gt "$MAX_IMAGE_MB" ]; then fail "image is ${SIZE_MB} MB > ${MAX_IMAGE_MB} MB"; fi

# ---- 1. the ldd check, in the image -------------------------------------------------------------
CHECK=$(docker run --rm --network none --entrypoint check-cuda-libs "$IMAGE" "$PROVIDER_DIR" 2>&1) || fail "check-cuda-libs in the image: $CHECK"
while IFS= read -r l; do log "$l"; done <<<"$CHECK"
grep -q 'libonnxruntime_providers_cuda.so: .*libcuda.so.1 left to the driver' <<<"$CHECK" || fail "check-cuda-libs did not examine the CUDA provider"
VERSIONS=$(docker run --rm --network none --entrypoint node -w /app "$IMAGE" -p \
  "require('fs').readFileSync('$PROVIDER_DIR/PROVIDERS_VERSION','utf8').trim() + ' / onnxruntime-node ' + require('onnxruntime-node/package.json').version")
log "provider libraries: $VERSIONS"
[ "$(awk '{print $2}' <<<"$VERSIONS")" = "$(awk '{print $NF}' <<<"$VERSIONS")" ] || fail "provider libraries and onnxruntime-node differ: $VERSIONS"

# ---- 2. no GPU, cuda,cpu: one clear line, CPU fallback, provider "cpu" everywhere ---------------
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 18081)
URL=http://127.0.0.1:$PORT
docker run -d --name "$NAME" -p "127.0.0.1:$PORT:8080" --read-only --tmpfs /tmp:size=64m \
  -e EXECUTION_PROVIDERS=cuda,cpu "$IMAGE" >/dev/null || fail "docker run"
ready=''
for _ in $(seq 1 180); do
  ready=$(curl -s --max-time 2 "$URL/readyz" || true)
  grep -q '"status":"ready"' <<<"$ready" && break
  [ "$(docker inspect -f '{{.State.Running}}' "$NAME")" = true ] || { docker logs "$NAME" 2>&1 | tail -20 >&2; fail "the container stopped"; }
  sleep 1
done
grep -q '"status":"ready"' <<<"$ready" || { docker logs "$NAME" 2>&1 | tail -20 >&2; fail "not ready after 180 s: $ready"; }
log "/readyz: $ready"
grep -q '"provider":"cpu"' <<<"$ready" || fail "/readyz does not say provider cpu"
grep -q '"configured":1' <<<"$ready" || fail "one worker expected (the GPU default with cuda listed first)"

LOGS=$(docker logs "$NAME" 2>&1)
WARN=$(grep '"GPU execution provider unavailable; running on CPU"' <<<"$LOGS" || true)
[ "$(grep -c . <<<"$WARN")" = 1 ] || fail "expected one fallback warning, got: ${WARN:-none}"
grep -q 'libonnxruntime_providers_cuda.so cannot load: libcuda.so.1 not found' <<<"$WARN" || fail "the warning does not name the missing driver library: $WARN"
log "fallback warning: $WARN"

# the image's model (its MODEL_PATH, under /app) is the repository's folder of that name, and the one served
MODEL_DIR=$ROOT/$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$NAME" | sed -n 's|^MODEL_PATH=/app/||p')
[ -f "$MODEL_DIR/model.json" ] || fail "the container's MODEL_PATH is no model folder of the repository ($MODEL_DIR)"
SERVED=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["name"] + "@" + m["version"])' "$MODEL_DIR/model.json")
grep -q "\"model\":\"$SERVED\"" <<<"$ready" || fail "/readyz does not serve $SERVED ($MODEL_DIR)"
EXPR=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["expression"])' "$MODEL_DIR/golden.json")
ANSWER=$(curl -sS --max-time 60 -H 'Accept: application/json' -F "image=@$MODEL_DIR/golden.png" -F "expression=$EXPR" "$URL/segment") || fail "POST /segment"
PROVIDER=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["model"]["provider"])' "$ANSWER" 2>/dev/null) || fail "POST /segment: $(head -c 300 <<<"$ANSWER")"
[ "$PROVIDER" = cpu ] || fail "POST /segment answered with provider $PROVIDER"
log "POST /segment: model.provider $PROVIDER"
# per-model labels (model, version) sit beside provider
# The whole body first: under pipefail, `curl | grep -q` fails when grep stops reading early.
METRICS=$(curl -sS "$URL/metrics")
grep -Eq '^vlt_execution_provider\{([^}]*,)?provider="cpu"(,[^}]*)?\} 1$' <<<"$METRICS" || fail "/metrics: no vlt_execution_provider{…provider=\"cpu\"…} 1"
docker rm -f "$NAME" >/dev/null

# ---- 2b. a stand-in driver: the provider loads into onnxruntime-node and reaches the CUDA runtime -
# libcuda.so.1 compiled here with the one driver function the provider library links to directly
# and no working driver: the provider library then loads into onnxruntime-node's process (provider
# bridge and symbols match) and fails at the first CUDA call, the runtime's driver check. Needs cc.
if command -v cc >/dev/null 2>&1; then
  STUB=$(mktemp -d)
  chmod 755 "$STUB"
  printf 'int cuTensorMapEncodeTiled(void) { return 999; }\n' >"$STUB/stub.c"
  cc -shared -fPIC -o "$STUB/libcuda.so.1" -Wl,-soname,libcuda.so.1 "$STUB/stub.c" || fail "cc: stand-in libcuda.so.1"
  chmod 644 "$STUB/libcuda.so.1"
  set +e
  OUT=$(timeout 120 docker run --rm --network none --read-only --tmpfs /tmp:size=64m -v "$STUB:/opt/stand-in-driver:ro" \
    -e LD_LIBRARY_PATH=/opt/stand-in-driver -e EXECUTION_PROVIDERS=cuda,cpu -e REQUIRE_GPU=true "$IMAGE" 2>&1)
  RC=$?
  set -e
  rm -rf "$STUB"
  FATAL=$(grep '^{"level":60,' <<<"$OUT" || true)
  [ "$RC" = 1 ] && grep -q 'REQUIRE_GPU is set: CUDA failure [0-9]*: ' <<<"$FATAL" \
    || fail "stand-in driver: expected exit 1 with a CUDA runtime error (the provider loaded), got exit $RC: $FATAL"
  log "stand-in libcuda.so.1: the provider loaded and stopped at the CUDA runtime: $(sed -n 's/.*REQUIRE_GPU is set: \(CUDA failure [^"]*\)".*/\1/p' <<<"$FATAL")"
else
  log "stand-in libcuda.so.1: skipped (no C compiler)"
fi

# ---- 3. REQUIRE_GPU=true: exit non-zero, saying what is missing ---------------------------------
T0=$(date +%s)
set +e
OUT=$(timeout 120 docker run --rm --name "$NAME" --read-only --tmpfs /tmp:size=64m \
  -e EXECUTION_PROVIDERS=cuda,cpu -e REQUIRE_GPU=true "$IMAGE" 2>&1)
RC=$?
set -e
[ "$RC" != 124 ] || fail "REQUIRE_GPU=true: still running after 120 s"
[ "$RC" != 0 ] || fail "REQUIRE_GPU=true without a GPU exited 0"
# pino writes the fatal line at once and may flush earlier lines after it: look for it, not at the end
FATAL=$(grep '^{"level":60,' <<<"$OUT" || true)
[ "$(grep -c . <<<"$FATAL")" = 1 ] && grep -q 'REQUIRE_GPU is set' <<<"$FATAL" && grep -q 'libcuda.so.1 not found' <<<"$FATAL" \
  || fail "REQUIRE_GPU=true: no one fatal line that says what is missing: $OUT"
log "REQUIRE_GPU=true: exit $RC after $(( $(date +%s) - T0 ))s; fatal line: $FATAL"
