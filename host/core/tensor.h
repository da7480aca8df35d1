/* Device-neutral tensors and the arenas that own them.
 * A qat_tensor is a view: data pointer + dtype + shape (row-major, contiguous) + device, and the
 * arena that owns its memory (NULL for borrowed memory such as an mmapped file). One arena per
 * tensor group (parameters, gradients, optimizer moments, activations, quantizer state), sized up
 * front, so a job that cannot fit fails at start with the numbers. */
#ifndef QAT_CORE_TENSOR_H
#define QAT_CORE_TENSOR_H

#include "core/status.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum qat_dtype {
  QAT_F32 = 0,
  QAT_F16,
  QAT_BF16,
  QAT_I8,
  QAT_U8,
  QAT_I16,
  QAT_U16,
  QAT_I32,
  QAT_U32,
  QAT_I64,
  QAT_DTYPE_COUNT
} qat_dtype;

typedef enum qat_device { QAT_DEV_CPU = 0, QAT_DEV_CUDA = 1 } qat_device;

size_t qat_dtype_size(qat_dtype t);
const char *qat_dtype_name(qat_dtype t); /* safetensors spelling: F32, F16, BF16, I8, ... */
/* Parse a safetensors dtype name; QAT_EUNSUPPORTED (with the name) when unknown. */
qat_status qat_dtype_parse(const char *name, qat_dtype *out);

/* IEEE half / bfloat16 conversions (round to nearest even; NaN stays NaN). */
float qat_f16_to_f32(uint16_t h);
uint16_t qat_f32_to_f16(float f);
float qat_bf16_to_f32(uint16_t b);
uint16_t qat_f32_to_bf16(float f);
/* Convert n elements between float32 and a float dtype (F32, F16, BF16) on the host. */
qat_status qat_convert_to_f32(const void *src, qat_dtype t, float *dst, size_t n);
qat_status qat_convert_from_f32(const float *src, void *dst, qat_dtype t, size_t n);

#define QAT_MAX_DIMS 4

struct qat_arena;

typedef struct qat_tensor {
  void *data;
  qat_dtype dtype;
  qat_device device;
  int ndim;
  int64_t shape[QAT_MAX_DIMS];
  struct qat_arena *arena; /* owner; NULL when borrowed */
  const char *name;        /* for error messages; may be NULL */
} qat_tensor;

int64_t qat_numel(const qat_tensor *t);
size_t qat_nbytes(const qat_tensor *t);
/* A view of existing memory. */
qat_tensor qat_view(void *data, qat_dtype dtype, qat_device dev, int ndim, const int64_t *shape);
qat_tensor qat_view1(void *data, qat_dtype dtype, qat_device dev, int64_t n0);
qat_tensor qat_view2(void *data, qat_dtype dtype, qat_device dev, int64_t n0, int64_t n1);
/* Rows [r0, r0 + n) of a tensor along dim 0 (a view). */
qat_tensor qat_rows(const qat_tensor *t, int64_t r0, int64_t n);
/* "[4096, 11008]" into buf. */
const char *qat_shape_str(const qat_tensor *t, char *buf, size_t n);

struct qat_backend;

typedef struct qat_arena {
  const char *name;
  const struct qat_backend *be; /* allocates and frees on its device */
  uint8_t *base;
  size_t cap, used;
} qat_arena;

/* Allocate cap bytes on the backend's device; QAT_ENOMEM names the arena and the sizes. */
qat_status qat_arena_init(qat_arena *a, const struct qat_backend *be, const char *name, size_t cap);
/* Carve a zero-initialized tensor (256-byte aligned) out of the arena. */
qat_status qat_arena_tensor(qat_arena *a, qat_tensor *out, qat_dtype dtype, int ndim,
                            const int64_t *shape, const char *name);
/* Bytes a tensor of this size takes inside an arena (with alignment), for sizing up front. */
size_t qat_arena_need(qat_dtype dtype, int64_t numel);
void qat_arena_reset(qat_arena *a);
void qat_arena_free(qat_arena *a);

#ifdef __cplusplus
}
#endif

#endif
