/* Loading a packed folder (llama_packed.h). Order as qat_llama_load: config.json, the headers
 * checked against it, then the params arena (without the Linear masters), the non-Linear
 * tensors converted into it, and the packed tensors of every decoder Linear copied out of the
 * mapped file into their own buffers (the files are unmapped at the end, so what stays resident
 * is the packed bytes, not the file). */
#include "io/safetensors.h"
#include "model/llama_check.h"
#include "model/llama_packed.h"
#include "model/llama_priv.h"
#include "quant/packed.h"

#include <stdio.h>
#include <stdlib.h>

int qat_llama_dir_is_packed(const char *dir) {
  qat_st_set set;
  if (qat_st_set_open(dir, &set) != QAT_OK) return 0;
  int pk = 0;
  for (int f = 0; f < set.nfiles && !pk; f++) pk = qat_packed_st_is_packed(&set.files[f]);
  qat_st_set_close(&set);
  return pk;
}

void qat_llama_packed_release(qat_llama *m) {
  struct qat_llama_priv *P = m->priv;
  if (!P || !P->packed) return;
  for (int i = 0; i < 7 * m->cfg.n_layers; i++) qat_packed_free(&P->packed[i]);
  free(P->packed);
  P->packed = NULL;
}

/* Linear li's packed tensors from the set into *pk (shapes against the model's Linear). */
static qat_status read_linear(const qat_st_set *set, const qat_linear *li, qat_packed *pk) {
  char name[160];
  snprintf(name, sizeof name, "%s.qcodes", li->name);
  const qat_st_file *file = NULL;
  if (!qat_st_set_find(set, name, &file)) /* checked already; the set did not change */
    return QAT_FAIL(QAT_EINTERNAL, "packed model: tensor %s vanished", name);
  QAT_TRY(qat_packed_st_read(file, li->name, pk));
  if (pk->N != li->out || pk->K != li->in)
    return QAT_FAIL(QAT_EFORMAT, "%s: packed %s is [%lld, %lld], the model's Linear [%lld, %lld]",
                    file->path, li->name, (long long)pk->N, (long long)pk->K,
                    (long long)li->out, (long long)li->in);
  return QAT_OK;
}

qat_status qat_llama_load_packed(const char *dir, qat_backend *be, qat_llama **out) {
  *out = NULL;
  if (be->device != QAT_DEV_CPU || !be->qgemm)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: packed weights run on the cpu backend only (the %s "
                                      "qgemm is not written yet): use --device cpu",
                    dir, be->name);
  qat_llama_config c;
  QAT_TRY(qat_llama_config_load(dir, &c));
  qat_llama *m = NULL;
  qat_st_set set = {0};
  lt_entry *t = NULL;
  int n = 0;
  float *stage = NULL;
  size_t stage_cap = 0;
  qat_status st;
  QAT_CHECK(st, qat_st_set_open(dir, &set), fail);
  QAT_CHECK(st, qat_llama_check_packed(&c, &set, dir), fail);
  QAT_CHECK(st, qat_context(qat_llama_alloc_ex(&c, be, 1, &m), "%s", dir), fail);
  QAT_CHECK(st, qat_llama_table(m, &t, &n), fail);
  for (int i = 0; i < n; i++)
    if (t[i].kind != LT_LINEAR_W)
      QAT_CHECK(st, qat_llama_load_tensor(m, &set, &t[i], &stage, &stage_cap), fail);
  m->priv->packed = calloc((size_t)c.n_layers * 7, sizeof *m->priv->packed);
  if (!m->priv->packed) {
    st = QAT_FAIL(QAT_ENOMEM, "%s: out of host memory", dir);
    goto fail;
  }
  for (int l = 0; l < c.n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      qat_packed *pk = &m->priv->packed[7 * l + i];
      QAT_CHECK(st, read_linear(&set, lins[i], pk), fail);
      lins[i]->pk = pk;
    }
  }
  m->packed = 1;
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

void qat_llama_weight_bytes(const qat_llama *m, qat_llama_wbytes *o) {
  const struct qat_llama_priv *P = m->priv;
  o->linear_weights = o->linear_bytes = 0;
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      o->linear_weights += lins[i]->out * lins[i]->in;
      o->linear_bytes += lins[i]->pk ? qat_packed_bytes(lins[i]->pk)
                                     : (int64_t)sizeof(float) * lins[i]->out * lins[i]->in;
    }
  }
  o->resident = (int64_t)(P->params.cap + P->wcomp.cap + P->qstate.cap + P->codes.cap);
  if (m->packed) o->resident += o->linear_bytes;
  o->bpw = o->linear_weights ? 8.0 * (double)o->linear_bytes / (double)o->linear_weights : 0.0;
}
