#!/usr/bin/env bash
# tally-audit verify throughput (docs/BENCHMARKS.md): fills a data directory with N earns
# (tally-bench-fill, the same entries tally-bench sends), then runs `tally-audit verify` on it
# and prints entries verified per second with the time of each phase. The baseline, run just
# before on the same directory, is a plain read of every key and value of every column family
# (`tally-audit scan`): no verifier that compares every stored byte can be faster than that.
#
# Usage: scripts/bench-audit.sh [--entries N] [--runs R] [--data DIR] [--build-dir DIR] [--no-build]
# Defaults: 1000000 entries, 2 runs of each, a temporary directory (kept with --data, and reused
# if it already holds a ledger).
set -euo pipefail
cd "$(dirname "$0")/.."

entries=1000000
runs=2
data=""
build_dir=build
build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --entries) entries=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-audit.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for n in "$entries" "$runs"; do
  [[ "$n" =~ ^[0-9]+$ && "$n" -gt 0 ]] || { echo "bench-audit.sh: bad number $n" >&2; exit 2; }
done

if [[ $build == 1 ]]; then
  echo "== build (Release): $build_dir"
  TALLY_TARGETS="tally-audit tally-bench-fill" scripts/build.sh "$build_dir" >/dev/null
fi
bin=$(cd "$build_dir" && pwd)

tmp=""
if [[ -z $data ]]; then
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/tally-bench-audit.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  data=$tmp/data
fi

echo "== machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ ! -d $data/db ]]; then
  echo "\$ tally-bench-fill --data DIR --entries $entries"
  TALLY_ADMIN_KEY=${TALLY_ADMIN_KEY:-bench-audit} \
    timeout -k 5 $((600 + entries / 500)) "$bin/tally-bench-fill" --data "$data" --entries "$entries"
fi
echo "   $(du -sb "$data/db" | cut -f1) bytes in DIR/db"

field() { grep -o "\"$2\": *[0-9.e+-]*" "$1" | head -1 | sed 's/.*: *//'; }
for ((i = 1; i <= runs; i++)); do
  echo
  echo "\$ tally-audit scan --data DIR        (baseline, run $i)"
  "$bin/tally-audit" scan --data "$data"
  echo "\$ tally-audit verify --data DIR --report REPORT        (run $i)"
  report=$(mktemp "${TMPDIR:-/tmp}/tally-bench-audit-report.XXXXXX")
  rc=0
  "$bin/tally-audit" verify --data "$data" --report "$report" || rc=$?
  if [[ $rc != 0 ]]; then
    echo "bench-audit.sh: verify exited $rc" >&2
    rm -f "$report"
    exit 1
  fi
  printf '   phases: log %s s, rebuild %s s, compare %s s\n' \
    "$(field "$report" log)" "$(field "$report" rebuild)" "$(field "$report" compare)"
  rm -f "$report"
done
