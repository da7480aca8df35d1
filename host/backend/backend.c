/* Backend selection, quantizer spec helpers and tensor transfers (device-neutral). */
#include "backend/backend.h"

#include <string.h>

int64_t qat_qspec_groups(const qat_qspec *q, int64_t cols) {
  if (q->group > 0) return (cols + q->group - 1) / q->group;
  return 1;
}

void qat_qspec_sshape(const qat_qspec *q, int64_t rows, int64_t cols, int64_t shape[2]) {
  if (q->group == 0) {
    shape[0] = 1;
    shape[1] = 1;
  } else {
    shape[0] = rows;
    shape[1] = qat_qspec_groups(q, cols);
  }
}

qat_status qat_qspec_check(const qat_qspec *q) {
  if (q->bits < 2 || q->bits > 8)
    return QAT_FAIL(QAT_EINVAL, "quant.bits = %d: must be in 2..8", q->bits);
  if (q->group < -1)
    return QAT_FAIL(QAT_EINVAL, "quant.group = %d: must be > 0, -1 (per-channel) or 0 (per-tensor)",
                    q->group);
  if (q->sym != 0 && q->sym != 1) return QAT_FAIL(QAT_EINVAL, "quant.sym must be 0 or 1");
  if (q->grad < QAT_QGRAD_STE || q->grad > QAT_QGRAD_LSQ)
    return QAT_FAIL(QAT_EINVAL, "quant.grad: unknown mode %d", (int)q->grad);
  return QAT_OK;
}

int qat_cuda_available(void) {
#ifdef QAT_HAVE_CUDA
  return qat_cuda_device_count() > 0;
#else
  return 0;
#endif
}

qat_status qat_backend_cuda(qat_backend **out) {
#ifdef QAT_HAVE_CUDA
  static qat_backend be;
  static int ready = 0;
  if (!ready) {
    if (qat_cuda_device_count() <= 0)
      return QAT_FAIL(QAT_EDEVICE, "device cuda: no CUDA GPU is visible");
    QAT_TRY(qat_cuda_create(&be));
    ready = 1;
  }
  *out = &be;
  return QAT_OK;
#else
  (void)out;
  return QAT_FAIL(QAT_EDEVICE, "device cuda: qat was built without the CUDA backend");
#endif
}

qat_status qat_backend_by_name(const char *name, qat_backend **out) {
  if (strcmp(name, "cpu") == 0) {
    *out = qat_backend_cpu();
    return QAT_OK;
  }
  if (strcmp(name, "cuda") == 0) return qat_backend_cuda(out);
  return QAT_FAIL(QAT_EUSAGE, "device \"%s\": expected cpu or cuda", name);
}

static qat_status same_size(const qat_tensor *a, const qat_tensor *b) {
  if (qat_numel(a) != qat_numel(b) || a->dtype != b->dtype)
    return QAT_FAIL(QAT_EINVAL, "tensor %s: transfer between mismatched tensors (%lld %s vs %lld %s)",
                    a->name ? a->name : "?", (long long)qat_numel(a), qat_dtype_name(a->dtype),
                    (long long)qat_numel(b), qat_dtype_name(b->dtype));
  return QAT_OK;
}

qat_status qat_tensor_upload(const qat_backend *be, qat_tensor *dst, const qat_tensor *host_src) {
  QAT_TRY(same_size(dst, host_src));
  return be->upload(be, dst->data, host_src->data, qat_nbytes(dst));
}

qat_status qat_tensor_download(const qat_backend *be, qat_tensor *host_dst, const qat_tensor *src) {
  QAT_TRY(same_size(host_dst, src));
  return be->download(be, host_dst->data, src->data, qat_nbytes(src));
}
