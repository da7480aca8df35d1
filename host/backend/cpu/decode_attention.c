/* CPU decode attention (backend.h attention_decode): one query per sequence against the first T
 * positions of a KV cache, the reference for cuda/decode_attention.cu. Generation calls it once
 * per layer and token, so it allocates nothing and forks threads only when the work is large.
 *   q[B, Hq, D], k_cache, v_cache [B, S, Hkv, D] (positions [0, T) read), out[B, Hq, D]
 * Query head h reads kv head h / (Hq / Hkv).
 *
 * Per (b, h), keys stream in chunks of DA_CHUNK with an online softmax: the chunk's scores
 * s_j = scale * q . k_j (F32 dot) go to a stack buffer, the running max m moves to the chunk's
 * max when that is larger (the sum l and accumulator acc, both double, are rescaled by
 * exp(m_old - m_new)), then l += exp(s_j - m) and acc += exp(s_j - m) v_j; out = acc / l. The
 * result does not depend on the thread count (each (b, h) is one thread's, in key order). */
#include "backend/cpu/cpu_ops.h"

#include <math.h>

#define DA_CHUNK 64   /* scores per chunk on the stack */
#define DA_MAXD 256   /* head dims (as the CUDA kernel) */
#define DA_PAR_MIN (1 << 20) /* B * Hq * T * D below this: one thread (decode forks 30x a token) */

static void decode_one(const float *q, const float *k, const float *v, int64_t T, int64_t ldk,
                       int64_t D, float scale, float *out) {
  float s[DA_CHUNK];
  double acc[DA_MAXD];
  for (int64_t d = 0; d < D; d++) acc[d] = 0.0;
  double l = 0.0;
  float m = -INFINITY;
  for (int64_t j0 = 0; j0 < T; j0 += DA_CHUNK) {
    const int64_t n = T - j0 < DA_CHUNK ? T - j0 : DA_CHUNK;
    float cm = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
      const float *kj = k + (j0 + j) * ldk;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t d = 0; d < D; d++) dot += q[d] * kj[d];
      s[j] = scale * dot;
      cm = s[j] > cm ? s[j] : cm;
    }
    if (cm > m) { /* m = -inf at the first chunk: acc and l are 0, nothing to rescale */
      if (m > -INFINITY) {
        double r = exp((double)m - (double)cm);
        l *= r;
        for (int64_t d = 0; d < D; d++) acc[d] *= r;
      }
      m = cm;
    }
    for (int64_t j = 0; j < n; j++) {
      const float p = qat_fast_expf(s[j] - m);
      const float *vj = v + (j0 + j) * ldk;
      l += p;
#pragma omp simd
      for (int64_t d = 0; d < D; d++) acc[d] += (double)p * vj[d];
    }
  }
  const double inv = 1.0 / l;
  for (int64_t d = 0; d < D; d++) out[d] = (float)(acc[d] * inv);
}

static qat_status qat_cpu_attention_decode(const qat_backend *be, const qat_tensor *q,
                                           const qat_tensor *k_cache, const qat_tensor *v_cache,
                                           int64_t T, float scale, qat_tensor *out) {
  const char *op = "attention_decode";
  CPU_F32(op, q);
  CPU_F32(op, k_cache);
  CPU_F32(op, v_cache);
  CPU_F32(op, out);
  char s1[96], s2[96];
  if (q->ndim != 3 || k_cache->ndim != 4)
    return QAT_FAIL(QAT_EINVAL, "%s: q %s should be [B, Hq, D] and k_cache %s [B, S, Hkv, D]", op,
                    qat_shape_str(q, s1, sizeof s1), qat_shape_str(k_cache, s2, sizeof s2));
  CPU_SAME(op, k_cache, v_cache);
  CPU_SAME(op, q, out);
  const int64_t B = q->shape[0], Hq = q->shape[1], D = q->shape[2];
  const int64_t S = k_cache->shape[1], Hkv = k_cache->shape[2];
  if (k_cache->shape[0] != B || k_cache->shape[3] != D)
    return QAT_FAIL(QAT_EINVAL, "%s: q %s and k_cache %s disagree on B or D", op,
                    qat_shape_str(q, s1, sizeof s1), qat_shape_str(k_cache, s2, sizeof s2));
  if (Hkv <= 0 || Hq % Hkv != 0)
    return QAT_FAIL(QAT_EINVAL, "%s: %lld query heads are not a multiple of %lld kv heads", op,
                    (long long)Hq, (long long)Hkv);
  if (T < 1 || T > S)
    return QAT_FAIL(QAT_EINVAL, "%s: T = %lld keys outside the cache's [1, %lld]", op,
                    (long long)T, (long long)S);
  if (D > DA_MAXD)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: head dim %lld exceeds %d", op, (long long)D, DA_MAXD);
  if (!isfinite(scale)) return QAT_FAIL(QAT_EINVAL, "%s: scale is not finite", op);
  if (B * Hq * D == 0) return QAT_OK;
  const float *qp = (const float *)q->data, *kp = (const float *)k_cache->data;
  const float *vp = (const float *)v_cache->data;
  float *op_ = (float *)out->data;
  const int64_t G = Hq / Hkv, ldk = Hkv * D;
#pragma omp parallel for schedule(static) if (B * Hq * T * D > DA_PAR_MIN)
  for (int64_t bh = 0; bh < B * Hq; bh++) {
    const int64_t b = bh / Hq, h = bh % Hq, kh = h / G;
    const size_t kv0 = (size_t)(b * S * Hkv + kh) * (size_t)D;
    decode_one(qp + bh * D, kp + kv0, vp + kv0, T, ldk, D, scale, op_ + bh * D);
  }
  return QAT_OK;
}

void qat_cpu_register_decode(qat_backend *be) { be->attention_decode = qat_cpu_attention_decode; }
