#!/usr/bin/env bash
# Configures and builds Tally into a build directory.
# Usage: scripts/build.sh [BUILD_DIR] [extra cmake args...]   (default build/, Release)
# TALLY_TARGETS="a b" builds only those targets.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
targets=()
for t in ${TALLY_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$dir" -j "${TALLY_JOBS:-2}" "${targets[@]}"
