#!/usr/bin/env bash
# Installs the Debian 12 packages Tally builds and tests with, only those missing.
# Usage: scripts/install-deps.sh [--test]   (--test adds what the test suite needs)
set -euo pipefail

# libnats-dev and nats-server: replication on NATS JetStream (tallyd --replicate / --follow links
# libnats; the replication tests run a nats-server cluster). libjemalloc-dev: tally-audit's
# allocator. libtcmalloc-minimal4: tallyd's allocator (CMakeLists.txt).
pkgs=(build-essential cmake pkg-config libboost1.81-dev librocksdb-dev libssl-dev
      nlohmann-json3-dev libnats-dev nats-server libjemalloc-dev libtcmalloc-minimal4)
if [[ "${1:-}" == "--test" ]]; then
  # fiu-utils: fiu-run, which injects I/O errors under tallyd (tests/crash/faults_test.cc).
  # clang-14 and libclang-rt-14-dev (libFuzzer, ASan, UBSan runtimes): scripts/fuzz.sh.
  pkgs+=(catch2 clang-format ledger curl python3 fiu-utils clang-14 libclang-rt-14-dev)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
echo "installing: ${missing[*]}" >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
