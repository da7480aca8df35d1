/* GGUF {arch}.* hyper-parameters -> Hugging Face config.json (gguf_convert.h), with the same keys
 * and values as tests/ref/gguf_ref.py, plus rope_scaling when the file carries one.
 *
 * Llama-3.1-style files do not store the llama3 rope-scaling parameters: llama.cpp's converter
 * bakes them into a rope_freqs.weight tensor of per-frequency divisors. In the transition band
 * those are 1 / ((1 - s) / factor + s) with s = (orig / wavelen - lo) / (hi - lo), an affine
 * function of 1 / wavelen; (orig, lo, hi) and (k orig, k lo, k hi) give identical divisors, so
 * fixing orig (the file's rope.scaling.original_context_length, else llama.cpp's default 8192)
 * and solving the line for lo and hi recovers an exactly equivalent rope_scaling. */
#include "io/fsutil.h"
#include "io/gguf_convert.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static qat_status need_int(const qat_gguf_file *f, const char *arch, const char *k, int64_t *v,
                           int required, int64_t dflt) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", arch, k);
  int found = 0;
  QAT_TRY(qat_gguf_get_int(f, key, v, &found));
  if (!found) {
    if (required) return QAT_FAIL(QAT_EFORMAT, "%s: missing required key %s", f->path, key);
    *v = dflt;
  } else if (*v <= 0 || *v > (int64_t)1 << 31) {
    return QAT_FAIL(QAT_EFORMAT, "%s: key %s = %" PRId64 " is out of range", f->path, key, *v);
  }
  return QAT_OK;
}

static qat_status need_float(const qat_gguf_file *f, const char *arch, const char *k, double *v,
                             int required, double dflt) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", arch, k);
  int found = 0;
  QAT_TRY(qat_gguf_get_float(f, key, v, &found));
  if (!found) {
    if (required) return QAT_FAIL(QAT_EFORMAT, "%s: missing required key %s", f->path, key);
    *v = dflt;
  } else if (!(*v > 0) || !isfinite(*v)) {
    return QAT_FAIL(QAT_EFORMAT, "%s: key %s = %g must be a positive number", f->path, key, *v);
  }
  return QAT_OK;
}

static qat_status rope_scaling_keys(const qat_gguf_file *f, qat_gguf_hparams *h) {
  char key[128], *type = NULL;
  int found = 0;
  snprintf(key, sizeof key, "%s.rope.scaling.type", h->arch);
  QAT_TRY(qat_gguf_get_str(f, key, &type, &found));
  h->rope_type[0] = 0;
  int64_t orig = 0;
  QAT_TRY(need_int(f, h->arch, "rope.scaling.original_context_length", &orig, 0, 0));
  h->rope_orig = orig;
  if (!found || !strcmp(type, "none")) {
    free(type);
    return QAT_OK;
  }
  qat_status st = QAT_OK;
  if (strcmp(type, "linear") && strcmp(type, "yarn"))
    st = QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s \"%s\" is not supported (none, linear, yarn)",
                  f->path, key, type);
  else
    snprintf(h->rope_type, sizeof h->rope_type, "%s", type);
  free(type);
  QAT_TRY(st);
  QAT_TRY(need_float(f, h->arch, "rope.scaling.factor", &h->rope_factor, 1, 0));
  if (!strcmp(h->rope_type, "yarn") && !h->rope_orig)
    return QAT_FAIL(QAT_EFORMAT, "%s: yarn rope scaling without %s.rope.scaling.original_context_"
                    "length", f->path, h->arch);
  return QAT_OK;
}

qat_status qat_gguf_read_hparams(const qat_gguf_file *f, qat_gguf_hparams *h) {
  memset(h, 0, sizeof *h);
  char *arch = NULL;
  int found = 0;
  QAT_TRY(qat_gguf_get_str(f, "general.architecture", &arch, &found));
  if (!found) return QAT_FAIL(QAT_EFORMAT, "%s: missing required key general.architecture", f->path);
  int ok = !strcmp(arch, "llama") || !strcmp(arch, "mistral") || !strcmp(arch, "qwen2");
  if (!ok) {
    char pb[80];
    qat_status st = QAT_FAIL(QAT_EUNSUPPORTED, "%s: general.architecture \"%s\" is not supported "
                             "(llama, mistral, qwen2)", f->path, qat_gguf_printable(arch, pb, sizeof pb));
    free(arch);
    return st;
  }
  snprintf(h->arch, sizeof h->arch, "%s", arch);
  free(arch);
  const char *a = h->arch;
  QAT_TRY(need_int(f, a, "block_count", &h->n_layers, 1, 0));
  QAT_TRY(need_int(f, a, "embedding_length", &h->dim, 1, 0));
  QAT_TRY(need_int(f, a, "feed_forward_length", &h->ffn, 1, 0));
  QAT_TRY(need_int(f, a, "attention.head_count", &h->heads, 1, 0));
  QAT_TRY(need_int(f, a, "attention.head_count_kv", &h->kv_heads, 0, h->heads));
  QAT_TRY(need_int(f, a, "context_length", &h->ctx, 1, 0));
  if (h->heads % h->kv_heads)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s.attention.head_count %" PRId64 " is not a multiple of "
                    "%s.attention.head_count_kv %" PRId64, f->path, a, h->heads, a, h->kv_heads);
  /* head size: attention.key_length (Hugging Face's head_dim, which may differ from
   * embedding_length / head_count), else rope.dimension_count, else embedding_length / heads;
   * value_length and the rotary dimension must equal it (qat has no partial rotary) */
  int64_t klen = 0, vlen = 0, rdim = 0;
  QAT_TRY(need_int(f, a, "attention.key_length", &klen, 0, 0));
  QAT_TRY(need_int(f, a, "attention.value_length", &vlen, 0, 0));
  QAT_TRY(need_int(f, a, "rope.dimension_count", &rdim, 0, 0));
  const int have_k = klen > 0, have_v = vlen > 0, have_r = rdim > 0; /* absent: 0 */
  if (!have_k && !have_r && h->dim % h->heads)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s.embedding_length %" PRId64 " is not a multiple of "
                    "%s.attention.head_count %" PRId64, f->path, a, h->dim, a, h->heads);
  h->head_dim = have_k ? klen : have_r ? rdim : h->dim / h->heads;
  if ((have_v && vlen != h->head_dim) || (have_r && rdim != h->head_dim))
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s: key_length %" PRId64 ", value_length %" PRId64
                    ", rope.dimension_count %" PRId64 " differ (partial rotary or unequal heads "
                    "are not supported)", f->path, a, h->head_dim, have_v ? vlen : h->head_dim,
                    have_r ? rdim : h->head_dim);
  if (h->head_dim % 2)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s: head size %" PRId64 " is odd", f->path, a, h->head_dim);
  QAT_TRY(need_float(f, a, "attention.layer_norm_rms_epsilon", &h->eps, 1, 0));
  QAT_TRY(need_float(f, a, "rope.freq_base", &h->theta, 0, 10000.0));
  const qat_gguf_value *toks = NULL;
  QAT_TRY(qat_gguf_get_array(f, "tokenizer.ggml.tokens", QAT_GGUF_STRING, &toks));
  const qat_gguf_tensor *emb = qat_gguf_find_tensor(f, "token_embd.weight");
  int64_t dflt = toks ? (int64_t)toks->count : emb && emb->ndim == 2 ? emb->ne[1] : 0;
  QAT_TRY(need_int(f, a, "vocab_size", &h->vocab, dflt == 0, dflt));
  h->tied = qat_gguf_find_tensor(f, "output.weight") == NULL;
  int64_t id = 0;
  QAT_TRY(qat_gguf_get_int(f, "tokenizer.ggml.bos_token_id", &id, &h->has_bos));
  h->bos = id;
  QAT_TRY(qat_gguf_get_int(f, "tokenizer.ggml.eos_token_id", &id, &h->has_eos));
  h->eos = id;
  if ((h->has_bos && (h->bos < 0 || h->bos >= h->vocab)) ||
      (h->has_eos && (h->eos < 0 || h->eos >= h->vocab)))
    return QAT_FAIL(QAT_EFORMAT, "%s: tokenizer.ggml.%s_token_id is outside the vocabulary of %"
                    PRId64, f->path, h->has_bos && (h->bos < 0 || h->bos >= h->vocab) ? "bos" : "eos",
                    h->vocab);
  return rope_scaling_keys(f, h);
}

/* HF's llama3 divisors for (factor, lo, hi, orig), as llama.cpp's converter computes them. */
static double llama3_divisor(double inv_freq, double factor, double lo, double hi, double orig) {
  double wl = 2 * M_PI / inv_freq, lw = orig / lo, hw = orig / hi;
  if (wl < hw) return 1;
  if (wl > lw) return factor;
  double s = (orig / wl - lo) / (hi - lo);
  return 1 / ((1 - s) / factor + s);
}

/* First factor the parameters do not reproduce to 1e-5 relative; -1 when all match. */
static int64_t fit_error(const qat_gguf_hparams *h, const float *rf, int64_t n, double factor,
                         double lo, double hi, double orig) {
  for (int64_t i = 0; i < n; i++) {
    double inv = 1.0 / pow(h->theta, 2.0 * (double)i / (double)h->head_dim);
    double want = llama3_divisor(inv, factor, lo, hi, orig);
    if (fabs(want - rf[i]) > 1e-5 * want) return i;
  }
  return -1;
}

qat_status qat_gguf_rope_llama3(const qat_gguf_file *f, const float *rf, int64_t n,
                                qat_gguf_hparams *h) {
  const char *T = "rope_freqs.weight";
  if (n != h->head_dim / 2)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s has %" PRId64 " factors (head_dim / 2 = %" PRId64 ")",
                    f->path, T, n, h->head_dim / 2);
  if (h->rope_type[0])
    return QAT_FAIL(QAT_EFORMAT, "%s: both %s and %s.rope.scaling.type", f->path, T, h->arch);
  double factor = 1, D = (double)h->head_dim;
  for (int64_t i = 0; i < n; i++) {
    if (!(rf[i] >= 1) || !isfinite(rf[i]))
      return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s[%" PRId64 "] = %g (llama3 divisors are >= 1)",
                      f->path, T, i, rf[i]);
    if (rf[i] > factor) factor = rf[i];
  }
  if (factor == 1) return QAT_OK; /* all ones: no scaling */
  double orig = h->rope_orig ? (double)h->rope_orig : 8192;
  /* the band: s_i = (1 / rf_i - 1 / factor) / (1 - 1 / factor) = A x_i + B, x = 1 / wavelen */
  double x0 = 0, s0 = 0, x1 = 0, s1 = 0;
  int nb = 0;
  for (int64_t i = 0; i < n; i++) {
    double inv = 1.0 / pow(h->theta, 2.0 * (double)i / D);
    if (rf[i] > 1 + 1e-6 && rf[i] < factor * (1 - 1e-6)) {
      double x = inv / (2 * M_PI), s = (1.0 / rf[i] - 1 / factor) / (1 - 1 / factor);
      if (nb == 0) x0 = x, s0 = s;
      x1 = x, s1 = s;
      nb++;
    }
  }
  double lo = 1, hi = 4; /* llama.cpp's defaults when the band is too thin to fit */
  if (nb >= 2 && x0 != x1) {
    double A = (s1 - s0) / (x1 - x0), B = s0 - A * x0;
    double width = orig / A; /* hi - lo */
    lo = -B * width;
    hi = lo + width;
  }
  if (!(lo > 0) || !(hi > lo))
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s does not follow llama3 rope scaling", f->path, T);
  /* the divisors are float32: prefer the short values they round from (1 and 4, not
   * 1.00000003 and 3.9999998) when those reproduce the tensor as well */
  char b[32];
  snprintf(b, sizeof b, "%.4g", lo);
  double lo4 = strtod(b, NULL);
  snprintf(b, sizeof b, "%.4g", hi);
  double hi4 = strtod(b, NULL);
  int64_t bad = -1;
  if (fit_error(h, rf, n, factor, lo4, hi4, orig) < 0) {
    lo = lo4;
    hi = hi4;
  } else if ((bad = fit_error(h, rf, n, factor, lo, hi, orig)) >= 0) {
    double inv = 1.0 / pow(h->theta, 2.0 * (double)bad / D);
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s[%" PRId64 "] = %.7g is not llama3 rope scaling "
                    "(fit: factor %g, low %g, high %g, original context %g gives %.7g)", f->path,
                    T, bad, rf[bad], factor, lo, hi, orig,
                    llama3_divisor(inv, factor, lo, hi, orig));
  }
  snprintf(h->rope_type, sizeof h->rope_type, "llama3");
  h->rope_factor = factor;
  h->rope_lo = lo;
  h->rope_hi = hi;
  h->rope_orig = (int64_t)orig;
  return QAT_OK;
}

/* A double as the shortest text that reads back exactly (cJSON's own printing stops at 15
 * significant digits when they are "close enough", which changes an f32 epsilon's value). */
static void add_double(cJSON *o, const char *key, double v) {
  char b[40];
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(b, sizeof b, "%.*g", prec, v);
    if (strtod(b, NULL) == v) break;
  }
  if (!strpbrk(b, ".eEn")) strcat(b, ".0"); /* keep it a float in JSON readers */
  cJSON_AddItemToObject(o, key, cJSON_CreateRaw(b));
}

qat_status qat_gguf_write_config(const qat_gguf_hparams *h, const char *torch_dtype,
                                 const char *dir) {
  cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "architectures");
  const char *cls = !strcmp(h->arch, "qwen2")     ? "Qwen2ForCausalLM"
                    : !strcmp(h->arch, "mistral") ? "MistralForCausalLM"
                                                  : "LlamaForCausalLM";
  cJSON_AddItemToArray(arr, cJSON_CreateString(cls));
  cJSON_AddStringToObject(o, "model_type", h->arch);
  cJSON_AddStringToObject(o, "hidden_act", "silu");
  cJSON_AddNumberToObject(o, "hidden_size", (double)h->dim);
  cJSON_AddNumberToObject(o, "intermediate_size", (double)h->ffn);
  cJSON_AddNumberToObject(o, "num_hidden_layers", (double)h->n_layers);
  cJSON_AddNumberToObject(o, "num_attention_heads", (double)h->heads);
  cJSON_AddNumberToObject(o, "num_key_value_heads", (double)h->kv_heads);
  cJSON_AddNumberToObject(o, "head_dim", (double)h->head_dim);
  add_double(o, "rms_norm_eps", h->eps);
  add_double(o, "rope_theta", h->theta);
  cJSON_AddNumberToObject(o, "max_position_embeddings", (double)h->ctx);
  cJSON_AddNumberToObject(o, "vocab_size", (double)h->vocab);
  cJSON_AddBoolToObject(o, "tie_word_embeddings", h->tied);
  cJSON_AddStringToObject(o, "torch_dtype", torch_dtype);
  if (h->has_bos) cJSON_AddNumberToObject(o, "bos_token_id", (double)h->bos);
  if (h->has_eos) cJSON_AddNumberToObject(o, "eos_token_id", (double)h->eos);
  if (h->rope_type[0]) {
    cJSON *rs = cJSON_AddObjectToObject(o, "rope_scaling");
    cJSON_AddStringToObject(rs, "rope_type", h->rope_type);
    add_double(rs, "factor", h->rope_factor);
    if (!strcmp(h->rope_type, "llama3")) {
      add_double(rs, "low_freq_factor", h->rope_lo);
      add_double(rs, "high_freq_factor", h->rope_hi);
    }
    if (h->rope_orig)
      cJSON_AddNumberToObject(rs, "original_max_position_embeddings", (double)h->rope_orig);
  }
  char *js = cJSON_Print(o);
  cJSON_Delete(o);
  if (!js) return QAT_FAIL(QAT_ENOMEM, "config.json: out of memory");
  char path[4096];
  qat_status st = qat_path_join(path, sizeof path, dir, "config.json");
  if (st == QAT_OK) st = qat_write_file_atomic(path, js, strlen(js));
  cJSON_free(js);
  return st;
}
