#!/usr/bin/env bash
# moto.sh start|stop — a moto server on a free loopback port.
# `start` prints the endpoint URL; state lives in .build/moto.{pid,port,log}.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .build
case "${1:-}" in
  start)
    port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    .venv/bin/moto_server -H 127.0.0.1 -p "$port" > .build/moto.log 2>&1 &
    echo $! > .build/moto.pid
    echo "$port" > .build/moto.port
    for _ in $(seq 1 100); do
      if .venv/bin/python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null; then
        echo "http://127.0.0.1:$port"
        exit 0
      fi
      sleep 0.2
    done
    echo "moto.sh: moto did not start; log:" >&2
    cat .build/moto.log >&2
    exit 1
    ;;
  stop)
    if [[ -f .build/moto.pid ]]; then
      kill "$(cat .build/moto.pid)" 2>/dev/null || true
      rm -f .build/moto.pid .build/moto.port
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
