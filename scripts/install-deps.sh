#!/usr/bin/env bash
# Installs the Debian 12 packages Tally builds and tests with, only those missing.
# Usage: scripts/install-deps.sh [--test]   (--test adds what the test suite needs)
set -euo pipefail

pkgs=(build-essential cmake pkg-config libboost1.81-dev librocksdb-dev libssl-dev
      nlohmann-json3-dev)
if [[ "${1:-}" == "--test" ]]; then
  pkgs+=(catch2 clang-format ledger curl python3)
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
