/* llama2.c's tokenizer.bin and its encode() (REFERENCE.md section 6), bit-exact with run.c:
 *   file: int32 max_token_length, then per token: float32 score, int32 length, length bytes
 *         (the vocabulary size is not stored; the model header gives it, or we read to EOF);
 *   encode: a dummy-prefix " " token when the text is non-empty; one token per UTF-8 code point
 *         (at most 4 bytes, grouped exactly as run.c does, invalid UTF-8 included), else one
 *         byte-fallback token per byte (id = byte + 3); then repeatedly merge the adjacent pair
 *         whose concatenated *vocabulary strings* are a vocabulary entry with the highest score
 *         (strictly above -1e10), the leftmost pair on ties.
 * run.c rescans every pair after each merge (O(n^2)); here a max-heap ordered by (score desc,
 * position asc) over a linked list gives the same choice at every step in O(n log n), so even a
 * whole-file "--docs none" encode stays fast. Lookups use a hash table over the vocabulary; a
 * string that occurs twice resolves to the lower id. */
#include "io/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

struct qat_bpe {
  int n, max_len;
  char *blob;      /* all strings back to back */
  int64_t *off;    /* [n] */
  int32_t *len;    /* [n] */
  float *score;    /* [n] */
  int32_t *table;  /* open addressing, -1 = empty */
  uint64_t mask;
};

static uint64_t fnv1a(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

/* id of the vocabulary string s[0..n), or -1. */
static int lookup(const qat_bpe *b, const char *s, size_t n) {
  for (uint64_t h = fnv1a(s, n) & b->mask;; h = (h + 1) & b->mask) {
    int id = b->table[h];
    if (id < 0) return -1;
    if ((size_t)b->len[id] == n && memcmp(b->blob + b->off[id], s, n) == 0) return id;
  }
}

static int32_t rd_i32(const unsigned char *p) {
  uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
  int32_t v;
  memcpy(&v, &u, 4);
  return v;
}

qat_status qat_bpe_load(const char *path, const unsigned char *data, size_t size, int vocab_hint,
                        qat_bpe **out) {
  *out = NULL;
  if (vocab_hint < 0) return QAT_FAIL(QAT_EINVAL, "%s: negative vocab size %d", path, vocab_hint);
  if (size < 4) return QAT_FAIL(QAT_EFORMAT, "%s: tokenizer.bin truncated (no header)", path);
  int32_t max_len = rd_i32(data);
  if (max_len <= 0 || max_len > (1 << 20))
    return QAT_FAIL(QAT_EFORMAT, "%s: tokenizer.bin max_token_length %d is implausible", path,
                    max_len);
  /* Pass 1: validate the records and count them. */
  size_t pos = 4, bytes = 0;
  int n = 0;
  while (vocab_hint ? n < vocab_hint : pos < size) {
    if (size - pos < 8)
      return QAT_FAIL(QAT_EFORMAT, "%s: tokenizer.bin truncated at token %d (offset %zu)", path, n,
                      pos);
    int32_t l = rd_i32(data + pos + 4);
    if (l < 0 || l > max_len)
      return QAT_FAIL(QAT_EFORMAT, "%s: token %d has length %d (max_token_length %d)", path, n, l,
                      max_len);
    if (size - pos - 8 < (size_t)l)
      return QAT_FAIL(QAT_EFORMAT, "%s: tokenizer.bin truncated in token %d (offset %zu)", path, n,
                      pos);
    pos += 8 + (size_t)l;
    bytes += (size_t)l;
    if (n == INT32_MAX / 4) return QAT_FAIL(QAT_EFORMAT, "%s: too many tokens", path);
    n++;
  }
  if (n == 0) return QAT_FAIL(QAT_EFORMAT, "%s: tokenizer.bin holds no tokens", path);

  qat_bpe *b = calloc(1, sizeof *b);
  if (!b) return QAT_FAIL(QAT_ENOMEM, "%s: tokenizer", path);
  b->n = n;
  b->max_len = max_len;
  uint64_t cap = 16;
  while (cap < 2 * (uint64_t)n) cap *= 2;
  b->mask = cap - 1;
  b->blob = malloc(bytes + 1);
  b->off = malloc((size_t)n * sizeof *b->off);
  b->len = malloc((size_t)n * sizeof *b->len);
  b->score = malloc((size_t)n * sizeof *b->score);
  b->table = malloc(cap * sizeof *b->table);
  if (!b->blob || !b->off || !b->len || !b->score || !b->table) {
    qat_bpe_free(b);
    return QAT_FAIL(QAT_ENOMEM, "%s: tokenizer of %d tokens", path, n);
  }
  memset(b->table, 0xff, cap * sizeof *b->table);
  /* Pass 2: copy (already validated). */
  pos = 4;
  size_t at = 0;
  for (int i = 0; i < n; i++) {
    memcpy(&b->score[i], data + pos, 4);
    b->len[i] = rd_i32(data + pos + 4);
    b->off[i] = (int64_t)at;
    memcpy(b->blob + at, data + pos + 8, (size_t)b->len[i]);
    at += (size_t)b->len[i];
    pos += 8 + (size_t)b->len[i];
    if (lookup(b, b->blob + b->off[i], (size_t)b->len[i]) >= 0) continue; /* duplicate: keep first */
    uint64_t h = fnv1a(b->blob + b->off[i], (size_t)b->len[i]) & b->mask;
    while (b->table[h] >= 0) h = (h + 1) & b->mask;
    b->table[h] = i;
  }
  *out = b;
  return QAT_OK;
}

void qat_bpe_free(qat_bpe *b) {
  if (!b) return;
  free(b->blob);
  free(b->off);
  free(b->len);
  free(b->score);
  free(b->table);
  free(b);
}

int qat_bpe_vocab(const qat_bpe *b) { return b->n; }

const char *qat_bpe_str(const qat_bpe *b, int id, int *len) {
  if (id < 0 || id >= b->n) return NULL;
  *len = b->len[id];
  return b->blob + b->off[id];
}

/* ---- encode ----------------------------------------------------------------------------------- */

typedef struct {
  float score;
  int32_t i, j;   /* left and right node when pushed */
  int32_t lt, rt; /* their tokens then */
  int32_t id;     /* the merged token */
} cand;

/* a goes before b: higher score, then further left (node indices keep list order). */
static int before(const cand *a, const cand *b) {
  return a->score > b->score || (a->score == b->score && a->i < b->i);
}

static void heap_push(cand *h, int64_t *n, cand c) {
  int64_t k = (*n)++;
  while (k > 0) {
    int64_t p = (k - 1) / 2;
    if (!before(&c, &h[p])) break;
    h[k] = h[p];
    k = p;
  }
  h[k] = c;
}

static cand heap_pop(cand *h, int64_t *n) {
  cand top = h[0], last = h[--(*n)];
  int64_t k = 0;
  for (;;) {
    int64_t c = 2 * k + 1;
    if (c >= *n) break;
    if (c + 1 < *n && before(&h[c + 1], &h[c])) c++;
    if (!before(&h[c], &last)) break;
    h[k] = h[c];
    k = c;
  }
  h[k] = last;
  return top;
}

typedef struct {
  const qat_bpe *b;
  int32_t *tok, *nxt;
  cand *heap;
  int64_t nheap;
  char *buf; /* 2 * max_len */
} merger;

/* Pushes the pair (i, nxt[i]) when its concatenation is a vocabulary entry run.c would accept. */
static void consider(merger *m, int32_t i) {
  int32_t j = m->nxt[i];
  if (j < 0) return;
  const qat_bpe *b = m->b;
  int32_t lt = m->tok[i], rt = m->tok[j];
  memcpy(m->buf, b->blob + b->off[lt], (size_t)b->len[lt]);
  memcpy(m->buf + b->len[lt], b->blob + b->off[rt], (size_t)b->len[rt]);
  int id = lookup(b, m->buf, (size_t)b->len[lt] + (size_t)b->len[rt]);
  /* run.c starts from best_score = -1e10 with a strict '>': lower (and NaN) scores never merge. */
  if (id < 0 || !(b->score[id] > -1e10f)) return;
  heap_push(m->heap, &m->nheap, (cand){b->score[id], i, j, lt, rt, id});
}

qat_status qat_bpe_encode(const qat_bpe *b, const char *text, size_t len, qat_ivec *out) {
  if (len == 0) return QAT_OK;
  if (len > (size_t)INT32_MAX / 4)
    return QAT_FAIL(QAT_EINVAL, "text of %zu bytes is too long for one encode (split documents)",
                    len);
  int64_t cap = (int64_t)len + 1;
  merger m = {b, malloc((size_t)cap * 4), malloc((size_t)cap * 4), NULL, 0,
              malloc(2 * (size_t)b->max_len + 8)};
  int32_t *prv = malloc((size_t)cap * 4);
  m.heap = malloc((size_t)(3 * cap) * sizeof *m.heap);
  qat_status st = QAT_OK;
  if (!m.tok || !m.nxt || !prv || !m.heap || !m.buf) {
    st = QAT_FAIL(QAT_ENOMEM, "encode of %zu bytes", len);
    goto done;
  }
  int32_t nt = 0;
#define EMIT_BYTE(c)                                                                               \
  do {                                                                                             \
    int _id = (int)(unsigned char)(c) + 3;                                                         \
    if (_id >= b->n) {                                                                             \
      st = QAT_FAIL(QAT_EINVAL, "byte 0x%02X has no token: byte fallback id %d outside the "       \
                    "vocabulary of %d", (unsigned)(unsigned char)(c), _id, b->n);                  \
      goto done;                                                                                   \
    }                                                                                              \
    m.tok[nt++] = _id;                                                                             \
  } while (0)
  /* Dummy prefix (sentencepiece's add_dummy_prefix, as run.c hard-codes it). */
  int sp = lookup(b, " ", 1);
  if (sp >= 0)
    m.tok[nt++] = sp;
  else
    EMIT_BYTE(' ');
  /* One token per code point, grouping bytes exactly as run.c does. */
  char cp[4];
  int cl = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)text[i];
    if ((c & 0xC0) != 0x80) cl = 0;
    cp[cl++] = (char)c;
    if (i + 1 < len && ((unsigned char)text[i + 1] & 0xC0) == 0x80 && cl < 4) continue;
    int id = lookup(b, cp, (size_t)cl);
    if (id >= 0)
      m.tok[nt++] = id;
    else
      for (int k = 0; k < cl; k++) EMIT_BYTE(cp[k]);
    cl = 0;
  }
#undef EMIT_BYTE
  for (int32_t i = 0; i < nt; i++) {
    m.nxt[i] = i + 1 < nt ? i + 1 : -1;
    prv[i] = i - 1;
  }
  for (int32_t i = 0; i + 1 < nt; i++) consider(&m, i);
  /* Merge the best pair until none is left. Stale candidates (either side changed or merged
   * away since the push) are skipped; a removed node has tok = -1. */
  while (m.nheap > 0) {
    cand c = heap_pop(m.heap, &m.nheap);
    if (m.tok[c.i] != c.lt || m.nxt[c.i] != c.j || m.tok[c.j] != c.rt) continue;
    m.tok[c.i] = c.id;
    m.tok[c.j] = -1;
    m.nxt[c.i] = m.nxt[c.j];
    if (m.nxt[c.i] >= 0) prv[m.nxt[c.i]] = c.i;
    if (prv[c.i] >= 0) consider(&m, prv[c.i]);
    consider(&m, c.i);
  }
  QAT_CHECK(st, qat_ivec_reserve(out, nt), done);
  for (int32_t i = 0; i >= 0; i = m.nxt[i]) out->v[out->n++] = m.tok[i];
done:
  free(m.tok);
  free(m.nxt);
  free(prv);
  free(m.heap);
  free(m.buf);
  return st;
}
