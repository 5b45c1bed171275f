# Sourced by scripts that drive a tallyd of their own.
# start_tallyd BIN DATA LOG KEY: starts BIN/tallyd on DATA with admin key KEY on a free port,
# output to LOG; sets $pid and $url once it answers /readyz (exits 2 if it does not in 10 s).
start_tallyd() {
  local bin=$1 data=$2 log=$3 key=$4 port=""
  TALLY_ADMIN_KEY=$key "$bin/tallyd" --data "$data" --listen 127.0.0.1:0 >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    port=$(grep -o 'listening on [^ ]*' "$log" | head -1 | sed 's/.*://') || true
    [[ -n $port ]] && curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break
    port=""
    sleep 0.1
  done
  [[ -n $port ]] || { echo "tallyd did not start:" >&2; cat "$log" >&2; exit 2; }
  url=http://127.0.0.1:$port
}
