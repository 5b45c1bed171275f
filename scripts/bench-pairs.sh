#!/usr/bin/env bash
# Two builds of tallyd, compared in alternating runs (docs/BENCHMARKS.md): each run starts a fresh
# tallyd, earns for SETUP seconds with 64 connections (`tally-bench --setup`), then measures
# DURATION seconds of earns, paced at RATE/s (0: as fast as 64 connections go). Prints each run's
# requests/s, latency, tallyd's CPU per earn (utime + stime from /proc), its mean commit group and
# how many synced writes took over 10 ms (tally_fsync_seconds); then, over the pairs, how often the
# second build had the lower p99 and the median p99 of each.
#
# Usage: scripts/bench-pairs.sh --before DIR --after DIR [--pairs N] [--rate R] [--duration S]
#                               [--setup S]
# DIR is a build directory holding tallyd; tally-bench comes from the --after one.
# Defaults: 6 pairs, 13000/s, 10 s measured after 10 s of setup.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/start-tallyd.sh

before=""
after=""
pairs=6
rate=13000
duration=10
setup=10
while [[ $# -gt 0 ]]; do
  case "$1" in
    --before) before=$2; shift 2 ;;
    --after) after=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --setup) setup=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-pairs.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $before && -n $after ]] || { echo "bench-pairs.sh: --before and --after are required" >&2; exit 2; }
for d in "$before" "$after"; do
  [[ -x $d/tallyd ]] || { echo "bench-pairs.sh: no tallyd in $d" >&2; exit 2; }
done
[[ -x $after/tally-bench ]] || { echo "bench-pairs.sh: no tally-bench in $after" >&2; exit 2; }
before=$(cd "$before" && pwd)
after=$(cd "$after" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tally-bench-pairs.XXXXXX")
pid=""
trap '[[ -n $pid ]] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
key=bench-pairs-admin-key
rate_args=()
[[ $rate != 0 ]] && rate_args=(--rate "$rate")

# Sums of the metrics the runs report: entries per group, synced writes, synced writes <= 10 ms.
metrics() {
  curl -sf -H "Authorization: Bearer $key" "$url/metrics" | awk '
    /^tally_commit_group_entries_sum/ {es=$2} /^tally_commit_group_entries_count/ {gc=$2}
    /^tally_fsync_seconds_count/ {fc=$2} /^tally_fsync_seconds_bucket\{le="0.01"\}/ {f10=$2}
    END {print es+0, gc+0, fc+0, f10+0}'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

# run NAME BIN_DIR: one run; appends "NAME p99" to $tmp/p99 and prints the run's line.
run() {
  local name=$1 bin=$2 m0 m1 c0 c1
  rm -rf "$tmp/data"
  start_tallyd "$bin" "$tmp/data" "$tmp/log" "$key"
  "$after/tally-bench" --url "$url" --key "$key" --setup --mix earn=100 --connections 64 \
    --threads 2 --duration "$setup" >/dev/null 2>"$tmp/setup.err" ||
    { cat "$tmp/setup.err" >&2; exit 2; }
  m0=$(metrics)
  c0=$(cpu_ticks)
  "$after/tally-bench" --url "$url" --key "$key" --mix earn=100 --connections 64 --threads 2 \
    --duration "$duration" "${rate_args[@]}" --json >"$tmp/run.json"
  c1=$(cpu_ticks)
  m1=$(metrics)
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
  python3 - "$name" "$tmp/run.json" "$m0" "$m1" "$c0" "$c1" "$(getconf CLK_TCK)" "$tmp/p99" <<'EOF'
import json, sys
name, path, m0, m1, c0, c1, hz, out = sys.argv[1:]
j = json.loads(open(path).read().strip().splitlines()[-1])
d = [float(b) - float(a) for a, b in zip(m0.split(), m1.split())]
lat = j["latency_ms"]
cpu_us = (int(c1) - int(c0)) / int(hz) * 1e6 / max(j["requests"], 1)
print(f"{name:6} {j['rps']:9.0f} req/s  p50 {lat['p50']:6.2f}  p99 {lat['p99']:7.2f}  "
      f"p99.9 {lat['p999']:7.2f} ms  {cpu_us:6.1f} us CPU/earn  "
      f"group {d[0] / max(d[1], 1):5.1f}  synced writes over 10 ms: {d[2] - d[3]:.0f} of {d[2]:.0f}"
      f"  status {json.dumps(j['status'], separators=(',', ':'))}")
with open(out, "a") as f:
    f.write(f"{name} {lat['p99']}\n")
EOF
}

echo "before: $before/tallyd"
echo "after:  $after/tallyd"
echo "$pairs pairs; earns ${rate_args[*]:-at full load} for ${duration}s after ${setup}s of setup"
for i in $(seq "$pairs"); do
  run before "$before"
  run after "$after"
done
python3 - "$tmp/p99" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
b = [float(v) for n, v in rows if n == "before"]
a = [float(v) for n, v in rows if n == "after"]
better = sum(1 for x, y in zip(b, a) if y < x)
print(f"p99 lower after in {better} of {len(a)} pairs; median p99 before "
      f"{statistics.median(b):.2f} ms, after {statistics.median(a):.2f} ms")
EOF
