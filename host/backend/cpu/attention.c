/* CPU causal self-attention with grouped-query heads, forward and backward (the reference for the
 * CUDA attention kernels). Dimensions: B batch, T time, Hq query heads, Hkv key/value heads
 * (Hq % Hkv == 0; query head h reads kv head h / (Hq / Hkv)), D head dim.
 *   q[B, T, Hq, D], k, v[B, T, Hkv, D], out[B, T, Hq, D], lse[B, Hq, T]
 * Forward, per query row i: s_j = scale * q_i . k_j for j <= i; lse_i = logsumexp_j s_j (max
 * subtracted first); out_i = sum_j exp(s_j - lse_i) v_j.
 * Backward (exact), with P_ij = exp(s_ij - lse_i), dP_ij = dO_i . v_j, Dl_i = sum_j P_ij dP_ij
 * (= dO_i . O_i, but taken from the recomputed P so that one key gives dS = 0 exactly),
 * dS_ij = P_ij (dP_ij - Dl_i):
 *   dq_i = scale sum_j dS_ij k_j,  dk_j = scale sum_{h in group, i >= j} dS_ij q_i,
 *   dv_j = sum_{h in group, i >= j} P_ij dO_i.
 *
 * Speed: work is cut into blocks of BR query rows of one head; the score block S[BR, Tk] (Tk = keys
 * up to the block's last row) and the products with V / dO / Q / K are single-threaded
 * cblas_sgemm calls reading q, k, v in place (row strides Hq*D, Hkv*D); softmax is F32 with a
 * vectorizable exp (fast_expf) and row sums in double. Forward items are (b, h, block); backward
 * items are (b, kv head), each owning dk, dv of its kv head and dq of its group's query heads, so
 * every output element is written by one thread and summed in an order fixed by the shapes (the
 * group's heads, then the blocks, in order): no atomics, results independent of the thread count.
 * Debian's OpenBLAS is the pthread build, which does not notice it runs inside an OpenMP region,
 * so its thread count is set to 1 around our parallel region (and restored) to avoid 2x
 * oversubscription. */
#include "backend/cpu/cpu_ops.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define BR 64 /* query rows per block: S[BR, T] F32 stays in L2 for T <= 4096 */

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
  if (d->T > INT_MAX || d->Hq * d->D > INT_MAX)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: T = %lld or Hq*D = %lld exceeds the BLAS int range", op,
                    (long long)d->T, (long long)(d->Hq * d->D));
  return QAT_OK;
}

/* Row kernels, each one plain loop so that GCC vectorizes it at -O2 (a loop mixing float and
 * double lanes does not vectorize). */
static float row_max(const float *s, int64_t n) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; j++) m = s[j] > m ? s[j] : m;
  return m;
}
/* s[j] = exp(s[j] - m) */
static void row_exp(float *s, int64_t n, float m) {
#pragma omp simd
  for (int64_t j = 0; j < n; j++) s[j] = qat_fast_expf(s[j] - m);
}
static double row_sum(const float *s, int64_t n) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; j++) sum += s[j];
  return sum;
}
static double row_dot(const float *a, const float *b, int64_t n) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; j++) sum += (double)a[j] * b[j];
  return sum;
}

/* OpenBLAS (pthread build) runs single-threaded while `on`: our OpenMP threads call it. */
typedef struct blas_guard {
  int saved;
} blas_guard;
static blas_guard blas_single(void) {
  blas_guard g = {openblas_get_num_threads()};
  if (g.saved != 1) openblas_set_num_threads(1);
  return g;
}
static void blas_restore(blas_guard g) {
  if (g.saved != 1) openblas_set_num_threads(g.saved);
}

/* Per-thread scratch of `per` floats for each of nth threads. */
static qat_status scratch(const char *op, int nth, size_t per, float **out) {
  *out = (float *)malloc((size_t)nth * per * sizeof(float) + 64);
  if (!*out)
    return QAT_FAIL(QAT_ENOMEM, "%s: cannot allocate %zu bytes of scratch", op,
                    (size_t)nth * per * sizeof(float));
  return QAT_OK;
}

qat_status qat_cpu_attention_fwd(const qat_backend *be, const qat_tensor *q, const qat_tensor *k,
                                 const qat_tensor *v, float scale, qat_tensor *out,
                                 qat_tensor *lse) {
  const char *op = "attention_fwd";
  dims d = {0};
  QAT_TRY(check_qkv(op, q, k, v, scale, &d));
  CPU_F32(op, out);
  CPU_F32(op, lse);
  CPU_SAME(op, q, out);
  CPU_NUMEL(op, lse, d.B * d.Hq * d.T);
  const int64_t B = d.B, T = d.T, Hq = d.Hq, Hkv = d.Hkv, D = d.D, G = d.G;
  if (B * Hq * T * D == 0) return QAT_OK;
  const float *qp = (const float *)q->data, *kp = (const float *)k->data;
  const float *vp = (const float *)v->data;
  float *op_ = (float *)out->data, *lp = (float *)lse->data;
  const int ldq = (int)(Hq * D), ldk = (int)(Hkv * D);
  const int64_t nblk = (T + BR - 1) / BR, nitem = B * Hq * nblk;
  int nth = omp_get_max_threads();
  size_t per = (size_t)BR * (size_t)T;
  float *scr;
  QAT_TRY(scratch(op, nth, per, &scr));
  int par = B * Hq * T * T * D > QAT_CPU_PAR_MIN;
  blas_guard bg = blas_single();
#pragma omp parallel num_threads(nth) if (par)
  {
    float *S = scr + (size_t)omp_get_thread_num() * per; /* S[nr, Tk] scores, then P */
    /* the last blocks see the most keys: hand them out first */
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < nitem; it++) {
      int64_t blk = nblk - 1 - it / (B * Hq), bh = it % (B * Hq), b = bh / Hq, h = bh % Hq;
      int64_t kh = h / G, i0 = blk * BR, nr = T - i0 < BR ? T - i0 : BR, Tk = i0 + nr;
      const float *qb = qp + ((b * T + i0) * Hq + h) * D, *kb = kp + (b * T * Hkv + kh) * D;
      const float *vb = vp + (b * T * Hkv + kh) * D;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)Tk, (int)D, scale, qb,
                  ldq, kb, ldk, 0.0f, S, (int)Tk);
      for (int64_t r = 0; r < nr; r++) {
        int64_t i = i0 + r, n = i + 1; /* keys j <= i */
        float *s = S + r * Tk, m = row_max(s, n);
        row_exp(s, n, m);
        double sum = row_sum(s, n);
        float inv = (float)(1.0 / sum);
#pragma omp simd
        for (int64_t j = 0; j < n; j++) s[j] *= inv;
        for (int64_t j = n; j < Tk; j++) s[j] = 0.0f; /* causal mask */
        lp[(b * Hq + h) * T + i] = (float)((double)m + log(sum));
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)D, (int)Tk, 1.0f, S,
                  (int)Tk, vb, ldk, 0.0f, op_ + ((b * T + i0) * Hq + h) * D, ldq);
    }
  }
  blas_restore(bg);
  free(scr);
  return QAT_OK;
}

qat_status qat_cpu_attention_bwd(const qat_backend *be, const qat_tensor *dout,
                                 const qat_tensor *q, const qat_tensor *k, const qat_tensor *v,
                                 const qat_tensor *out, const qat_tensor *lse, float scale,
                                 qat_tensor *dq, qat_tensor *dk, qat_tensor *dv) {
  const char *op = "attention_bwd";
  dims d = {0};
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
  if (B * Hq * T * D == 0) return QAT_OK;
  const float *qp = (const float *)q->data, *kp = (const float *)k->data;
  const float *vp = (const float *)v->data, *gp = (const float *)dout->data;
  const float *lp = (const float *)lse->data;
  float *dqp = (float *)dq->data, *dkp = (float *)dk->data, *dvp = (float *)dv->data;
  const int ldq = (int)(Hq * D), ldk = (int)(Hkv * D);
  const int64_t nblk = (T + BR - 1) / BR;
  int nth = omp_get_max_threads();
  size_t per = 2 * (size_t)BR * (size_t)T;
  float *scr;
  QAT_TRY(scratch(op, nth, per, &scr));
  int par = B * Hq * T * T * D > QAT_CPU_PAR_MIN;
  blas_guard bg = blas_single();
#pragma omp parallel num_threads(nth) if (par)
  {
    float *P = scr + (size_t)omp_get_thread_num() * per; /* P[nr, Tk] */
    float *dS = P + (size_t)BR * (size_t)T;               /* dP[nr, Tk], then dS in place */
    /* one item per (b, kv head): it owns dk, dv rows of that head and dq of its group */
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < B * Hkv; it++) {
      int64_t b = it / Hkv, kh = it % Hkv;
      const float *kb = kp + (b * T * Hkv + kh) * D, *vb = vp + (b * T * Hkv + kh) * D;
      float *dkb = dkp + (b * T * Hkv + kh) * D, *dvb = dvp + (b * T * Hkv + kh) * D;
      for (int64_t t = 0; t < T; t++) {
        memset(dkb + t * Hkv * D, 0, (size_t)D * sizeof(float));
        memset(dvb + t * Hkv * D, 0, (size_t)D * sizeof(float));
      }
      for (int64_t h = kh * G; h < (kh + 1) * G; h++)
        for (int64_t blk = 0; blk < nblk; blk++) {
          int64_t i0 = blk * BR, nr = T - i0 < BR ? T - i0 : BR, Tk = i0 + nr;
          int64_t qoff = ((b * T + i0) * Hq + h) * D;
          const float *qb = qp + qoff, *gb = gp + qoff, *lb = lp + (b * Hq + h) * T + i0;
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)Tk, (int)D, scale,
                      qb, ldq, kb, ldk, 0.0f, P, (int)Tk);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)Tk, (int)D, 1.0f,
                      gb, ldq, vb, ldk, 0.0f, dS, (int)Tk);
          for (int64_t r = 0; r < nr; r++) {
            int64_t n = i0 + r + 1; /* keys j <= i */
            float *p = P + r * Tk, *ds = dS + r * Tk, l = lb[r];
            row_exp(p, n, l);
            float dl = (float)row_dot(p, ds, n); /* dS = 0 where dP = Dl exactly (one key) */
#pragma omp simd
            for (int64_t j = 0; j < n; j++) ds[j] = p[j] * (ds[j] - dl);
            for (int64_t j = n; j < Tk; j++) p[j] = ds[j] = 0.0f; /* causal mask */
          }
          /* dv[0:Tk] += P^T dO, dk[0:Tk] += scale dS^T Q, dq rows = scale dS K[0:Tk] */
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Tk, (int)D, (int)nr, 1.0f, P,
                      (int)Tk, gb, ldq, 1.0f, dvb, ldk);
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Tk, (int)D, (int)nr, scale,
                      dS, (int)Tk, qb, ldq, 1.0f, dkb, ldk);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)D, (int)Tk, scale,
                      dS, (int)Tk, kb, ldk, 0.0f, dqp + qoff, ldq);
        }
    }
  }
  blas_restore(bg);
  free(scr);
  return QAT_OK;
}
