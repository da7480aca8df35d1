/* Helpers the tokenizer.json reader's files share (tokenizer_hf_internal.h): a string -> id and a
 * (id, id) -> merge hash map, JSON key access with errors naming the key, UTF-8 stepping and
 * repair, NFC through utf8proc, and PCRE2 patterns compiled and matched with Oniguruma's meaning
 * of \s, ^ and $ (tokenizers runs its regexes in Oniguruma, Ruby syntax). */
#include "io/tokenizer_hf_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- string -> id ----------------------------------------------------------------------------- */

static uint64_t fnv1a(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

qat_status hf_strmap_init(hf_strmap *m, int64_t n, size_t bytes) {
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

void hf_strmap_free(hf_strmap *m) {
  free(m->pool);
  free(m->off);
  free(m->len);
  free(m->id);
  free(m->slot);
  memset(m, 0, sizeof *m);
}

/* The slot holding key s[0..n) or the empty slot where it would go. */
static uint64_t strmap_slot(const hf_strmap *m, const char *s, size_t n) {
  for (uint64_t h = fnv1a(s, n) & m->mask;; h = (h + 1) & m->mask) {
    int64_t e = m->slot[h];
    if (e < 0 || ((size_t)m->len[e] == n && memcmp(m->pool + m->off[e], s, n) == 0)) return h;
  }
}

int32_t hf_strmap_get(const hf_strmap *m, const char *s, size_t n) {
  if (!m->slot) return -1;
  int64_t e = m->slot[strmap_slot(m, s, n)];
  return e < 0 ? -1 : m->id[e];
}

/* The caller sized the map with hf_strmap_init. */
void hf_strmap_put(hf_strmap *m, const char *s, size_t n, int32_t id) {
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

/* ---- (id, id) -> (rank, merged id) ------------------------------------------------------------ */

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

qat_status hf_pairmap_init(hf_pairmap *m, int64_t n) {
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

void hf_pairmap_free(hf_pairmap *m) {
  free(m->key);
  free(m->rank);
  free(m->to);
  memset(m, 0, sizeof *m);
}

static uint64_t pairmap_slot(const hf_pairmap *m, uint64_t k) {
  for (uint64_t h = mix64(k) & m->mask;; h = (h + 1) & m->mask)
    if (m->key[h] == 0 || m->key[h] == k) return h;
}

static uint64_t pair_key(int32_t a, int32_t b) {
  return ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
}

void hf_pairmap_put(hf_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t to) {
  uint64_t k = pair_key(a, b), h = pairmap_slot(m, k);
  m->key[h] = k;
  m->rank[h] = rank;
  m->to[h] = to;
}

int hf_pairmap_get(const hf_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *to) {
  if (!m->key) return 0;
  uint64_t k = pair_key(a, b), h = pairmap_slot(m, k);
  if (m->key[h] != k) return 0;
  *rank = m->rank[h];
  *to = m->to[h];
  return 1;
}

/* ---- JSON and messages ------------------------------------------------------------------------ */

const cJSON *hf_get(const cJSON *o, const char *key) {
  return cJSON_GetObjectItemCaseSensitive(o, key);
}

int hf_unset(const cJSON *v) { return !v || cJSON_IsNull(v); }

const char *hf_type(const cJSON *o) {
  const cJSON *t = hf_get(o, "type");
  return cJSON_IsString(t) ? t->valuestring : "";
}

qat_status hf_bool(const char *path, const cJSON *o, const char *where, const char *key, int dflt,
                   int *out) {
  const cJSON *v = hf_get(o, key);
  if (!v) {
    *out = dflt;
    return QAT_OK;
  }
  if (!cJSON_IsBool(v))
    return QAT_FAIL(QAT_EFORMAT, "%s: %s.%s is not a boolean", path, where, key);
  *out = cJSON_IsTrue(v);
  return QAT_OK;
}

int hf_json_id(const cJSON *v, int32_t *id) {
  if (!cJSON_IsNumber(v)) return 0;
  double d = v->valuedouble;
  if (!(d >= 0 && d < HF_MAX_ID) || d != (double)(int32_t)d) return 0;
  *id = (int32_t)d;
  return 1;
}

const char *hf_esc(const char *s, size_t n, char *buf, size_t cap) {
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

qat_status hf_grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return QAT_OK;
  size_t c = *cap ? *cap : 64;
  while (c < need) c *= 2;
  void *q = realloc(*p, c * elem);
  if (!q) return QAT_FAIL(QAT_ENOMEM, "tokenizer scratch of %zu bytes", c * elem);
  *p = q;
  *cap = c;
  return QAT_OK;
}

/* ---- UTF-8 ------------------------------------------------------------------------------------ */

size_t hf_utf8_step(const unsigned char *s, size_t n, int *ok) {
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

int hf_utf8_valid(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    if (u[i] < 0x80) {
      i++;
      continue;
    }
    int ok;
    i += hf_utf8_step(u + i, n - i, &ok);
    if (!ok) return 0;
  }
  return 1;
}

/* A copy of s with every ill-formed subsequence replaced by U+FFFD (EF BF BD). */
qat_status hf_utf8_lossy(const char *s, size_t n, char **out, size_t *out_n) {
  char *d = malloc(3 * n + 1);
  if (!d) return QAT_FAIL(QAT_ENOMEM, "text of %zu bytes", n);
  const unsigned char *u = (const unsigned char *)s;
  size_t w = 0;
  for (size_t i = 0; i < n;) {
    int ok;
    size_t k = hf_utf8_step(u + i, n - i, &ok);
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

int hf_is_ascii(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] >= 0x80) return 0;
  return 1;
}

qat_status hf_nfc(const char *path, const char *s, size_t n, char **out, size_t *out_n) {
  utf8proc_uint8_t *d = NULL;
  utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &d,
                                    UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  if (r < 0) return QAT_FAIL(QAT_EINVAL, "%s: NFC normalization: %s", path, utf8proc_errmsg(r));
  *out = (char *)d;
  *out_n = (size_t)r;
  return QAT_OK;
}

/* ---- regexes ---------------------------------------------------------------------------------- */

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

qat_status hf_compile(const char *path, const char *where, const char *pat, int literal,
                      pcre2_code **out) {
  /* LITERAL refuses UCP; Oniguruma's Ruby syntax (tokenizers' default) makes ^ and $ line
   * anchors, which is PCRE2's MULTILINE */
  uint32_t opt = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_MULTILINE);
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
    return QAT_FAIL(QAT_EFORMAT, "%s: %s: pattern does not compile at offset %zu: %s", path,
                    where, (size_t)at, (const char *)msg);
  }
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* without JIT the interpreter runs it */
  *out = re;
  return QAT_OK;
}

qat_status hf_next_match(hf_encoder *e, const pcre2_code *re, const char *s, size_t n, size_t at,
                         size_t *a, size_t *b) {
  for (;;) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, e->md, e->mctx);
    if (rc >= 0) {
      PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
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
    return QAT_FAIL(QAT_EINVAL, "%s: pre-tokenizer pattern on a %zu-byte piece: %s", e->h->path,
                    n, (const char *)msg);
  }
}
