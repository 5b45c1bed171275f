#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite:
#   1. clang-format check of every source file;
#   2. a Release build with -Werror: fast tests, then the slow tier ([slow]);
#   3. an ASan+UBSan build of the tests: the whole suite again;
#   4. the libFuzzer targets (clang, ASan+UBSan), 60 s per target (scripts/fuzz.sh).
# TALLY_SKIP_ASAN=1 skips step 3, TALLY_SKIP_FUZZ=1 step 4 (for quick local loops; CI never sets
# them).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "format"
scripts/check-format.sh

step "build (Release, -Werror)"
scripts/build.sh build -DTALLY_WERROR=ON -DTALLY_TESTS=ON

step "tests: fast"
(cd build && ctest -LE slow --output-on-failure -j 2 --timeout 600)
step "tests: slow"
(cd build && ctest -L slow --output-on-failure --timeout 1800)

if [[ "${TALLY_SKIP_ASAN:-0}" != "1" ]]; then
  step "build (ASan+UBSan)"
  # -O1 without debug info: the sanitizers' checks at a fraction of a full build's compile time
  # (the Beast files are the slow part on two cores); assertions stay on (no NDEBUG).
  scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS=-O1 \
    -DTALLY_SANITIZE=ON -DTALLY_WERROR=ON -DTALLY_TESTS=ON
  step "tests: ASan+UBSan, whole suite"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  (cd build-asan && ctest --output-on-failure -j 2 --timeout 1800)
fi
if [[ "${TALLY_SKIP_FUZZ:-0}" != "1" ]]; then
  step "fuzz (libFuzzer, ASan+UBSan, 60 s per target)"
  scripts/fuzz.sh 60
fi
step "all tests passed"
