/* GGUF v3 writer (gguf_write.h). The metadata section is built in memory as it is added (a few
 * MB even with a 128K-token vocabulary); tensor infos are serialized at write time from the
 * registered list; tensor data is streamed from the caller's buffers with zero padding between
 * tensors so every one starts on the 32-byte alignment. */
#include "io/gguf_write.h"

#include "io/fsutil.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN QAT_GGUF_DEFAULT_ALIGNMENT

static void put(qat_gguf_writer *w, const void *d, size_t n) {
  if (w->oom) return;
  if (w->kv_n + n > w->kv_cap) {
    size_t cap = w->kv_cap ? w->kv_cap : 4096;
    while (cap < w->kv_n + n)
      cap *= 2;
    uint8_t *p = realloc(w->kv, cap);
    if (!p) {
      w->oom = 1;
      return;
    }
    w->kv = p;
    w->kv_cap = cap;
  }
  memcpy(w->kv + w->kv_n, d, n);
  w->kv_n += n;
}
/* little-endian hosts only (the reader makes the same assumption) */
static void put_u32(qat_gguf_writer *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(qat_gguf_writer *w, uint64_t v) { put(w, &v, 8); }
static void put_str(qat_gguf_writer *w, const char *s, size_t n) {
  put_u64(w, n);
  put(w, s, n);
}

/* Key header (after the uniqueness check): key string + value type. */
static qat_status key(qat_gguf_writer *w, const char *k, uint32_t type) {
  for (int64_t i = 0; i < w->n_kv; i++)
    if (!strcmp(w->keys[i], k)) return QAT_FAIL(QAT_EINVAL, "gguf: duplicate key %s", k);
  char **nk = realloc(w->keys, (size_t)(w->n_kv + 1) * sizeof *nk);
  if (!nk) return QAT_FAIL(QAT_ENOMEM, "gguf: out of memory (key %s)", k);
  w->keys = nk;
  if (!(w->keys[w->n_kv] = strdup(k))) return QAT_FAIL(QAT_ENOMEM, "gguf: out of memory");
  w->n_kv++;
  put_str(w, k, strlen(k));
  put_u32(w, type);
  return w->oom ? QAT_FAIL(QAT_ENOMEM, "gguf: out of memory (key %s)", k) : QAT_OK;
}

static qat_status done(qat_gguf_writer *w, const char *k) {
  return w->oom ? QAT_FAIL(QAT_ENOMEM, "gguf: out of memory (key %s)", k) : QAT_OK;
}

qat_status qat_gguf_writer_init(qat_gguf_writer *w) {
  memset(w, 0, sizeof *w);
  return qat_gguf_w_u32(w, "general.alignment", ALIGN);
}

void qat_gguf_writer_free(qat_gguf_writer *w) {
  for (int64_t i = 0; i < w->n_kv; i++)
    free(w->keys[i]);
  for (int64_t i = 0; i < w->n_t; i++)
    free(w->t[i].name);
  free(w->keys);
  free(w->t);
  free(w->kv);
  memset(w, 0, sizeof *w);
}

qat_status qat_gguf_w_str(qat_gguf_writer *w, const char *k, const char *val) {
  QAT_TRY(key(w, k, QAT_GGUF_STRING));
  put_str(w, val, strlen(val));
  return done(w, k);
}
qat_status qat_gguf_w_u32(qat_gguf_writer *w, const char *k, uint32_t v) {
  QAT_TRY(key(w, k, QAT_GGUF_U32));
  put_u32(w, v);
  return done(w, k);
}
qat_status qat_gguf_w_i32(qat_gguf_writer *w, const char *k, int32_t v) {
  QAT_TRY(key(w, k, QAT_GGUF_I32));
  put(w, &v, 4);
  return done(w, k);
}
qat_status qat_gguf_w_f32(qat_gguf_writer *w, const char *k, float v) {
  QAT_TRY(key(w, k, QAT_GGUF_F32));
  put(w, &v, 4);
  return done(w, k);
}
qat_status qat_gguf_w_bool(qat_gguf_writer *w, const char *k, int v) {
  QAT_TRY(key(w, k, QAT_GGUF_BOOL));
  uint8_t b = v != 0;
  put(w, &b, 1);
  return done(w, k);
}
qat_status qat_gguf_w_arr_str(qat_gguf_writer *w, const char *k, const char *const *vals,
                              const size_t *lens, uint64_t n) {
  QAT_TRY(key(w, k, QAT_GGUF_ARRAY));
  put_u32(w, QAT_GGUF_STRING);
  put_u64(w, n);
  for (uint64_t i = 0; i < n; i++)
    put_str(w, vals[i], lens ? lens[i] : strlen(vals[i]));
  return done(w, k);
}
qat_status qat_gguf_w_arr_f32(qat_gguf_writer *w, const char *k, const float *v, uint64_t n) {
  QAT_TRY(key(w, k, QAT_GGUF_ARRAY));
  put_u32(w, QAT_GGUF_F32);
  put_u64(w, n);
  put(w, v, (size_t)n * 4);
  return done(w, k);
}
qat_status qat_gguf_w_arr_i32(qat_gguf_writer *w, const char *k, const int32_t *v, uint64_t n) {
  QAT_TRY(key(w, k, QAT_GGUF_ARRAY));
  put_u32(w, QAT_GGUF_I32);
  put_u64(w, n);
  put(w, v, (size_t)n * 4);
  return done(w, k);
}

uint64_t qat_gguf_tensor_bytes(uint32_t type, int ndim, const int64_t *ne) {
  int bs = qat_ggml_type_block(type), tb = qat_ggml_type_bytes(type);
  if (!bs || ndim < 1 || ndim > QAT_GGUF_MAX_DIMS || ne[0] <= 0 || ne[0] % bs) return 0;
  uint64_t n = (uint64_t)(ne[0] / bs) * (uint64_t)tb;
  for (int d = 1; d < ndim; d++) {
    if (ne[d] <= 0 || n > UINT64_MAX / (uint64_t)ne[d]) return 0;
    n *= (uint64_t)ne[d];
  }
  return n;
}

static uint64_t align_up(uint64_t x) { return (x + ALIGN - 1) / ALIGN * ALIGN; }

qat_status qat_gguf_w_tensor(qat_gguf_writer *w, const char *name, uint32_t type, int ndim,
                             const int64_t *ne, const void *data, uint64_t nbytes) {
  for (int64_t i = 0; i < w->n_t; i++)
    if (!strcmp(w->t[i].name, name)) return QAT_FAIL(QAT_EINVAL, "gguf: duplicate tensor %s", name);
  uint64_t want = qat_gguf_tensor_bytes(type, ndim, ne);
  if (!want)
    return QAT_FAIL(QAT_EINVAL, "gguf: tensor %s: %s with ne[0] = %" PRId64 " (%d dims) is not "
                    "whole blocks", name, qat_ggml_type_name(type), ndim > 0 ? ne[0] : 0, ndim);
  if (want != nbytes)
    return QAT_FAIL(QAT_EINVAL, "gguf: tensor %s: %" PRIu64 " bytes given, %s of this shape is %"
                    PRIu64, name, nbytes, qat_ggml_type_name(type), want);
  if (w->n_t == w->cap_t) {
    int64_t cap = w->cap_t ? 2 * w->cap_t : 64;
    qat_gguf_wtensor *nt = realloc(w->t, (size_t)cap * sizeof *nt);
    if (!nt) return QAT_FAIL(QAT_ENOMEM, "gguf: out of memory (tensor %s)", name);
    w->t = nt;
    w->cap_t = cap;
  }
  qat_gguf_wtensor *t = &w->t[w->n_t];
  memset(t, 0, sizeof *t);
  if (!(t->name = strdup(name))) return QAT_FAIL(QAT_ENOMEM, "gguf: out of memory");
  t->ndim = ndim;
  for (int d = 0; d < QAT_GGUF_MAX_DIMS; d++)
    t->ne[d] = d < ndim ? ne[d] : 1;
  t->type = type;
  t->data = data;
  t->nbytes = nbytes;
  t->offset = align_up(w->data_bytes);
  w->data_bytes = t->offset + nbytes;
  w->n_t++;
  return QAT_OK;
}

qat_status qat_gguf_write(const qat_gguf_writer *w, const char *path) {
  if (w->oom) return QAT_FAIL(QAT_ENOMEM, "%s: out of memory building the metadata", path);
  /* header + tensor infos in one buffer */
  qat_gguf_writer h;
  memset(&h, 0, sizeof h);
  put(&h, "GGUF", 4);
  put_u32(&h, 3);
  put_u64(&h, (uint64_t)w->n_t);
  put_u64(&h, (uint64_t)w->n_kv);
  put(&h, w->kv, w->kv_n);
  for (int64_t i = 0; i < w->n_t; i++) {
    const qat_gguf_wtensor *t = &w->t[i];
    put_str(&h, t->name, strlen(t->name));
    put_u32(&h, (uint32_t)t->ndim);
    for (int d = 0; d < t->ndim; d++)
      put_u64(&h, (uint64_t)t->ne[d]);
    put_u32(&h, t->type);
    put_u64(&h, t->offset);
  }
  static const uint8_t zeros[ALIGN];
  put(&h, zeros, (size_t)(align_up(h.kv_n) - h.kv_n));
  if (h.oom) {
    free(h.kv);
    return QAT_FAIL(QAT_ENOMEM, "%s: out of memory building the header", path);
  }
  qat_atomic_file af;
  qat_status st = qat_atomic_open(&af, path);
  if (st == QAT_OK) st = qat_atomic_write(&af, h.kv, h.kv_n);
  free(h.kv);
  uint64_t pos = 0;
  for (int64_t i = 0; st == QAT_OK && i < w->n_t; i++) {
    const qat_gguf_wtensor *t = &w->t[i];
    if (t->offset > pos) st = qat_atomic_write(&af, zeros, (size_t)(t->offset - pos));
    if (st == QAT_OK) st = qat_atomic_write(&af, t->data, (size_t)t->nbytes);
    pos = t->offset + t->nbytes;
  }
  /* pad the end too, as llama.cpp's writer does, so the file is whole alignment units */
  if (st == QAT_OK && align_up(pos) > pos) st = qat_atomic_write(&af, zeros, (size_t)(align_up(pos) - pos));
  if (st == QAT_OK) st = qat_atomic_commit(&af);
  return st;
}
