#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang (ASan+UBSan) into build-fuzz/ and runs
# each for SECONDS (default 60) from its checked-in corpus, tests/fuzz/corpus/<target>/. The two
# HTTP harnesses (fuzz_http: the router; fuzz_http_wire: the same through the server's parsing on
# a socket) run SECONDS each too, so a run takes 5 x SECONDS.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (default: every target)
#
# The corpus is read only: new inputs go to a temporary directory (libFuzzer writes into the
# first corpus directory it is given), and crash, leak and timeout inputs to build-fuzz/artifacts/,
# so a run never dirties the tree. To keep what a run found, merge it:
#   build-fuzz/tests/fuzz/T -merge=1 tests/fuzz/corpus/T NEW_DIR
# Exits non-zero on any crash, leak, timeout, out-of-memory or sanitizer report.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(fuzz_http fuzz_http_wire fuzz_json_request fuzz_entry fuzz_note)
fi

dir=build-fuzz
CXX=clang++-14 TALLY_TARGETS="${targets[*]}" scripts/build.sh "$dir" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTALLY_FUZZ=ON -DTALLY_TESTS=OFF -DTALLY_WERROR=ON

mkdir -p "$dir/artifacts" "$dir/logs"
new=$(mktemp -d)
trap 'rm -rf "$new"' EXIT
export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$new/$t"
  log="$dir/logs/$t.log"
  secs=$seconds
  extra=()
  case $t in
    # Its server keeps work in flight across inputs, which defeats libFuzzer's per-input leak
    # check; the target checks for leaks itself (every 4096 inputs and at exit).
    fuzz_http_wire) extra=(-detect_leaks=0) ;;
  esac
  printf -- '-- %s: %s s\n' "$t" "$secs"
  status=0
  "$dir/tests/fuzz/$t" "$new/$t" "tests/fuzz/corpus/$t" -max_total_time="$secs" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$dir/artifacts/$t-" "${extra[@]}" \
    >"$log" 2>&1 || status=$?
  # A sanitizer report that did not stop the run is a failure too.
  if ((status == 0)) && grep -qE 'runtime error:|ERROR: (Address|Leak|UndefinedBehavior)Sanitizer' \
    "$log"; then
    status=1
  fi
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
  summary+=("$(printf '%-18s %10s runs %8s exec/s  cov %6s  ft %7s  corpus %s  %s' "$t" \
    "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" \
    "$( ((status == 0)) && echo ok || echo FAILED)")")
  if ((status != 0)); then
    failed+=("$t")
    tail -60 "$log" >&2
    ls -1 "$dir/artifacts/" | grep "^$t-" >&2 || true
  fi
done

printf '\n'
printf '%s\n' "${summary[@]}"
if ((${#failed[@]} > 0)); then
  echo "fuzz: failed: ${failed[*]} (logs in $dir/logs/, inputs in $dir/artifacts/)" >&2
  exit 1
fi
