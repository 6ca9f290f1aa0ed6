#!/usr/bin/env bash
# Installs the Python Kafka clients that our cross-language tests compare against:
#   - kafka-python, from Debian's python3-kafka package, for the system interpreter
#     (/usr/bin/python3); partitioner/tests/kafka_python.rs checks our murmur2 against it.
#   - confluent-kafka, from PyPI, for whichever python3 is first on PATH.
# Safe to run repeatedly: each step is skipped when its module already imports, and the apt
# package index is refreshed only when an install is actually needed.
set -euo pipefail

SYSTEM_PYTHON=/usr/bin/python3

log() { printf 'install-python-peers: %s\n' "$*" >&2; }

# apt-get needs root; use sudo only when we are not root and it exists.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root to run: $*"
        return 1
    fi
}

ensure_kafka_python() {
    if [ -x "$SYSTEM_PYTHON" ] && "$SYSTEM_PYTHON" -c 'import kafka' >/dev/null 2>&1; then
        log "kafka-python already importable by $SYSTEM_PYTHON"
        return 0
    fi
    log "installing Debian package python3-kafka"
    export DEBIAN_FRONTEND=noninteractive
    # Try without refreshing first: a fresh image may already have a usable package list.
    if ! as_root apt-get install -y --no-install-recommends python3-kafka >/dev/null 2>&1; then
        as_root apt-get update
        as_root apt-get install -y --no-install-recommends python3-kafka
    fi
    "$SYSTEM_PYTHON" -c 'import kafka' || {
        log "python3-kafka installed but $SYSTEM_PYTHON still cannot import kafka"
        return 1
    }
    log "kafka-python ready for $SYSTEM_PYTHON"
}

# kafka-python compresses through optional modules; the record fixtures need every codec
# (kafka-proto/tests/fixtures/records). Debian packages them for the system interpreter.
ensure_kafka_python_codecs() {
    if "$SYSTEM_PYTHON" -c 'from kafka.codec import has_snappy, has_lz4, has_zstd
import sys; sys.exit(not (has_snappy() and has_lz4() and has_zstd()))' >/dev/null 2>&1; then
        log "kafka-python codecs (snappy, lz4, zstd) already importable by $SYSTEM_PYTHON"
        return 0
    fi
    log "installing Debian packages python3-snappy python3-lz4 python3-zstandard"
    export DEBIAN_FRONTEND=noninteractive
    local pkgs="python3-snappy python3-lz4 python3-zstandard"
    # shellcheck disable=SC2086 # the package list is meant to split
    if ! as_root apt-get install -y --no-install-recommends $pkgs >/dev/null 2>&1; then
        as_root apt-get update
        # shellcheck disable=SC2086
        as_root apt-get install -y --no-install-recommends $pkgs
    fi
    "$SYSTEM_PYTHON" -c 'from kafka.codec import has_snappy, has_lz4, has_zstd
assert has_snappy() and has_lz4() and has_zstd()' || {
        log "codec packages installed but kafka-python still lacks a codec"
        return 1
    }
    log "kafka-python codecs ready for $SYSTEM_PYTHON"
}

ensure_confluent_kafka() {
    if ! command -v python3 >/dev/null 2>&1; then
        log "no python3 on PATH"
        return 1
    fi
    if python3 -c 'import confluent_kafka' >/dev/null 2>&1; then
        log "confluent-kafka already importable by $(command -v python3)"
        return 0
    fi
    log "installing confluent-kafka with $(command -v python3) -m pip"
    python3 -m pip install --quiet confluent-kafka
    # pyenv shims need a rehash to see new entry points; harmless elsewhere.
    if command -v pyenv >/dev/null 2>&1; then
        pyenv rehash || true
    fi
    python3 -c 'import confluent_kafka' || {
        log "confluent-kafka installed but python3 still cannot import it"
        return 1
    }
    log "confluent-kafka ready for $(command -v python3)"
}

ensure_kafka_python
ensure_kafka_python_codecs
ensure_confluent_kafka
