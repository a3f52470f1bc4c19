#!/usr/bin/env bash
# Real container test of docker/: builds the CPU image, starts docker/compose.yaml, segments a
# RefShapes validation image through the published port, checks /readyz, /healthz and /metrics,
# stops the stack and checks the clean shutdown (exit code 0), then removes the stack.
#
#   bash docker/test.sh            (npm run test:docker)
#
# Environment:
#   DOCKER_TEST_MIN_IOU=0.5        IoU the mask must exceed against the ground truth; 0 skips it
#                                  (an untrained placeholder model)
#   DOCKER_TEST_MAX_IMAGE_MB=450   image size limit; 0 skips it
#   DOCKER_TEST_PORT               host port (default: a free one)
#   DOCKER_TEST_IMAGE              image tag (default vlt-segmentation-service:test)
#   DOCKER_TEST_KEEP_IMAGE=1       keep the image afterwards (default; 0 removes it)
#   SHARED_DIR                     folder with refshapes/ and tools/ (default: ../shared next
#                                  to the repository, or shared/ inside it)
# Needs bash, curl and a Docker engine with compose v2. Without an engine, it runs
# tools/docker-setup.sh from SHARED_DIR (as root) to install one.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${SHARED_DIR:-}" ]; then SHARED=$SHARED_DIR
elif [ -d "$ROOT/shared/refshapes" ]; then SHARED=$ROOT/shared
else SHARED=$(cd "$ROOT/.." && pwd)/shared
fi
MIN_IOU=${DOCKER_TEST_MIN_IOU:-0.5}
MAX_IMAGE_MB=${DOCKER_TEST_MAX_IMAGE_MB:-450}
IMAGE=${DOCKER_TEST_IMAGE:-vlt-segmentation-service:test}
PROJECT=vlt-docker-test-$$
SERVICE=segmentation
SAMPLE_DIR=$SHARED/refshapes/val
START=$(date +%s)

log() { printf '[docker-test %3ds] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

command -v curl >/dev/null || fail "curl is needed"
[ -f "$SAMPLE_DIR/annotations.jsonl" ] || fail "no RefShapes validation set at $SAMPLE_DIR (set SHARED_DIR)"

# ---- 1. engine ----------------------------------------------------------------------------------
SETUP=$SHARED/tools/docker-setup.sh
if ! docker info >/dev/null 2>&1 || ! docker compose version >/dev/null 2>&1; then
  [ -f "$SETUP" ] || fail "no Docker engine with compose v2, and no $SETUP to install one"
  log "installing/starting the Docker engine ($SETUP)"
  as_root nice -n 15 bash "$SETUP" >&2
fi
BASE=$(awk 'toupper($1)=="ARG" && $2 ~ /^NODE_IMAGE=/ { sub(/^NODE_IMAGE=/, "", $2); print $2; exit }' "$ROOT/docker/Dockerfile")
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  log "base image $BASE is missing: pulling it"
  if ! timeout 120 docker pull -q "$BASE" >/dev/null 2>&1; then
    [ -f "$SETUP" ] || fail "cannot pull $BASE"
    log "no registry: building local stand-in base images ($SETUP)"
    as_root nice -n 15 bash "$SETUP" >&2
  fi
fi

# ---- 2. stack, cleaned up whatever happens ------------------------------------------------------
if [ -z "${DOCKER_TEST_PORT:-}" ]; then
  DOCKER_TEST_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
    || node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})' 2>/dev/null \
    || echo 18080)
fi
export HOST_PORT=$DOCKER_TEST_PORT IMAGE
COMPOSE=(docker compose -f "$ROOT/docker/compose.yaml" -p "$PROJECT")
URL=http://127.0.0.1:$HOST_PORT
TMP=$(mktemp -d)
chmod 755 "$TMP"
OK=0

cleanup() {
  local rc=$?
  set +e
  if [ "$OK" != 1 ]; then
    log "failed (exit $rc): last logs of the stack"
    "${COMPOSE[@]}" ps -a >&2 2>/dev/null
    "${COMPOSE[@]}" logs --no-color --tail 80 >&2 2>/dev/null
  fi
  "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 15 >/dev/null 2>&1
  [ "${DOCKER_TEST_KEEP_IMAGE:-1}" = 0 ] && docker image rm "$IMAGE" >/dev/null 2>&1
  rm -rf "$TMP"
  log "$([ "$OK" = 1 ] && echo PASS || echo FAIL) in $(( $(date +%s) - START ))s"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 3. static checks, build --------------------------------------------------------------------
"${COMPOSE[@]}" config -q || fail "docker compose config"
log "building $IMAGE (docker/Dockerfile)"
nice -n 15 "${COMPOSE[@]}" build "$SERVICE" >&2 || fail "build"
SIZE_MB=$(( $(docker image inspect -f '{{.Size}}' "$IMAGE") / 1000000 ))
BASE_MB=$(( $(docker image inspect -f '{{.Size}}' "$BASE") / 1000000 ))
log "image $IMAGE: ${SIZE_MB} MB (base $BASE: ${BASE_MB} MB)"
if [ "$MAX_IMAGE_MB" != 0 ] && [ "$SIZE_MB" -gt "$MAX_IMAGE_MB" ]; then fail "image is ${SIZE_MB} MB > ${MAX_IMAGE_MB} MB"; fi
[ "$(docker image inspect -f '{{.Config.User}}' "$IMAGE")" != "" ] || fail "the image runs as root"

# ---- 4. up, healthy -----------------------------------------------------------------------------
log "docker compose up --wait (port $HOST_PORT)"
"${COMPOSE[@]}" up -d --wait --wait-timeout 240 "$SERVICE" >&2 || fail "the service did not become healthy"
CID=$("${COMPOSE[@]}" ps -q "$SERVICE")
[ -n "$CID" ] || fail "no container"
log "healthy: $(docker inspect -f '{{.State.Health.Status}} (user {{.Config.User}}, read-only {{.HostConfig.ReadonlyRootfs}}, init {{.Path}})' "$CID")"

# ---- 5. probes ----------------------------------------------------------------------------------
code=$(curl -sS -o "$TMP/readyz.json" -w '%{http_code}' "$URL/readyz") || fail "GET /readyz"
[ "$code" = 200 ] || fail "GET /readyz answered $code: $(cat "$TMP/readyz.json")"
log "/readyz 200 $(cat "$TMP/readyz.json")"
code=$(curl -sS -o /dev/null -w '%{http_code}' "$URL/healthz") || fail "GET /healthz"
[ "$code" = 200 ] || fail "GET /healthz answered $code"

# ---- 6. segment a RefShapes image ---------------------------------------------------------------
LINE=$(head -n 1 "$SAMPLE_DIR/annotations.jsonl")
field() { printf '%s' "$LINE" | sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p"; }
IMG=$SAMPLE_DIR/$(field image)
GT=$SAMPLE_DIR/$(field mask)
EXPR=$(field expression)
[ -f "$IMG" ] && [ -f "$GT" ] && [ -n "$EXPR" ] || fail "cannot read the first annotation of $SAMPLE_DIR"
cp "$GT" "$TMP/gt.png"
log "POST /segment $(basename "$IMG") \"$EXPR\""
code=$(curl -sS -o "$TMP/mask.png" -D "$TMP/headers.txt" -w '%{http_code}' --max-time 60 \
  -H 'Accept: image/png' -F "image=@$IMG;type=image/jpeg" -F "expression=$EXPR" "$URL/segment") || fail "POST /segment"
[ "$code" = 200 ] || fail "POST /segment answered $code: $(head -c 500 "$TMP/mask.png")"
grep -qi '^content-type: *image/png' "$TMP/headers.txt" || fail "POST /segment: not image/png: $(grep -i '^content-type' "$TMP/headers.txt")"
chmod 644 "$TMP"/*.png

# PNG header and IoU, decoded with the image's own sharp (no host dependencies).
CHECK_JS='
import sharp from "sharp"
import { readFileSync } from "node:fs"
const png = readFileSync("/data/mask.png")
const sig = png.subarray(0, 8).toString("hex")
if (sig !== "89504e470d0a1a0a" || png.toString("latin1", 12, 16) !== "IHDR") { console.log("not a PNG"); process.exit(1) }
const w = png.readUInt32BE(16), h = png.readUInt32BE(20), depth = png[24], colour = png[25]
if (w !== 256 || h !== 256 || depth !== 8 || colour !== 0) { console.log(`want 256x256 8-bit grey, got ${w}x${h} depth ${depth} colour type ${colour}`); process.exit(1) }
const grey = async (f) => (await sharp(f).extractChannel(0).raw().toBuffer({ resolveWithObject: true }))
const m = await grey("/data/mask.png"), g = await grey("/data/gt.png")
if (m.info.width !== g.info.width || m.info.height !== g.info.height) { console.log("mask and ground truth differ in size"); process.exit(1) }
let inter = 0, union = 0, fg = 0
for (let i = 0; i < m.data.length; i++) { const a = m.data[i] >= 128, b = g.data[i] >= 128; if (a) fg++; if (a && b) inter++; if (a || b) union++ }
const iou = union === 0 ? 1 : inter / union
console.log(`256x256 8-bit grey PNG, ${fg} foreground pixels, IoU ${iou.toFixed(4)}`)
const min = Number(process.env.MIN_IOU)
if (min > 0 && !(iou > min)) { console.log(`IoU ${iou.toFixed(4)} <= ${min}`); process.exit(1) }
'
RESULT=$(docker run --rm --network none --read-only -v "$TMP:/data:ro" -w /app --env "MIN_IOU=$MIN_IOU" \
  --entrypoint node "$IMAGE" --input-type=module -e "$CHECK_JS" 2>&1) \
  || fail "mask: $RESULT$(grep -qi '^x-model:.*untrained' "$TMP/headers.txt" && echo ' (the model is an untrained placeholder: DOCKER_TEST_MIN_IOU=0 skips the IoU check)')"
log "mask: $RESULT$([ "$MIN_IOU" = 0 ] && echo ' (IoU check skipped: DOCKER_TEST_MIN_IOU=0)' || echo " (> $MIN_IOU required)")"
log "headers: $(grep -i -E '^(x-model|x-mask-score|x-image-size):' "$TMP/headers.txt" | tr -d '\r' | tr '\n' ' ')"

# ---- 7. metrics ---------------------------------------------------------------------------------
curl -sS -o "$TMP/metrics.txt" "$URL/metrics" || fail "GET /metrics"
# default process metrics (the service prefixes them: vlt_process_resident_memory_bytes) and the
# service's own request counter, which has seen the /segment call
grep -Eq '^([a-z]+_)?process_resident_memory_bytes ' "$TMP/metrics.txt" || fail "/metrics lacks process_resident_memory_bytes"
grep -Eq '^vlt_[a-z_]+\{.*"/segment".*\} [1-9]' "$TMP/metrics.txt" || fail "/metrics counts no /segment request"
log "/metrics ok ($(grep -c '^[a-z]' "$TMP/metrics.txt") samples); container memory $(docker stats --no-stream --format '{{.MemUsage}}' "$CID")"

# ---- 8. clean shutdown --------------------------------------------------------------------------
log "docker compose stop"
T0=$(date +%s)
"${COMPOSE[@]}" stop "$SERVICE" >&2 || fail "docker compose stop"
EXIT_CODE=$(docker inspect -f '{{.State.ExitCode}}' "$CID")
OOM=$(docker inspect -f '{{.State.OOMKilled}}' "$CID")
[ "$EXIT_CODE" = 0 ] || fail "the container exited with $EXIT_CODE after SIGTERM (OOM killed: $OOM)"
docker logs "$CID" 2>&1 | grep -q '"shutting down"' || fail "no 'shutting down' log line after SIGTERM"
log "stopped in $(( $(date +%s) - T0 ))s, exit code 0"

OK=1
