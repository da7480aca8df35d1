/* EfficientQAT E2E-QP (REFERENCE.md section 3): with the integer codes and zero points frozen,
 * w_hat = (codes - z) * s and only the step sizes s train end to end. The loop itself is the
 * trainer's (trainer.c: schedule, accumulation, clipping, distillation, checkpoints); this file
 * freezes the model, picks the parameters, and moves frozen layers in and out of checkpoints. */
#include "train/eqat.h"

#include <stdlib.h>
#include <string.h>

static int suffix_is(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

qat_status qat_e2e_qp_prepare(qat_llama *m, qat_param **params, int *n) {
  *params = NULL;
  *n = 0;
  if (!m->quantized) return QAT_FAIL(QAT_EINVAL, "e2e_qp: the model is not quantized");
  for (int l = 0; l < m->cfg.n_layers; l++)
    if (!m->layers[l].q.use_codes) QAT_TRY(qat_llama_freeze_codes(m, l));
  qat_param *out = calloc((size_t)m->nparams + 1, sizeof *out);
  if (!out) return QAT_FAIL(QAT_ENOMEM, "e2e_qp: out of memory");
  int k = 0;
  for (int i = 0; i < m->nparams; i++)
    if (m->params[i].group == QAT_PG_QUANT && suffix_is(m->params[i].name, ".scales"))
      out[k++] = m->params[i];
  if (k != 7 * m->cfg.n_layers) {
    free(out);
    return QAT_FAIL(QAT_EINTERNAL, "e2e_qp: found %d step-size tensors, expected %d", k,
                    7 * m->cfg.n_layers);
  }
  *params = out;
  *n = k;
  return QAT_OK;
}

/* ---- checkpoint tensors of frozen layers */

void qat_eqat_bufs_free(qat_eqat_bufs *b) {
  for (int i = 0; i < b->n; i++) free(b->p[i]);
  free(b->p);
  memset(b, 0, sizeof *b);
}

static qat_status bufs_new(qat_eqat_bufs *b, size_t bytes, void **out) {
  if (b->n == b->cap) {
    int cap = b->cap ? 2 * b->cap : 64;
    void **p = realloc(b->p, (size_t)cap * sizeof *p);
    if (!p) return QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory");
    b->p = p;
    b->cap = cap;
  }
  *out = b->p[b->n++] = malloc(bytes + 1);
  if (!*out) {
    b->n--;
    return QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory (%zu bytes)", bytes);
  }
  return QAT_OK;
}

qat_status qat_eqat_ckpt_add_device(const qat_backend *be, const qat_tensor *t,
                                    const char *name, qat_ckpt_writer *w, qat_eqat_bufs *bufs) {
  void *h = NULL;
  QAT_TRY(bufs_new(bufs, qat_nbytes(t), &h));
  QAT_TRY(be->download(be, h, t->data, qat_nbytes(t)));
  return qat_ckpt_add_tensor(w, name, t->dtype, t->ndim, t->shape, h);
}

/* The dequantized weight [out, in] F32 of a frozen Linear, into a host buffer. */
static qat_status add_dequant(qat_llama *m, const qat_linear *li, const char *name,
                              qat_ckpt_writer *w, qat_eqat_bufs *bufs) {
  const qat_backend *be = m->be;
  qat_tensor t = li->w;
  t.data = NULL;
  QAT_TRY(be->alloc(be, &t.data, qat_nbytes(&t)));
  qat_status st = qat_llama_linear_dequant(m, (qat_linear *)li, &t);
  void *h = NULL;
  if (st == QAT_OK) st = bufs_new(bufs, qat_nbytes(&t), &h);
  if (st == QAT_OK) st = be->download(be, h, t.data, qat_nbytes(&t));
  be->free(be, t.data);
  QAT_TRY(st);
  return qat_ckpt_add_tensor(w, name, QAT_F32, li->w.ndim, li->w.shape, h);
}

static void lin_list(qat_llama_layer *L, qat_linear *out[7]) {
  qat_linear *l[7] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
  memcpy(out, l, sizeof l);
}

qat_status qat_eqat_ckpt_add_layers(qat_llama *m, int l0, int l1, int with_scales,
                                    qat_ckpt_writer *w, qat_eqat_bufs *bufs) {
  char name[160];
  for (int l = l0; l < l1; l++) {
    qat_linear *lins[7];
    lin_list(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      qat_linear *li = lins[i];
      snprintf(name, sizeof name, "%s.weight", li->name);
      if (li->use_codes)
        QAT_TRY(add_dequant(m, li, name, w, bufs));
      else
        QAT_TRY(qat_eqat_ckpt_add_device(m->be, &li->w, name, w, bufs));
      if (with_scales) {
        snprintf(name, sizeof name, "%s.scales", li->name);
        QAT_TRY(qat_eqat_ckpt_add_device(m->be, &li->s, name, w, bufs));
      }
      if (!m->qspec.sym) {
        snprintf(name, sizeof name, "%s.zeros", li->name);
        QAT_TRY(qat_eqat_ckpt_add_device(m->be, &li->z, name, w, bufs));
      }
      if (li->use_codes) { /* U8 either way (packed codes unpacked): one checkpoint format */
        snprintf(name, sizeof name, "%s.codes", li->name);
        void *h = NULL;
        QAT_TRY(bufs_new(bufs, (size_t)(li->out * li->in), &h));
        QAT_TRY(qat_llama_linear_codes(m, li, h));
        QAT_TRY(qat_ckpt_add_tensor(w, name, QAT_U8, 2, (int64_t[]){li->out, li->in}, h));
      }
    }
    /* the norm gains (Block-AP's train_norms changes them) */
    qat_llama_layer *L = &m->layers[l];
    QAT_TRY(qat_eqat_ckpt_add_device(m->be, &L->attn_norm, L->attn_norm.name, w, bufs));
    QAT_TRY(qat_eqat_ckpt_add_device(m->be, &L->ffn_norm, L->ffn_norm.name, w, bufs));
  }
  return QAT_OK;
}

static qat_status load_one(qat_llama *m, const qat_ckpt *ck, const char *name, qat_tensor *t,
                           qat_dtype dt) {
  void *h = malloc(qat_nbytes(t) + 1);
  if (!h) return QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory");
  qat_status st = dt == QAT_F32 ? qat_ckpt_read_f32(ck, name, h, t->ndim, t->shape)
                                : qat_ckpt_read(ck, name, dt, h, t->ndim, t->shape);
  if (st == QAT_OK) st = m->be->upload(m->be, t->data, h, qat_nbytes(t));
  free(h);
  return st;
}

qat_status qat_eqat_ckpt_load_layers(qat_llama *m, int l0, int l1, const qat_ckpt *ck) {
  char name[160];
  int packed = m->layers[0].q.pk != NULL; /* e2e_qp.packed: packed before the load */
  for (int l = l0; l < l1; l++) {
    qat_linear *lins[7];
    lin_list(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      qat_linear *li = lins[i];
      snprintf(name, sizeof name, "%s.weight", li->name);
      QAT_TRY(load_one(m, ck, name, &li->w, QAT_F32));
      snprintf(name, sizeof name, "%s.scales", li->name);
      QAT_TRY(load_one(m, ck, name, &li->s, QAT_F32));
      if (!m->qspec.sym) {
        snprintf(name, sizeof name, "%s.zeros", li->name);
        QAT_TRY(load_one(m, ck, name, &li->z, QAT_F32));
      }
    }
    /* the stored weight is the dequantized one, so freezing reproduces the codes; the stored
     * codes are restored anyway (they are the state, the weight is derived) */
    if (!packed && !m->layers[l].q.use_codes) QAT_TRY(qat_llama_freeze_codes(m, l));
    for (int i = 0; i < 7; i++) {
      snprintf(name, sizeof name, "%s.codes", lins[i]->name);
      if (!packed) {
        QAT_TRY(load_one(m, ck, name, &lins[i]->codes, QAT_U8));
        continue;
      }
      /* packed: the U8 codes of one Linear at a time, packed with the loaded z */
      uint8_t *h = malloc((size_t)(lins[i]->out * lins[i]->in) + 1);
      if (!h) return QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory");
      qat_status st = qat_ckpt_read(ck, name, QAT_U8, h, 2, (int64_t[]){lins[i]->out, lins[i]->in});
      if (st == QAT_OK) st = qat_llama_pk_load_codes(m, lins[i], h);
      free(h);
      QAT_TRY(st);
    }
    qat_llama_layer *L = &m->layers[l];
    qat_tensor *norms[2] = {&L->attn_norm, &L->ffn_norm};
    for (int k = 0; k < 2; k++)
      QAT_TRY(load_one(m, ck, norms[k]->name, norms[k], QAT_F32));
  }
  return QAT_OK;
}
