#!/usr/bin/env bash
# Backups of a running tallyd under write load (docs/operations.md, "Backup and restore"): starts
# tallyd on a fresh directory, drives it with tally-bench (default mix, 64 connections), asks for
# a backup (POST /v1/admin/backups) every GAP seconds meanwhile, checks that `tally-audit backup`
# refuses the running directory, then stops tallyd and runs `tally-audit verify` on every backup.
# Exits 0 only if every backup was 201 and verifies clean with exactly the entries it reported.
#
# Usage: scripts/backup-under-load.sh [--backups N] [--gap S] [--duration S] [--build-dir DIR]
#                                     [--no-build]
# Defaults: 20 backups, 1.5 s apart, 40 s of load.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/start-tallyd.sh

backups=20
gap=1.5
duration=40
build_dir=build
build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --backups) backups=$2; shift 2 ;;
    --gap) gap=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "backup-under-load.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [[ $build == 1 ]]; then
  echo "== build (Release): $build_dir"
  TALLY_TARGETS="tallyd tally-audit tally-bench" scripts/build.sh "$build_dir" >/dev/null
fi
bin=$(cd "$build_dir" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tally-backup-load.XXXXXX")
pid=""
bench=""
trap 'for p in $bench $pid; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT

key=backup-under-load-admin-key
start_tallyd "$bin" "$tmp/data" "$tmp/tallyd.log" "$key"
"$bin/tally-bench" --url "$url" --key "$key" --setup --duration 1 --connections 8 >/dev/null
"$bin/tally-bench" --url "$url" --key "$key" --duration "$duration" --connections 64 \
  >"$tmp/bench.txt" 2>&1 &
bench=$!
sleep 2

failed=0
rc=0
"$bin/tally-audit" backup --data "$tmp/data" --out "$tmp/cli" >"$tmp/cli.txt" 2>&1 || rc=$?
echo "tally-audit backup of the running directory: exit $rc (expected 2: refused)"
[[ $rc == 2 ]] || failed=1
for ((i = 1; i <= backups; i++)); do
  code=$(curl -s -o "$tmp/r$i.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $key" \
    -H "Idempotency-Key: load-$i" -d "{\"name\":\"b$i\"}" "$url/v1/admin/backups")
  [[ $code == 201 ]] || { echo "backup $i: HTTP $code $(cat "$tmp/r$i.json")"; failed=1; }
  sleep "$gap"
done
wait "$bench"; bench=""
grep -E '^requests|^earn' "$tmp/bench.txt" || true
kill "$pid"; wait "$pid" || true; pid=""

field() { grep -o "\"$2\": *[0-9]*" "$1" | head -1 | sed 's/.*: *//'; }
for ((i = 1; i <= backups; i++)); do
  [[ -f $tmp/data/backups/b$i/db/CURRENT ]] || { echo "b$i: missing"; failed=1; continue; }
  size=$(field "$tmp/r$i.json" size)
  rc=0
  "$bin/tally-audit" verify --data "$tmp/data/backups/b$i" --report "$tmp/v$i.json" \
    >"$tmp/v$i.txt" 2>&1 || rc=$?
  entries=$(field "$tmp/v$i.json" entries)
  echo "b$i: size $size, verify exit $rc, entries $entries"
  [[ $rc == 0 && $entries == "$size" ]] || failed=1
done
[[ $failed == 0 ]] && echo "all $backups backups verified" || echo "FAILED"
exit $failed
