#!/usr/bin/env bash
# Installs, starts and stops the Kafka-compatible broker the tests run against (tansu).
#
#   scripts/broker.sh install          # build tansu into the cache unless the right version is on PATH
#   scripts/broker.sh start [STORAGE]  # start on a free loopback port; prints KAFKA_BOOTSTRAP=host:port
#   scripts/broker.sh stop             # stop the broker this checkout started
#   scripts/broker.sh env              # print `export KAFKA_BOOTSTRAP=...` for the running broker
#
# STORAGE defaults to memory://tansu/; pass sqlite:///path/to.db for restart tests.
# State lives in .broker/ (pid, bootstrap address, log). KBUS_CACHE overrides ~/.cache/kbus.
set -euo pipefail

TANSU_VERSION=0.6.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.broker"
CACHE="${KBUS_CACHE:-$HOME/.cache/kbus}"
CACHED_BIN="$CACHE/tansu-$TANSU_VERSION/bin/tansu"

tansu_bin() {
  if command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    command -v tansu
  elif [ -x "$CACHED_BIN" ]; then
    echo "$CACHED_BIN"
  else
    return 1
  fi
}

install() {
  if bin="$(tansu_bin)"; then
    echo "tansu $TANSU_VERSION: $bin" >&2
    return 0
  fi
  echo "building tansu $TANSU_VERSION into $CACHE (takes 12-25 minutes, once)" >&2
  mkdir -p "$CACHE"
  # The default features have no storage engine; memory and sqlite come with these two.
  cargo install --locked tansu --version "$TANSU_VERSION" --features dynostore,libsql \
    --root "$CACHE/tansu-$TANSU_VERSION" >&2
  tansu_bin >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# True when the broker answers an ApiVersions v0 request (not just accepts TCP).
answers() {
  python3 - "$1" "$2" <<'PY'
import socket, struct, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    body = struct.pack(">hhih", 18, 0, 1, -1)  # ApiVersions v0, correlation 1, null client id
    s.sendall(struct.pack(">i", len(body)) + body)
    size = struct.unpack(">i", s.recv(4))[0]
    data = b""
    while len(data) < size:
        chunk = s.recv(size - len(data))
        if not chunk:
            sys.exit(1)
        data += chunk
    sys.exit(0 if struct.unpack(">i", data[:4])[0] == 1 else 1)
except Exception:
    sys.exit(1)
PY
}

start() {
  local storage="${1:-memory://tansu/}"
  install
  local bin; bin="$(tansu_bin)"
  mkdir -p "$STATE"
  if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
    echo "KAFKA_BOOTSTRAP=$(cat "$STATE/bootstrap")"
    return 0
  fi
  local port; port="$(free_port)"
  "$bin" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$storage" >"$STATE/log" 2>&1 &
  echo $! >"$STATE/pid"
  echo "127.0.0.1:$port" >"$STATE/bootstrap"
  for _ in $(seq 1 150); do
    if answers 127.0.0.1 "$port"; then
      echo "KAFKA_BOOTSTRAP=127.0.0.1:$port"
      return 0
    fi
    if ! kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
      echo "tansu exited during start-up; log follows" >&2
      cat "$STATE/log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "tansu did not answer ApiVersions on 127.0.0.1:$port within 30 s; log follows" >&2
  cat "$STATE/log" >&2
  stop
  return 1
}

stop() {
  if [ -f "$STATE/pid" ]; then
    local pid; pid="$(cat "$STATE/pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE/pid" "$STATE/bootstrap"
  fi
}

case "${1:-}" in
  install) install ;;
  start) shift; start "$@" ;;
  stop) stop ;;
  env) echo "export KAFKA_BOOTSTRAP=$(cat "$STATE/bootstrap")" ;;
  *) echo "usage: $0 install|start [STORAGE]|stop|env" >&2; exit 2 ;;
esac
