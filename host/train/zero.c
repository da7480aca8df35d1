/* ZeRO-1 gradient reduce-scatter and parameter all-gather, in buckets (see zero.h). */
#include "train/zero.h"

#include <string.h>

static int64_t bucket_of(int64_t shard, double bucket_bytes) {
  int64_t b = (int64_t)(bucket_bytes / sizeof(float));
  if (b < 1) b = 1;
  return b < shard ? b : shard;
}

size_t qat_zero_buffer_bytes(int64_t flat_n, int world, double bucket_bytes) {
  if (world <= 1 || flat_n == 0) return 0;
  int64_t b = bucket_of((flat_n + world - 1) / world, bucket_bytes);
  return (size_t)(world + 1) * (size_t)b * sizeof(float);
}

qat_status qat_zero_init(qat_zero *z, const qat_optim *o, const qat_dist *d, double bucket_bytes) {
  memset(z, 0, sizeof *z);
  if (!o->sharded || o->world != d->world || o->rank != d->rank)
    return QAT_FAIL(QAT_EINTERNAL, "ZeRO-1: the optimizer is not sharded for rank %d of %d",
                    d->rank, d->world);
  if (d->world == 1 || o->shard == 0) return QAT_OK;
  int64_t b = bucket_of(o->shard, bucket_bytes), W = d->world;
  z->bucket = b;
  QAT_TRY(qat_arena_init(&z->arena, o->be, "ZeRO-1 gradient / parameter buckets",
                         qat_arena_need(QAT_F32, W * b) + qat_arena_need(QAT_F32, b)));
  QAT_TRY(qat_arena_tensor(&z->arena, &z->send, QAT_F32, 1, (int64_t[]){W * b}, "zero send"));
  QAT_TRY(qat_arena_tensor(&z->arena, &z->recv, QAT_F32, 1, (int64_t[]){b}, "zero recv"));
  return QAT_OK;
}

void qat_zero_free(qat_zero *z) {
  qat_arena_free(&z->arena);
  memset(z, 0, sizeof *z);
}

/* Copies flat elements [lo, lo + n) between the parameters (their gradients when grad) and
 * buf[0, n) (to_buf: parameters -> buf). Returns in *covered how many of them are parameters
 * (the rest, at the end, is padding: flat_n <= lo + n). */
static qat_status copy_range(const qat_optim *o, int grad, int64_t lo, int64_t n, float *buf,
                             int to_buf, int64_t *covered) {
  int64_t hi = lo + n;
  *covered = (o->flat_n < hi ? o->flat_n : hi) - lo;
  if (*covered < 0) *covered = 0;
  for (int i = 0; i < o->n; i++) {
    const qat_tensor *t = grad ? o->params[i].g : o->params[i].p;
    int64_t a = o->flat_off[i], b = a + qat_numel(t);
    int64_t s = a > lo ? a : lo, e = b < hi ? b : hi;
    if (s >= e) continue;
    float *tp = (float *)t->data + (s - a), *bp = buf + (s - lo);
    size_t bytes = (size_t)(e - s) * sizeof(float);
    QAT_TRY(to_buf ? o->be->copy(o->be, bp, tp, bytes) : o->be->copy(o->be, tp, bp, bytes));
  }
  return QAT_OK;
}

qat_status qat_zero_reduce_grads(qat_zero *z, qat_dist *d, const qat_optim *o) {
  if (d->world == 1 || o->shard == 0) return QAT_OK;
  float *send = (float *)z->send.data, *recv = (float *)z->recv.data;
  int64_t S = o->shard, cov;
  for (int64_t k = 0; k < S; k += z->bucket) {
    int64_t c = S - k < z->bucket ? S - k : z->bucket;
    for (int r = 0; r < d->world; r++) { /* rank r's slice: its shard's elements [k, k + c) */
      QAT_TRY(copy_range(o, 1, (int64_t)r * S + k, c, send + (int64_t)r * c, 1, &cov));
      if (cov < c) /* the padding sums as zeros */
        QAT_TRY(o->be->memset0(o->be, send + (int64_t)r * c + cov, (size_t)(c - cov) * 4));
    }
    QAT_TRY(d->reduce_scatter(d, send, recv, c, QAT_F32, QAT_RED_SUM));
    QAT_TRY(copy_range(o, 1, (int64_t)d->rank * S + k, c, recv, 0, &cov));
  }
  return QAT_OK;
}

qat_status qat_zero_gather_params(qat_zero *z, qat_dist *d, const qat_optim *o) {
  if (d->world == 1 || o->shard == 0) return QAT_OK;
  float *send = (float *)z->send.data, *recv = (float *)z->recv.data;
  int64_t S = o->shard, cov;
  for (int64_t k = 0; k < S; k += z->bucket) {
    int64_t c = S - k < z->bucket ? S - k : z->bucket;
    QAT_TRY(copy_range(o, 0, (int64_t)d->rank * S + k, c, recv, 1, &cov));
    if (cov < c) QAT_TRY(o->be->memset0(o->be, recv + cov, (size_t)(c - cov) * 4));
    QAT_TRY(d->allgather(d, recv, send, (size_t)c * sizeof(float)));
    for (int r = 0; r < d->world; r++)
      QAT_TRY(copy_range(o, 0, (int64_t)r * S + k, c, send + (int64_t)r * c, 0, &cov));
  }
  return QAT_OK;
}
