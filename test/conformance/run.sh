#!/usr/bin/env bash
# Schemathesis with all its checks against the live service (node dist/server.js, the default
# model), from openapi.yaml, bounded by test/conformance/schemathesis.toml. Needs
# `pip install schemathesis` and `npm run build`; exits non-zero on any failure.
#
#   bash test/conformance/run.sh [extra schemathesis options]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PORT=${CONFORMANCE_PORT:-$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')}
LOG=$(mktemp)
PORT=$PORT HOST=127.0.0.1 WORKERS=1 THREADS_PER_WORKER=1 LOG_LEVEL=warn node dist/server.js >"$LOG" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -f "$LOG"' EXIT
for _ in $(seq 1 180); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; echo "conformance: the service did not start" >&2; exit 1; }
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { cat "$LOG" >&2; echo "conformance: not ready after 180 s" >&2; exit 1; }
schemathesis --config-file test/conformance/schemathesis.toml run openapi.yaml \
  --url "http://127.0.0.1:$PORT" --checks all --no-color "$@"
