/* Loading a Hugging Face folder: config.json, then every tensor of the model's table from
 * model.safetensors or its shards, checked against the config (shape, finiteness), converted to
 * F32 on the host and uploaded into the params arena. lm_head.weight is ignored when tied;
 * tensors the model does not use (e.g. rotary_emb.inv_freq of old checkpoints) are ignored.
 * config.json is checked against the safetensors headers (llama_check.c) before the arena it
 * sizes is allocated. */
#include "io/safetensors.h"
#include "model/llama_check.h"
#include "model/llama_priv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static const char *st_shape_str(const qat_st_tensor *t, char *buf, size_t n) {
  qat_tensor v = {.ndim = t->ndim};
  for (int i = 0; i < t->ndim && i < QAT_MAX_DIMS; i++) v.shape[i] = t->shape[i];
  return qat_shape_str(&v, buf, n);
}

qat_status qat_llama_load_tensor(qat_llama *m, const qat_st_set *set, const lt_entry *e,
                                 float **stage, size_t *stage_cap) {
  const qat_st_file *file = NULL;
  const qat_st_tensor *t = qat_st_set_find(set, e->name, &file);
  if (!t) return QAT_FAIL(QAT_EFORMAT, "tensor %s is missing from the model's safetensors", e->name);
  int same = t->ndim == e->ndim;
  for (int i = 0; same && i < e->ndim; i++) same = t->shape[i] == e->shape[i];
  if (!same) {
    char a[64], b[64];
    qat_tensor want = qat_view(NULL, QAT_F32, QAT_DEV_CPU, e->ndim, e->shape);
    return QAT_FAIL(QAT_EFORMAT, "%s: tensor %s has shape %s but config.json implies %s",
                    file->path, e->name, st_shape_str(t, a, sizeof a),
                    qat_shape_str(&want, b, sizeof b));
  }
  if (t->dtype != QAT_F32 && t->dtype != QAT_F16 && t->dtype != QAT_BF16)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: tensor %s has dtype %s (F32, F16, BF16 supported)",
                    file->path, e->name, qat_dtype_name(t->dtype));
  size_t n = (size_t)qat_numel(e->p);
  /* On the CPU the arena is host memory: convert straight into it. */
  float *dst = m->be->device == QAT_DEV_CPU ? (float *)e->p->data : NULL;
  if (!dst) {
    if (*stage_cap < n) {
      float *s = realloc(*stage, n * sizeof *s);
      if (!s) return QAT_FAIL(QAT_ENOMEM, "tensor %s: cannot stage %zu floats", e->name, n);
      *stage = s;
      *stage_cap = n;
    }
    dst = *stage;
  }
  qat_status rs = qat_st_read_f32(t, dst);
  if (rs != QAT_OK) return qat_context(rs, "%s: tensor %s", file->path, e->name);
  for (size_t i = 0; i < n; i++)
    if (!isfinite(dst[i]))
      return QAT_FAIL(QAT_EINVAL, "%s: tensor %s has a non-finite value (%g) at index %zu",
                      file->path, e->name, (double)dst[i], i);
  if (dst != e->p->data) {
    qat_tensor h = qat_view(dst, QAT_F32, QAT_DEV_CPU, e->ndim, e->shape);
    QAT_TRY(qat_tensor_upload(m->be, e->p, &h));
  }
  return QAT_OK;
}

qat_status qat_llama_load(const char *dir, qat_backend *be, qat_llama **out) {
  *out = NULL;
  qat_llama_config c;
  QAT_TRY(qat_llama_config_load(dir, &c));
  qat_llama *m = NULL;
  qat_st_set set = {0};
  lt_entry *t = NULL;
  int n = 0;
  float *stage = NULL;
  size_t stage_cap = 0;
  qat_status st;
  /* headers first: config.json must agree with them before it sizes any arena */
  QAT_CHECK(st, qat_st_set_open(dir, &set), fail);
  QAT_CHECK(st, qat_llama_check_weights(&c, &set, dir), fail);
  QAT_CHECK(st, qat_context(qat_llama_alloc(&c, be, &m), "%s", dir), fail);
  QAT_CHECK(st, qat_llama_table(m, &t, &n), fail);
  for (int i = 0; i < n; i++) QAT_CHECK(st, qat_llama_load_tensor(m, &set, &t[i], &stage, &stage_cap), fail);
  QAT_CHECK(st, qat_llama_finish_init(m), fail);
  free(t);
  free(stage);
  qat_st_set_close(&set);
  *out = m;
  return QAT_OK;
fail:
  free(t);
  free(stage);
  qat_st_set_close(&set);
  qat_llama_free(m);
  return st;
}
