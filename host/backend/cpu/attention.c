/* CPU causal self-attention with grouped-query heads, forward and backward (the reference for the
 * CUDA attention kernels). Dimensions: B batch, T time, Hq query heads, Hkv key/value heads
 * (Hq % Hkv == 0; query head h reads kv head h / (Hq / Hkv)), D head dim.
 *   q[B, T, Hq, D], k, v[B, T, Hkv, D], out[B, T, Hq, D], lse[B, Hq, T]
 * Forward, per query row i: s_j = scale * q_i . k_j for j <= i; lse_i = logsumexp_j s_j (max
 * subtracted first); out_i = sum_j exp(s_j - lse_i) v_j. Scores, sums and outputs in double.
 * Backward (exact), with P_ij = exp(s_ij - lse_i), dP_ij = dO_i . v_j, Dl_i = dO_i . O_i,
 * dS_ij = P_ij (dP_ij - Dl_i):
 *   dq_i = scale sum_j dS_ij k_j,  dk_j = scale sum_{h in group, i >= j} dS_ij q_i,
 *   dv_j = sum_{h in group, i >= j} P_ij dO_i.
 * Two passes recompute P: one over query rows (dq), one over key rows (dk, dv). Every output
 * element is owned by one loop iteration that sums in a fixed order: no atomics, and the result
 * does not depend on the thread count. */
#include "backend/cpu/cpu_ops.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

typedef struct dims {
  int64_t B, T, Hq, Hkv, D, G; /* G = Hq / Hkv query heads per kv head */
} dims;

static qat_status check_qkv(const char *op, const qat_tensor *q, const qat_tensor *k,
                            const qat_tensor *v, float scale, dims *d) {
  CPU_F32(op, q);
  CPU_F32(op, k);
  CPU_F32(op, v);
  char s1[96], s2[96];
  if (q->ndim != 4 || k->ndim != 4)
    return QAT_FAIL(QAT_EINVAL, "%s: q %s and k %s should be [B, T, H, D]", op,
                    qat_shape_str(q, s1, sizeof s1), qat_shape_str(k, s2, sizeof s2));
  CPU_SAME(op, k, v);
  if (q->shape[0] != k->shape[0] || q->shape[1] != k->shape[1] || q->shape[3] != k->shape[3])
    return QAT_FAIL(QAT_EINVAL, "%s: q %s and k %s disagree on B, T or D", op,
                    qat_shape_str(q, s1, sizeof s1), qat_shape_str(k, s2, sizeof s2));
  d->B = q->shape[0];
  d->T = q->shape[1];
  d->Hq = q->shape[2];
  d->Hkv = k->shape[2];
  d->D = q->shape[3];
  if (d->Hkv <= 0 || d->Hq % d->Hkv != 0)
    return QAT_FAIL(QAT_EINVAL, "%s: %lld query heads are not a multiple of %lld kv heads", op,
                    (long long)d->Hq, (long long)d->Hkv);
  d->G = d->Hq / d->Hkv;
  if (!isfinite(scale)) return QAT_FAIL(QAT_EINVAL, "%s: scale is not finite", op);
  return QAT_OK;
}

static inline double dotd(const float *a, const float *b, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
  return s;
}

/* Per-thread scratch of `per` doubles for each of nth threads. */
static qat_status scratch(const char *op, int nth, size_t per, double **out) {
  *out = (double *)malloc((size_t)nth * per * sizeof(double) + 1);
  if (!*out)
    return QAT_FAIL(QAT_ENOMEM, "%s: cannot allocate %zu bytes of scratch", op,
                    (size_t)nth * per * sizeof(double));
  return QAT_OK;
}

qat_status qat_cpu_attention_fwd(const qat_backend *be, const qat_tensor *q, const qat_tensor *k,
                                 const qat_tensor *v, float scale, qat_tensor *out,
                                 qat_tensor *lse) {
  const char *op = "attention_fwd";
  dims d;
  QAT_TRY(check_qkv(op, q, k, v, scale, &d));
  CPU_F32(op, out);
  CPU_F32(op, lse);
  CPU_SAME(op, q, out);
  CPU_NUMEL(op, lse, d.B * d.Hq * d.T);
  const int64_t B = d.B, T = d.T, Hq = d.Hq, Hkv = d.Hkv, D = d.D, G = d.G;
  const float *qp = (const float *)q->data, *kp = (const float *)k->data;
  const float *vp = (const float *)v->data;
  float *op_ = (float *)out->data, *lp = (float *)lse->data;
  int nth = omp_get_max_threads();
  size_t per = (size_t)(T + D);
  double *scr;
  QAT_TRY(scratch(op, nth, per, &scr));
  int par = B * Hq * T * T * D > QAT_CPU_PAR_MIN;
#pragma omp parallel num_threads(nth) if (par)
  {
    double *s = scr + (size_t)omp_get_thread_num() * per, *acc = s + T;
#pragma omp for schedule(dynamic, 16)
    for (int64_t row = 0; row < B * Hq * T; row++) { /* row = (b, h, i) as in lse */
      int64_t i = row % T, h = (row / T) % Hq, b = row / (T * Hq), kh = h / G;
      const float *qi = qp + ((b * T + i) * Hq + h) * D;
      double m = -INFINITY;
      for (int64_t j = 0; j <= i; j++) {
        s[j] = scale * dotd(qi, kp + ((b * T + j) * Hkv + kh) * D, D);
        if (s[j] > m) m = s[j];
      }
      double sum = 0.0;
      for (int64_t j = 0; j <= i; j++) sum += (s[j] = exp(s[j] - m));
      for (int64_t c = 0; c < D; c++) acc[c] = 0.0;
      for (int64_t j = 0; j <= i; j++) {
        const float *vj = vp + ((b * T + j) * Hkv + kh) * D;
        for (int64_t c = 0; c < D; c++) acc[c] += s[j] * vj[c];
      }
      float *oi = op_ + ((b * T + i) * Hq + h) * D;
      for (int64_t c = 0; c < D; c++) oi[c] = (float)(acc[c] / sum);
      lp[row] = (float)(m + log(sum));
    }
  }
  free(scr);
  return QAT_OK;
}

qat_status qat_cpu_attention_bwd(const qat_backend *be, const qat_tensor *dout,
                                 const qat_tensor *q, const qat_tensor *k, const qat_tensor *v,
                                 const qat_tensor *out, const qat_tensor *lse, float scale,
                                 qat_tensor *dq, qat_tensor *dk, qat_tensor *dv) {
  const char *op = "attention_bwd";
  dims d;
  QAT_TRY(check_qkv(op, q, k, v, scale, &d));
  CPU_F32(op, dout);
  CPU_F32(op, out);
  CPU_F32(op, lse);
  CPU_F32(op, dq);
  CPU_F32(op, dk);
  CPU_F32(op, dv);
  CPU_SAME(op, q, dout);
  CPU_SAME(op, q, out);
  CPU_SAME(op, q, dq);
  CPU_SAME(op, k, dk);
  CPU_SAME(op, k, dv);
  CPU_NUMEL(op, lse, d.B * d.Hq * d.T);
  const int64_t B = d.B, T = d.T, Hq = d.Hq, Hkv = d.Hkv, D = d.D, G = d.G;
  const float *qp = (const float *)q->data, *kp = (const float *)k->data;
  const float *vp = (const float *)v->data, *gp = (const float *)dout->data;
  const float *opp = (const float *)out->data, *lp = (const float *)lse->data;
  float *dqp = (float *)dq->data, *dkp = (float *)dk->data, *dvp = (float *)dv->data;
  int nth = omp_get_max_threads();
  size_t per = (size_t)(2 * D);
  /* Dl[B, Hq, T] = rowsum(dO * O), then per-thread accumulators; one allocation. */
  size_t nrow = (size_t)(B * Hq * T);
  double *scr;
  QAT_TRY(scratch(op, nth, per + (nrow + nth - 1) / nth, &scr));
  double *Dl = scr + (size_t)nth * per;
  int par = B * Hq * T * T * D > QAT_CPU_PAR_MIN;
#pragma omp parallel num_threads(nth) if (par)
  {
    double *acc = scr + (size_t)omp_get_thread_num() * per, *acc2 = acc + D;
#pragma omp for schedule(static)
    for (int64_t row = 0; row < B * Hq * T; row++) {
      int64_t i = row % T, h = (row / T) % Hq, b = row / (T * Hq);
      int64_t off = ((b * T + i) * Hq + h) * D;
      Dl[row] = dotd(gp + off, opp + off, D);
    }
    /* dq: one query row (b, h, i) per iteration. */
#pragma omp for schedule(dynamic, 16)
    for (int64_t row = 0; row < B * Hq * T; row++) {
      int64_t i = row % T, h = (row / T) % Hq, b = row / (T * Hq), kh = h / G;
      int64_t off = ((b * T + i) * Hq + h) * D;
      const float *qi = qp + off, *gi = gp + off;
      for (int64_t c = 0; c < D; c++) acc[c] = 0.0;
      for (int64_t j = 0; j <= i; j++) {
        const float *kj = kp + ((b * T + j) * Hkv + kh) * D;
        const float *vj = vp + ((b * T + j) * Hkv + kh) * D;
        double p = exp(scale * dotd(qi, kj, D) - lp[row]);
        double ds = p * (dotd(gi, vj, D) - Dl[row]);
        for (int64_t c = 0; c < D; c++) acc[c] += ds * kj[c];
      }
      for (int64_t c = 0; c < D; c++) dqp[off + c] = (float)(scale * acc[c]);
    }
    /* dk, dv: one key row (b, kv head, j) per iteration, summing its group's query heads and
     * the rows i >= j in order. */
#pragma omp for schedule(dynamic, 16)
    for (int64_t krow = 0; krow < B * Hkv * T; krow++) {
      int64_t j = krow % T, kh = (krow / T) % Hkv, b = krow / (T * Hkv);
      int64_t koff = ((b * T + j) * Hkv + kh) * D;
      const float *kj = kp + koff, *vj = vp + koff;
      for (int64_t c = 0; c < 2 * D; c++) acc[c] = 0.0;
      for (int64_t h = kh * G; h < (kh + 1) * G; h++)
        for (int64_t i = j; i < T; i++) {
          int64_t row = (b * Hq + h) * T + i, off = ((b * T + i) * Hq + h) * D;
          const float *qi = qp + off, *gi = gp + off;
          double p = exp(scale * dotd(qi, kj, D) - lp[row]);
          double ds = p * (dotd(gi, vj, D) - Dl[row]);
          for (int64_t c = 0; c < D; c++) {
            acc[c] += ds * qi[c];  /* dk */
            acc2[c] += p * gi[c]; /* dv */
          }
        }
      for (int64_t c = 0; c < D; c++) {
        dkp[koff + c] = (float)(scale * acc[c]);
        dvp[koff + c] = (float)acc2[c];
      }
    }
  }
  free(scr);
  return QAT_OK;
}
