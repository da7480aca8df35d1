/* CPU RMSNorm (LLaMA): out = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps), per row of
 * x[N, C]; rstd[N] is kept for the backward. Backward, with xh = x * rstd and g = dout * w:
 *   dx += rstd * (g - xh * mean(g * xh)),   dw += sum over rows of dout * xh.
 * dx or dw may be NULL to skip it (frozen norm weights, e.g. E2E-QP). Row sums are in double;
 * dw is reduced by blocks of columns in parallel with rows in order (deterministic). */
#include "backend/cpu/cpu_ops.h"

#include <math.h>
#include <string.h>

#define COLBLK 16 /* one 64-byte cache line of F32 per block: no false sharing */

qat_status qat_cpu_rmsnorm_fwd(const qat_backend *be, const qat_tensor *x, const qat_tensor *w,
                               float eps, qat_tensor *out, qat_tensor *rstd) {
  const char *op = "rmsnorm_fwd";
  CPU_F32(op, x);
  CPU_F32(op, w);
  CPU_F32(op, out);
  CPU_F32(op, rstd);
  if (x->ndim < 1) return QAT_FAIL(QAT_EINVAL, "rmsnorm_fwd: x has ndim 0");
  int64_t N = qat_cpu_rows(x), C = qat_cpu_cols(x);
  CPU_SAME(op, x, out);
  CPU_NUMEL(op, w, C);
  CPU_NUMEL(op, rstd, N);
  if (!(eps >= 0.0f)) return QAT_FAIL(QAT_EINVAL, "rmsnorm_fwd: eps %g is not >= 0", (double)eps);
  if (C == 0) return QAT_FAIL(QAT_EINVAL, "rmsnorm_fwd: x has 0 channels");
  const float *xp = (const float *)x->data, *wp = (const float *)w->data;
  float *o = (float *)out->data, *r = (float *)rstd->data;
#pragma omp parallel for schedule(static) if (N * C > QAT_CPU_PAR_MIN)
  for (int64_t n = 0; n < N; n++) {
    const float *xr = xp + n * C;
    double ss = 0.0;
    for (int64_t c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
    double rs = 1.0 / sqrt(ss / (double)C + (double)eps);
    for (int64_t c = 0; c < C; c++) o[n * C + c] = (float)((double)xr[c] * rs * wp[c]);
    r[n] = (float)rs;
  }
  return QAT_OK;
}

qat_status qat_cpu_rmsnorm_bwd(const qat_backend *be, const qat_tensor *dout, const qat_tensor *x,
                               const qat_tensor *w, const qat_tensor *rstd, qat_tensor *dx,
                               qat_tensor *dw) {
  const char *op = "rmsnorm_bwd";
  CPU_F32(op, dout);
  CPU_F32(op, x);
  CPU_F32(op, w);
  CPU_F32(op, rstd);
  if (x->ndim < 1) return QAT_FAIL(QAT_EINVAL, "rmsnorm_bwd: x has ndim 0");
  int64_t N = qat_cpu_rows(x), C = qat_cpu_cols(x);
  CPU_SAME(op, x, dout);
  CPU_NUMEL(op, w, C);
  CPU_NUMEL(op, rstd, N);
  if (dx) {
    CPU_F32(op, dx);
    CPU_SAME(op, x, dx);
  }
  if (dw) {
    CPU_F32(op, dw);
    CPU_NUMEL(op, dw, C);
  }
  const float *g = (const float *)dout->data, *xp = (const float *)x->data;
  const float *wp = (const float *)w->data, *r = (const float *)rstd->data;
  if (dx) {
    float *d = (float *)dx->data;
#pragma omp parallel for schedule(static) if (N * C > QAT_CPU_PAR_MIN)
    for (int64_t n = 0; n < N; n++) {
      const float *xr = xp + n * C, *gr = g + n * C;
      double rs = r[n], dot = 0.0;
      for (int64_t c = 0; c < C; c++) dot += (double)gr[c] * wp[c] * ((double)xr[c] * rs);
      double mean = C ? dot / (double)C : 0.0;
      for (int64_t c = 0; c < C; c++) {
        double xh = (double)xr[c] * rs;
        d[n * C + c] += (float)(rs * ((double)gr[c] * wp[c] - xh * mean));
      }
    }
  }
  if (dw) {
    float *d = (float *)dw->data;
    int64_t nblk = (C + COLBLK - 1) / COLBLK;
#pragma omp parallel for schedule(static) if (N * C > QAT_CPU_PAR_MIN)
    for (int64_t blk = 0; blk < nblk; blk++) {
      int64_t c0 = blk * COLBLK, wd = C - c0 < COLBLK ? C - c0 : COLBLK;
      double acc[COLBLK];
      memset(acc, 0, sizeof acc);
      for (int64_t n = 0; n < N; n++) {
        double rs = r[n];
        for (int64_t j = 0; j < wd; j++)
          acc[j] += (double)g[n * C + c0 + j] * ((double)xp[n * C + c0 + j] * rs);
      }
      for (int64_t j = 0; j < wd; j++) d[c0 + j] += (float)acc[j];
    }
  }
  return QAT_OK;
}
