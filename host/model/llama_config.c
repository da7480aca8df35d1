/* HF config.json -> qat_llama_config (Llama, Mistral, Qwen2), the checks every model config must
 * pass, RoPE inverse frequencies (with Llama-3 scaling, as HF _compute_llama3_parameters), and
 * the reverse (a config.json for models that have no source folder). */
#include "io/fsutil.h"
#include "model/llama_priv.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG "config.json"

static const cJSON *item(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return (v && !cJSON_IsNull(v)) ? v : NULL;
}

/* Integer key; *present = 0 when absent or null (then *out keeps its default). */
static qat_status get_int(const cJSON *o, const char *key, int required, int *out) {
  const cJSON *v = item(o, key);
  if (!v) {
    if (required) return QAT_FAIL(QAT_EFORMAT, CFG ": missing required key \"%s\"", key);
    return QAT_OK;
  }
  if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
      fabs(v->valuedouble) > 2147483647.0)
    return QAT_FAIL(QAT_EFORMAT, CFG ": key \"%s\" must be an integer", key);
  *out = (int)v->valuedouble;
  return QAT_OK;
}

static qat_status get_float(const cJSON *o, const char *key, int required, float *out) {
  const cJSON *v = item(o, key);
  if (!v) {
    if (required) return QAT_FAIL(QAT_EFORMAT, CFG ": missing required key \"%s\"", key);
    return QAT_OK;
  }
  if (!cJSON_IsNumber(v)) return QAT_FAIL(QAT_EFORMAT, CFG ": key \"%s\" must be a number", key);
  *out = (float)v->valuedouble;
  return QAT_OK;
}

static qat_status get_bool(const cJSON *o, const char *key, int *out) {
  const cJSON *v = item(o, key);
  if (!v) return QAT_OK;
  if (!cJSON_IsBool(v)) return QAT_FAIL(QAT_EFORMAT, CFG ": key \"%s\" must be true or false", key);
  *out = cJSON_IsTrue(v) ? 1 : 0;
  return QAT_OK;
}

/* String key copied into buf; NULL item -> *found = 0. */
static qat_status get_str(const cJSON *o, const char *key, char *buf, size_t n, int *found) {
  const cJSON *v = item(o, key);
  *found = 0;
  if (!v) return QAT_OK;
  if (!cJSON_IsString(v)) return QAT_FAIL(QAT_EFORMAT, CFG ": key \"%s\" must be a string", key);
  snprintf(buf, n, "%s", v->valuestring);
  /* every string key is compared with fixed names, and a refused one is echoed in a one-line
   * message: control bytes (a JSON "\n") become '?' (found writing fuzz_model_config) */
  for (char *p = buf; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
  *found = 1;
  return QAT_OK;
}

/* bos/eos: an int, a list of ints (the first is taken) or null (-1). */
static qat_status get_token_id(const cJSON *o, const char *key, int *out) {
  const cJSON *v = item(o, key);
  if (!v) return QAT_OK;
  if (cJSON_IsArray(v)) {
    v = cJSON_GetArrayItem(v, 0);
    if (!v) {
      *out = -1;
      return QAT_OK;
    }
  }
  if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
      v->valuedouble > 2147483647.0)
    return QAT_FAIL(QAT_EFORMAT, CFG ": key \"%s\" must be a token id (int or list of ints)", key);
  *out = (int)v->valuedouble;
  return QAT_OK;
}

static qat_status parse_rope_scaling(const cJSON *root, qat_llama_config *c) {
  const cJSON *rs = item(root, "rope_scaling");
  c->rope_type[0] = 0;
  if (!rs) return QAT_OK;
  if (!cJSON_IsObject(rs))
    return QAT_FAIL(QAT_EFORMAT, CFG ": key \"rope_scaling\" must be an object or null");
  char type[32] = "";
  int found = 0;
  QAT_TRY(get_str(rs, "rope_type", type, sizeof type, &found));
  if (!found) QAT_TRY(get_str(rs, "type", type, sizeof type, &found));
  if (!found)
    return QAT_FAIL(QAT_EFORMAT, CFG ": key \"rope_scaling\" has no \"rope_type\" (or \"type\")");
  if (strcmp(type, "default") == 0) return QAT_OK; /* HF's name for no scaling */
  if (strcmp(type, "llama3") != 0)
    return QAT_FAIL(QAT_EUNSUPPORTED,
                    CFG ": rope_scaling.rope_type \"%s\" is not supported (only llama3)", type);
  snprintf(c->rope_type, sizeof c->rope_type, "llama3");
  float f = 0, lo = 0, hi = 0;
  int orig = 0;
  qat_status st = get_float(rs, "factor", 1, &f);
  if (st == QAT_OK) st = get_float(rs, "low_freq_factor", 1, &lo);
  if (st == QAT_OK) st = get_float(rs, "high_freq_factor", 1, &hi);
  if (st == QAT_OK) st = get_int(rs, "original_max_position_embeddings", 1, &orig);
  if (st != QAT_OK) return qat_context(st, "rope_scaling (llama3)");
  if (!(f > 0) || !(lo > 0) || !(hi > lo) || orig <= 0)
    return QAT_FAIL(QAT_EFORMAT,
                    CFG ": rope_scaling: need factor > 0, 0 < low_freq_factor < high_freq_factor, "
                        "original_max_position_embeddings > 0");
  c->rope_factor = f;
  c->rope_low_freq_factor = lo;
  c->rope_high_freq_factor = hi;
  c->rope_original_max_pos = orig;
  return QAT_OK;
}

static qat_status parse(const cJSON *root, qat_llama_config *c) {
  memset(c, 0, sizeof *c);
  if (!cJSON_IsObject(root)) return QAT_FAIL(QAT_EFORMAT, CFG ": not a JSON object");
  int found = 0;
  QAT_TRY(get_str(root, "model_type", c->arch, sizeof c->arch, &found));
  if (!found) return QAT_FAIL(QAT_EFORMAT, CFG ": missing required key \"model_type\"");
  int is_qwen2 = strcmp(c->arch, "qwen2") == 0;
  if (strcmp(c->arch, "llama") != 0 && strcmp(c->arch, "mistral") != 0 && !is_qwen2)
    return QAT_FAIL(QAT_EUNSUPPORTED,
                    CFG ": model_type \"%s\" is not supported (llama, mistral, qwen2)", c->arch);

  char act[32] = "silu";
  QAT_TRY(get_str(root, "hidden_act", act, sizeof act, &found));
  if (strcmp(act, "silu") != 0)
    return QAT_FAIL(QAT_EUNSUPPORTED, CFG ": hidden_act \"%s\" is not supported (only silu)", act);

  QAT_TRY(get_int(root, "hidden_size", 1, &c->dim));
  QAT_TRY(get_int(root, "intermediate_size", 1, &c->hidden));
  QAT_TRY(get_int(root, "num_hidden_layers", 1, &c->n_layers));
  QAT_TRY(get_int(root, "num_attention_heads", 1, &c->n_heads));
  QAT_TRY(get_int(root, "vocab_size", 1, &c->vocab));
  c->n_kv_heads = c->n_heads;
  QAT_TRY(get_int(root, "num_key_value_heads", 0, &c->n_kv_heads));
  c->head_dim = 0;
  QAT_TRY(get_int(root, "head_dim", 0, &c->head_dim));
  if (c->head_dim == 0) {
    if (c->n_heads <= 0 || c->dim % c->n_heads != 0)
      return QAT_FAIL(QAT_EFORMAT, CFG ": hidden_size %d is not a multiple of "
                                       "num_attention_heads %d (and no head_dim)",
                      c->dim, c->n_heads);
    c->head_dim = c->dim / c->n_heads;
  }
  c->max_seq = 2048; /* HF LlamaConfig defaults */
  QAT_TRY(get_int(root, "max_position_embeddings", 0, &c->max_seq));
  c->norm_eps = 1e-6f;
  QAT_TRY(get_float(root, "rms_norm_eps", 0, &c->norm_eps));
  c->rope_theta = 10000.0f;
  QAT_TRY(get_float(root, "rope_theta", 0, &c->rope_theta));
  QAT_TRY(parse_rope_scaling(root, c));
  QAT_TRY(get_bool(root, "tie_word_embeddings", &c->tie_embeddings));

  int attn_bias = 0;
  QAT_TRY(get_bool(root, "attention_bias", &attn_bias));
  if (is_qwen2) {
    c->qkv_bias = 1; /* Qwen2Attention: q/k/v always biased, o never */
  } else if (attn_bias) {
    c->qkv_bias = 1; /* LlamaAttention: attention_bias applies to q, k, v and o */
    c->o_bias = 1;
  }

  /* Mistral: sliding_window (null = none). Qwen2: only when use_sliding_window is true. */
  int sw = 0, use_sw = !is_qwen2;
  if (is_qwen2) QAT_TRY(get_bool(root, "use_sliding_window", &use_sw));
  if (use_sw) QAT_TRY(get_int(root, "sliding_window", 0, &sw));
  c->sliding_window = sw > 0 ? sw : 0;

  c->bos_id = 1;
  c->eos_id = 2;
  QAT_TRY(get_token_id(root, "bos_token_id", &c->bos_id));
  QAT_TRY(get_token_id(root, "eos_token_id", &c->eos_id));

  char dt[32] = "float32";
  QAT_TRY(get_str(root, "torch_dtype", dt, sizeof dt, &found));
  if (!found) QAT_TRY(get_str(root, "dtype", dt, sizeof dt, &found)); /* transformers >= 4.56 */
  if (strcmp(dt, "float32") == 0)
    c->file_dtype = QAT_F32;
  else if (strcmp(dt, "float16") == 0)
    c->file_dtype = QAT_F16;
  else if (strcmp(dt, "bfloat16") == 0)
    c->file_dtype = QAT_BF16;
  else
    return QAT_FAIL(QAT_EUNSUPPORTED,
                    CFG ": torch_dtype \"%s\" is not supported (float32, float16, bfloat16)", dt);
  return qat_llama_config_check(c);
}

qat_status qat_llama_config_check(const qat_llama_config *c) {
#define POS(field, key)                                                                            \
  if (c->field <= 0) return QAT_FAIL(QAT_EFORMAT, CFG ": %s = %d must be positive", key, c->field)
  POS(dim, "hidden_size");
  POS(hidden, "intermediate_size");
  POS(n_layers, "num_hidden_layers");
  POS(n_heads, "num_attention_heads");
  POS(n_kv_heads, "num_key_value_heads");
  POS(head_dim, "head_dim");
  POS(vocab, "vocab_size");
  POS(max_seq, "max_position_embeddings");
#undef POS
  if (c->n_heads % c->n_kv_heads != 0)
    return QAT_FAIL(QAT_EFORMAT, CFG ": num_attention_heads %d is not a multiple of "
                                     "num_key_value_heads %d",
                    c->n_heads, c->n_kv_heads);
  if (c->head_dim % 2 != 0)
    return QAT_FAIL(QAT_EFORMAT, CFG ": head_dim %d must be even (RoPE)", c->head_dim);
  if (!(c->norm_eps > 0) || !isfinite(c->norm_eps))
    return QAT_FAIL(QAT_EFORMAT, CFG ": rms_norm_eps must be positive");
  if (!(c->rope_theta > 1) || !isfinite(c->rope_theta))
    return QAT_FAIL(QAT_EFORMAT, CFG ": rope_theta must be > 1");
  if (c->rope_type[0] && strcmp(c->rope_type, "llama3") != 0)
    return QAT_FAIL(QAT_EUNSUPPORTED, CFG ": rope_scaling.rope_type \"%s\" is not supported",
                    c->rope_type);
  if (c->file_dtype != QAT_F32 && c->file_dtype != QAT_F16 && c->file_dtype != QAT_BF16)
    return QAT_FAIL(QAT_EUNSUPPORTED, CFG ": torch_dtype %s is not supported",
                    qat_dtype_name(c->file_dtype));
  /* products that size tensors must not overflow int64 */
  if ((int64_t)c->n_heads * c->head_dim > (1 << 24) || (int64_t)c->vocab > (1 << 28))
    return QAT_FAIL(QAT_EFORMAT, CFG ": implausible sizes (heads * head_dim or vocab_size)");
  return QAT_OK;
}

qat_status qat_llama_config_load(const char *dir, qat_llama_config *c) {
  char path[4096];
  QAT_TRY(qat_path_join(path, sizeof path, dir, "config.json"));
  char *text = NULL;
  size_t len = 0;
  QAT_TRY(qat_read_file(path, &text, &len));
  cJSON *root = cJSON_ParseWithLength(text, len);
  free(text);
  if (!root) return QAT_FAIL(QAT_EFORMAT, "%s: not valid JSON", path);
  qat_status st = parse(root, c);
  cJSON_Delete(root);
  if (st != QAT_OK) return qat_context(st, "%s", dir);
  return QAT_OK;
}

void qat_llama_inv_freq(const qat_llama_config *c, float *inv_freq) {
  int D = c->head_dim;
  for (int i = 0; i < D / 2; i++) {
    double f = pow((double)c->rope_theta, -2.0 * i / D);
    if (strcmp(c->rope_type, "llama3") == 0) {
      double orig = c->rope_original_max_pos, factor = c->rope_factor;
      double lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
      double wavelen = 2 * M_PI / f;
      double low_wl = orig / lo, high_wl = orig / hi;
      if (wavelen > low_wl) {
        f = f / factor;
      } else if (wavelen >= high_wl) {
        double smooth = (orig / wavelen - lo) / (hi - lo);
        f = (1 - smooth) * f / factor + smooth * f;
      }
    }
    inv_freq[i] = (float)f;
  }
}

static const char *dtype_torch_name(qat_dtype t) {
  return t == QAT_F16 ? "float16" : t == QAT_BF16 ? "bfloat16" : "float32";
}

char *qat_llama_config_json(const qat_llama_config *c) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  const char *arch = c->arch[0] ? c->arch : "llama";
  char archs[64];
  snprintf(archs, sizeof archs, "%s",
           strcmp(arch, "mistral") == 0  ? "MistralForCausalLM"
           : strcmp(arch, "qwen2") == 0 ? "Qwen2ForCausalLM"
                                        : "LlamaForCausalLM");
  cJSON *a = cJSON_AddArrayToObject(o, "architectures");
  if (a) cJSON_AddItemToArray(a, cJSON_CreateString(archs));
  cJSON_AddStringToObject(o, "model_type", arch);
  cJSON_AddStringToObject(o, "hidden_act", "silu");
  cJSON_AddNumberToObject(o, "hidden_size", c->dim);
  cJSON_AddNumberToObject(o, "intermediate_size", c->hidden);
  cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layers);
  cJSON_AddNumberToObject(o, "num_attention_heads", c->n_heads);
  cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_heads);
  cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
  cJSON_AddNumberToObject(o, "vocab_size", c->vocab);
  cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_seq);
  cJSON_AddNumberToObject(o, "rms_norm_eps", c->norm_eps);
  cJSON_AddNumberToObject(o, "rope_theta", c->rope_theta);
  if (strcmp(c->rope_type, "llama3") == 0) {
    cJSON *rs = cJSON_AddObjectToObject(o, "rope_scaling");
    if (rs) {
      cJSON_AddStringToObject(rs, "rope_type", "llama3");
      cJSON_AddNumberToObject(rs, "factor", c->rope_factor);
      cJSON_AddNumberToObject(rs, "low_freq_factor", c->rope_low_freq_factor);
      cJSON_AddNumberToObject(rs, "high_freq_factor", c->rope_high_freq_factor);
      cJSON_AddNumberToObject(rs, "original_max_position_embeddings", c->rope_original_max_pos);
    }
  } else {
    cJSON_AddNullToObject(o, "rope_scaling");
  }
  cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_embeddings);
  if (strcmp(arch, "qwen2") != 0) cJSON_AddBoolToObject(o, "attention_bias", c->o_bias);
  if (c->sliding_window > 0) {
    if (strcmp(arch, "qwen2") == 0) cJSON_AddBoolToObject(o, "use_sliding_window", 1);
    cJSON_AddNumberToObject(o, "sliding_window", c->sliding_window);
  }
  cJSON_AddNumberToObject(o, "bos_token_id", c->bos_id);
  cJSON_AddNumberToObject(o, "eos_token_id", c->eos_id);
  cJSON_AddStringToObject(o, "torch_dtype", dtype_torch_name(c->file_dtype));
  char *s = cJSON_Print(o);
  cJSON_Delete(o);
  return s;
}
