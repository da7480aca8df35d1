#!/usr/bin/env bash
# Data-parallel `qat train` on two Slurm nodes of 8 GPUs each (16 ranks, NCCL): submit with
#   sbatch scripts/launch_slurm_two_nodes.sh CONFIG.yaml [key.sub=value ...]
# srun starts one task per GPU; qat reads SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (rank,
# world, GPU), and the NCCL unique id travels by MPI_Bcast (srun --mpi=pmix with Open MPI).
# checkpoint.dir must be on a file system both nodes see; rank 0 writes it. A rank that dies or
# hangs ends every rank within dist.timeout_s; re-submitting resumes from the newest checkpoint.
#SBATCH --job-name=qat-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --time=24:00:00
set -euo pipefail
cfg=${1:?usage: sbatch launch_slurm_two_nodes.sh CONFIG.yaml [key.sub=value ...]}
shift
qat=${QAT:-$SLURM_SUBMIT_DIR/build/qat}
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-8}
# without PMIx, the torchrun-style fallback: rank 0's host and a port for the unique id
export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -1)
export MASTER_PORT=${MASTER_PORT:-29500}
srun --mpi=pmix --kill-on-bad-exit=1 "$qat" train "$cfg" "$@"
