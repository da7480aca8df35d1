/* tokenizer.ggml.* -> tokenizer files of a Hugging Face folder (gguf_convert.h).
 *
 * "gpt2": tokenizer.json, byte-level BPE, written field for field as tests/ref/gguf_ref.py does:
 * the vocabulary from tokens, merges split at their first space, control (type 3) and
 * user-defined (type 4) tokens as added tokens, and the normalizer / pre-tokenizer of the family
 * tokenizer.ggml.pre names (the original Hugging Face files of those families have them).
 *
 * "llama": a SentencePiece tokenizer.model, protobuf written by hand (sentencepiece_model.proto:
 * ModelProto { repeated SentencePiece pieces = 1 { piece = 1, score = 2, type = 3 };
 * TrainerSpec trainer_spec = 2 { model_type = 3 (BPE = 2), vocab_size = 4, byte_fallback = 35,
 * unk_id = 40, bos_id = 41, eos_id = 42, pad_id = 43 }; NormalizerSpec normalizer_spec = 3
 * { name = 1, add_dummy_prefix = 3, remove_extra_whitespaces = 4, escape_whitespaces = 5 } }),
 * which is llama.cpp's SPM tokenizer: merges by piece score, <0xNN> byte fallback, a dummy "▁"
 * prefix. GGUF token types are SentencePiece's piece types (1 normal .. 6 byte).
 *
 * Both get tokenizer_config.json: bos_token / eos_token, add_bos_token / add_eos_token and
 * chat_template. */
#include "core/log.h"
#include "io/fsutil.h"
#include "io/gguf_convert.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Everything read from tokenizer.ggml.*, validated. */
typedef struct tok {
  char *model, *pre, *tmpl;
  const qat_gguf_value *tokens, *types, *scores, *merges;
  int add_bos, add_eos, has_add_bos, has_add_eos, add_space, remove_ws;
  int64_t unk, pad;
  int has_unk, has_pad;
} tok;

static void tok_free(tok *t) {
  free(t->model);
  free(t->pre);
  free(t->tmpl);
}

static cJSON *str_n(const char *s, uint64_t n) {
  char *b = strndup(s, n);
  cJSON *j = b ? cJSON_CreateString(b) : NULL;
  free(b);
  return j;
}

static int type_of(const tok *t, uint64_t i) {
  return t->types ? (int)qat_gguf_arr_i64(t->types, i) : 1;
}

/* ---- reading and checking ---- */

static qat_status read_tok(const qat_gguf_file *f, const qat_gguf_hparams *h, tok *t) {
  int found = 0;
  char pb[80];
  QAT_TRY(qat_gguf_get_str(f, "tokenizer.ggml.model", &t->model, &found));
  if (!found) return QAT_OK;
  QAT_TRY(qat_gguf_get_str(f, "tokenizer.ggml.pre", &t->pre, &found));
  QAT_TRY(qat_gguf_get_str(f, "tokenizer.chat_template", &t->tmpl, &found));
  QAT_TRY(qat_gguf_get_array(f, "tokenizer.ggml.tokens", QAT_GGUF_STRING, &t->tokens));
  if (!t->tokens) return QAT_FAIL(QAT_EFORMAT, "%s: missing tokenizer.ggml.tokens", f->path);
  uint64_t n = t->tokens->count;
  if ((int64_t)n != h->vocab)
    return QAT_FAIL(QAT_EFORMAT, "%s: tokenizer.ggml.tokens has %" PRIu64 " tokens, the model %"
                    PRId64, f->path, n, h->vocab);
  QAT_TRY(qat_gguf_get_array(f, "tokenizer.ggml.token_type", -1, &t->types));
  QAT_TRY(qat_gguf_get_array(f, "tokenizer.ggml.scores", QAT_GGUF_F32, &t->scores));
  QAT_TRY(qat_gguf_get_array(f, "tokenizer.ggml.merges", QAT_GGUF_STRING, &t->merges));
  if (t->types && (t->types->elem == QAT_GGUF_STRING || t->types->elem == QAT_GGUF_ARRAY ||
                   t->types->elem == QAT_GGUF_F32 || t->types->elem == QAT_GGUF_F64))
    return QAT_FAIL(QAT_EFORMAT, "%s: tokenizer.ggml.token_type is an array of %s (integers "
                    "expected)", f->path, qat_gguf_vtype_name(t->types->elem));
  if (t->types && t->types->count != n)
    return QAT_FAIL(QAT_EFORMAT, "%s: tokenizer.ggml.token_type has %" PRIu64 " entries for %" PRIu64
                    " tokens", f->path, t->types->count, n);
  if (t->scores && t->scores->count != n)
    return QAT_FAIL(QAT_EFORMAT, "%s: tokenizer.ggml.scores has %" PRIu64 " entries for %" PRIu64
                    " tokens", f->path, t->scores->count, n);
  for (uint64_t i = 0; i < n; i++) {
    const char *s;
    uint64_t len;
    qat_gguf_arr_str(t->tokens, i, &s, &len);
    if (memchr(s, 0, len))
      return QAT_FAIL(QAT_EFORMAT, "%s: tokenizer.ggml.tokens[%" PRIu64 "] holds a NUL byte",
                      f->path, i);
  }
  QAT_TRY(qat_gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos, &t->has_add_bos));
  QAT_TRY(qat_gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &t->add_eos, &t->has_add_eos));
  t->add_space = 1;
  QAT_TRY(qat_gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &t->add_space, &found));
  QAT_TRY(qat_gguf_get_bool(f, "tokenizer.ggml.remove_extra_whitespaces", &t->remove_ws, &found));
  QAT_TRY(qat_gguf_get_int(f, "tokenizer.ggml.unknown_token_id", &t->unk, &t->has_unk));
  QAT_TRY(qat_gguf_get_int(f, "tokenizer.ggml.padding_token_id", &t->pad, &t->has_pad));
  if ((t->has_unk && (t->unk < 0 || t->unk >= (int64_t)n)) ||
      (t->has_pad && (t->pad < 0 || t->pad >= (int64_t)n)))
    return QAT_FAIL(QAT_EFORMAT, "%s: tokenizer.ggml.%s_token_id is outside the vocabulary",
                    f->path, t->has_unk && (t->unk < 0 || t->unk >= (int64_t)n) ? "unknown" : "padding");
  if (!strcmp(t->model, "gpt2")) {
    const char *p = t->pre ? t->pre : "default";
    if (strcmp(p, "default") && strcmp(p, "gpt2") && strcmp(p, "smollm") &&
        strcmp(p, "llama-bpe") && strcmp(p, "qwen2"))
      return QAT_FAIL(QAT_EUNSUPPORTED, "%s: tokenizer.ggml.pre \"%s\" is not supported "
                      "(default, gpt2, smollm, llama-bpe, qwen2)", f->path,
                      qat_gguf_printable(p, pb, sizeof pb));
    if (!t->merges) return QAT_FAIL(QAT_EFORMAT, "%s: missing tokenizer.ggml.merges", f->path);
    for (uint64_t i = 0; i < t->merges->count; i++) {
      const char *s;
      uint64_t len;
      qat_gguf_arr_str(t->merges, i, &s, &len);
      if (!memchr(s, ' ', len) || memchr(s, 0, len))
        return QAT_FAIL(QAT_EFORMAT, "%s: tokenizer.ggml.merges[%" PRIu64 "] is not \"a b\"",
                        f->path, i);
    }
  } else if (!strcmp(t->model, "llama")) {
    if (!t->scores) return QAT_FAIL(QAT_EFORMAT, "%s: missing tokenizer.ggml.scores", f->path);
    if (!t->has_unk) { /* SentencePiece needs an unknown piece */
      for (uint64_t i = 0; i < n && !t->has_unk; i++)
        if (type_of(t, i) == 2) t->unk = (int64_t)i, t->has_unk = 1;
      if (!t->has_unk)
        return QAT_FAIL(QAT_EFORMAT, "%s: no tokenizer.ggml.unknown_token_id and no token of "
                        "type 2 (unknown)", f->path);
    }
  } else {
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: tokenizer.ggml.model \"%s\" is not supported (gpt2, "
                    "llama)", f->path, qat_gguf_printable(t->model, pb, sizeof pb));
  }
  return QAT_OK;
}

/* ---- gpt2: tokenizer.json ---- */

static cJSON *byte_level(int use_regex, int add_prefix_space, int trim_offsets) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "type", "ByteLevel");
  cJSON_AddBoolToObject(o, "add_prefix_space", add_prefix_space);
  cJSON_AddBoolToObject(o, "trim_offsets", trim_offsets);
  cJSON_AddBoolToObject(o, "use_regex", use_regex);
  return o;
}

static cJSON *split(const char *re) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "type", "Split");
  cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "pattern"), "Regex", re);
  cJSON_AddStringToObject(o, "behavior", "Isolated");
  cJSON_AddBoolToObject(o, "invert", 0);
  return o;
}

static cJSON *sequence(cJSON *a, cJSON *b) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "type", "Sequence");
  cJSON *l = cJSON_AddArrayToObject(o, "pretokenizers");
  cJSON_AddItemToArray(l, a);
  cJSON_AddItemToArray(l, b);
  return o;
}

static cJSON *bpe_json(const tok *t) {
  const char *p = t->pre ? t->pre : "default";
  cJSON *pre, *norm = cJSON_CreateNull();
  int ignore_merges = 0;
  if (!strcmp(p, "smollm")) {
    cJSON *dg = cJSON_CreateObject();
    cJSON_AddStringToObject(dg, "type", "Digits");
    cJSON_AddBoolToObject(dg, "individual_digits", 1);
    pre = sequence(dg, byte_level(1, 0, 1));
  } else if (!strcmp(p, "llama-bpe")) {
    pre = sequence(split(QAT_GGUF_LLAMA3_RE), byte_level(0, 0, 1));
    ignore_merges = 1;
  } else if (!strcmp(p, "qwen2")) {
    pre = sequence(split(QAT_GGUF_QWEN2_RE), byte_level(0, 0, 1));
    cJSON_Delete(norm);
    norm = cJSON_CreateObject();
    cJSON_AddStringToObject(norm, "type", "NFC");
  } else {
    pre = byte_level(1, 0, 1);
  }
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "version", "1.0");
  cJSON_AddNullToObject(o, "truncation");
  cJSON_AddNullToObject(o, "padding");
  cJSON *added = cJSON_AddArrayToObject(o, "added_tokens");
  uint64_t n = t->tokens->count;
  for (uint64_t i = 0; i < n; i++) {
    int ty = type_of(t, i);
    if (ty != 3 && ty != 4) continue;
    const char *s;
    uint64_t len;
    qat_gguf_arr_str(t->tokens, i, &s, &len);
    cJSON *a = cJSON_CreateObject();
    cJSON_AddNumberToObject(a, "id", (double)i);
    cJSON_AddItemToObject(a, "content", str_n(s, len));
    cJSON_AddBoolToObject(a, "single_word", 0);
    cJSON_AddBoolToObject(a, "lstrip", 0);
    cJSON_AddBoolToObject(a, "rstrip", 0);
    cJSON_AddBoolToObject(a, "normalized", ty != 3);
    cJSON_AddBoolToObject(a, "special", ty == 3);
    cJSON_AddItemToArray(added, a);
  }
  cJSON_AddItemToObject(o, "normalizer", norm);
  cJSON_AddItemToObject(o, "pre_tokenizer", pre);
  cJSON_AddItemToObject(o, "post_processor", byte_level(1, 1, 0));
  cJSON_AddItemToObject(o, "decoder", byte_level(1, 1, 1));
  cJSON *m = cJSON_AddObjectToObject(o, "model");
  cJSON_AddStringToObject(m, "type", "BPE");
  cJSON_AddNullToObject(m, "dropout");
  cJSON_AddNullToObject(m, "unk_token");
  cJSON_AddNullToObject(m, "continuing_subword_prefix");
  cJSON_AddNullToObject(m, "end_of_word_suffix");
  cJSON_AddBoolToObject(m, "fuse_unk", 0);
  cJSON_AddBoolToObject(m, "byte_fallback", 0);
  cJSON_AddBoolToObject(m, "ignore_merges", ignore_merges);
  cJSON *vocab = cJSON_AddObjectToObject(m, "vocab");
  for (uint64_t i = 0; i < n; i++) {
    const char *s;
    uint64_t len;
    qat_gguf_arr_str(t->tokens, i, &s, &len);
    char *k = strndup(s, len);
    if (k) cJSON_AddNumberToObject(vocab, k, (double)i);
    free(k);
  }
  cJSON *merges = cJSON_AddArrayToObject(m, "merges");
  for (uint64_t i = 0; i < t->merges->count; i++) {
    const char *s;
    uint64_t len;
    qat_gguf_arr_str(t->merges, i, &s, &len);
    const char *sp = memchr(s, ' ', len); /* checked in read_tok */
    cJSON *pair = cJSON_CreateArray();
    cJSON_AddItemToArray(pair, str_n(s, (uint64_t)(sp - s)));
    cJSON_AddItemToArray(pair, str_n(sp + 1, len - (uint64_t)(sp - s) - 1));
    cJSON_AddItemToArray(merges, pair);
  }
  return o;
}

static qat_status write_json(cJSON *o, const char *dir, const char *name, int pretty) {
  char *js = o ? (pretty ? cJSON_Print(o) : cJSON_PrintUnformatted(o)) : NULL;
  cJSON_Delete(o);
  if (!js) return QAT_FAIL(QAT_ENOMEM, "%s: out of memory building JSON", name);
  char path[4096];
  qat_status st = qat_path_join(path, sizeof path, dir, name);
  if (st == QAT_OK) st = qat_write_file_atomic(path, js, strlen(js));
  cJSON_free(js);
  return st;
}

/* ---- llama: tokenizer.model ---- */

typedef struct buf {
  uint8_t *p;
  size_t n, cap;
  int oom;
} buf;

static void put(buf *b, const void *d, size_t n) {
  if (b->oom) return;
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + n)
      cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, d, n);
  b->n += n;
}

static void varint(buf *b, uint64_t v) {
  uint8_t t[10];
  int k = 0;
  do {
    t[k++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  put(b, t, (size_t)k);
}

/* field tags: (number << 3) | wire type (0 varint, 2 length-delimited, 5 fixed32) */
static void f_varint(buf *b, int field, int64_t v) { /* negative int32: 10-byte two's complement */
  varint(b, (uint64_t)field << 3);
  varint(b, (uint64_t)v);
}
static void f_bytes(buf *b, int field, const void *d, size_t n) {
  varint(b, (uint64_t)field << 3 | 2);
  varint(b, n);
  put(b, d, n);
}
static void f_float(buf *b, int field, float v) {
  varint(b, (uint64_t)field << 3 | 5);
  uint32_t u;
  memcpy(&u, &v, 4);
  uint8_t t[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
  put(b, t, 4);
}

static qat_status spm_model(const qat_gguf_file *f, const qat_gguf_hparams *h, const tok *t,
                            const char *dir) {
  buf b = {0}, sub = {0};
  uint64_t n = t->tokens->count;
  int nbyte = 0;
  for (uint64_t i = 0; i < n; i++) {
    const char *s;
    uint64_t len;
    qat_gguf_arr_str(t->tokens, i, &s, &len);
    int ty = type_of(t, i);
    if (ty < 1 || ty > 6) ty = 1; /* 0 = undefined in llama.cpp */
    nbyte += ty == 6;
    sub.n = 0;
    f_bytes(&sub, 1, s, (size_t)len);
    f_float(&sub, 2, (float)qat_gguf_arr_f64(t->scores, i));
    f_varint(&sub, 3, ty);
    f_bytes(&b, 1, sub.p, sub.n);
  }
  sub.n = 0; /* TrainerSpec */
  f_varint(&sub, 3, 2); /* BPE */
  f_varint(&sub, 4, (int64_t)n);
  f_varint(&sub, 35, nbyte == 256);
  f_varint(&sub, 40, t->unk);
  f_varint(&sub, 41, h->has_bos ? h->bos : -1);
  f_varint(&sub, 42, h->has_eos ? h->eos : -1);
  f_varint(&sub, 43, t->has_pad ? t->pad : -1);
  f_bytes(&b, 2, sub.p, sub.n);
  sub.n = 0; /* NormalizerSpec */
  f_bytes(&sub, 1, "identity", 8);
  f_varint(&sub, 3, t->add_space);
  f_varint(&sub, 4, t->remove_ws);
  f_varint(&sub, 5, 1);
  f_bytes(&b, 3, sub.p, sub.n);
  qat_status st = QAT_OK;
  char path[4096];
  if (b.oom || sub.oom) st = QAT_FAIL(QAT_ENOMEM, "%s: out of memory building tokenizer.model", f->path);
  if (st == QAT_OK) st = qat_path_join(path, sizeof path, dir, "tokenizer.model");
  if (st == QAT_OK) st = qat_write_file_atomic(path, b.p, b.n);
  free(b.p);
  free(sub.p);
  return st;
}

/* ---- tokenizer_config.json ---- */

static cJSON *token_str(const tok *t, int has, int64_t id) {
  if (!has) return cJSON_CreateNull();
  const char *s;
  uint64_t len;
  qat_gguf_arr_str(t->tokens, (uint64_t)id, &s, &len);
  return str_n(s, len);
}

static cJSON *tok_config(const tok *t, const qat_gguf_hparams *h, int spm) {
  cJSON *o = cJSON_CreateObject();
  /* llama.cpp's defaults when the keys are absent: SPM adds BOS; the reference assumes none
   * for byte-level BPE files */
  cJSON_AddBoolToObject(o, "add_bos_token", t->has_add_bos ? t->add_bos : spm);
  cJSON_AddBoolToObject(o, "add_eos_token", t->has_add_eos ? t->add_eos : 0);
  cJSON_AddItemToObject(o, "bos_token", token_str(t, h->has_bos, h->bos));
  cJSON_AddItemToObject(o, "eos_token", token_str(t, h->has_eos, h->eos));
  if (spm) cJSON_AddItemToObject(o, "unk_token", token_str(t, 1, t->unk));
  cJSON_AddStringToObject(o, "tokenizer_class", spm ? "LlamaTokenizer" : "GPT2Tokenizer");
  if (t->tmpl) cJSON_AddStringToObject(o, "chat_template", t->tmpl);
  return o;
}

qat_status qat_gguf_write_tokenizer(const qat_gguf_file *f, const qat_gguf_hparams *h,
                                    const char *dir) {
  tok t;
  memset(&t, 0, sizeof t);
  qat_status st = read_tok(f, h, &t);
  if (st == QAT_OK && !t.model) {
    if (dir) qat_warn("%s: no tokenizer.ggml.model: the folder gets no tokenizer", f->path);
  } else if (st == QAT_OK && dir) {
    int spm = !strcmp(t.model, "llama");
    if (spm)
      st = spm_model(f, h, &t, dir);
    else
      st = write_json(bpe_json(&t), dir, "tokenizer.json", 0);
    if (st == QAT_OK) st = write_json(tok_config(&t, h, spm), dir, "tokenizer_config.json", 1);
  }
  tok_free(&t);
  return st;
}
