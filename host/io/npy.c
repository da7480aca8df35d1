/* NumPy .npy token shards (REFERENCE.md section 6): the on-disk form of tokenized text that the
 * data loader windows over. Reading accepts 1-D little-endian u2/u4/i4/i8 (format v1.0 and
 * v2.0) and validates everything a hand-edited or truncated file could get wrong; writing emits
 * <u2 when the vocabulary fits (half the bytes) else <u4, atomically, so a killed `qat tokenize`
 * never leaves a shard that looks complete. */
#include "io/npy.h"
#include "io/fsutil.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c assumes a little-endian host"
#endif

static const char k_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

/* ---- header dict parsing: a tiny reader for the Python literal numpy writes ---------------- */

typedef struct {
  const char *p, *end;
} cursor;

static void skip_ws(cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}

static int eat(cursor *c, char ch) {
  skip_ws(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return 1;
  }
  return 0;
}

/* A quoted string ('...' or "..."), no escapes (numpy never writes any in these fields). */
static int parse_str(cursor *c, char *out, size_t n) {
  skip_ws(c);
  if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return 0;
  char q = *c->p++;
  size_t k = 0;
  while (c->p < c->end && *c->p != q) {
    if (k + 1 >= n) return 0;
    out[k++] = *c->p++;
  }
  if (c->p >= c->end) return 0;
  c->p++;
  out[k] = 0;
  return 1;
}

static int parse_word(cursor *c, const char *w) {
  skip_ws(c);
  size_t n = strlen(w);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0) return 0;
  c->p += n;
  return 1;
}

/* A shape tuple; returns the number of dimensions (-1 on a syntax error), first dim in *d0. */
static int parse_shape(cursor *c, int64_t *d0) {
  if (!eat(c, '(')) return -1;
  int ndim = 0;
  for (;;) {
    if (eat(c, ')')) return ndim;
    skip_ws(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9') return -1;
    int64_t v = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
      if (v > (INT64_MAX - 9) / 10) return -1;
      v = v * 10 + (*c->p++ - '0');
    }
    if (ndim == 0) *d0 = v;
    ndim++;
    if (eat(c, ',')) continue;
    if (eat(c, ')')) return ndim;
    return -1;
  }
}

typedef struct {
  char descr[16];
  int fortran; /* -1 = absent */
  int ndim;    /* -1 = absent */
  int64_t n;
} npy_header;

static qat_status parse_header(const char *path, const char *h, size_t len, npy_header *out) {
  cursor c = {h, h + len};
  out->descr[0] = 0;
  out->fortran = -1;
  out->ndim = -1;
  out->n = 0;
  if (!eat(&c, '{')) return QAT_FAIL(QAT_EFORMAT, "%s: npy header is not a dict", path);
  for (;;) {
    if (eat(&c, '}')) break;
    char key[32];
    if (!parse_str(&c, key, sizeof key) || !eat(&c, ':'))
      return QAT_FAIL(QAT_EFORMAT, "%s: npy header dict: bad key", path);
    if (!strcmp(key, "descr")) {
      if (!parse_str(&c, out->descr, sizeof out->descr))
        return QAT_FAIL(QAT_EFORMAT, "%s: npy header: bad 'descr' value", path);
    } else if (!strcmp(key, "fortran_order")) {
      if (parse_word(&c, "False"))
        out->fortran = 0;
      else if (parse_word(&c, "True"))
        out->fortran = 1;
      else
        return QAT_FAIL(QAT_EFORMAT, "%s: npy header: bad 'fortran_order' value", path);
    } else if (!strcmp(key, "shape")) {
      out->ndim = parse_shape(&c, &out->n);
      if (out->ndim < 0) return QAT_FAIL(QAT_EFORMAT, "%s: npy header: bad 'shape' value", path);
    } else {
      return QAT_FAIL(QAT_EFORMAT, "%s: npy header: unexpected key '%s'", path, key);
    }
    if (eat(&c, ',')) continue;
    if (eat(&c, '}')) break;
    return QAT_FAIL(QAT_EFORMAT, "%s: npy header dict: expected ',' or '}'", path);
  }
  skip_ws(&c);
  if (c.p != c.end) return QAT_FAIL(QAT_EFORMAT, "%s: npy header: trailing bytes after dict", path);
  if (!out->descr[0] || out->fortran < 0 || out->ndim < 0)
    return QAT_FAIL(QAT_EFORMAT, "%s: npy header lacks 'descr', 'fortran_order' or 'shape'", path);
  if (out->fortran)
    return QAT_FAIL(QAT_EFORMAT, "%s: npy fortran_order True (token shards are 1-D C order)", path);
  if (out->ndim != 1)
    return QAT_FAIL(QAT_EFORMAT, "%s: npy shape has %d dimensions, token shards are 1-D", path,
                    out->ndim);
  return QAT_OK;
}

/* ---- read ------------------------------------------------------------------------------------- */

qat_status qat_npy_read_tokens(const char *path, int32_t **tokens, int64_t *n) {
  *tokens = NULL;
  *n = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return QAT_FAIL(QAT_EIO, "%s: cannot open: %s", path, strerror(errno));
  qat_status st = QAT_OK;
  char *hdr = NULL;
  void *raw = NULL;
  int32_t *out = NULL;
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0) {
    st = QAT_FAIL(QAT_EIO, "%s: stat: %s", path, strerror(errno));
    goto done;
  }
  unsigned char pre[12];
  if (fread(pre, 1, 8, f) != 8 || memcmp(pre, k_magic, 6) != 0) {
    st = QAT_FAIL(QAT_EFORMAT, "%s: not a .npy file (bad magic)", path);
    goto done;
  }
  int major = pre[6];
  uint64_t hlen, hstart;
  if (major == 1) {
    if (fread(pre + 8, 1, 2, f) != 2) goto truncated;
    hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
    hstart = 10;
  } else if (major == 2) {
    if (fread(pre + 8, 1, 4, f) != 4) goto truncated;
    hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8 | (uint64_t)pre[10] << 16 |
           (uint64_t)pre[11] << 24;
    hstart = 12;
  } else {
    st = QAT_FAIL(QAT_EFORMAT, "%s: unsupported npy version %d.%d", path, major, pre[7]);
    goto done;
  }
  if (hstart + hlen > (uint64_t)sb.st_size) goto truncated;
  hdr = malloc(hlen + 1);
  if (!hdr) {
    st = QAT_FAIL(QAT_ENOMEM, "%s: npy header of %llu bytes", path, (unsigned long long)hlen);
    goto done;
  }
  if (fread(hdr, 1, hlen, f) != hlen) goto truncated;
  hdr[hlen] = 0;
  npy_header h;
  QAT_CHECK(st, parse_header(path, hdr, hlen, &h), done);

  int isz, is_signed;
  if (!strcmp(h.descr, "<u2"))
    isz = 2, is_signed = 0;
  else if (!strcmp(h.descr, "<u4"))
    isz = 4, is_signed = 0;
  else if (!strcmp(h.descr, "<i4"))
    isz = 4, is_signed = 1;
  else if (!strcmp(h.descr, "<i8"))
    isz = 8, is_signed = 1;
  else {
    st = QAT_FAIL(QAT_EFORMAT, "%s: npy dtype '%s' is not a token dtype (<u2, <u4, <i4, <i8)",
                  path, h.descr);
    goto done;
  }
  uint64_t avail = (uint64_t)sb.st_size - hstart - hlen;
  if ((uint64_t)h.n > avail / (uint64_t)isz || (uint64_t)h.n * isz != avail) {
    st = QAT_FAIL(QAT_EFORMAT, "%s: npy shape (%lld,) of %s needs %llu data bytes, file has %llu",
                  path, (long long)h.n, h.descr,
                  (unsigned long long)h.n * (unsigned long long)isz, (unsigned long long)avail);
    goto done;
  }
  out = malloc((size_t)(h.n ? h.n : 1) * sizeof *out);
  raw = malloc((size_t)(h.n ? h.n : 1) * (size_t)isz);
  if (!out || !raw) {
    st = QAT_FAIL(QAT_ENOMEM, "%s: %lld tokens", path, (long long)h.n);
    goto done;
  }
  if (fread(raw, (size_t)isz, (size_t)h.n, f) != (size_t)h.n) goto truncated;
  for (int64_t i = 0; i < h.n; i++) {
    int64_t v;
    if (isz == 2) {
      uint16_t x;
      memcpy(&x, (char *)raw + 2 * i, 2);
      v = x;
    } else if (isz == 4 && !is_signed) {
      uint32_t x;
      memcpy(&x, (char *)raw + 4 * i, 4);
      v = x;
    } else if (isz == 4) {
      int32_t x;
      memcpy(&x, (char *)raw + 4 * i, 4);
      v = x;
    } else {
      memcpy(&v, (char *)raw + 8 * i, 8);
    }
    if (v < 0 || v > INT32_MAX) {
      st = QAT_FAIL(QAT_EFORMAT, "%s: token %lld has value %lld (must be in [0, %d])", path,
                    (long long)i, (long long)v, INT32_MAX);
      goto done;
    }
    out[i] = (int32_t)v;
  }
  *tokens = out;
  *n = h.n;
  out = NULL;
  goto done;
truncated:
  st = QAT_FAIL(QAT_EFORMAT, "%s: npy file truncated", path);
done:
  free(out);
  free(raw);
  free(hdr);
  fclose(f);
  return st;
}

/* ---- write ------------------------------------------------------------------------------------ */

qat_status qat_npy_write_tokens(const char *path, const int32_t *tokens, int64_t n, int64_t vocab) {
  if (n < 0 || vocab <= 0)
    return QAT_FAIL(QAT_EINVAL, "%s: npy write: n %lld, vocab %lld", path, (long long)n,
                    (long long)vocab);
  const int isz = vocab <= 65536 ? 2 : 4;
  for (int64_t i = 0; i < n; i++)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      return QAT_FAIL(QAT_EINVAL, "%s: token %lld = %d outside the vocabulary [0, %lld)", path,
                      (long long)i, tokens[i], (long long)vocab);

  /* Header: magic, v1.0, dict padded with spaces and a final '\n' so data starts 64-aligned. */
  char dict[160];
  int dl = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%lld,), }",
                    isz == 2 ? "<u2" : "<u4", (long long)n);
  int total = 10 + dl + 1;
  int pad = (64 - total % 64) % 64;
  int hlen = dl + pad + 1;
  char hdr[256];
  memcpy(hdr, k_magic, 6);
  hdr[6] = 1;
  hdr[7] = 0;
  hdr[8] = (char)(hlen & 0xff);
  hdr[9] = (char)(hlen >> 8);
  memcpy(hdr + 10, dict, (size_t)dl);
  memset(hdr + 10 + dl, ' ', (size_t)pad);
  hdr[10 + hlen - 1] = '\n';

  qat_atomic_file f;
  QAT_TRY(qat_atomic_open(&f, path));
  QAT_TRY(qat_atomic_write(&f, hdr, (size_t)(10 + hlen)));
  /* Narrow in chunks: the output never needs a second full-size copy of the tokens. */
  enum { CHUNK = 1 << 13 };
  unsigned char buf[CHUNK * 4];
  for (int64_t i = 0; i < n; i += CHUNK) {
    int64_t m = n - i < CHUNK ? n - i : CHUNK;
    for (int64_t k = 0; k < m; k++) {
      uint32_t v = (uint32_t)tokens[i + k];
      if (isz == 2) {
        uint16_t x = (uint16_t)v;
        memcpy(buf + 2 * k, &x, 2);
      } else {
        memcpy(buf + 4 * k, &v, 4);
      }
    }
    QAT_TRY(qat_atomic_write(&f, buf, (size_t)m * (size_t)isz)); /* a failed write has aborted */
  }
  return qat_atomic_commit(&f);
}
