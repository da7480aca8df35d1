/* CPU knowledge-distillation loss (backend.h kd_xent): the device-side replacement for
 * train/distill.c, which stays as the double-precision host reference the tests compare with.
 * Per row of student s[V] and teacher t[V] (N rows, V vocab) with target y:
 *   ms = max s, mt = max t,  s' = (s - ms) / T,  t' = (t - mt) / T
 *   Z1 = sum exp(s - ms),  ZsT = sum exp(s'),  ZtT = sum exp(t'),  A = sum exp(t') (t' - s')
 *   CE = ms + log Z1 - s[y]
 *   KL(pt || psT) = sum pt (log pt - log psT) = A / ZtT - log ZtT + log ZsT   (sum pt = 1)
 *   loss = (1 - alpha) CE + alpha T^2 KL
 *   d = dscale [(1 - alpha) (exp(s - ms) / Z1 - onehot) + alpha T (exp(s') / ZsT - exp(t') / ZtT)]
 * Elementwise math is F32 (expf), the four row sums are double. A teacher probability that is
 * exactly 0 contributes nothing to KL (0 log 0 = 0), so teacher logits of -inf (masked tokens)
 * give a finite loss.
 * Pass 1 reads the row, pass 2 reads element j and then writes d[j]; the target logit is consumed
 * in pass 1, so dlogits may alias student. Rows are independent (OpenMP over rows, each row
 * summed in a fixed order): results do not depend on the thread count. */
#include "backend/cpu/cpu_ops.h"

#include <math.h>

void qat_cpu_register_kd(qat_backend *be);

static qat_status qat_cpu_kd_xent(const qat_backend *be, const qat_tensor *student,
                                  const qat_tensor *teacher, const qat_tensor *targets,
                                  float temperature, float alpha, float dscale,
                                  qat_tensor *losses, qat_tensor *dlogits) {
  (void)be;
  const char *op = "kd_xent";
  CPU_F32(op, student);
  CPU_F32(op, teacher);
  CPU_ARG(op, targets, QAT_I32);
  if (student->ndim < 1) return QAT_FAIL(QAT_EINVAL, "kd_xent: student has ndim 0");
  CPU_SAME(op, student, teacher);
  int64_t N = qat_cpu_rows(student), V = qat_cpu_cols(student);
  CPU_NUMEL(op, targets, N);
  if (losses) {
    CPU_F32(op, losses);
    CPU_NUMEL(op, losses, N);
  }
  if (dlogits) {
    CPU_F32(op, dlogits);
    CPU_SAME(op, student, dlogits);
    if (dlogits->data == teacher->data && N * V > 0)
      return QAT_FAIL(QAT_EINVAL, "kd_xent: dlogits may alias student, not teacher");
  }
  if (!(temperature > 0.0f) || isinf(temperature))
    return QAT_FAIL(QAT_EINVAL, "kd_xent: temperature %g must be finite and > 0",
                    (double)temperature);
  if (!(alpha >= 0.0f && alpha <= 1.0f))
    return QAT_FAIL(QAT_EINVAL, "kd_xent: alpha %g must be in [0, 1]", (double)alpha);
  const int32_t *tg = (const int32_t *)targets->data;
  for (int64_t n = 0; n < N; n++)
    if (tg[n] < -1 || tg[n] >= V)
      return QAT_FAIL(QAT_EINVAL, "kd_xent: target %d at row %lld is outside [0, %lld) and not -1",
                      (int)tg[n], (long long)n, (long long)V);

  const float *S = (const float *)student->data, *Tt = (const float *)teacher->data;
  float *l = losses ? (float *)losses->data : NULL;
  float *d = dlogits ? (float *)dlogits->data : NULL;
  const float invT = 1.0f / temperature;
  const double T = temperature, a = alpha;
#pragma omp parallel for schedule(static) if (N * V > QAT_CPU_PAR_MIN)
  for (int64_t n = 0; n < N; n++) {
    const float *s = S + n * V, *t = Tt + n * V;
    float *dr = d ? d + n * V : NULL;
    const int64_t y = tg[n];
    if (y < 0) {
      if (l) l[n] = 0.0f;
      if (dr)
        for (int64_t j = 0; j < V; j++) dr[j] = 0.0f;
      continue;
    }
    /* pass 1: maxima, then the four sums (NaN logits are skipped by the max and reach the sums) */
    float ms = -INFINITY, mt = -INFINITY;
    for (int64_t j = 0; j < V; j++) {
      if (s[j] > ms) ms = s[j];
      if (t[j] > mt) mt = t[j];
    }
    double z1 = 0, zs = 0, zt = 0, A = 0;
    for (int64_t j = 0; j < V; j++) {
      const float sj = (s[j] - ms) * invT, tj = (t[j] - mt) * invT, et = expf(tj);
      z1 += expf(s[j] - ms);
      zs += expf(sj);
      zt += et;
      if (et != 0.0f) A += (double)et * (double)(tj - sj);
    }
    const float sy = s[y]; /* read before pass 2 may overwrite the row */
    if (l) {
      const double ce = (double)ms + log(z1) - (double)sy;
      const double kl = A / zt - log(zt) + log(zs);
      l[n] = (float)((1 - a) * ce + a * T * T * kl);
    }
    if (!dr) continue;
    /* pass 2: element j is read, then d[j] written (aliasing-safe) */
    const double k1 = (1 - a) * dscale / z1, ks = a * T * dscale / zs, kt = a * T * dscale / zt;
    double e1y = 0;
    for (int64_t j = 0; j < V; j++) {
      const float e1 = expf(s[j] - ms), es = expf((s[j] - ms) * invT);
      const float et = expf((t[j] - mt) * invT);
      if (j == y) e1y = e1;
      dr[j] = (float)(k1 * e1 + ks * es - kt * et);
    }
    /* softmax_y - 1 = -(sum of the others) / Z1: no cancellation when p_y is near 1 */
    const float es = expf((sy - ms) * invT), et = expf((t[y] - mt) * invT);
    dr[y] = (float)(-(1 - a) * dscale * (z1 - e1y) / z1 + ks * es - kt * et);
  }
  return QAT_OK;
}

void qat_cpu_register_kd(qat_backend *be) { be->kd_xent = qat_cpu_kd_xent; }
