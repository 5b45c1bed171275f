#!/usr/bin/env bash
# HTTP benchmarks of tallyd against the baseline server, then restart time and disk use
# (docs/BENCHMARKS.md). Builds Release, then runs one after the other, with the same client
# (tally-bench) and the same settings:
#   a. baseline_server, GET /healthz                      (the HTTP ceiling on this machine)
#   b. tallyd, durable earns only        (--mix earn=100)  after --setup on a fresh data dir
#   c. tallyd, balance reads only        (--mix balance=100)
#   d. tallyd, earns paced at half of b's rate: the latency at moderate load
#   e. tallyd, the default mix           (earn=70,redeem=10,referral=5,balance=15)
#   c0. tallyd restarted on the same data with --customer-cache 0: balance reads, each one read
#      from RocksDB (c answers from the customer-view cache once a customer was read)
#   a'. baseline_server again: the ratios are to the mean of a and a', so that a change in the
#      machine's speed during the runs (it is shared) shows up instead of skewing them
#   a2. baseline_server --body-bytes N, sent the same POSTs as b (--mix earn=100), N the size of
#      one of tallyd's earn answers: the same bytes through the same HTTP layer with no ledger
#      behind it: b's ratio to a2 is what the ledger's work leaves of the HTTP layer's rate
#   f. restart: fill a data dir with N earns (tally-bench-fill), time tallyd's start to /readyz
#      200, and the bytes on disk per entry (du -sb DIR/db / entries)
#
# Usage: scripts/bench.sh [--duration S] [--connections N] [--threads N] [--entries N]
#                         [--build-dir DIR] [--no-build] [--skip-http] [--skip-restart]
# Defaults: 10 s per run, 64 connections, 2 client threads, 200000 entries, build/.
# Everything binds 127.0.0.1 only, servers use ports the kernel picks, every step has a time
# limit, and no process is left behind (the EXIT trap stops them).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10
connections=64
threads=2
entries=200000
build_dir=build
build=1
http=1
restart=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --entries) entries=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --skip-http) http=0; shift ;;
    --skip-restart) restart=0; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for n in "$duration" "$connections" "$threads" "$entries"; do
  [[ "$n" =~ ^[0-9]+$ && "$n" -gt 0 ]] || { echo "bench.sh: bad number $n" >&2; exit 2; }
done

if [[ $build == 1 ]]; then
  echo "== build (Release): $build_dir"
  build_log=$(mktemp "${TMPDIR:-/tmp}/tally-bench-build.XXXXXX")
  if ! TALLY_TARGETS="tallyd baseline_server tally-bench tally-bench-fill" \
       scripts/build.sh "$build_dir" >"$build_log" 2>&1; then
    cat "$build_log" >&2
    rm -f "$build_log"
    exit 1
  fi
  rm -f "$build_log"
fi
bin=$(cd "$build_dir" && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tally-bench.XXXXXX")
pids=()  # background processes not yet waited for
forget() {
  local pid keep=()
  for pid in "${pids[@]}"; do [[ $pid == "$1" ]] || keep+=("$pid"); done
  pids=("${keep[@]}")
}
# stop PID: SIGTERM, then SIGKILL after 30 s; waits for it.
stop() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget "$pid"
}
cleanup() {  # newest first: a client before its server
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${pids[i]}"; done
  rm -rf "$tmp"
}
trap cleanup EXIT
# A signal ends the script through the EXIT trap (a closed stdout too, as with `| head`).
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM

now_ns() { date +%s%N; }

# start_server NAME LOG CMD...: starts CMD in the background and sets $server_pid and $server_url
# from its "... listening on URL" line (waits up to $start_timeout seconds).
start_timeout=60
start_server() {
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  local deadline=$(($(date +%s) + start_timeout))
  server_url=""
  while [[ -z $server_url ]]; do
    server_url=$(sed -n 's/^.* listening on \(http:\/\/[^ ]*\)$/\1/p' "$log" | head -1)
    [[ -n $server_url ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "bench.sh: $name exited:" >&2; cat "$log" >&2; exit 1
    fi
    if [[ $(date +%s) -ge $deadline ]]; then
      echo "bench.sh: $name did not start in ${start_timeout}s" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.005
  done
}

stop_server() { stop "$1"; }

# settle PID: waits until PID has used less than 5% of a core for a whole second (at most
# $settle_timeout seconds), so that the flushes and compactions a write run leaves behind in
# tallyd's RocksDB do not land in the next run's measurement. Prints how long it waited. It sees
# CPU time only (user + system of all of PID's threads), not I/O still in flight.
settle_timeout=120
# CPU ticks PID has used: fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the
# command name (which may hold spaces).
cpu_ticks() {
  local stat
  stat=$(<"/proc/$1/stat") || return 1
  stat=${stat##*) }
  awk '{ print $12 + $13 }' <<<"$stat"
}
settle() {
  local pid=$1 start before after waited tck
  tck=$(getconf CLK_TCK)
  start=$(date +%s)
  while true; do
    before=$(cpu_ticks "$pid") || { echo "bench.sh: process $pid is gone" >&2; exit 1; }
    sleep 1
    after=$(cpu_ticks "$pid") || { echo "bench.sh: process $pid is gone" >&2; exit 1; }
    waited=$(($(date +%s) - start))
    if [[ $((after - before)) -lt $((tck / 20)) ]]; then
      echo "   (tallyd idle after ${waited}s: $((after - before)) of $tck ticks in the last second)"
      return
    fi
    if [[ $waited -ge $settle_timeout ]]; then
      echo "   (tallyd still busy after ${waited}s: $((after - before)) of $tck ticks; measuring)"
      return
    fi
  done
}

# run CMD...: runs CMD in the background and waits for it, so that a signal to this script is
# handled at once (the EXIT trap then stops CMD). Returns CMD's exit status.
run() {
  "$@" &
  local pid=$! rc=0
  pids+=("$pid")
  wait "$pid" || rc=$?
  forget "$pid"
  return "$rc"
}

# The first numeric value of "NAME": in a JSON line.
field() { grep -o "\"$2\":[0-9.]*" <<<"$1" | head -1 | cut -d: -f2; }
statuses() { grep -o '"status":{[^}]*}' <<<"$1" | head -1 | cut -d: -f2- ; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }

# bench LABEL ARGS...: runs tally-bench --json with the common settings; prints a summary and
# sets $result to the JSON line.
bench() {
  local label=$1
  shift
  local cmd=("$bin/tally-bench" --connections "$connections" --threads "$threads"
             --duration "$duration" --json "$@")
  echo
  echo "== $label"
  echo "\$ tally-bench ${cmd[*]:1}" | sed "s/--key [^ ]*/--key \$TALLY_ADMIN_KEY/"
  run timeout -k 5 $((duration + 600)) "${cmd[@]}" >"$tmp/result.json"
  result=$(cat "$tmp/result.json")
  echo "$result"
  printf '   %.0f req/s   p50 %s ms  p90 %s ms  p99 %s ms  p99.9 %s ms   status %s   lost %s\n' \
    "$(field "$result" rps)" "$(field "$result" p50)" "$(field "$result" p90)" \
    "$(field "$result" p99)" "$(field "$result" p999)" "$(statuses "$result")" \
    "$(field "$result" lost)"
}

echo "== machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== settings: ${duration}s per run, $connections connections, $threads client threads"

if [[ $http == 1 ]]; then
  # a. The baseline.
  start_server baseline "$tmp/baseline.log" "$bin/baseline_server" --listen 127.0.0.1:0
  bench "a. baseline_server: GET /healthz" --url "$server_url" --path /healthz
  base=$result
  stop_server "$server_pid"

  # b to e. tallyd on a fresh data directory.
  TALLY_ADMIN_KEY="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export TALLY_ADMIN_KEY
  start_server tallyd "$tmp/tallyd.log" "$bin/tallyd" --data "$tmp/data" --listen 127.0.0.1:0
  tallyd_pid=$server_pid
  settle "$tallyd_pid"
  bench "b. tallyd: durable earns" --url "$server_url" --key "$TALLY_ADMIN_KEY" --setup \
    --mix earn=100
  earns=$result
  # The size of one earn answer, for a2 (one more earn, with its own keys).
  earn_bytes=$(curl -fsS --max-time 30 -o /dev/null -w '%{size_download}' -X POST \
    -H "Authorization: Bearer $TALLY_ADMIN_KEY" -H "Idempotency-Key: bench-size-$$" \
    -H 'Content-Type: application/json' \
    -d "{\"customer\":\"c0\",\"points\":10,\"order_id\":\"bench-size-$$\"}" \
    "$server_url/v1/programs/bench/earn")
  settle "$tallyd_pid"
  bench "c. tallyd: balance reads" --url "$server_url" --key "$TALLY_ADMIN_KEY" --mix balance=100
  reads=$result
  half=$(awk -v r="$(field "$earns" rps)" 'BEGIN { printf "%d", r / 2 }')
  [[ $half -ge 1 ]] || half=1
  settle "$tallyd_pid"
  bench "d. tallyd: earns paced at half of b ($half req/s)" --url "$server_url" \
    --key "$TALLY_ADMIN_KEY" --mix earn=100 --rate "$half"
  paced=$result
  settle "$tallyd_pid"
  bench "e. tallyd: default mix" --url "$server_url" --key "$TALLY_ADMIN_KEY"
  mixed=$result
  stop_server "$tallyd_pid"
  start_server tallyd "$tmp/tallyd.log" "$bin/tallyd" --data "$tmp/data" --listen 127.0.0.1:0 \
    --customer-cache 0
  tallyd_pid=$server_pid
  settle "$tallyd_pid"
  bench "c0. tallyd --customer-cache 0: balance reads" --url "$server_url" \
    --key "$TALLY_ADMIN_KEY" --mix balance=100
  uncached=$result
  stop_server "$tallyd_pid"

  start_server baseline "$tmp/baseline.log" "$bin/baseline_server" --listen 127.0.0.1:0
  bench "a'. baseline_server again: GET /healthz" --url "$server_url" --path /healthz
  base2=$result
  stop_server "$server_pid"
  start_server baseline "$tmp/baseline.log" "$bin/baseline_server" --listen 127.0.0.1:0 \
    --body-bytes "$earn_bytes"
  bench "a2. baseline_server --body-bytes $earn_bytes: earn-shaped POSTs" --url "$server_url" \
    --key "$TALLY_ADMIN_KEY" --mix earn=100
  shaped=$result
  stop_server "$server_pid"
  base_rps=$(awk -v a="$(field "$base" rps)" -v b="$(field "$base2" rps)" \
    'BEGIN { printf "%.1f", (a + b) / 2 }')

  echo
  echo "== HTTP summary"
  printf '   baseline GET       %10.0f req/s  p99 %s ms   (a)\n' "$(field "$base" rps)" \
    "$(field "$base" p99)"
  printf '   baseline GET       %10.0f req/s  p99 %s ms   (a\x27)\n' "$(field "$base2" rps)" \
    "$(field "$base2" p99)"
  printf '   baseline, earn-shaped %7.0f req/s  p99 %s ms   ratio to baseline %s   (a2)\n' \
    "$(field "$shaped" rps)" "$(field "$shaped" p99)" \
    "$(ratio "$(field "$shaped" rps)" "$base_rps")"
  printf '   tallyd earns       %10.0f req/s  p99 %s ms   ratio to baseline %s   (to a2: %s)\n' \
    "$(field "$earns" rps)" "$(field "$earns" p99)" \
    "$(ratio "$(field "$earns" rps)" "$base_rps")" \
    "$(ratio "$(field "$earns" rps)" "$(field "$shaped" rps)")"
  printf '   tallyd reads       %10.0f req/s  p99 %s ms   ratio to baseline %s\n' \
    "$(field "$reads" rps)" "$(field "$reads" p99)" \
    "$(ratio "$(field "$reads" rps)" "$base_rps")"
  printf '   tallyd reads, no cache %6.0f req/s  p99 %s ms   ratio to baseline %s   (c0)\n' \
    "$(field "$uncached" rps)" "$(field "$uncached" p99)" \
    "$(ratio "$(field "$uncached" rps)" "$base_rps")"
  printf '   tallyd earns @%-6s%10.0f req/s  p50 %s ms  p99 %s ms  p99.9 %s ms\n' "$half" \
    "$(field "$paced" rps)" "$(field "$paced" p50)" "$(field "$paced" p99)" \
    "$(field "$paced" p999)"
  printf '   tallyd mix         %10.0f req/s  p99 %s ms   ratio to baseline %s\n' \
    "$(field "$mixed" rps)" "$(field "$mixed" p99)" \
    "$(ratio "$(field "$mixed" rps)" "$base_rps")"
fi

if [[ $restart == 1 ]]; then
  # f. Restart to ready, and bytes per entry.
  echo
  echo "== f. restart: $entries entries"
  fill_limit=$((600 + entries / 500))
  echo "\$ tally-bench-fill --data DIR --entries $entries"
  run timeout -k 5 "$fill_limit" "$bin/tally-bench-fill" --data "$tmp/fill" --entries "$entries"
  # sizes DIR: "TOTAL SST WAL" bytes of a RocksDB directory.
  sizes() {
    echo "$(du -sb "$1" | cut -f1)" \
      "$(find "$1" -name '*.sst' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')" \
      "$(find "$1" -name '*.log' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
  }
  read -r filled filled_sst filled_wal < <(sizes "$tmp/fill/db")
  export TALLY_ADMIN_KEY=${TALLY_ADMIN_KEY:-bench-restart}
  start_timeout=$fill_limit
  # time_restart LABEL: starts tallyd on the filled directory, prints the time from the start to
  # its "listening" line and to the first 200 from /readyz, then stops it.
  time_restart() {
    local t0 t_listen t_ready deadline
    t0=$(now_ns)
    start_server tallyd "$tmp/restart.log" "$bin/tallyd" --data "$tmp/fill" --listen 127.0.0.1:0
    t_listen=$(now_ns)
    deadline=$(($(date +%s) + 60))
    until curl -fsS -o /dev/null "$server_url/readyz" 2>/dev/null; do
      [[ $(date +%s) -lt $deadline ]] || { echo "bench.sh: /readyz never answered 200" >&2; exit 1; }
      sleep 0.005
    done
    t_ready=$(now_ns)
    stop_server "$server_pid"
    awk -v l="$1" -v a="$t0" -v b="$t_listen" -v c="$t_ready" \
      'BEGIN { printf "   %-28s start to listening %.3f s, to /readyz 200 %.3f s\n", l, (b - a) / 1e9, (c - a) / 1e9 }'
  }
  time_restart "first start after the fill"
  time_restart "second start"
  read -r total sst wal < <(sizes "$tmp/fill/db")
  per() { awk -v t="$1" -v n="$entries" 'BEGIN { printf "%.1f", t / n }'; }
  printf '   du -sb DIR/db after the fill       %d bytes, %s bytes per entry (sst %d, wal %d)\n' \
    "$filled" "$(per "$filled")" "$filled_sst" "$filled_wal"
  printf '   du -sb DIR/db after the restarts   %d bytes, %s bytes per entry (sst %d, wal %d)\n' \
    "$total" "$(per "$total")" "$sst" "$wal"
fi
