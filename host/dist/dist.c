/* Rank discovery, the choice of implementation and the start-up agreement (see dist.h). */
#include "dist/dist.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One non-negative integer variable; *found = 0 when unset. */
static qat_status env_int(const char *name, int *v, int *found) {
  const char *s = getenv(name);
  *found = 0;
  if (!s || !*s) return QAT_OK;
  char *end = NULL;
  errno = 0;
  long x = strtol(s, &end, 10);
  if (errno || *end || x < 0 || x > 1 << 24)
    return QAT_FAIL(QAT_EUSAGE, "dist: environment variable %s = \"%s\" is not a rank count", name,
                    s);
  *v = (int)x;
  *found = 1;
  return QAT_OK;
}

/* A launcher family: rank and size variables both set, local rank optional (default rank). */
static qat_status family(const char *launcher, const char *rk, const char *sz, const char *lr,
                         const char *ls, qat_dist_env *e, int *found) {
  int fr = 0, fs = 0, fl = 0, fw = 0;
  int r = 0, w = 1, l = 0, lw = 1;
  QAT_TRY(env_int(rk, &r, &fr));
  QAT_TRY(env_int(sz, &w, &fs));
  *found = fr && fs;
  if (!*found) return QAT_OK;
  QAT_TRY(env_int(lr, &l, &fl));
  if (ls) QAT_TRY(env_int(ls, &lw, &fw));
  if (w < 1) return QAT_FAIL(QAT_EUSAGE, "dist: %s = 0 ranks", sz);
  if (r >= w) return QAT_FAIL(QAT_EUSAGE, "dist: %s = %d but %s = %d", rk, r, sz, w);
  *e = (qat_dist_env){.rank = r, .world = w, .local_rank = fl ? l : r,
                      .local_world = fw ? lw : (fl ? l + 1 : w), .launcher = launcher};
  return QAT_OK;
}

qat_status qat_dist_env_detect(qat_dist_env *e) {
  *e = (qat_dist_env){.rank = 0, .world = 1, .local_rank = 0, .local_world = 1, .launcher = "none"};
  int found = 0;
  QAT_TRY(family("mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                 "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", e, &found));
  if (!found)
    QAT_TRY(family("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
                   "SLURM_NTASKS_PER_NODE", e, &found));
  if (!found)
    QAT_TRY(family("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", e, &found));
  return QAT_OK;
}

const char *qat_dist_kind_name(qat_dist_kind k) {
  switch (k) {
  case QAT_DIST_AUTO: return "auto";
  case QAT_DIST_SINGLE: return "single";
  case QAT_DIST_MPI: return "mpi";
  case QAT_DIST_NCCL: return "nccl";
  }
  return "?";
}

qat_status qat_dist_kind_parse(const char *s, qat_dist_kind *out) {
  for (int k = QAT_DIST_AUTO; k <= QAT_DIST_NCCL; k++)
    if (!strcmp(s, qat_dist_kind_name((qat_dist_kind)k))) {
      *out = (qat_dist_kind)k;
      return QAT_OK;
    }
  return QAT_FAIL(QAT_EUSAGE, "dist.backend: \"%s\" is not one of auto, single, mpi, nccl", s);
}

int qat_dist_have(qat_dist_kind k) {
  switch (k) {
  case QAT_DIST_AUTO:
  case QAT_DIST_SINGLE: return 1;
#ifdef QAT_HAVE_MPI
  case QAT_DIST_MPI: return 1;
#endif
#ifdef QAT_HAVE_NCCL
  case QAT_DIST_NCCL: return 1;
#endif
  default: return 0;
  }
}

qat_status qat_dist_open(qat_dist_kind kind, qat_device device, double timeout_s, qat_dist **out) {
  *out = NULL;
  qat_dist_env e;
  QAT_TRY(qat_dist_env_detect(&e));
  if (timeout_s < 0) return QAT_FAIL(QAT_EUSAGE, "dist.timeout_s = %g must be >= 0", timeout_s);
  if (kind == QAT_DIST_AUTO)
    kind = e.world == 1 ? QAT_DIST_SINGLE : device == QAT_DEV_CUDA ? QAT_DIST_NCCL : QAT_DIST_MPI;
  if (kind == QAT_DIST_SINGLE) {
    if (e.world > 1)
      return QAT_FAIL(QAT_EUSAGE,
                      "dist.backend = single but %s started %d ranks (use auto, mpi or nccl)",
                      e.launcher, e.world);
    *out = qat_dist_single();
    return QAT_OK;
  }
  if (!qat_dist_have(kind))
    return QAT_FAIL(QAT_EUNSUPPORTED, "dist.backend = %s: this build has no %s (rebuild with %s)",
                    qat_dist_kind_name(kind), kind == QAT_DIST_MPI ? "MPI" : "NCCL",
                    kind == QAT_DIST_MPI ? "libopenmpi-dev installed" : "CUDA and NCCL found");
  if (kind == QAT_DIST_MPI && device != QAT_DEV_CPU)
    return QAT_FAIL(QAT_EUNSUPPORTED,
                    "dist.backend = mpi reduces host buffers; device cuda needs dist.backend nccl");
  if (kind == QAT_DIST_NCCL && device != QAT_DEV_CUDA)
    return QAT_FAIL(QAT_EUNSUPPORTED,
                    "dist.backend = nccl reduces device buffers; device cpu needs dist.backend mpi");
  if (kind == QAT_DIST_MPI && strcmp(e.launcher, "mpirun") && strcmp(e.launcher, "slurm") &&
      e.world > 1)
    return QAT_FAIL(QAT_EUSAGE, "dist.backend = mpi needs mpirun or srun; %s started %d ranks",
                    e.launcher, e.world);
  return kind == QAT_DIST_MPI ? qat_dist_mpi_open(&e, timeout_s, out)
                              : qat_dist_nccl_open(&e, timeout_s, out);
}

qat_status qat_dist_allreduce_start(qat_dist *d, void *buf, int64_t n, qat_dtype dt,
                                    qat_dist_op op, void *stream, void **req) {
  *req = NULL;
  if (d->allreduce_start) return d->allreduce_start(d, buf, n, dt, op, stream, req);
  return d->allreduce(d, buf, n, dt, op); /* host implementations: done on return */
}

qat_status qat_dist_allreduce_wait(qat_dist *d, void *req, void *stream, int host) {
  if (!req || !d->allreduce_wait) return QAT_OK;
  return d->allreduce_wait(d, req, stream, host);
}

void qat_dist_close(qat_dist *d, int clean) {
  if (d && d->close) d->close(d, clean);
}

qat_status qat_dist_agree(qat_dist *d, qat_status st) {
  if (d->world == 1) return st;
  /* the lowest failing rank and its code: MIN over (fail ? rank : world), MAX over the code */
  /* the lowest failing rank and its code: MIN over (failed ? rank : world) and over -code;
   * the collectives only touch this thread's message when they fail themselves */
  int64_t lo[1] = {st != QAT_OK ? d->rank : d->world}, code[1] = {-(int64_t)st};
  QAT_TRY(d->allreduce_i64(d, lo, 1, QAT_RED_MIN));
  QAT_TRY(d->allreduce_i64(d, code, 1, QAT_RED_MIN));
  if (lo[0] >= d->world || st != QAT_OK) return st;
  return QAT_FAIL((qat_status)(-code[0]), "rank %lld of %d failed (see its message)",
                  (long long)lo[0], d->world);
}

qat_status qat_dist_check_same(qat_dist *d, uint64_t v, const char *what) {
  if (d->world == 1) return QAT_OK;
  uint64_t *all = malloc(sizeof *all * (size_t)d->world);
  if (!all) return QAT_FAIL(QAT_ENOMEM, "dist: out of memory");
  qat_status st = d->allgather_host(d, &v, all, sizeof v);
  for (int r = 1; st == QAT_OK && r < d->world; r++)
    if (all[r] != all[0])
      st = QAT_FAIL(QAT_EUSAGE,
                    "dist: rank %d's %s differs from rank 0's (%016llx vs %016llx): every rank "
                    "must run the same config and overrides",
                    r, what, (unsigned long long)all[r], (unsigned long long)all[0]);
  free(all);
  return st;
}
