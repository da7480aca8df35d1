/* The LLaMA model's life cycle: the tensor table, arenas (one per group, sized from the table
 * before anything is carved), random init, fake-quant on/off, activation planning, the params
 * list for optimizers, zero_grad and free. Forward is in llama_forward.c, backward in
 * llama_backward.c, HF loading and saving in llama_load.c / llama_save.c, the memory report and
 * estimate in llama_memory.c (which runs this file's sizing passes). */
#include "core/log.h"
#include "model/llama_priv.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qat_llama_linears(qat_llama_layer *ly, qat_linear *out[7]) {
  out[0] = &ly->q;
  out[1] = &ly->k;
  out[2] = &ly->v;
  out[3] = &ly->o;
  out[4] = &ly->gate;
  out[5] = &ly->up;
  out[6] = &ly->down;
}

static void add(lt_entry *t, int *n, const char *name, lt_kind kind, qat_tensor *p, qat_tensor *g,
                qat_linear *lin, int ndim, int64_t d0, int64_t d1) {
  lt_entry *e = &t[(*n)++];
  memset(e, 0, sizeof *e);
  snprintf(e->name, sizeof e->name, "%s", name);
  e->kind = kind;
  e->p = p;
  e->g = g;
  e->lin = lin;
  e->ndim = ndim;
  e->shape[0] = d0;
  e->shape[1] = d1;
}

qat_status qat_llama_table(qat_llama *m, lt_entry **out, int *n_out) {
  const qat_llama_config *c = &m->cfg;
  int cap = 3 + c->n_layers * 16;
  lt_entry *t = calloc((size_t)cap, sizeof *t);
  if (!t) return QAT_FAIL(QAT_ENOMEM, "model: cannot allocate the tensor table");
  int n = 0;
  char name[112];
  add(t, &n, "model.embed_tokens.weight", LT_EMBED, &m->embed, &m->d_embed, NULL, 2, c->vocab,
      c->dim);
  for (int l = 0; l < c->n_layers; l++) {
    qat_llama_layer *ly = &m->layers[l];
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
    add(t, &n, name, LT_NORM, &ly->attn_norm, &ly->d_attn_norm, NULL, 1, c->dim, 0);
    qat_linear *lins[7];
    qat_llama_linears(ly, lins);
    for (int i = 0; i < 7; i++) {
      qat_linear *li = lins[i];
      if (i == 4) {
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        add(t, &n, name, LT_NORM, &ly->ffn_norm, &ly->d_ffn_norm, NULL, 1, c->dim, 0);
      }
      snprintf(name, sizeof name, "%s.weight", li->name);
      add(t, &n, name, LT_LINEAR_W, &li->w, &li->dw, li, 2, li->out, li->in);
      int has_bias = (i < 3 && c->qkv_bias) || (i == 3 && c->o_bias);
      if (has_bias) {
        snprintf(name, sizeof name, "%s.bias", li->name);
        add(t, &n, name, LT_BIAS, &li->b, &li->db, li, 1, li->out, 0);
      }
    }
  }
  add(t, &n, "model.norm.weight", LT_NORM, &m->final_norm, &m->d_final_norm, NULL, 1, c->dim, 0);
  if (!c->tie_embeddings)
    add(t, &n, "lm_head.weight", LT_LMHEAD, &m->lm_head, &m->d_lm_head, NULL, 2, c->vocab, c->dim);
  *out = t;
  *n_out = n;
  return QAT_OK;
}

static void init_linear(qat_linear *li, int l, const char *what, int64_t out, int64_t in) {
  memset(li, 0, sizeof *li);
  snprintf(li->name, sizeof li->name, "model.layers.%d.%s", l, what);
  li->in = in;
  li->out = out;
}

/* Names for tensor error messages live as long as the model. */
typedef struct {
  char s[112];
} llama_name;

qat_status qat_llama_shell(const qat_llama_config *c, qat_llama **out) {
  *out = NULL;
  QAT_TRY(qat_llama_config_check(c));
  qat_llama *m = calloc(1, sizeof *m);
  if (!m) return QAT_FAIL(QAT_ENOMEM, "model: out of host memory");
  m->cfg = *c;
  m->act_dtype = QAT_F32;
  m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
  m->priv = calloc(1, sizeof *m->priv);
  if (m->priv) m->priv->grads_codes = calloc((size_t)c->n_layers, 1);
  if (!m->layers || !m->priv || !m->priv->grads_codes) {
    qat_llama_free(m);
    return QAT_FAIL(QAT_ENOMEM, "model: out of host memory");
  }
  m->priv->bfwd_layer = -1;
  m->priv->grads_bound = -1;
  int64_t C = c->dim, F = c->hidden, qd = (int64_t)c->n_heads * c->head_dim,
          kvd = (int64_t)c->n_kv_heads * c->head_dim;
  for (int l = 0; l < c->n_layers; l++) {
    qat_llama_layer *ly = &m->layers[l];
    init_linear(&ly->q, l, "self_attn.q_proj", qd, C);
    init_linear(&ly->k, l, "self_attn.k_proj", kvd, C);
    init_linear(&ly->v, l, "self_attn.v_proj", kvd, C);
    init_linear(&ly->o, l, "self_attn.o_proj", C, qd);
    init_linear(&ly->gate, l, "mlp.gate_proj", F, C);
    init_linear(&ly->up, l, "mlp.up_proj", F, C);
    init_linear(&ly->down, l, "mlp.down_proj", C, F);
  }
  *out = m;
  return QAT_OK;
}

/* Bytes of the params arena: every table entry (but the Linear weights when no_linears: after
 * qat_llama_drop_masters) and inv_freq. */
qat_status qat_llama_params_need(qat_llama *m, int no_linears, size_t *need) {
  lt_entry *t = NULL;
  int n = 0;
  QAT_TRY(qat_llama_table(m, &t, &n));
  *need = qat_arena_need(QAT_F32, m->cfg.head_dim / 2);
  for (int i = 0; i < n; i++)
    if (!(no_linears && t[i].kind == LT_LINEAR_W))
      *need += qat_arena_need(QAT_F32, t[i].shape[0] * (t[i].ndim > 1 ? t[i].shape[1] : 1));
  free(t);
  return QAT_OK;
}

qat_status qat_llama_alloc(const qat_llama_config *c, qat_backend *be, qat_llama **out) {
  return qat_llama_alloc_ex(c, be, 0, out);
}

qat_status qat_llama_alloc_ex(const qat_llama_config *c, qat_backend *be, int no_linears,
                              qat_llama **out) {
  *out = NULL;
  qat_llama *m = NULL;
  QAT_TRY(qat_llama_shell(c, &m));
  m->be = be;
  m->act_dtype = be->device == QAT_DEV_CUDA ? QAT_BF16 : QAT_F32;

  lt_entry *t = NULL;
  int n = 0;
  qat_status st = qat_llama_table(m, &t, &n);
  if (st != QAT_OK) {
    qat_llama_free(m);
    return st;
  }
  size_t need = 0;
  QAT_CHECK(st, qat_llama_params_need(m, no_linears, &need), fail);
  /* table entries, inv_freq, then ".scales" / ".zeros" of each Linear */
  llama_name *names = calloc((size_t)n + 1 + 14 * (size_t)c->n_layers, sizeof *names);
  m->priv->names = names;
  if (!names) {
    st = QAT_FAIL(QAT_ENOMEM, "model: out of host memory");
    goto fail;
  }
  QAT_CHECK(st, qat_arena_init(&m->priv->params, be, "params", need), fail);
  for (int i = 0; i < n; i++) {
    snprintf(names[i].s, sizeof names[i].s, "%s", t[i].name);
    if (no_linears && t[i].kind == LT_LINEAR_W) {
      t[i].p->name = names[i].s; /* named for messages, never carved */
      continue;
    }
    QAT_CHECK(st, qat_arena_tensor(&m->priv->params, t[i].p, QAT_F32, t[i].ndim, t[i].shape, names[i].s),
              fail);
  }
  snprintf(names[n].s, sizeof names[n].s, "rope.inv_freq");
  QAT_CHECK(st, qat_arena_tensor(&m->priv->params, &m->inv_freq, QAT_F32, 1,
                                 (int64_t[]){c->head_dim / 2}, names[n].s),
            fail);
  for (int l = 0; l < c->n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      llama_name *nm = &names[n + 1 + 2 * (7 * l + i)];
      snprintf(nm[0].s, sizeof nm[0].s, "%.96s.scales", lins[i]->name);
      snprintf(nm[1].s, sizeof nm[1].s, "%.96s.zeros", lins[i]->name);
    }
  }
  m->priv->qnames_base = n + 1;
  if (c->tie_embeddings) m->lm_head = m->embed;
  free(t);
  *out = m;
  return QAT_OK;
fail:
  free(t);
  qat_llama_free(m);
  return st;
}

qat_status qat_llama_finish_init(qat_llama *m) {
  int h = m->cfg.head_dim / 2;
  float *f = malloc((size_t)h * sizeof *f);
  if (!f) return QAT_FAIL(QAT_ENOMEM, "model: out of host memory");
  qat_llama_inv_freq(&m->cfg, f);
  qat_tensor hf = qat_view1(f, QAT_F32, QAT_DEV_CPU, h);
  qat_status st = qat_tensor_upload(m->be, &m->inv_freq, &hf);
  free(f);
  QAT_TRY(st);
  return qat_llama_sync_layout(m);
}

float qat_llama_rng_normal(llama_rng *r) {
  uint64_t a[2];
  for (int i = 0; i < 2; i++) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    a[i] = z ^ (z >> 31);
  }
  double u1 = ((a[0] >> 11) + 1.0) * (1.0 / 9007199254740993.0);
  double u2 = (a[1] >> 11) * (1.0 / 9007199254740992.0);
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

qat_status qat_llama_random(const qat_llama_config *c, qat_backend *be, uint64_t seed,
                            qat_llama **out) {
  qat_llama *m = NULL;
  QAT_TRY(qat_llama_alloc(c, be, &m));
  lt_entry *t = NULL;
  int n = 0;
  float *buf = NULL;
  qat_status st;
  QAT_CHECK(st, qat_llama_table(m, &t, &n), done);
  llama_rng rng = {seed * 0x2545f4914f6cdd1dull + 12345};
  for (int i = 0; i < n; i++) {
    size_t numel = (size_t)qat_numel(t[i].p);
    float *nb = realloc(buf, numel * sizeof *buf);
    if (!nb) {
      st = QAT_FAIL(QAT_ENOMEM, "model: out of host memory");
      goto done;
    }
    buf = nb;
    for (size_t j = 0; j < numel; j++)
      buf[j] = t[i].kind == LT_NORM ? 1.0f : 0.02f * qat_llama_rng_normal(&rng);
    qat_tensor h = qat_view(buf, QAT_F32, QAT_DEV_CPU, t[i].ndim, t[i].shape);
    QAT_CHECK(st, qat_tensor_upload(be, t[i].p, &h), done);
  }
  QAT_CHECK(st, qat_llama_finish_init(m), done);
done:
  free(t);
  free(buf);
  if (st != QAT_OK) {
    qat_llama_free(m);
    return st;
  }
  *out = m;
  return QAT_OK;
}

void qat_llama_free(qat_llama *m) {
  if (!m) return;
  struct qat_llama_priv *P = m->priv;
  if (P) {
    qat_arena_free(&P->acts);
    qat_arena_free(&P->bacts);
    qat_arena_free(&P->codes);
    qat_arena_free(&P->wcomp);
    qat_arena_free(&P->qgrads);
    qat_arena_free(&P->qstate);
    qat_arena_free(&P->grads);
    qat_arena_free(&P->params);
    qat_llama_packed_release(m);
    qat_llama_pk_release(m);
    free(P->act);
    free(P->names);
    free(P->gtpl);
    free(P->grads_codes);
    free(P);
  }
  free(m->params);
  free(m->layers);
  free(m);
}

/* ---- arenas that follow the training setup ---------------------------------------------------*/

void qat_llama_layer_grads(qat_llama_layer *ly, qat_tensor *g[LG_FIELDS],
                           const qat_tensor *of[LG_FIELDS]) {
  int k = 0;
  g[k] = &ly->d_attn_norm, of[k++] = &ly->attn_norm;
  g[k] = &ly->d_ffn_norm, of[k++] = &ly->ffn_norm;
  qat_linear *lins[7];
  qat_llama_linears(ly, lins);
  for (int i = 0; i < 7; i++) {
    qat_linear *li = lins[i];
    g[k] = &li->dw, of[k++] = &li->w;
    g[k] = &li->db, of[k++] = &li->b;
    g[k] = &li->ds, of[k++] = &li->s;
    g[k] = &li->dz, of[k++] = &li->z;
    g[k] = &li->dw_hat, of[k++] = &li->w;
  }
}

static void clear_grad_fields(qat_llama *m) {
  struct qat_llama_priv *P = m->priv;
  memset(&m->d_embed, 0, sizeof m->d_embed);
  memset(&m->d_lm_head, 0, sizeof m->d_lm_head);
  memset(&m->d_final_norm, 0, sizeof m->d_final_norm);
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_tensor *g[LG_FIELDS];
    const qat_tensor *of[LG_FIELDS];
    qat_llama_layer_grads(&m->layers[l], g, of);
    for (int i = 0; i < LG_FIELDS; i++) memset(g[i], 0, sizeof *g[i]);
  }
  memset(&P->code_g, 0, sizeof P->code_g);
  memset(&P->code_ds, 0, sizeof P->code_ds);
  P->grads_one = 0;
  P->grads_bound = -1;
  memset(P->grads_codes, 0, (size_t)m->cfg.n_layers);
}

/* Layer of a table entry, -1 for embeddings, final norm, lm_head. */
static int entry_layer(const qat_llama *m, const lt_entry *e) {
  uintptr_t p = (uintptr_t)e->p, b = (uintptr_t)m->layers;
  if (p < b || p >= b + sizeof *m->layers * (size_t)m->cfg.n_layers) return -1;
  return (int)((p - b) / sizeof *m->layers);
}

/* All 7 Linears of layer l run on frozen codes. */
static int layer_all_codes(const qat_llama *m, int l) {
  qat_linear *lins[7];
  qat_llama_linears(&m->layers[l], lins);
  for (int i = 0; i < 7; i++)
    if (!lins[i]->use_codes) return 0;
  return m->quantized;
}

int qat_llama_code_layer(const qat_llama *m, int l) {
  const struct qat_llama_priv *P = m->priv;
  return P->grads_built && !P->grads_one && P->grads_codes[l];
}

/* grads: dw of every Linear; biases, norms and embeddings only when trained.
 * qgrads: ds, dz, dw_hat when quantized.
 * one != 0: layer 0's only (bound to other layers later), no embedding / final-norm / lm_head.
 * codes[l] != 0 (layers in code mode, not with one): ds alone, plus the shared scratch.
 * pass 0 sizes (works on a shell model: the estimate), pass 1 carves. */
qat_status qat_llama_grads_walk(qat_llama *m, const lt_entry *t, int n, int one,
                                const unsigned char *codes, int pass, size_t *gneed,
                                size_t *qneed) {
  struct qat_llama_priv *P = m->priv;
  int64_t max_w = 0, max_s = 0;
  for (int i = 0; i < n; i++) {
    const lt_entry *e = &t[i];
    int l = entry_layer(m, e);
    if (e->kind != LT_LINEAR_W && !m->train_embeddings) continue;
    if (one && l != 0) continue;
    int code = !one && l >= 0 && codes && codes[l];
    if (!(code && e->kind == LT_LINEAR_W)) {
      if (pass == 0) /* the entry's shape: e->p is not carved in a shell model */
        *gneed += qat_arena_need(QAT_F32, e->shape[0] * (e->ndim > 1 ? e->shape[1] : 1));
      else
        QAT_TRY(qat_arena_tensor(&P->grads, e->g, QAT_F32, e->ndim, e->shape, e->p->name));
    }
    if (e->kind != LT_LINEAR_W || !m->quantized) continue;
    qat_linear *li = e->lin;
    int64_t ss[2];
    qat_qspec_sshape(&m->qspec, li->out, li->in, ss);
    int dz = !m->qspec.sym && !code;
    if (code) { /* packed codes (qgemm_ds) need no dL/dw_hat scratch */
      if (li->out * li->in > max_w && !P->ecodes && !P->est_packed) max_w = li->out * li->in;
      if (ss[0] * ss[1] > max_s) max_s = ss[0] * ss[1];
    }
    if (pass == 0) {
      *qneed += qat_arena_need(QAT_F32, ss[0] * ss[1]) * (dz ? 2 : 1) +
                (code ? 0 : qat_arena_need(QAT_F32, li->out * li->in));
      continue;
    }
    QAT_TRY(qat_arena_tensor(&P->qgrads, &li->ds, QAT_F32, 2, ss, li->s.name));
    if (dz) QAT_TRY(qat_arena_tensor(&P->qgrads, &li->dz, QAT_F32, 2, ss, li->z.name));
    if (!code)
      QAT_TRY(qat_arena_tensor(&P->qgrads, &li->dw_hat, QAT_F32, 2, e->shape, e->p->name));
  }
  if (max_s > 0) { /* frozen-code scratch: one Linear's dL/dw_hat (U8 codes) and its ds */
    if (pass == 0) {
      *qneed += (max_w ? qat_arena_need(QAT_F32, max_w) : 0) + qat_arena_need(QAT_F32, max_s);
    } else {
      if (max_w)
        QAT_TRY(qat_arena_tensor(&P->qgrads, &P->code_g, QAT_F32, 1, &max_w, "code dw_hat scratch"));
      QAT_TRY(qat_arena_tensor(&P->qgrads, &P->code_ds, QAT_F32, 1, &max_s, "code ds scratch"));
    }
  }
  return QAT_OK;
}

/* Lays the gradients out for the current mode: one layer when only block passes train, else
 * every layer (layers now frozen to codes in code mode). */
static qat_status build_grads(qat_llama *m) {
  struct qat_llama_priv *P = m->priv;
  int L = m->cfg.n_layers;
  qat_arena_free(&P->grads);
  qat_arena_free(&P->qgrads);
  P->grads_built = 0;
  clear_grad_fields(m);
  int one = !P->training && P->btraining;
  for (int l = 0; l < L; l++) P->grads_codes[l] = !one && layer_all_codes(m, l);
  lt_entry *t = NULL;
  int n = 0;
  QAT_TRY(qat_llama_table(m, &t, &n));
  qat_status st = QAT_OK;
  size_t gneed = 0, qneed = 0;
  QAT_CHECK(st, qat_llama_grads_walk(m, t, n, one, P->grads_codes, 0, &gneed, &qneed), done);
  QAT_CHECK(st, qat_arena_init(&P->grads, m->be, "grads", gneed), done);
  QAT_CHECK(st, qat_arena_init(&P->qgrads, m->be, "quantizer grads", qneed), done);
  QAT_CHECK(st, qat_llama_grads_walk(m, t, n, one, P->grads_codes, 1, &gneed, &qneed), done);
  if (one) {
    if (!P->gtpl) P->gtpl = calloc(LG_FIELDS, sizeof *P->gtpl);
    if (!P->gtpl) {
      st = QAT_FAIL(QAT_ENOMEM, "model: out of host memory");
      goto done;
    }
    qat_tensor *g[LG_FIELDS];
    const qat_tensor *of[LG_FIELDS];
    qat_llama_layer_grads(&m->layers[0], g, of);
    for (int i = 0; i < LG_FIELDS; i++) P->gtpl[i] = *g[i];
    P->grads_one = 1;
    P->grads_bound = 0;
  }
  if (m->cfg.tie_embeddings) m->d_lm_head = m->d_embed;
  P->grads_built = 1;
  P->grads_train_emb = m->train_embeddings;
  P->grads_quant = m->quantized;
done:
  free(t);
  if (st != QAT_OK) {
    qat_arena_free(&P->grads);
    qat_arena_free(&P->qgrads);
    clear_grad_fields(m);
  }
  return st;
}

qat_status qat_llama_bind_grads(qat_llama *m, int l, const char *what) {
  struct qat_llama_priv *P = m->priv;
  if (!P->grads_built || !P->grads_one || P->grads_bound == l) return QAT_OK;
  qat_tensor *g[LG_FIELDS];
  const qat_tensor *of[LG_FIELDS];
  if (P->grads_bound >= 0) {
    qat_llama_layer_grads(&m->layers[P->grads_bound], g, of);
    for (int i = 0; i < LG_FIELDS; i++) memset(g[i], 0, sizeof *g[i]);
  }
  P->grads_bound = -1;
  /* the buffers hold the previous layer's sums: a new layer starts from zero */
  (void)what;
  if (P->grads.used) QAT_TRY(m->be->memset0(m->be, P->grads.base, P->grads.used));
  if (P->qgrads.used) QAT_TRY(m->be->memset0(m->be, P->qgrads.base, P->qgrads.used));
  qat_llama_layer_grads(&m->layers[l], g, of);
  for (int i = 0; i < LG_FIELDS; i++) {
    if (!P->gtpl[i].data) continue;
    *g[i] = P->gtpl[i];
    g[i]->name = of[i]->name;
  }
  P->grads_bound = l;
  return QAT_OK;
}

/* Bytes of the compute weights (0 when w_hat is a view of the master). */
size_t qat_llama_wcomp_need(const qat_llama *m) {
  if (!m->quantized && m->act_dtype == QAT_F32) return 0;
  if (m->priv->ecodes || m->priv->est_packed) return 0; /* packed codes: qgemm, no w_hat */
  size_t bytes = 0;
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) bytes += qat_arena_need(m->act_dtype, lins[i]->out * lins[i]->in);
  }
  return bytes;
}

/* Compute weights: w_hat is its own buffer when quantized or when the compute dtype is not F32;
 * otherwise a view of the master. */
qat_status qat_llama_sync_wcomp(qat_llama *m) {
  struct qat_llama_priv *P = m->priv;
  if (m->packed) /* qgemm reads the codes: there are no compute weights */
    return m->act_dtype == QAT_F32 ? QAT_OK
                                   : QAT_FAIL(QAT_EUNSUPPORTED, "model: packed Linears compute "
                                                                "in F32 only (act_dtype %s)",
                                              qat_dtype_name(m->act_dtype));
  if (m->masters_dropped) /* w aliases w_hat: the compute weights cannot be rebuilt */
    return P->wcomp_dtype == m->act_dtype && !m->quantized
               ? QAT_OK
               : QAT_FAIL(QAT_EINVAL, "model: the masters were dropped (inference only): "
                                      "act_dtype and quantization cannot change");
  if (P->ecodes) { /* E2E-QP packed codes (qat_llama_pack_frozen): qgemm reads them, no w_hat */
    qat_arena_free(&P->wcomp);
    P->wcomp_built = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
      qat_linear *lins[7];
      qat_llama_linears(&m->layers[l], lins);
      for (int i = 0; i < 7; i++) memset(&lins[i]->w_hat, 0, sizeof lins[i]->w_hat);
    }
    return QAT_OK;
  }
  int need = m->quantized || m->act_dtype != QAT_F32;
  if (P->wcomp_built && need && P->wcomp_dtype == m->act_dtype) return QAT_OK;
  if (!P->wcomp_built && !need && m->layers[0].q.w_hat.data == m->layers[0].q.w.data)
    return QAT_OK;
  qat_arena_free(&P->wcomp);
  P->wcomp_built = 0;
  if (need) QAT_TRY(qat_arena_init(&P->wcomp, m->be, "compute weights", qat_llama_wcomp_need(m)));
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      qat_linear *li = lins[i];
      if (!need) {
        li->w_hat = li->w;
        li->w_hat.arena = NULL;
        continue;
      }
      qat_status st = qat_arena_tensor(&P->wcomp, &li->w_hat, m->act_dtype, 2,
                                       (int64_t[]){li->out, li->in}, li->w.name);
      if (st != QAT_OK) {
        qat_arena_free(&P->wcomp);
        return st;
      }
    }
  }
  if (!need) return QAT_OK;
  P->wcomp_built = 1;
  P->wcomp_dtype = m->act_dtype;
  return QAT_OK;
}

static qat_status add_param(qat_llama *m, int *n, int cap, const char *name, qat_tensor *p,
                            qat_tensor *g, qat_param_group grp) {
  if (*n >= cap) return QAT_FAIL(QAT_EINTERNAL, "model: params list overflow");
  qat_param *q = &m->params[(*n)++];
  size_t k = strnlen(name, sizeof q->name - 1);
  memcpy(q->name, name, k);
  q->name[k] = 0;
  q->p = p;
  q->g = g;
  q->group = grp;
  return QAT_OK;
}

/* Weights first (group WEIGHT), then quantizer state (QUANT), then, when trained, embeddings,
 * norms and biases (OTHER), each in model order. */
static qat_status build_params(qat_llama *m) {
  lt_entry *t = NULL;
  int n = 0;
  QAT_TRY(qat_llama_table(m, &t, &n));
  int cap = 3 * n + 4, np = 0;
  free(m->params);
  m->nparams = 0;
  m->params = calloc((size_t)cap, sizeof *m->params);
  qat_status st = QAT_OK;
  if (!m->params) {
    st = QAT_FAIL(QAT_ENOMEM, "model: out of host memory");
    goto done;
  }
  for (int i = 0; i < n; i++)
    if (t[i].kind == LT_LINEAR_W)
      QAT_CHECK(st, add_param(m, &np, cap, t[i].name, t[i].p, t[i].g, QAT_PG_WEIGHT), done);
  if (m->quantized) {
    char name[128];
    for (int i = 0; i < n; i++) {
      if (t[i].kind != LT_LINEAR_W) continue;
      qat_linear *li = t[i].lin;
      snprintf(name, sizeof name, "%s.scales", li->name);
      QAT_CHECK(st, add_param(m, &np, cap, name, &li->s, &li->ds, QAT_PG_QUANT), done);
      if (!m->qspec.sym) {
        snprintf(name, sizeof name, "%s.zeros", li->name);
        QAT_CHECK(st, add_param(m, &np, cap, name, &li->z, &li->dz, QAT_PG_QUANT), done);
      }
    }
  }
  if (m->train_embeddings)
    for (int i = 0; i < n; i++)
      if (t[i].kind != LT_LINEAR_W)
        QAT_CHECK(st, add_param(m, &np, cap, t[i].name, t[i].p, t[i].g, QAT_PG_OTHER), done);
  m->nparams = np;
  m->priv->params_built = 1;
  m->priv->params_quant = m->quantized;
  m->priv->params_train_emb = m->train_embeddings;
done:
  free(t);
  return st;
}

qat_status qat_llama_sync_layout(qat_llama *m) {
  struct qat_llama_priv *P = m->priv;
  /* a one-layer layout serves block passes only; an all-layer one serves both */
  if ((P->training || P->btraining) &&
      (!P->grads_built || P->grads_train_emb != m->train_embeddings ||
       P->grads_quant != m->quantized || (P->training && P->grads_one)))
    QAT_TRY(build_grads(m));
  QAT_TRY(qat_llama_sync_wcomp(m));
  if (!P->params_built || P->params_quant != m->quantized ||
      P->params_train_emb != m->train_embeddings)
    QAT_TRY(build_params(m));
  return QAT_OK;
}

/* ---- fake-quant on / off ---------------------------------------------------------------------*/

/* Bytes of s (and z when asym) of every Linear. */
size_t qat_llama_qstate_need(const qat_llama *m, const qat_qspec *q) {
  size_t need = 0;
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      int64_t ss[2];
      qat_qspec_sshape(q, lins[i]->out, lins[i]->in, ss);
      need += qat_arena_need(QAT_F32, ss[0] * ss[1]) * (q->sym ? 1 : 2);
    }
  }
  return need;
}

qat_status qat_llama_set_quant(qat_llama *m, const qat_qspec *q) {
  struct qat_llama_priv *P = m->priv;
  if (m->masters_dropped)
    return QAT_FAIL(QAT_EINVAL, "model set_quant: the masters were dropped (inference only)");
  if (m->packed)
    return QAT_FAIL(QAT_EUNSUPPORTED, "model set_quant: the Linears are packed codes already "
                                      "(a packed model cannot be fake-quantized again)");
  if (q) QAT_TRY(qat_qspec_check(q));
  qat_arena_free(&P->qstate);
  m->quantized = 0;
  P->grads_built = 0; /* quantizer grads follow the spec */
  P->wcomp_built = 0;
  P->params_built = 0;
  /* frozen codes belong to the old spec: back to fake-quant of the masters (which hold the
   * dequantized weights of the freeze); `frozen` is left as the caller set it */
  qat_arena_free(&P->codes);
  qat_llama_pk_release(m);
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      memset(&lins[i]->s, 0, sizeof lins[i]->s);
      memset(&lins[i]->z, 0, sizeof lins[i]->z);
      memset(&lins[i]->codes, 0, sizeof lins[i]->codes);
      lins[i]->use_codes = 0;
    }
  }
  if (!q) {
    qat_arena_free(&P->qgrads);
    return qat_llama_sync_layout(m);
  }
  m->qspec = *q;
  size_t need = qat_llama_qstate_need(m, q);
  QAT_TRY(qat_arena_init(&P->qstate, m->be, "quantizer state", need));
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      qat_linear *li = lins[i];
      int64_t ss[2];
      qat_qspec_sshape(q, li->out, li->in, ss);
      const llama_name *nm = (const llama_name *)P->names + P->qnames_base + 2 * (7 * l + i);
      qat_status st = qat_arena_tensor(&P->qstate, &li->s, QAT_F32, 2, ss, nm[0].s);
      if (st == QAT_OK && !q->sym)
        st = qat_arena_tensor(&P->qstate, &li->z, QAT_F32, 2, ss, nm[1].s);
      if (st == QAT_OK) st = QAT_OP(m->be, fq_init, q, &li->w, &li->s, q->sym ? NULL : &li->z);
      if (st != QAT_OK) {
        qat_arena_free(&P->qstate);
        return qat_context(st, "quantizer init of %s", li->name);
      }
    }
  }
  m->quantized = 1;
  return qat_llama_sync_layout(m);
}

/* ---- activations -----------------------------------------------------------------------------*/

qat_tensor qat_llama_view(const qat_tensor *buf, int ndim, const int64_t *shape) {
  qat_tensor v = qat_view(buf->data, buf->dtype, buf->device, ndim, shape);
  v.name = buf->name;
  assert(qat_numel(&v) <= qat_numel(buf)); /* forward checks B, T against the plan */
  return v;
}

qat_status qat_llama_plan_check(qat_llama *m, const char *what, int B, int T) {
  const qat_llama_config *c = &m->cfg;
  if (B <= 0 || T <= 0)
    return QAT_FAIL(QAT_EINVAL, "%s: batch %d x %d tokens must be positive", what, B, T);
  if (c->sliding_window > 0 && T > c->sliding_window)
    return QAT_FAIL(QAT_EUNSUPPORTED,
                    "%s: sequence length %d exceeds the model's sliding_window %d "
                    "(sliding-window attention is not implemented; use sequences <= %d)",
                    what, T, c->sliding_window, c->sliding_window);
  if (m->be->device == QAT_DEV_CPU && m->act_dtype != QAT_F32)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: the cpu backend computes in F32 only (act_dtype %s)",
                    what, qat_dtype_name(m->act_dtype));
  if (m->act_dtype != QAT_F32 && m->act_dtype != QAT_BF16)
    return QAT_FAIL(QAT_EINVAL, "%s: act_dtype must be F32 or BF16", what);
  if (T > c->max_seq)
    qat_warn("model: sequence length %d exceeds max_position_embeddings %d", T, c->max_seq);
  return QAT_OK;
}

#define BUF(field, dtype, numel, nm) list[k++] = (llama_buf_spec){&(field), (dtype), (numel), (nm)}

int qat_llama_act_specs(const qat_llama *m, llama_act *A, int64_t N, llama_buf_spec *list, int k) {
  const qat_llama_config *c = &m->cfg;
  int64_t C = c->dim, F = c->hidden;
  int64_t QD = (int64_t)c->n_heads * c->head_dim, KVD = (int64_t)c->n_kv_heads * c->head_dim;
  qat_dtype a = m->act_dtype;
  BUF(A->x_in, QAT_F32, N * C, "x_in");
  BUF(A->rstd1, QAT_F32, N, "rstd1");
  BUF(A->h1, a, N * C, "h1");
  BUF(A->q, a, N * QD, "q");
  BUF(A->k, a, N * KVD, "k");
  BUF(A->v, a, N * KVD, "v");
  BUF(A->att, a, N * QD, "att");
  BUF(A->lse, QAT_F32, N * c->n_heads, "lse");
  BUF(A->x_mid, QAT_F32, N * C, "x_mid");
  BUF(A->rstd2, QAT_F32, N, "rstd2");
  BUF(A->h2, a, N * C, "h2");
  BUF(A->gate, a, N * F, "gate");
  BUF(A->up, a, N * F, "up");
  BUF(A->act, a, N * F, "act");
  return k;
}

int qat_llama_scratch_specs(const qat_llama *m, llama_scratch *S, int64_t N, int training,
                            llama_buf_spec *list, int k) {
  const qat_llama_config *c = &m->cfg;
  int64_t C = c->dim, F = c->hidden;
  int64_t QD = (int64_t)c->n_heads * c->head_dim, KVD = (int64_t)c->n_kv_heads * c->head_dim;
  qat_dtype a = m->act_dtype;
  BUF(S->hn, QAT_F32, a == QAT_F32 ? 0 : N * C, "hn");
  if (!training) return k;
  BUF(S->dx, QAT_F32, N * C, "dx");
  BUF(S->dxa, a, a == QAT_F32 ? 0 : N * C, "dxa");
  BUF(S->dh, QAT_F32, N * C, "dh");
  BUF(S->dq, a, N * QD, "dq");
  BUF(S->datt, a, N * QD, "datt");
  BUF(S->dk, a, N * KVD, "dk");
  BUF(S->dv, a, N * KVD, "dv");
  BUF(S->dgate, a, N * F, "dgate");
  BUF(S->dup, a, N * F, "dup");
  BUF(S->dact, a, N * F, "dact");
  BUF(S->dnorm_scratch, QAT_F32, C, "dnorm_scratch");
  BUF(S->pkdx, QAT_F32, m->priv->ecodes || m->priv->est_packed ? N * C : 0, "packed dx");
  return k;
}

qat_status qat_llama_carve(qat_arena *a, const llama_buf_spec *list, int k, int pass, size_t *need) {
  for (int i = 0; i < k; i++) {
    if (pass == 0)
      *need += qat_arena_need(list[i].dt, list[i].n);
    else
      QAT_TRY(qat_arena_tensor(a, list[i].t, list[i].dt, 1, &list[i].n, list[i].name));
  }
  return QAT_OK;
}

/* The whole-model activation arena for N tokens as planned in P (training, recompute, nact,
 * act[]): pass 0 sizes (also on a shell model: the estimate), pass 1 carves. With recompute
 * act[0] is a full set and act[l > 0] only their x_in (the rest is shared after carving). */
qat_status qat_llama_acts_walk(qat_llama *m, int64_t N, int pass, size_t *need) {
  const qat_llama_config *c = &m->cfg;
  struct qat_llama_priv *P = m->priv;
  int64_t C = c->dim, V = c->vocab;
  llama_buf_spec list[48];
  for (int li = -1; li < P->nact; li++) {
    int k = 0;
    if (li < 0) {
      BUF(P->x_fin, QAT_F32, N * C, "x_fin");
      BUF(P->rstd_fin, QAT_F32, N, "rstd_fin");
      BUF(P->h_fin, QAT_F32, N * C, "h_fin");
      BUF(P->logits_buf, QAT_F32, N * V, "logits");
      BUF(P->dlogits_buf, QAT_F32, P->training ? N * V : 0, "dlogits");
      BUF(P->tokens, QAT_I32, N, "tokens");
      BUF(P->targets, QAT_I32, N, "targets");
      BUF(P->losses, QAT_F32, N, "losses");
      if (P->training) BUF(P->dh_fin, QAT_F32, N * C, "dh_fin");
      k = qat_llama_scratch_specs(m, &P->scr, N, P->training, list, k);
    } else if (P->recompute && li > 0) {
      BUF(P->act[li].x_in, QAT_F32, N * C, "x_in");
    } else {
      k = qat_llama_act_specs(m, &P->act[li], N, list, k);
    }
    QAT_TRY(qat_llama_carve(&P->acts, list, k, pass, need));
  }
  if (pass == 1 && P->recompute)
    for (int l = 1; l < P->nact; l++) {
      qat_tensor x_in = P->act[l].x_in;
      P->act[l] = P->act[0];
      P->act[l].x_in = x_in;
    }
  return QAT_OK;
}

qat_status qat_llama_plan(qat_llama *m, int B, int T, int training) {
  const qat_llama_config *c = &m->cfg;
  struct qat_llama_priv *P = m->priv;
  QAT_TRY(qat_llama_plan_check(m, "model plan", B, T));
  if (training && m->masters_dropped)
    return QAT_FAIL(QAT_EINVAL, "model plan: the masters were dropped (inference only)");
  if (training && m->packed)
    return QAT_FAIL(QAT_EUNSUPPORTED, "model plan: training on packed weights is not supported "
                                      "(a packed model is inference only)");

  qat_arena_free(&P->acts);
  free(P->act);
  P->act = NULL;
  P->fwd_B = P->fwd_T = P->fwd_training = 0;
  m->B = m->T = 0;
  memset(&m->logits, 0, sizeof m->logits);
  memset(&m->dlogits, 0, sizeof m->dlogits);
  memset(&P->scr, 0, sizeof P->scr);
  P->training = training != 0;
  P->recompute = P->training && m->recompute;
  /* layers frozen to codes since the gradients were laid out: lay them out again (code mode) */
  if (P->training && P->grads_built && !P->grads_one)
    for (int l = 0; l < c->n_layers; l++)
      if (P->grads_codes[l] != layer_all_codes(m, l)) P->grads_built = 0;
  QAT_TRY(qat_llama_sync_layout(m));

  int64_t N = (int64_t)B * T;
  P->nact = P->training ? c->n_layers : 1;
  P->act = calloc((size_t)P->nact, sizeof *P->act);
  if (!P->act) return QAT_FAIL(QAT_ENOMEM, "model: out of host memory");
  size_t need = 0;
  qat_status st = QAT_OK;
  QAT_CHECK(st, qat_llama_acts_walk(m, N, 0, &need), fail);
  QAT_CHECK(st, qat_arena_init(&P->acts, m->be, "activations", need), fail);
  QAT_CHECK(st, qat_llama_acts_walk(m, N, 1, &need), fail);
  P->plan_dtype = m->act_dtype;
  m->B = B;
  m->T = T;
  return QAT_OK;
fail:
  qat_arena_free(&P->acts);
  free(P->act);
  P->act = NULL;
  return st;
}
#undef BUF

qat_status qat_llama_zero_grad(qat_llama *m) {
  struct qat_llama_priv *P = m->priv;
  if (!P->training && !P->btraining)
    return QAT_FAIL(QAT_EINVAL, "model: zero_grad needs qat_llama_plan(..., training = 1) or "
                                "qat_llama_plan_block(..., training = 1)");
  QAT_TRY(qat_llama_sync_layout(m));
  if (P->grads.used) QAT_TRY(m->be->memset0(m->be, P->grads.base, P->grads.used));
  if (P->qgrads.used) QAT_TRY(m->be->memset0(m->be, P->qgrads.base, P->qgrads.used));
  return QAT_OK;
}

void qat_llama_unplan(qat_llama *m, int whole, int block) {
  struct qat_llama_priv *P = m->priv;
  if (whole) {
    qat_arena_free(&P->acts);
    free(P->act);
    P->act = NULL;
    P->nact = 0;
    P->fwd_B = P->fwd_T = P->fwd_training = 0;
    P->training = P->recompute = 0;
    m->B = m->T = 0;
    memset(&m->logits, 0, sizeof m->logits);
    memset(&m->dlogits, 0, sizeof m->dlogits);
    memset(&P->scr, 0, sizeof P->scr);
  }
  if (block) {
    qat_arena_free(&P->bacts);
    memset(&P->bact, 0, sizeof P->bact);
    memset(&P->bscr, 0, sizeof P->bscr);
    P->bB = P->bT = 0;
    P->btraining = 0;
    P->bfwd_layer = -1;
    P->bfwd_B = P->bfwd_T = P->bfwd_training = 0;
  }
}

/* ---- inference-only models: drop the Linear masters ------------------------------------------*/

qat_status qat_llama_drop_masters(qat_llama *m, size_t *dropped_bytes) {
  struct qat_llama_priv *P = m->priv;
  if (dropped_bytes) *dropped_bytes = 0;
  if (m->masters_dropped) return QAT_OK;
  if (m->quantized || P->training || P->btraining)
    return QAT_FAIL(QAT_EINVAL, "model drop_masters: only for unquantized inference-only models");
  QAT_TRY(qat_llama_sync_wcomp(m));
  if (m->layers[0].q.w_hat.data == m->layers[0].q.w.data) return QAT_OK; /* F32: w is w_hat */
  for (int l = 0; l < m->cfg.n_layers; l++) QAT_TRY(qat_llama_refresh_layer(m, l));
  lt_entry *t = NULL;
  int n = 0;
  size_t need = 0;
  QAT_TRY(qat_llama_table(m, &t, &n));
  qat_arena na = {0};
  qat_tensor *nt = calloc((size_t)n + 1, sizeof *nt); /* [n] table entries, then inv_freq */
  qat_status st = nt ? QAT_OK : QAT_FAIL(QAT_ENOMEM, "model drop_masters: out of host memory");
  if (st == QAT_OK) st = qat_llama_params_need(m, 1, &need);
  if (st == QAT_OK) st = qat_arena_init(&na, m->be, "params", need);
  /* embeddings, norms, biases, lm_head, inv_freq: copied to the new arena; the model switches
   * to it only once every copy succeeded */
  for (int i = 0; st == QAT_OK && i <= n; i++) {
    if (i < n && t[i].kind == LT_LINEAR_W) continue;
    const qat_tensor *src = i < n ? t[i].p : &m->inv_freq;
    st = qat_arena_tensor(&na, &nt[i], QAT_F32, src->ndim, src->shape, src->name);
    if (st == QAT_OK) st = m->be->copy(m->be, nt[i].data, src->data, qat_nbytes(src));
  }
  if (st == QAT_OK) st = m->be->sync(m->be); /* the copies read the old arena */
  if (st != QAT_OK) {
    qat_arena_free(&na);
    free(nt);
    free(t);
    return st;
  }
  for (int i = 0; i <= n; i++) {
    if (i < n && t[i].kind == LT_LINEAR_W) continue;
    nt[i].arena = &P->params;
    *(i < n ? t[i].p : &m->inv_freq) = nt[i];
  }
  if (m->cfg.tie_embeddings) m->lm_head = m->embed;
  size_t old_cap = P->params.cap;
  qat_arena_free(&P->params);
  P->params = na;
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      const char *name = lins[i]->w.name;
      lins[i]->w = lins[i]->w_hat; /* forward's refresh sees w == w_hat and keeps it */
      lins[i]->w.name = name;
    }
  }
  m->masters_dropped = 1;
  if (dropped_bytes) *dropped_bytes = old_cap - na.cap;
  free(nt);
  free(t);
  return QAT_OK;
}
