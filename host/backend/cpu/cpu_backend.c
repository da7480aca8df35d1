/* The CPU backend: the reference every GPU op is tested against. Memory ops live here; op
 * families register themselves (fakequant.c, nn.c). */
#include "backend/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>

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

/* MemAvailable (what can be allocated without swapping) when /proc/meminfo has it; else sysinfo's
 * free + buffer RAM. */
static qat_status cpu_mem_info(const qat_backend *be, size_t *free_bytes, size_t *total_bytes) {
  struct sysinfo si;
  if (sysinfo(&si) != 0) return QAT_FAIL(QAT_EIO, "cpu: sysinfo failed");
  *total_bytes = (size_t)si.totalram * si.mem_unit;
  *free_bytes = (size_t)(si.freeram + si.bufferram) * si.mem_unit;
  FILE *f = fopen("/proc/meminfo", "r");
  if (!f) return QAT_OK;
  char line[256];
  unsigned long long kb = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
      *free_bytes = (size_t)kb * 1024;
      break;
    }
  fclose(f);
  return QAT_OK;
}

static qat_status cpu_convert(const qat_backend *be, qat_tensor *dst, const qat_tensor *src) {
  size_t n = (size_t)qat_numel(src);
  if ((size_t)qat_numel(dst) != n) return QAT_FAIL(QAT_EINVAL, "convert: numel mismatch");
  if (src->dtype == QAT_F32) return qat_convert_from_f32(src->data, dst->data, dst->dtype, n);
  if (dst->dtype == QAT_F32) return qat_convert_to_f32(src->data, src->dtype, dst->data, n);
  int fl = (src->dtype == QAT_BF16 || src->dtype == QAT_F16) &&
           (dst->dtype == QAT_BF16 || dst->dtype == QAT_F16);
  if (!fl)
    return QAT_FAIL(QAT_EUNSUPPORTED, "convert %s -> %s", qat_dtype_name(src->dtype),
                    qat_dtype_name(dst->dtype));
  if (src->dtype == dst->dtype) {
    memmove(dst->data, src->data, n * 2);
    return QAT_OK;
  }
  /* F16 <-> BF16: widening to F32 is exact, so one rounding, in chunks */
  float buf[4096];
  for (size_t i = 0; i < n; i += 4096) {
    size_t k = n - i < 4096 ? n - i : 4096;
    QAT_TRY(qat_convert_to_f32((const uint16_t *)src->data + i, src->dtype, buf, k));
    QAT_TRY(qat_convert_from_f32(buf, (uint16_t *)dst->data + i, dst->dtype, k));
  }
  return QAT_OK;
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
    be.mem_info = cpu_mem_info;
    qat_cpu_register_quant(&be);
    qat_cpu_register_nn(&be);
    qat_cpu_register_codes(&be);
    qat_cpu_register_qgemm(&be);
    qat_cpu_register_qgemm_ds(&be);
    ready = 1;
  }
  return &be;
}
