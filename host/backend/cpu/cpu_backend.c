/* The CPU backend: the reference every GPU op is tested against. Memory ops live here; op
 * families register themselves (fakequant.c, nn.c). */
#include "backend/backend.h"

#include <stdlib.h>
#include <string.h>

static qat_status cpu_alloc(const qat_backend *be, void **p, size_t bytes) {
  *p = NULL;
  if (posix_memalign(p, 256, bytes ? bytes : 1) != 0 || !*p)
    return QAT_FAIL(QAT_ENOMEM, "cpu: cannot allocate %zu bytes", bytes);
  return QAT_OK;
}
static void cpu_free(const qat_backend *be, void *p) { free(p); }
static qat_status cpu_memset0(const qat_backend *be, void *p, size_t bytes) {
  memset(p, 0, bytes);
  return QAT_OK;
}
static qat_status cpu_copy(const qat_backend *be, void *dst, const void *src, size_t bytes) {
  memmove(dst, src, bytes);
  return QAT_OK;
}
static qat_status cpu_host_alloc(const qat_backend *be, void **p, size_t bytes) {
  return cpu_alloc(be, p, bytes);
}
static qat_status cpu_sync(const qat_backend *be) { return QAT_OK; }

static qat_status cpu_convert(const qat_backend *be, qat_tensor *dst, const qat_tensor *src) {
  size_t n = (size_t)qat_numel(src);
  if ((size_t)qat_numel(dst) != n) return QAT_FAIL(QAT_EINVAL, "convert: numel mismatch");
  if (src->dtype == QAT_F32) return qat_convert_from_f32(src->data, dst->data, dst->dtype, n);
  if (dst->dtype == QAT_F32) return qat_convert_to_f32(src->data, src->dtype, dst->data, n);
  return QAT_FAIL(QAT_EUNSUPPORTED, "convert %s -> %s", qat_dtype_name(src->dtype),
                  qat_dtype_name(dst->dtype));
}

qat_backend *qat_backend_cpu(void) {
  static qat_backend be;
  static int ready = 0;
  if (!ready) {
    memset(&be, 0, sizeof be);
    be.name = "cpu";
    be.device = QAT_DEV_CPU;
    be.alloc = cpu_alloc;
    be.free = cpu_free;
    be.memset0 = cpu_memset0;
    be.upload = cpu_copy;
    be.download = cpu_copy;
    be.copy = cpu_copy;
    be.sync = cpu_sync;
    be.convert = cpu_convert;
    be.host_alloc = cpu_host_alloc;
    be.host_free = cpu_free;
    qat_cpu_register_quant(&be);
    qat_cpu_register_nn(&be);
    qat_cpu_register_codes(&be);
    ready = 1;
  }
  return &be;
}
