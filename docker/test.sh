#!/usr/bin/env bash
# Real container test of docker/: builds the CPU image, starts docker/compose.yaml, segments a
# RefShapes validation image through the published port, checks /readyz, /healthz and /metrics,
# stops the stack and checks the clean shutdown (exit code 0), then removes the stack.
#
#   bash docker/test.sh            (npm run test:docker)
#
# Environment:
#   DOCKER_TEST_MIN_IOU=0.3        mean IoU over the first validation expressions must exceed it; 0 skips it
#   DOCKER_TEST_VAL_EXPRESSIONS=20 how many validation expressions to send
#                                  (an untrained placeholder model)
#   DOCKER_TEST_MAX_IMAGE_MB=450   image size limit; 0 skips it
#   DOCKER_TEST_PORT               host port (default: a free one)
#   DOCKER_TEST_IMAGE              image tag (default vlt-segmentation-service:test)
#   DOCKER_TEST_KEEP_IMAGE=1       keep the image afterwards (default; 0 removes it)
#   DOCKER_TEST_BURST=16           maximum-size uploads sent at once under the memory limit (7b); 0 skips it
#   SHARED_DIR                     folder with refshapes/ and tools/ (default: ../shared next
#                                  to the repository, or shared/ inside it)
# Needs bash, curl, node (for the burst of 7b) and a Docker engine with compose v2. Without an engine, it runs
# tools/docker-setup.sh from SHARED_DIR (as root) to install one.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${SHARED_DIR:-}" ]; then SHARED=$SHARED_DIR
elif [ -d "$ROOT/shared/refshapes" ]; then SHARED=$ROOT/shared
else SHARED=$(cd "$ROOT/.." && pwd)/shared
fi
MIN_IOU=${DOCKER_TEST_MIN_IOU:-0.3}
N_VAL=${DOCKER_TEST_VAL_EXPRESSIONS:-20}
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
# the image's model (its MODEL_PATH, under /app) is the repository's folder of that name, and the one served
MODEL_DIR=$ROOT/$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$CID" | sed -n 's|^MODEL_PATH=/app/||p')
[ -f "$MODEL_DIR/model.json" ] || fail "the container's MODEL_PATH is no model folder of the repository ($MODEL_DIR)"
SERVED=$(node -e 'const m = JSON.parse(require("fs").readFileSync(process.argv[1])); console.log(`${m.name}@${m.version}`)' "$MODEL_DIR/model.json")
grep -q "\"model\":\"$SERVED\"" "$TMP/readyz.json" || fail "/readyz does not serve $SERVED ($MODEL_DIR)"
code=$(curl -sS -o /dev/null -w '%{http_code}' "$URL/healthz") || fail "GET /healthz"
[ "$code" = 200 ] || fail "GET /healthz answered $code"

# ---- 6. segment: the golden case exactly, then RefShapes validation images --------------------
# (a) The model folder's golden case: the container's mask must equal the Python evaluator's mask
#     for the same image and sentence (golden_mask.png) up to 1 % of the pixels — the tolerance of
#     the tap suite's golden test, since sharp's resize differs from Pillow's by rounding.
# (b) The first $N_VAL validation expressions: the mean IoU against the ground truth must exceed
#     $MIN_IOU — far below the model cards' val mIoU (about 80) so that ordinary variation over a few
#     expressions passes, while a broken pipeline (empty, shifted or full masks) fails.
GOLDEN_EXPR=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).expression)' "$MODEL_DIR/golden.json")
post() { # image expression out.png -> fails unless 200 image/png
  local code
  code=$(curl -sS -o "$3" -D "$3.headers" -w '%{http_code}' --max-time 60 \
    -H 'Accept: image/png' -F "image=@$1" -F "expression=$2" "$URL/segment") || fail "POST /segment"
  [ "$code" = 200 ] || fail "POST /segment answered $code: $(head -c 500 "$3")"
  grep -qi '^content-type: *image/png' "$3.headers" || fail "POST /segment: not image/png"
}
log "POST /segment golden.png \"$GOLDEN_EXPR\""
post "$MODEL_DIR/golden.png" "$GOLDEN_EXPR" "$TMP/golden-pred.png"
cp "$MODEL_DIR/golden_mask.png" "$TMP/golden-ref.png"
: >"$TMP/pairs.txt"
echo "golden-pred.png golden-ref.png golden" >>"$TMP/pairs.txt"
i=0
while IFS= read -r LINE && [ "$i" -lt "$N_VAL" ]; do
  field() { printf '%s' "$LINE" | sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p"; }
  IMG=$SAMPLE_DIR/$(field image); GT=$SAMPLE_DIR/$(field mask); EXPR=$(field expression)
  [ -f "$IMG" ] && [ -f "$GT" ] && [ -n "$EXPR" ] || fail "cannot read annotation $i of $SAMPLE_DIR"
  post "$IMG" "$EXPR" "$TMP/val-$i-pred.png"
  cp "$GT" "$TMP/val-$i-gt.png"
  echo "val-$i-pred.png val-$i-gt.png val" >>"$TMP/pairs.txt"
  i=$((i + 1))
done <"$SAMPLE_DIR/annotations.jsonl"
cp "$TMP/golden-pred.png.headers" "$TMP/headers.txt"
chmod 644 "$TMP"/*

# PNG headers and IoUs, decoded with the image's own sharp (no host dependencies).
CHECK_JS='
import sharp from "sharp"
import { readFileSync } from "node:fs"
const grey = async (f) => (await sharp(f).extractChannel(0).raw().toBuffer({ resolveWithObject: true }))
const pairs = readFileSync("/data/pairs.txt", "utf8").trim().split("\n").map((l) => l.split(" "))
let golden = null; const val = []
for (const [pred, ref, kind] of pairs) {
  const png = readFileSync("/data/" + pred)
  if (png.subarray(0, 8).toString("hex") !== "89504e470d0a1a0a" || png.toString("latin1", 12, 16) !== "IHDR") { console.log(`${pred}: not a PNG`); process.exit(1) }
  const depth = png[24], colour = png[25]
  if (depth !== 8 || colour !== 0) { console.log(`${pred}: want 8-bit grey, got depth ${depth} colour type ${colour}`); process.exit(1) }
  const m = await grey("/data/" + pred), g = await grey("/data/" + ref)
  if (m.info.width !== g.info.width || m.info.height !== g.info.height) { console.log(`${pred}: ${m.info.width}x${m.info.height}, reference ${g.info.width}x${g.info.height}`); process.exit(1) }
  let inter = 0, union = 0, diff = 0
  for (let i = 0; i < m.data.length; i++) { const a = m.data[i] >= 128, b = g.data[i] >= 128; if (a && b) inter++; if (a || b) union++; if (a !== b) diff++ }
  const iou = union === 0 ? 1 : inter / union
  if (kind === "golden") golden = { iou, diff, frac: diff / m.data.length }; else val.push(iou)
}
const mean = val.reduce((a, b) => a + b, 0) / Math.max(1, val.length)
console.log(`golden: ${golden.diff} pixels differ from the Python mask (${(100 * golden.frac).toFixed(3)} %, <= 1 % required; IoU ${golden.iou.toFixed(4)}); ${val.length} val masks at image size, mean IoU ${mean.toFixed(4)}`)
if (!(golden.frac <= 0.01)) process.exit(1)
const min = Number(process.env.MIN_IOU)
if (min > 0 && !(mean > min)) { console.log(`mean IoU ${mean.toFixed(4)} <= ${min}`); process.exit(1) }
'
RESULT=$(docker run --rm --network none --read-only -v "$TMP:/data:ro" -w /app --env "MIN_IOU=$MIN_IOU" \
  --entrypoint node "$IMAGE" --input-type=module -e "$CHECK_JS" 2>&1) || fail "masks: $RESULT"
log "masks: $RESULT$([ "$MIN_IOU" = 0 ] && echo ' (val IoU check skipped: DOCKER_TEST_MIN_IOU=0)' || echo " (val mean > $MIN_IOU required)")"
log "headers: $(grep -i -E '^(x-model|x-mask-score|x-image-size):' "$TMP/headers.txt" | tr -d '\r' | tr '\n' ' ')"

# ---- 7. metrics ---------------------------------------------------------------------------------
curl -sS -o "$TMP/metrics.txt" "$URL/metrics" || fail "GET /metrics"
# the default process metrics under their standard names, and the service's own request counter,
# which has seen the /segment call
grep -Eq '^process_resident_memory_bytes ' "$TMP/metrics.txt" || fail "/metrics lacks process_resident_memory_bytes"
grep -Eq '^vlt_[a-z_]+\{.*"/segment".*\} [1-9]' "$TMP/metrics.txt" || fail "/metrics counts no /segment request"
log "/metrics ok ($(grep -c '^[a-z]' "$TMP/metrics.txt") samples); container memory $(docker stats --no-stream --format '{{.MemUsage}}' "$CID")"

# ---- 7b. memory under load ----------------------------------------------------------------------
# DOCKER_TEST_BURST maximum-size uploads of four kinds at once (bench/large-images.mjs, made with
# the image's own sharp), sent by bench/burst.mjs while /healthz is asked every 100 ms. Passes when
# every answer is 200, 503 + Retry-After, 504 or 408 within REQUEST_TIMEOUT_MS + 5 s, /healthz
# answers throughout, the container is neither OOM-killed nor restarted, and the service's peak
# resident memory stays below the container's memory limit. RELIABILITY.md records the figures.
BURST=${DOCKER_TEST_BURST:-16}
if [ "$BURST" != 0 ]; then
  command -v node >/dev/null || fail "node is needed for the burst (bench/burst.mjs)"
  docker logs "$CID" 2>&1 | grep '"memory budget"' | tail -1 | grep -q requestBudgetMb || fail "the service did not log its memory budget"
  log "memory budget: $(docker logs "$CID" 2>&1 | grep '"memory budget"' | tail -1 | grep -Eo '"(limitMb|limitSource|reserveMb|reserveSource|requestBudgetMb)":[^,}]*' | tr '\n' ' ')"
  LOAD=$TMP/load
  mkdir -p "$LOAD" && chmod 777 "$LOAD"
  log "making maximum-size images (bench/large-images.mjs, run in the image)"
  docker run --rm --network none --read-only --tmpfs /tmp -v "$LOAD:/out" -v "$ROOT/bench/large-images.mjs:/large-images.mjs:ro" \
    -w /app --entrypoint node "$IMAGE" /large-images.mjs /out >/dev/null || fail "making the images"
  LIMIT=$(docker inspect -f '{{.HostConfig.Memory}}' "$CID")
  [ "$LIMIT" -gt 0 ] || fail "the container has no memory limit"
  TIMEOUT_MS=$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$CID" | sed -n 's/^REQUEST_TIMEOUT_MS=//p')
  RESTARTS=$(docker inspect -f '{{.RestartCount}}' "$CID")
  log "burst: $BURST uploads at once of $(cd "$LOAD" && ls | tr '\n' ' ')(memory limit $((LIMIT / 1048576)) MiB, REQUEST_TIMEOUT_MS ${TIMEOUT_MS:-15000})"
  BURST_OK=1
  node "$ROOT/bench/burst.mjs" --url "$URL" --images "$LOAD" --concurrency "$BURST" --timeout-ms "${TIMEOUT_MS:-15000}" --json "$TMP/burst.json" >&2 || BURST_OK=0
  # The service's peak resident memory since it started (the largest VmHWM of the container's processes: the
  # service and tini; matched by no process name, which differs between Node versions), and the cgroup's own figures.
  HWM=$(docker exec "$CID" sh -c 'for s in /proc/[0-9]*/status; do grep "^VmHWM" "$s" 2>/dev/null; done; true' 2>&1 || true)
  PEAK=$(printf '%s\n' "$HWM" | awk '$2 > m { m = $2 } END { print m * 1024 }')
  CG_PEAK=$(docker exec "$CID" sh -c 'cat /sys/fs/cgroup/memory.peak 2>/dev/null || cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes 2>/dev/null || echo 0')
  OOM_KILLS=$(docker exec "$CID" sh -c 'grep -h "^oom_kill " /sys/fs/cgroup/memory.events 2>/dev/null || echo "oom_kill 0"' | awk '{ print $2 }')
  curl -sS -o "$TMP/metrics-burst.txt" "$URL/metrics" || fail "GET /metrics after the burst"
  log "after the burst: service peak resident memory $((PEAK / 1048576)) MiB, cgroup peak $((CG_PEAK / 1048576)) MiB (page cache included), limit $((LIMIT / 1048576)) MiB; oom_kill events ${OOM_KILLS:-?}; $(grep -E '^vlt_memory_budget_(bytes\{kind="peak_in_use"\}|refusals_total)' "$TMP/metrics-burst.txt" | tr '\n' ' ')"
  [ "$(docker inspect -f '{{.State.OOMKilled}} {{.State.Status}} {{.RestartCount}}' "$CID")" = "false running $RESTARTS" ] \
    || fail "the container was OOM-killed or restarted: $(docker inspect -f 'OOMKilled {{.State.OOMKilled}}, status {{.State.Status}}, restarts {{.RestartCount}}' "$CID")"
  [ "${OOM_KILLS:-0}" = 0 ] || fail "the kernel killed a process of the container for memory ($OOM_KILLS times)"
  [ "$PEAK" -gt 0 ] && [ "$PEAK" -lt "$LIMIT" ] || fail "peak resident memory $PEAK bytes is not below the limit $LIMIT (VmHWM read: $(printf '%s' "$HWM" | tr '\n' ' '))"
  [ "$BURST_OK" = 1 ] || fail "burst: $(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).failures.join("; "))' "$TMP/burst.json")"
  code=$(curl -sS -o /dev/null -w '%{http_code}' "$URL/readyz") || fail "GET /readyz after the burst"
  [ "$code" = 200 ] || fail "GET /readyz answered $code after the burst"
fi

# ---- 8. clean shutdown --------------------------------------------------------------------------
log "docker compose stop"
T0=$(date +%s)
"${COMPOSE[@]}" stop "$SERVICE" >&2 || fail "docker compose stop"
EXIT_CODE=$(docker inspect -f '{{.State.ExitCode}}' "$CID")
OOM=$(docker inspect -f '{{.State.OOMKilled}}' "$CID")
[ "$EXIT_CODE" = 0 ] || fail "the container exited with $EXIT_CODE after SIGTERM (OOM killed: $OOM)"
# Read the whole log first: under pipefail, `docker logs | grep -q` fails whenever grep stops
# reading before docker logs has written its last lines (SIGPIPE).
STOP_LOGS=$(docker logs "$CID" 2>&1)
grep -q '"shutting down"' <<<"$STOP_LOGS" || fail "no 'shutting down' log line after SIGTERM"
log "stopped in $(( $(date +%s) - T0 ))s, exit code 0"

OK=1
