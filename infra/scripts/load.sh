#!/usr/bin/env bash
# Load run on this machine (a benchmark, not a test): a plain axum "hello"
# server as the baseline, then the local host's redirect (cache hit) and
# create paths, all with wrk from the same place. Prints requests/s and the
# ratio to the baseline.
#
#   make load                      # defaults below
#   DURATION=30s CONNECTIONS=128 make load
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
HELLO_PORT=${HELLO_PORT:-3997}
HOST_PORT=${HOST_PORT:-3998}

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y wrk >/dev/null
  else
    echo "wrk is needed: apt-get install wrk (or brew install wrk)" >&2
    exit 1
  fi
fi

cargo build --release -q -p hanul-local --bin hanul-local --example hello
BIN=${CARGO_TARGET_DIR:-target}/release

DATA=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 100); do
    if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

rps() { awk '/Requests\/sec/ {print $2}'; }

"$BIN/examples/hello" "127.0.0.1:$HELLO_PORT" &
PIDS+=($!)
wait_port "$HELLO_PORT"
echo "== baseline: axum hello, GET /x ($DURATION, $CONNECTIONS connections, $THREADS wrk thread)"
BASE=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:$HELLO_PORT/x" | tee /dev/stderr | rps)

RUST_LOG=${RUST_LOG:-info} RATE_LIMIT_RULES=${RATE_LIMIT_RULES:-infra/load/rules.yaml} "$BIN/hanul-local" --addr "127.0.0.1:$HOST_PORT" --data-dir "$DATA" \
  2>"$DATA/host.log" >/dev/null &
PIDS+=($!)
wait_port "$HOST_PORT"
CODE=$(curl -fsS -X POST "http://127.0.0.1:$HOST_PORT/api/v1/shorten" \
  -H 'content-type: application/json' -d '{"longUrl": "https://example.com/load/target"}' |
  sed -E 's/.*"code":"([^"]+)".*/\1/')
curl -fsS -o /dev/null "http://127.0.0.1:$HOST_PORT/$CODE" -w '' || true

echo "== redirect, cache hit: GET /$CODE (301)"
REDIRECT=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:$HOST_PORT/$CODE" | tee /dev/stderr | rps)

echo "== create: POST /api/v1/shorten, a new URL each time (durable; with its rate-limit write)"
CREATE_OUT=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s infra/load/shorten.lua "http://127.0.0.1:$HOST_PORT")
echo "$CREATE_OUT"
CREATED=$(echo "$CREATE_OUT" | sed -nE 's/.*created_per_s=([0-9]+).*/\1/p')

echo
printf 'baseline (axum hello)   %10.0f req/s\n' "$BASE"
printf 'redirect (cache hit)    %10.0f req/s   %5.1f%% of baseline (target >= 60%%)\n' \
  "$REDIRECT" "$(echo "$REDIRECT * 100 / $BASE" | bc -l)"
printf 'create (201, durable)   %10.0f req/s   (target >= 2000)\n' "$CREATED"
