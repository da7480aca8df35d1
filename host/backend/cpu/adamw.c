/* CPU AdamW with PyTorch semantics (torch.optim.AdamW, decoupled weight decay), step t >= 1:
 *   p -= lr * wd * p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * Per element in double, stored back as F32 (param, m, v). */
#include "backend/cpu/cpu_ops.h"

#include <math.h>

qat_status qat_cpu_adamw(const qat_backend *be, qat_tensor *param, const qat_tensor *grad,
                         qat_tensor *m, qat_tensor *v, float lr, float beta1, float beta2,
                         float eps, float weight_decay, int64_t t) {
  const char *op = "adamw";
  CPU_F32(op, param);
  CPU_F32(op, grad);
  CPU_F32(op, m);
  CPU_F32(op, v);
  int64_t n = qat_numel(param);
  CPU_NUMEL(op, grad, n);
  CPU_NUMEL(op, m, n);
  CPU_NUMEL(op, v, n);
  if (t < 1) return QAT_FAIL(QAT_EINVAL, "adamw: step t = %lld, expected >= 1", (long long)t);
  if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f))
    return QAT_FAIL(QAT_EINVAL, "adamw: betas (%g, %g) outside [0, 1)", (double)beta1,
                    (double)beta2);
  if (!(eps >= 0.0f) || !isfinite(lr) || !isfinite(weight_decay))
    return QAT_FAIL(QAT_EINVAL, "adamw: bad hyperparameters lr %g eps %g weight_decay %g",
                    (double)lr, (double)eps, (double)weight_decay);
  const double b1 = beta1, b2 = beta2;
  const double decay = 1.0 - (double)lr * weight_decay;
  const double step = (double)lr / (1.0 - pow(b1, (double)t));
  const double bc2 = sqrt(1.0 - pow(b2, (double)t));
  float *p = (float *)param->data, *mp = (float *)m->data, *vp = (float *)v->data;
  const float *g = (const float *)grad->data;
#pragma omp parallel for schedule(static) if (n > QAT_CPU_PAR_MIN)
  for (int64_t i = 0; i < n; i++) {
    double gi = g[i];
    double mi = b1 * mp[i] + (1.0 - b1) * gi;
    double vi = b2 * vp[i] + (1.0 - b2) * gi * gi;
    double pi = (double)p[i] * decay;
    pi -= step * mi / (sqrt(vi) / bc2 + (double)eps);
    mp[i] = (float)mi;
    vp[i] = (float)vi;
    p[i] = (float)pi;
  }
  return QAT_OK;
}
