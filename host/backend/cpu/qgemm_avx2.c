/* AVX2 + FMA kernels of the CPU qgemm (interface: qgemm_kern.h). Eight codes at a time: codes
 * k .. k+7 of a b-bit stream (k a multiple of 8) are the 8b bits starting at byte k / 8 * b.
 * For b in {2, 3, 4} they fit one 32-bit load, broadcast and shifted per lane (vpsrlvd); b = 8
 * is a byte zero-extension; b in {5, 6, 7} gathers one 32-bit word per lane. */
#include "backend/cpu/qgemm_kern.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))

typedef struct {
  __m256i off, sh, mask; /* per-lane byte offset (gather), bit shift, code mask */
} dec_ctx;

AVX2 static inline dec_ctx dec_make(int b) {
  int off[8], sh[8];
  for (int i = 0; i < 8; i++) {
    off[i] = b <= 4 ? 0 : (i * b) >> 3;
    sh[i] = b <= 4 ? i * b : (i * b) & 7;
  }
  dec_ctx c = {_mm256_loadu_si256((const __m256i *)off), _mm256_loadu_si256((const __m256i *)sh),
               _mm256_set1_epi32((1 << b) - 1)};
  return c;
}

/* codes k .. k+7 (k % 8 == 0) as floats */
AVX2 static inline __m256 dec8(const dec_ctx *c, const uint8_t *row, int b, int64_t k) {
  const uint8_t *p = row + (k >> 3) * b;
  __m256i v;
  if (b == 8) {
    v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
  } else if (b <= 4) {
    uint32_t w;
    memcpy(&w, p, 4);
    v = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w), c->sh), c->mask);
  } else {
    v = _mm256_i32gather_epi32((const int *)p, c->off, 1);
    v = _mm256_and_si256(_mm256_srlv_epi32(v, c->sh), c->mask);
  }
  return _mm256_cvtepi32_ps(v);
}

AVX2 static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

AVX2 static void avx2_decode(const uint8_t *row, int bits, int64_t k0, int64_t n, float *out) {
  int64_t i = 0;
  if ((k0 & 7) == 0) {
    dec_ctx c = dec_make(bits);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, dec8(&c, row, bits, k0 + i));
  }
  for (; i < n; i++) out[i] = (float)qat_packed_get(row, bits, k0 + i);
}

/* Scale of group j as float: F16C's vcvtph2ps instead of the library call. */
AVX2 static inline float scale_of(const qat_packed *p, int64_t i) {
  if (p->sdtype != QAT_F16) return ((const float *)p->scales)[i];
  return _cvtsh_ss(((const uint16_t *)p->scales)[i]);
}

AVX2 static float avx2_dot_row(const qat_packed *p, int64_t n, const float *x, const float *xs) {
  const uint8_t *row = p->codes + n * p->row_bytes;
  int b = p->bits;
  int64_t g = p->group;
  if (g & 7) { /* groups not on 8-code boundaries: the portable kernel */
    return qgemm_kern_portable.dot_row(p, n, x, xs);
  }
  dec_ctx c = dec_make(b);
  /* four independent accumulators: one FMA chain would be bound by its 4-5 cycle latency */
  __m256 tot = _mm256_setzero_ps();
  float corr = 0.0f; /* sum_j s_j zp_j xs_j */
  for (int64_t j = 0; j < p->G; j++) {
    int64_t k = j * g, k1 = k + g;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    if (b == 4 || b == 2)
      for (; k + 32 <= k1; k += 32) {
        __m128i c0, c1; /* codes k .. k+15 and k+16 .. k+31 as bytes, in order */
        if (b == 4) { /* 16 bytes: low nibbles are the even codes, high nibbles the odd */
          __m128i v = _mm_loadu_si128((const __m128i *)(row + (k >> 1))), m = _mm_set1_epi8(0x0F);
          __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
          c0 = _mm_unpacklo_epi8(lo, hi);
          c1 = _mm_unpackhi_epi8(lo, hi);
        } else { /* 8 bytes: bit pairs 0..3 of byte i are codes 4i .. 4i+3 */
          __m128i v = _mm_loadl_epi64((const __m128i *)(row + (k >> 2))), m = _mm_set1_epi8(0x03);
          __m128i p0 = _mm_and_si128(v, m), p1 = _mm_and_si128(_mm_srli_epi16(v, 2), m);
          __m128i p2 = _mm_and_si128(_mm_srli_epi16(v, 4), m), p3 = _mm_and_si128(_mm_srli_epi16(v, 6), m);
          __m128i e = _mm_unpacklo_epi8(p0, p1), o = _mm_unpacklo_epi8(p2, p3);
          c0 = _mm_unpacklo_epi16(e, o);
          c1 = _mm_unpackhi_epi16(e, o);
        }
        a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c0)), _mm256_loadu_ps(x + k), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(c0, 8))),
                             _mm256_loadu_ps(x + k + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c1)), _mm256_loadu_ps(x + k + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(c1, 8))),
                             _mm256_loadu_ps(x + k + 24), a3);
      }
    for (; k + 32 <= k1; k += 32) {
      a0 = _mm256_fmadd_ps(dec8(&c, row, b, k), _mm256_loadu_ps(x + k), a0);
      a1 = _mm256_fmadd_ps(dec8(&c, row, b, k + 8), _mm256_loadu_ps(x + k + 8), a1);
      a2 = _mm256_fmadd_ps(dec8(&c, row, b, k + 16), _mm256_loadu_ps(x + k + 16), a2);
      a3 = _mm256_fmadd_ps(dec8(&c, row, b, k + 24), _mm256_loadu_ps(x + k + 24), a3);
    }
    for (; k < k1; k += 8) a0 = _mm256_fmadd_ps(dec8(&c, row, b, k), _mm256_loadu_ps(x + k), a0);
    float s = scale_of(p, n * p->G + j);
    tot = _mm256_fmadd_ps(_mm256_set1_ps(s), _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)), tot);
    corr += s * qat_packed_zp(p, n, j) * xs[j];
  }
  return hsum(tot) - corr;
}

AVX2 static float avx2_dot(const float *a, const float *b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  float r = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; i++) r += a[i] * b[i];
  return r;
}

AVX2 static void avx2_dot4(const float *x, int64_t ldx, const float *w, int64_t n, float out[4]) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 wv = _mm256_loadu_ps(w + i);
    a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0 + i), a0);
    a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x1 + i), a1);
    a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x2 + i), a2);
    a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x3 + i), a3);
  }
  out[0] = hsum(a0);
  out[1] = hsum(a1);
  out[2] = hsum(a2);
  out[3] = hsum(a3);
  for (; i < n; i++) {
    out[0] += x0[i] * w[i];
    out[1] += x1[i] * w[i];
    out[2] += x2[i] * w[i];
    out[3] += x3[i] * w[i];
  }
}

AVX2 static void avx2_axpy(float alpha, const float *x, float *y, int64_t n) {
  __m256 al = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(al, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] += alpha * x[i];
}

const qgemm_kern qgemm_kern_avx2 = {avx2_decode, avx2_dot_row, avx2_dot4, avx2_dot, avx2_axpy, "avx2"};
#endif
