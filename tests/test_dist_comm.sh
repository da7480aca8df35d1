#!/usr/bin/env bash
# The MPI communicator under mpirun (skipped when mpirun or the MPI build is absent):
# bench_allreduce --check crafts inputs whose results are exact (all-reduce SUM / AVG / MIN / MAX
# in F32 and BF16 at odd sizes, broadcast, all-gather, reduce-scatter, scalar reductions, the
# config-hash agreement) and exits 1 when any element is wrong, on 2 and on 3 ranks.
set -euo pipefail
. "$(dirname "$0")/lib_dist.sh"
for np in 2 3; do
  out=$(dist_mpirun -np $np "$BENCH_AR" --check 2>&1) || { echo "$out"; echo "FAIL: $np ranks"; exit 1; }
  echo "$out" | grep -q "^# mpi, $np ranks\|bench_allreduce: mpi, $np ranks" ||
    { echo "$out"; echo "FAIL: not an MPI run of $np ranks"; exit 1; }
  echo "$out" | grep -q "^# 0 wrong elements over all ranks" || { echo "$out"; exit 1; }
  echo "$np ranks: collectives exact"
done
