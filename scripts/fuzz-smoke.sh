#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 30) from its committed corpus; fails on a crash.
# New inputs go to a scratch directory so the committed corpus only changes on purpose.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_EACH="${1:-30}"
cd "$ROOT/fuzz"
mkdir -p artifacts
cargo +nightly fuzz build
# cargo-fuzz builds into $CARGO_TARGET_DIR when it is set, else fuzz/target.
BIN="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release"
for target in $(cargo +nightly fuzz list); do
  scratch="$(mktemp -d)"
  mkdir -p "corpus/$target"
  echo "--- $target for ${SECONDS_EACH}s"
  if ! "$BIN/$target" "$scratch" "corpus/$target" -max_total_time="$SECONDS_EACH" \
      -print_final_stats=1 -artifact_prefix="artifacts/$target-" >"$scratch.log" 2>&1; then
    tail -40 "$scratch.log"
    echo "fuzz target $target failed" >&2
    exit 1
  fi
  grep -E 'stat::number_of_executed_units|Done' "$scratch.log" || true
  rm -rf "$scratch" "$scratch.log"
done
