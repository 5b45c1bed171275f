#!/usr/bin/env bash
# What backups cost the writes (docs/operations.md, "Backup and restore"): alternating runs of
# tally-bench's default mix (64 connections) on a fresh tallyd each, without backups and with a
# POST /v1/admin/backups every GAP seconds; prints requests/s and earn p99 of each run, and the
# ratio with/without of each pair.
#
# Usage: scripts/backup-cost.sh [--pairs N] [--gap S] [--duration S] [--build-dir DIR] [--no-build]
# Defaults: 3 pairs, a backup every 1.5 s, 20 s runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/start-tallyd.sh

pairs=3
gap=1.5
duration=20
build_dir=build
build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --pairs) pairs=$2; shift 2 ;;
    --gap) gap=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "backup-cost.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [[ $build == 1 ]]; then
  echo "== build (Release): $build_dir"
  TALLY_TARGETS="tallyd tally-bench" scripts/build.sh "$build_dir" >/dev/null
fi
bin=$(cd "$build_dir" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tally-backup-cost.XXXXXX")
pid=""
bench=""
trap 'for p in $bench $pid; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
key=backup-cost-admin-key

# One run; prints "REQUESTS_PER_S EARN_P99_MS BACKUPS".
run() {
  local with=$1 dir=$tmp/run n=0
  rm -rf "$dir"
  start_tallyd "$bin" "$dir/data" "$tmp/tallyd.log" "$key"
  "$bin/tally-bench" --url "$url" --key "$key" --setup --duration 1 --connections 8 >/dev/null 2>&1
  "$bin/tally-bench" --url "$url" --key "$key" --duration "$duration" --connections 64 \
    >"$tmp/bench.txt" 2>&1 &
  bench=$!
  if [[ $with == 1 ]]; then
    sleep 1
    while kill -0 "$bench" 2>/dev/null; do
      code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $key" \
        -H "Idempotency-Key: cost-$n" "$url/v1/admin/backups") || true
      [[ $code == 201 ]] && n=$((n + 1))
      sleep "$gap"
    done
  fi
  wait "$bench"; bench=""
  kill "$pid"; wait "$pid" || true; pid=""
  local rps p99
  rps=$(grep -E '^requests' "$tmp/bench.txt" | grep -o '[0-9.]* req/s' | cut -d' ' -f1)
  p99=$(grep -E '^earn' "$tmp/bench.txt" | grep -o 'p99 [0-9.]*' | cut -d' ' -f2)
  echo "$rps $p99 $n"
}

echo "== machine: $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg)"
for ((i = 1; i <= pairs; i++)); do
  read -r base_rps base_p99 _ < <(run 0)
  read -r with_rps with_p99 n < <(run 1)
  ratio=$(awk -v a="$with_rps" -v b="$base_rps" 'BEGIN { printf "%.2f", a / b }')
  echo "pair $i: without $base_rps req/s (earn p99 $base_p99 ms); with $n backups" \
    "$with_rps req/s (earn p99 $with_p99 ms); ratio $ratio"
done
