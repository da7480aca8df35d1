/* CPU softmax cross-entropy over logits[N, V] (any leading dims) with targets I32 [N]:
 *   losses[n] = logsumexp(logits[n]) - logits[n, target]   (0 when target == -1: ignored)
 *   dlogits[n] = dscale * (softmax(logits[n]) - onehot(target))   (zero row when ignored)
 * The max is subtracted before exp (F32 expf, within an ulp per term), sums are in double.
 * dlogits may alias logits (the model turns its logits buffer into the gradient in place): each
 * element is read before the same element is written, and the target logit is saved first.
 * losses may be NULL when only the gradient is wanted. Targets are all checked first. */
#include "backend/cpu/cpu_ops.h"

#include <math.h>

qat_status qat_cpu_xent(const qat_backend *be, const qat_tensor *logits, const qat_tensor *targets,
                        qat_tensor *losses, qat_tensor *dlogits, float dscale) {
  const char *op = "xent";
  CPU_F32(op, logits);
  CPU_ARG(op, targets, QAT_I32);
  if (logits->ndim < 1) return QAT_FAIL(QAT_EINVAL, "xent: logits has ndim 0");
  int64_t N = qat_cpu_rows(logits), V = qat_cpu_cols(logits);
  CPU_NUMEL(op, targets, N);
  if (losses) {
    CPU_F32(op, losses);
    CPU_NUMEL(op, losses, N);
  }
  if (dlogits) {
    CPU_F32(op, dlogits);
    CPU_SAME(op, logits, dlogits);
  }
  const int32_t *tg = (const int32_t *)targets->data;
  for (int64_t n = 0; n < N; n++)
    if (tg[n] < -1 || tg[n] >= V)
      return QAT_FAIL(QAT_EINVAL, "xent: target %d at row %lld is outside [0, %lld) and not -1",
                      (int)tg[n], (long long)n, (long long)V);
  const float *x = (const float *)logits->data;
  float *l = losses ? (float *)losses->data : NULL;
  float *d = dlogits ? (float *)dlogits->data : NULL;
#pragma omp parallel for schedule(static) if (N * V > QAT_CPU_PAR_MIN)
  for (int64_t n = 0; n < N; n++) {
    const float *xr = x + n * V;
    int64_t t = tg[n];
    if (t < 0) {
      if (l) l[n] = 0.0f;
      if (d)
        for (int64_t c = 0; c < V; c++) d[n * V + c] = 0.0f;
      continue;
    }
    float m = -INFINITY;
    for (int64_t c = 0; c < V; c++)
      if (xr[c] > m) m = xr[c];
    float xt = xr[t]; /* read before the row may be overwritten */
    double sum = 0.0;
    if (d) { /* d = exp(x - m), written where x was read (aliasing-safe), then normalized */
      float *dr = d + n * V;
      for (int64_t c = 0; c < V; c++) {
        float e = expf(xr[c] - m);
        dr[c] = e;
        sum += e;
      }
      double et = dr[t], k = dscale / sum;
      for (int64_t c = 0; c < V; c++) dr[c] = (float)(k * dr[c]);
      /* softmax_t - 1 = -(sum of the others) / sum: no cancellation when p_t is near 1 */
      dr[t] = (float)(-(double)dscale * (sum - et) / sum);
    } else {
      for (int64_t c = 0; c < V; c++) sum += expf(xr[c] - m);
    }
    if (l) l[n] = (float)((double)m + log(sum) - (double)xt);
  }
  return QAT_OK;
}
