#!/usr/bin/env bash
# Runs every libFuzzer target of tests/fuzz (built by build.sh into $B) for FUZZ_SECONDS each,
# JOBS at a time, on a corpus that starts from seeds.py's seeds (kept in $B/corpus, so longer
# local runs build on earlier ones). Any crash, leak, timeout (-timeout), out-of-memory
# (-rss_limit_mb, -malloc_limit_mb) or sanitizer report fails the run: the target's log tail
# and the reproducer (the file libFuzzer wrote under $B/findings/) are printed.
# Prints one line per target: executions, coverage (edges) and features at the end.
#   tests/fuzz/run.sh [BUILD_DIR] [TARGET...]     (FUZZ_SECONDS=45 JOBS=2 by default)
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${1:-build-fuzz}
shift || true
secs=${FUZZ_SECONDS:-45}
jobs=${JOBS:-2}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$B"/fuzz_*; do [ -x "$f" ] && targets+=("$(basename "$f" | sed 's/^fuzz_//')"); done
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no targets in $B (run tests/fuzz/build.sh $B)"; exit 2; }
mkdir -p "$B/corpus" "$B/findings" "$B/logs"
python3 tests/fuzz/seeds.py all "$B/seeds" > /dev/null || { echo "fuzz: seeds.py failed"; exit 2; }
export QAT_FUZZ_TOKDIR=$PWD/$B/seeds/tokdir
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

run_one() {
  local t=$1 corpus="$B/corpus/$1" dict=""
  rm -rf "$B/findings/$t"
  mkdir -p "$corpus" "$B/findings/$t"
  cp -n "$B/seeds/$t"/* "$corpus"/ 2> /dev/null
  [ -f "tests/fuzz/$t.dict" ] && dict="-dict=tests/fuzz/$t.dict"
  "$B/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -print_final_stats=1 -artifact_prefix="$B/findings/$t/" $dict "$corpus" \
    > "$B/logs/$t.log" 2>&1
  local rc=$?
  local done_line execs
  done_line=$(grep -E "^#[0-9]+[[:space:]]+DONE" "$B/logs/$t.log" | tail -1)
  execs=$(grep -E "stat::number_of_executed_units" "$B/logs/$t.log" | awk '{print $2}')
  if [ $rc -ne 0 ]; then
    echo "fuzz: $t FAILED (exit $rc) after ${execs:-?} executions; log $B/logs/$t.log:"
    grep -v "^#[0-9]" "$B/logs/$t.log" | tail -40
    for f in "$B/findings/$t"/*; do
      [ -f "$f" ] || continue
      echo "fuzz: $t reproducer $f ($(stat -c %s "$f") bytes; rerun: $B/fuzz_$t $f):"
      head -c 600 "$f" | od -c | head -20
    done
    return 1
  fi
  echo "fuzz: $t ok: ${execs:-?} executions in ${secs}s, $(echo "$done_line" |
    grep -oE "cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*" | sed 's/corp:/corpus/')"
}

fail=0
pids=()
names=()
for t in "${targets[@]}"; do
  run_one "$t" > "$B/logs/$t.summary" &
  pids+=($!)
  names+=("$t")
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || fail=1
    cat "$B/logs/${names[0]}.summary"
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || fail=1
  cat "$B/logs/${names[$i]}.summary"
done
[ $fail -eq 0 ] && echo "fuzz: all ${#targets[@]} targets ran ${secs}s each with 0 findings"
exit $fail
