#!/usr/bin/env bash
# Fails when the default feature set of a product crate pulls C: a `*-sys` crate, or a native
# build tool (cc, cmake, pkg-config, bindgen, ...) as a build dependency, anywhere in the
# normal + build dependency graph for every target platform. Dev-dependencies are not shipped
# and are not checked.
#
#   scripts/check-no-c.sh                      # bus, kafka-proto, partitioner
#   scripts/check-no-c.sh -p integration-tests # any cargo-tree package selection
#   scripts/check-no-c.sh --manifest-path benches/peers/Cargo.toml -p peers
#
# For each offender it prints the crate and the inverted path from it to the checked package.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# name  reason. A listed crate is accepted together with everything only it pulls in (ring's
# build step compiles C and assembly through cc; that is the accepted cost of TLS).
ALLOW=(
  "ring"          # TLS (rustls) crypto: the one expected C/asm build
  "windows-sys"   # Windows API declarations linked through raw-dylib: no C compiled, Windows only
)
# Crates that exist to compile or find C/native code.
NATIVE_BUILD_TOOLS='^(cc|cmake|pkg-config|vcpkg|bindgen|autotools|nasm-rs|system-deps)$'

if [ "$#" -eq 0 ]; then
  set -- bus kafka-proto partitioner
  selections=()
  for p in "$@"; do selections+=("-p $p"); done
else
  selections=("$*")
fi

failed=0
for sel in "${selections[@]}"; do
  # shellcheck disable=SC2086 # $sel is a list of cargo-tree arguments
  tree() { cargo tree $sel -e normal,build --target all "$@"; }
  all="$(tree --prefix none -f '{p}' | sed 's/ (\*)$//; s/ (proc-macro)$//' | sort -u)"
  prune=()
  for a in "${ALLOW[@]}"; do
    for v in $(awk -v n="$a" '$1 == n { print substr($2, 2) }' <<<"$all"); do
      prune+=(--prune "$a@$v")
    done
  done
  offenders="$(tree "${prune[@]}" --prefix none -f '{p}' | sed 's/ (\*)$//; s/ (proc-macro)$//' \
    | sort -u | awk -v tools="$NATIVE_BUILD_TOOLS" '$1 ~ /-sys$/ || $1 ~ tools { print $1 "@" substr($2, 2) }')"
  if [ -z "$offenders" ]; then
    echo "no C in $sel (default features, normal+build deps, all targets; allowed: ${ALLOW[*]})"
    continue
  fi
  failed=1
  for o in $offenders; do
    echo "FAIL: $sel pulls $o, which builds or links C; path to it:"
    tree "${prune[@]}" -i "$o" | sed 's/^/    /'
  done
done
if [ "$failed" -ne 0 ]; then
  echo "check-no-c: C found in the default tree. Put the dependency behind an optional," >&2
  echo "off-by-default feature, or justify it in the ALLOW list of $0." >&2
fi
exit "$failed"
