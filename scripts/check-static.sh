#!/usr/bin/env bash
# Proves a static kbus (from scripts/build-static) is what we ship, and measures its footprint.
#
#   scripts/check-static.sh BIN        # needs root (chroot) and KAFKA_BOOTSTRAP=127.0.0.1:PORT
#
# 1. `file` says static, and the ELF has no program interpreter (PT_INTERP).
# 2. In an empty root holding only the binary and /etc/hosts, it creates a topic, produces
#    and consumes records against the broker, reaching it by the name `localhost`.
# 3. Footprint, each checked against its goal:
#    - size of the (stripped) binary                                  <= 8 MiB
#    - VmRSS of an idle connected client: `kbus consume` on an empty
#      topic, long-polling the broker, read from /proc after 3 s      <= 8 MiB
#    - peak RSS (VmHWM) of `kbus bench produce --count 1000000 --size 1024`   <= 48 MiB
#    That it stays flat when --count grows tenfold is measured by hand (README): 10 GiB would
#    not fit the in-memory test broker CI uses.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin="${1:?usage: scripts/check-static.sh BIN}"
: "${KAFKA_BOOTSTRAP:?KAFKA_BOOTSTRAP=host:port of the broker}"
port="${KAFKA_BOOTSTRAP##*:}"
MIB=$((1024 * 1024))
fail() { echo "check-static: $*" >&2; exit 1; }

# 1. Static, no interpreter.
desc="$(file -b "$bin")"
echo "file: $desc"
case "$desc" in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) fail "not a static binary" ;;
esac
case "$desc" in *interpreter*) fail "has a program interpreter" ;; esac
if readelf -lW "$bin" | grep -q INTERP; then fail "ELF has a PT_INTERP segment"; fi
case "$desc" in *stripped*) ;; *) fail "not stripped" ;; esac

# 2. An empty root: the binary and a hosts file, nothing else (no libc, no /proc, no /dev).
root="$(mktemp -d "${TMPDIR:-/tmp}/kbus-root.XXXXXX")"
idle_pid=""
cleanup() {
  if [ -n "$idle_pid" ]; then kill "$idle_pid" 2>/dev/null || true; fi
  rm -rf "$root"
}
trap cleanup EXIT
mkdir -p "$root/etc"
cp "$bin" "$root/kbus"
printf '127.0.0.1\tlocalhost\n' >"$root/etc/hosts"
echo "empty root: $(cd "$root" && find . -mindepth 1 | sort | tr '\n' ' ')"
kbus() { chroot "$root" /kbus -b "localhost:$port" "$@"; }

topic="static-smoke-$$-$RANDOM"
kbus topics create "$topic" -p 3
printf 'one\ntwo\nthree\n' | kbus produce -t "$topic"
got="$(kbus consume -t "$topic" --from earliest --exit-at-end | sort | tr '\n' ' ')"
[ "$got" = "one three two " ] || fail "consumed '$got', expected one two three"
echo "produced and consumed 3 records inside the empty root"

# 3. Footprint.
size=$(stat -c %s "$bin")
echo "size: $size bytes ($(awk -v b="$size" 'BEGIN { printf "%.2f", b / 1048576 }') MiB)"
[ "$size" -le $((8 * MIB)) ] || fail "binary is over 8 MiB"

idle_topic="static-idle-$$-$RANDOM"
kbus topics create "$idle_topic" -p 1
chroot "$root" /kbus -b "localhost:$port" consume -t "$idle_topic" --from latest >/dev/null &
idle_pid=$!
sleep 3
kill -0 "$idle_pid" 2>/dev/null || fail "the idle consumer exited"
conns=$(ss -Htnp state established "( dport = :$port )" | grep -c "pid=$idle_pid," || true)
[ "$conns" -ge 1 ] || fail "the idle consumer holds no connection to the broker"
idle_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$idle_pid/status")
kill "$idle_pid"; wait "$idle_pid" 2>/dev/null || true; idle_pid=""
echo "idle connected client: VmRSS $idle_kb KiB over $conns broker connection(s)"
[ "$idle_kb" -le $((8 * 1024)) ] || fail "idle RSS is over 8 MiB"

bench_topic="static-bench-$$-$RANDOM"
kbus topics create "$bench_topic" -p 3
# Outside the empty root: the bench reads its peak RSS from /proc/self/status, which the empty
# root does not have (it would report 0). Same binary.
peak() {
  local out
  out="$("$bin" -b "$KAFKA_BOOTSTRAP" bench produce -t "$bench_topic" --count "$1" --size 1024 2>/dev/null)"
  echo "  $out" >&2
  sed -n 's/.*"peak_rss_bytes":\([0-9]*\).*/\1/p' <<<"$out"
}
p=$(peak 1000000)
kbus topics delete "$bench_topic" >/dev/null || true
[ "${p:-0}" -gt 0 ] || fail "bench produce printed no peak_rss_bytes"
echo "bench produce --count 1000000 --size 1024: peak RSS $((p / 1024)) KiB"
[ "$p" -le $((48 * MIB)) ] || fail "peak RSS at 1M records is over 48 MiB"
echo "static kbus: all checks passed"
