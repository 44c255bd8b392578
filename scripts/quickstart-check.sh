#!/usr/bin/env bash
# The README's quick start, as a newcomer runs it on a clean clone (`.ci/run` calls this after
# `npm ci`): `npm start` with no configuration at all (no DATABASE_URL, no REDIS_URL, no
# Cloudflare), then a token, a create, a heartbeat and a delete with curl, then Ctrl-C.
# Starts twice, so it reports the time to ready on a fresh .data and on a warm one.
set -euo pipefail
# Job control: the broker gets a process group of its own, and Ctrl-C is SIGINT to that group,
# as in a terminal (without it, a script's background jobs ignore SIGINT).
set -m
cd "$(dirname "$0")/.."

# The README's port, unless something on this machine holds it already.
PORT="${QUICKSTART_PORT:-$(node -e '
  const s = require("node:net").createServer();
  s.once("error", () => { const t = require("node:net").createServer().listen(0, "127.0.0.1", () => { process.stdout.write(String(t.address().port)); t.close(); }); });
  s.listen(3000, "127.0.0.1", () => { process.stdout.write("3000"); s.close(); });
')}"
BASE="http://127.0.0.1:$PORT"
DATA_DIR="$(mktemp -d)"
chmod 755 "$DATA_DIR"   # as root, the embedded PostgreSQL runs as its own OS user
LOG="$DATA_DIR/broker.log"
PID=""

cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -INT -- "-$PID"; wait "$PID" || true; fi
  rm -rf "$DATA_DIR"
}
trap cleanup EXIT

fail() {
  echo "quickstart-check: $*" >&2
  echo "---- broker log ----" >&2
  tail -n 40 "$LOG" >&2 || true
  exit 1
}

# Only what a newcomer's shell would have: none of the broker's variables.
# Sets PID and READY_MS (not in a subshell: the broker must stay this shell's child).
start_broker() {
  : >"$LOG"
  local started; started=$(date +%s%N)
  env -i PATH="$PATH" HOME="$HOME" PORT="$PORT" DEV_DATA_DIR="$DATA_DIR" LOG_PRETTY=false npm start >"$LOG" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do   # 60 s at most
    if grep -q 'tunnel broker ready' "$LOG"; then
      READY_MS=$(( ($(date +%s%N) - started) / 1000000 ))
      return 0
    fi
    kill -0 "$PID" 2>/dev/null || fail "npm start exited before it was ready"
    sleep 0.1
  done
  fail "npm start was not ready within 60 s"
}

stop_broker() {
  kill -INT -- "-$PID"
  local code=0
  wait "$PID" || code=$?
  PID=""
  [ "$code" = 0 ] || [ "$code" = 130 ] || fail "npm start exited with $code after Ctrl-C"
}

start_broker
fresh_ms=$READY_MS
grep -q 'PostgreSQL: embedded PostgreSQL' "$LOG" || fail "the log does not say it runs an embedded PostgreSQL"
grep -q 'Redis: private redis-server' "$LOG" || fail "the log does not say it runs a private redis-server"

TOKEN=$(env -i PATH="$PATH" HOME="$HOME" npm run -s token -- alice 2>/dev/null | tail -n 1)
[ -n "$TOKEN" ] || fail "npm run token printed no token"
AUTH="Authorization: Bearer $TOKEN"

created=$(curl -sS -f -X POST "$BASE/v1/tunnels" -H "$AUTH" -H 'Content-Type: application/json' -d '{"port":3000,"requestedSlug":"quickstart"}') \
  || fail "POST /v1/tunnels failed"
tunnel_id=$(node -e 'const b = JSON.parse(process.argv[1]); if (b.hostname !== "quickstart.tunnels.localhost" || !b.cloudflaredToken) process.exit(1); process.stdout.write(b.tunnelId)' "$created") \
  || fail "unexpected create response: $created"
curl -sS -f -X POST "$BASE/v1/tunnels/$tunnel_id/heartbeat" -H "$AUTH" | grep -q '"ok":true' || fail "the heartbeat did not answer ok"
status=$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE "$BASE/v1/tunnels/$tunnel_id" -H "$AUTH")
[ "$status" = 204 ] || fail "DELETE answered $status"
stop_broker

start_broker
warm_ms=$READY_MS
stop_broker
if pgrep -f "$DATA_DIR" >/dev/null; then fail "a PostgreSQL or Redis of the broker outlived it"; fi

echo "quickstart-check: ok: npm start with no configuration, token, create, heartbeat, delete; ready in ${fresh_ms} ms on a fresh data folder, ${warm_ms} ms warm"
