/* Hugging Face tokenizer.json: loading, added tokens, BOS / EOS, and the encode driver. BPE
 * models only (byte-level as GPT-2 / Llama-3 / Qwen2 / SmolLM2 ship them, and SentencePiece-style
 * with Metaspace or Prepend + Replace and byte_fallback as Llama-2 / Mistral do), with the
 * `tokenizers` library's semantics (tokenizers/src/tokenizer/{mod,added_vocabulary}.rs):
 *   1. added tokens (added_tokens[]) are cut out of the raw text first, leftmost and at a position
 *      the longest (Aho-Corasick LeftmostLongest), and emitted as their id; "normalized": true
 *      ones are matched in each normalized gap instead (their content normalized too);
 *   2. each gap is normalized, pre-tokenized and BPE-encoded (tokenizer_hf_pretok.c,
 *      tokenizer_hf_model.c).
 * Input that is not valid UTF-8 is decoded first the way a Python caller of tokenizers must
 * (bytes.decode("utf-8", "replace")): each maximal ill-formed subsequence becomes U+FFFD.
 *
 * BOS / EOS (tokenizer.h): which id is the BOS / EOS: the folder's tokenizer_config.json
 * "bos_token" / "eos_token" (null = none), else its config.json "bos_token_id" / "eos_token_id",
 * else the post-processor's TemplateProcessing "single" (the special token before $A / after it),
 * else an added token named <|begin_of_text|> or <s> / <|end_of_text|>, <|endoftext|> or </s>.
 * Whether a document gets it: tokenizer_config.json's "add_bos_token" / "add_eos_token" when
 * present, else what the template adds when the file has one, else BOS yes and EOS no. */
#include "io/fsutil.h"
#include "io/tokenizer_hf_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- added tokens ----------------------------------------------------------------------------- */

static int by_len_desc(const void *a, const void *b) {
  const hf_added_tok *x = a, *y = b;
  return (x->len < y->len) - (x->len > y->len);
}

static qat_status set_push(hf_added_set *s, const char *str, size_t n, int32_t id) {
  char *c = malloc(n + 1);
  if (!c) return QAT_FAIL(QAT_ENOMEM, "added token");
  memcpy(c, str, n);
  c[n] = 0;
  s->v[s->n++] = (hf_added_tok){c, (int32_t)n, id};
  s->first[(unsigned char)str[0]] = 1;
  return QAT_OK;
}

static void set_free(hf_added_set *s) {
  for (int i = 0; i < s->n; i++) free(s->v[i].s);
  free(s->v);
  memset(s, 0, sizeof *s);
}

/* One added_tokens[] entry: its flags are checked, its id is the vocab's when the content is a
 * vocab entry (tokenizers does the same), and it joins the raw or the normalized set. */
static qat_status add_token(qat_hf *h, const cJSON *t, int i) {
  const char *p = h->path;
  char where[48];
  snprintf(where, sizeof where, "added_tokens[%d]", i);
  const cJSON *content = hf_get(t, "content");
  int32_t id;
  if (!cJSON_IsString(content) || !content->valuestring[0] || !hf_json_id(hf_get(t, "id"), &id))
    return QAT_FAIL(QAT_EFORMAT, "%s: %s needs a non-empty \"content\" and an \"id\"", p, where);
  static const char *const unsupported[] = {"single_word", "lstrip", "rstrip"};
  for (int k = 0; k < 3; k++) {
    int on = 0;
    QAT_TRY(hf_bool(p, t, where, unsupported[k], 0, &on));
    if (on) return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s.%s is true: not supported", p, where,
                            unsupported[k]);
  }
  int special = 0, normalized = 0;
  QAT_TRY(hf_bool(p, t, where, "special", 0, &special));
  QAT_TRY(hf_bool(p, t, where, "normalized", !special, &normalized));
  const char *s = content->valuestring;
  size_t n = strlen(s);
  int32_t vid = hf_strmap_get(&h->vocab, s, n);
  if (vid >= 0) id = vid;
  hf_strmap_put(&h->added, s, n, id);
  if (id + 1 > h->vocab_size) h->vocab_size = id + 1;
  if (!normalized || !hf_has_normalizer(h)) return set_push(normalized ? &h->norm : &h->raw, s, n, id);
  char *ns = NULL;
  size_t nn = 0;
  QAT_TRY(hf_normalize(h, s, n, &ns, &nn));
  qat_status st = nn ? set_push(&h->norm, ns, nn, id) : QAT_OK;
  free(ns);
  return st;
}

static qat_status load_added(qat_hf *h, const cJSON *root) {
  const cJSON *list = hf_get(root, "added_tokens");
  if (hf_unset(list)) return QAT_OK;
  if (!cJSON_IsArray(list))
    return QAT_FAIL(QAT_EFORMAT, "%s: added_tokens is not an array", h->path);
  int n = cJSON_GetArraySize(list), i = 0;
  size_t bytes = 0;
  for (const cJSON *t = list->child; t; t = t->next) {
    const cJSON *c = hf_get(t, "content");
    if (cJSON_IsString(c)) bytes += strlen(c->valuestring);
  }
  QAT_TRY(hf_strmap_init(&h->added, n, bytes));
  h->raw.v = calloc((size_t)n + 1, sizeof *h->raw.v);
  h->norm.v = calloc((size_t)n + 1, sizeof *h->norm.v);
  if (!h->raw.v || !h->norm.v) return QAT_FAIL(QAT_ENOMEM, "%s: added tokens", h->path);
  for (const cJSON *t = list->child; t; t = t->next, i++) QAT_TRY(add_token(h, t, i));
  qsort(h->raw.v, (size_t)h->raw.n, sizeof *h->raw.v, by_len_desc);
  qsort(h->norm.v, (size_t)h->norm.n, sizeof *h->norm.v, by_len_desc);
  return QAT_OK;
}

/* ---- BOS / EOS from the file ------------------------------------------------------------------ */

/* The id of a token string: an added token's, else the vocab's; -1 when neither. */
static int32_t token_id(const qat_hf *h, const char *s) {
  int32_t id = hf_strmap_get(&h->added, s, strlen(s));
  return id >= 0 ? id : hf_strmap_get(&h->vocab, s, strlen(s));
}

static qat_status template_token(const qat_hf *h, const cJSON *pp, const cJSON *name,
                                 const char *where, int32_t *id) {
  const cJSON *ids = hf_get(hf_get(hf_get(pp, "special_tokens"), name->valuestring), "ids");
  if (cJSON_IsArray(ids) && cJSON_GetArraySize(ids) == 1 && hf_json_id(ids->child, id))
    return QAT_OK;
  *id = token_id(h, name->valuestring);
  char e[96];
  if (*id < 0 || cJSON_IsArray(ids))
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s: special token \"%s\" is not one known token",
                    h->path, where, hf_esc(name->valuestring, strlen(name->valuestring), e, sizeof e));
  return QAT_OK;
}

/* TemplateProcessing's "single": at most one special token before $A (BOS) and one after (EOS). */
static qat_status template_specials(qat_hf *h, const cJSON *pp, const char *where) {
  const char *t = hf_type(pp);
  if (!strcmp(t, "Sequence")) {
    const cJSON *list = hf_get(pp, "processors");
    int i = 0;
    for (const cJSON *s = cJSON_IsArray(list) ? list->child : NULL; s; s = s->next, i++) {
      char w[96];
      snprintf(w, sizeof w, "%s.processors[%d]", where, i);
      QAT_TRY(template_specials(h, s, w));
    }
    return QAT_OK;
  }
  if (strcmp(t, "TemplateProcessing") != 0) return QAT_OK; /* ByteLevel, RobertaProcessing... */
  const cJSON *single = hf_get(pp, "single");
  char w[128];
  snprintf(w, sizeof w, "%s.single", where);
  if (!cJSON_IsArray(single))
    return QAT_FAIL(QAT_EFORMAT, "%s: %s is not an array", h->path, w);
  int after = 0, nbefore = 0, nafter = 0;
  h->tpl = 1;
  for (const cJSON *it = single->child; it; it = it->next) {
    if (hf_get(it, "Sequence")) {
      after = 1;
      continue;
    }
    const cJSON *name = hf_get(hf_get(it, "SpecialToken"), "id");
    if (!cJSON_IsString(name))
      return QAT_FAIL(QAT_EFORMAT, "%s: %s: an item is neither a Sequence nor a SpecialToken",
                      h->path, w);
    int32_t id;
    QAT_TRY(template_token(h, pp, name, w, &id));
    if ((after ? ++nafter : ++nbefore) > 1)
      return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s: more than one special token %s $A", h->path, w,
                      after ? "after" : "before");
    *(after ? &h->tpl_eos : &h->tpl_bos) = id;
  }
  return QAT_OK;
}

static int32_t first_named(const qat_hf *h, const char *const *names, int n) {
  for (int i = 0; i < n; i++) {
    int32_t id = hf_strmap_get(&h->added, names[i], strlen(names[i]));
    if (id >= 0) return id;
  }
  return -1;
}

/* The folder's choices (found[k] = 0: not said) over the file's: ids[0] BOS, ids[1] EOS;
 * add[0] add_bos_token, add[1] add_eos_token (-1 = absent). */
static void resolve_specials(qat_hf *h, const int found[2], const int ids[2], const int add[2]) {
  static const char *const bos[] = {"<|begin_of_text|>", "<s>"};
  static const char *const eos[] = {"<|end_of_text|>", "<|endoftext|>", "</s>"};
  int b = found[0] ? ids[0] : h->tpl_bos >= 0 ? h->tpl_bos : first_named(h, bos, 2);
  int e = found[1] ? ids[1] : h->tpl_eos >= 0 ? h->tpl_eos : first_named(h, eos, 3);
  int add_b = add[0] >= 0 ? add[0] : h->tpl ? h->tpl_bos >= 0 : 1;
  int add_e = add[1] >= 0 ? add[1] : h->tpl ? h->tpl_eos >= 0 : 0;
  h->bos = add_b ? b : -1;
  h->eos = e;
  h->eos_add = add_e ? e : -1;
}

/* ---- loading ---------------------------------------------------------------------------------- */

static qat_status build(qat_hf *h, const cJSON *root) {
  const cJSON *model = hf_get(root, "model");
  if (!cJSON_IsObject(root) || !cJSON_IsObject(model))
    return QAT_FAIL(QAT_EFORMAT, "%s: no \"model\" object: not a tokenizer.json", h->path);
  QAT_TRY(hf_load_model(h, model));
  QAT_TRY(hf_load_normalizer(h, root));
  QAT_TRY(hf_load_pretokenizer(h, root));
  QAT_TRY(hf_load_decoder(h, root));
  QAT_TRY(load_added(h, root));
  QAT_TRY(hf_load_merges(h, model));
  hf_build_bytes(h);
  QAT_TRY(hf_build_decode(h));
  h->tpl_bos = h->tpl_eos = -1;
  QAT_TRY(template_specials(h, hf_get(root, "post_processor"), "post_processor"));
  resolve_specials(h, (int[2]){0, 0}, (int[2]){-1, -1}, (int[2]){-1, -1});
  return QAT_OK;
}

qat_status qat_hf_load(const char *path, const char *data, size_t size, qat_hf **out) {
  *out = NULL;
  qat_hf *h = calloc(1, sizeof *h);
  if (!h || !(h->path = strdup(path))) {
    free(h);
    return QAT_FAIL(QAT_ENOMEM, "%s: tokenizer", path);
  }
  cJSON *root = cJSON_ParseWithLength(data, size);
  qat_status st;
  if (!root) {
    const char *e = cJSON_GetErrorPtr();
    size_t at = e && e >= data && e <= data + size ? (size_t)(e - data) : size;
    st = QAT_FAIL(QAT_EFORMAT, "%s: not valid JSON (truncated or malformed near byte %zu of %zu)",
                  path, at, size);
  } else {
    st = build(h, root);
  }
  cJSON_Delete(root);
  if (st != QAT_OK) {
    qat_hf_free(h);
    return st;
  }
  *out = h;
  return QAT_OK;
}

void qat_hf_free(qat_hf *h) {
  if (!h) return;
  hf_strmap_free(&h->vocab);
  hf_strmap_free(&h->added);
  hf_pairmap_free(&h->merges);
  set_free(&h->raw);
  set_free(&h->norm);
  hf_free_steps(h);
  free(h->dec);
  free(h->dec_off);
  free(h->path);
  free(h);
}

int qat_hf_vocab(const qat_hf *h) { return h->vocab_size; }
int qat_hf_bos(const qat_hf *h) { return h->bos; }
int qat_hf_eos(const qat_hf *h) { return h->eos; }
int qat_hf_eos_add(const qat_hf *h) { return h->eos_add; }
int qat_hf_strip(const qat_hf *h, int first) { return first ? h->strip_first : h->strip_each; }

const char *qat_hf_piece(const qat_hf *h, int id, size_t *len) {
  if (id < 0 || id >= h->vocab_size) return NULL;
  *len = h->dec_off[id + 1] - h->dec_off[id];
  return h->dec + h->dec_off[id];
}

/* ---- a model folder's BOS / EOS --------------------------------------------------------------- */

/* tokenizer_config.json's "bos_token" / "eos_token": a string, {"content": ...} or null. */
static qat_status config_token(const qat_hf *h, const char *file, const cJSON *v, const char *key,
                               int *id) {
  if (cJSON_IsNull(v)) {
    *id = -1;
    return QAT_OK;
  }
  if (cJSON_IsObject(v)) v = hf_get(v, "content");
  if (!cJSON_IsString(v))
    return QAT_FAIL(QAT_EFORMAT, "%s: %s is neither a string, {\"content\": ...} nor null", file,
                    key);
  *id = token_id(h, v->valuestring);
  char e[96];
  if (*id < 0)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s \"%s\" is not a token of %s", file, key,
                    hf_esc(v->valuestring, strlen(v->valuestring), e, sizeof e), h->path);
  return QAT_OK;
}

/* config.json's "bos_token_id" / "eos_token_id": an id, a list of ids (the first) or null. */
static qat_status config_id(const qat_hf *h, const char *file, const cJSON *v, const char *key,
                            int *id) {
  if (cJSON_IsArray(v)) v = v->child;
  int32_t x = -1;
  if (!v || cJSON_IsNull(v)) {
    *id = -1;
    return QAT_OK;
  }
  if (!hf_json_id(v, &x) || x >= h->vocab_size)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s is not a token id below the tokenizer's %d", file, key,
                    h->vocab_size);
  *id = x;
  return QAT_OK;
}

/* dir/name as a JSON object, or NULL (*cfg) when the file does not exist. */
static qat_status read_config(const char *dir, const char *name, char *p, size_t cap,
                              cJSON **cfg) {
  *cfg = NULL;
  QAT_TRY(qat_path_join(p, cap, dir, name));
  if (!qat_path_exists(p)) return QAT_OK;
  char *data;
  size_t size;
  QAT_TRY(qat_read_file(p, &data, &size));
  *cfg = cJSON_ParseWithLength(data, size);
  free(data);
  if (!cJSON_IsObject(*cfg)) {
    cJSON_Delete(*cfg);
    *cfg = NULL;
    return QAT_FAIL(QAT_EFORMAT, "%s: not a JSON object", p);
  }
  return QAT_OK;
}

qat_status qat_hf_load_folder(qat_hf *h, const char *dir) {
  static const char *const tok_keys[2] = {"bos_token", "eos_token"};
  static const char *const add_keys[2] = {"add_bos_token", "add_eos_token"};
  static const char *const cfg_keys[2] = {"bos_token_id", "eos_token_id"};
  int found[2] = {0, 0}, ids[2] = {-1, -1}, add[2] = {-1, -1};
  char p[4096];
  cJSON *cfg;
  qat_status st = read_config(dir, "tokenizer_config.json", p, sizeof p, &cfg);
  for (int k = 0; k < 2 && st == QAT_OK && cfg; k++) {
    const cJSON *v = hf_get(cfg, tok_keys[k]), *a = hf_get(cfg, add_keys[k]);
    if (v) st = config_token(h, p, v, tok_keys[k], &ids[k]), found[k] = 1;
    if (st == QAT_OK && a && !cJSON_IsNull(a)) {
      if (!cJSON_IsBool(a))
        st = QAT_FAIL(QAT_EFORMAT, "%s: %s is not a boolean", p, add_keys[k]);
      else
        add[k] = cJSON_IsTrue(a);
    }
  }
  cJSON_Delete(cfg);
  cfg = NULL;
  if (st == QAT_OK) st = read_config(dir, "config.json", p, sizeof p, &cfg);
  for (int k = 0; k < 2 && st == QAT_OK && cfg; k++) {
    const cJSON *v = hf_get(cfg, cfg_keys[k]);
    if (v && !found[k]) st = config_id(h, p, v, cfg_keys[k], &ids[k]), found[k] = 1;
  }
  cJSON_Delete(cfg);
  if (st == QAT_OK) resolve_specials(h, found, ids, add);
  return st;
}

/* ---- encoding --------------------------------------------------------------------------------- */

/* The longest token of set at s[0..n), or NULL. */
static const hf_added_tok *match_added(const hf_added_set *set, const char *s, size_t n) {
  if (!set->n || !set->first[(unsigned char)s[0]]) return NULL;
  for (int i = 0; i < set->n; i++) {
    const hf_added_tok *t = &set->v[i];
    if ((size_t)t->len <= n && memcmp(s, t->s, (size_t)t->len) == 0) return t;
  }
  return NULL;
}

static qat_status normalize_gap(hf_encoder *e, const char *s, size_t n, int first);

/* Cuts set's tokens out of s[0..n); the gaps go on to normalization (raw stage) or to
 * pre-tokenization (after normalization). first: s starts the text (Metaspace's "first"). */
static qat_status split_added(hf_encoder *e, const hf_added_set *set, const char *s, size_t n,
                              int normalized, int first) {
  size_t gap = 0;
  for (size_t i = 0; i < n && set->n;) {
    const hf_added_tok *t = match_added(set, s + i, n - i);
    if (!t) {
      i++;
      continue;
    }
    int f = first && gap == 0;
    QAT_TRY(normalized ? hf_pretokenize(e, 0, s + gap, i - gap, f)
                       : normalize_gap(e, s + gap, i - gap, f));
    QAT_TRY(qat_ivec_push(e->out, t->id));
    i += (size_t)t->len;
    gap = i;
  }
  int f = first && gap == 0;
  return normalized ? hf_pretokenize(e, 0, s + gap, n - gap, f)
                    : normalize_gap(e, s + gap, n - gap, f);
}

static qat_status normalize_gap(hf_encoder *e, const char *s, size_t n, int first) {
  if (n == 0) return QAT_OK;
  if (!hf_has_normalizer(e->h)) return split_added(e, &e->h->norm, s, n, 1, first);
  char *t = NULL;
  size_t m = 0;
  QAT_TRY(hf_normalize(e->h, s, n, &t, &m));
  qat_status st = split_added(e, &e->h->norm, t, m, 1, first);
  free(t);
  return st;
}

qat_status qat_hf_encode(const qat_hf *h, const char *text, size_t len, qat_ivec *out) {
  hf_encoder e = {.h = h, .out = out};
  char *clean = NULL;
  qat_status st = QAT_OK;
  if (!(e.md = pcre2_match_data_create(1, NULL)))
    st = QAT_FAIL(QAT_ENOMEM, "%s: regex match data", h->path);
  if (st == QAT_OK && !hf_utf8_valid(text, len)) {
    st = hf_utf8_lossy(text, len, &clean, &len);
    text = clean;
  }
  if (st == QAT_OK) st = split_added(&e, &h->raw, text, len, 0, 1);
  pcre2_match_data_free(e.md);
  pcre2_match_context_free(e.mctx);
  pcre2_jit_stack_free(e.jit);
  for (size_t i = 0; i < sizeof e.buf / sizeof e.buf[0]; i++) free(e.buf[i]);
  free(e.sym);
  free(e.heap);
  free(clean);
  return st;
}
