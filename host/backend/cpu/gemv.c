/* The decode step's F32 GEMV, c[N] = alpha * B[N, K] a[K] + beta * c, on OpenMP threads (the CPU
 * gemm op's M = 1, tb case: every Linear of an F32 model and the lm_head of every model).
 * OpenBLAS's sgemv is both slower here (no software prefetch: 10.4 ms for SmolLM2's 49152 x 576
 * lm_head on 2 threads against 8.0) and runs on OpenBLAS's own thread pool, whose spinning
 * workers take the cores from the OpenMP threads of the ops around it (a packed model's decode:
 * 15 tokens/s with both pools, 23.5 with OpenBLAS at 1 thread). Four rows at a time share the a
 * loads, two FMA chains per row, the rows 4 ahead prefetched. Each c[n] is summed by one thread
 * in an order fixed by K: results do not depend on the thread count. AVX2 + FMA when the CPU has
 * them (chosen at run time), else a portable loop. */
#include "backend/cpu/cpu_ops.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QAT_GEMV_AVX2 1
#endif

static float dot_portable(const float *w, const float *a, int64_t K) {
  float s = 0.0f;
  for (int64_t k = 0; k < K; k++) s += w[k] * a[k];
  return s;
}

static void rows4_portable(const float *w, int64_t ldw, const float *a, int64_t K, float out[4]) {
  for (int r = 0; r < 4; r++) out[r] = dot_portable(w + r * ldw, a, K);
}

#ifdef QAT_GEMV_AVX2
#define AVX2 __attribute__((target("avx2,fma")))
AVX2 static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

AVX2 static void rows4_avx2(const float *w, int64_t ldw, const float *a, int64_t K, float out[4]) {
  const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m256 x0 = _mm256_loadu_ps(a + k), x1 = _mm256_loadu_ps(a + k + 8);
    /* the quad 4 rows on: rows are contiguous, so two lines cover its next 16 floats' rows 0, 2
     * (and the hardware streams 1, 3 alongside) */
    _mm_prefetch((const char *)(w0 + k + 4 * ldw), _MM_HINT_T0);
    _mm_prefetch((const char *)(w2 + k + 4 * ldw), _MM_HINT_T0);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), x0, a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), x0, a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), x0, a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), x0, a3);
    b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k + 8), x1, b0);
    b1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k + 8), x1, b1);
    b2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k + 8), x1, b2);
    b3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k + 8), x1, b3);
  }
  out[0] = hsum8(_mm256_add_ps(a0, b0));
  out[1] = hsum8(_mm256_add_ps(a1, b1));
  out[2] = hsum8(_mm256_add_ps(a2, b2));
  out[3] = hsum8(_mm256_add_ps(a3, b3));
  for (; k < K; k++) {
    out[0] += w0[k] * a[k];
    out[1] += w1[k] * a[k];
    out[2] += w2[k] * a[k];
    out[3] += w3[k] * a[k];
  }
}
#endif

typedef void (*rows4_fn)(const float *, int64_t, const float *, int64_t, float[4]);

static rows4_fn pick(void) {
  static rows4_fn f;
  if (!f) {
    rows4_fn p = rows4_portable;
#ifdef QAT_GEMV_AVX2
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) p = rows4_avx2;
#endif
    f = p;
  }
  return f;
}

void qat_cpu_gemv_rows(int64_t N, int64_t K, float alpha, const float *B, int64_t ldb,
                       const float *a, float beta, float *c) {
  rows4_fn f = pick();
#pragma omp parallel for schedule(static)
  for (int64_t q = 0; q < (N + 3) / 4; q++) {
    float o[4];
    int64_t n0 = 4 * q, nr = N - n0 < 4 ? N - n0 : 4;
    if (nr == 4)
      f(B + n0 * ldb, ldb, a, K, o);
    else
      for (int64_t r = 0; r < nr; r++) o[r] = dot_portable(B + (n0 + r) * ldb, a, K);
    for (int64_t r = 0; r < nr; r++) /* beta == 0 never reads c (BLAS semantics) */
      c[n0 + r] = beta == 0.0f ? alpha * o[r] : alpha * o[r] + beta * c[n0 + r];
  }
}
