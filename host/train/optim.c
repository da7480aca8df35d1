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

void qat_optim_free(qat_optim *o) {
  qat_arena_free(&o->arena);
  free(o->params);
  free(o->m);
  free(o->v);
  memset(o, 0, sizeof *o);
}

qat_status qat_optim_grad_norm(const qat_optim *o, double *norm) {
  double total = 0;
  for (int i = 0; i < o->n; i++) {
    double s = 0;
    QAT_TRY(QAT_OP(o->be, sumsq, o->params[i].g, &s));
    total += s;
  }
  *norm = sqrt(total);
  return QAT_OK;
}

qat_status qat_optim_scale_grads(const qat_optim *o, float alpha) {
  for (int i = 0; i < o->n; i++) QAT_TRY(QAT_OP(o->be, scale, alpha, o->params[i].g));
  return QAT_OK;
}

qat_status qat_optim_step(qat_optim *o, const double lr[3]) {
  o->t++;
  for (int i = 0; i < o->n; i++) {
    qat_param *p = &o->params[i];
    const qat_optim_group *g = &o->groups[p->group];
    QAT_TRY(QAT_OP(o->be, adamw, p->p, p->g, &o->m[i], &o->v[i], (float)lr[p->group],
                   (float)o->beta1, (float)o->beta2, (float)o->eps, (float)g->weight_decay, o->t));
  }
  return QAT_OK;
}
