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
  if (q->init != QAT_QINIT_MINMAX && q->init != QAT_QINIT_MSE)
    return QAT_FAIL(QAT_EINVAL, "quant.init: unknown mode %d (0 minmax, 1 mse)", (int)q->init);
  if (q->scale_f16 != 0 && q->scale_f16 != 1)
    return QAT_FAIL(QAT_EINVAL, "quant.scale_dtype: scale_f16 must be 0 (f32) or 1 (f16)");
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

/* ---- argument checks shared by the quantizer ops of every backend */

static const char *role_name(const qat_tensor *t, const char *role) {
  return t && t->name ? t->name : role;
}

/* t must exist, live on be's device, have a dtype in `dtypes` (a mask of 1u << qat_dtype) and
 * shape [r, c]. */
qat_status qat_fq_check_tensor(const qat_backend *be, const char *op, const char *role,
                               const qat_tensor *t, unsigned dtypes, int64_t r, int64_t c) {
  if (!t || !t->data) return QAT_FAIL(QAT_EINVAL, "%s: tensor %s is missing", op, role);
  const char *nm = role_name(t, role);
  if (t->device != be->device)
    return QAT_FAIL(QAT_EINVAL, "%s: tensor %s (%s) is not on the %s device", op, role, nm,
                    be->name);
  if (!(dtypes & (1u << (unsigned)t->dtype)))
    return QAT_FAIL(QAT_EINVAL, "%s: tensor %s (%s) has dtype %s, not accepted here", op, role,
                    nm, qat_dtype_name(t->dtype));
  if (t->ndim != 2 || t->shape[0] != r || t->shape[1] != c) {
    char buf[64];
    return QAT_FAIL(QAT_EINVAL, "%s: tensor %s (%s) has shape %s, expected [%lld, %lld]", op,
                    role, nm, qat_shape_str(t, buf, sizeof buf), (long long)r, (long long)c);
  }
  return QAT_OK;
}

/* Spec, w (F32 [R, C] with R, C >= 1), s and (asym) z shapes. z may be NULL when sym. */
qat_status qat_fq_check_args(const qat_backend *be, const char *op, const qat_qspec *q,
                             const qat_tensor *w, const qat_tensor *s, const qat_tensor *z) {
  if (!q) return QAT_FAIL(QAT_EINVAL, "%s: quantizer spec is missing", op);
  QAT_TRY(qat_qspec_check(q));
  if (!w || !w->data) return QAT_FAIL(QAT_EINVAL, "%s: tensor w is missing", op);
  if (w->ndim != 2 || w->shape[0] < 1 || w->shape[1] < 1) {
    char buf[64];
    return QAT_FAIL(QAT_EINVAL, "%s: tensor w (%s) has shape %s, expected a non-empty [R, C]", op,
                    role_name(w, "w"), qat_shape_str(w, buf, sizeof buf));
  }
  int64_t R = w->shape[0], C = w->shape[1], ss[2];
  QAT_TRY(qat_fq_check_tensor(be, op, "w", w, 1u << QAT_F32, R, C));
  qat_qspec_sshape(q, R, C, ss);
  QAT_TRY(qat_fq_check_tensor(be, op, "s", s, 1u << QAT_F32, ss[0], ss[1]));
  if (!q->sym) QAT_TRY(qat_fq_check_tensor(be, op, "z", z, 1u << QAT_F32, ss[0], ss[1]));
  return QAT_OK;
}

/* Spec, codes (U8 [R, C], R, C >= 1), s and (asym) z (s may be NULL: dq_backward). */
qat_status qat_codes_check_args(const qat_backend *be, const char *op, const qat_qspec *q,
                                const qat_tensor *codes, const qat_tensor *s,
                                const qat_tensor *z) {
  if (!q) return QAT_FAIL(QAT_EINVAL, "%s: quantizer spec is missing", op);
  QAT_TRY(qat_qspec_check(q));
  if (!codes || !codes->data) return QAT_FAIL(QAT_EINVAL, "%s: tensor codes is missing", op);
  if (codes->ndim != 2 || codes->shape[0] < 1 || codes->shape[1] < 1) {
    char buf[64];
    return QAT_FAIL(QAT_EINVAL, "%s: tensor codes (%s) has shape %s, expected a non-empty [R, C]",
                    op, codes->name ? codes->name : "codes",
                    qat_shape_str(codes, buf, sizeof buf));
  }
  int64_t R = codes->shape[0], C = codes->shape[1], ss[2];
  QAT_TRY(qat_fq_check_tensor(be, op, "codes", codes, 1u << QAT_U8, R, C));
  qat_qspec_sshape(q, R, C, ss);
  if (s) QAT_TRY(qat_fq_check_tensor(be, op, "s", s, 1u << QAT_F32, ss[0], ss[1]));
  if (!q->sym) QAT_TRY(qat_fq_check_tensor(be, op, "z", z, 1u << QAT_F32, ss[0], ss[1]));
  return QAT_OK;
}
