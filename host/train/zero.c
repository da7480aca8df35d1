/* ZeRO-1 gradient reduce-scatter and parameter all-gather (see zero.h). */
#include "train/zero.h"

#include <string.h>

size_t qat_zero_buffer_bytes(int64_t flat_n, int world) {
  if (world <= 1) return 0;
  int64_t shard = (flat_n + world - 1) / world;
  return (size_t)(world + 1) * (size_t)shard * sizeof(float);
}

qat_status qat_zero_init(qat_zero *z, const qat_optim *o, const qat_dist *d) {
  memset(z, 0, sizeof *z);
  if (!o->sharded || o->world != d->world || o->rank != d->rank)
    return QAT_FAIL(QAT_EINTERNAL, "ZeRO-1: the optimizer is not sharded for rank %d of %d",
                    d->rank, d->world);
  if (d->world == 1 || o->shard == 0) return QAT_OK;
  int64_t S = o->shard, W = d->world;
  QAT_TRY(qat_arena_init(&z->arena, o->be, "ZeRO-1 gradient / parameter buffers",
                         qat_arena_need(QAT_F32, W * S) + qat_arena_need(QAT_F32, S)));
  QAT_TRY(qat_arena_tensor(&z->arena, &z->flat, QAT_F32, 1, (int64_t[]){W * S}, "zero flat"));
  QAT_TRY(qat_arena_tensor(&z->arena, &z->shard, QAT_F32, 1, (int64_t[]){S}, "zero shard"));
  return QAT_OK; /* the arena is zeroed: the padding tail of flat stays 0 */
}

void qat_zero_free(qat_zero *z) {
  qat_arena_free(&z->arena);
  memset(z, 0, sizeof *z);
}

/* Copies between parameter i's owned part (tensor t: its p or g) and buf at its flat offset
 * relative to base (to_buf: t -> buf). */
static qat_status copy_owned(const qat_optim *o, int i, const qat_tensor *t, float *buf,
                             int64_t base, int to_buf) {
  if (o->own_n[i] == 0) return QAT_OK;
  float *tp = (float *)t->data + o->own_lo[i];
  float *bp = buf + (o->flat_off[i] + o->own_lo[i] - base);
  size_t bytes = (size_t)o->own_n[i] * sizeof(float);
  return to_buf ? o->be->copy(o->be, bp, tp, bytes) : o->be->copy(o->be, tp, bp, bytes);
}

qat_status qat_zero_reduce_grads(qat_zero *z, qat_dist *d, const qat_optim *o) {
  if (d->world == 1 || o->shard == 0) return QAT_OK;
  float *flat = (float *)z->flat.data;
  for (int i = 0; i < o->n; i++) { /* every gradient, whole, at its flat offset */
    size_t bytes = (size_t)qat_numel(o->params[i].g) * sizeof(float);
    QAT_TRY(o->be->copy(o->be, flat + o->flat_off[i], o->params[i].g->data, bytes));
  }
  QAT_TRY(d->reduce_scatter(d, flat, z->shard.data, o->shard, QAT_F32, QAT_RED_SUM));
  int64_t base = (int64_t)d->rank * o->shard;
  for (int i = 0; i < o->n; i++)
    QAT_TRY(copy_owned(o, i, o->params[i].g, (float *)z->shard.data, base, 0));
  return QAT_OK;
}

qat_status qat_zero_gather_params(qat_zero *z, qat_dist *d, const qat_optim *o) {
  if (d->world == 1 || o->shard == 0) return QAT_OK;
  int64_t base = (int64_t)d->rank * o->shard;
  for (int i = 0; i < o->n; i++)
    QAT_TRY(copy_owned(o, i, o->params[i].p, (float *)z->shard.data, base, 1));
  QAT_TRY(d->allgather(d, z->shard.data, z->flat.data, (size_t)o->shard * sizeof(float)));
  const float *flat = (const float *)z->flat.data;
  for (int i = 0; i < o->n; i++) {
    size_t bytes = (size_t)qat_numel(o->params[i].p) * sizeof(float);
    QAT_TRY(o->be->copy(o->be, o->params[i].p->data, flat + o->flat_off[i], bytes));
  }
  return QAT_OK;
}
