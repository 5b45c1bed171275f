#!/usr/bin/env bash
# Durable earns per second, replicated versus alone, in one run (docs/BENCHMARKS.md):
#   a. tallyd alone                                         (--mix earn=100 after --setup)
#   b. tallyd --replicate on a 3-server JetStream cluster on loopback (3-replica stream), with a
#      follower applying the stream meanwhile; then how long the follower takes to hold
#      everything once the load stops
# Same client (tally-bench), same settings, fresh data directories, one after the other.
#
# Usage: scripts/bench-replication.sh [--duration S] [--connections N] [--threads N]
#                                     [--build-dir DIR] [--no-build]
# Defaults: 10 s per run, 64 connections, 2 client threads, build/. Needs nats-server.
# Everything binds 127.0.0.1 only, every step has a time limit, and no process is left behind
# (the EXIT trap stops them).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10
connections=64
threads=2
build_dir=build
build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-replication.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for n in "$duration" "$connections" "$threads"; do
  [[ "$n" =~ ^[0-9]+$ && "$n" -gt 0 ]] || { echo "bench-replication.sh: bad number $n" >&2; exit 2; }
done
nats_server=$(command -v nats-server || echo /usr/sbin/nats-server)
[[ -x $nats_server ]] || { echo "bench-replication.sh: needs nats-server" >&2; exit 1; }

if [[ $build == 1 ]]; then
  TALLY_TARGETS="tallyd tally-bench" scripts/build.sh "$build_dir"
fi
bin=$(cd "$build_dir" && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tally-bench-repl.XXXXXX")
pids=()  # background processes not yet waited for
# forget PID: drops PID from $pids once it has been waited for, so that cleanup never signals a
# process that reused its number.
forget() {
  local pid keep=()
  for pid in "${pids[@]}"; do [[ $pid == "$1" ]] || keep+=("$pid"); done
  pids=("${keep[@]}")
}
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port (the kernel's choice; closed again before use).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server NAME LOG CMD...: starts CMD in the background and sets $server_pid and $server_url
# from its "... listening on URL" line (waits up to 60 s).
start_server() {
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  local deadline=$(($(date +%s) + 60))
  server_url=""
  while [[ -z $server_url ]]; do
    server_url=$(sed -n 's/^.* listening on \(http:\/\/[^ ]*\)$/\1/p' "$log" | head -1)
    [[ -n $server_url ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "bench-replication.sh: $name exited:" >&2; cat "$log" >&2; exit 1
    fi
    if [[ $(date +%s) -ge $deadline ]]; then
      echo "bench-replication.sh: $name did not start in 60s" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.05
  done
}

stop_server() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget "$pid"
}

field() { grep -o "\"$2\":[0-9.]*" <<<"$1" | head -1 | cut -d: -f2; }
statuses() { grep -o '"status":{[^}]*}' <<<"$1" | head -1 | cut -d: -f2- ; }
applied() {
  curl -fsS -H "Authorization: Bearer $TALLY_ADMIN_KEY" "$1/v1/admin/replication" |
    grep -o '"applied":[0-9]*' | cut -d: -f2
}

bench() {
  local label=$1
  shift
  local cmd=("$bin/tally-bench" --connections "$connections" --threads "$threads"
             --duration "$duration" --json "$@")
  echo
  echo "== $label"
  echo "\$ tally-bench ${cmd[*]:1}" | sed "s/--key [^ ]*/--key \$TALLY_ADMIN_KEY/"
  result=$(timeout -k 5 $((duration + 600)) "${cmd[@]}")
  echo "$result"
  printf '   %.0f req/s   p50 %s ms  p90 %s ms  p99 %s ms  p99.9 %s ms   status %s\n' \
    "$(field "$result" rps)" "$(field "$result" p50)" "$(field "$result" p90)" \
    "$(field "$result" p99)" "$(field "$result" p999)" "$(statuses "$result")"
}

echo "== machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== settings: ${duration}s per run, $connections connections, $threads client threads"
echo "== $("$nats_server" --version)"

TALLY_ADMIN_KEY="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TALLY_ADMIN_KEY

# a. Alone.
start_server tallyd "$tmp/alone.log" "$bin/tallyd" --data "$tmp/alone" --listen 127.0.0.1:0
bench "a. tallyd alone: durable earns" --url "$server_url" --key "$TALLY_ADMIN_KEY" --setup \
  --mix earn=100
alone=$result
stop_server "$server_pid"

# b. The cluster: three nats-server processes with JetStream, routes between them.
urls=""
routes=""
declare -a client_ports route_ports
for i in 0 1 2; do
  client_ports[i]=$(free_port)
  route_ports[i]=$(free_port)
  routes+="${routes:+, }nats-route://127.0.0.1:${route_ports[i]}"
  urls+="${urls:+,}nats://127.0.0.1:${client_ports[i]}"
done
for i in 0 1 2; do
  cat >"$tmp/n$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:${client_ports[i]}
max_payload: 8MB
jetstream { store_dir: "$tmp/nats$i" }
cluster { name: bench, listen: 127.0.0.1:${route_ports[i]}, routes: [$routes] }
EOF
  "$nats_server" -c "$tmp/n$i.conf" >"$tmp/n$i.log" 2>&1 &
  pids+=("$!")
done

start_server primary "$tmp/primary.log" "$bin/tallyd" --data "$tmp/primary" \
  --listen 127.0.0.1:0 --replicate "$urls"
primary_pid=$server_pid
primary_url=$server_url
mkdir -p -m 0700 "$tmp/follower"
cp -p "$tmp/primary/signing.key" "$tmp/primary/signing.pub" "$tmp/primary/api.secret" \
  "$tmp/follower/"
start_server follower "$tmp/follower.log" "$bin/tallyd" --data "$tmp/follower" \
  --listen 127.0.0.1:0 --follow "$urls"
follower_url=$server_url
bench "b. tallyd --replicate (3-replica JetStream stream, one follower): durable earns" \
  --url "$primary_url" --key "$TALLY_ADMIN_KEY" --setup --mix earn=100
replicated=$result
t0=$(date +%s%N)
target=$(applied "$primary_url")
deadline=$(($(date +%s) + 300))
until [[ $(applied "$follower_url") -ge $target ]]; do
  [[ $(date +%s) -lt $deadline ]] || { echo "bench-replication.sh: follower never caught up" >&2; exit 1; }
  sleep 0.05
done
lag=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
stop_server "$primary_pid"

echo
echo "== summary"
printf '   alone        %8.0f earns/s  p50 %s ms  p99 %s ms\n' "$(field "$alone" rps)" \
  "$(field "$alone" p50)" "$(field "$alone" p99)"
printf '   replicated   %8.0f earns/s  p50 %s ms  p99 %s ms   (ratio %s)\n' \
  "$(field "$replicated" rps)" "$(field "$replicated" p50)" "$(field "$replicated" p99)" \
  "$(awk -v a="$(field "$replicated" rps)" -v b="$(field "$alone" rps)" 'BEGIN { printf "%.2f", a / b }')"
printf '   follower     held all %s entries %s s after the load stopped\n' "$target" "$lag"
