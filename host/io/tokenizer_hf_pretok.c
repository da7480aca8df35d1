/* The normalizer, pre-tokenizer and decoder of a tokenizer.json, with the `tokenizers` library's
 * semantics (tokenizers/src: normalizers/{unicode,prepend,replace,utils}.rs,
 * pre_tokenizers/{sequence,split,byte_level,digits,metaspace,punctuation,whitespace}.rs,
 * tokenizer/normalizer.rs NormalizedString::split, decoders/). Sequences are flattened at
 * load into a list of steps; each pre-tokenizer step splits every piece the previous step made.
 *
 * Supported: normalizers NFC, Prepend, Replace (String or Regex), Sequence; pre-tokenizers
 *   Split (Regex or String; Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous;
 *     invert),
 *   ByteLevel (add_prefix_space, use_regex: GPT-2's pattern as one more Isolated split; the
 *     pieces are mapped to the byte alphabet, handed to BPE as raw bytes when ByteLevel is last),
 *   Digits (individual_digits: each numeric character alone, else runs of them; Rust's
 *     char::is_numeric is \p{N}),
 *   Metaspace (replacement, prepend_scheme always / first / never or the old add_prefix_space,
 *     split: MergedWithNext on the replacement),
 *   WhitespaceSplit (White_Space removed), Punctuation (Unicode P* and ASCII punctuation),
 *   Sequence;
 * decoders ByteLevel, Metaspace, Replace (String), ByteFallback, Fuse, Strip (" "), Sequence.
 * Patterns run in PCRE2 (UTF + UCP, JIT); tokenizers runs them in Oniguruma, whose \s is Unicode
 * White_Space, so \s / \S are rewritten (tokenizer_hf_util.c). Anything else is refused at load
 * with the file and the key. */
#include "io/tokenizer_hf_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char k_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* tokenizers' is_punc: char::is_ascii_punctuation or a Unicode P* category */
static const char k_punct_pattern[] = "[\\p{P}\\x{21}-\\x{2F}\\x{3A}-\\x{40}\\x{5B}-\\x{60}"
                                      "\\x{7B}-\\x{7E}]";

/* ---- loading: normalizer ---------------------------------------------------------------------- */

static qat_status dup_str(const char *path, const char *where, const cJSON *v, char **out,
                          size_t *n) {
  if (!cJSON_IsString(v)) return QAT_FAIL(QAT_EFORMAT, "%s: %s is not a string", path, where);
  *n = strlen(v->valuestring);
  *out = malloc(*n + 1);
  if (!*out) return QAT_FAIL(QAT_ENOMEM, "%s: %s", path, where);
  memcpy(*out, v->valuestring, *n + 1);
  return QAT_OK;
}

static qat_status add_norm(qat_hf *h, const cJSON *nz, const char *where) {
  const char *p = h->path, *t = hf_type(nz);
  if (!strcmp(t, "Sequence")) {
    const cJSON *list = hf_get(nz, "normalizers");
    if (!cJSON_IsArray(list))
      return QAT_FAIL(QAT_EFORMAT, "%s: %s.normalizers is not an array", p, where);
    int i = 0;
    for (const cJSON *s = list->child; s; s = s->next, i++) {
      char w[96];
      snprintf(w, sizeof w, "%s.normalizers[%d]", where, i);
      QAT_TRY(add_norm(h, s, w));
    }
    return QAT_OK;
  }
  if (h->nnorm == HF_MAX_NORM)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s: more than %d normalizer steps", p, where,
                    HF_MAX_NORM);
  hf_norm *st = &h->norm_steps[h->nnorm];
  char w[128];
  if (!strcmp(t, "NFC")) {
    st->kind = HF_NFC;
  } else if (!strcmp(t, "Prepend")) {
    snprintf(w, sizeof w, "%s.prepend", where);
    QAT_TRY(dup_str(p, w, hf_get(nz, "prepend"), &st->a, &st->na));
    st->kind = HF_PREPEND;
  } else if (!strcmp(t, "Replace")) {
    const cJSON *pat = hf_get(nz, "pattern"), *re = hf_get(pat, "Regex"), *lit = hf_get(pat, "String");
    snprintf(w, sizeof w, "%s.content", where);
    QAT_TRY(dup_str(p, w, hf_get(nz, "content"), &st->b, &st->nb));
    st->kind = HF_REPLACE;
    h->nnorm++; /* owned strings are freed from here on */
    snprintf(w, sizeof w, "%s.pattern", where);
    if (cJSON_IsString(re)) return hf_compile(p, w, re->valuestring, 0, &st->re);
    if (!cJSON_IsString(lit) || !lit->valuestring[0])
      return QAT_FAIL(QAT_EFORMAT, "%s: %s needs \"Regex\" or a non-empty \"String\"", p, w);
    return dup_str(p, w, lit, &st->a, &st->na);
  } else {
    return QAT_FAIL(QAT_EUNSUPPORTED,
                    "%s: %s.type \"%s\" is not supported (null, NFC, Prepend, Replace or a "
                    "Sequence of them)", p, where, t);
  }
  h->nnorm++;
  return QAT_OK;
}

qat_status hf_load_normalizer(qat_hf *h, const cJSON *root) {
  const cJSON *nz = hf_get(root, "normalizer");
  return hf_unset(nz) ? QAT_OK : add_norm(h, nz, "normalizer");
}

int hf_has_normalizer(const qat_hf *h) { return h->nnorm > 0; }

/* ---- loading: pre-tokenizer ------------------------------------------------------------------- */

static qat_status new_stage(qat_hf *h, const char *where, hf_stage **out) {
  if (h->nstages == HF_MAX_STAGES)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s: more than %d pre-tokenizer steps", h->path, where,
                    HF_MAX_STAGES);
  *out = &h->stages[h->nstages++];
  memset(*out, 0, sizeof **out);
  return QAT_OK;
}

static qat_status split_stage(qat_hf *h, const char *where, const char *pat, int literal,
                              int behavior, int invert) {
  hf_stage *st = NULL;
  QAT_TRY(new_stage(h, where, &st));
  st->kind = HF_SPLIT;
  st->behavior = behavior;
  st->invert = invert;
  return hf_compile(h->path, where, pat, literal, &st->re);
}

static qat_status behavior_of(const char *path, const char *where, const cJSON *o, int dflt,
                              int *out) {
  static const char *const names[] = {"Isolated", "Removed", "MergedWithPrevious",
                                      "MergedWithNext", "Contiguous"};
  const cJSON *b = hf_get(o, "behavior");
  if (!b && dflt >= 0) {
    *out = dflt;
    return QAT_OK;
  }
  for (int i = 0; i < 5; i++)
    if (cJSON_IsString(b) && !strcmp(b->valuestring, names[i])) {
      *out = i;
      return QAT_OK;
    }
  return QAT_FAIL(QAT_EFORMAT, "%s: %s.behavior \"%s\" is not one of Isolated, Removed, "
                  "MergedWithPrevious, MergedWithNext, Contiguous", path, where,
                  cJSON_IsString(b) ? b->valuestring : "?");
}

static qat_status load_split(qat_hf *h, const cJSON *sp, const char *where) {
  const char *p = h->path;
  const cJSON *pat = hf_get(sp, "pattern"), *re = hf_get(pat, "Regex"), *lit = hf_get(pat, "String");
  if (!cJSON_IsString(re) && !(cJSON_IsString(lit) && lit->valuestring[0]))
    return QAT_FAIL(QAT_EFORMAT, "%s: %s.pattern needs \"Regex\" or a non-empty \"String\"", p,
                    where);
  int behavior, invert = 0;
  QAT_TRY(behavior_of(p, where, sp, -1, &behavior));
  QAT_TRY(hf_bool(p, sp, where, "invert", 0, &invert));
  return cJSON_IsString(re) ? split_stage(h, where, re->valuestring, 0, behavior, invert)
                            : split_stage(h, where, lit->valuestring, 1, behavior, invert);
}

static qat_status load_byte_level(qat_hf *h, const cJSON *bl, const char *where) {
  int prefix = 1, use_regex = 1;
  /* tokenizers' defaults when the keys are absent: add_prefix_space and use_regex true */
  QAT_TRY(hf_bool(h->path, bl, where, "add_prefix_space", 1, &prefix));
  QAT_TRY(hf_bool(h->path, bl, where, "use_regex", 1, &use_regex));
  hf_stage *st = NULL;
  QAT_TRY(new_stage(h, where, &st));
  st->kind = HF_BYTELEVEL;
  st->prefix_space = prefix;
  return use_regex ? hf_compile(h->path, where, k_gpt2_pattern, 0, &st->re) : QAT_OK;
}

/* prepend_scheme "always" / "first" / "never", or the older add_prefix_space (true = always) */
static qat_status prepend_scheme(const char *path, const cJSON *o, const char *where, int *out) {
  const cJSON *ps = hf_get(o, "prepend_scheme");
  static const char *const names[] = {"always", "first", "never"};
  if (!ps) {
    int prefix = 1;
    QAT_TRY(hf_bool(path, o, where, "add_prefix_space", 1, &prefix));
    *out = prefix ? HF_PREPEND_ALWAYS : HF_PREPEND_NEVER;
    return QAT_OK;
  }
  for (int i = 0; i < 3; i++)
    if (cJSON_IsString(ps) && !strcmp(ps->valuestring, names[i])) {
      *out = i;
      return QAT_OK;
    }
  return QAT_FAIL(QAT_EFORMAT, "%s: %s.prepend_scheme \"%s\" is not always, first or never", path,
                  where, cJSON_IsString(ps) ? ps->valuestring : "?");
}

/* Metaspace's replacement: one character. */
static qat_status replacement(const char *path, const cJSON *o, const char *where, char repl[8],
                              int *nrepl) {
  const cJSON *r = hf_get(o, "replacement");
  const char *s = cJSON_IsString(r) ? r->valuestring : NULL;
  int ok = 0;
  size_t n = s && s[0] ? hf_utf8_step((const unsigned char *)s, strlen(s), &ok) : 0;
  if (!ok || s[n] != 0)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s.replacement is not one character", path, where);
  memcpy(repl, s, n + 1);
  *nrepl = (int)n;
  return QAT_OK;
}

static qat_status load_metaspace(qat_hf *h, const cJSON *ms, const char *where) {
  hf_stage *st = NULL;
  QAT_TRY(new_stage(h, where, &st));
  st->kind = HF_METASPACE;
  QAT_TRY(replacement(h->path, ms, where, st->repl, &st->nrepl));
  QAT_TRY(prepend_scheme(h->path, ms, where, &st->scheme));
  int split = 1;
  QAT_TRY(hf_bool(h->path, ms, where, "split", 1, &split));
  st->behavior = HF_MERGED_NEXT;
  return split ? hf_compile(h->path, where, st->repl, 1, &st->re) : QAT_OK;
}

static qat_status add_pretok(qat_hf *h, const cJSON *pt, const char *where) {
  const char *p = h->path, *t = hf_type(pt);
  if (!strcmp(t, "Sequence")) {
    const cJSON *list = hf_get(pt, "pretokenizers");
    if (!cJSON_IsArray(list))
      return QAT_FAIL(QAT_EFORMAT, "%s: %s.pretokenizers is not an array", p, where);
    int i = 0;
    for (const cJSON *s = list->child; s; s = s->next, i++) {
      char w[96];
      snprintf(w, sizeof w, "%s.pretokenizers[%d]", where, i);
      QAT_TRY(add_pretok(h, s, w));
    }
    return QAT_OK;
  }
  if (!strcmp(t, "Split")) return load_split(h, pt, where);
  if (!strcmp(t, "ByteLevel")) return load_byte_level(h, pt, where);
  if (!strcmp(t, "Metaspace")) return load_metaspace(h, pt, where);
  if (!strcmp(t, "Digits")) {
    int individual = 0;
    QAT_TRY(hf_bool(p, pt, where, "individual_digits", 0, &individual));
    return split_stage(h, where, individual ? "\\p{N}" : "\\p{N}+", 0, HF_ISOLATED, 0);
  }
  if (!strcmp(t, "WhitespaceSplit")) return split_stage(h, where, "\\s", 0, HF_REMOVED, 0);
  if (!strcmp(t, "Punctuation")) {
    int behavior;
    QAT_TRY(behavior_of(p, where, pt, HF_ISOLATED, &behavior));
    return split_stage(h, where, k_punct_pattern, 0, behavior, 0);
  }
  return QAT_FAIL(QAT_EUNSUPPORTED,
                  "%s: %s.type \"%s\" is not supported (Split, ByteLevel, Digits, Metaspace, "
                  "WhitespaceSplit, Punctuation or a Sequence of them)", p, where, t);
}

qat_status hf_load_pretokenizer(qat_hf *h, const cJSON *root) {
  const cJSON *pt = hf_get(root, "pre_tokenizer");
  return hf_unset(pt) ? QAT_OK : add_pretok(h, pt, "pre_tokenizer");
}

/* ---- loading: decoder ------------------------------------------------------------------------- */

static qat_status new_dec(qat_hf *h, const char *where, int kind, hf_dec **out) {
  if (h->ndec == (int)(sizeof h->dec_steps / sizeof h->dec_steps[0]))
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s: too many decoder steps", h->path, where);
  *out = &h->dec_steps[h->ndec++];
  memset(*out, 0, sizeof **out);
  (*out)->kind = kind;
  return QAT_OK;
}

static qat_status add_dec(qat_hf *h, const cJSON *d, const char *where, int *fused) {
  const char *p = h->path, *t = hf_type(d);
  hf_dec *st = NULL;
  char w[128];
  if (!strcmp(t, "Sequence")) {
    const cJSON *list = hf_get(d, "decoders");
    if (!cJSON_IsArray(list))
      return QAT_FAIL(QAT_EFORMAT, "%s: %s.decoders is not an array", p, where);
    int i = 0;
    for (const cJSON *s = list->child; s; s = s->next, i++) {
      snprintf(w, sizeof w, "%s.decoders[%d]", where, i);
      QAT_TRY(add_dec(h, s, w, fused));
    }
    return QAT_OK;
  }
  if (!strcmp(t, "ByteLevel")) return new_dec(h, where, HF_DEC_BYTELEVEL, &st);
  if (!strcmp(t, "ByteFallback")) return new_dec(h, where, HF_DEC_BYTEFALLBACK, &st);
  if (!strcmp(t, "Fuse")) {
    *fused = 1;
    return QAT_OK;
  }
  if (!strcmp(t, "Replace")) {
    const cJSON *lit = hf_get(hf_get(d, "pattern"), "String");
    snprintf(w, sizeof w, "%s.pattern", where);
    if (!cJSON_IsString(lit) || !lit->valuestring[0])
      return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s: only a non-empty \"String\" is supported", p, w);
    QAT_TRY(new_dec(h, where, HF_DEC_REPLACE, &st));
    QAT_TRY(dup_str(p, w, lit, &st->a, &st->na));
    snprintf(w, sizeof w, "%s.content", where);
    return dup_str(p, w, hf_get(d, "content"), &st->b, &st->nb);
  }
  if (!strcmp(t, "Metaspace")) { /* ▁ -> " ", and the first token loses one leading space */
    char repl[8];
    int nrepl, scheme;
    QAT_TRY(replacement(p, d, where, repl, &nrepl));
    QAT_TRY(prepend_scheme(p, d, where, &scheme));
    QAT_TRY(new_dec(h, where, HF_DEC_REPLACE, &st));
    st->a = strdup(repl);
    st->b = strdup(" ");
    if (!st->a || !st->b) return QAT_FAIL(QAT_ENOMEM, "%s: %s", p, where);
    st->na = (size_t)nrepl, st->nb = 1;
    if (scheme != HF_PREPEND_NEVER) h->strip_first = 1;
    return QAT_OK;
  }
  if (!strcmp(t, "Strip")) { /* strips per token: after a Fuse, the text's start only */
    const cJSON *c = hf_get(d, "content"), *start = hf_get(d, "start"), *stop = hf_get(d, "stop");
    int32_t a = 0, b = 0;
    if (!cJSON_IsString(c) || strcmp(c->valuestring, " ") != 0 || !hf_json_id(start, &a) ||
        !hf_json_id(stop, &b) || b != 0 || a > 64)
      return QAT_FAIL(QAT_EUNSUPPORTED, "%s: %s: only content \" \", start <= 64 and stop 0 are "
                      "supported", p, where);
    if (*fused)
      h->strip_first = a;
    else
      h->strip_each = a;
    return QAT_OK;
  }
  return QAT_FAIL(QAT_EUNSUPPORTED,
                  "%s: %s.type \"%s\" is not supported (ByteLevel, Metaspace, Replace, "
                  "ByteFallback, Fuse, Strip or a Sequence of them)", p, where, t);
}

qat_status hf_load_decoder(qat_hf *h, const cJSON *root) {
  const cJSON *d = hf_get(root, "decoder");
  int fused = 0;
  if (!hf_unset(d)) return add_dec(h, d, "decoder", &fused);
  /* no decoder: a byte-level file still decodes its tokens through the byte alphabet */
  for (int i = 0; i < h->nstages; i++)
    if (h->stages[i].kind == HF_BYTELEVEL) {
      hf_dec *st = NULL;
      return new_dec(h, "decoder", HF_DEC_BYTELEVEL, &st);
    }
  return QAT_OK;
}

void hf_free_steps(qat_hf *h) {
  for (int i = 0; i < h->nnorm; i++) {
    free(h->norm_steps[i].a);
    free(h->norm_steps[i].b);
    pcre2_code_free(h->norm_steps[i].re);
  }
  for (int i = 0; i < h->nstages; i++) pcre2_code_free(h->stages[i].re);
  for (int i = 0; i < h->ndec; i++) {
    free(h->dec_steps[i].a);
    free(h->dec_steps[i].b);
  }
  h->nnorm = h->nstages = h->ndec = 0;
}

/* ---- normalizing ------------------------------------------------------------------------------ */

/* A growable output string. */
typedef struct {
  char *s;
  size_t n, cap;
} sbuf;

static qat_status put(sbuf *o, const char *s, size_t n) {
  QAT_TRY(hf_grow((void **)&o->s, &o->cap, o->n + n + 1, 1));
  memcpy(o->s + o->n, s, n);
  o->n += n;
  return QAT_OK;
}

/* Replace: every match of the pattern by the content; an empty regex match inserts the content
 * and moves one character on (Oniguruma's find_iter yields it as a match). */
static qat_status replace(const qat_hf *h, const hf_norm *st, const char *s, size_t n, sbuf *o) {
  hf_encoder e = {.h = h};
  qat_status r = QAT_OK;
  if (st->re && !(e.md = pcre2_match_data_create(1, NULL)))
    return QAT_FAIL(QAT_ENOMEM, "%s: regex match data", h->path);
  size_t gap = 0, at = 0;
  while (at <= n && r == QAT_OK) {
    size_t a, b;
    if (st->re) {
      r = hf_next_match(&e, st->re, s, n, at, &a, &b);
      if (r != QAT_OK || a == SIZE_MAX) break;
    } else {
      const char *f = n - at >= st->na ? memmem(s + at, n - at, st->a, st->na) : NULL;
      if (!f) break;
      a = (size_t)(f - s), b = a + st->na;
    }
    if ((r = put(o, s + gap, a - gap)) != QAT_OK || (r = put(o, st->b, st->nb)) != QAT_OK) break;
    gap = b;
    if (a == b) {
      if (a == n) break;
      int ok;
      size_t k = hf_utf8_step((const unsigned char *)s + a, n - a, &ok);
      if ((r = put(o, s + a, k)) != QAT_OK) break;
      gap = at = a + k;
    } else {
      at = b;
    }
  }
  if (r == QAT_OK) r = put(o, s + gap, n - gap);
  pcre2_match_data_free(e.md);
  pcre2_match_context_free(e.mctx);
  pcre2_jit_stack_free(e.jit);
  return r;
}

qat_status hf_normalize(const qat_hf *h, const char *s, size_t n, char **out, size_t *out_n) {
  sbuf cur = {0};
  qat_status r = put(&cur, s, n);
  for (int i = 0; i < h->nnorm && r == QAT_OK; i++) {
    const hf_norm *st = &h->norm_steps[i];
    sbuf next = {0};
    if (st->kind == HF_NFC) {
      if (hf_is_ascii(cur.s, cur.n)) continue;
      char *d;
      size_t m;
      if ((r = hf_nfc(h->path, cur.s, cur.n, &d, &m)) != QAT_OK) break;
      r = put(&next, d, m);
      free(d);
    } else if (st->kind == HF_PREPEND) {
      if (cur.n == 0) continue; /* tokenizers prepends to a non-empty string only */
      r = put(&next, st->a, st->na);
      if (r == QAT_OK) r = put(&next, cur.s, cur.n);
    } else {
      r = replace(h, st, cur.s, cur.n, &next);
    }
    free(cur.s);
    cur = next;
  }
  if (r != QAT_OK) {
    free(cur.s);
    return r;
  }
  if (!cur.s) r = put(&cur, "", 0);
  *out = cur.s;
  *out_n = cur.n;
  return r;
}

/* ---- pre-tokenizing --------------------------------------------------------------------------- */

/* A piece stage made, on to what follows: the next step, or for ByteLevel the byte alphabet
 * (raw bytes to BPE when ByteLevel is the last step, else mapped characters to the next step). */
static qat_status hand_on(hf_encoder *e, int stage, const char *s, size_t n, int first) {
  const qat_hf *h = e->h;
  if (n == 0) return QAT_OK;
  if (h->stages[stage].kind != HF_BYTELEVEL) return hf_pretokenize(e, stage + 1, s, n, first);
  if (stage + 1 == h->nstages) return hf_bpe(e, s, n, 1);
  QAT_TRY(hf_grow((void **)&e->buf[2 * stage + 1], &e->cap[2 * stage + 1], 2 * n, 1));
  char *d = e->buf[2 * stage + 1];
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char b = (unsigned char)s[i];
    memcpy(d + m, h->byte_u8[b], h->byte_u8n[b]);
    m += h->byte_u8n[b];
  }
  return hf_pretokenize(e, stage + 1, d, m, first);
}

typedef struct {
  size_t a, b;
  int match, has;
} segment;

/* NormalizedString::split: the matches of re and the gaps between them are segments; behavior
 * folds them into pieces (tokenizer/normalizer.rs), each handed on. Empty matches make no
 * segment. */
static qat_status split(hf_encoder *e, int stage, const pcre2_code *re, int behavior, int invert,
                        const char *s, size_t n, int first) {
  segment pend = {0};
#define EMIT(x) QAT_TRY(hand_on(e, stage, s + (x).a, (x).b - (x).a, first && (x).a == 0))
  size_t gap = 0, at = 0;
  for (int done = 0; !done;) {
    size_t a = SIZE_MAX, b = 0;
    while (at < n) {
      QAT_TRY(hf_next_match(e, re, s, n, at, &a, &b));
      if (a == SIZE_MAX || a != b) break;
      int ok; /* an empty match is no piece: look again one character on */
      at = a + (a < n ? hf_utf8_step((const unsigned char *)s + a, n - a, &ok) : 1);
      a = SIZE_MAX;
    }
    if (behavior == HF_ISOLATED) { /* the usual case (GPT-2 / Llama-3 / Qwen2 patterns), direct */
      size_t end = a == SIZE_MAX ? n : a;
      if (gap < end) QAT_TRY(hand_on(e, stage, s + gap, end - gap, first && gap == 0));
      if (a == SIZE_MAX) break;
      QAT_TRY(hand_on(e, stage, s + a, b - a, first && a == 0));
      gap = at = b;
      continue;
    }
    segment segs[2];
    int ns = 0;
    if (a == SIZE_MAX) {
      if (gap < n) segs[ns++] = (segment){gap, n, 0, 1};
      done = 1;
    } else {
      if (gap < a) segs[ns++] = (segment){gap, a, 0, 1};
      segs[ns++] = (segment){a, b, 1, 1};
      gap = at = b;
    }
    for (int k = 0; k < ns; k++) {
      segment g = segs[k];
      g.match ^= invert;
      switch (behavior) {
      case HF_ISOLATED:
        EMIT(g);
        break;
      case HF_REMOVED:
        if (!g.match) EMIT(g);
        break;
      case HF_CONTIGUOUS: /* runs of the same kind become one piece */
        if (pend.has && pend.match == g.match) {
          pend.b = g.b;
        } else {
          if (pend.has) EMIT(pend);
          pend = g;
        }
        break;
      case HF_MERGED_PREV: /* a match joins the non-match before it */
        if (g.match && pend.has && !pend.match) {
          pend.b = g.b;
          pend.match = 1;
        } else {
          if (pend.has) EMIT(pend);
          pend = g;
        }
        break;
      default: /* HF_MERGED_NEXT: a match joins the non-match after it */
        if (pend.has && pend.match && !g.match) {
          pend.b = g.b;
          EMIT(pend);
          pend.has = 0;
        } else {
          if (pend.has) EMIT(pend);
          pend = g;
        }
      }
    }
  }
  if (pend.has) EMIT(pend);
#undef EMIT
  return QAT_OK;
}

/* Metaspace: spaces become the replacement, which is prepended per the scheme unless the piece
 * already starts with it; then split (MergedWithNext on the replacement) or not. */
static qat_status metaspace(hf_encoder *e, int stage, const char *s, size_t n, int first) {
  const hf_stage *st = &e->h->stages[stage];
  size_t r = (size_t)st->nrepl, spaces = 0;
  for (size_t i = 0; i < n; i++) spaces += s[i] == ' ';
  QAT_TRY(hf_grow((void **)&e->buf[2 * stage], &e->cap[2 * stage], n + spaces * r + r, 1));
  char *d = e->buf[2 * stage];
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == ' ') {
      memcpy(d + m, st->repl, r);
      m += r;
    } else {
      d[m++] = s[i];
    }
  }
  int starts = m >= r && !memcmp(d, st->repl, r);
  if (!starts && (st->scheme == HF_PREPEND_ALWAYS || (st->scheme == HF_PREPEND_FIRST && first))) {
    memmove(d + r, d, m);
    memcpy(d, st->repl, r);
    m += r;
  }
  if (!st->re) return hand_on(e, stage, d, m, first);
  return split(e, stage, st->re, HF_MERGED_NEXT, 0, d, m, first);
}

qat_status hf_pretokenize(hf_encoder *e, int stage, const char *s, size_t n, int first) {
  const qat_hf *h = e->h;
  if (n == 0) return QAT_OK;
  if (stage == h->nstages) return hf_bpe(e, s, n, 0);
  const hf_stage *st = &h->stages[stage];
  if (st->kind == HF_METASPACE) return metaspace(e, stage, s, n, first);
  if (st->kind == HF_BYTELEVEL) {
    if (st->prefix_space && s[0] != ' ') { /* tokenizers prepends to every piece it is given */
      QAT_TRY(hf_grow((void **)&e->buf[2 * stage], &e->cap[2 * stage], n + 1, 1));
      char *d = e->buf[2 * stage];
      d[0] = ' ';
      memcpy(d + 1, s, n);
      s = d, n++;
    }
    if (!st->re) return hand_on(e, stage, s, n, first);
  }
  return split(e, stage, st->re, st->behavior, st->invert, s, n, first);
}
