/* The MPI communicator over host buffers (Open MPI; see dist.h). Errors come back as statuses:
 * the communicator is a duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN. A dead peer makes
 * mpirun / srun end the job; a peer that hangs would leave the others blocked inside a
 * collective forever, which no status can report, so a watchdog thread ends the job when one
 * collective outlasts timeout_s (MPI_Abort; the one place a rank stops outside main()).
 * Counts above INT_MAX elements go in chunks (MPI counts are int). MPI_Finalize runs at exit.
 */
#include "dist/dist.h"

#ifndef QAT_HAVE_MPI
qat_status qat_dist_mpi_open(const qat_dist_env *e, double timeout_s, qat_dist **out) {
  *out = NULL;
  return QAT_FAIL(QAT_EUNSUPPORTED, "dist: this build has no MPI (install libopenmpi-dev)");
}
#else

#include "core/log.h"

#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK ((int64_t)1 << 30)

typedef struct mpi_impl {
  MPI_Comm comm;
  int owns_init; /* we called MPI_Init_thread, so close finalizes */
  int multiple;  /* MPI_THREAD_MULTIPLE: the watchdog may call MPI_Abort */
  pthread_t watchdog;
  int have_watchdog;
  atomic_int stop;
  _Atomic double op_start; /* monotonic seconds the current collective began; 0: none */
  const char *_Atomic op_name;
} mpi_impl;

static qat_status mpi_fail(int rc, const char *what) {
  char s[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "error %d", rc);
  return QAT_FAIL(QAT_EIO, "dist mpi: %s failed: %s", what, s);
}

static void op_begin(qat_dist *d, const char *what) {
  mpi_impl *I = d->impl;
  atomic_store(&I->op_name, what);
  atomic_store(&I->op_start, qat_now());
}
static void op_end(qat_dist *d) { atomic_store(&((mpi_impl *)d->impl)->op_start, 0.0); }

#define MPI_CALL(d, what, call)                                                                    \
  do {                                                                                             \
    op_begin((d), (what));                                                                         \
    int _rc = (call);                                                                              \
    op_end(d);                                                                                     \
    if (_rc != MPI_SUCCESS) return mpi_fail(_rc, (what));                                          \
  } while (0)

static void *watchdog_main(void *arg) {
  qat_dist *d = arg;
  mpi_impl *I = d->impl;
  struct timespec nap = {0, 200 * 1000 * 1000};
  while (!atomic_load(&I->stop)) {
    nanosleep(&nap, NULL);
    double t0 = atomic_load(&I->op_start);
    if (t0 > 0 && qat_now() - t0 > d->timeout_s) {
      fprintf(stderr,
              "qat: error: dist: rank %d of %d waited %.0f s (dist.timeout_s) in %s: a peer died "
              "or hangs; ending the job\n",
              d->rank, d->world, d->timeout_s, atomic_load(&I->op_name));
      fflush(stderr);
      if (I->multiple) MPI_Abort(MPI_COMM_WORLD, 1);
      _exit(1);
    }
  }
  return NULL;
}

static qat_status mpi_op(qat_dist_op op, MPI_Op *out) {
  switch (op) {
  case QAT_RED_SUM:
  case QAT_RED_AVG: *out = MPI_SUM; return QAT_OK;
  case QAT_RED_MIN: *out = MPI_MIN; return QAT_OK;
  case QAT_RED_MAX: *out = MPI_MAX; return QAT_OK;
  }
  return QAT_FAIL(QAT_EINVAL, "dist mpi: unknown reduction %d", (int)op);
}

/* F32 in place, chunked; AVG divides by world afterwards. */
static qat_status allreduce_f32(qat_dist *d, float *x, int64_t n, qat_dist_op op) {
  mpi_impl *I = d->impl;
  MPI_Op mop = MPI_SUM;
  QAT_TRY(mpi_op(op, &mop));
  for (int64_t i = 0; i < n; i += CHUNK) {
    int c = (int)(n - i < CHUNK ? n - i : CHUNK);
    MPI_CALL(d, "MPI_Allreduce", MPI_Allreduce(MPI_IN_PLACE, x + i, c, MPI_FLOAT, mop, I->comm));
  }
  if (op == QAT_RED_AVG)
    for (int64_t i = 0; i < n; i++) x[i] /= (float)d->world;
  return QAT_OK;
}

static qat_status check_dt(const char *what, qat_dtype dt, int64_t n) {
  if (dt != QAT_F32 && dt != QAT_BF16)
    return QAT_FAIL(QAT_EINVAL, "dist %s: dtype %s (F32 or BF16)", what, qat_dtype_name(dt));
  if (n < 0) return QAT_FAIL(QAT_EINVAL, "dist %s: n = %lld", what, (long long)n);
  return QAT_OK;
}

/* BF16 goes through an F32 copy: summed (and divided) in F32, rounded once. */
static qat_status m_allreduce(qat_dist *d, void *buf, int64_t n, qat_dtype dt, qat_dist_op op) {
  QAT_TRY(check_dt("allreduce", dt, n));
  if (dt == QAT_F32) return allreduce_f32(d, buf, n, op);
  float *f = malloc((size_t)(n ? n : 1) * sizeof *f);
  if (!f) return QAT_FAIL(QAT_ENOMEM, "dist mpi: out of memory for a BF16 all-reduce of %lld",
                          (long long)n);
  uint16_t *h = buf;
  for (int64_t i = 0; i < n; i++) f[i] = qat_bf16_to_f32(h[i]);
  qat_status st = allreduce_f32(d, f, n, op);
  if (st == QAT_OK)
    for (int64_t i = 0; i < n; i++) h[i] = qat_f32_to_bf16(f[i]);
  free(f);
  return st;
}

static qat_status m_broadcast(qat_dist *d, void *buf, size_t bytes, int root) {
  mpi_impl *I = d->impl;
  if (root < 0 || root >= d->world)
    return QAT_FAIL(QAT_EINVAL, "dist broadcast: root %d of %d ranks", root, d->world);
  for (size_t i = 0; i < bytes; i += (size_t)CHUNK) {
    int c = (int)(bytes - i < (size_t)CHUNK ? bytes - i : (size_t)CHUNK);
    MPI_CALL(d, "MPI_Bcast", MPI_Bcast((char *)buf + i, c, MPI_BYTE, root, I->comm));
  }
  return QAT_OK;
}

static qat_status m_allgather(qat_dist *d, const void *send, void *recv, size_t bytes) {
  mpi_impl *I = d->impl;
  if (bytes > INT_MAX)
    return QAT_FAIL(QAT_EUNSUPPORTED, "dist allgather: %zu bytes per rank exceed INT_MAX", bytes);
  const void *s = send == (char *)recv + (size_t)d->rank * bytes ? MPI_IN_PLACE : send;
  MPI_CALL(d, "MPI_Allgather",
           MPI_Allgather(s, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, I->comm));
  return QAT_OK;
}

static qat_status m_reduce_scatter(qat_dist *d, const void *send, void *recv, int64_t n,
                                   qat_dtype dt, qat_dist_op op) {
  mpi_impl *I = d->impl;
  QAT_TRY(check_dt("reduce_scatter", dt, n));
  if (n > INT_MAX)
    return QAT_FAIL(QAT_EUNSUPPORTED, "dist reduce_scatter: %lld per rank exceed INT_MAX",
                    (long long)n);
  MPI_Op mop = MPI_SUM;
  QAT_TRY(mpi_op(op, &mop));
  int64_t total = n * d->world;
  if (dt == QAT_F32) {
    MPI_CALL(d, "MPI_Reduce_scatter_block",
             MPI_Reduce_scatter_block(send, recv, (int)n, MPI_FLOAT, mop, I->comm));
    if (op == QAT_RED_AVG)
      for (int64_t i = 0; i < n; i++) ((float *)recv)[i] /= (float)d->world;
    return QAT_OK;
  }
  float *f = malloc((size_t)(total + n + 1) * sizeof *f);
  if (!f) return QAT_FAIL(QAT_ENOMEM, "dist mpi: out of memory for a BF16 reduce-scatter");
  const uint16_t *hs = send;
  for (int64_t i = 0; i < total; i++) f[i] = qat_bf16_to_f32(hs[i]);
  float *fr = f + total;
  op_begin(d, "MPI_Reduce_scatter_block");
  int rc = MPI_Reduce_scatter_block(f, fr, (int)n, MPI_FLOAT, mop, I->comm);
  op_end(d);
  if (rc == MPI_SUCCESS) {
    uint16_t *hr = recv;
    for (int64_t i = 0; i < n; i++)
      hr[i] = qat_f32_to_bf16(op == QAT_RED_AVG ? fr[i] / (float)d->world : fr[i]);
  }
  free(f);
  return rc == MPI_SUCCESS ? QAT_OK : mpi_fail(rc, "MPI_Reduce_scatter_block");
}

static qat_status m_barrier(qat_dist *d) {
  MPI_CALL(d, "MPI_Barrier", MPI_Barrier(((mpi_impl *)d->impl)->comm));
  return QAT_OK;
}

static qat_status m_f64(qat_dist *d, double *v, int n, qat_dist_op op) {
  MPI_Op mop = MPI_SUM;
  QAT_TRY(mpi_op(op, &mop));
  MPI_CALL(d, "MPI_Allreduce",
           MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, mop, ((mpi_impl *)d->impl)->comm));
  if (op == QAT_RED_AVG)
    for (int i = 0; i < n; i++) v[i] /= d->world;
  return QAT_OK;
}

static qat_status m_i64(qat_dist *d, int64_t *v, int n, qat_dist_op op) {
  if (op == QAT_RED_AVG) return QAT_FAIL(QAT_EINVAL, "dist: no average of integers");
  MPI_Op mop = MPI_SUM;
  QAT_TRY(mpi_op(op, &mop));
  MPI_CALL(d, "MPI_Allreduce",
           MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, mop, ((mpi_impl *)d->impl)->comm));
  return QAT_OK;
}

/* MPI_Finalize waits for every rank. It runs at exit, after main() printed its status: with
 * mpirun's default policy the first rank to exit non-zero gets the others killed, so a rank that
 * finalized before printing could lose its one-line error. */
static atomic_int g_finalize_at_exit;
static void finalize_at_exit(void) {
  if (atomic_load(&g_finalize_at_exit)) MPI_Finalize();
}

static void m_close(qat_dist *d, int clean) {
  mpi_impl *I = d->impl;
  if (I->have_watchdog) {
    atomic_store(&I->stop, 1);
    pthread_join(I->watchdog, NULL);
  }
  /* a failed rank leaves without MPI_Finalize (which waits for the peers): its exit status
   * makes the launcher end the job */
  if (clean) {
    MPI_Comm_free(&I->comm);
    if (I->owns_init) atomic_store(&g_finalize_at_exit, 1);
  }
  free(I);
  free(d);
}

qat_status qat_dist_mpi_open(const qat_dist_env *e, double timeout_s, qat_dist **out) {
  *out = NULL;
  int inited = 0, provided = 0;
  MPI_Initialized(&inited);
  mpi_impl *I = calloc(1, sizeof *I);
  qat_dist *d = calloc(1, sizeof *d);
  if (!I || !d) {
    free(I);
    free(d);
    return QAT_FAIL(QAT_ENOMEM, "dist mpi: out of memory");
  }
  if (!inited) {
    int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS) {
      free(I);
      free(d);
      return QAT_FAIL(QAT_EIO, "dist mpi: MPI_Init_thread failed (error %d)", rc);
    }
    I->owns_init = 1;
    atexit(finalize_at_exit);
  } else {
    MPI_Query_thread(&provided);
  }
  I->multiple = provided >= MPI_THREAD_MULTIPLE;
  int rc = MPI_Comm_dup(MPI_COMM_WORLD, &I->comm);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler(I->comm, MPI_ERRORS_RETURN);
  int rank = 0, world = 1;
  if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(I->comm, &rank);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_size(I->comm, &world);
  if (rc != MPI_SUCCESS) {
    free(I);
    free(d);
    return mpi_fail(rc, "MPI_Comm_dup / rank / size");
  }
  *d = (qat_dist){.name = "mpi", .rank = rank, .world = world, .local_rank = e->local_rank,
                  .device = QAT_DEV_CPU, .timeout_s = timeout_s, .allreduce = m_allreduce,
                  .broadcast = m_broadcast, .allgather = m_allgather,
                  .reduce_scatter = m_reduce_scatter, .barrier = m_barrier,
                  .allreduce_f64 = m_f64, .allreduce_i64 = m_i64, .allgather_host = m_allgather,
                  .close = m_close, .impl = I};
  if (world != e->world || rank != e->rank) {
    qat_status st = QAT_FAIL(QAT_EUSAGE,
                             "dist mpi: MPI says rank %d of %d but %s's environment says %d of %d",
                             rank, world, e->launcher, e->rank, e->world);
    m_close(d, 1);
    return st;
  }
  if (timeout_s > 0) {
    if (pthread_create(&I->watchdog, NULL, watchdog_main, d) != 0) {
      m_close(d, 1);
      return QAT_FAIL(QAT_EINTERNAL, "dist mpi: cannot start the watchdog thread");
    }
    I->have_watchdog = 1;
  }
  *out = d;
  return QAT_OK;
}
#endif
