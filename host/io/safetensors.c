/* safetensors: a memory-mapped reader that validates every header field before any tensor is
 * touched, sharded model folders (model.safetensors.index.json), and a streaming atomic writer.
 * A reader error is QAT_EFORMAT (QAT_EUNSUPPORTED for a dtype qat does not know) with one line
 * naming the file, the tensor and the problem; a malformed file never crashes the reader. */
#include "io/safetensors.h"
#include "io/fsutil.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Real headers are a few hundred KB even for 70B models; a larger one is corrupt or hostile. */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
/* JSON numbers arrive as doubles: integers above 2^53 cannot be represented exactly. */
#define ST_MAX_INT ((uint64_t)1 << 53)

/* A tensor name made printable for a one-line message: control bytes become '?', long names are
 * cut. */
static const char *pname(const char *name, char buf[static 160]) {
  size_t i = 0;
  for (; name[i] && i < 150; i++)
    buf[i] = (unsigned char)name[i] < 0x20 ? '?' : name[i];
  if (name[i]) {
    memcpy(buf + i, "...", 3);
    i += 3;
  }
  buf[i] = 0;
  return buf;
}

#define FMT_FAIL(...) QAT_FAIL(QAT_EFORMAT, __VA_ARGS__)

/* A JSON number that is an exact non-negative integer <= 2^53; 0 when it is not. */
static int json_uint(const cJSON *j, uint64_t *out) {
  if (!cJSON_IsNumber(j)) return 0;
  double d = j->valuedouble;
  if (!(d >= 0.0) || d > (double)ST_MAX_INT) return 0; /* also rejects NaN */
  uint64_t u = (uint64_t)d;
  if ((double)u != d) return 0;
  *out = u;
  return 1;
}

/* A JSON description of what a value is, for messages ("a string", "-1", "2.5"). */
static const char *json_what(const cJSON *j, char *buf, size_t n) {
  if (cJSON_IsNumber(j))
    snprintf(buf, n, "%.17g", j->valuedouble);
  else
    snprintf(buf, n, "%s",
             cJSON_IsString(j)   ? "a string"
             : cJSON_IsArray(j)  ? "an array"
             : cJSON_IsObject(j) ? "an object"
             : cJSON_IsBool(j)   ? "a boolean"
                                 : "null");
  return buf;
}

void qat_st_close(qat_st_file *f) {
  if (!f) return;
  if (f->map && f->map != MAP_FAILED) munmap(f->map, f->map_size);
  for (int i = 0; i < f->n; i++)
    free(f->tensors[i].name);
  free(f->tensors);
  for (int i = 0; i < f->nmeta; i++) {
    free(f->meta_keys[i]);
    free(f->meta_vals[i]);
  }
  free(f->meta_keys);
  free(f->meta_vals);
  free(f->path);
  memset(f, 0, sizeof *f);
}

/* "__metadata__": an object whose values are all strings. */
static qat_status parse_meta(qat_st_file *f, const cJSON *m) {
  const char *P = f->path;
  if (f->meta_keys) return FMT_FAIL("%s: \"__metadata__\" appears twice", P);
  if (!cJSON_IsObject(m)) return FMT_FAIL("%s: \"__metadata__\" is not an object", P);
  int n = cJSON_GetArraySize(m);
  f->meta_keys = calloc((size_t)n + 1, sizeof(char *));
  f->meta_vals = calloc((size_t)n + 1, sizeof(char *));
  if (!f->meta_keys || !f->meta_vals) return QAT_FAIL(QAT_ENOMEM, "%s: out of memory", P);
  char nb[160], wb[64];
  const cJSON *kv;
  cJSON_ArrayForEach(kv, m) {
    if (!cJSON_IsString(kv))
      return FMT_FAIL("%s: metadata \"%s\" is %s, not a string", P, pname(kv->string, nb),
                      json_what(kv, wb, sizeof wb));
    for (int i = 0; i < f->nmeta; i++)
      if (!strcmp(f->meta_keys[i], kv->string))
        return FMT_FAIL("%s: metadata key \"%s\" appears twice", P, pname(kv->string, nb));
    f->meta_keys[f->nmeta] = strdup(kv->string);
    f->meta_vals[f->nmeta] = strdup(kv->valuestring);
    f->nmeta++; /* counted before the check so close() frees a half-made pair */
    if (!f->meta_keys[f->nmeta - 1] || !f->meta_vals[f->nmeta - 1])
      return QAT_FAIL(QAT_ENOMEM, "%s: out of memory", P);
  }
  return QAT_OK;
}

/* One header entry {"dtype", "shape", "data_offsets"} into t (name already set). */
static qat_status parse_entry(const qat_st_file *f, const cJSON *e, qat_st_tensor *t,
                              uint64_t data_size, const uint8_t *data) {
  const char *P = f->path;
  char nb[160], wb[64];
  const char *N = pname(t->name, nb);
  if (!cJSON_IsObject(e)) return FMT_FAIL("%s: tensor \"%s\": entry is not an object", P, N);
  const cJSON *dt = NULL, *sh = NULL, *off = NULL, *kv;
  cJSON_ArrayForEach(kv, e) {
    const cJSON **slot = !strcmp(kv->string, "dtype")          ? &dt
                         : !strcmp(kv->string, "shape")        ? &sh
                         : !strcmp(kv->string, "data_offsets") ? &off
                                                               : NULL;
    char kb[160];
    if (!slot)
      return FMT_FAIL("%s: tensor \"%s\": unknown key \"%s\"", P, N, pname(kv->string, kb));
    if (*slot) return FMT_FAIL("%s: tensor \"%s\": key \"%s\" appears twice", P, N, kv->string);
    *slot = kv;
  }
  if (!dt || !sh || !off)
    return FMT_FAIL("%s: tensor \"%s\": missing \"%s\"", P, N,
                    !dt   ? "dtype"
                    : !sh ? "shape"
                          : "data_offsets");

  if (!cJSON_IsString(dt)) return FMT_FAIL("%s: tensor \"%s\": dtype is not a string", P, N);
  if (qat_dtype_parse(dt->valuestring, &t->dtype) != QAT_OK) {
    char db[160];
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: tensor \"%s\": unsupported dtype \"%s\"", P, N,
                    pname(dt->valuestring, db));
  }

  if (!cJSON_IsArray(sh)) return FMT_FAIL("%s: tensor \"%s\": shape is not an array", P, N);
  int rank = cJSON_GetArraySize(sh);
  if (rank > QAT_MAX_DIMS)
    return FMT_FAIL("%s: tensor \"%s\": shape has rank %d (at most %d)", P, N, rank, QAT_MAX_DIMS);
  t->ndim = rank;
  int i = 0, zero = 0;
  cJSON_ArrayForEach(kv, sh) {
    uint64_t d;
    if (!json_uint(kv, &d))
      return FMT_FAIL("%s: tensor \"%s\": shape[%d] is %s, not a non-negative integer", P, N, i,
                      json_what(kv, wb, sizeof wb));
    t->shape[i++] = (int64_t)d;
    zero |= d == 0;
  }
  /* numel (and below its byte size) must fit in int64 so every later product is safe; a zero
   * dimension makes any product zero */
  uint64_t numel = zero ? 0 : 1;
  for (int k = 0; k < rank && !zero; k++) {
    uint64_t d = (uint64_t)t->shape[k];
    if (numel > (uint64_t)INT64_MAX / d)
      return FMT_FAIL("%s: tensor \"%s\": shape product overflows", P, N);
    numel *= d;
  }
  size_t esz = qat_dtype_size(t->dtype);
  if (numel > (uint64_t)INT64_MAX / esz)
    return FMT_FAIL("%s: tensor \"%s\": byte size overflows", P, N);
  uint64_t nbytes = numel * esz;

  if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
    return FMT_FAIL("%s: tensor \"%s\": data_offsets is not a [begin, end] pair", P, N);
  uint64_t b, en;
  if (!json_uint(off->child, &b) || !json_uint(off->child->next, &en))
    return FMT_FAIL("%s: tensor \"%s\": data_offsets are not non-negative integers", P, N);
  if (b > en)
    return FMT_FAIL("%s: tensor \"%s\": data_offsets begin %" PRIu64 " > end %" PRIu64, P, N, b,
                    en);
  if (en > data_size)
    return FMT_FAIL("%s: tensor \"%s\": data_offsets end %" PRIu64
                    " is past the data section (%" PRIu64 " bytes)",
                    P, N, en, data_size);
  if (en - b != nbytes)
    return FMT_FAIL("%s: tensor \"%s\": data_offsets span %" PRIu64 " bytes but %s x %" PRIu64
                    " elements needs %" PRIu64,
                    P, N, en - b, qat_dtype_name(t->dtype), numel, nbytes);
  t->begin = b;
  t->end = en;
  t->data = data + b;
  return QAT_OK;
}

static int cmp_name_ptr(const void *a, const void *b) {
  return strcmp((*(const qat_st_tensor *const *)a)->name, (*(const qat_st_tensor *const *)b)->name);
}
static int cmp_begin_ptr(const void *a, const void *b) {
  const qat_st_tensor *x = *(const qat_st_tensor *const *)a, *y = *(const qat_st_tensor *const *)b;
  return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

/* Names unique; byte ranges of non-empty tensors disjoint. Sorting keeps this O(n log n). */
static qat_status check_tensors(const qat_st_file *f) {
  if (f->n < 2) return QAT_OK;
  const qat_st_tensor **v = malloc((size_t)f->n * sizeof *v);
  if (!v) return QAT_FAIL(QAT_ENOMEM, "%s: out of memory", f->path);
  qat_status st = QAT_OK;
  char nb[160], nb2[160];
  for (int i = 0; i < f->n; i++)
    v[i] = &f->tensors[i];
  qsort(v, (size_t)f->n, sizeof *v, cmp_name_ptr);
  for (int i = 1; i < f->n && st == QAT_OK; i++)
    if (!strcmp(v[i - 1]->name, v[i]->name))
      st =
          FMT_FAIL("%s: tensor \"%s\" appears twice in the header", f->path, pname(v[i]->name, nb));
  int m = 0;
  for (int i = 0; i < f->n; i++)
    if (f->tensors[i].end > f->tensors[i].begin) v[m++] = &f->tensors[i];
  qsort(v, (size_t)m, sizeof *v, cmp_begin_ptr);
  for (int i = 1; i < m && st == QAT_OK; i++)
    if (v[i]->begin < v[i - 1]->end)
      st = FMT_FAIL("%s: tensors \"%s\" and \"%s\" overlap in the data section", f->path,
                    pname(v[i - 1]->name, nb), pname(v[i]->name, nb2));
  free(v);
  return st;
}

static qat_status parse_header(qat_st_file *f, const char *hdr, size_t hlen, uint64_t data_size,
                               const uint8_t *data) {
  const char *P = f->path;
  /* cJSON needs a NUL-terminated buffer; the mapping has none. An embedded NUL ends the parse
   * early and is then caught as trailing garbage. */
  char *buf = malloc(hlen + 1);
  if (!buf) return QAT_FAIL(QAT_ENOMEM, "%s: cannot allocate the %zu-byte header", P, hlen);
  memcpy(buf, hdr, hlen);
  buf[hlen] = 0;
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithOpts(buf, &end, 0);
  qat_status st = QAT_OK;
  if (!root) {
    size_t at = end && end >= buf && end <= buf + hlen ? (size_t)(end - buf) : 0;
    st = FMT_FAIL("%s: header is not valid JSON (near byte %zu of %zu)", P, at, hlen);
    goto done;
  }
  for (size_t i = (size_t)(end - buf); i < hlen; i++)
    if (!strchr(" \t\r\n", buf[i]) || buf[i] == 0) {
      st = FMT_FAIL("%s: header has bytes after the JSON object (at byte %zu of %zu)", P, i, hlen);
      goto done;
    }
  if (!cJSON_IsObject(root)) {
    st = FMT_FAIL("%s: header is not a JSON object", P);
    goto done;
  }
  int total = cJSON_GetArraySize(root);
  f->tensors = calloc((size_t)total + 1, sizeof *f->tensors);
  if (!f->tensors) {
    st = QAT_FAIL(QAT_ENOMEM, "%s: out of memory", P);
    goto done;
  }
  const cJSON *e;
  cJSON_ArrayForEach(e, root) {
    if (!strcmp(e->string, "__metadata__")) {
      QAT_CHECK(st, parse_meta(f, e), done);
      continue;
    }
    qat_st_tensor *t = &f->tensors[f->n];
    if (!(t->name = strdup(e->string))) {
      st = QAT_FAIL(QAT_ENOMEM, "%s: out of memory", P);
      goto done;
    }
    f->n++;
    QAT_CHECK(st, parse_entry(f, e, t, data_size, data), done);
  }
  st = check_tensors(f);
done:
  cJSON_Delete(root);
  free(buf);
  return st;
}

qat_status qat_st_open(const char *path, qat_st_file *f) {
  memset(f, 0, sizeof *f);
  if (!(f->path = strdup(path))) return QAT_FAIL(QAT_ENOMEM, "%s: out of memory", path);
  qat_status st = QAT_OK;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    st = QAT_FAIL(QAT_EIO, "%s: %s", path, strerror(errno));
    goto fail;
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    st = QAT_FAIL(QAT_EIO, "%s: not a readable regular file", path);
    close(fd);
    goto fail;
  }
  uint64_t size = (uint64_t)sb.st_size;
  if (size < 8) {
    close(fd);
    st = FMT_FAIL("%s: file is %" PRIu64 " bytes, shorter than the 8-byte header length", path,
                  size);
    goto fail;
  }
  f->map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd); /* the mapping keeps the file alive */
  if (f->map == MAP_FAILED) {
    f->map = NULL;
    st = QAT_FAIL(QAT_EIO, "%s: mmap: %s", path, strerror(errno));
    goto fail;
  }
  f->map_size = (size_t)size;
  const uint8_t *p = f->map;
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = hlen << 8 | p[i]; /* little-endian on any host */
  if (hlen == 0) {
    st = FMT_FAIL("%s: header length is 0", path);
    goto fail;
  }
  if (hlen > size - 8) {
    st = FMT_FAIL("%s: header length %" PRIu64 " exceeds the %" PRIu64 " bytes after it", path,
                  hlen, size - 8);
    goto fail;
  }
  if (hlen > ST_MAX_HEADER) {
    st = FMT_FAIL("%s: header length %" PRIu64 " exceeds the %" PRIu64 "-byte limit", path, hlen,
                  ST_MAX_HEADER);
    goto fail;
  }
  QAT_CHECK(st, parse_header(f, (const char *)p + 8, (size_t)hlen, size - 8 - hlen, p + 8 + hlen),
            fail);
  return QAT_OK;
fail:
  qat_st_close(f);
  return st;
}

const qat_st_tensor *qat_st_find(const qat_st_file *f, const char *name) {
  for (int i = 0; i < f->n; i++)
    if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
  return NULL;
}

const char *qat_st_meta(const qat_st_file *f, const char *key) {
  for (int i = 0; i < f->nmeta; i++)
    if (!strcmp(f->meta_keys[i], key)) return f->meta_vals[i];
  return NULL;
}

int64_t qat_st_numel(const qat_st_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++)
    n *= t->shape[i]; /* validated at open: no overflow */
  return n;
}

qat_status qat_st_read_f32(const qat_st_tensor *t, float *dst) {
  size_t n = (size_t)qat_st_numel(t);
  if (t->dtype != QAT_F32 && t->dtype != QAT_F16 && t->dtype != QAT_BF16)
    return QAT_FAIL(QAT_EUNSUPPORTED, "tensor \"%s\": %s is not a float dtype", t->name,
                    qat_dtype_name(t->dtype));
  if (t->dtype == QAT_F32 || ((uintptr_t)t->data & 1) == 0)
    return qat_convert_to_f32(t->data, t->dtype, dst, n);
  /* another writer may put a 16-bit tensor at an odd offset: read it bytewise */
  const uint8_t *s = t->data;
  for (size_t i = 0; i < n; i++) {
    uint16_t h;
    memcpy(&h, s + 2 * i, 2);
    dst[i] = t->dtype == QAT_F16 ? qat_f16_to_f32(h) : qat_bf16_to_f32(h);
  }
  return QAT_OK;
}

/* ---- sharded folders ---- */

void qat_st_set_close(qat_st_set *s) {
  if (!s) return;
  for (int i = 0; i < s->nfiles; i++)
    qat_st_close(&s->files[i]);
  free(s->files);
  memset(s, 0, sizeof *s);
}

static qat_status set_add(qat_st_set *s, const char *path) {
  qat_st_file *nf = realloc(s->files, (size_t)(s->nfiles + 1) * sizeof *nf);
  if (!nf) return QAT_FAIL(QAT_ENOMEM, "%s: out of memory", path);
  s->files = nf;
  QAT_TRY(qat_st_open(path, &s->files[s->nfiles]));
  s->nfiles++;
  return QAT_OK;
}

typedef struct {
  const char *name;
  int file;
} name_at;
static int cmp_name_at(const void *a, const void *b) {
  return strcmp(((const name_at *)a)->name, ((const name_at *)b)->name);
}

/* No tensor name may be held by two files of the set. */
static qat_status set_check_unique(const qat_st_set *s) {
  size_t total = 0;
  for (int i = 0; i < s->nfiles; i++)
    total += (size_t)s->files[i].n;
  if (total < 2) return QAT_OK;
  name_at *v = malloc(total * sizeof *v);
  if (!v) return QAT_FAIL(QAT_ENOMEM, "out of memory checking shard tensor names");
  size_t k = 0;
  for (int i = 0; i < s->nfiles; i++)
    for (int j = 0; j < s->files[i].n; j++)
      v[k++] = (name_at){s->files[i].tensors[j].name, i};
  qsort(v, total, sizeof *v, cmp_name_at);
  qat_status st = QAT_OK;
  char nb[160];
  for (size_t i = 1; i < total; i++)
    if (!strcmp(v[i - 1].name, v[i].name)) {
      st = FMT_FAIL("%s: tensor \"%s\" is also in %s", s->files[v[i].file].path,
                    pname(v[i].name, nb), s->files[v[i - 1].file].path);
      break;
    }
  free(v);
  return st;
}

static qat_status set_open_index(const char *dir, const char *ipath, qat_st_set *s) {
  char *text = NULL;
  size_t len = 0;
  QAT_TRY(qat_read_file(ipath, &text, &len));
  cJSON *root = cJSON_ParseWithLength(text, len);
  free(text);
  qat_status st = QAT_OK;
  char nb[160], fb[160];
  const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
  if (!root) {
    st = FMT_FAIL("%s: not valid JSON", ipath);
    goto done;
  }
  if (!cJSON_IsObject(wm)) {
    st = FMT_FAIL("%s: \"weight_map\" is missing or not an object", ipath);
    goto done;
  }
  const cJSON *e;
  /* open each distinct shard once, in order of first mention */
  cJSON_ArrayForEach(e, wm) {
    if (!cJSON_IsString(e)) {
      st = FMT_FAIL("%s: weight_map[\"%s\"] is not a string", ipath, pname(e->string, nb));
      goto done;
    }
    const char *shard = e->valuestring;
    /* shard names are plain file names in the folder: never follow one elsewhere */
    if (!shard[0] || strchr(shard, '/') || !strcmp(shard, ".") || !strcmp(shard, "..")) {
      st = FMT_FAIL("%s: tensor \"%s\": shard \"%s\" is not a file name", ipath,
                    pname(e->string, nb), pname(shard, fb));
      goto done;
    }
    char path[4096];
    QAT_CHECK(st, qat_path_join(path, sizeof path, dir, shard), done);
    int seen = 0;
    for (int i = 0; i < s->nfiles && !seen; i++)
      seen = !strcmp(s->files[i].path, path);
    if (!seen && (st = set_add(s, path)) != QAT_OK) {
      st = qat_context(st, "%s: tensor \"%s\" is in shard \"%s\"", ipath, pname(e->string, nb),
                       pname(shard, fb));
      goto done;
    }
  }
  /* every listed tensor is in the shard the index names, and listed once */
  cJSON_ArrayForEach(e, wm) {
    for (const cJSON *p = wm->child; p != e; p = p->next)
      if (!strcmp(p->string, e->string)) {
        st = FMT_FAIL("%s: tensor \"%s\" is listed twice in weight_map", ipath,
                      pname(e->string, nb));
        goto done;
      }
    char path[4096];
    QAT_CHECK(st, qat_path_join(path, sizeof path, dir, e->valuestring), done);
    const qat_st_file *f = NULL;
    for (int i = 0; i < s->nfiles && !f; i++)
      if (!strcmp(s->files[i].path, path)) f = &s->files[i];
    if (!f || !qat_st_find(f, e->string)) {
      st = FMT_FAIL("%s: tensor \"%s\" is listed in %s but absent from it", ipath,
                    pname(e->string, nb), path);
      goto done;
    }
  }
done:
  cJSON_Delete(root);
  return st;
}

qat_status qat_st_set_open(const char *dir, qat_st_set *s) {
  memset(s, 0, sizeof *s);
  qat_status st = QAT_OK;
  char path[4096];
  if (qat_path_exists(dir) && !qat_is_dir(dir)) {
    st = set_add(s, dir); /* a single .safetensors file is a set of one */
  } else {
    QAT_TRY(qat_path_join(path, sizeof path, dir, "model.safetensors.index.json"));
    if (qat_path_exists(path)) {
      st = set_open_index(dir, path, s);
    } else {
      QAT_TRY(qat_path_join(path, sizeof path, dir, "model.safetensors"));
      if (qat_path_exists(path))
        st = set_add(s, path);
      else
        st = QAT_FAIL(QAT_EIO, "%s: no model.safetensors or model.safetensors.index.json", dir);
    }
  }
  if (st == QAT_OK) st = set_check_unique(s);
  if (st != QAT_OK) qat_st_set_close(s);
  return st;
}

const qat_st_tensor *qat_st_set_find(const qat_st_set *s, const char *name,
                                     const qat_st_file **file) {
  for (int i = 0; i < s->nfiles; i++) {
    const qat_st_tensor *t = qat_st_find(&s->files[i], name);
    if (t) {
      if (file) *file = &s->files[i];
      return t;
    }
  }
  if (file) *file = NULL;
  return NULL;
}

/* ---- writer ---- */

void qat_st_writer_init(qat_st_writer *w) { memset(w, 0, sizeof *w); }

void qat_st_writer_free(qat_st_writer *w) {
  for (int i = 0; i < w->n; i++)
    free(w->e[i].name);
  free(w->e);
  for (int i = 0; i < w->nmeta; i++) {
    free(w->meta_keys[i]);
    free(w->meta_vals[i]);
  }
  free(w->meta_keys);
  free(w->meta_vals);
  memset(w, 0, sizeof *w);
}

qat_status qat_st_writer_add(qat_st_writer *w, const char *name, qat_dtype dtype, int ndim,
                             const int64_t *shape, const void *data) {
  char nb[160];
  if (!name || !name[0] || !strcmp(name, "__metadata__"))
    return QAT_FAIL(QAT_EINVAL, "safetensors writer: bad tensor name \"%s\"", name ? name : "");
  if ((unsigned)dtype >= QAT_DTYPE_COUNT)
    return QAT_FAIL(QAT_EINVAL, "safetensors writer: tensor \"%s\": bad dtype %d", pname(name, nb),
                    (int)dtype);
  if (ndim < 0 || ndim > QAT_MAX_DIMS)
    return QAT_FAIL(QAT_EINVAL, "safetensors writer: tensor \"%s\": rank %d", pname(name, nb),
                    ndim);
  uint64_t numel = 1;
  for (int i = 0; i < ndim; i++)
    if (shape[i] < 0 || (uint64_t)shape[i] > ST_MAX_INT)
      return QAT_FAIL(QAT_EINVAL, "safetensors writer: tensor \"%s\": dimension %" PRId64,
                      pname(name, nb), shape[i]);
  for (int i = 0; i < ndim; i++) {
    if (shape[i] == 0) {
      numel = 0;
      break;
    }
    if (numel > ST_MAX_INT / (uint64_t)shape[i])
      return QAT_FAIL(QAT_EINVAL, "safetensors writer: tensor \"%s\": too large", pname(name, nb));
    numel *= (uint64_t)shape[i];
  }
  if (numel > ST_MAX_INT / qat_dtype_size(dtype))
    return QAT_FAIL(QAT_EINVAL, "safetensors writer: tensor \"%s\": too large", pname(name, nb));
  if (numel > 0 && !data)
    return QAT_FAIL(QAT_EINVAL, "safetensors writer: tensor \"%s\": no data", pname(name, nb));
  for (int i = 0; i < w->n; i++)
    if (!strcmp(w->e[i].name, name))
      return QAT_FAIL(QAT_EINVAL, "safetensors writer: tensor \"%s\" added twice", pname(name, nb));
  if (w->n == w->cap) {
    int cap = w->cap ? w->cap * 2 : 16;
    struct qat_st_wentry *ne = realloc(w->e, (size_t)cap * sizeof *ne);
    if (!ne) return QAT_FAIL(QAT_ENOMEM, "safetensors writer: out of memory");
    w->e = ne;
    w->cap = cap;
  }
  struct qat_st_wentry *e = &w->e[w->n];
  memset(e, 0, sizeof *e);
  if (!(e->name = strdup(name))) return QAT_FAIL(QAT_ENOMEM, "safetensors writer: out of memory");
  e->dtype = dtype;
  e->ndim = ndim;
  for (int i = 0; i < ndim; i++)
    e->shape[i] = shape[i];
  e->data = data;
  w->n++;
  return QAT_OK;
}

qat_status qat_st_writer_meta(qat_st_writer *w, const char *key, const char *value) {
  char nb[160];
  for (int i = 0; i < w->nmeta; i++)
    if (!strcmp(w->meta_keys[i], key))
      return QAT_FAIL(QAT_EINVAL, "safetensors writer: metadata \"%s\" set twice", pname(key, nb));
  char **nk = realloc(w->meta_keys, (size_t)(w->nmeta + 1) * sizeof *nk);
  if (nk) w->meta_keys = nk;
  char **nv = realloc(w->meta_vals, (size_t)(w->nmeta + 1) * sizeof *nv);
  if (nv) w->meta_vals = nv;
  if (!nk || !nv) return QAT_FAIL(QAT_ENOMEM, "safetensors writer: out of memory");
  char *k = strdup(key), *v = strdup(value);
  if (!k || !v) {
    free(k);
    free(v);
    return QAT_FAIL(QAT_ENOMEM, "safetensors writer: out of memory");
  }
  w->meta_keys[w->nmeta] = k;
  w->meta_vals[w->nmeta] = v;
  w->nmeta++;
  return QAT_OK;
}

static uint64_t wentry_bytes(const struct qat_st_wentry *e) {
  uint64_t n = qat_dtype_size(e->dtype);
  for (int i = 0; i < e->ndim; i++)
    n *= (uint64_t)e->shape[i];
  return n;
}

/* Integers as raw JSON text: cJSON would print large doubles as "1e+15", which strict readers
 * (the Rust safetensors crate) reject. */
static cJSON *raw_uint(uint64_t v) {
  char b[32];
  snprintf(b, sizeof b, "%" PRIu64, v);
  return cJSON_CreateRaw(b);
}

/* The header JSON, padded with spaces so the data starts 8-byte aligned. */
static qat_status build_header(const qat_st_writer *w, const char *path, char **out, size_t *len) {
  cJSON *root = cJSON_CreateObject();
  int ok = root != NULL;
  if (ok && w->nmeta) {
    cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
    ok = m != NULL;
    for (int i = 0; ok && i < w->nmeta; i++)
      ok = cJSON_AddStringToObject(m, w->meta_keys[i], w->meta_vals[i]) != NULL;
  }
  uint64_t off = 0;
  for (int i = 0; ok && i < w->n; i++) {
    const struct qat_st_wentry *e = &w->e[i];
    cJSON *t = cJSON_AddObjectToObject(root, e->name), *sh = NULL, *dof = NULL;
    ok = t && cJSON_AddStringToObject(t, "dtype", qat_dtype_name(e->dtype)) &&
         (sh = cJSON_AddArrayToObject(t, "shape")) != NULL;
    for (int k = 0; ok && k < e->ndim; k++)
      ok = cJSON_AddItemToArray(sh, raw_uint((uint64_t)e->shape[k]));
    uint64_t nb = wentry_bytes(e);
    ok = ok && (dof = cJSON_AddArrayToObject(t, "data_offsets")) != NULL &&
         cJSON_AddItemToArray(dof, raw_uint(off)) && cJSON_AddItemToArray(dof, raw_uint(off + nb));
    off += nb;
  }
  char *js = ok ? cJSON_PrintUnformatted(root) : NULL;
  cJSON_Delete(root);
  if (!js) return QAT_FAIL(QAT_ENOMEM, "%s: out of memory building the header", path);
  size_t n = strlen(js), padded = (n + 7) / 8 * 8;
  char *h = malloc(padded);
  if (!h) {
    cJSON_free(js);
    return QAT_FAIL(QAT_ENOMEM, "%s: out of memory building the header", path);
  }
  memcpy(h, js, n);
  memset(h + n, ' ', padded - n);
  cJSON_free(js);
  *out = h;
  *len = padded;
  return QAT_OK;
}

qat_status qat_st_write(const qat_st_writer *w, const char *path) {
  char *hdr = NULL;
  size_t hlen = 0;
  QAT_TRY(build_header(w, path, &hdr, &hlen));
  uint8_t lenb[8];
  for (int i = 0; i < 8; i++)
    lenb[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
  qat_atomic_file af;
  qat_status st = qat_atomic_open(&af, path);
  /* the data streams straight from the callers' tensors: no second copy of the model */
  if (st == QAT_OK) st = qat_atomic_write(&af, lenb, 8);
  if (st == QAT_OK) st = qat_atomic_write(&af, hdr, hlen);
  for (int i = 0; i < w->n && st == QAT_OK; i++) {
    uint64_t nb = wentry_bytes(&w->e[i]);
    if (nb) st = qat_atomic_write(&af, w->e[i].data, (size_t)nb);
  }
  if (st == QAT_OK) st = qat_atomic_commit(&af);
  free(hdr);
  return st;
}
