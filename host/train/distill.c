/* Distillation loss (KL on temperature-softened logits mixed with cross-entropy) on host rows, in
 * double precision. The trainer's device path is the backend op kd_xent (backend.h; CPU in
 * backend/cpu/kd.c, CUDA in cuda/kd.cu); this function stays as the reference its tests compare
 * with (tests/test_kd.c). */
#include "train/distill.h"

#include <math.h>
#include <stdlib.h>

/* log-softmax of x[V] / T into out[V] (double) */
static void log_softmax(const float *x, int64_t V, double T, double *out) {
  double mx = -INFINITY;
  for (int64_t j = 0; j < V; j++)
    if (x[j] / T > mx) mx = x[j] / T;
  double s = 0;
  for (int64_t j = 0; j < V; j++) s += exp(x[j] / T - mx);
  double lse = mx + log(s);
  for (int64_t j = 0; j < V; j++) out[j] = x[j] / T - lse;
}

qat_status qat_distill_loss(const float *student, const float *teacher, const int32_t *targets,
                            int64_t N, int64_t V, double temperature, double alpha, double scale,
                            float *dlogits, double *loss, double *ce, int64_t *count) {
  if (!(temperature > 0)) return QAT_FAIL(QAT_EINVAL, "distill.temperature must be > 0");
  if (alpha < 0 || alpha > 1) return QAT_FAIL(QAT_EINVAL, "distill.alpha must be in [0, 1]");
  for (int64_t i = 0; i < N; i++) /* all checked before anything is written */
    if (targets[i] < -1 || targets[i] >= V)
      return QAT_FAIL(QAT_EINVAL, "distill: target %d at row %lld is outside [0, %lld) and not -1",
                      targets[i], (long long)i, (long long)V);
  double *ls1 = malloc((size_t)V * sizeof *ls1), *lsT = malloc((size_t)V * sizeof *lsT);
  double *ltT = malloc((size_t)V * sizeof *ltT);
  if (!ls1 || !lsT || !ltT) {
    free(ls1);
    free(lsT);
    free(ltT);
    return QAT_FAIL(QAT_ENOMEM, "distill: out of memory");
  }
  double T = temperature, total = 0, ce_sum = 0;
  int64_t cnt = 0;
  for (int64_t i = 0; i < N; i++) {
    const float *s = student + i * V, *t = teacher + i * V;
    float *d = dlogits ? dlogits + i * V : NULL;
    int32_t y = targets[i];
    if (y < 0) {
      if (d)
        for (int64_t j = 0; j < V; j++) d[j] = 0;
      continue;
    }
    log_softmax(s, V, 1.0, ls1);
    log_softmax(s, V, T, lsT);
    log_softmax(t, V, T, ltT);
    double kl = 0;
    for (int64_t j = 0; j < V; j++) {
      double pt = exp(ltT[j]);
      if (pt > 0) kl += pt * (ltT[j] - lsT[j]); /* 0 log 0 = 0: masked (-inf) teacher logits */
    }
    double c = -ls1[y];
    total += (1 - alpha) * c + alpha * T * T * kl;
    ce_sum += c;
    cnt++;
    if (!d) continue;
    for (int64_t j = 0; j < V; j++) {
      double g = (1 - alpha) * (exp(ls1[j]) - (j == y)) + alpha * T * (exp(lsT[j]) - exp(ltT[j]));
      d[j] = (float)(scale * g);
    }
  }
  free(ls1);
  free(lsT);
  free(ltT);
  *loss = total * scale;
  if (ce) *ce = ce_sum;
  if (count) *count = cnt;
  return QAT_OK;
}
