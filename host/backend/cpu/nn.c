/* CPU dense, LLaMA-block and optimizer ops: registration in the op table, and the argument checks
 * the op files share (cpu_ops.h). The ops themselves live one family per file: gemm.c,
 * elementwise.c (axpy, scale, sumsq, bias), embedding.c, rmsnorm.c, rope.c, attention.c,
 * swiglu.c, xent.c, adamw.c. */
#include "backend/cpu/cpu_ops.h"

#include <stdio.h>


int64_t qat_cpu_cols(const qat_tensor *t) { return t->ndim >= 1 ? t->shape[t->ndim - 1] : 1; }

int64_t qat_cpu_rows(const qat_tensor *t) {
  int64_t r = 1;
  for (int i = 0; i + 1 < t->ndim; i++) r *= t->shape[i];
  return r;
}

/* " (name)" when the tensor has a name, for messages. */
static const char *tname(const qat_tensor *t, char *buf, size_t n) {
  if (!t || !t->name) return "";
  snprintf(buf, n, " (%s)", t->name);
  return buf;
}

qat_status qat_cpu_check_arg(const char *op, const char *what, const qat_tensor *t, qat_dtype want,
                             const char *file, int line) {
  if (!t) return qat_fail(QAT_EINVAL, file, line, "%s: tensor %s is NULL", op, what);
  char nb[80];
  const char *nm = tname(t, nb, sizeof nb);
  if (t->device != QAT_DEV_CPU)
    return qat_fail(QAT_EINVAL, file, line, "%s: tensor %s%s is not on the cpu device", op, what,
                    nm);
  if (t->ndim < 0 || t->ndim > QAT_MAX_DIMS)
    return qat_fail(QAT_EINVAL, file, line, "%s: tensor %s%s has ndim %d", op, what, nm, t->ndim);
  for (int i = 0; i < t->ndim; i++)
    if (t->shape[i] < 0)
      return qat_fail(QAT_EINVAL, file, line, "%s: tensor %s%s has a negative dim", op, what, nm);
  if (t->dtype != want)
    return qat_fail(QAT_EUNSUPPORTED, file, line,
                    "%s: tensor %s%s is %s; the cpu backend takes %s here", op, what, nm,
                    qat_dtype_name(t->dtype), qat_dtype_name(want));
  if (!t->data && qat_numel(t) > 0)
    return qat_fail(QAT_EINVAL, file, line, "%s: tensor %s%s has no data", op, what, nm);
  return QAT_OK;
}

qat_status qat_cpu_check_same(const char *op, const char *an, const qat_tensor *a, const char *bn,
                              const qat_tensor *b, const char *file, int line) {
  int same = a->ndim == b->ndim;
  for (int i = 0; same && i < a->ndim; i++) same = a->shape[i] == b->shape[i];
  if (same) return QAT_OK;
  char sa[96], sb[96];
  return qat_fail(QAT_EINVAL, file, line, "%s: %s %s does not match %s %s", op, bn,
                  qat_shape_str(b, sb, sizeof sb), an, qat_shape_str(a, sa, sizeof sa));
}

qat_status qat_cpu_check_numel(const char *op, const char *what, const qat_tensor *t, int64_t n,
                               const char *file, int line) {
  if (qat_numel(t) == n) return QAT_OK;
  char s[96];
  return qat_fail(QAT_EINVAL, file, line, "%s: %s %s has %lld elements, expected %lld", op, what,
                  qat_shape_str(t, s, sizeof s), (long long)qat_numel(t), (long long)n);
}

qat_status qat_cpu_check_cols(const char *op, const char *what, const qat_tensor *t, int64_t cols,
                              const char *file, int line) {
  if (t->ndim >= 1 && t->shape[t->ndim - 1] == cols) return QAT_OK;
  char s[96];
  return qat_fail(QAT_EINVAL, file, line, "%s: %s %s should have a last dim of %lld", op, what,
                  qat_shape_str(t, s, sizeof s), (long long)cols);
}

void qat_cpu_register_kd(qat_backend *be); /* kd.c: kd_xent */
void qat_cpu_register_decode(qat_backend *be); /* decode_attention.c: attention_decode */

void qat_cpu_register_nn(qat_backend *be) {
  be->gemm = qat_cpu_gemm;
  be->axpy = qat_cpu_axpy;
  be->scale = qat_cpu_scale;
  be->sumsq = qat_cpu_sumsq;
  be->bias_fwd = qat_cpu_bias_fwd;
  be->bias_bwd = qat_cpu_bias_bwd;
  be->embedding_fwd = qat_cpu_embedding_fwd;
  be->embedding_bwd = qat_cpu_embedding_bwd;
  be->rmsnorm_fwd = qat_cpu_rmsnorm_fwd;
  be->rmsnorm_bwd = qat_cpu_rmsnorm_bwd;
  be->rope = qat_cpu_rope;
  be->attention_fwd = qat_cpu_attention_fwd;
  be->attention_bwd = qat_cpu_attention_bwd;
  qat_cpu_register_decode(be);
  be->swiglu_fwd = qat_cpu_swiglu_fwd;
  be->swiglu_bwd = qat_cpu_swiglu_bwd;
  be->xent = qat_cpu_xent;
  qat_cpu_register_kd(be);
  be->adamw = qat_cpu_adamw;
}
