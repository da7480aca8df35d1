/* qgemm's small-M forward with int8 activations (qat_backend.qgemm_act8 = 1): what llama.cpp
 * does for Q4_0 x Q8_0, on qat's packed layout (quant/packed_layout.h). In chunks c of C = 64
 * (4 and 2 bits, g % 64 == 0) or 32 inputs (qgemm_a8_chunk):
 *   x[m, chunk c] = d[m, c] * xq[m, ...],  d = max|x| / 127,  xq = round(x / d) in int8
 *   y[m, n] = sum_j s_j ( sum_{c in j} d_c (q . xq)_c  -  zp_j sum_{c in j} d_c sum xq_c )
 * so the weight is exactly the packed one, (q - zp) s, and the only error beyond F32 summation
 * is x's rounding: |y - y_exact| <= sum_k |w_k| d_c(k) / 2 (tests/test_qgemm.c checks it). The
 * zero-point term uses the sum of the quantized x, not of x, so that the rounding error meets
 * w = s (q - zp), half the size of s q. The integer dot products (codes unsigned, xq signed)
 * are what AVX2's vpmaddubsw does 32 at a time (qgemm_avx2.c); ~4x fewer instructions per
 * code than decode-to-float and FMA, which is what makes decode faster than the F32 weights'
 * memory stream on a small machine.
 * x is quantized here, once per call, into each weight's lane order (qgemm_a8_lane); then
 * OpenMP over rows n of W as in the F32 path, M = 1 in quads of rows that share the x loads
 * (a8_rows4); M > 1 decodes each row once into K bytes. Each
 * output element is summed by one thread in a fixed order: results do not depend on the thread
 * count. NaN or Inf in a block of x gives a NaN scale, so the outputs it reaches are NaN as on
 * the F32 path, never a silently finite value. */
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/qgemm_kern.h"

#include <math.h>
#include <stdlib.h>

/* ---- portable kernels ------------------------------------------------------------------------ */

void qgemm_a8_decode_portable(const qat_packed *p, int64_t n, uint8_t *out) {
  const uint8_t *row = p->codes + n * p->row_bytes;
  int c = qgemm_a8_chunk(p);
  for (int64_t k0 = 0; k0 < p->K; k0 += c)
    for (int i = 0; i < c; i++)
      out[k0 + i] = (uint8_t)qat_packed_get(row, p->bits, k0 + qgemm_a8_lane(p, i));
}

float qgemm_a8_dot_portable(const qat_packed *p, int64_t n, const uint8_t *ub, const int8_t *xq,
                            const float *d, const float *xqs) {
  const uint8_t *row = p->codes + n * p->row_bytes;
  int b = p->bits, c = qgemm_a8_chunk(p);
  int64_t g = p->group;
  float tot = 0.0f, corr = 0.0f;
  for (int64_t k0 = 0; k0 < p->K; k0 += c) {
    int64_t j0 = k0 / g;
    int32_t acc[2] = {0, 0}; /* per group of the chunk: at most two (g >= 32, c <= 64) */
    for (int i = 0; i < c; i++) {
      int64_t k = k0 + qgemm_a8_lane(p, i);
      int q = ub ? ub[k0 + i] : (int)qat_packed_get(row, b, k);
      acc[k / g - j0] += q * xq[k0 + i];
    }
    for (int64_t j = j0; j < j0 + 2 && j * g < k0 + c; j++)
      tot += (float)acc[j - j0] * (d[k0 / c] * qat_packed_scale(p, n, j));
  }
  for (int64_t j = 0; j < p->G; j++) corr += qat_packed_scale(p, n, j) * qat_packed_zp(p, n, j) * xqs[j];
  return tot - corr;
}

/* ---- x: int8 per chunk, in the weight's lane order ---------------------------------------------- */

/* xq [M, K], d [M, K / chunk], xqs [M, G] from x [M, K] */
static void quantize_x(const qat_packed *p, int64_t M, const float *x, int8_t *xq, float *d,
                       float *xqs) {
  int c = qgemm_a8_chunk(p);
  int64_t K = p->K, nc = K / c;
  int lane[64];
  for (int i = 0; i < c; i++) lane[i] = qgemm_a8_lane(p, i);
  for (int64_t m = 0; m < M; m++)
    for (int64_t ch = 0; ch < nc; ch++) {
      const float *xb = x + m * K + ch * c;
      float amax = 0.0f;
      int finite = 1;
      for (int i = 0; i < c; i++) {
        float a = fabsf(xb[i]);
        if (!(a <= 3.4e38f)) finite = 0; /* NaN or Inf */
        else if (a > amax) amax = a;
      }
      int8_t *q = xq + m * K + ch * c;
      float dc = finite ? amax / 127.0f : NAN, id = finite && amax > 0 ? 127.0f / amax : 0.0f;
      int64_t j0 = ch * c / p->group;
      int32_t sum[2] = {0, 0}; /* per group of the chunk */
      for (int i = 0; i < c; i++) {
        /* round to nearest even by the 1.5 * 2^23 trick (|v| <= 127 + rounding): rintf is a
         * libm call on baseline x86-64, and this loop runs for every decode step */
        float v = finite ? (xb[lane[i]] * id + 12582912.0f) - 12582912.0f : 0.0f;
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        q[i] = (int8_t)v;
        sum[(ch * c + lane[i]) / p->group - j0] += q[i];
      }
      d[m * nc + ch] = dc;
      for (int64_t j = j0; j < j0 + 2 && j * p->group < (ch + 1) * c; j++) {
        if (j * p->group >= ch * c) xqs[m * p->G + j] = 0.0f; /* the group starts here */
        xqs[m * p->G + j] += dc * (float)sum[j - j0];
      }
    }
}

/* y[M, N] = x[M, K] @ dequant(W)^T with int8 x (qgemm_a8_ok(p), 1 <= M) */
qat_status qgemm_fwd_a8(const qgemm_kern *kn, const qat_packed *p, int64_t M, const float *x,
                        float *y) {
  int64_t N = p->N, K = p->K, nb = K / qgemm_a8_chunk(p), G = p->G;
  /* one allocation: d [M, nb] and xqs [M, G] floats, then xq [M, K] */
  float *d = malloc(sizeof(float) * (size_t)(M * (nb + G)) + (size_t)(M * K)), *xqs = d + M * nb;
  if (!d) return QAT_FAIL(QAT_ENOMEM, "qgemm: int8 activations [%lld, %lld]", (long long)M, (long long)K);
  int8_t *xq = (int8_t *)(xqs + M * G);
  quantize_x(p, M, x, xq, d, xqs);
  int fail = 0;
  if (M == 1) { /* rows in fixed quads, each whole quad by a8_rows4 when it takes the weight */
    int rows4 = kn->a8_rows4 && qgemm_a8_chunk(p) == 64;
#pragma omp parallel for schedule(static)
    for (int64_t q = 0; q < (N + 3) / 4; q++) {
      if (rows4 && 4 * q + 4 <= N)
        kn->a8_rows4(p, 4 * q, xq, d, xqs, y + 4 * q);
      else
        for (int64_t n = 4 * q; n < N && n < 4 * q + 4; n++) y[n] = kn->a8_dot(p, n, NULL, xq, d, xqs);
    }
    free(d);
    return QAT_OK;
  }
#pragma omp parallel reduction(| : fail)
  {
    uint8_t *ub = malloc((size_t)K);
    if (!ub) fail = 1;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      if (fail) continue;
      kn->a8_decode(p, n, ub);
      for (int64_t m = 0; m < M; m++)
        y[m * N + n] = kn->a8_dot(p, n, ub, xq + m * K, d + m * nb, xqs + m * G);
    }
    free(ub);
  }
  free(d);
  return fail ? QAT_FAIL(QAT_ENOMEM, "qgemm: per-thread code buffer") : QAT_OK;
}
