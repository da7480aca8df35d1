#!/usr/bin/env bash
# Data-parallel `qat train` on one node: one rank per GPU (device: cuda -> NCCL) or N CPU ranks
# (device: cpu -> MPI). configs/README.md "Data parallelism" has the semantics.
#
#   scripts/launch_one_node.sh CONFIG.yaml [N] [key.sub=value ...]
#     N: ranks (default: the number of GPUs, else 2)
# `train.batch` and `train.grad_accum` are per rank (or set `train.global_batch` to keep the
# global batch whatever N is). Re-running the same command resumes from the newest checkpoint.
set -euo pipefail
cfg=${1:?usage: launch_one_node.sh CONFIG.yaml [N] [key.sub=value ...]}
shift
n=""
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then n=$1; shift; fi
if [ -z "$n" ]; then
  n=$(nvidia-smi -L 2>/dev/null | wc -l || true)
  [ "${n:-0}" -ge 1 ] || n=2
fi
qat=${QAT:-$(dirname "$0")/../build/qat}
flags=(--bind-to none)
# as root (containers) Open MPI needs both variables; --oversubscribe allows more ranks than cores
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
flags+=(--oversubscribe)
# CPU ranks share the cores: give each its share of threads
if ! nvidia-smi -L > /dev/null 2>&1; then
  export OMP_NUM_THREADS=$(( $(nproc) / n > 0 ? $(nproc) / n : 1 ))
  flags+=(-x OMP_NUM_THREADS)
fi
exec mpirun "${flags[@]}" -np "$n" "$qat" train "$cfg" "$@"
