/* The NCCL communicator over device buffers (see dist.h). Rank r uses GPU local_rank (set here,
 * before the CUDA backend is created, which keeps the current device). The unique id goes from
 * rank 0 to the others by MPI_Bcast when mpirun / srun started the job (and MPI is built in),
 * else over TCP (dist_tcp.c). The communicator is non-blocking (ncclConfig blocking = 0): init
 * and every collective are polled - ncclCommGetAsyncError, then cudaStreamQuery on the
 * communicator's own stream - and a wait longer than timeout_s aborts it (ncclCommAbort) and
 * returns an error instead of hanging on a dead peer.
 * Ordering with the compute stream: a synchronous collective first waits for the device
 * (cudaDeviceSynchronize) and returns once its own stream is done. The asynchronous all-reduce
 * (allreduce_start / _wait, the bucketed gradient sum of train/grad_bucket.h) instead orders
 * itself after the caller's compute stream with an event and returns at once; its wait makes the
 * compute stream wait for an event recorded after it (cudaStreamWaitEvent), so the backward's
 * later layers overlap it. Scalar reductions stage through a small device buffer.
 * NOT RUN YET: this file compiles for sm_90 but no GPU run exists (benchmarks/gpu_check.sh). */
#include "dist/dist.h"

#ifndef QAT_HAVE_NCCL
qat_status qat_dist_nccl_open(const qat_dist_env *e, double timeout_s, qat_dist **out) {
  *out = NULL;
  return QAT_FAIL(QAT_EUNSUPPORTED, "dist: this build has no NCCL (a CUDA build finds it)");
}
#else

#include "core/log.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef QAT_HAVE_MPI
#include <mpi.h>
#endif

typedef struct nccl_impl {
  ncclComm_t comm;
  cudaStream_t stream;
  void *scratch; /* device staging for host scalars */
  size_t scratch_bytes;
  int mpi_owned; /* MPI_Init was ours (unique id exchange) */
} nccl_impl;

static void nap(void) {
  struct timespec t = {0, 50 * 1000};
  nanosleep(&t, NULL);
}

static qat_status abort_comm(qat_dist *d, const char *why) {
  nccl_impl *I = d->impl;
  if (I->comm) ncclCommAbort(I->comm);
  I->comm = NULL;
  return QAT_FAIL(QAT_EIO, "dist nccl: rank %d of %d: %s; communicator aborted", d->rank, d->world,
                  why);
}

/* Polls the communicator until its pending work is enqueued (init, or a collective that
 * returned ncclInProgress). */
static qat_status wait_comm(qat_dist *d, const char *what) {
  nccl_impl *I = d->impl;
  double t0 = qat_now();
  for (;;) {
    ncclResult_t r = ncclInProgress;
    if (ncclCommGetAsyncError(I->comm, &r) != ncclSuccess) r = ncclInternalError;
    if (r == ncclSuccess) return QAT_OK;
    if (r != ncclInProgress) {
      char why[512];
      snprintf(why, sizeof why, "%s: %s (%s)", what, ncclGetErrorString(r),
               ncclGetLastError(I->comm));
      return abort_comm(d, why);
    }
    if (d->timeout_s > 0 && qat_now() - t0 > d->timeout_s) {
      char why[256];
      snprintf(why, sizeof why, "%s waited %.0f s (dist.timeout_s): a peer died or hangs", what,
               d->timeout_s);
      return abort_comm(d, why);
    }
    nap();
  }
}

/* Polls the communicator's stream to completion, watching for asynchronous errors. */
static qat_status wait_stream(qat_dist *d, const char *what) {
  nccl_impl *I = d->impl;
  double t0 = qat_now();
  for (;;) {
    cudaError_t e = cudaStreamQuery(I->stream);
    if (e == cudaSuccess) return QAT_OK;
    if (e != cudaErrorNotReady)
      return QAT_FAIL(QAT_EDEVICE, "dist nccl: %s: %s", what, cudaGetErrorString(e));
    ncclResult_t r = ncclSuccess;
    ncclCommGetAsyncError(I->comm, &r);
    if (r != ncclSuccess && r != ncclInProgress) {
      char why[512];
      snprintf(why, sizeof why, "%s: %s (%s)", what, ncclGetErrorString(r),
               ncclGetLastError(I->comm));
      return abort_comm(d, why);
    }
    if (d->timeout_s > 0 && qat_now() - t0 > d->timeout_s) {
      char why[256];
      snprintf(why, sizeof why, "%s waited %.0f s (dist.timeout_s): a peer died or hangs", what,
               d->timeout_s);
      return abort_comm(d, why);
    }
    nap();
  }
}

/* Runs one enqueue call (r = its result) to completion. */
static qat_status finish(qat_dist *d, ncclResult_t r, const char *what) {
  nccl_impl *I = d->impl;
  if (r != ncclSuccess && r != ncclInProgress) {
    char why[512];
    snprintf(why, sizeof why, "%s: %s (%s)", what, ncclGetErrorString(r), ncclGetLastError(I->comm));
    return abort_comm(d, why);
  }
  if (r == ncclInProgress) QAT_TRY(wait_comm(d, what));
  return wait_stream(d, what);
}

static qat_status ready(qat_dist *d) {
  nccl_impl *I = d->impl;
  if (!I->comm) return QAT_FAIL(QAT_EIO, "dist nccl: the communicator was aborted earlier");
  cudaError_t e = cudaDeviceSynchronize(); /* the compute stream's gradients are complete */
  if (e != cudaSuccess)
    return QAT_FAIL(QAT_EDEVICE, "dist nccl: cudaDeviceSynchronize: %s", cudaGetErrorString(e));
  return QAT_OK;
}

static qat_status nccl_type(qat_dtype dt, ncclDataType_t *t) {
  if (dt == QAT_F32) *t = ncclFloat32;
  else if (dt == QAT_BF16) *t = ncclBfloat16;
  else return QAT_FAIL(QAT_EINVAL, "dist nccl: dtype %s (F32 or BF16)", qat_dtype_name(dt));
  return QAT_OK;
}

static ncclRedOp_t nccl_op(qat_dist_op op) {
  return op == QAT_RED_SUM ? ncclSum : op == QAT_RED_AVG ? ncclAvg : op == QAT_RED_MIN ? ncclMin
                                                                                        : ncclMax;
}

static qat_status n_allreduce(qat_dist *d, void *buf, int64_t n, qat_dtype dt, qat_dist_op op) {
  nccl_impl *I = d->impl;
  ncclDataType_t t = ncclFloat32;
  QAT_TRY(nccl_type(dt, &t));
  QAT_TRY(ready(d));
  return finish(d, ncclAllReduce(buf, buf, (size_t)n, t, nccl_op(op), I->comm, I->stream),
                "ncclAllReduce");
}

/* The asynchronous all-reduce: comm stream waits for `stream` (event `after`), the collective is
 * enqueued, and the returned request is an event recorded after it on the comm stream. */
static qat_status n_allreduce_start(qat_dist *d, void *buf, int64_t n, qat_dtype dt,
                                    qat_dist_op op, void *stream, void **req) {
  nccl_impl *I = d->impl;
  ncclDataType_t t = ncclFloat32;
  *req = NULL;
  QAT_TRY(nccl_type(dt, &t));
  if (!I->comm) return QAT_FAIL(QAT_EIO, "dist nccl: the communicator was aborted earlier");
  cudaEvent_t after = NULL, done = NULL;
  cudaError_t e = cudaEventCreateWithFlags(&after, cudaEventDisableTiming);
  if (e == cudaSuccess) e = cudaEventRecord(after, (cudaStream_t)stream);
  if (e == cudaSuccess) e = cudaStreamWaitEvent(I->stream, after, 0);
  if (after) cudaEventDestroy(after); /* released once it completes */
  if (e == cudaSuccess) e = cudaEventCreateWithFlags(&done, cudaEventDisableTiming);
  if (e != cudaSuccess) {
    if (done) cudaEventDestroy(done);
    return QAT_FAIL(QAT_EDEVICE, "dist nccl: ordering after the compute stream: %s",
                    cudaGetErrorString(e));
  }
  ncclResult_t r = ncclAllReduce(buf, buf, (size_t)n, t, nccl_op(op), I->comm, I->stream);
  qat_status st = QAT_OK;
  if (r != ncclSuccess && r != ncclInProgress) {
    char why[512];
    snprintf(why, sizeof why, "ncclAllReduce (async): %s (%s)", ncclGetErrorString(r),
             ncclGetLastError(I->comm));
    st = abort_comm(d, why);
  } else if (r == ncclInProgress) {
    st = wait_comm(d, "ncclAllReduce (async)"); /* enqueued; not waited for */
  }
  if (st == QAT_OK && cudaEventRecord(done, I->stream) != cudaSuccess)
    st = QAT_FAIL(QAT_EDEVICE, "dist nccl: cudaEventRecord after the all-reduce failed");
  if (st != QAT_OK) {
    cudaEventDestroy(done);
    return st;
  }
  *req = done;
  return QAT_OK;
}

static qat_status n_allreduce_wait(qat_dist *d, void *req, void *stream, int host) {
  nccl_impl *I = d->impl;
  cudaEvent_t done = (cudaEvent_t)req;
  cudaError_t e = cudaStreamWaitEvent((cudaStream_t)stream, done, 0);
  qat_status st = QAT_OK;
  if (e != cudaSuccess)
    st = QAT_FAIL(QAT_EDEVICE, "dist nccl: cudaStreamWaitEvent: %s", cudaGetErrorString(e));
  double t0 = qat_now();
  while (st == QAT_OK && host) { /* the host-side watch the synchronous collectives keep */
    e = cudaEventQuery(done);
    if (e == cudaSuccess) break;
    if (e != cudaErrorNotReady) {
      st = QAT_FAIL(QAT_EDEVICE, "dist nccl: all-reduce (async): %s", cudaGetErrorString(e));
      break;
    }
    ncclResult_t r = ncclSuccess;
    if (I->comm) ncclCommGetAsyncError(I->comm, &r);
    if (!I->comm || (r != ncclSuccess && r != ncclInProgress)) {
      char why[512];
      snprintf(why, sizeof why, "all-reduce (async): %s (%s)", ncclGetErrorString(r),
               I->comm ? ncclGetLastError(I->comm) : "aborted");
      st = abort_comm(d, why);
    } else if (d->timeout_s > 0 && qat_now() - t0 > d->timeout_s) {
      char why[256];
      snprintf(why, sizeof why, "all-reduce (async) waited %.0f s (dist.timeout_s): a peer died "
                                "or hangs", d->timeout_s);
      st = abort_comm(d, why);
    } else {
      nap();
    }
  }
  cudaEventDestroy(done);
  return st;
}

static qat_status n_broadcast(qat_dist *d, void *buf, size_t bytes, int root) {
  nccl_impl *I = d->impl;
  QAT_TRY(ready(d));
  return finish(d, ncclBroadcast(buf, buf, bytes, ncclUint8, root, I->comm, I->stream),
                "ncclBroadcast");
}

static qat_status n_allgather(qat_dist *d, const void *send, void *recv, size_t bytes) {
  nccl_impl *I = d->impl;
  QAT_TRY(ready(d));
  return finish(d, ncclAllGather(send, recv, bytes, ncclUint8, I->comm, I->stream),
                "ncclAllGather");
}

static qat_status n_reduce_scatter(qat_dist *d, const void *send, void *recv, int64_t n,
                                   qat_dtype dt, qat_dist_op op) {
  nccl_impl *I = d->impl;
  ncclDataType_t t = ncclFloat32;
  QAT_TRY(nccl_type(dt, &t));
  QAT_TRY(ready(d));
  return finish(d, ncclReduceScatter(send, recv, (size_t)n, t, nccl_op(op), I->comm, I->stream),
                "ncclReduceScatter");
}

static qat_status n_barrier(qat_dist *d) { /* NCCL has none: a one-element all-reduce */
  int64_t v = 0;
  return d->allreduce_i64(d, &v, 1, QAT_RED_SUM);
}

static qat_status stage(qat_dist *d, size_t bytes) {
  nccl_impl *I = d->impl;
  if (bytes <= I->scratch_bytes) return QAT_OK;
  if (I->scratch) cudaFree(I->scratch);
  I->scratch = NULL;
  I->scratch_bytes = 0;
  cudaError_t e = cudaMalloc(&I->scratch, bytes);
  if (e != cudaSuccess)
    return QAT_FAIL(QAT_EDEVICE, "dist nccl: cudaMalloc %zu: %s", bytes, cudaGetErrorString(e));
  I->scratch_bytes = bytes;
  return QAT_OK;
}

static qat_status host_reduce(qat_dist *d, void *v, int n, size_t esize, ncclDataType_t t,
                              qat_dist_op op) {
  nccl_impl *I = d->impl;
  size_t bytes = (size_t)n * esize;
  QAT_TRY(stage(d, bytes));
  QAT_TRY(ready(d));
  if (cudaMemcpy(I->scratch, v, bytes, cudaMemcpyHostToDevice) != cudaSuccess)
    return QAT_FAIL(QAT_EDEVICE, "dist nccl: staging upload failed");
  QAT_TRY(finish(d, ncclAllReduce(I->scratch, I->scratch, (size_t)n, t, nccl_op(op), I->comm,
                                  I->stream),
                 "ncclAllReduce (scalars)"));
  if (cudaMemcpy(v, I->scratch, bytes, cudaMemcpyDeviceToHost) != cudaSuccess)
    return QAT_FAIL(QAT_EDEVICE, "dist nccl: staging download failed");
  return QAT_OK;
}

static qat_status n_f64(qat_dist *d, double *v, int n, qat_dist_op op) {
  return host_reduce(d, v, n, sizeof *v, ncclFloat64, op);
}
static qat_status n_i64(qat_dist *d, int64_t *v, int n, qat_dist_op op) {
  if (op == QAT_RED_AVG) return QAT_FAIL(QAT_EINVAL, "dist: no average of integers");
  return host_reduce(d, v, n, sizeof *v, ncclInt64, op);
}

static qat_status n_allgather_host(qat_dist *d, const void *send, void *recv, size_t bytes) {
  nccl_impl *I = d->impl;
  size_t all = bytes * (size_t)d->world;
  QAT_TRY(stage(d, all + bytes));
  QAT_TRY(ready(d));
  char *s = (char *)I->scratch + all;
  if (cudaMemcpy(s, send, bytes, cudaMemcpyHostToDevice) != cudaSuccess)
    return QAT_FAIL(QAT_EDEVICE, "dist nccl: staging upload failed");
  QAT_TRY(finish(d, ncclAllGather(s, I->scratch, bytes, ncclUint8, I->comm, I->stream),
                 "ncclAllGather (host)"));
  if (cudaMemcpy(recv, I->scratch, all, cudaMemcpyDeviceToHost) != cudaSuccess)
    return QAT_FAIL(QAT_EDEVICE, "dist nccl: staging download failed");
  return QAT_OK;
}

static void n_close(qat_dist *d, int clean) {
  nccl_impl *I = d->impl;
  if (I->comm) {
    if (clean) {
      ncclCommFinalize(I->comm);
      /* non-blocking: finalize completes asynchronously */
      ncclResult_t r = ncclInProgress;
      double t0 = qat_now();
      while (ncclCommGetAsyncError(I->comm, &r) == ncclSuccess && r == ncclInProgress &&
             qat_now() - t0 < (d->timeout_s > 0 ? d->timeout_s : 60))
        nap();
      ncclCommDestroy(I->comm);
    } else {
      ncclCommAbort(I->comm);
    }
  }
  if (I->scratch) cudaFree(I->scratch);
  if (I->stream) cudaStreamDestroy(I->stream);
#ifdef QAT_HAVE_MPI
  if (I->mpi_owned && clean) MPI_Finalize();
#endif
  free(I);
  free(d);
}

/* The unique id from rank 0: MPI_Bcast under mpirun / srun when MPI is built in, else TCP. */
static qat_status share_id(const qat_dist_env *e, nccl_impl *I, ncclUniqueId *id, double timeout_s) {
  if (e->world == 1) return QAT_OK; /* rank 0 made it */
#ifdef QAT_HAVE_MPI
  if (!strcmp(e->launcher, "mpirun") || !strcmp(e->launcher, "slurm")) {
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
        return QAT_FAIL(QAT_EIO, "dist nccl: MPI_Init_thread failed");
      I->mpi_owned = 1;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (MPI_Bcast(id, sizeof *id, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
      return QAT_FAIL(QAT_EIO, "dist nccl: MPI_Bcast of the unique id failed");
    return QAT_OK;
  }
#endif
  (void)I;
  return qat_dist_tcp_bcast(e, id, sizeof *id, timeout_s);
}

qat_status qat_dist_nccl_open(const qat_dist_env *e, double timeout_s, qat_dist **out) {
  *out = NULL;
  int ndev = 0;
  cudaError_t ce = cudaGetDeviceCount(&ndev);
  if (ce != cudaSuccess)
    return QAT_FAIL(QAT_EDEVICE, "dist nccl: no CUDA device (%s)", cudaGetErrorString(ce));
  if (e->local_rank >= ndev || e->local_world > ndev)
    return QAT_FAIL(QAT_EUSAGE,
                    "dist nccl: %d ranks on this node (local rank %d) but %d GPU%s visible",
                    e->local_world, e->local_rank, ndev, ndev == 1 ? "" : "s");
  ce = cudaSetDevice(e->local_rank);
  if (ce != cudaSuccess)
    return QAT_FAIL(QAT_EDEVICE, "dist nccl: cudaSetDevice(%d): %s", e->local_rank,
                    cudaGetErrorString(ce));
  nccl_impl *I = calloc(1, sizeof *I);
  qat_dist *d = calloc(1, sizeof *d);
  if (!I || !d) {
    free(I);
    free(d);
    return QAT_FAIL(QAT_ENOMEM, "dist nccl: out of memory");
  }
  *d = (qat_dist){.name = "nccl", .rank = e->rank, .world = e->world, .local_rank = e->local_rank,
                  .device = QAT_DEV_CUDA, .timeout_s = timeout_s, .allreduce = n_allreduce,
                  .broadcast = n_broadcast, .allgather = n_allgather,
                  .reduce_scatter = n_reduce_scatter, .barrier = n_barrier,
                  .allreduce_f64 = n_f64, .allreduce_i64 = n_i64,
                  .allgather_host = n_allgather_host, .close = n_close,
                  .allreduce_start = n_allreduce_start, .allreduce_wait = n_allreduce_wait,
                  .impl = I};
  qat_status st = QAT_OK;
  if (cudaStreamCreateWithFlags(&I->stream, cudaStreamNonBlocking) != cudaSuccess)
    st = QAT_FAIL(QAT_EDEVICE, "dist nccl: cannot create a stream");
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  if (st == QAT_OK && e->rank == 0 && ncclGetUniqueId(&id) != ncclSuccess)
    st = QAT_FAIL(QAT_EIO, "dist nccl: ncclGetUniqueId failed");
  if (st == QAT_OK) st = share_id(e, I, &id, timeout_s);
  if (st == QAT_OK) {
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&I->comm, e->world, id, e->rank, &cfg);
    if (r != ncclSuccess && r != ncclInProgress)
      st = QAT_FAIL(QAT_EIO, "dist nccl: ncclCommInitRankConfig: %s", ncclGetErrorString(r));
    else if (r == ncclInProgress)
      st = wait_comm(d, "ncclCommInitRankConfig");
  }
  if (st != QAT_OK) {
    n_close(d, 0);
    return st;
  }
  *out = d;
  return QAT_OK;
}
#endif
