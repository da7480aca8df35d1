/* A model folder's tokenizer -> tokenizer.ggml.* (gguf_export.h); gguf_tokenizer.c in reverse.
 *
 * tokenizer.model (SentencePiece, read through the sentencepiece library): "llama", every
 *   piece with its score and type (1 normal, 2 unknown, 3 control, 5 unused, 6 byte).
 * tokenizer.json (Hugging Face byte-level BPE): "gpt2"; tokens by id from model.vocab and
 *   added_tokens (an added token: 3 control when special, else 4 user-defined; ids no entry
 *   names become "[PAD<id>]" of type 5, as llama.cpp's converter writes them), merges as "a b";
 *   tokenizer.ggml.pre from the pre-tokenizer: Digits(individual) + ByteLevel -> smollm, the
 *   Llama-3 Split regex + ByteLevel -> llama-bpe, the Qwen2 regex -> qwen2, ByteLevel alone ->
 *   gpt2; any other shape is refused (llama.cpp would tokenize it differently).
 * tokenizer.bin (llama2.c): "llama" as llama.cpp's convert-llama2c-to-ggml reads it: ' ' back to
 *   U+2581, "\n<s>\n" / "\n</s>\n" to <s> / </s> (control), id 0 unknown, <0xNN> bytes.
 * BOS / EOS ids from config.json; add_bos_token / add_eos_token and chat_template from
 * tokenizer_config.json when it has them (SentencePiece kinds default to add_bos true). */
#include "io/fsutil.h"
#include "io/gguf_convert.h"
#include "io/gguf_export.h"
#include "io/tokenizer_internal.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct vocab {
  int64_t n;
  char **tok;
  size_t *len;
  float *score;
  int32_t *type;
  char **merges;
  int64_t nmerges;
} vocab;

static void vocab_free(vocab *v) {
  for (int64_t i = 0; v->tok && i < v->n; i++)
    free(v->tok[i]);
  for (int64_t i = 0; v->merges && i < v->nmerges; i++)
    free(v->merges[i]);
  free(v->tok);
  free(v->len);
  free(v->score);
  free(v->type);
  free(v->merges);
}

static qat_status vocab_alloc(vocab *v, int64_t n) {
  v->n = n;
  v->tok = calloc((size_t)n, sizeof *v->tok);
  v->len = calloc((size_t)n, sizeof *v->len);
  v->score = calloc((size_t)n, sizeof *v->score);
  v->type = calloc((size_t)n, sizeof *v->type);
  if (!v->tok || !v->len || !v->score || !v->type)
    return QAT_FAIL(QAT_ENOMEM, "gguf export: out of memory (vocabulary of %" PRId64 ")", n);
  return QAT_OK;
}

static qat_status set_tok(vocab *v, int64_t id, const char *s, size_t n, int type) {
  free(v->tok[id]);
  if (!(v->tok[id] = malloc(n + 1))) return QAT_FAIL(QAT_ENOMEM, "gguf export: out of memory");
  memcpy(v->tok[id], s, n);
  v->tok[id][n] = 0;
  v->len[id] = n;
  v->type[id] = type;
  return QAT_OK;
}

/* ---- tokenizer.bin (llama2.c) ---- */

static qat_status from_llama2c(const char *path, int64_t V, vocab *v) {
  char *d = NULL;
  size_t n = 0;
  QAT_TRY(qat_read_file(path, &d, &n));
  qat_status st = vocab_alloc(v, V);
  size_t o = 4;
  int64_t i = 0;
  for (; st == QAT_OK && o < n && i < V; i++) {
    float score;
    int32_t len;
    if (o + 8 > n) break;
    memcpy(&score, d + o, 4);
    memcpy(&len, d + o + 4, 4);
    o += 8;
    if (len < 0 || (size_t)len > n - o) break;
    char *s = d + o;
    o += (size_t)len;
    v->score[i] = score;
    if (i == 0) { st = set_tok(v, i, "<unk>", 5, 2); continue; }
    if (len == 5 && !memcmp(s, "\n<s>\n", 5)) { st = set_tok(v, i, "<s>", 3, 3); continue; }
    if (len == 6 && !memcmp(s, "\n</s>\n", 6)) { st = set_tok(v, i, "</s>", 4, 3); continue; }
    int byte = len == 6 && !memcmp(s, "<0x", 3) && s[5] == '>';
    /* ' ' -> U+2581 (3 bytes in UTF-8) */
    size_t sp = 0;
    for (int32_t k = 0; k < len; k++) sp += s[k] == ' ';
    char *b = malloc((size_t)len + 2 * sp + 1);
    if (!b) { st = QAT_FAIL(QAT_ENOMEM, "gguf export: out of memory"); break; }
    size_t m = 0;
    for (int32_t k = 0; k < len; k++) {
      if (s[k] == ' ') { memcpy(b + m, "\xe2\x96\x81", 3); m += 3; }
      else b[m++] = s[k];
    }
    st = set_tok(v, i, b, m, byte ? 6 : 1);
    free(b);
  }
  if (st == QAT_OK && (i != V || o != n))
    st = QAT_FAIL(QAT_EFORMAT, "%s: not a llama2.c tokenizer of %" PRId64 " tokens (the model's "
                  "vocabulary): %" PRId64 " records read, %zu of %zu bytes", path, V, i, o, n);
  free(d);
  return st;
}

/* ---- tokenizer.model (SentencePiece) ---- */

static qat_status from_spm(const char *path, int64_t V, vocab *v) {
  char *d = NULL;
  size_t n = 0;
  QAT_TRY(qat_read_file(path, &d, &n));
  qat_spm *s = NULL;
  qat_status st = qat_spm_load(path, d, n, &s);
  free(d);
  QAT_TRY(st);
  if (qat_spm_vocab(s) != V)
    st = QAT_FAIL(QAT_EFORMAT, "%s: %d pieces for a vocabulary of %" PRId64, path,
                  qat_spm_vocab(s), V);
  if (st == QAT_OK) st = vocab_alloc(v, V);
  for (int64_t i = 0; st == QAT_OK && i < V; i++) {
    size_t len = 0;
    int kind;
    const char *p = qat_spm_piece(s, (int)i, &len, &kind);
    if (!p) st = QAT_FAIL(QAT_EFORMAT, "%s: piece %" PRId64 " unreadable", path, i);
    else st = set_tok(v, i, p, len, qat_spm_type(s, (int)i));
    v->score[i] = qat_spm_score(s, (int)i);
  }
  qat_spm_free(s);
  return st;
}

/* ---- tokenizer.json (byte-level BPE) ---- */

static int is_type(const cJSON *o, const char *t) {
  const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
  return cJSON_IsString(ty) && !strcmp(ty->valuestring, t);
}
static int flag(const cJSON *o, const char *k) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k)); }

/* tokenizer.ggml.pre of a pre_tokenizer, or NULL. */
static const char *pre_name(const cJSON *pre, const cJSON *norm) {
  if (is_type(pre, "ByteLevel")) return flag(pre, "use_regex") ? "gpt2" : NULL;
  if (!is_type(pre, "Sequence")) return NULL;
  const cJSON *l = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
  if (cJSON_GetArraySize(l) != 2) return NULL;
  const cJSON *a = cJSON_GetArrayItem(l, 0), *b = cJSON_GetArrayItem(l, 1);
  if (!is_type(b, "ByteLevel")) return NULL;
  if (is_type(a, "Digits") && flag(a, "individual_digits") && flag(b, "use_regex")) return "smollm";
  if (!is_type(a, "Split") || flag(b, "use_regex")) return NULL;
  const cJSON *re = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(a, "pattern"), "Regex");
  if (!cJSON_IsString(re)) return NULL;
  int nfc = is_type(norm, "NFC");
  if (!strcmp(re->valuestring, QAT_GGUF_LLAMA3_RE) && !nfc) return "llama-bpe";
  if (!strcmp(re->valuestring, QAT_GGUF_QWEN2_RE) && nfc) return "qwen2";
  return NULL;
}

static qat_status from_json(const char *path, int64_t V, vocab *v, const char **pre) {
  char *d = NULL;
  size_t n = 0;
  QAT_TRY(qat_read_file(path, &d, &n));
  cJSON *root = cJSON_ParseWithLength(d, n);
  free(d);
  qat_status st = QAT_OK;
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
  const cJSON *vj = cJSON_GetObjectItemCaseSensitive(model, "vocab");
  const cJSON *mj = cJSON_GetObjectItemCaseSensitive(model, "merges");
  const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
  if (!root) st = QAT_FAIL(QAT_EFORMAT, "%s: not JSON", path);
  else if (!is_type(model, "BPE") || !cJSON_IsObject(vj) || !cJSON_IsArray(mj))
    st = QAT_FAIL(QAT_EUNSUPPORTED, "%s: model is not BPE with a vocab and merges (GGUF export "
                  "writes byte-level BPE tokenizer.json files)", path);
  else if (!(*pre = pre_name(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"),
                            cJSON_GetObjectItemCaseSensitive(root, "normalizer"))))
    st = QAT_FAIL(QAT_EUNSUPPORTED, "%s: pre_tokenizer is none of the byte-level kinds GGUF "
                  "export names (smollm, llama-bpe, qwen2, gpt2); a SentencePiece-style file "
                  "needs its tokenizer.model beside it", path);
  if (st == QAT_OK) st = vocab_alloc(v, V);
  const cJSON *it;
  cJSON_ArrayForEach(it, vj) {
    if (st != QAT_OK) break;
    double id = cJSON_IsNumber(it) ? it->valuedouble : -1;
    if (!(id >= 0 && id < (double)V) || id != (double)(int64_t)id)
      st = QAT_FAIL(QAT_EFORMAT, "%s: vocab id of a token is outside 0..%" PRId64, path, V - 1);
    else st = set_tok(v, (int64_t)id, it->string, strlen(it->string), 1);
  }
  cJSON_ArrayForEach(it, added) {
    if (st != QAT_OK) break;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "content");
    if (!cJSON_IsNumber(id) || !cJSON_IsString(c) || id->valuedouble < 0 || id->valuedouble >= (double)V)
      st = QAT_FAIL(QAT_EFORMAT, "%s: an added token has no id inside 0..%" PRId64 " or no content",
                    path, V - 1);
    else st = set_tok(v, (int64_t)id->valuedouble, c->valuestring, strlen(c->valuestring),
                      flag(it, "special") ? 3 : 4);
  }
  for (int64_t i = 0; st == QAT_OK && i < V; i++)
    if (!v->tok[i]) {
      char b[32];
      int k = snprintf(b, sizeof b, "[PAD%" PRId64 "]", i);
      st = set_tok(v, i, b, (size_t)k, 5);
    }
  if (st == QAT_OK) {
    v->nmerges = cJSON_GetArraySize(mj);
    v->merges = calloc((size_t)v->nmerges + 1, sizeof *v->merges);
    if (!v->merges) st = QAT_FAIL(QAT_ENOMEM, "gguf export: out of memory");
  }
  int64_t k = 0;
  cJSON_ArrayForEach(it, mj) {
    if (st != QAT_OK) break;
    const char *a = NULL, *b = NULL;
    if (cJSON_IsString(it)) a = it->valuestring; /* "a b" */
    else if (cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
             cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
      a = cJSON_GetArrayItem(it, 0)->valuestring;
      b = cJSON_GetArrayItem(it, 1)->valuestring;
    }
    if (!a || (!b && !strchr(a, ' '))) {
      st = QAT_FAIL(QAT_EFORMAT, "%s: merges[%" PRId64 "] is neither \"a b\" nor [a, b]", path, k);
      break;
    }
    size_t la = strlen(a), lb = b ? strlen(b) : 0;
    char *m = malloc(la + lb + 2);
    if (!m) { st = QAT_FAIL(QAT_ENOMEM, "gguf export: out of memory"); break; }
    memcpy(m, a, la);
    if (b) { m[la] = ' '; memcpy(m + la + 1, b, lb); }
    m[la + (b ? lb + 1 : 0)] = 0;
    v->merges[k++] = m;
  }
  cJSON_Delete(root);
  return st;
}

/* tokenizer_config.json's add_bos_token / add_eos_token / chat_template into w. */
static qat_status tok_config(qat_gguf_writer *w, const char *dir, int spm) {
  char path[4096], *d = NULL;
  size_t n = 0;
  QAT_TRY(qat_path_join(path, sizeof path, dir, "tokenizer_config.json"));
  cJSON *root = NULL;
  if (qat_path_exists(path)) {
    QAT_TRY(qat_read_file(path, &d, &n));
    root = cJSON_ParseWithLength(d, n);
    free(d);
    if (!cJSON_IsObject(root)) {
      cJSON_Delete(root);
      return QAT_FAIL(QAT_EFORMAT, "%s: not a JSON object", path);
    }
  }
  const cJSON *ab = cJSON_GetObjectItemCaseSensitive(root, "add_bos_token");
  const cJSON *ae = cJSON_GetObjectItemCaseSensitive(root, "add_eos_token");
  const cJSON *tm = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
  qat_status st = QAT_OK;
  if (cJSON_IsBool(ab)) st = qat_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", cJSON_IsTrue(ab));
  else if (spm) st = qat_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", 1);
  if (st == QAT_OK && cJSON_IsBool(ae))
    st = qat_gguf_w_bool(w, "tokenizer.ggml.add_eos_token", cJSON_IsTrue(ae));
  if (st == QAT_OK && cJSON_IsString(tm)) st = qat_gguf_w_str(w, "tokenizer.chat_template", tm->valuestring);
  cJSON_Delete(root);
  return st;
}

qat_status qat_gguf_export_tokenizer(qat_gguf_writer *w, const char *dir,
                                     const qat_llama_config *cfg, const char **kind) {
  *kind = "none";
  char pm[4096], pj[4096], pb[4096];
  QAT_TRY(qat_path_join(pm, sizeof pm, dir, "tokenizer.model"));
  QAT_TRY(qat_path_join(pj, sizeof pj, dir, "tokenizer.json"));
  QAT_TRY(qat_path_join(pb, sizeof pb, dir, "tokenizer.bin"));
  vocab v;
  memset(&v, 0, sizeof v);
  const char *pre = NULL;
  qat_status st;
  int64_t V = cfg->vocab;
  if (qat_path_exists(pm)) st = from_spm(pm, V, &v), *kind = "llama";
  else if (qat_path_exists(pj)) st = from_json(pj, V, &v, &pre), *kind = "gpt2";
  else if (qat_path_exists(pb)) st = from_llama2c(pb, V, &v), *kind = "llama";
  else return QAT_OK;
  int spm = !strcmp(*kind, "llama");
  if (st == QAT_OK) st = qat_gguf_w_str(w, "tokenizer.ggml.model", *kind);
  if (st == QAT_OK && pre) st = qat_gguf_w_str(w, "tokenizer.ggml.pre", pre);
  if (st == QAT_OK)
    st = qat_gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.tok, v.len, (uint64_t)V);
  if (st == QAT_OK && spm) st = qat_gguf_w_arr_f32(w, "tokenizer.ggml.scores", v.score, (uint64_t)V);
  if (st == QAT_OK) st = qat_gguf_w_arr_i32(w, "tokenizer.ggml.token_type", v.type, (uint64_t)V);
  if (st == QAT_OK && !spm)
    st = qat_gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v.merges, NULL,
                            (uint64_t)v.nmerges);
  if (st == QAT_OK && cfg->bos_id >= 0 && cfg->bos_id < V)
    st = qat_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)cfg->bos_id);
  if (st == QAT_OK && cfg->eos_id >= 0 && cfg->eos_id < V)
    st = qat_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)cfg->eos_id);
  for (int64_t i = 0; st == QAT_OK && spm && i < V; i++)
    if (v.type[i] == 2) {
      st = qat_gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)i);
      break;
    }
  if (st == QAT_OK) st = tok_config(w, dir, spm);
  vocab_free(&v);
  return st;
}
