#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU: configure a fresh build-gpu (sm_90), build, run every
# test (GPU tests included) and every built benchmarks/bench_* with --json, and write one results
# file benchmarks/results/gpu_check-<date>-<shortcommit>.md (copied to $OUT when set).
# Exit status: non-zero when the build or a test failed; the results file is written either way.
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#   JOBS=16 ARCH=90 bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
build=${BUILD_DIR:-build-gpu}
arch=${ARCH:-90}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 4)}
date_s=$(date -u +%Y%m%d-%H%M%S)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo nogit)
dirty=$(git status --porcelain 2>/dev/null | grep -qv '^??' && echo " (working tree has uncommitted changes)" || true)
mkdir -p benchmarks/results
res="benchmarks/results/gpu_check-${date_s}-${commit}.md"
log=$(mktemp -d /tmp/gpu_check.XXXXXX)
status=0

section() { printf '\n## %s\n\n' "$1" >>"$res"; }
fence() { { echo '```'; cat "$1"; echo '```'; } >>"$res"; }

{
  echo "# GPU check ${date_s}"
  echo
  echo "- commit: ${commit}${dirty}"
  echo "- date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
  echo "- host: $(hostname)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "- device: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)"
    echo "- driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)"
    echo "- CUDA (driver): $(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -1)"
  else
    echo "- device: nvidia-smi not found"
  fi
  nvcc_v=$( (command -v nvcc >/dev/null && nvcc --version || /usr/local/cuda/bin/nvcc --version) 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')
  echo "- CUDA toolkit (nvcc): ${nvcc_v:-not found}"
  echo "- build: ${build}, CMAKE_CUDA_ARCHITECTURES=${arch}, -j${jobs}"
} >"$res"

# ---- build ----
case "$build" in "" | "/" | "." | ".." | "$HOME") echo "gpu_check: refusing BUILD_DIR=$build" >&2; exit 2 ;; esac
rm -rf "$build"
if cmake -S . -B "$build" -DQAT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" >"$log/configure.txt" 2>&1 &&
   cmake --build "$build" -j"$jobs" >"$log/build.txt" 2>&1; then
  echo "- build: ok" >>"$res"
else
  echo "- build: FAILED" >>"$res"
  status=1
  section "Build log (tail)"
  tail -n 80 "$log/configure.txt" "$log/build.txt" >"$log/build_tail.txt" 2>/dev/null
  fence "$log/build_tail.txt"
fi

# ---- tests ----
if [ -d "$build" ] && [ -f "$build/CTestTestfile.cmake" ]; then
  (cd "$build" && ctest --output-on-failure -j"$((jobs > 4 ? 4 : jobs))" >"$log/ctest.txt" 2>&1)
  tst=$?
  [ $tst -ne 0 ] && status=1
  section "Tests (ctest, exit ${tst})"
  # the summary line and every non-passing or skipped test, then the failures' output
  grep -E 'tests passed|tests failed|Total Test time|\*\*\*|Failed|Not Run|Skipped|Timeout' "$log/ctest.txt" >"$log/ctest_summary.txt" || true
  fence "$log/ctest_summary.txt"
  if [ $tst -ne 0 ]; then
    section "Failing test output (tail)"
    tail -n 150 "$log/ctest.txt" >"$log/ctest_tail.txt"
    fence "$log/ctest_tail.txt"
  fi
fi

# ---- benchmarks ----
section "Benchmarks"
found=0
for b in "$build"/bench_*; do
  [ -x "$b" ] || continue
  found=1
  name=$(basename "$b")
  "$b" >"$log/$name.txt" 2>&1
  rc=$?
  "$b" --json >"$log/$name.json" 2>&1
  rcj=$?
  { echo "### ${name} (exit ${rc}, --json exit ${rcj})"; echo; } >>"$res"
  fence "$log/$name.txt"
  echo >>"$res"
  fence "$log/$name.json"
  [ $rc -ne 0 ] && echo "(benchmark ${name} failed)" >>"$res"
done
[ $found -eq 0 ] && echo "no benchmarks were built" >>"$res"

# ---- NCCL: the communicator on this machine's GPUs (host/dist/dist_nccl.c) ----
# every visible GPU as one rank (torchrun-style variables, unique id over TCP); at least a
# 1-rank NCCL world. --check: exact crafted sums, every collective; then the timing sweep.
if [ -x "$build/bench_allreduce" ]; then
  ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
  [ "$ngpu" -ge 1 ] || ngpu=1
  section "NCCL communicator (${ngpu} rank(s), one per GPU)"
  for mode in "--check" "--max 268435456"; do
    pids=""
    for r in $(seq 0 $((ngpu - 1))); do
      RANK=$r WORLD_SIZE=$ngpu LOCAL_RANK=$r LOCAL_WORLD_SIZE=$ngpu MASTER_ADDR=127.0.0.1 \
        MASTER_PORT=29517 timeout 300 "$build/bench_allreduce" --backend nccl --device cuda $mode \
        >"$log/nccl_$r.txt" 2>&1 &
      pids="$pids $!"
    done
    rc=0
    for p in $pids; do wait "$p" || rc=1; done
    [ $rc -ne 0 ] && status=1
    { echo "### bench_allreduce --backend nccl $mode (exit ${rc})"; echo; } >>"$res"
    fence "$log/nccl_0.txt"
  done
fi

{ echo; echo "overall: $([ $status -eq 0 ] && echo PASS || echo FAIL)"; } >>"$res"
echo "wrote $root/$res"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT" && cp "$res" "$OUT/" && echo "copied to $OUT/$(basename "$res")"
fi
rm -rf "$log"
exit $status
