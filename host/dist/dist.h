/* Layer 6 (ARCHITECTURE.md): the communicator the trainers call at fixed points - gradient
 * all-reduce, metric and loss reductions, barriers, the start-up agreement - and never an MPI or
 * NCCL function directly. Three implementations behind one table of function pointers:
 *   single  one process: every collective is the identity (no copies, no allocation);
 *   mpi     Open MPI over host buffers (the CPU backend); errors come back as statuses
 *           (MPI_ERRORS_RETURN), a watchdog ends a job whose collective outlasts timeout_s;
 *   nccl    device buffers on the communicator's own CUDA stream; the unique id is shared by
 *           MPI_Bcast under mpirun, else over TCP from rank 0 (MASTER_ADDR:MASTER_PORT); each
 *           collective is polled for asynchronous errors and aborted (ncclCommAbort) on timeout.
 * Buffers of the buffer collectives live where the implementation says (qat_dist.device):
 * host memory for single and mpi, device memory of GPU local_rank for nccl. The scalar
 * reductions (losses, counts, hashes, statuses) always take host values.
 * Rank discovery (REFERENCE.md section 8): Open MPI OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK},
 * Slurm SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, torchrun RANK / WORLD_SIZE / LOCAL_RANK. */
#ifndef QAT_DIST_DIST_H
#define QAT_DIST_DIST_H

#include "core/status.h"
#include "core/tensor.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { QAT_DIST_AUTO = 0, QAT_DIST_SINGLE, QAT_DIST_MPI, QAT_DIST_NCCL } qat_dist_kind;
typedef enum { QAT_RED_SUM = 0, QAT_RED_AVG, QAT_RED_MIN, QAT_RED_MAX } qat_dist_op;

/* Where the ranks come from. launcher: "none", "mpirun", "slurm", "torchrun". */
typedef struct qat_dist_env {
  int rank, world, local_rank, local_world;
  const char *launcher;
} qat_dist_env;

/* Reads the launcher variables (the first family present, in the order above; none: a world of
 * one). QAT_EUSAGE naming the variable when one is malformed or rank >= world. */
qat_status qat_dist_env_detect(qat_dist_env *e);

typedef struct qat_dist qat_dist;
struct qat_dist {
  const char *name; /* "single", "mpi", "nccl" */
  int rank, world, local_rank;
  qat_device device; /* where buffer collectives' buffers live */
  double timeout_s;  /* a collective that takes longer ends the job (0: never) */
  /* buf[n] of dtype (F32 or BF16) in place; AVG = the sum divided by world. BF16 on MPI is
   * summed and divided in F32 and rounded once to nearest even; NCCL sums BF16 natively. */
  qat_status (*allreduce)(qat_dist *d, void *buf, int64_t n, qat_dtype dt, qat_dist_op op);
  qat_status (*broadcast)(qat_dist *d, void *buf, size_t bytes, int root);
  /* recv[world * bytes] = every rank's send[bytes], in rank order. */
  qat_status (*allgather)(qat_dist *d, const void *send, void *recv, size_t bytes);
  /* send[world * n] reduced; rank r receives elements [r * n, (r + 1) * n) in recv[n]. */
  qat_status (*reduce_scatter)(qat_dist *d, const void *send, void *recv, int64_t n,
                               qat_dtype dt, qat_dist_op op);
  qat_status (*barrier)(qat_dist *d);
  /* Host scalars: v[n] reduced in place on every rank. */
  qat_status (*allreduce_f64)(qat_dist *d, double *v, int n, qat_dist_op op);
  qat_status (*allreduce_i64)(qat_dist *d, int64_t *v, int n, qat_dist_op op);
  /* Host bytes: recv[world * bytes] (hashes, status codes). */
  qat_status (*allgather_host)(qat_dist *d, const void *send, void *recv, size_t bytes);
  /* clean != 0: every rank reached the same point (MPI_Finalize); 0: leave without
   * synchronizing (a failed rank; the launcher or the peers' timeouts end the rest). */
  void (*close)(qat_dist *d, int clean);
  /* Asynchronous all-reduce (the bucketed gradient sum, train/grad_bucket.h); NULL: the
   * synchronous allreduce stands in (single, mpi). Call through qat_dist_allreduce_start /
   * _wait below. nccl: the collective runs on the communicator's stream after the work already
   * queued on `stream` (the caller's compute stream, a cudaStream_t) and _wait makes later work
   * on `stream` wait for it (cudaStreamWaitEvent), so the compute overlaps it. */
  qat_status (*allreduce_start)(qat_dist *d, void *buf, int64_t n, qat_dtype dt, qat_dist_op op,
                                void *stream, void **req);
  qat_status (*allreduce_wait)(qat_dist *d, void *req, void *stream, int host);
  void *impl;
};

/* buf[n] reduced in place as allreduce does, ordered after the work queued on stream (NULL on
 * the host); *req is what qat_dist_allreduce_wait takes (NULL when it finished already). */
qat_status qat_dist_allreduce_start(qat_dist *d, void *buf, int64_t n, qat_dtype dt,
                                    qat_dist_op op, void *stream, void **req);
/* Work queued on stream after this sees the reduced buffer. host != 0: also waits on the host
 * until it is done (watching timeout_s and asynchronous errors, as the synchronous
 * collectives do). Every started request is waited for exactly once, in start order. */
qat_status qat_dist_allreduce_wait(qat_dist *d, void *req, void *stream, int host);

/* Opens the communicator of kind (AUTO: single for a world of one; else mpi on the CPU, nccl
 * on CUDA). device is where the job's tensors live. QAT_EUNSUPPORTED when the kind was not
 * compiled in or does not fit the device (mpi needs host buffers, nccl device ones) or the
 * launcher (mpi needs mpirun or srun). timeout_s: see qat_dist.timeout_s. */
qat_status qat_dist_open(qat_dist_kind kind, qat_device device, double timeout_s, qat_dist **out);
void qat_dist_close(qat_dist *d, int clean);
const char *qat_dist_kind_name(qat_dist_kind k);
/* "auto", "single", "mpi", "nccl" -> kind; QAT_EUSAGE otherwise. */
qat_status qat_dist_kind_parse(const char *s, qat_dist_kind *out);
/* Which kinds this build holds (1 / 0). */
int qat_dist_have(qat_dist_kind k);

/* The start-up agreement: every rank passes its own status; all of them return QAT_OK when
 * every rank succeeded, else the failing ranks keep their message and the others fail with
 * "rank R failed (see its message)" naming the lowest failing rank. Needs no other collective
 * to have failed first. */
qat_status qat_dist_agree(qat_dist *d, qat_status st);
/* Every rank must hold the same 64-bit value (an effective-config hash): QAT_EUSAGE naming
 * `what`, the first rank that differs and both values otherwise (on every rank). */
qat_status qat_dist_check_same(qat_dist *d, uint64_t v, const char *what);

/* The single-process communicator (static storage: never fails, close is a no-op). */
qat_dist *qat_dist_single(void);

/* Implementations (dist_mpi.c, dist_nccl.c); QAT_EUNSUPPORTED when not compiled. */
qat_status qat_dist_mpi_open(const qat_dist_env *e, double timeout_s, qat_dist **out);
qat_status qat_dist_nccl_open(const qat_dist_env *e, double timeout_s, qat_dist **out);

/* dist_tcp.c: rank 0 serves `bytes` of data to world - 1 peers over TCP at
 * MASTER_ADDR:MASTER_PORT; the others connect (retrying until timeout_s) and receive them. */
qat_status qat_dist_tcp_bcast(const qat_dist_env *e, void *data, size_t bytes, double timeout_s);

#ifdef __cplusplus
}
#endif
#endif
