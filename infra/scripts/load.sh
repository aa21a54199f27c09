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
cargo build --release -q -p hanul-e2e --example feed-load
BIN=$(infra/scripts/target-dir.sh)/release

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

export LOAD_SERVICE_KEY=load-service-key-0123456789abcdef
RUST_LOG=${RUST_LOG:-info} RATE_LIMIT_RULES=${RATE_LIMIT_RULES:-infra/load/rules.yaml} \
  SERVICE_API_KEYS="load:$LOAD_SERVICE_KEY" "$BIN/hanul-local" --addr "127.0.0.1:$HOST_PORT" --data-dir "$DATA" \
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

echo "== notify: POST /api/v1/notifications (push to 2 devices + email), then until the outbox has every delivery"
H="http://127.0.0.1:$HOST_PORT"
TOKEN=$(curl -fsS -X POST "$H/local/v1/token" -H 'content-type: application/json' -d '{"userId":"load-user"}' |
  sed -E 's/.*"token":"([^"]+)".*/\1/')
for dev in '{"platform":"ios","token":"'"$(printf 'ab%.0s' $(seq 32))"'"}' '{"platform":"android","token":"fcm-load-token-0123456789"}'; do
  curl -fsS -o /dev/null -X PUT "$H/api/v1/me/devices" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "$dev"
done
curl -fsS -o /dev/null -X PUT "$H/api/v1/me/notification-settings" -H "authorization: Bearer $TOKEN" \
  -H 'content-type: application/json' -d '{"email":"load@example.com"}'
outbox_count() { curl -fsS "$H/local/v1/outbox?count=true" | sed -E 's/.*"count":([0-9]+).*/\1/'; }
BEFORE=$(outbox_count || true)
START=$(date +%s.%N)
NOTIFY_OUT=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${NOTIFY_DURATION:-5s}" -s infra/load/notify.lua "$H")
echo "$NOTIFY_OUT"
ACCEPTED=$(echo "$NOTIFY_OUT" | sed -nE 's/.*accepted=([0-9]+) .*/\1/p')
WANT=$((BEFORE + ACCEPTED * 3))
while :; do
  HAVE=$(outbox_count || true)
  [ "$HAVE" -ge "$WANT" ] && break
  sleep 0.5
done
END=$(date +%s.%N)
E2E=$(echo "$ACCEPTED / ($END - $START)" | bc -l)

echo "== feed: ${FEED_FOLLOWERS:-5000} followers of one author, a post, until every feed has it"
FEED_OUT=$("$BIN/examples/feed-load" "$H" "${FEED_FOLLOWERS:-5000}")
echo "$FEED_OUT" | grep -v '^reader token'
READER=$(echo "$FEED_OUT" | sed -nE 's/^reader token for wrk: //p')
echo "== feed read, cache hit: GET /api/v1/me/feed?limit=20 (20 hydrated posts)"
FEED_HIT=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -H "authorization: Bearer $READER" \
  "$H/api/v1/me/feed?limit=20" | tee /dev/stderr | rps)
echo "== feed read, cache off (FEED_CACHE_CAPACITY=0: every page reads its posts and profiles)"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'
RUST_LOG=${RUST_LOG:-info} RATE_LIMIT_RULES=${RATE_LIMIT_RULES:-infra/load/rules.yaml} FEED_CACHE_CAPACITY=0 \
  SERVICE_API_KEYS="load:$LOAD_SERVICE_KEY" "$BIN/hanul-local" --addr "127.0.0.1:$HOST_PORT" --data-dir "$DATA" \
  2>>"$DATA/host.log" >/dev/null &
PIDS+=($!)
wait_port "$HOST_PORT"
FEED_MISS=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -H "authorization: Bearer $READER" \
  "$H/api/v1/me/feed?limit=20" | tee /dev/stderr | rps)

echo
printf 'baseline (axum hello)   %10.0f req/s\n' "$BASE"
printf 'redirect (cache hit)    %10.0f req/s   %5.1f%% of baseline (target >= 60%%)\n' \
  "$REDIRECT" "$(echo "$REDIRECT * 100 / $BASE" | bc -l)"
printf 'create (201, durable)   %10.0f req/s   (target >= 2000)\n' "$CREATED"
printf 'notify accepted (202)   %10.0f req/s\n' "$(echo "$NOTIFY_OUT" | sed -nE 's/.*accepted_per_s=([0-9]+).*/\1/p')"
printf 'notify end to end       %10.0f notifications/s (%.0f deliveries/s) API -> outbox (peak need: 185/s)\n' "$E2E" "$(echo "$E2E * 3" | bc -l)"
printf 'feed read, cache hit    %10.0f req/s   %5.1f%% of baseline\n' "$FEED_HIT" "$(echo "$FEED_HIT * 100 / $BASE" | bc -l)"
printf 'feed read, cache off    %10.0f req/s   %5.1f%% of baseline\n' "$FEED_MISS" "$(echo "$FEED_MISS * 100 / $BASE" | bc -l)"
