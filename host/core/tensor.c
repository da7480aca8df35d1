/* dtypes, tensor views and arenas. */
#include "core/tensor.h"
#include "backend/backend.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const struct {
  const char *name;
  size_t size;
} k_dtypes[QAT_DTYPE_COUNT] = {
    [QAT_F32] = {"F32", 4}, [QAT_F16] = {"F16", 2}, [QAT_BF16] = {"BF16", 2},
    [QAT_I8] = {"I8", 1},   [QAT_U8] = {"U8", 1},   [QAT_I16] = {"I16", 2},
    [QAT_U16] = {"U16", 2}, [QAT_I32] = {"I32", 4}, [QAT_U32] = {"U32", 4},
    [QAT_I64] = {"I64", 8},
};

size_t qat_dtype_size(qat_dtype t) { return (unsigned)t < QAT_DTYPE_COUNT ? k_dtypes[t].size : 0; }
const char *qat_dtype_name(qat_dtype t) {
  return (unsigned)t < QAT_DTYPE_COUNT ? k_dtypes[t].name : "?";
}

qat_status qat_dtype_parse(const char *name, qat_dtype *out) {
  for (int i = 0; i < QAT_DTYPE_COUNT; i++)
    if (strcmp(name, k_dtypes[i].name) == 0) {
      *out = (qat_dtype)i;
      return QAT_OK;
    }
  return QAT_FAIL(QAT_EUNSUPPORTED, "unsupported dtype \"%s\"", name);
}

float qat_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal: renormalize */
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) {
        man <<= 1;
        exp--;
      }
      man &= 0x3ff;
      bits = sign | (exp << 23) | (man << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t qat_f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
  if (ax < 0x38800000u) {                                  /* subnormal or zero in half */
    float a;
    memcpy(&a, &ax, 4);
    /* a * 2^24 rounded to nearest even gives the subnormal mantissa */
    return (uint16_t)(sign | (uint32_t)nearbyintf(a * 16777216.0f));
  }
  uint32_t r = ax + 0x0fffu + ((ax >> 13) & 1); /* round to nearest even on bit 13 */
  return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

float qat_bf16_to_f32(uint16_t b) {
  uint32_t x = (uint32_t)b << 16;
  float f;
  memcpy(&f, &x, 4);
  return f;
}

uint16_t qat_f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
  x += 0x7fffu + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

qat_status qat_convert_to_f32(const void *src, qat_dtype t, float *dst, size_t n) {
  switch (t) {
  case QAT_F32: memmove(dst, src, n * 4); return QAT_OK;
  case QAT_F16:
    for (size_t i = 0; i < n; i++) dst[i] = qat_f16_to_f32(((const uint16_t *)src)[i]);
    return QAT_OK;
  case QAT_BF16:
    for (size_t i = 0; i < n; i++) dst[i] = qat_bf16_to_f32(((const uint16_t *)src)[i]);
    return QAT_OK;
  default: return QAT_FAIL(QAT_EUNSUPPORTED, "cannot convert %s to F32", qat_dtype_name(t));
  }
}

qat_status qat_convert_from_f32(const float *src, void *dst, qat_dtype t, size_t n) {
  switch (t) {
  case QAT_F32: memmove(dst, src, n * 4); return QAT_OK;
  case QAT_F16:
    for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = qat_f32_to_f16(src[i]);
    return QAT_OK;
  case QAT_BF16:
    for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = qat_f32_to_bf16(src[i]);
    return QAT_OK;
  default: return QAT_FAIL(QAT_EUNSUPPORTED, "cannot convert F32 to %s", qat_dtype_name(t));
  }
}

int64_t qat_numel(const qat_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

size_t qat_nbytes(const qat_tensor *t) { return (size_t)qat_numel(t) * qat_dtype_size(t->dtype); }

qat_tensor qat_view(void *data, qat_dtype dtype, qat_device dev, int ndim, const int64_t *shape) {
  qat_tensor t = {.data = data, .dtype = dtype, .device = dev, .ndim = ndim};
  for (int i = 0; i < ndim && i < QAT_MAX_DIMS; i++) t.shape[i] = shape[i];
  return t;
}
qat_tensor qat_view1(void *data, qat_dtype dtype, qat_device dev, int64_t n0) {
  return qat_view(data, dtype, dev, 1, (int64_t[]){n0});
}
qat_tensor qat_view2(void *data, qat_dtype dtype, qat_device dev, int64_t n0, int64_t n1) {
  return qat_view(data, dtype, dev, 2, (int64_t[]){n0, n1});
}

qat_tensor qat_rows(const qat_tensor *t, int64_t r0, int64_t n) {
  qat_tensor v = *t;
  size_t row = qat_dtype_size(t->dtype);
  for (int i = 1; i < t->ndim; i++) row *= (size_t)t->shape[i];
  v.data = (uint8_t *)t->data + (size_t)r0 * row;
  v.shape[0] = n;
  v.arena = NULL;
  return v;
}

const char *qat_shape_str(const qat_tensor *t, char *buf, size_t n) {
  size_t k = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < t->ndim && k < n; i++)
    k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
  return buf;
}

#define QAT_ALIGN 256

size_t qat_arena_need(qat_dtype dtype, int64_t numel) {
  size_t b = (size_t)numel * qat_dtype_size(dtype);
  return (b + QAT_ALIGN - 1) / QAT_ALIGN * QAT_ALIGN;
}

qat_status qat_arena_init(qat_arena *a, const qat_backend *be, const char *name, size_t cap) {
  memset(a, 0, sizeof *a);
  a->name = name;
  a->be = be;
  if (cap == 0) return QAT_OK;
  void *p = NULL;
  qat_status st = be->alloc(be, &p, cap);
  if (st != QAT_OK)
    return qat_context(st, "arena \"%s\" (%.1f MiB on %s)", name, cap / 1048576.0, be->name);
  a->base = p;
  a->cap = cap;
  return be->memset0(be, p, cap);
}

qat_status qat_arena_tensor(qat_arena *a, qat_tensor *out, qat_dtype dtype, int ndim,
                            const int64_t *shape, const char *name) {
  if (ndim < 1 || ndim > QAT_MAX_DIMS)
    return QAT_FAIL(QAT_EINVAL, "tensor %s: rank %d out of range", name ? name : "?", ndim);
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0 || (shape[i] > 0 && n > INT64_MAX / shape[i]))
      return QAT_FAIL(QAT_EINVAL, "tensor %s: bad shape", name ? name : "?");
    n *= shape[i];
  }
  size_t need = qat_arena_need(dtype, n);
  if (a->used + need > a->cap)
    return QAT_FAIL(QAT_ENOMEM, "arena \"%s\" full: tensor %s needs %zu bytes, %zu of %zu used",
                    a->name, name ? name : "?", need, a->used, a->cap);
  *out = qat_view(a->base + a->used, dtype, a->be->device, ndim, shape);
  out->arena = a;
  out->name = name;
  a->used += need;
  return QAT_OK;
}

void qat_arena_reset(qat_arena *a) { a->used = 0; }

void qat_arena_free(qat_arena *a) {
  if (a->base && a->be) a->be->free(a->be, a->base);
  a->base = NULL;
  a->cap = a->used = 0;
}
