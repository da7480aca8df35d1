/* The BPE model of a tokenizer.json (tokenizers/src/models/bpe/{model,word}.rs): model.vocab,
 * model.merges, unk_token / fuse_unk, byte_fallback's <0xNN> tokens, ignore_merges; the
 * byte-level alphabet (GPT-2's bytes_to_unicode) for pieces a ByteLevel step handed over as raw
 * bytes; and the per-id decoded bytes that qat_hf_piece returns.
 *
 * One piece is encoded as tokenizers' BPE::merge_word: one symbol per character (per byte for
 * byte-level pieces) looked up in the vocab; a character that is not there becomes its UTF-8
 * bytes' <0xNN> tokens with byte_fallback (all of them or none), else unk_token (consecutive unks
 * fused with fuse_unk); then Word::merge_all: repeatedly merge the adjacent pair of lowest merge
 * rank, leftmost on ties - a min-heap of (rank, position) over a linked list, stale entries
 * skipped when the pair no longer produces the same token.
 * Known limit: cJSON strings end at U+0000, so a vocab entry containing it (no real vocabulary
 * has one; byte-level files spell byte 0 as U+0100, SentencePiece ones as <0x00>) is misread. */
#include "io/tokenizer_hf_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- loading ---------------------------------------------------------------------------------- */

static qat_status check_options(qat_hf *h, const cJSON *model) {
  const char *p = h->path;
  const cJSON *type = hf_get(model, "type");
  if (!cJSON_IsString(type))
    return QAT_FAIL(QAT_EFORMAT, "%s: model.type is missing (expected \"BPE\")", p);
  if (strcmp(type->valuestring, "BPE") != 0)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: model.type \"%s\" is not supported (only BPE)", p,
                    type->valuestring);
  if (!hf_unset(hf_get(model, "dropout")))
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: model.dropout is set: BPE dropout is not supported", p);
  static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
  for (int i = 0; i < 2; i++) {
    const cJSON *v = hf_get(model, affixes[i]);
    if (!hf_unset(v) && !(cJSON_IsString(v) && v->valuestring[0] == 0))
      return QAT_FAIL(QAT_EUNSUPPORTED, "%s: model.%s is set: not supported", p, affixes[i]);
  }
  QAT_TRY(hf_bool(p, model, "model", "byte_fallback", 0, &h->byte_fallback));
  QAT_TRY(hf_bool(p, model, "model", "ignore_merges", 0, &h->ignore_merges));
  return hf_bool(p, model, "model", "fuse_unk", 0, &h->fuse_unk);
}

qat_status hf_load_model(qat_hf *h, const cJSON *model) {
  QAT_TRY(check_options(h, model));
  const cJSON *vocab = hf_get(model, "vocab");
  if (!cJSON_IsObject(vocab))
    return QAT_FAIL(QAT_EFORMAT, "%s: model.vocab is missing or not an object", h->path);
  int64_t n = 0;
  size_t bytes = 0;
  for (const cJSON *e = vocab->child; e; e = e->next) n++, bytes += strlen(e->string);
  QAT_TRY(hf_strmap_init(&h->vocab, n, bytes));
  for (const cJSON *e = vocab->child; e; e = e->next) {
    int32_t id;
    char b[96];
    if (!hf_json_id(e, &id))
      return QAT_FAIL(QAT_EFORMAT, "%s: model.vocab[\"%s\"] is not a token id in [0, %d)",
                      h->path, hf_esc(e->string, strlen(e->string), b, sizeof b), HF_MAX_ID);
    hf_strmap_put(&h->vocab, e->string, strlen(e->string), id);
    if (id + 1 > h->vocab_size) h->vocab_size = id + 1;
  }
  h->unk = -1;
  const cJSON *unk = hf_get(model, "unk_token");
  if (cJSON_IsString(unk)) {
    h->unk = hf_strmap_get(&h->vocab, unk->valuestring, strlen(unk->valuestring));
    if (h->unk < 0)
      return QAT_FAIL(QAT_EFORMAT, "%s: model.unk_token \"%s\" is not in model.vocab", h->path,
                      unk->valuestring);
  } else if (!hf_unset(unk)) {
    return QAT_FAIL(QAT_EFORMAT, "%s: model.unk_token is neither a string nor null", h->path);
  }
  /* tokenizers spells the byte tokens format!("<{b:#04X}>"): <0x0A>, upper-case hex */
  for (int b = 0; b < 256; b++) {
    char s[8];
    snprintf(s, sizeof s, "<0x%02X>", b);
    h->fallback_id[b] = h->byte_fallback ? hf_strmap_get(&h->vocab, s, 6) : -1;
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
                      (long long)i, hf_esc(s, strlen(s), e, sizeof e));
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
  *id = hf_strmap_get(&h->vocab, s, n);
  char e[96];
  if (*id < 0)
    return QAT_FAIL(QAT_EFORMAT, "%s: model.merges[%lld]: \"%s\" is not in model.vocab", h->path,
                    (long long)i, hf_esc(s, n, e, sizeof e));
  return QAT_OK;
}

qat_status hf_load_merges(qat_hf *h, const cJSON *model) {
  const cJSON *merges = hf_get(model, "merges");
  if (!cJSON_IsArray(merges))
    return QAT_FAIL(QAT_EFORMAT, "%s: model.merges is missing or not an array", h->path);
  int64_t n = cJSON_GetArraySize(merges), i = 0;
  QAT_TRY(hf_pairmap_init(&h->merges, n));
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
    QAT_CHECK(st, hf_grow((void **)&cat, &cat_cap, na + nb, 1), done);
    memcpy(cat, a, na);
    memcpy(cat + na, b, nb);
    QAT_CHECK(st, vocab_id(h, i, cat, na + nb, &ic), done);
    hf_pairmap_put(&h->merges, ia, ib, (int32_t)i, ic);
  }
done:
  free(cat);
  return st;
}

/* ---- byte-level tables and decoded pieces ------------------------------------------------------ */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * take U+0100.. in byte order. */
void hf_build_bytes(qat_hf *h) {
  for (int i = 0; i < HF_NBYTE_CP; i++) h->cp_byte[i] = -1;
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
    h->byte_id[b] = hf_strmap_get(&h->vocab, h->byte_u8[b], h->byte_u8n[b]);
  }
}

/* The bytes a byte-level vocab string stands for, written to d (at most n bytes); as tokenizers'
 * ByteLevel decoder, a string with a character outside the alphabet is its own UTF-8 bytes. */
static size_t unbyte(const qat_hf *h, const char *s, size_t n, char *d) {
  const unsigned char *u = (const unsigned char *)s;
  size_t w = 0;
  for (size_t i = 0; i < n;) {
    int ok;
    size_t k = hf_utf8_step(u + i, n - i, &ok);
    int cp = !ok ? -1 : k == 1 ? u[i] : k == 2 ? (u[i] & 0x1F) << 6 | (u[i + 1] & 0x3F) : -1;
    if (cp < 0 || cp >= HF_NBYTE_CP || h->cp_byte[cp] < 0) {
      memcpy(d, s, n);
      return n;
    }
    d[w++] = (char)h->cp_byte[cp];
    i += k;
  }
  return w;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* One decoder step on s[0..n) in place, tmp as scratch (both sized in hf_build_decode for the
 * growth Replace steps allow); returns the new length. */
static size_t decode_step(const qat_hf *h, const hf_dec *st, char *s, size_t n, char *tmp) {
  if (st->kind == HF_DEC_BYTELEVEL) {
    size_t m = unbyte(h, s, n, tmp);
    memcpy(s, tmp, m);
    return m;
  }
  if (st->kind == HF_DEC_BYTEFALLBACK) { /* "<0xNN>" -> that byte */
    if (n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' && hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
      s[0] = (char)(hexval(s[3]) * 16 + hexval(s[4]));
      return 1;
    }
    return n;
  }
  size_t w = 0; /* Replace: every occurrence of the pattern by the content */
  for (size_t i = 0; i < n;) {
    if (st->na && i + st->na <= n && !memcmp(s + i, st->a, st->na)) {
      memcpy(tmp + w, st->b, st->nb);
      w += st->nb;
      i += st->na;
    } else {
      tmp[w++] = s[i++];
    }
  }
  memcpy(s, tmp, w);
  return w;
}

/* dec/dec_off: an added token decodes to its content, a vocab entry through the decoder's
 * per-token steps (ByteLevel, Replace, ByteFallback). */
qat_status hf_build_decode(qat_hf *h) {
  int V = h->vocab_size;
  /* room: Replace may grow a token by nb/na per occurrence; bound it by 8x + 8 per token */
  size_t grow = 1;
  for (int k = 0; k < h->ndec; k++)
    if (h->dec_steps[k].kind == HF_DEC_REPLACE && h->dec_steps[k].na &&
        h->dec_steps[k].nb > h->dec_steps[k].na)
      grow *= (h->dec_steps[k].nb + h->dec_steps[k].na - 1) / h->dec_steps[k].na;
  if (grow > 64) return QAT_FAIL(QAT_EUNSUPPORTED, "%s: decoder Replace steps grow tokens %zux",
                                 h->path, grow);
  int64_t *src = malloc((size_t)(V > 0 ? V : 1) * sizeof *src); /* entry, +1 vocab / -1 added */
  size_t longest = 16;
  for (int64_t e = 0; e < h->vocab.n; e++)
    if ((size_t)h->vocab.len[e] > longest) longest = (size_t)h->vocab.len[e];
  size_t cap = (h->vocab.pool_n + h->added.pool_n) * grow + 1;
  char *tok = malloc(longest * grow + 1), *tmp = malloc(longest * grow + 1);
  h->dec_off = calloc((size_t)V + 1, sizeof *h->dec_off);
  h->dec = malloc(cap);
  if (!src || !h->dec_off || !h->dec || !tok || !tmp) {
    free(src), free(tok), free(tmp);
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
      const hf_strmap *m = &h->added;
      int64_t e = -src[i] - 1;
      memcpy(h->dec + w, m->pool + m->off[e], (size_t)m->len[e]);
      w += (size_t)m->len[e];
    } else if (src[i] > 0) {
      const hf_strmap *m = &h->vocab;
      int64_t e = src[i] - 1;
      size_t n = (size_t)m->len[e];
      memcpy(tok, m->pool + m->off[e], n);
      for (int k = 0; k < h->ndec; k++) n = decode_step(h, &h->dec_steps[k], tok, n, tmp);
      memcpy(h->dec + w, tok, n);
      w += n;
    }
  }
  h->dec_off[V] = w;
  free(src);
  free(tok);
  free(tmp);
  return QAT_OK;
}

/* ---- encoding one piece ------------------------------------------------------------------------ */

static int cand_less(hf_candidate a, hf_candidate b) {
  return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos;
}

static void heap_push(hf_encoder *e, hf_candidate c) {
  size_t i = e->heap_n++;
  while (i > 0 && cand_less(c, e->heap[(i - 1) / 2])) {
    e->heap[i] = e->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  e->heap[i] = c;
}

static hf_candidate heap_pop(hf_encoder *e) {
  hf_candidate top = e->heap[0], last = e->heap[--e->heap_n];
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
static void push_pair(hf_encoder *e, int32_t pos) {
  const hf_symbol *a = &e->sym[pos];
  int32_t rank, to;
  if (a->next >= 0 && hf_pairmap_get(&e->h->merges, a->id, e->sym[a->next].id, &rank, &to))
    heap_push(e, (hf_candidate){rank, pos, to});
}

/* tokenizers' Word::merge_all without dropout. */
static qat_status merge_all(hf_encoder *e, int32_t n) {
  QAT_TRY(hf_grow((void **)&e->heap, &e->heap_cap, 3 * (size_t)n, sizeof *e->heap));
  e->heap_n = 0;
  for (int32_t i = 0; i + 1 < n; i++) push_pair(e, i);
  while (e->heap_n) {
    hf_candidate c = heap_pop(e);
    hf_symbol *a = &e->sym[c.pos];
    int32_t rank, to;
    if (a->id < 0 || a->next < 0) continue;
    hf_symbol *b = &e->sym[a->next];
    if (!hf_pairmap_get(&e->h->merges, a->id, b->id, &rank, &to) || to != c.to) continue;
    a->id = to;
    a->next = b->next;
    if (b->next >= 0) e->sym[b->next].prev = c.pos;
    b->id = -1;
    if (a->prev >= 0) push_pair(e, a->prev);
    push_pair(e, c.pos);
  }
  return QAT_OK;
}

typedef struct {
  int32_t k;   /* symbols so far */
  int32_t unk; /* a pending unk symbol's id (merge_word's `unk`), -1 = none */
} word;

static void add_sym(hf_encoder *e, word *w, int32_t id) {
  e->sym[w->k] = (hf_symbol){id, w->k - 1, w->k + 1};
  w->k++;
}

/* One character (or byte) s[0..n) that is `id` in the vocab (-1: not there), as merge_word:
 * a known symbol flushes a pending unk; an unknown one becomes byte tokens with byte_fallback,
 * which tokenizers adds *before* flushing a pending unk, else an unk (fused or not). */
static qat_status add_char(hf_encoder *e, word *w, const char *s, size_t n, int32_t id,
                           const char *piece, size_t pn, int bytes) {
  const qat_hf *h = e->h;
  if (id >= 0) {
    if (w->unk >= 0) add_sym(e, w, w->unk), w->unk = -1;
    add_sym(e, w, id);
    return QAT_OK;
  }
  if (h->byte_fallback) {
    int all = 1;
    for (size_t i = 0; i < n && all; i++) all = h->fallback_id[(unsigned char)s[i]] >= 0;
    if (all) {
      for (size_t i = 0; i < n; i++) add_sym(e, w, h->fallback_id[(unsigned char)s[i]]);
      return QAT_OK;
    }
  }
  if (h->unk < 0) {
    char b[96], c[32];
    if (bytes)
      return QAT_FAIL(QAT_EINVAL, "%s: byte 0x%02X of piece \"%s\" has no symbol in model.vocab "
                      "and there is no unk_token", h->path, (unsigned char)s[0],
                      hf_esc(piece, pn, b, sizeof b));
    return QAT_FAIL(QAT_EINVAL, "%s: character \"%s\" of piece \"%s\" has no symbol in "
                    "model.vocab and there is no unk_token%s", h->path, hf_esc(s, n, c, sizeof c),
                    hf_esc(piece, pn, b, sizeof b), h->byte_fallback ? " (nor <0xNN> tokens)" : "");
  }
  if (w->unk >= 0 && !h->fuse_unk) add_sym(e, w, w->unk);
  w->unk = h->unk;
  return QAT_OK;
}

qat_status hf_bpe(hf_encoder *e, const char *s, size_t n, int bytes) {
  const qat_hf *h = e->h;
  if (n == 0) return QAT_OK;
  if (n > INT32_MAX / 8) return QAT_FAIL(QAT_EINVAL, "%s: a %zu-byte piece", h->path, n);
  if (h->ignore_merges) { /* the whole piece, when it is a vocab entry */
    const char *key = s;
    size_t m = n;
    if (bytes) {
      QAT_TRY(hf_grow((void **)&e->buf[2 * HF_MAX_STAGES], &e->cap[2 * HF_MAX_STAGES], 2 * n, 1));
      char *map = e->buf[2 * HF_MAX_STAGES];
      m = 0;
      for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        memcpy(map + m, h->byte_u8[b], h->byte_u8n[b]);
        m += h->byte_u8n[b];
      }
      key = map;
    }
    int32_t id = hf_strmap_get(&h->vocab, key, m);
    if (id >= 0) return qat_ivec_push(e->out, id);
  }
  /* at most 4 byte tokens per character, one per byte otherwise */
  QAT_TRY(hf_grow((void **)&e->sym, &e->sym_cap, 4 * n + 1, sizeof *e->sym));
  word w = {0, -1};
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    if (bytes) {
      int32_t id = h->byte_id[u[i]];
      if (id >= 0 && w.unk < 0) /* the common case, inline */
        e->sym[w.k] = (hf_symbol){id, w.k - 1, w.k + 1}, w.k++;
      else
        QAT_TRY(add_char(e, &w, s + i, 1, id, s, n, 1));
      i++;
      continue;
    }
    int ok;
    size_t k = hf_utf8_step(u + i, n - i, &ok);
    QAT_TRY(add_char(e, &w, s + i, k, hf_strmap_get(&h->vocab, s + i, k), s, n, 0));
    i += k;
  }
  if (w.unk >= 0) add_sym(e, &w, w.unk);
  if (w.k == 0) return QAT_OK;
  e->sym[w.k - 1].next = -1;
  QAT_TRY(merge_all(e, w.k));
  for (int32_t i = 0; i >= 0; i = e->sym[i].next) QAT_TRY(qat_ivec_push(e->out, e->sym[i].id));
  return QAT_OK;
}
