#!/usr/bin/env bash
# The README's quick start with whatever Node.js is first on PATH: `npm install && npm start`,
# then GET /readyz until 200 and POST /segment with a bundled example (200, a non-empty mask),
# then SIGTERM and a clean exit. Also fails when `npm install` changes package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "node $(node --version), npm $(npm --version)"
npm install --no-audit
git diff --quiet -- package-lock.json || { echo "npm install changed package-lock.json" >&2; exit 1; }
PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
LOG=$(mktemp)
# its own process group, so that the signal reaches npm and the server alike
PORT=$PORT HOST=127.0.0.1 WORKERS=1 THREADS_PER_WORKER=1 setsid npm start >"$LOG" 2>&1 &
PID=$!
trap 'kill -TERM -- -"$PID" 2>/dev/null || true' EXIT
URL=http://127.0.0.1:$PORT
for _ in $(seq 1 180); do
  curl -sf "$URL/readyz" >/dev/null && break
  kill -0 "$PID" 2>/dev/null || { cat "$LOG"; echo "npm start exited" >&2; exit 1; }
  sleep 1
done
curl -sf "$URL/readyz" || { cat "$LOG"; echo "not ready after 180 s" >&2; exit 1; }
echo
BODY=$(curl -sS -w '\n%{http_code}' -F image=@src/public/examples/refshapes-1.jpg -F 'expression=the large white star' "$URL/segment")
CODE=${BODY##*$'\n'}
[ "$CODE" = 200 ] || { echo "POST /segment answered $CODE: ${BODY%$'\n'*}" >&2; exit 1; }
AREA=$(printf '%s' "${BODY%$'\n'*}" | node -e 'let s="";process.stdin.on("data",(d)=>{s+=d}).on("end",()=>console.log(JSON.parse(s).results[0].area))')
[ "$AREA" -gt 0 ] || { echo "POST /segment: an empty mask" >&2; exit 1; }
echo "POST /segment 200, mask area $AREA px"
kill -TERM -- -"$PID"
trap - EXIT
wait "$PID" && rc=0 || rc=$?
grep -q '"shutting down"' "$LOG" || { cat "$LOG"; echo "no shutdown log line after SIGTERM" >&2; exit 1; }
echo "stopped (npm start exit code $rc)"
