/* Tokenizers behind one handle (tokenizer.h): llama2.c tokenizer.bin (tokenizer_bpe.c), a
 * SentencePiece tokenizer.model (spm_shim.cc) or a Hugging Face tokenizer.json (BPE,
 * tokenizer_hf*.c), told apart by content; streaming piece decoding
 * for generation; and the document splitting that turns a text file into training / held-out
 * token streams (REFERENCE.md section 5). */
#include "io/tokenizer.h"
#include "io/fsutil.h"
#include "io/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

enum { KIND_BIN = 1, KIND_SPM = 2, KIND_HF = 3 };

struct qat_tokenizer {
  int kind;
  int vocab, bos, eos;
  int doc_eos; /* appended to each document by qat_tokenize_docs; -1 = none */
  qat_bpe *bpe;
  qat_spm *spm;
  qat_hf *hf;
  char *piece; /* qat_tokenizer_piece's result buffer */
  size_t piece_cap;
};

qat_status qat_ivec_reserve(qat_ivec *a, int64_t extra) {
  if (a->n + extra <= a->cap) return QAT_OK;
  int64_t cap = a->cap ? a->cap : 1024;
  while (cap < a->n + extra) cap *= 2;
  int32_t *v = realloc(a->v, (size_t)cap * sizeof *v);
  if (!v) return QAT_FAIL(QAT_ENOMEM, "token buffer of %lld", (long long)cap);
  a->v = v;
  a->cap = cap;
  return QAT_OK;
}

qat_status qat_ivec_push(qat_ivec *a, int32_t x) {
  QAT_TRY(qat_ivec_reserve(a, 1));
  a->v[a->n++] = x;
  return QAT_OK;
}

/* ---- loading ---------------------------------------------------------------------------------- */

/* A JSON object: '{' after an optional UTF-8 BOM and whitespace, and text (no control bytes but
 * whitespace) in the first 256 bytes, which a SentencePiece proto's scores and tags are not. */
static int looks_like_json(const unsigned char *u, size_t size) {
  size_t i = size >= 3 && u[0] == 0xEF && u[1] == 0xBB && u[2] == 0xBF ? 3 : 0;
  while (i < size && (u[i] == ' ' || u[i] == '\t' || u[i] == '\r' || u[i] == '\n')) i++;
  if (i == size || u[i] != '{') return 0;
  for (size_t k = 0; k < size && k < 256; k++)
    if (u[k] < 0x20 && u[k] != '\t' && u[k] != '\r' && u[k] != '\n') return 0;
  return 1;
}

static qat_status load_hf(qat_tokenizer *t, const char *path, const char *data, size_t size,
                          int vocab_hint) {
  t->kind = KIND_HF;
  if (size >= 3 && !memcmp(data, "\xEF\xBB\xBF", 3)) data += 3, size -= 3; /* cJSON: no BOM */
  QAT_TRY(qat_hf_load(path, data, size, &t->hf));
  t->vocab = qat_hf_vocab(t->hf);
  t->bos = qat_hf_bos(t->hf);
  t->eos = qat_hf_eos(t->hf);
  t->doc_eos = qat_hf_eos_add(t->hf);
  /* A model's embedding may have padding rows (Qwen2: 151936 for 151646 tokens): every id must
   * fit, not the sizes agree. */
  if (vocab_hint > 0 && t->vocab > vocab_hint)
    return QAT_FAIL(QAT_EINVAL, "%s: tokenizer ids reach %d, more than the vocab of %d", path,
                    t->vocab, vocab_hint);
  return QAT_OK;
}

qat_status qat_tokenizer_load(const char *path, int vocab_hint, qat_tokenizer **out) {
  *out = NULL;
  char *data;
  size_t size;
  QAT_TRY(qat_read_file(path, &data, &size));
  const unsigned char *u = (const unsigned char *)data;
  qat_tokenizer *t = calloc(1, sizeof *t);
  if (!t) {
    free(data);
    return QAT_FAIL(QAT_ENOMEM, "%s: tokenizer", path);
  }
  qat_status st;
  t->doc_eos = -1;
  /* tokenizer.bin starts with a small positive int32 (max_token_length); a ModelProto starts
   * with tag 0x0A (field 1, length-delimited) followed by a non-zero length and another tag, so
   * its first int32 read little-endian is at least 0x0A0A0A >= 2^16: the two never collide. */
  int32_t first = size >= 4 ? (int32_t)(u[0] | u[1] << 8 | u[2] << 16 | (uint32_t)u[3] << 24) : 0;
  if (size >= 4 && first > 0 && first <= (1 << 16)) {
    t->kind = KIND_BIN;
    QAT_CHECK(st, qat_bpe_load(path, u, size, vocab_hint, &t->bpe), fail);
    t->vocab = qat_bpe_vocab(t->bpe);
    if (t->vocab < 3) { /* ids 1 and 2 are BOS and EOS (found by fuzz_tokenizer_bin) */
      st = QAT_FAIL(QAT_EFORMAT, "%s: %d token%s: a llama2.c tokenizer.bin starts with <unk>, "
                    "<s>, </s> (at least 3)", path, t->vocab, t->vocab == 1 ? "" : "s");
      goto fail;
    }
    t->bos = 1;
    t->eos = 2;
  } else if (looks_like_json(u, size)) {
    QAT_CHECK(st, load_hf(t, path, data, size, vocab_hint), fail);
  } else if (size >= 2 && u[0] == 0x0A) {
    t->kind = KIND_SPM;
    QAT_CHECK(st, qat_spm_load(path, data, size, &t->spm), fail);
    t->vocab = qat_spm_vocab(t->spm);
    t->bos = qat_spm_bos(t->spm);
    t->eos = qat_spm_eos(t->spm);
    if (vocab_hint > 0 && vocab_hint != t->vocab) {
      st = QAT_FAIL(QAT_EINVAL, "%s: SentencePiece model has %d pieces, expected %d", path,
                    t->vocab, vocab_hint);
      goto fail;
    }
  } else {
    st = QAT_FAIL(QAT_EFORMAT,
                  "%s: neither a llama2.c tokenizer.bin, a SentencePiece model nor a "
                  "tokenizer.json", path);
    goto fail;
  }
  free(data);
  *out = t;
  return QAT_OK;
fail:
  free(data);
  qat_tokenizer_free(t);
  return st;
}

qat_status qat_tokenizer_load_dir(const char *dir, int vocab_hint, qat_tokenizer **out) {
  *out = NULL;
  char p[4096];
  /* Llama-2 folders ship both tokenizer.model and tokenizer.json: the SentencePiece model stays
   * the one read there. */
  static const char *const names[] = {"tokenizer.model", "tokenizer.json", "tokenizer.bin"};
  for (int i = 0; i < 3; i++) {
    QAT_TRY(qat_path_join(p, sizeof p, dir, names[i]));
    if (!qat_path_exists(p)) continue;
    QAT_TRY(qat_tokenizer_load(p, vocab_hint, out));
    qat_tokenizer *t = *out;
    if (t->kind != KIND_HF) return QAT_OK;
    qat_status st = qat_hf_load_folder(t->hf, dir);
    if (st != QAT_OK) {
      qat_tokenizer_free(t);
      *out = NULL;
      return st;
    }
    t->bos = qat_hf_bos(t->hf);
    t->eos = qat_hf_eos(t->hf);
    t->doc_eos = qat_hf_eos_add(t->hf);
    return QAT_OK;
  }
  return QAT_FAIL(QAT_EIO, "%s: no tokenizer.model, tokenizer.json or tokenizer.bin in this folder",
                  dir);
}

void qat_tokenizer_free(qat_tokenizer *t) {
  if (!t) return;
  qat_bpe_free(t->bpe);
  qat_spm_free(t->spm);
  qat_hf_free(t->hf);
  free(t->piece);
  free(t);
}

int qat_tokenizer_vocab(const qat_tokenizer *t) { return t->vocab; }
int qat_tokenizer_bos(const qat_tokenizer *t) { return t->bos; }
int qat_tokenizer_eos(const qat_tokenizer *t) { return t->eos; }
int qat_tokenizer_doc_eos(const qat_tokenizer *t) { return t->doc_eos; }

/* ---- encoding --------------------------------------------------------------------------------- */

static qat_status encode_into(const qat_tokenizer *t, const char *text, size_t len, int bos,
                              qat_ivec *out) {
  if (bos && t->bos >= 0) QAT_TRY(qat_ivec_push(out, t->bos)); /* Qwen2 has no BOS */
  if (t->kind == KIND_BIN) return qat_bpe_encode(t->bpe, text, len, out);
  if (t->kind == KIND_HF) return qat_hf_encode(t->hf, text, len, out);
  return qat_spm_encode(t->spm, text, len, out);
}

qat_status qat_tokenizer_encode(const qat_tokenizer *t, const char *text, size_t len, int bos,
                                int32_t **ids, int64_t *n) {
  *ids = NULL;
  *n = 0;
  qat_ivec v = {0};
  qat_status st = qat_ivec_reserve(&v, 1); /* never hand back NULL on success */
  if (st == QAT_OK) st = encode_into(t, text, len, bos, &v);
  if (st != QAT_OK) {
    free(v.v);
    return st;
  }
  *ids = v.v;
  *n = v.n;
  return QAT_OK;
}

/* ---- decoding one piece ----------------------------------------------------------------------- */

/* Copies s[0..n) into the handle's buffer, NUL-terminated; NULL when out of memory. */
static const char *set_piece(qat_tokenizer *t, const char *s, size_t n) {
  if (t->piece_cap < n + 1) {
    size_t cap = n + 64;
    char *p = realloc(t->piece, cap);
    if (!p) return NULL;
    t->piece = p;
    t->piece_cap = cap;
  }
  memcpy(t->piece, s, n);
  t->piece[n] = 0;
  return t->piece;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* "<0xNN>" -> NN, else -1. */
static int byte_piece(const char *s, size_t n) {
  if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
  int hi = hexval(s[3]), lo = hexval(s[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

const char *qat_tokenizer_piece(qat_tokenizer *t, int prev, int id) {
  if (t->kind == KIND_BIN) {
    /* llama2.c decode(): strip the space after BOS, map byte tokens to their byte. */
    int n;
    const char *s = qat_bpe_str(t->bpe, id, &n);
    if (!s) return "";
    if (prev == t->bos && n > 0 && s[0] == ' ') s++, n--;
    int b = byte_piece(s, (size_t)n);
    char c = (char)b;
    const char *r = b >= 0 ? set_piece(t, &c, 1) : set_piece(t, s, (size_t)n);
    return r ? r : "";
  }
  size_t n;
  if (t->kind == KIND_HF) {
    /* the token's bytes, even when they end inside a UTF-8 character; the decoder's Strip /
     * Metaspace drop leading spaces of the text's first token (after BOS or at the start) */
    const char *s = qat_hf_piece(t->hf, id, &n);
    if (!s) return "";
    int strip = qat_hf_strip(t->hf, prev < 0 || (t->bos >= 0 && prev == t->bos));
    for (; strip > 0 && n > 0 && s[0] == ' '; strip--) s++, n--;
    const char *r = set_piece(t, s, n);
    return r ? r : "";
  }
  int kind;
  const char *s = qat_spm_piece(t->spm, id, &n, &kind);
  if (!s || kind == QAT_SPM_CONTROL) return "";
  if (kind == QAT_SPM_BYTE) {
    int b = byte_piece(s, n);
    char c = (char)(b < 0 ? 0 : b);
    const char *r = set_piece(t, &c, b < 0 ? 0 : 1);
    return r ? r : "";
  }
  /* U+2581 (E2 96 81) stands for a space in SentencePiece pieces. */
  if (!set_piece(t, s, n)) return "";
  char *p = t->piece, *w = p;
  for (size_t i = 0; i < n;) {
    if (i + 2 < n && (unsigned char)p[i] == 0xE2 && (unsigned char)p[i + 1] == 0x96 &&
        (unsigned char)p[i + 2] == 0x81) {
      *w++ = ' ';
      i += 3;
    } else {
      *w++ = p[i++];
    }
  }
  *w = 0;
  if (prev == t->bos && p[0] == ' ') return p + 1;
  return p;
}

/* ---- documents -------------------------------------------------------------------------------- */

static const char k_eot[] = "<|endoftext|>";
enum { EOT_LEN = sizeof k_eot - 1 };

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

typedef struct {
  size_t a, b; /* text[a..b) */
} span;

typedef struct {
  span *v;
  int64_t n, cap;
} spans;

static qat_status add_doc(spans *d, const char *text, size_t a, size_t b) {
  while (a < b && is_space(text[a])) a++;
  while (b > a && is_space(text[b - 1])) b--;
  if (a == b) return QAT_OK;
  if (d->n == d->cap) {
    int64_t cap = d->cap ? 2 * d->cap : 256;
    span *v = realloc(d->v, (size_t)cap * sizeof *v);
    if (!v) return QAT_FAIL(QAT_ENOMEM, "document list of %lld", (long long)cap);
    d->v = v;
    d->cap = cap;
  }
  d->v[d->n++] = (span){a, b};
  return QAT_OK;
}

/* Documents of text[a..b): runs of non-blank lines (a blank line is empty or whitespace-only,
 * so "\r\n\r\n" separates too). */
static qat_status split_blank_lines(spans *d, const char *text, size_t a, size_t b) {
  size_t doc = a, line = a;
  int in_doc = 0;
  while (line < b) {
    const char *nl = memchr(text + line, '\n', b - line);
    size_t end = nl ? (size_t)(nl - text) : b;
    int blank = 1;
    for (size_t i = line; i < end && blank; i++) blank = is_space(text[i]);
    if (blank && in_doc) {
      QAT_TRY(add_doc(d, text, doc, line));
      in_doc = 0;
    } else if (!blank && !in_doc) {
      doc = line;
      in_doc = 1;
    }
    line = nl ? end + 1 : b;
  }
  if (in_doc) QAT_TRY(add_doc(d, text, doc, b));
  return QAT_OK;
}

static qat_status find_docs(const char *text, size_t len, spans *d) {
  size_t a = 0;
  while (a <= len) {
    const char *e = len - a >= EOT_LEN ? memmem(text + a, len - a, k_eot, EOT_LEN) : NULL;
    size_t b = e ? (size_t)(e - text) : len;
    QAT_TRY(split_blank_lines(d, text, a, b));
    if (!e) break;
    a = b + EOT_LEN;
  }
  return QAT_OK;
}

qat_status qat_tokenize_docs(const qat_tokenizer *t, const char *text, size_t len,
                             const char *mode, const char *split, int32_t **ids, int64_t *n,
                             int64_t *ndocs) {
  *ids = NULL;
  *n = 0;
  *ndocs = 0;
  int blank = 0;
  if (!strcmp(mode, "blank-line"))
    blank = 1;
  else if (strcmp(mode, "none") != 0)
    return QAT_FAIL(QAT_EUSAGE, "document mode \"%s\": expected blank-line or none", mode);
  if (strcmp(split, "all") && strcmp(split, "train") && strcmp(split, "heldout"))
    return QAT_FAIL(QAT_EUSAGE, "split \"%s\": expected all, train or heldout", split);

  spans d = {0};
  qat_ivec out = {0};
  char *buf = NULL; /* a document with its CRLFs folded */
  qat_status st;
  if (blank) {
    QAT_CHECK(st, find_docs(text, len, &d), done);
  } else {
    d.v = malloc(sizeof *d.v);
    if (!d.v) {
      st = QAT_FAIL(QAT_ENOMEM, "document list");
      goto done;
    }
    d.v[0] = (span){0, len};
    d.n = 1;
  }
  /* REFERENCE.md section 5: held-out = the last 10% of documents; floor(0.9 n) exactly. */
  int64_t ntrain = d.n * 9 / 10, lo = 0, hi = d.n;
  if (!strcmp(split, "train")) hi = ntrain;
  if (!strcmp(split, "heldout")) lo = ntrain;
  QAT_CHECK(st, qat_ivec_reserve(&out, 1), done);
  for (int64_t k = lo; k < hi; k++) {
    const char *s = text + d.v[k].a;
    size_t m = d.v[k].b - d.v[k].a;
    /* "blank-line" reads a corpus of documents: a CRLF copy tokenizes like the LF original.
     * "none" encodes the text verbatim. */
    if (blank && memchr(s, '\r', m)) {
      char *nb = realloc(buf, m);
      if (!nb) {
        st = QAT_FAIL(QAT_ENOMEM, "document of %zu bytes", m);
        goto done;
      }
      buf = nb;
      size_t w = 0;
      for (size_t i = 0; i < m; i++)
        if (!(s[i] == '\r' && i + 1 < m && s[i + 1] == '\n')) buf[w++] = s[i];
      s = buf;
      m = w;
    }
    QAT_CHECK(st, encode_into(t, s, m, 1, &out), done);
    if (t->doc_eos >= 0) QAT_CHECK(st, qat_ivec_push(&out, t->doc_eos), done);
  }
  *ids = out.v;
  *n = out.n;
  *ndocs = hi - lo;
  out.v = NULL;
done:
  free(out.v);
  free(d.v);
  free(buf);
  return st;
}
