/* CPU elementwise and reduction ops: axpy, scale, sumsq (gradient norms, finiteness checks) and
 * the bias forward/backward. Reductions run in an order fixed by the shapes (fixed chunks summed
 * in order; columns in parallel, rows in sequence), so results do not depend on the thread
 * count. */
#include "backend/cpu/cpu_ops.h"

#include <string.h>

/* y += alpha * x */
qat_status qat_cpu_axpy(const qat_backend *be, float alpha, const qat_tensor *x, qat_tensor *y) {
  const char *op = "axpy";
  CPU_F32(op, x);
  CPU_F32(op, y);
  int64_t n = qat_numel(y);
  CPU_NUMEL(op, x, n);
  const float *xp = (const float *)x->data;
  float *yp = (float *)y->data;
#pragma omp parallel for schedule(static) if (n > QAT_CPU_PAR_MIN)
  for (int64_t i = 0; i < n; i++) yp[i] += alpha * xp[i];
  return QAT_OK;
}

/* x *= alpha */
qat_status qat_cpu_scale(const qat_backend *be, float alpha, qat_tensor *x) {
  CPU_F32("scale", x);
  int64_t n = qat_numel(x);
  float *xp = (float *)x->data;
#pragma omp parallel for schedule(static) if (n > QAT_CPU_PAR_MIN)
  for (int64_t i = 0; i < n; i++) xp[i] *= alpha;
  return QAT_OK;
}

/* Sum of squares in double over SUMSQ_CHUNKS fixed chunks (sized by n alone), added in order. */
#define SUMSQ_CHUNKS 256
qat_status qat_cpu_sumsq(const qat_backend *be, const qat_tensor *x, double *out) {
  CPU_F32("sumsq", x);
  if (!out) return QAT_FAIL(QAT_EINVAL, "sumsq: out is NULL");
  int64_t n = qat_numel(x);
  const float *xp = (const float *)x->data;
  int64_t chunk = (n + SUMSQ_CHUNKS - 1) / SUMSQ_CHUNKS;
  double part[SUMSQ_CHUNKS];
#pragma omp parallel for schedule(static) if (n > QAT_CPU_PAR_MIN)
  for (int c = 0; c < SUMSQ_CHUNKS; c++) {
    int64_t i0 = (int64_t)c * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
    double s = 0.0;
    for (int64_t i = i0; i < i1; i++) s += (double)xp[i] * xp[i];
    part[c] = s;
  }
  double s = 0.0;
  for (int c = 0; c < SUMSQ_CHUNKS; c++) s += part[c];
  *out = s;
  return QAT_OK;
}

/* y[N, C] += b[C] */
qat_status qat_cpu_bias_fwd(const qat_backend *be, qat_tensor *y, const qat_tensor *b) {
  const char *op = "bias_fwd";
  CPU_F32(op, y);
  CPU_F32(op, b);
  if (y->ndim < 1) return QAT_FAIL(QAT_EINVAL, "bias_fwd: y has ndim 0");
  int64_t N = qat_cpu_rows(y), C = qat_cpu_cols(y);
  CPU_NUMEL(op, b, C);
  float *yp = (float *)y->data;
  const float *bp = (const float *)b->data;
#pragma omp parallel for schedule(static) if (N * C > QAT_CPU_PAR_MIN)
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++) yp[n * C + c] += bp[c];
  return QAT_OK;
}

/* db[C] += sum over rows of dy[N, C]: blocks of columns in parallel, rows in order inside a block
 * (accumulated in double, so the row order is the only order). */
#define COLBLK 16 /* one 64-byte cache line of F32 per block: no false sharing */
qat_status qat_cpu_bias_bwd(const qat_backend *be, const qat_tensor *dy, qat_tensor *db) {
  const char *op = "bias_bwd";
  CPU_F32(op, dy);
  CPU_F32(op, db);
  if (dy->ndim < 1) return QAT_FAIL(QAT_EINVAL, "bias_bwd: dy has ndim 0");
  int64_t N = qat_cpu_rows(dy), C = qat_cpu_cols(dy);
  CPU_NUMEL(op, db, C);
  const float *g = (const float *)dy->data;
  float *d = (float *)db->data;
  int64_t nblk = (C + COLBLK - 1) / COLBLK;
#pragma omp parallel for schedule(static) if (N * C > QAT_CPU_PAR_MIN)
  for (int64_t blk = 0; blk < nblk; blk++) {
    int64_t c0 = blk * COLBLK, w = C - c0 < COLBLK ? C - c0 : COLBLK;
    double acc[COLBLK];
    memset(acc, 0, sizeof acc);
    for (int64_t n = 0; n < N; n++)
      for (int64_t j = 0; j < w; j++) acc[j] += g[n * C + c0 + j];
    for (int64_t j = 0; j < w; j++) d[c0 + j] += (float)acc[j];
  }
  return QAT_OK;
}
