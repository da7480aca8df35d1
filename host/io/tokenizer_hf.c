/* Hugging Face tokenizer.json, the byte-level BPE subset that Llama-3, Qwen2 and GPT-2 ship, with
 * the `tokenizers` library's semantics (tokenizers/src: added_vocabulary.rs, normalizers,
 * pre_tokenizers/{split,byte_level}.rs, models/bpe/{model,word}.rs):
 *   1. added tokens (added_tokens[]) are cut out of the raw text first, leftmost and at a position
 *      the longest (Aho-Corasick LeftmostLongest), and emitted as their id; "normalized": true
 *      ones are matched in each normalized gap instead, as tokenizers does;
 *   2. normalizer: none, or NFC (utf8proc);
 *   3. pre_tokenizer: Split(pattern, Isolated) steps, then ByteLevel (whose use_regex adds GPT-2's
 *      pattern as one more Isolated split). Isolated: every match and every gap between matches
 *      is a piece. Patterns run in PCRE2 (UTF + UCP, JIT); tokenizers runs them in Oniguruma,
 *      whose \s is Unicode White_Space, so \s / \S are rewritten to \p{White_Space} /
 *      \P{White_Space} (PCRE2's own \s also matches U+180E);
 *   4. ByteLevel: each byte of a piece becomes one character of GPT-2's bytes_to_unicode alphabet;
 *   5. BPE per piece: with ignore_merges, a piece that is a vocab entry is emitted whole; else one
 *      symbol per byte, then repeatedly merge the adjacent pair of lowest merge rank (leftmost on
 *      ties) exactly as tokenizers' Word::merge_all does: a min-heap of (rank, position) over a
 *      linked list, stale entries skipped when the pair no longer produces the same token.
 * Input that is not valid UTF-8 is decoded first the way a Python caller of tokenizers must
 * (bytes.decode("utf-8", "replace")): each maximal ill-formed subsequence becomes U+FFFD.
 * Anything outside the subset is refused at load with the file and the key. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "io/fsutil.h"
#include "io/tokenizer_internal.h"

#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

enum {
  MAX_STAGES = 8,     /* Split steps + ByteLevel's own pattern */
  MAX_ID = 1 << 24,   /* a token id beyond this is a corrupt file, not a vocabulary */
  NBYTE_CP = 256 + 68 /* bytes_to_unicode's code points are all below this */
};

static const char k_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---- a string -> id hash map ----------------------------------------------------------------- */

typedef struct {
  int64_t n, cap;
  char *pool; /* keys back to back */
  size_t pool_n, pool_cap;
  size_t *off;
  int32_t *len, *id;
  int64_t *slot; /* open addressing over entry indices, -1 = empty */
  uint64_t mask;
} strmap;

static uint64_t fnv1a(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

/* Room for n keys of `bytes` bytes in all. */
static qat_status strmap_init(strmap *m, int64_t n, size_t bytes) {
  uint64_t cap = 16;
  while (cap < 2 * (uint64_t)n + 16) cap *= 2;
  m->cap = n > 0 ? n : 1;
  m->pool_cap = bytes + 1;
  m->pool = malloc(m->pool_cap);
  m->off = malloc((size_t)m->cap * sizeof *m->off);
  m->len = malloc((size_t)m->cap * sizeof *m->len);
  m->id = malloc((size_t)m->cap * sizeof *m->id);
  m->slot = malloc(cap * sizeof *m->slot);
  if (!m->pool || !m->off || !m->len || !m->id || !m->slot)
    return QAT_FAIL(QAT_ENOMEM, "token table of %lld entries", (long long)n);
  memset(m->slot, 0xff, cap * sizeof *m->slot);
  m->mask = cap - 1;
  return QAT_OK;
}

static void strmap_free(strmap *m) {
  free(m->pool);
  free(m->off);
  free(m->len);
  free(m->id);
  free(m->slot);
  memset(m, 0, sizeof *m);
}

/* The slot holding key s[0..n) or the empty slot where it would go. */
static uint64_t strmap_slot(const strmap *m, const char *s, size_t n) {
  for (uint64_t h = fnv1a(s, n) & m->mask;; h = (h + 1) & m->mask) {
    int64_t e = m->slot[h];
    if (e < 0 || ((size_t)m->len[e] == n && memcmp(m->pool + m->off[e], s, n) == 0)) return h;
  }
}

static int32_t strmap_get(const strmap *m, const char *s, size_t n) {
  if (!m->slot) return -1;
  int64_t e = m->slot[strmap_slot(m, s, n)];
  return e < 0 ? -1 : m->id[e];
}

/* Inserts (a later duplicate key overrides the id, like a JSON object read into a hash map).
 * The caller sized the map with strmap_init. */
static void strmap_put(strmap *m, const char *s, size_t n, int32_t id) {
  uint64_t h = strmap_slot(m, s, n);
  if (m->slot[h] >= 0) {
    m->id[m->slot[h]] = id;
    return;
  }
  int64_t e = m->n++;
  memcpy(m->pool + m->pool_n, s, n);
  m->off[e] = m->pool_n;
  m->len[e] = (int32_t)n;
  m->id[e] = id;
  m->pool_n += n;
  m->slot[h] = e;
}

/* ---- a (id, id) -> (rank, merged id) hash map ------------------------------------------------ */

typedef struct {
  uint64_t *key; /* ((a << 32) | b) + 1; 0 = empty */
  int32_t *rank, *to;
  uint64_t mask;
} pairmap;

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

static qat_status pairmap_init(pairmap *m, int64_t n) {
  uint64_t cap = 16;
  while (cap < 2 * (uint64_t)n + 16) cap *= 2;
  m->key = calloc(cap, sizeof *m->key);
  m->rank = malloc(cap * sizeof *m->rank);
  m->to = malloc(cap * sizeof *m->to);
  if (!m->key || !m->rank || !m->to)
    return QAT_FAIL(QAT_ENOMEM, "merge table of %lld entries", (long long)n);
  m->mask = cap - 1;
  return QAT_OK;
}

static void pairmap_free(pairmap *m) {
  free(m->key);
  free(m->rank);
  free(m->to);
  memset(m, 0, sizeof *m);
}

static uint64_t pairmap_slot(const pairmap *m, uint64_t k) {
  for (uint64_t h = mix64(k) & m->mask;; h = (h + 1) & m->mask)
    if (m->key[h] == 0 || m->key[h] == k) return h;
}

static uint64_t pair_key(int32_t a, int32_t b) {
  return ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
}

/* A repeated pair takes the later rank, as tokenizers' HashMap collect does. */
static void pairmap_put(pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t to) {
  uint64_t k = pair_key(a, b), h = pairmap_slot(m, k);
  m->key[h] = k;
  m->rank[h] = rank;
  m->to[h] = to;
}

static int pairmap_get(const pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *to) {
  if (!m->key) return 0;
  uint64_t k = pair_key(a, b), h = pairmap_slot(m, k);
  if (m->key[h] != k) return 0;
  *rank = m->rank[h];
  *to = m->to[h];
  return 1;
}

/* ---- the tokenizer --------------------------------------------------------------------------- */

typedef struct {
  char *s; /* owned */
  int32_t len, id;
} added_tok;

/* Added tokens matched at one stage, longest first; first[b]: some token starts with byte b. */
typedef struct {
  added_tok *v;
  int n;
  uint8_t first[256];
} added_set;

struct qat_hf {
  char *path;
  strmap vocab;    /* model.vocab */
  strmap added;    /* added_tokens[].content -> id */
  pairmap merges;  /* model.merges */
  added_set raw;   /* "normalized": false, matched in the raw text */
  added_set norm;  /* "normalized": true, matched in normalized text (contents normalized) */
  int nfc, ignore_merges, fuse_unk;
  int32_t unk;
  int nstages;
  pcre2_code *re[MAX_STAGES];
  int32_t byte_id[256];  /* vocab id of each byte's byte-level character, -1 = none */
  char byte_u8[256][2];  /* that character in UTF-8 (1 or 2 bytes) */
  uint8_t byte_u8n[256];
  int16_t cp_byte[NBYTE_CP]; /* the inverse: code point -> byte, -1 = not in the alphabet */
  int vocab_size, bos, eos;
  char *dec;       /* decoded bytes of every id back to back */
  size_t *dec_off; /* [vocab_size + 1] */
};

/* Renders s[0..n) for a one-line message: control bytes as \xNN, at most ~60 bytes. */
static const char *esc(const char *s, size_t n, char *buf, size_t cap) {
  size_t w = 0;
  for (size_t i = 0; i < n && w + 8 < cap; i++) {
    unsigned char c = (unsigned char)s[i];
    if (w > 60) {
      memcpy(buf + w, "...", 3);
      w += 3;
      break;
    }
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
      w += (size_t)snprintf(buf + w, cap - w, "\\x%02X", c);
    else
      buf[w++] = (char)c;
  }
  buf[w] = 0;
  return buf;
}

static const cJSON *obj_get(const cJSON *o, const char *key) {
  return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* The key is absent or JSON null. */
static int is_unset(const cJSON *v) { return !v || cJSON_IsNull(v); }

/* A boolean key: absent -> dflt; anything but a boolean is an error naming the key. */
static qat_status get_bool(const char *path, const cJSON *o, const char *where, const char *key,
                           int dflt, int *out) {
  const cJSON *v = obj_get(o, key);
  if (!v) {
    *out = dflt;
    return QAT_OK;
  }
  if (!cJSON_IsBool(v))
    return QAT_FAIL(QAT_EFORMAT, "%s: %s.%s is not a boolean", path, where, key);
  *out = cJSON_IsTrue(v);
  return QAT_OK;
}

/* A token id: an integral JSON number in [0, MAX_ID). */
static int json_id(const cJSON *v, int32_t *id) {
  if (!cJSON_IsNumber(v)) return 0;
  double d = v->valuedouble;
  if (!(d >= 0 && d < MAX_ID) || d != (double)(int32_t)d) return 0;
  *id = (int32_t)d;
  return 1;
}

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

/* Length of the UTF-8 character at s (Unicode Table 3-7); *ok = 0 when it is ill-formed, and the
 * length is then that of the maximal subpart (what one U+FFFD replaces, as Python does). */
static size_t utf8_step(const unsigned char *s, size_t n, int *ok) {
  unsigned c = s[0], lo = 0x80, hi = 0xBF;
  size_t need;
  *ok = 1;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF)
    need = 1;
  else if (c == 0xE0)
    need = 2, lo = 0xA0;
  else if (c == 0xED)
    need = 2, hi = 0x9F;
  else if (c >= 0xE1 && c <= 0xEF)
    need = 2;
  else if (c == 0xF0)
    need = 3, lo = 0x90;
  else if (c == 0xF4)
    need = 3, hi = 0x8F;
  else if (c >= 0xF1 && c <= 0xF3)
    need = 3;
  else {
    *ok = 0;
    return 1;
  }
  for (size_t k = 1; k <= need; k++) {
    if (k >= n || s[k] < lo || s[k] > hi) {
      *ok = 0;
      return k;
    }
    lo = 0x80, hi = 0xBF;
  }
  return need + 1;
}

static int utf8_valid(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    if (u[i] < 0x80) {
      i++;
      continue;
    }
    int ok;
    i += utf8_step(u + i, n - i, &ok);
    if (!ok) return 0;
  }
  return 1;
}

/* A copy of s with every ill-formed subsequence replaced by U+FFFD (EF BF BD). */
static qat_status utf8_lossy(const char *s, size_t n, char **out, size_t *out_n) {
  char *d = malloc(3 * n + 1);
  if (!d) return QAT_FAIL(QAT_ENOMEM, "text of %zu bytes", n);
  const unsigned char *u = (const unsigned char *)s;
  size_t w = 0;
  for (size_t i = 0; i < n;) {
    int ok;
    size_t k = utf8_step(u + i, n - i, &ok);
    if (ok) {
      memcpy(d + w, s + i, k);
      w += k;
    } else {
      memcpy(d + w, "\xEF\xBF\xBD", 3);
      w += 3;
    }
    i += k;
  }
  *out = d;
  *out_n = w;
  return QAT_OK;
}

static int is_ascii(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] >= 0x80) return 0;
  return 1;
}

/* NFC of s[0..n) (malloc'd, *out_n bytes). */
static qat_status nfc(const char *path, const char *s, size_t n, char **out, size_t *out_n) {
  utf8proc_uint8_t *d = NULL;
  utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &d,
                                    UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  if (r < 0) return QAT_FAIL(QAT_EINVAL, "%s: NFC normalization: %s", path, utf8proc_errmsg(r));
  *out = (char *)d;
  *out_n = (size_t)r;
  return QAT_OK;
}

/* ---- loading: model -------------------------------------------------------------------------- */

static qat_status check_model_options(qat_hf *h, const cJSON *model) {
  const char *p = h->path;
  const cJSON *type = obj_get(model, "type");
  if (!cJSON_IsString(type))
    return QAT_FAIL(QAT_EFORMAT, "%s: model.type is missing (expected \"BPE\")", p);
  if (strcmp(type->valuestring, "BPE") != 0)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: model.type \"%s\" is not supported (only BPE)", p,
                    type->valuestring);
  if (!is_unset(obj_get(model, "dropout")))
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: model.dropout is set: BPE dropout is not supported", p);
  static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
  for (int i = 0; i < 2; i++) {
    const cJSON *v = obj_get(model, affixes[i]);
    if (!is_unset(v) && !(cJSON_IsString(v) && v->valuestring[0] == 0))
      return QAT_FAIL(QAT_EUNSUPPORTED, "%s: model.%s is set: not supported", p, affixes[i]);
  }
  int byte_fallback = 0;
  QAT_TRY(get_bool(p, model, "model", "byte_fallback", 0, &byte_fallback));
  if (byte_fallback)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: model.byte_fallback is true: not supported", p);
  QAT_TRY(get_bool(p, model, "model", "ignore_merges", 0, &h->ignore_merges));
  QAT_TRY(get_bool(p, model, "model", "fuse_unk", 0, &h->fuse_unk));
  return QAT_OK;
}

static qat_status load_vocab(qat_hf *h, const cJSON *model) {
  const cJSON *vocab = obj_get(model, "vocab");
  if (!cJSON_IsObject(vocab))
    return QAT_FAIL(QAT_EFORMAT, "%s: model.vocab is missing or not an object", h->path);
  int64_t n = 0;
  size_t bytes = 0;
  for (const cJSON *e = vocab->child; e; e = e->next) n++, bytes += strlen(e->string);
  QAT_TRY(strmap_init(&h->vocab, n, bytes));
  for (const cJSON *e = vocab->child; e; e = e->next) {
    int32_t id;
    char b[96];
    if (!json_id(e, &id))
      return QAT_FAIL(QAT_EFORMAT, "%s: model.vocab[\"%s\"] is not a token id in [0, %d)",
                      h->path, esc(e->string, strlen(e->string), b, sizeof b), MAX_ID);
    strmap_put(&h->vocab, e->string, strlen(e->string), id);
    if (id + 1 > h->vocab_size) h->vocab_size = id + 1;
  }
  h->unk = -1;
  const cJSON *unk = obj_get(model, "unk_token");
  if (cJSON_IsString(unk)) {
    h->unk = strmap_get(&h->vocab, unk->valuestring, strlen(unk->valuestring));
    if (h->unk < 0)
      return QAT_FAIL(QAT_EFORMAT, "%s: model.unk_token \"%s\" is not in model.vocab", h->path,
                      unk->valuestring);
  } else if (!is_unset(unk)) {
    return QAT_FAIL(QAT_EFORMAT, "%s: model.unk_token is neither a string nor null", h->path);
  }
  return QAT_OK;
}

/* merges[i] as two strings: "a b" (old format; split at the first space) or ["a", "b"]. */
static qat_status merge_parts(const qat_hf *h, const cJSON *m, int64_t i, const char **a,
                              size_t *na, const char **b, size_t *nb) {
  if (cJSON_IsString(m)) {
    const char *s = m->valuestring, *sp = strchr(s, ' ');
    char e[96];
    if (!sp)
      return QAT_FAIL(QAT_EFORMAT, "%s: model.merges[%lld] \"%s\" is not \"left right\"", h->path,
                      (long long)i, esc(s, strlen(s), e, sizeof e));
    *a = s, *na = (size_t)(sp - s), *b = sp + 1, *nb = strlen(sp + 1);
    return QAT_OK;
  }
  if (cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) && cJSON_IsString(m->child->next)) {
    *a = m->child->valuestring, *na = strlen(*a);
    *b = m->child->next->valuestring, *nb = strlen(*b);
    return QAT_OK;
  }
  return QAT_FAIL(QAT_EFORMAT, "%s: model.merges[%lld] is neither \"left right\" nor [left, right]",
                  h->path, (long long)i);
}

static qat_status vocab_id(const qat_hf *h, int64_t i, const char *s, size_t n, int32_t *id) {
  *id = strmap_get(&h->vocab, s, n);
  char e[96];
  if (*id < 0)
    return QAT_FAIL(QAT_EFORMAT, "%s: model.merges[%lld]: \"%s\" is not in model.vocab", h->path,
                    (long long)i, esc(s, n, e, sizeof e));
  return QAT_OK;
}

static qat_status load_merges(qat_hf *h, const cJSON *model) {
  const cJSON *merges = obj_get(model, "merges");
  if (!cJSON_IsArray(merges))
    return QAT_FAIL(QAT_EFORMAT, "%s: model.merges is missing or not an array", h->path);
  int64_t n = cJSON_GetArraySize(merges), i = 0;
  QAT_TRY(pairmap_init(&h->merges, n));
  char *cat = NULL;
  size_t cat_cap = 0;
  qat_status st = QAT_OK;
  for (const cJSON *m = merges->child; m && st == QAT_OK; m = m->next, i++) {
    const char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    int32_t ia = -1, ib = -1, ic = -1;
    QAT_CHECK(st, merge_parts(h, m, i, &a, &na, &b, &nb), done);
    QAT_CHECK(st, vocab_id(h, i, a, na, &ia), done);
    QAT_CHECK(st, vocab_id(h, i, b, nb, &ib), done);
    if (na + nb > cat_cap) {
      char *c = realloc(cat, na + nb + 64);
      if (!c) {
        st = QAT_FAIL(QAT_ENOMEM, "merge strings");
        goto done;
      }
      cat = c, cat_cap = na + nb + 64;
    }
    memcpy(cat, a, na);
    memcpy(cat + na, b, nb);
    QAT_CHECK(st, vocab_id(h, i, cat, na + nb, &ic), done);
    pairmap_put(&h->merges, ia, ib, (int32_t)i, ic);
  }
done:
  free(cat);
  return st;
}

/* ---- loading: added tokens and the normalizer ------------------------------------------------ */

static qat_status load_normalizer(qat_hf *h, const cJSON *root) {
  const cJSON *nz = obj_get(root, "normalizer");
  if (is_unset(nz)) return QAT_OK;
  const cJSON *type = obj_get(nz, "type");
  if (cJSON_IsString(type) && !strcmp(type->valuestring, "NFC")) {
    h->nfc = 1;
    return QAT_OK;
  }
  return QAT_FAIL(QAT_EUNSUPPORTED,
                  "%s: normalizer.type \"%s\" is not supported (only null or NFC)", h->path,
                  cJSON_IsString(type) ? type->valuestring : "?");
}

static int by_len_desc(const void *a, const void *b) {
  const added_tok *x = a, *y = b;
  return (x->len < y->len) - (x->len > y->len);
}

static qat_status set_push(added_set *s, const char *str, size_t n, int32_t id) {
  char *c = malloc(n + 1);
  if (!c) return QAT_FAIL(QAT_ENOMEM, "added token");
  memcpy(c, str, n);
  c[n] = 0;
  s->v[s->n++] = (added_tok){c, (int32_t)n, id};
  s->first[(unsigned char)str[0]] = 1;
  return QAT_OK;
}

static void set_free(added_set *s) {
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
  const cJSON *content = obj_get(t, "content");
  int32_t id;
  if (!cJSON_IsString(content) || !content->valuestring[0] || !json_id(obj_get(t, "id"), &id))
    return QAT_FAIL(QAT_EFORMAT, "%s: %s needs a non-empty \"content\" and an \"id\"", p, where);
  static const char *const unsupported[] = {"single_word", "lstrip", "rstrip"};
  for (int k = 0; k < 3; k++) {
    int on = 0;
    QAT_TRY(get_bool(p, t, where, unsupported[k], 0, &on));
    if (on) return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s.%s is true: not supported", p, where,
                            unsupported[k]);
  }
  int special = 0, normalized = 0;
  QAT_TRY(get_bool(p, t, where, "special", 0, &special));
  QAT_TRY(get_bool(p, t, where, "normalized", !special, &normalized));
  const char *s = content->valuestring;
  size_t n = strlen(s);
  int32_t vid = strmap_get(&h->vocab, s, n);
  if (vid >= 0) id = vid;
  strmap_put(&h->added, s, n, id);
  if (id + 1 > h->vocab_size) h->vocab_size = id + 1;
  if (!normalized || !h->nfc || is_ascii(s, n))
    return set_push(normalized ? &h->norm : &h->raw, s, n, id);
  char *ns = NULL;
  size_t nn = 0;
  QAT_TRY(nfc(p, s, n, &ns, &nn));
  qat_status st = nn ? set_push(&h->norm, ns, nn, id) : QAT_OK;
  free(ns);
  return st;
}

static qat_status load_added(qat_hf *h, const cJSON *root) {
  const cJSON *list = obj_get(root, "added_tokens");
  if (is_unset(list)) return QAT_OK;
  if (!cJSON_IsArray(list))
    return QAT_FAIL(QAT_EFORMAT, "%s: added_tokens is not an array", h->path);
  int n = cJSON_GetArraySize(list), i = 0;
  size_t bytes = 0;
  for (const cJSON *t = list->child; t; t = t->next) {
    const cJSON *c = obj_get(t, "content");
    if (cJSON_IsString(c)) bytes += strlen(c->valuestring);
  }
  QAT_TRY(strmap_init(&h->added, n, bytes));
  h->raw.v = calloc((size_t)n + 1, sizeof *h->raw.v);
  h->norm.v = calloc((size_t)n + 1, sizeof *h->norm.v);
  if (!h->raw.v || !h->norm.v) return QAT_FAIL(QAT_ENOMEM, "%s: added tokens", h->path);
  for (const cJSON *t = list->child; t; t = t->next, i++) QAT_TRY(add_token(h, t, i));
  qsort(h->raw.v, (size_t)h->raw.n, sizeof *h->raw.v, by_len_desc);
  qsort(h->norm.v, (size_t)h->norm.n, sizeof *h->norm.v, by_len_desc);
  return QAT_OK;
}

/* ---- loading: the pre-tokenizer -------------------------------------------------------------- */

/* pattern with \s / \S as Oniguruma means them (Unicode White_Space); malloc'd. Escapes are
 * copied two bytes at a time so "\\s" (an escaped backslash, then s) stays as it is. */
static char *onig_spaces(const char *pat) {
  size_t n = strlen(pat);
  char *d = malloc(n * 8 + 1), *w = d;
  if (!d) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (pat[i] != '\\' || i + 1 == n) {
      *w++ = pat[i];
    } else if (pat[i + 1] == 's' || pat[i + 1] == 'S') {
      w += sprintf(w, "\\%c{White_Space}", pat[i + 1] == 's' ? 'p' : 'P');
      i++;
    } else {
      *w++ = pat[i++];
      *w++ = pat[i];
    }
  }
  *w = 0;
  return d;
}

static qat_status add_stage(qat_hf *h, const char *where, const char *pat, int literal) {
  if (h->nstages == MAX_STAGES)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s: more than %d Split steps", h->path, where,
                    MAX_STAGES - 1);
  uint32_t opt = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP); /* LITERAL refuses UCP */
  int err;
  PCRE2_SIZE at;
  pcre2_code *re = NULL;
  char *rw = literal ? NULL : onig_spaces(pat);
  /* PCRE2 before 10.40 has no \p{White_Space}: fall back to its own \s. */
  if (rw) re = pcre2_compile((PCRE2_SPTR)rw, PCRE2_ZERO_TERMINATED, opt, &err, &at, NULL);
  free(rw);
  if (!re) re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opt, &err, &at, NULL);
  if (!re) {
    PCRE2_UCHAR msg[160];
    pcre2_get_error_message(err, msg, sizeof msg);
    return QAT_FAIL(QAT_EFORMAT, "%s: %s: pattern does not compile at offset %zu: %s", h->path,
                    where, (size_t)at, (const char *)msg);
  }
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* without JIT the interpreter runs it */
  h->re[h->nstages++] = re;
  return QAT_OK;
}

static qat_status load_split(qat_hf *h, const cJSON *sp, const char *where) {
  const char *p = h->path;
  const cJSON *pat = obj_get(sp, "pattern"), *beh = obj_get(sp, "behavior");
  const cJSON *re = obj_get(pat, "Regex"), *lit = obj_get(pat, "String");
  if (!cJSON_IsString(re) && !cJSON_IsString(lit))
    return QAT_FAIL(QAT_EFORMAT, "%s: %s.pattern needs \"Regex\" or \"String\"", p, where);
  if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") != 0)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s.behavior \"%s\" is not supported (only Isolated)", p,
                    where, cJSON_IsString(beh) ? beh->valuestring : "?");
  int invert = 0;
  QAT_TRY(get_bool(p, sp, where, "invert", 0, &invert));
  if (invert) return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s.invert is true: not supported", p, where);
  return cJSON_IsString(re) ? add_stage(h, where, re->valuestring, 0)
                            : add_stage(h, where, lit->valuestring, 1);
}

static qat_status load_byte_level(qat_hf *h, const cJSON *bl, const char *where) {
  int prefix = 1, use_regex = 1;
  /* tokenizers' defaults when the keys are absent: add_prefix_space and use_regex true */
  QAT_TRY(get_bool(h->path, bl, where, "add_prefix_space", 1, &prefix));
  QAT_TRY(get_bool(h->path, bl, where, "use_regex", 1, &use_regex));
  if (prefix)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s.add_prefix_space is true: not supported", h->path,
                    where);
  return use_regex ? add_stage(h, where, k_gpt2_pattern, 0) : QAT_OK;
}

static const char *type_of(const cJSON *o) {
  const cJSON *t = obj_get(o, "type");
  return cJSON_IsString(t) ? t->valuestring : "";
}

/* ByteLevel alone, or Sequence[Split..., ByteLevel]. */
static qat_status load_pretokenizer(qat_hf *h, const cJSON *root) {
  const char *p = h->path;
  const cJSON *pt = obj_get(root, "pre_tokenizer");
  if (is_unset(pt))
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: pre_tokenizer is null: only byte-level BPE is supported",
                    p);
  if (!strcmp(type_of(pt), "ByteLevel")) return load_byte_level(h, pt, "pre_tokenizer");
  if (strcmp(type_of(pt), "Sequence") != 0)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: pre_tokenizer.type \"%s\" is not supported", p,
                    type_of(pt));
  const cJSON *list = obj_get(pt, "pretokenizers");
  int n = cJSON_GetArraySize(list), i = 0;
  if (!cJSON_IsArray(list) || n == 0)
    return QAT_FAIL(QAT_EFORMAT, "%s: pre_tokenizer.pretokenizers is not a non-empty array", p);
  for (const cJSON *s = list->child; s; s = s->next, i++) {
    char where[64];
    snprintf(where, sizeof where, "pre_tokenizer.pretokenizers[%d]", i);
    const char *t = type_of(s);
    if (!strcmp(t, "Split") && i < n - 1)
      QAT_TRY(load_split(h, s, where));
    else if (!strcmp(t, "ByteLevel") && i == n - 1)
      QAT_TRY(load_byte_level(h, s, where));
    else
      return QAT_FAIL(QAT_EUNSUPPORTED,
                      "%s: %s.type \"%s\": only Split steps, then one ByteLevel, are supported", p,
                      where, t);
  }
  return QAT_OK;
}

/* ---- loading: byte-level tables, decoded pieces, BOS / EOS ----------------------------------- */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * take U+0100.. in byte order. */
static void build_bytes(qat_hf *h) {
  for (int i = 0; i < NBYTE_CP; i++) h->cp_byte[i] = -1;
  int extra = 0;
  for (int b = 0; b < 256; b++) {
    int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    int cp = keep ? b : 256 + extra++;
    h->cp_byte[cp] = (int16_t)b;
    if (cp < 0x80) {
      h->byte_u8[b][0] = (char)cp;
      h->byte_u8n[b] = 1;
    } else {
      h->byte_u8[b][0] = (char)(0xC0 | cp >> 6);
      h->byte_u8[b][1] = (char)(0x80 | (cp & 0x3F));
      h->byte_u8n[b] = 2;
    }
    h->byte_id[b] = strmap_get(&h->vocab, h->byte_u8[b], h->byte_u8n[b]);
  }
}

/* The bytes a byte-level vocab string stands for, written to d (at most n bytes); as tokenizers'
 * ByteLevel decoder, a string with a character outside the alphabet is its own UTF-8 bytes. */
static size_t unbyte(const qat_hf *h, const char *s, size_t n, char *d) {
  const unsigned char *u = (const unsigned char *)s;
  size_t w = 0;
  for (size_t i = 0; i < n;) {
    int ok;
    size_t k = utf8_step(u + i, n - i, &ok);
    int cp = !ok ? -1 : k == 1 ? u[i] : k == 2 ? (u[i] & 0x1F) << 6 | (u[i + 1] & 0x3F) : -1;
    if (cp < 0 || cp >= NBYTE_CP || h->cp_byte[cp] < 0) {
      memcpy(d, s, n);
      return n;
    }
    d[w++] = (char)h->cp_byte[cp];
    i += k;
  }
  return w;
}

/* dec/dec_off: an added token decodes to its content, a vocab entry to its bytes. */
static qat_status build_decode(qat_hf *h) {
  int V = h->vocab_size;
  int64_t *src = malloc((size_t)(V > 0 ? V : 1) * sizeof *src); /* entry, +1 vocab / -1 added */
  h->dec_off = calloc((size_t)V + 1, sizeof *h->dec_off);
  h->dec = malloc(h->vocab.pool_n + h->added.pool_n + 1);
  if (!src || !h->dec_off || !h->dec) {
    free(src);
    return QAT_FAIL(QAT_ENOMEM, "%s: decode table", h->path);
  }
  for (int i = 0; i < V; i++) src[i] = 0;
  for (int64_t e = 0; e < h->added.n; e++)
    if (!src[h->added.id[e]]) src[h->added.id[e]] = -(e + 1);
  for (int64_t e = 0; e < h->vocab.n; e++)
    if (!src[h->vocab.id[e]]) src[h->vocab.id[e]] = e + 1;
  size_t w = 0;
  for (int i = 0; i < V; i++) {
    h->dec_off[i] = w;
    if (src[i] < 0) {
      const strmap *m = &h->added;
      int64_t e = -src[i] - 1;
      memcpy(h->dec + w, m->pool + m->off[e], (size_t)m->len[e]);
      w += (size_t)m->len[e];
    } else if (src[i] > 0) {
      const strmap *m = &h->vocab;
      int64_t e = src[i] - 1;
      w += unbyte(h, m->pool + m->off[e], (size_t)m->len[e], h->dec + w);
    }
  }
  h->dec_off[V] = w;
  free(src);
  return QAT_OK;
}

/* The id of a token string: an added token's, else the vocab's; -1 when neither. */
static int32_t token_id(const qat_hf *h, const char *s) {
  int32_t id = strmap_get(&h->added, s, strlen(s));
  return id >= 0 ? id : strmap_get(&h->vocab, s, strlen(s));
}

static int32_t template_token(const qat_hf *h, const cJSON *pp, const cJSON *item) {
  const cJSON *name = obj_get(obj_get(item, "SpecialToken"), "id");
  if (!cJSON_IsString(name)) return -1;
  const cJSON *ids = obj_get(obj_get(obj_get(pp, "special_tokens"), name->valuestring), "ids");
  int32_t id;
  if (cJSON_IsArray(ids) && json_id(ids->child, &id)) return id;
  return token_id(h, name->valuestring);
}

/* TemplateProcessing's "single": special tokens before $A are BOS, after it EOS. */
static void template_specials(qat_hf *h, const cJSON *pp) {
  if (!strcmp(type_of(pp), "Sequence")) {
    const cJSON *list = obj_get(pp, "processors");
    for (const cJSON *s = cJSON_IsArray(list) ? list->child : NULL; s; s = s->next)
      template_specials(h, s);
    return;
  }
  const cJSON *single = obj_get(pp, "single");
  if (strcmp(type_of(pp), "TemplateProcessing") != 0 || !cJSON_IsArray(single)) return;
  int after = 0;
  for (const cJSON *it = single->child; it; it = it->next) {
    if (obj_get(it, "Sequence")) after = 1;
    int32_t id = template_token(h, pp, it);
    if (id < 0) continue;
    if (!after && h->bos < 0) h->bos = id;
    if (after && h->eos < 0) h->eos = id;
  }
}

static int32_t first_named(const qat_hf *h, const char *const *names, int n) {
  for (int i = 0; i < n; i++) {
    int32_t id = strmap_get(&h->added, names[i], strlen(names[i]));
    if (id >= 0) return id;
  }
  return -1;
}

/* BOS / EOS from the file alone: the post-processor's template, else an added token named like
 * Llama-3's / GPT-2's / Llama-2's; -1 when there is none. */
static void default_specials(qat_hf *h, const cJSON *root) {
  static const char *const bos[] = {"<|begin_of_text|>", "<s>"};
  static const char *const eos[] = {"<|end_of_text|>", "<|endoftext|>", "</s>"};
  h->bos = h->eos = -1;
  template_specials(h, obj_get(root, "post_processor"));
  if (h->bos < 0) h->bos = first_named(h, bos, 2);
  if (h->eos < 0) h->eos = first_named(h, eos, 3);
}

static qat_status build(qat_hf *h, const cJSON *root) {
  const cJSON *model = obj_get(root, "model");
  if (!cJSON_IsObject(root) || !cJSON_IsObject(model))
    return QAT_FAIL(QAT_EFORMAT, "%s: no \"model\" object: not a tokenizer.json", h->path);
  QAT_TRY(check_model_options(h, model));
  QAT_TRY(load_normalizer(h, root));
  QAT_TRY(load_vocab(h, model));
  QAT_TRY(load_added(h, root));
  QAT_TRY(load_merges(h, model));
  QAT_TRY(load_pretokenizer(h, root));
  build_bytes(h);
  QAT_TRY(build_decode(h));
  default_specials(h, root);
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
  strmap_free(&h->vocab);
  strmap_free(&h->added);
  pairmap_free(&h->merges);
  set_free(&h->raw);
  set_free(&h->norm);
  for (int i = 0; i < h->nstages; i++) pcre2_code_free(h->re[i]);
  free(h->dec);
  free(h->dec_off);
  free(h->path);
  free(h);
}

int qat_hf_vocab(const qat_hf *h) { return h->vocab_size; }
int qat_hf_bos(const qat_hf *h) { return h->bos; }
int qat_hf_eos(const qat_hf *h) { return h->eos; }

const char *qat_hf_piece(const qat_hf *h, int id, size_t *len) {
  if (id < 0 || id >= h->vocab_size) return NULL;
  *len = h->dec_off[id + 1] - h->dec_off[id];
  return h->dec + h->dec_off[id];
}

/* ---- a model folder's BOS / EOS -------------------------------------------------------------- */

/* tokenizer_config.json's "bos_token" / "eos_token": a string, {"content": ...} or null.
 * *found = 0 when the key is absent. */
static qat_status config_token(const qat_hf *h, const char *file, const cJSON *cfg,
                               const char *key, int *found, int *id) {
  const cJSON *v = obj_get(cfg, key);
  *found = v != NULL;
  if (!v) return QAT_OK;
  if (cJSON_IsNull(v)) {
    *id = -1;
    return QAT_OK;
  }
  if (cJSON_IsObject(v)) v = obj_get(v, "content");
  if (!cJSON_IsString(v))
    return QAT_FAIL(QAT_EFORMAT, "%s: %s is neither a string, {\"content\": ...} nor null", file,
                    key);
  *id = token_id(h, v->valuestring);
  char e[96];
  if (*id < 0)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s \"%s\" is not a token of %s", file, key,
                    esc(v->valuestring, strlen(v->valuestring), e, sizeof e), h->path);
  return QAT_OK;
}

/* config.json's "bos_token_id" / "eos_token_id": an id, a list of ids (the first) or null. */
static qat_status config_id(const qat_hf *h, const char *file, const cJSON *cfg, const char *key,
                            int *found, int *id) {
  const cJSON *v = obj_get(cfg, key);
  *found = v != NULL;
  if (!v) return QAT_OK;
  if (cJSON_IsArray(v)) v = v->child;
  int32_t x = -1;
  if (!v || cJSON_IsNull(v)) {
    *id = -1;
    return QAT_OK;
  }
  if (!json_id(v, &x) || x >= h->vocab_size)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s is not a token id below the tokenizer's %d", file, key,
                    h->vocab_size);
  *id = x;
  return QAT_OK;
}

typedef qat_status (*config_getter)(const qat_hf *, const char *, const cJSON *, const char *,
                                    int *, int *);

/* Overrides bos / eos from dir/name when the file exists and has the keys. done[] marks the ones
 * set, so a later, lower-priority file leaves them alone. */
static qat_status folder_file(qat_hf *h, const char *dir, const char *name, const char *keys[2],
                              config_getter get, int done[2]) {
  char p[4096];
  QAT_TRY(qat_path_join(p, sizeof p, dir, name));
  if (!qat_path_exists(p)) return QAT_OK;
  char *data;
  size_t size;
  QAT_TRY(qat_read_file(p, &data, &size));
  cJSON *cfg = cJSON_ParseWithLength(data, size);
  free(data);
  if (!cJSON_IsObject(cfg)) {
    cJSON_Delete(cfg);
    return QAT_FAIL(QAT_EFORMAT, "%s: not a JSON object", p);
  }
  int *dst[2] = {&h->bos, &h->eos};
  qat_status st = QAT_OK;
  for (int k = 0; k < 2 && st == QAT_OK; k++) {
    int found = 0, id = -1;
    if (done[k]) continue;
    st = get(h, p, cfg, keys[k], &found, &id);
    if (st == QAT_OK && found) *dst[k] = id, done[k] = 1;
  }
  cJSON_Delete(cfg);
  return st;
}

qat_status qat_hf_load_folder(qat_hf *h, const char *dir) {
  static const char *tok_keys[2] = {"bos_token", "eos_token"};
  static const char *cfg_keys[2] = {"bos_token_id", "eos_token_id"};
  int done[2] = {0, 0};
  QAT_TRY(folder_file(h, dir, "tokenizer_config.json", tok_keys, config_token, done));
  return folder_file(h, dir, "config.json", cfg_keys, config_id, done);
}

/* ---- encoding -------------------------------------------------------------------------------- */

typedef struct {
  int32_t id, prev, next; /* id -1: merged into its left neighbour */
} symbol;

typedef struct {
  int32_t rank, pos, to;
} candidate;

/* One encode call's scratch: match data per stage, the byte-level form of a piece, its symbols
 * and the merge heap. */
typedef struct {
  const qat_hf *h;
  qat_ivec *out;
  pcre2_match_data *md[MAX_STAGES];
  pcre2_match_context *mctx; /* with a larger JIT stack, made on first need */
  pcre2_jit_stack *jit;
  char *map;
  size_t map_cap;
  symbol *sym;
  size_t sym_cap;
  candidate *heap;
  size_t heap_n, heap_cap;
} encoder;

static qat_status grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return QAT_OK;
  size_t c = *cap ? *cap : 64;
  while (c < need) c *= 2;
  void *q = realloc(*p, c * elem);
  if (!q) return QAT_FAIL(QAT_ENOMEM, "tokenizer scratch of %zu bytes", c * elem);
  *p = q;
  *cap = c;
  return QAT_OK;
}

static int cand_less(candidate a, candidate b) {
  return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos;
}

static void heap_push(encoder *e, candidate c) {
  size_t i = e->heap_n++;
  while (i > 0 && cand_less(c, e->heap[(i - 1) / 2])) {
    e->heap[i] = e->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  e->heap[i] = c;
}

static candidate heap_pop(encoder *e) {
  candidate top = e->heap[0], last = e->heap[--e->heap_n];
  size_t i = 0, n = e->heap_n;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && cand_less(e->heap[c + 1], e->heap[c])) c++;
    if (!cand_less(e->heap[c], last)) break;
    e->heap[i] = e->heap[c];
    i = c;
  }
  if (n) e->heap[i] = last;
  return top;
}

/* Queues the pair (pos, its right neighbour) when it is a merge. */
static void push_pair(encoder *e, int32_t pos) {
  const symbol *a = &e->sym[pos];
  int32_t rank, to;
  if (a->next >= 0 && pairmap_get(&e->h->merges, a->id, e->sym[a->next].id, &rank, &to))
    heap_push(e, (candidate){rank, pos, to});
}

/* tokenizers' Word::merge_all without dropout. */
static qat_status merge_all(encoder *e, int32_t n) {
  QAT_TRY(grow((void **)&e->heap, &e->heap_cap, 3 * (size_t)n, sizeof *e->heap));
  e->heap_n = 0;
  for (int32_t i = 0; i + 1 < n; i++) push_pair(e, i);
  while (e->heap_n) {
    candidate c = heap_pop(e);
    symbol *a = &e->sym[c.pos];
    int32_t rank, to;
    if (a->id < 0 || a->next < 0) continue;
    symbol *b = &e->sym[a->next];
    if (!pairmap_get(&e->h->merges, a->id, b->id, &rank, &to) || to != c.to) continue;
    a->id = to;
    a->next = b->next;
    if (b->next >= 0) e->sym[b->next].prev = c.pos;
    b->id = -1;
    if (a->prev >= 0) push_pair(e, a->prev);
    push_pair(e, c.pos);
  }
  return QAT_OK;
}

/* One symbol per byte (per byte-level character); a byte whose character is not in the vocab is
 * model.unk_token (consecutive ones fused with fuse_unk), or an error without one. */
static qat_status init_symbols(encoder *e, const char *s, size_t n, int32_t *count) {
  const qat_hf *h = e->h;
  QAT_TRY(grow((void **)&e->sym, &e->sym_cap, n, sizeof *e->sym));
  int32_t k = 0;
  int prev_unk = 0;
  for (size_t i = 0; i < n; i++) {
    int32_t id = h->byte_id[(unsigned char)s[i]];
    if (id < 0) {
      char b[96];
      if (h->unk < 0)
        return QAT_FAIL(QAT_EINVAL, "%s: byte 0x%02X of piece \"%s\" has no symbol in model.vocab "
                        "and there is no unk_token", h->path, (unsigned char)s[i],
                        esc(s, n, b, sizeof b));
      if (prev_unk && h->fuse_unk) continue;
      id = h->unk;
      prev_unk = 1;
    } else {
      prev_unk = 0;
    }
    e->sym[k] = (symbol){id, k - 1, k + 1};
    k++;
  }
  e->sym[k - 1].next = -1;
  *count = k;
  return QAT_OK;
}

static qat_status bpe_piece(encoder *e, const char *s, size_t n) {
  const qat_hf *h = e->h;
  if (n > INT32_MAX / 4) return QAT_FAIL(QAT_EINVAL, "%s: a %zu-byte piece", h->path, n);
  if (h->ignore_merges) {
    QAT_TRY(grow((void **)&e->map, &e->map_cap, 2 * n, 1));
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
      unsigned char b = (unsigned char)s[i];
      memcpy(e->map + m, h->byte_u8[b], h->byte_u8n[b]);
      m += h->byte_u8n[b];
    }
    int32_t id = strmap_get(&h->vocab, e->map, m);
    if (id >= 0) return qat_ivec_push(e->out, id);
  }
  int32_t k = 0;
  QAT_TRY(init_symbols(e, s, n, &k));
  QAT_TRY(merge_all(e, k));
  for (int32_t i = 0; i >= 0; i = e->sym[i].next) QAT_TRY(qat_ivec_push(e->out, e->sym[i].id));
  return QAT_OK;
}

/* The next match of stage's pattern in s[0..n) at or after `at`: [*a, *b), or *a = SIZE_MAX. */
static qat_status next_match(encoder *e, int stage, const char *s, size_t n, size_t at, size_t *a,
                             size_t *b) {
  for (;;) {
    int rc = pcre2_match(e->h->re[stage], (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, e->md[stage],
                         e->mctx);
    if (rc >= 0) {
      PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md[stage]);
      *a = ov[0];
      *b = ov[1] > ov[0] ? ov[1] : ov[0];
      return QAT_OK;
    }
    if (rc == PCRE2_ERROR_NOMATCH) {
      *a = SIZE_MAX;
      return QAT_OK;
    }
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !e->jit) {
      e->mctx = pcre2_match_context_create(NULL);
      e->jit = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, NULL);
      if (!e->mctx || !e->jit) return QAT_FAIL(QAT_ENOMEM, "%s: regex stack", e->h->path);
      pcre2_jit_stack_assign(e->mctx, NULL, e->jit);
      continue;
    }
    PCRE2_UCHAR msg[160];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return QAT_FAIL(QAT_EINVAL, "%s: pre-tokenizer pattern %d on a %zu-byte piece: %s",
                    e->h->path, stage, n, (const char *)msg);
  }
}

/* Isolated split by stage's pattern, each piece on to the next stage; after the last, BPE. */
static qat_status pretokenize(encoder *e, int stage, const char *s, size_t n) {
  if (n == 0) return QAT_OK;
  if (stage == e->h->nstages) return bpe_piece(e, s, n);
  size_t gap = 0, at = 0;
  while (at < n) {
    size_t a, b;
    QAT_TRY(next_match(e, stage, s, n, at, &a, &b));
    if (a == SIZE_MAX) break;
    if (a == b) { /* an empty match is no piece: look again one character on */
      int ok;
      at = a + (a < n ? utf8_step((const unsigned char *)s + a, n - a, &ok) : 1);
      continue;
    }
    QAT_TRY(pretokenize(e, stage + 1, s + gap, a - gap));
    QAT_TRY(pretokenize(e, stage + 1, s + a, b - a));
    gap = at = b;
  }
  return pretokenize(e, stage + 1, s + gap, n - gap);
}

/* The longest token of set at s[0..n), or NULL. */
static const added_tok *match_added(const added_set *set, const char *s, size_t n) {
  if (!set->n || !set->first[(unsigned char)s[0]]) return NULL;
  for (int i = 0; i < set->n; i++) {
    const added_tok *t = &set->v[i];
    if ((size_t)t->len <= n && memcmp(s, t->s, (size_t)t->len) == 0) return t;
  }
  return NULL;
}

static qat_status normalize(encoder *e, const char *s, size_t n);

/* Cuts set's tokens out of s[0..n); the gaps go on to normalization (raw stage) or to
 * pre-tokenization (after normalization). */
static qat_status split_added(encoder *e, const added_set *set, const char *s, size_t n,
                              int normalized) {
  size_t gap = 0;
  for (size_t i = 0; i < n && set->n;) {
    const added_tok *t = match_added(set, s + i, n - i);
    if (!t) {
      i++;
      continue;
    }
    QAT_TRY(normalized ? pretokenize(e, 0, s + gap, i - gap) : normalize(e, s + gap, i - gap));
    QAT_TRY(qat_ivec_push(e->out, t->id));
    i += (size_t)t->len;
    gap = i;
  }
  return normalized ? pretokenize(e, 0, s + gap, n - gap) : normalize(e, s + gap, n - gap);
}

static qat_status normalize(encoder *e, const char *s, size_t n) {
  if (n == 0) return QAT_OK;
  if (!e->h->nfc || is_ascii(s, n)) return split_added(e, &e->h->norm, s, n, 1);
  char *t = NULL;
  size_t m = 0;
  QAT_TRY(nfc(e->h->path, s, n, &t, &m));
  qat_status st = split_added(e, &e->h->norm, t, m, 1);
  free(t);
  return st;
}

qat_status qat_hf_encode(const qat_hf *h, const char *text, size_t len, qat_ivec *out) {
  encoder e = {.h = h, .out = out};
  char *clean = NULL;
  qat_status st = QAT_OK;
  for (int i = 0; i < h->nstages && st == QAT_OK; i++) {
    e.md[i] = pcre2_match_data_create_from_pattern(h->re[i], NULL);
    if (!e.md[i]) st = QAT_FAIL(QAT_ENOMEM, "%s: regex match data", h->path);
  }
  if (st == QAT_OK && !utf8_valid(text, len)) {
    st = utf8_lossy(text, len, &clean, &len);
    text = clean;
  }
  if (st == QAT_OK) st = split_added(&e, &h->raw, text, len, 0);
  for (int i = 0; i < h->nstages; i++) pcre2_match_data_free(e.md[i]);
  pcre2_match_context_free(e.mctx);
  pcre2_jit_stack_free(e.jit);
  free(e.map);
  free(e.sym);
  free(e.heap);
  free(clean);
  return st;
}
