/* GGUF reader: parse and validate a whole file through one read-only mapping (gguf.h).
 *
 * A cursor walks the header, the key-value pairs and the tensor infos; every read is checked
 * against the bytes left (pos <= size always holds, so "n <= size - pos" cannot overflow), and
 * every count is bounded by what the remaining bytes could possibly hold before anything is
 * allocated for it, so a forged count fails at once instead of allocating or looping. */
#include "io/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_NAME 1024 /* bytes of a key or tensor name (llama.cpp: names < 64) */

/* ---- type tables ---- */

static const struct {
  uint32_t code;
  const char *name;
  int block, bytes;
} k_types[] = {
    {0, "F32", 1, 4},        {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},   {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},     {7, "Q5_1", 32, 24},    {8, "Q8_0", 32, 34},   {9, "Q8_1", 32, 40},
    {10, "Q2_K", 256, 84},   {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},  {15, "Q8_K", 256, 292}, {16, "IQ2_XXS", 256, 66},
    {17, "IQ2_XS", 256, 74}, {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},
    {20, "IQ4_NL", 32, 18},  {21, "IQ3_S", 256, 110}, {22, "IQ2_S", 256, 82},
    {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},      {25, "I16", 1, 2},     {26, "I32", 1, 4},
    {27, "I64", 1, 8},       {28, "F64", 1, 8},      {29, "IQ1_M", 256, 56}, {30, "BF16", 1, 2},
    {34, "TQ1_0", 256, 54},  {35, "TQ2_0", 256, 66}, {39, "MXFP4", 32, 17},
};
#define NTYPES (int)(sizeof k_types / sizeof k_types[0])

static int type_index(uint32_t t) {
  for (int i = 0; i < NTYPES; i++)
    if (k_types[i].code == t) return i;
  return -1;
}

const char *qat_ggml_type_name(uint32_t t) {
  static _Thread_local char buf[24];
  int i = type_index(t);
  if (i >= 0) return k_types[i].name;
  snprintf(buf, sizeof buf, "type %u", t);
  return buf;
}
int qat_ggml_type_block(uint32_t t) {
  int i = type_index(t);
  return i < 0 ? 0 : k_types[i].block;
}
int qat_ggml_type_bytes(uint32_t t) {
  int i = type_index(t);
  return i < 0 ? 0 : k_types[i].bytes;
}

static const char *k_vnames[] = {"u8",  "i8",   "u16",    "i16",   "u32", "i32", "f32",
                                  "bool", "string", "array", "u64", "i64", "f64"};
static const int k_vsize[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8}; /* 0: variable */

const char *qat_gguf_vtype_name(uint32_t t) {
  return t < QAT_GGUF_VTYPE_COUNT ? k_vnames[t] : "unknown";
}

/* ---- cursor ---- */

typedef struct cur {
  const char *path;
  const uint8_t *p;
  uint64_t size, pos;
} cur;

static uint64_t le(const uint8_t *b, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--)
    v = v << 8 | b[i];
  return v;
}

/* Printable copy of a name from the file for messages (control bytes -> '?', cut at 60). */
static const char *pname(const char *s, uint64_t len, char *buf, size_t n) {
  size_t k = 0;
  for (uint64_t i = 0; i < len && k + 4 < n; i++) {
    if (k >= 60) {
      memcpy(buf + k, "...", 3);
      k += 3;
      break;
    }
    unsigned char c = (unsigned char)s[i];
    buf[k++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
  }
  buf[k] = 0;
  return buf;
}

const char *qat_gguf_printable(const char *s, char *buf, size_t n) {
  return pname(s, strlen(s), buf, n);
}

static qat_status need(cur *c, uint64_t n, const char *what) {
  if (n > c->size - c->pos)
    return QAT_FAIL(QAT_EFORMAT, "%s: truncated at byte %" PRIu64 " reading %s (%" PRIu64
                    " bytes needed, %" PRIu64 " left)", c->path, c->pos, what, n,
                    c->size - c->pos);
  return QAT_OK;
}

static qat_status rd(cur *c, int n, uint64_t *v, const char *what) {
  QAT_TRY(need(c, (uint64_t)n, what));
  *v = le(c->p + c->pos, n);
  c->pos += (uint64_t)n;
  return QAT_OK;
}

/* A GGUF string: u64 length + bytes; *s points into the mapping. */
static qat_status rd_str(cur *c, const char **s, uint64_t *len, const char *what) {
  QAT_TRY(rd(c, 8, len, what));
  QAT_TRY(need(c, *len, what));
  *s = (const char *)c->p + c->pos;
  c->pos += *len;
  return QAT_OK;
}

/* One value of type t (what names the key, for messages); arrays recurse to depth. */
static qat_status rd_value(cur *c, uint32_t t, qat_gguf_value *v, const char *what, int depth) {
  memset(v, 0, sizeof *v);
  v->type = t;
  if (t >= QAT_GGUF_VTYPE_COUNT)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s: unknown value type %u", c->path, what, t);
  if (t == QAT_GGUF_STRING) return rd_str(c, &v->str, &v->len, what);
  if (t != QAT_GGUF_ARRAY) {
    uint64_t x;
    int n = k_vsize[t];
    QAT_TRY(rd(c, n, &x, what));
    v->u = x;
    switch (t) {
    case QAT_GGUF_I8: v->i = (int8_t)x; break;
    case QAT_GGUF_I16: v->i = (int16_t)x; break;
    case QAT_GGUF_I32: v->i = (int32_t)x; break;
    case QAT_GGUF_I64: v->i = (int64_t)x; break;
    default: v->i = (int64_t)x; break;
    }
    if (t == QAT_GGUF_F32) {
      uint32_t b = (uint32_t)x;
      float fl;
      memcpy(&fl, &b, 4);
      v->f = fl;
    } else if (t == QAT_GGUF_F64) {
      memcpy(&v->f, &x, 8);
    } else if (t == QAT_GGUF_BOOL) {
      if (x > 1)
        return QAT_FAIL(QAT_EFORMAT, "%s: %s: bool value %" PRIu64 " (0 or 1)", c->path, what, x);
    } else if (t == QAT_GGUF_U64) {
      v->f = (double)x;
    } else {
      v->f = (double)v->i;
    }
    return QAT_OK;
  }
  if (depth >= QAT_GGUF_MAX_DEPTH)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s: arrays nested deeper than %d", c->path, what,
                    QAT_GGUF_MAX_DEPTH);
  uint64_t et, n;
  QAT_TRY(rd(c, 4, &et, what));
  if (et >= QAT_GGUF_VTYPE_COUNT)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s: unknown array element type %" PRIu64, c->path, what,
                    et);
  QAT_TRY(rd(c, 8, &n, what));
  v->elem = (uint32_t)et;
  v->count = n;
  v->items = c->p + c->pos;
  /* every item takes at least min bytes: bound the count before looping or allocating */
  uint64_t min = et == QAT_GGUF_STRING ? 8 : et == QAT_GGUF_ARRAY ? 12 : (uint64_t)k_vsize[et];
  if (n > (c->size - c->pos) / min)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s: array count %" PRIu64 " of %s is more than the %" PRIu64
                    " bytes left can hold", c->path, what, n, k_vnames[et], c->size - c->pos);
  uint64_t start = c->pos;
  if (et == QAT_GGUF_STRING) {
    v->str_off = malloc((n ? n : 1) * sizeof *v->str_off);
    if (!v->str_off) return QAT_FAIL(QAT_ENOMEM, "%s: %s: out of memory", c->path, what);
    for (uint64_t k = 0; k < n; k++) {
      const char *s;
      uint64_t len;
      v->str_off[k] = c->pos - start;
      QAT_TRY(rd_str(c, &s, &len, what));
    }
  } else if (et == QAT_GGUF_ARRAY) {
    for (uint64_t k = 0; k < n; k++) {
      qat_gguf_value sub;
      qat_status st = rd_value(c, QAT_GGUF_ARRAY, &sub, what, depth + 1);
      free(sub.str_off);
      QAT_TRY(st);
    }
  } else {
    c->pos += n * min; /* bounded above */
    if (et == QAT_GGUF_BOOL)
      for (uint64_t k = 0; k < n; k++)
        if (v->items[k] > 1)
          return QAT_FAIL(QAT_EFORMAT, "%s: %s: bool item %" PRIu64 " is %u (0 or 1)", c->path,
                          what, k, v->items[k]);
  }
  v->bytes = c->pos - start;
  return QAT_OK;
}

/* ---- uniqueness (sort, so a file of a million names is not quadratic) ---- */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static qat_status check_unique(const char *path, char **names, int64_t n, const char *what) {
  if (n < 2) return QAT_OK;
  char **s = malloc((size_t)n * sizeof *s);
  if (!s) return QAT_FAIL(QAT_ENOMEM, "%s: out of memory", path);
  memcpy(s, names, (size_t)n * sizeof *s);
  qsort(s, (size_t)n, sizeof *s, cmp_str);
  qat_status st = QAT_OK;
  for (int64_t i = 1; i < n; i++)
    if (!strcmp(s[i - 1], s[i])) {
      char nb[128];
      st = QAT_FAIL(QAT_EFORMAT, "%s: duplicate %s \"%s\"", path, what,
                    pname(s[i], strlen(s[i]), nb, sizeof nb));
      break;
    }
  free(s);
  return st;
}

/* ---- open ---- */

void qat_gguf_close(qat_gguf_file *f) {
  if (f->kv)
    for (int64_t i = 0; i < f->n_kv; i++) {
      free(f->kv[i].key);
      free(f->kv[i].v.str_off);
    }
  if (f->tensors)
    for (int64_t i = 0; i < f->n_tensors; i++)
      free(f->tensors[i].name);
  free(f->kv);
  free(f->tensors);
  if (f->map) munmap(f->map, f->map_size);
  free(f->path);
  memset(f, 0, sizeof *f);
}

/* A name (key or tensor): 1..MAX_NAME bytes without NUL, copied. */
static qat_status rd_name(cur *c, char **out, const char *what) {
  const char *s;
  uint64_t len;
  QAT_TRY(rd_str(c, &s, &len, what));
  if (len == 0 || len > MAX_NAME)
    return QAT_FAIL(QAT_EFORMAT, "%s: %s: name length %" PRIu64 " (1 to %d)", c->path, what, len,
                    MAX_NAME);
  for (uint64_t i = 0; i < len; i++) /* names appear in one-line messages */
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
      return QAT_FAIL(QAT_EFORMAT, "%s: %s: name holds control byte 0x%02x", c->path, what,
                      (unsigned char)s[i]);
  *out = strndup(s, len);
  if (!*out) return QAT_FAIL(QAT_ENOMEM, "%s: out of memory", c->path);
  return QAT_OK;
}

static qat_status parse(qat_gguf_file *f, cur *c) {
  uint64_t magic, ver, nt, nkv;
  QAT_TRY(rd(c, 4, &magic, "magic"));
  if (memcmp(c->p, "GGUF", 4) != 0)
    return QAT_FAIL(QAT_EFORMAT, "%s: magic: not a GGUF file (first bytes are not \"GGUF\")",
                    c->path);
  QAT_TRY(rd(c, 4, &ver, "version"));
  if (ver != 2 && ver != 3)
    return QAT_FAIL(QAT_EFORMAT, "%s: version %" PRIu64 " is not supported (2 or 3)%s", c->path,
                    ver, (ver & 0xffff) == 0 ? "; a big-endian file?" : "");
  f->version = (uint32_t)ver;
  QAT_TRY(rd(c, 8, &nt, "tensor_count"));
  QAT_TRY(rd(c, 8, &nkv, "kv_count"));
  /* a kv pair takes >= 8 + 1 + 4 + 1 bytes, a tensor info >= 8 + 1 + 4 + 8 + 4 + 8 */
  if (nkv > (c->size - c->pos) / 14)
    return QAT_FAIL(QAT_EFORMAT, "%s: kv_count %" PRIu64 " is more than the file can hold",
                    c->path, nkv);
  f->kv = calloc(nkv ? nkv : 1, sizeof *f->kv);
  if (!f->kv) return QAT_FAIL(QAT_ENOMEM, "%s: out of memory", c->path);

  char what[160], nb[128];
  f->alignment = QAT_GGUF_DEFAULT_ALIGNMENT;
  for (uint64_t i = 0; i < nkv; i++) {
    qat_gguf_kv *kv = &f->kv[i];
    snprintf(what, sizeof what, "key %" PRIu64, i);
    QAT_TRY(rd_name(c, &kv->key, what));
    f->n_kv = (int64_t)i + 1;
    snprintf(what, sizeof what, "key \"%s\"", pname(kv->key, strlen(kv->key), nb, sizeof nb));
    uint64_t t;
    QAT_TRY(rd(c, 4, &t, what));
    QAT_TRY(rd_value(c, (uint32_t)(t > UINT32_MAX ? UINT32_MAX : t), &kv->v, what, 0));
    if (!strcmp(kv->key, "general.alignment")) {
      if (kv->v.type != QAT_GGUF_U32)
        return QAT_FAIL(QAT_EFORMAT, "%s: general.alignment is %s (u32 expected)", c->path,
                        k_vnames[kv->v.type]);
      uint64_t a = kv->v.u;
      if (a == 0 || (a & (a - 1)))
        return QAT_FAIL(QAT_EFORMAT, "%s: general.alignment %" PRIu64 " is not a power of two",
                        c->path, a);
      f->alignment = a;
    }
  }
  /* An info takes >= 33 bytes: a count beyond what is left cannot be right, but the infos are
   * still read up to the one that fails, so the message says where the file ends too. */
  uint64_t bound = (c->size - c->pos) / 33, cap = nt > bound ? bound + 1 : nt;
  f->tensors = calloc(cap ? cap : 1, sizeof *f->tensors);
  char **names = malloc((nkv > cap ? nkv : cap ? cap : 1) * sizeof *names);
  if (!f->tensors || !names) {
    free(names);
    return QAT_FAIL(QAT_ENOMEM, "%s: out of memory", c->path);
  }
  for (uint64_t i = 0; i < nkv; i++)
    names[i] = f->kv[i].key;
  qat_status st = check_unique(c->path, names, (int64_t)nkv, "key");
  if (st != QAT_OK) {
    free(names);
    return st;
  }

  for (uint64_t i = 0; i < cap && st == QAT_OK; i++) {
    qat_gguf_tensor *t = &f->tensors[i];
    snprintf(what, sizeof what, "tensor %" PRIu64 " name", i);
    st = rd_name(c, &t->name, what);
    if (st != QAT_OK) break;
    f->n_tensors = (int64_t)i + 1;
    names[i] = t->name;
    snprintf(what, sizeof what, "tensor %" PRIu64 " (%s)", i,
             pname(t->name, strlen(t->name), nb, sizeof nb));
    uint64_t nd, ty, off;
    if ((st = rd(c, 4, &nd, what)) != QAT_OK) break;
    if (nd < 1 || nd > QAT_GGUF_MAX_DIMS) {
      st = QAT_FAIL(QAT_EFORMAT, "%s: %s: n_dims %" PRIu64 " (1 to %d)", c->path, what, nd,
                    QAT_GGUF_MAX_DIMS);
      break;
    }
    t->ndim = (int)nd;
    uint64_t numel = 1;
    for (int d = 0; d < QAT_GGUF_MAX_DIMS; d++)
      t->ne[d] = 1;
    for (int d = 0; d < t->ndim && st == QAT_OK; d++) {
      uint64_t ne;
      if ((st = rd(c, 8, &ne, what)) != QAT_OK) break;
      if (ne > (uint64_t)INT64_MAX || (ne && numel > (uint64_t)INT64_MAX / ne))
        st = QAT_FAIL(QAT_EFORMAT, "%s: %s: dims overflow (ne[%d] = %" PRIu64 ")", c->path, what,
                      d, ne);
      t->ne[d] = (int64_t)ne;
      numel *= ne;
    }
    if (st != QAT_OK) break;
    t->numel = (int64_t)numel;
    if ((st = rd(c, 4, &ty, what)) != QAT_OK) break;
    t->type = (uint32_t)(ty > UINT32_MAX ? UINT32_MAX : ty);
    int bs = qat_ggml_type_block(t->type), tb = qat_ggml_type_bytes(t->type);
    if (!bs) {
      st = QAT_FAIL(QAT_EFORMAT, "%s: %s: unknown tensor type %" PRIu64, c->path, what, ty);
      break;
    }
    if (t->ne[0] % bs) {
      st = QAT_FAIL(QAT_EFORMAT, "%s: %s: ne[0] = %" PRId64 " is not a multiple of %s's block of %d",
                    c->path, what, t->ne[0], k_types[type_index(t->type)].name, bs);
      break;
    }
    /* bytes = ne0 / bs * tb * ne1 * ne2 * ne3, each product checked */
    uint64_t nb64 = (uint64_t)(t->ne[0] / bs) * (uint64_t)tb; /* ne0 < 2^63, tb < 512: fits */
    if ((uint64_t)(t->ne[0] / bs) > UINT64_MAX / (uint64_t)tb) nb64 = UINT64_MAX;
    for (int d = 1; d < QAT_GGUF_MAX_DIMS; d++) {
      uint64_t ne = (uint64_t)t->ne[d];
      if (ne && nb64 > UINT64_MAX / ne) {
        nb64 = UINT64_MAX;
        break;
      }
      nb64 *= ne;
    }
    t->nbytes = nb64;
    if ((st = rd(c, 8, &off, what)) != QAT_OK) break;
    t->offset = off;
    if (off % f->alignment) {
      st = QAT_FAIL(QAT_EFORMAT, "%s: %s: offset %" PRIu64 " is not a multiple of the alignment %"
                    PRIu64, c->path, what, off, f->alignment);
      break;
    }
  }
  if (st == QAT_OK && nt > bound) st = QAT_FAIL(QAT_EFORMAT, "tensor infos overlap the data");
  if (st != QAT_OK && nt > bound)
    st = qat_context(st, "%s: tensor_count %" PRIu64 " is more than the file can hold", c->path, nt);
  if (st == QAT_OK) st = check_unique(c->path, names, (int64_t)nt, "tensor name");
  free(names);
  QAT_TRY(st);

  /* data section: the end of the infos rounded up to the alignment */
  uint64_t pad = (f->alignment - c->pos % f->alignment) % f->alignment;
  f->data_offset = c->pos + pad;
  if (nt && f->data_offset > c->size)
    return QAT_FAIL(QAT_EFORMAT, "%s: truncated: the data section would start at byte %" PRIu64
                    " of %" PRIu64, c->path, f->data_offset, c->size);
  uint64_t avail = f->data_offset <= c->size ? c->size - f->data_offset : 0;
  for (uint64_t i = 0; i < nt; i++) {
    qat_gguf_tensor *t = &f->tensors[i];
    if (t->offset > avail || t->nbytes > avail - t->offset)
      return QAT_FAIL(QAT_EFORMAT, "%s: tensor %" PRIu64 " (%s): data [%" PRIu64 ", +%" PRIu64
                      ") runs past the end of the file (%" PRIu64 " data bytes)", c->path, i,
                      pname(t->name, strlen(t->name), nb, sizeof nb), t->offset, t->nbytes,
                      avail);
    t->data = c->p + f->data_offset + t->offset;
  }
  return QAT_OK;
}

qat_status qat_gguf_open(const char *path, qat_gguf_file *f) {
  memset(f, 0, sizeof *f);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return QAT_FAIL(QAT_EIO, "%s: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int e = errno;
    close(fd);
    return QAT_FAIL(QAT_EIO, "%s: %s", path, strerror(e));
  }
  if (!S_ISREG(sb.st_mode)) {
    close(fd);
    return QAT_FAIL(QAT_EIO, "%s: not a regular file", path);
  }
  f->path = strdup(path);
  if (!f->path) {
    close(fd);
    return QAT_FAIL(QAT_ENOMEM, "out of memory");
  }
  uint64_t size = (uint64_t)sb.st_size;
  if (size > 0) {
    void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      int e = errno;
      close(fd);
      qat_gguf_close(f);
      return QAT_FAIL(QAT_EIO, "%s: mmap: %s", path, strerror(e));
    }
    f->map = m;
    f->map_size = (size_t)size;
  }
  close(fd);
  static const uint8_t empty[1];
  cur c = {path, f->map ? (const uint8_t *)f->map : empty, size, 0};
  qat_status st = parse(f, &c);
  if (st != QAT_OK) qat_gguf_close(f);
  return st;
}

/* ---- lookups ---- */

const qat_gguf_kv *qat_gguf_find(const qat_gguf_file *f, const char *key) {
  for (int64_t i = 0; i < f->n_kv; i++)
    if (!strcmp(f->kv[i].key, key)) return &f->kv[i];
  return NULL;
}

const qat_gguf_tensor *qat_gguf_find_tensor(const qat_gguf_file *f, const char *name) {
  for (int64_t i = 0; i < f->n_tensors; i++)
    if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
  return NULL;
}

static int is_int(uint32_t t) {
  return t <= QAT_GGUF_I32 || t == QAT_GGUF_U64 || t == QAT_GGUF_I64;
}

static qat_status wrong(const qat_gguf_file *f, const char *key, uint32_t t, const char *want) {
  return QAT_FAIL(QAT_EFORMAT, "%s: key \"%s\" is %s (%s expected)", f->path, key,
                  qat_gguf_vtype_name(t), want);
}

qat_status qat_gguf_get_int(const qat_gguf_file *f, const char *key, int64_t *out, int *found) {
  const qat_gguf_kv *kv = qat_gguf_find(f, key);
  *found = kv != NULL;
  if (!kv) return QAT_OK;
  if (!is_int(kv->v.type)) return wrong(f, key, kv->v.type, "an integer");
  if (kv->v.type == QAT_GGUF_U64 && kv->v.u > (uint64_t)INT64_MAX)
    return QAT_FAIL(QAT_EFORMAT, "%s: key \"%s\" = %" PRIu64 " is out of range", f->path, key,
                    kv->v.u);
  *out = kv->v.i;
  return QAT_OK;
}

qat_status qat_gguf_get_float(const qat_gguf_file *f, const char *key, double *out, int *found) {
  const qat_gguf_kv *kv = qat_gguf_find(f, key);
  *found = kv != NULL;
  if (!kv) return QAT_OK;
  if (kv->v.type != QAT_GGUF_F32 && kv->v.type != QAT_GGUF_F64 && !is_int(kv->v.type))
    return wrong(f, key, kv->v.type, "a number");
  *out = kv->v.f;
  return QAT_OK;
}

qat_status qat_gguf_get_bool(const qat_gguf_file *f, const char *key, int *out, int *found) {
  const qat_gguf_kv *kv = qat_gguf_find(f, key);
  *found = kv != NULL;
  if (!kv) return QAT_OK;
  if (kv->v.type != QAT_GGUF_BOOL) return wrong(f, key, kv->v.type, "bool");
  *out = (int)kv->v.u;
  return QAT_OK;
}

qat_status qat_gguf_get_str(const qat_gguf_file *f, const char *key, char **out, int *found) {
  const qat_gguf_kv *kv = qat_gguf_find(f, key);
  *found = kv != NULL;
  if (!kv) return QAT_OK;
  if (kv->v.type != QAT_GGUF_STRING) return wrong(f, key, kv->v.type, "string");
  if (memchr(kv->v.str, 0, kv->v.len))
    return QAT_FAIL(QAT_EFORMAT, "%s: key \"%s\": string holds a NUL byte", f->path, key);
  *out = strndup(kv->v.str, kv->v.len);
  if (!*out) return QAT_FAIL(QAT_ENOMEM, "out of memory");
  return QAT_OK;
}

qat_status qat_gguf_get_array(const qat_gguf_file *f, const char *key, int elem,
                              const qat_gguf_value **arr) {
  const qat_gguf_kv *kv = qat_gguf_find(f, key);
  *arr = NULL;
  if (!kv) return QAT_OK;
  if (kv->v.type != QAT_GGUF_ARRAY) return wrong(f, key, kv->v.type, "array");
  if (elem >= 0 && kv->v.elem != (uint32_t)elem)
    return QAT_FAIL(QAT_EFORMAT, "%s: key \"%s\" is an array of %s (%s expected)", f->path, key,
                    qat_gguf_vtype_name(kv->v.elem), qat_gguf_vtype_name((uint32_t)elem));
  *arr = &kv->v;
  return QAT_OK;
}

void qat_gguf_arr_str(const qat_gguf_value *arr, uint64_t k, const char **s, uint64_t *len) {
  const uint8_t *p = arr->items + arr->str_off[k];
  *len = le(p, 8);
  *s = (const char *)p + 8;
}

static uint64_t arr_raw(const qat_gguf_value *arr, uint64_t k) {
  int n = k_vsize[arr->elem];
  return le(arr->items + k * (uint64_t)n, n);
}

int64_t qat_gguf_arr_i64(const qat_gguf_value *arr, uint64_t k) {
  uint64_t x = arr_raw(arr, k);
  switch (arr->elem) {
  case QAT_GGUF_I8: return (int8_t)x;
  case QAT_GGUF_I16: return (int16_t)x;
  case QAT_GGUF_I32: return (int32_t)x;
  case QAT_GGUF_F32:
  case QAT_GGUF_F64: { /* a float from the file: NaN is 0, out of range saturates */
    double d = qat_gguf_arr_f64(arr, k);
    if (!(d == d)) return 0;
    if (d >= 9.2233720368547748e18) return INT64_MAX;
    if (d <= -9.2233720368547758e18) return INT64_MIN;
    return (int64_t)d;
  }
  default: return (int64_t)x;
  }
}

double qat_gguf_arr_f64(const qat_gguf_value *arr, uint64_t k) {
  uint64_t x = arr_raw(arr, k);
  if (arr->elem == QAT_GGUF_F32) {
    uint32_t b = (uint32_t)x;
    float fl;
    memcpy(&fl, &b, 4);
    return fl;
  }
  if (arr->elem == QAT_GGUF_F64) {
    double d;
    memcpy(&d, &x, 8);
    return d;
  }
  if (arr->elem == QAT_GGUF_U64) return (double)x;
  return (double)qat_gguf_arr_i64(arr, k);
}
