/* AdamW with parameter groups over the backend's adamw op. */
#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

qat_status qat_optim_init(qat_optim *o, const qat_backend *be, qat_param *params, int nparams,
                          const qat_optim_group groups[3]) {
  memset(o, 0, sizeof *o);
  o->be = be;
  o->beta1 = 0.9;
  o->beta2 = 0.999;
  o->eps = 1e-8;
  memcpy(o->groups, groups, sizeof o->groups);
  o->params = calloc((size_t)nparams + 1, sizeof *o->params);
  o->m = calloc((size_t)nparams + 1, sizeof *o->m);
  o->v = calloc((size_t)nparams + 1, sizeof *o->v);
  if (!o->params || !o->m || !o->v) return QAT_FAIL(QAT_ENOMEM, "optimizer: out of memory");
  size_t need = 0;
  for (int i = 0; i < nparams; i++)
    if (groups[params[i].group].enabled) {
      o->params[o->n++] = params[i];
      need += 2 * qat_arena_need(QAT_F32, qat_numel(params[i].p));
    }
  QAT_TRY(qat_arena_init(&o->arena, be, "optimizer moments", need));
  for (int i = 0; i < o->n; i++) {
    const qat_tensor *p = o->params[i].p;
    QAT_TRY(qat_arena_tensor(&o->arena, &o->m[i], QAT_F32, p->ndim, p->shape, o->params[i].name));
    QAT_TRY(qat_arena_tensor(&o->arena, &o->v[i], QAT_F32, p->ndim, p->shape, o->params[i].name));
  }
  return QAT_OK;
}

qat_tensor qat_optim_view(const qat_tensor *t, int64_t lo, int64_t n) {
  qat_tensor v = *t;
  v.data = (char *)t->data + (size_t)lo * sizeof(float);
  v.ndim = 1;
  v.shape[0] = n;
  v.arena = NULL;
  return v;
}

qat_status qat_optim_init_shard(qat_optim *o, const qat_backend *be, qat_param *params,
                                int nparams, const qat_optim_group groups[3], int rank,
                                int world) {
  memset(o, 0, sizeof *o);
  if (world < 1 || rank < 0 || rank >= world)
    return QAT_FAIL(QAT_EINVAL, "optimizer: rank %d of world %d", rank, world);
  o->be = be;
  o->beta1 = 0.9;
  o->beta2 = 0.999;
  o->eps = 1e-8;
  o->sharded = 1;
  o->rank = rank;
  o->world = world;
  memcpy(o->groups, groups, sizeof o->groups);
  size_t k = (size_t)nparams + 1;
  o->params = calloc(k, sizeof *o->params);
  o->m = calloc(k, sizeof *o->m);
  o->v = calloc(k, sizeof *o->v);
  o->flat_off = calloc(k, sizeof *o->flat_off);
  o->own_lo = calloc(k, sizeof *o->own_lo);
  o->own_n = calloc(k, sizeof *o->own_n);
  if (!o->params || !o->m || !o->v || !o->flat_off || !o->own_lo || !o->own_n)
    return QAT_FAIL(QAT_ENOMEM, "optimizer: out of memory");
  for (int i = 0; i < nparams; i++)
    if (groups[params[i].group].enabled) {
      const qat_param *p = &params[i];
      if (p->p->dtype != QAT_F32 || p->g->dtype != QAT_F32)
        return QAT_FAIL(QAT_EINVAL, "optimizer: ZeRO-1 needs F32 parameters; %s is %s", p->name,
                        qat_dtype_name(p->p->dtype));
      o->flat_off[o->n] = o->flat_n;
      o->flat_n += qat_numel(p->p);
      o->params[o->n++] = *p;
    }
  o->shard = (o->flat_n + world - 1) / world;
  int64_t lo = (int64_t)rank * o->shard, hi = lo + o->shard;
  QAT_TRY(qat_arena_init(&o->arena, be, "optimizer moments (ZeRO-1 shard)",
                         2 * qat_arena_need(QAT_F32, o->shard > 0 ? o->shard : 1)));
  qat_tensor *m = &o->shard_m, *v = &o->shard_v;
  int64_t shp[1] = {o->shard > 0 ? o->shard : 1};
  QAT_TRY(qat_arena_tensor(&o->arena, m, QAT_F32, 1, shp, "optim.m"));
  QAT_TRY(qat_arena_tensor(&o->arena, v, QAT_F32, 1, shp, "optim.v"));
  for (int i = 0; i < o->n; i++) {
    int64_t a = o->flat_off[i], b = a + qat_numel(o->params[i].p);
    int64_t s = a > lo ? a : lo, e = b < hi ? b : hi;
    o->own_lo[i] = s < e ? s - a : 0;
    o->own_n[i] = s < e ? e - s : 0;
    if (s < e) {
      o->m[i] = qat_optim_view(m, s - lo, e - s);
      o->v[i] = qat_optim_view(v, s - lo, e - s);
    }
  }
  return QAT_OK;
}

size_t qat_optim_moment_bytes(const qat_optim *o) {
  if (o->sharded) return 2 * (size_t)o->shard * sizeof(float);
  size_t b = 0;
  for (int i = 0; i < o->n; i++) b += 2 * (size_t)qat_numel(o->params[i].p) * sizeof(float);
  return b;
}

void qat_optim_free(qat_optim *o) {
  qat_arena_free(&o->arena);
  free(o->flat_off);
  free(o->own_lo);
  free(o->own_n);
  free(o->params);
  free(o->m);
  free(o->v);
  memset(o, 0, sizeof *o);
}

qat_status qat_optim_grad_sumsq(const qat_optim *o, double *sumsq) {
  double total = 0;
  for (int i = 0; i < o->n; i++) {
    double s = 0;
    if (!o->sharded) {
      QAT_TRY(QAT_OP(o->be, sumsq, o->params[i].g, &s));
    } else if (o->own_n[i] > 0) {
      qat_tensor g = qat_optim_view(o->params[i].g, o->own_lo[i], o->own_n[i]);
      QAT_TRY(QAT_OP(o->be, sumsq, &g, &s));
    }
    total += s;
  }
  *sumsq = total;
  return QAT_OK;
}

qat_status qat_optim_grad_norm(const qat_optim *o, double *norm) {
  double total = 0;
  QAT_TRY(qat_optim_grad_sumsq(o, &total));
  *norm = sqrt(total);
  return QAT_OK;
}

qat_status qat_optim_scale_grads(const qat_optim *o, float alpha) {
  for (int i = 0; i < o->n; i++) {
    if (!o->sharded) {
      QAT_TRY(QAT_OP(o->be, scale, alpha, o->params[i].g));
    } else if (o->own_n[i] > 0) {
      qat_tensor g = qat_optim_view(o->params[i].g, o->own_lo[i], o->own_n[i]);
      QAT_TRY(QAT_OP(o->be, scale, alpha, &g));
    }
  }
  return QAT_OK;
}

static int is_scale(const qat_param *p) {
  size_t n = strlen(p->name), k = strlen(".scales");
  return p->group == QAT_PG_QUANT && n >= k && strcmp(p->name + n - k, ".scales") == 0;
}

qat_status qat_optim_step(qat_optim *o, const double lr[3]) {
  o->t++;
  for (int i = 0; i < o->n; i++) {
    qat_param *p = &o->params[i];
    const qat_optim_group *g = &o->groups[p->group];
    if (o->sharded) { /* the owned elements (the adamw op is elementwise) */
      if (o->own_n[i] == 0) continue;
      qat_tensor w = qat_optim_view(p->p, o->own_lo[i], o->own_n[i]);
      qat_tensor dw = qat_optim_view(p->g, o->own_lo[i], o->own_n[i]);
      QAT_TRY(QAT_OP(o->be, adamw, &w, &dw, &o->m[i], &o->v[i], (float)lr[p->group],
                     (float)o->beta1, (float)o->beta2, (float)o->eps, (float)g->weight_decay,
                     o->t));
      if (o->scale_f16 && is_scale(p)) QAT_TRY(QAT_OP(o->be, fq_scale_f16, &w));
      continue;
    }
    QAT_TRY(QAT_OP(o->be, adamw, p->p, p->g, &o->m[i], &o->v[i], (float)lr[p->group],
                   (float)o->beta1, (float)o->beta2, (float)o->eps, (float)g->weight_decay, o->t));
    if (o->scale_f16 && is_scale(p)) QAT_TRY(QAT_OP(o->be, fq_scale_f16, p->p));
  }
  return QAT_OK;
}
