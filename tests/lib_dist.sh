# Shared by tests/test_dist*.sh: skip (exit 77) without mpirun or without an MPI build, and
# run mpirun as root the way CI needs it (--oversubscribe: more ranks than the 2 cores).
# sanitizer builds: Open MPI's own allocations outlive MPI_Finalize and would read as leaks
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
QAT=${QAT_BIN:-build/qat}
BENCH_AR="$(dirname "$QAT")/bench_allreduce"
command -v mpirun > /dev/null || { echo "skipped: mpirun not installed"; exit 77; }
[ -x "$BENCH_AR" ] || { echo "skipped: $BENCH_AR not built"; exit 77; }
"$BENCH_AR" --have mpi || { echo "skipped: this build has no MPI communicator"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# one thread per rank: the ranks share the machine's cores
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
MPIRUN_FLAGS="--oversubscribe --bind-to none"
dist_mpirun() { mpirun $MPIRUN_FLAGS "$@"; }
