/* ZeRO-1 checkpoint shards (see zero_ckpt.h). */
#include "train/zero_ckpt.h"

#include "io/fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static qat_status shard_path(const qat_train_job *J, const char *dir, char *file, size_t n) {
  char name[64];
  snprintf(name, sizeof name, "optim-rank%05d.safetensors", J->dist->rank);
  return qat_path_join(file, n, dir, name);
}

static qat_status write_shard(qat_train_job *J, const char *dir) {
  char file[4096], num[32];
  QAT_TRY(shard_path(J, dir, file, sizeof file));
  qat_ckpt_writer w;
  qat_ckpt_writer_init(&w);
  qat_eqat_bufs bufs = {0};
  qat_status st = qat_eqat_ckpt_add_device(J->be, &J->opt.shard_m, "optim.m", &w, &bufs);
  if (st == QAT_OK) st = qat_eqat_ckpt_add_device(J->be, &J->opt.shard_v, "optim.v", &w, &bufs);
  snprintf(num, sizeof num, "%d", J->dist->rank);
  if (st == QAT_OK) st = qat_st_writer_meta(&w.st, "rank", num);
  snprintf(num, sizeof num, "%d", J->dist->world);
  if (st == QAT_OK) st = qat_st_writer_meta(&w.st, "world", num);
  if (st == QAT_OK) st = qat_st_write(&w.st, file);
  qat_eqat_bufs_free(&bufs);
  qat_ckpt_writer_free(&w);
  return st;
}

qat_status qat_zero_ckpt_share(qat_train_job *J, const char *tmp, qat_status st) {
  enum { P = 4096 };
  char mine[P] = {0};
  if (tmp) snprintf(mine, sizeof mine, "%s", tmp);
  char *all = calloc((size_t)J->dist->world, P);
  if (!all) return qat_dist_agree(J->dist, QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory"));
  qat_status cs = J->dist->allgather_host(J->dist, mine, all, P);
  if (cs != QAT_OK) {
    free(all);
    return cs;
  }
  all[P - 1] = 0;
  if (st == QAT_OK && all[0]) st = write_shard(J, all);
  free(all);
  return qat_dist_agree(J->dist, st);
}

qat_status qat_zero_ckpt_hook(void *ctx, const char *tmp) {
  qat_zero_ckpt_ctx *c = ctx;
  c->shared = 1;
  return qat_zero_ckpt_share(c->J, tmp, QAT_OK);
}

qat_status qat_zero_ckpt_fields(const qat_train_job *J, qat_ckpt_writer *w) {
  qat_status st = qat_ckpt_set_int(w, "zero", 1);
  if (st == QAT_OK) st = qat_ckpt_set_int(w, "zero_flat", J->opt.flat_n);
  if (st == QAT_OK) st = qat_ckpt_set_int(w, "zero_shard", J->opt.shard);
  /* the flat order: the parameters' names, comma-separated (regathering needs nothing else) */
  size_t len = 1;
  for (int i = 0; i < J->opt.n; i++) len += strlen(J->opt.params[i].name) + 1;
  char *names = st == QAT_OK ? malloc(len) : NULL;
  if (st == QAT_OK && !names) st = QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory");
  if (names) {
    size_t k = 0;
    for (int i = 0; i < J->opt.n; i++)
      k += (size_t)sprintf(names + k, "%s%s", i ? "," : "", J->opt.params[i].name);
    names[k] = 0;
    st = qat_ckpt_set_str(w, "zero_params", names);
    free(names);
  }
  return st;
}

qat_status qat_zero_ckpt_check(const qat_train_job *J, const qat_ckpt *ck, const char *dir) {
  int64_t zero = 0, flat = 0, shard = 0;
  if (qat_ckpt_has(ck, "zero")) QAT_TRY(qat_ckpt_get_int(ck, "zero", &zero));
  if (zero != J->opt.sharded)
    return QAT_FAIL(QAT_EUSAGE,
                    "%s was saved with dist.zero = %lld but this job has dist.zero = %d: resume "
                    "it with dist.zero = %lld",
                    dir, (long long)zero, J->opt.sharded, (long long)zero);
  if (!zero) return QAT_OK;
  int64_t world = 1;
  QAT_TRY(qat_ckpt_get_int(ck, "zero_flat", &flat));
  QAT_TRY(qat_ckpt_get_int(ck, "zero_shard", &shard));
  if (qat_ckpt_get_int(ck, "world", &world) != QAT_OK) world = 1;
  /* the flat order is the job's own (same parameters); the shard follows from the world */
  if (flat != J->opt.flat_n || world < 1 || shard != (flat + world - 1) / world)
    return QAT_FAIL(QAT_EFORMAT,
                    "%s: ZeRO-1 layout of %lld parameters in %lld shards of %lld, but this job "
                    "trains %lld in shards of %lld",
                    dir, (long long)flat, (long long)world, (long long)shard,
                    (long long)J->opt.flat_n, (long long)J->opt.shard);
  return QAT_OK;
}

/* Elements [lo, hi) of the saved flat moments from the files that hold them into m, v (host). */
static qat_status read_range(const char *dir, int64_t S0, int64_t lo, int64_t hi, float *m,
                             float *v, float *tmp) {
  const char *names[2] = {"optim.m", "optim.v"};
  float *dst[2] = {m, v};
  for (int64_t q = lo / S0; lo < hi && q <= (hi - 1) / S0; q++) {
    char file[4096], name[64];
    snprintf(name, sizeof name, "optim-rank%05lld.safetensors", (long long)q);
    QAT_TRY(qat_path_join(file, sizeof file, dir, name));
    qat_st_file f;
    QAT_TRY(qat_st_open(file, &f));
    qat_status st = QAT_OK;
    int64_t a = lo > q * S0 ? lo : q * S0, b = hi < (q + 1) * S0 ? hi : (q + 1) * S0;
    for (int k = 0; st == QAT_OK && k < 2; k++) {
      const qat_st_tensor *t = qat_st_find(&f, names[k]);
      if (!t || t->ndim != 1 || t->shape[0] != S0)
        st = QAT_FAIL(QAT_EFORMAT, "%s: tensor %s missing or not [%lld]", file, names[k],
                      (long long)S0);
      if (st == QAT_OK) st = qat_st_read_f32(t, tmp);
      if (st == QAT_OK) memcpy(dst[k] + (a - lo), tmp + (a - q * S0), (size_t)(b - a) * 4);
    }
    qat_st_close(&f);
    QAT_TRY(st);
  }
  return QAT_OK;
}

qat_status qat_zero_ckpt_read(qat_train_job *J, const qat_ckpt *ck, const char *dir) {
  int64_t S0 = 0, N = J->opt.flat_n, S = J->opt.shard;
  QAT_TRY(qat_ckpt_get_int(ck, "zero_shard", &S0)); /* checked by qat_zero_ckpt_check */
  /* this rank's shard [r S, r S + S) of the flat moments, wherever the saving world put it;
   * the padding past N stays zero */
  int64_t lo = (int64_t)J->dist->rank * S, hi = lo + S < N ? lo + S : N;
  float *buf = calloc((size_t)(2 * S + S0) + 1, sizeof(float));
  if (!buf) return QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory");
  qat_status st = read_range(dir, S0, lo, hi > lo ? hi : lo, buf, buf + S, buf + 2 * S);
  if (st == QAT_OK) st = J->be->upload(J->be, J->opt.shard_m.data, buf, (size_t)S * 4);
  if (st == QAT_OK) st = J->be->upload(J->be, J->opt.shard_v.data, buf + S, (size_t)S * 4);
  free(buf);
  return st;
}
