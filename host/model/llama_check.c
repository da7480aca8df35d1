/* config.json against the weights, before anything sized from the config is allocated.
 *
 * A hand-edited config.json (hidden_size 12288 with 40 layers, vocab_size x100, ...) used to
 * size and zero the parameter arena first and fail only on that allocation (14-70 GB). Here the
 * model's tensor table (the one loading, saving and sizing walk, so they cannot disagree) is
 * compared with the safetensors headers (names, shapes, dtypes; the data are never touched:
 * the files are mapped and only the header pages are read). The only allocations are the
 * table itself and the model shell (a few KB per layer), and the shell is built only once the
 * number of layers has been checked against the layer indices the files hold, so their size
 * is bounded by the headers, not by config.json.
 *
 * Extra tensors the table does not name (rotary_emb.inv_freq of old checkpoints, a tied
 * lm_head.weight, quantizer state or packed codes a qat export may carry) are accepted, except
 * tensors of layers past num_hidden_layers. Every refusal is QAT_EFORMAT (or QAT_EUNSUPPORTED
 * for a dtype) with one line naming config.json, the key and the tensor.
 *
 * A packed folder (quant/packed.h) holds each decoder Linear as <base>.qcodes [N, row_bytes] +
 * .qscales + .qzeros with K in the "<base>.in_features" metadata: qat_llama_check_packed checks
 * N and K against config.json instead of <base>.weight (the packed tensors' agreement with one
 * another is qat_packed_st_read's, when they are read). */
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "model/llama_check.h"
#include "model/llama_priv.h"
#include "quant/packed.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A tensor name from a file, printable and bounded for a one-line message. */
static const char *clean(const char *s, char *buf, size_t n) {
  size_t i = 0;
  for (; s[i] && i + 1 < n; i++) buf[i] = isprint((unsigned char)s[i]) ? s[i] : '?';
  buf[i] = 0;
  return buf;
}

static const char *st_shape_str(const qat_st_tensor *t, char *buf, size_t n) {
  qat_tensor v = {.ndim = t->ndim};
  for (int i = 0; i < t->ndim && i < QAT_MAX_DIMS; i++) v.shape[i] = t->shape[i];
  return qat_shape_str(&v, buf, n);
}

/* Layer index of "model.layers.N.<anything>", or -1. */
static long layer_of(const char *name) {
  static const char pre[] = "model.layers.";
  if (strncmp(name, pre, sizeof pre - 1) != 0) return -1;
  const char *p = name + sizeof pre - 1;
  long l = 0;
  int digits = 0;
  for (; *p >= '0' && *p <= '9'; p++, digits++) {
    if (l > 100000000L) return -1; /* not a layer index any model has */
    l = l * 10 + (*p - '0');
  }
  return digits && *p == '.' ? l : -1;
}

/* The config.json keys that size axis `ax` of table entry e, with their values. */
static const char *axis_keys(const qat_llama_config *c, const lt_entry *e, int ax, char *buf,
                             size_t n) {
  enum { HIDDEN, VOCAB, FFN, QDIM, KVDIM } k = HIDDEN;
  const char *nm = e->name;
  if (e->kind == LT_EMBED || e->kind == LT_LMHEAD) {
    k = ax == 0 ? VOCAB : HIDDEN;
  } else if (e->kind == LT_LINEAR_W || e->kind == LT_BIAS) {
    int out_axis = ax == 0;
    if (strstr(nm, ".q_proj."))
      k = out_axis ? QDIM : HIDDEN;
    else if (strstr(nm, ".k_proj.") || strstr(nm, ".v_proj."))
      k = out_axis ? KVDIM : HIDDEN;
    else if (strstr(nm, ".o_proj."))
      k = out_axis ? HIDDEN : QDIM;
    else if (strstr(nm, ".gate_proj.") || strstr(nm, ".up_proj."))
      k = out_axis ? FFN : HIDDEN;
    else if (strstr(nm, ".down_proj."))
      k = out_axis ? HIDDEN : FFN;
  }
  switch (k) {
  case VOCAB: snprintf(buf, n, "vocab_size = %d", c->vocab); break;
  case FFN: snprintf(buf, n, "intermediate_size = %d", c->hidden); break;
  case QDIM:
    snprintf(buf, n, "num_attention_heads = %d x head_dim = %d (%lld)", c->n_heads, c->head_dim,
             (long long)c->n_heads * c->head_dim);
    break;
  case KVDIM:
    snprintf(buf, n, "num_key_value_heads = %d x head_dim = %d (%lld)", c->n_kv_heads,
             c->head_dim, (long long)c->n_kv_heads * c->head_dim);
    break;
  default: snprintf(buf, n, "hidden_size = %d", c->dim); break;
  }
  return buf;
}

/* What in config.json makes the model expect entry e (for a missing tensor). */
static const char *why_expected(const qat_llama_config *c, const lt_entry *e, char *buf,
                                size_t n) {
  if (e->kind == LT_LMHEAD)
    snprintf(buf, n, "tie_word_embeddings = false");
  else if (e->kind == LT_BIAS)
    snprintf(buf, n, "%s", strcmp(c->arch, "qwen2") == 0 ? "model_type = \"qwen2\" (q/k/v biases)"
                                                         : "attention_bias = true");
  else if (layer_of(e->name) >= 0)
    snprintf(buf, n, "num_hidden_layers = %d", c->n_layers);
  else
    snprintf(buf, n, "model_type = \"%s\"", c->arch);
  return buf;
}

/* Layers the files hold: *lf = 1 + the largest layer index, *where = one of its tensors. */
static void layers_held(const qat_st_set *set, long *lf, const char **where,
                        const qat_st_file **wfile, long at_least) {
  *lf = 0;
  *where = NULL;
  *wfile = NULL;
  for (int f = 0; f < set->nfiles; f++)
    for (int i = 0; i < set->files[f].n; i++) {
      long l = layer_of(set->files[f].tensors[i].name);
      if (l + 1 > *lf) *lf = l + 1;
      if (l >= at_least && !*where) {
        *where = set->files[f].tensors[i].name;
        *wfile = &set->files[f];
      }
    }
}

/* One table entry against the file's tensor. */
static qat_status check_entry(const char *cfg, const qat_llama_config *c, const qat_st_set *set,
                              const char *dir, const lt_entry *e) {
  char a[96], b[96], k[128];
  const qat_st_file *file = NULL;
  const qat_st_tensor *t = qat_st_set_find(set, e->name, &file);
  if (!t)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s implies tensor %s, which is missing from the "
                                 "safetensors in %s",
                    cfg, why_expected(c, e, k, sizeof k), e->name, dir);
  int ax = -1; /* first axis that disagrees; ndim when the rank does */
  if (t->ndim != e->ndim) ax = e->ndim;
  for (int i = 0; ax < 0 && i < e->ndim; i++)
    if (t->shape[i] != e->shape[i]) ax = i;
  if (ax >= 0) {
    qat_tensor want = qat_view(NULL, QAT_F32, QAT_DEV_CPU, e->ndim, e->shape);
    if (ax == e->ndim) {
      char k1[128];
      snprintf(k, sizeof k, "%s", axis_keys(c, e, 0, k1, sizeof k1));
      if (e->ndim > 1) {
        size_t used = strlen(k);
        snprintf(k + used, sizeof k - used, ", %s", axis_keys(c, e, 1, k1, sizeof k1));
      }
    } else {
      axis_keys(c, e, ax, k, sizeof k);
    }
    return QAT_FAIL(QAT_EFORMAT, "%s: %s disagrees with the weights: tensor %s has shape %s in %s "
                                 "but config.json implies %s",
                    cfg, k, e->name, st_shape_str(t, a, sizeof a), file->path,
                    qat_shape_str(&want, b, sizeof b));
  }
  if (t->dtype != QAT_F32 && t->dtype != QAT_F16 && t->dtype != QAT_BF16)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: tensor %s has dtype %s in %s (a model's weights are "
                                      "F32, F16 or BF16; torch_dtype says %s)",
                    cfg, e->name, qat_dtype_name(t->dtype), file->path,
                    qat_dtype_name(c->file_dtype));
  return QAT_OK;
}

/* A packed Linear (entry e of kind LT_LINEAR_W, "<base>.weight") against config.json: its
 * .qcodes present in a file with qat_packed metadata, N rows = out, in_features = in. */
static qat_status check_packed_entry(const char *cfg, const qat_llama_config *c,
                                     const qat_st_set *set, const char *dir, const lt_entry *e) {
  char name[160], meta[192], k[128], a[96];
  const char *base = e->lin->name;
  const qat_st_file *file = NULL;
  snprintf(name, sizeof name, "%s.qcodes", base);
  const qat_st_tensor *t = qat_st_set_find(set, name, &file);
  if (!t)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s implies tensor %s, which is missing from the packed "
                                 "safetensors in %s",
                    cfg, why_expected(c, e, k, sizeof k), name, dir);
  if (!qat_packed_st_is_packed(file))
    return QAT_FAIL(QAT_EFORMAT, "%s: tensor %s is in %s, which has no qat_packed metadata", cfg,
                    name, file->path);
  if (t->ndim != 2 || t->dtype != QAT_U8)
    return QAT_FAIL(QAT_EFORMAT, "%s: tensor %s in %s is %s %s (packed codes are U8 [out, bytes])",
                    cfg, name, file->path, qat_dtype_name(t->dtype), st_shape_str(t, a, sizeof a));
  if (t->shape[0] != e->shape[0])
    return QAT_FAIL(QAT_EFORMAT, "%s: %s disagrees with the packed weights: tensor %s has %lld "
                                 "rows (out features) in %s but config.json implies %lld",
                    cfg, axis_keys(c, e, 0, k, sizeof k), name, (long long)t->shape[0],
                    file->path, (long long)e->shape[0]);
  snprintf(meta, sizeof meta, "%s.in_features", base);
  const char *ks = qat_st_meta(file, meta);
  char *end = NULL;
  long long K = ks ? strtoll(ks, &end, 10) : -1;
  if (!ks || *end)
    return QAT_FAIL(QAT_EFORMAT, "%s: tensor %s in %s has no integer %s metadata", cfg, name,
                    file->path, meta);
  if (K != e->shape[1])
    return QAT_FAIL(QAT_EFORMAT, "%s: %s disagrees with the packed weights: tensor %s has "
                                 "%s = %lld in %s but config.json implies %lld",
                    cfg, axis_keys(c, e, 1, k, sizeof k), name, meta, K, file->path,
                    (long long)e->shape[1]);
  return QAT_OK;
}

/* Weights a file holds: its tensors' elements, a packed Linear counted as out x in_features
 * (its .qscales / .qzeros not at all). */
static double held_params(const qat_st_set *set) {
  double held = 0;
  char meta[192];
  for (int f = 0; f < set->nfiles; f++) {
    const qat_st_file *file = &set->files[f];
    for (int i = 0; i < file->n; i++) {
      const qat_st_tensor *t = &file->tensors[i];
      size_t len = strlen(t->name);
      int pk = qat_packed_st_is_packed(file);
      if (pk && len > 7 && (strcmp(t->name + len - 8, ".qscales") == 0 ||
                            strcmp(t->name + len - 7, ".qzeros") == 0))
        continue;
      if (pk && len > 7 && strcmp(t->name + len - 7, ".qcodes") == 0 && t->ndim == 2) {
        snprintf(meta, sizeof meta, "%.*s.in_features", (int)(len - 7), t->name);
        const char *ks = qat_st_meta(file, meta);
        held += (double)t->shape[0] * (ks ? strtod(ks, NULL) : 0.0);
        continue;
      }
      held += (double)qat_st_numel(t);
    }
  }
  return held;
}

/* Parameters config.json implies, in closed form (as qat_llama_memory_estimate sizes them). */
static double implied_params(const qat_llama_config *c) {
  double C = c->dim, F = c->hidden, V = c->vocab, qd = (double)c->n_heads * c->head_dim,
         kvd = (double)c->n_kv_heads * c->head_dim;
  double layer = 2 * C + 2 * qd * C + 2 * kvd * C + 3 * F * C;
  if (c->qkv_bias) layer += qd + 2 * kvd;
  if (c->o_bias) layer += C;
  return V * C * (c->tie_embeddings ? 1 : 2) + C + c->n_layers * layer;
}

static qat_status check_weights(const qat_llama_config *c, const qat_st_set *set,
                                const char *dir, int packed) {
  char cfg[4096], nb[160];
  QAT_TRY(qat_path_join(cfg, sizeof cfg, dir, "config.json"));
  QAT_TRY(qat_llama_config_check(c));
  for (int f = 0; !packed && f < set->nfiles; f++)
    if (qat_packed_st_is_packed(&set->files[f]))
      return QAT_FAIL(QAT_EUNSUPPORTED, "%s holds packed weights (qat_packed metadata in %s): a "
                                        "packed model is inference only (qat eval and qat "
                                        "generate run on it); training or quantizing needs the "
                                        "folder it was made from",
                      dir, set->files[f].path);

  /* 1. every tensor of the model's table (present, shape, dtype), in file order, through a
   * shell of at most the layers the files hold: config.json's num_hidden_layers sizes nothing
   * before it is checked in 2 */
  long lf = 0;
  const char *extra = NULL;
  const qat_st_file *xfile = NULL;
  layers_held(set, &lf, &extra, &xfile, c->n_layers);
  if (lf > 0) {
    qat_llama_config cc = *c;
    if (cc.n_layers > lf) cc.n_layers = (int)lf;
    qat_llama *shell = NULL;
    QAT_TRY(qat_llama_shell(&cc, &shell));
    lt_entry *t = NULL;
    int n = 0;
    qat_status st = qat_llama_table(shell, &t, &n);
    for (int i = 0; st == QAT_OK && i < n; i++)
      st = packed && t[i].kind == LT_LINEAR_W ? check_packed_entry(cfg, c, set, dir, &t[i])
                                              : check_entry(cfg, c, set, dir, &t[i]);
    free(t);
    qat_llama_free(shell);
    QAT_TRY(st);
  }

  /* 2. the number of layers: a missing or an extra layer's tensors */
  if (c->n_layers > lf)
    return QAT_FAIL(QAT_EFORMAT, "%s: num_hidden_layers = %d but the weights in %s hold %ld "
                                 "layer(s): tensor model.layers.%ld.input_layernorm.weight is "
                                 "missing",
                    cfg, c->n_layers, dir, lf, lf);
  if (extra)
    return QAT_FAIL(QAT_EFORMAT, "%s: num_hidden_layers = %d but the weights hold layer %ld too: "
                                 "tensor %s in %s",
                    cfg, c->n_layers, layer_of(extra), clean(extra, nb, sizeof nb), xfile->path);

  /* 3. the total, counted independently of the table: a guard should the table and the closed
   * form that sizes memory estimates (and so the arenas) ever disagree */
  double held = held_params(set), want = implied_params(c);
  if (want > held)
    return QAT_FAIL(QAT_EFORMAT, "%s: hidden_size %d, intermediate_size %d, num_hidden_layers %d, "
                                 "vocab_size %d, heads %d/%d x head_dim %d imply %.0f parameters "
                                 "but the weights in %s hold %.0f",
                    cfg, c->dim, c->hidden, c->n_layers, c->vocab, c->n_heads, c->n_kv_heads,
                    c->head_dim, want, dir, held);
  return QAT_OK;
}

qat_status qat_llama_check_weights(const qat_llama_config *c, const qat_st_set *set,
                                   const char *dir) {
  return check_weights(c, set, dir, 0);
}

qat_status qat_llama_check_packed(const qat_llama_config *c, const qat_st_set *set,
                                  const char *dir) {
  return check_weights(c, set, dir, 1);
}

qat_status qat_llama_check_dir(const char *dir, qat_llama_config *out) {
  qat_llama_config c;
  QAT_TRY(qat_llama_config_load(dir, &c));
  qat_st_set set;
  QAT_TRY(qat_st_set_open(dir, &set));
  qat_status st = qat_llama_check_weights(&c, &set, dir);
  qat_st_set_close(&set);
  if (st == QAT_OK && out) *out = c;
  return st;
}
