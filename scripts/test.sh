#!/usr/bin/env bash
# The project's one test command: `scripts/test.sh [extra cargo test args]`.
#
# Uses the broker at KAFKA_BOOTSTRAP if set; otherwise installs (once, cached) and starts a
# local tansu broker, runs every test in the workspace against it, and stops it again.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

started=0
cleanup() { if [ "$started" = 1 ]; then scripts/broker.sh stop; fi; }
trap cleanup EXIT

if [ -z "${KAFKA_BOOTSTRAP:-}" ]; then
  line="$(scripts/broker.sh start)"
  started=1
  export "${line?}"
  echo "started tansu at $KAFKA_BOOTSTRAP" >&2
fi
# Peers the interop tests drive (kafka-python, confluent-kafka); idempotent and quick when present.
scripts/install-python-peers.sh >&2
cargo test --workspace "$@"
