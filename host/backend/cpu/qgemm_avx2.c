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

/* codes k .. k+7 (k % 8 == 0) as int32 lanes */
AVX2 static inline __m256i dec8i(const dec_ctx *c, const uint8_t *row, int b, int64_t k) {
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
  return v;
}

/* codes k .. k+7 (k % 8 == 0) as floats */
AVX2 static inline __m256 dec8(const dec_ctx *c, const uint8_t *row, int b, int64_t k) {
  return _mm256_cvtepi32_ps(dec8i(c, row, b, k));
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

/* ---- int8 activations (qgemm_a8.c) ---------------------------------------------------------- */

/* A 32-code chunk at k0 (k0 % 32 == 0) as 32 bytes in qgemm_a8_lane order: b = 4 is 16 bytes, low
 * nibbles then high; b = 2 is 8 bytes broadcast to the four quadwords, quadword t shifted by 2t;
 * other b decode 8 codes per int32 vector and pack them down to bytes, in order. */
AVX2 static inline __m256i a8_chunk32(const dec_ctx *c, const uint8_t *row, int b, int64_t k0) {
  if (b == 4) {
    __m128i v = _mm_loadu_si128((const __m128i *)(row + (k0 >> 1)));
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0F));
  }
  if (b == 2) {
    int64_t v;
    memcpy(&v, row + (k0 >> 2), 8);
    __m256i w = _mm256_srlv_epi64(_mm256_set1_epi64x(v), _mm256_setr_epi64x(0, 2, 4, 6));
    return _mm256_and_si256(w, _mm256_set1_epi8(0x03));
  }
  __m256i p01 = _mm256_packs_epi32(dec8i(c, row, b, k0), dec8i(c, row, b, k0 + 8));
  __m256i p23 = _mm256_packs_epi32(dec8i(c, row, b, k0 + 16), dec8i(c, row, b, k0 + 24));
  /* packs/packus work per 128-bit lane: dwords hold codes 0-3, 8-11, 16-19, 24-27, 4-7, ... */
  return _mm256_permutevar8x32_epi32(_mm256_packus_epi16(p01, p23),
                                     _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* A 64-code chunk (b = 4 or 2, k0 % 64 == 0) as two 32-byte halves in qgemm_a8_lane order:
 * b = 4: 32 bytes, their low nibbles and their high nibbles; b = 2: 16 bytes in both 128-bit
 * lanes, quadwords shifted by 0, 0, 2, 2 and 4, 4, 6, 6: bit pairs 0 | 1 and 2 | 3. */
AVX2 static inline void a8_chunk64(const uint8_t *row, int b, int64_t k0, __m256i *c0, __m256i *c1) {
  if (b == 4) {
    __m256i raw = _mm256_loadu_si256((const __m256i *)(row + (k0 >> 1))), m = _mm256_set1_epi8(0x0F);
    *c0 = _mm256_and_si256(raw, m);
    *c1 = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m);
  } else {
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(row + (k0 >> 2))));
    __m256i m = _mm256_set1_epi8(0x03);
    *c0 = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 2, 2)), m);
    *c1 = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(4, 4, 6, 6)), m);
  }
}

AVX2 void qgemm_a8_decode_avx2(const qat_packed *p, int64_t n, uint8_t *out) {
  const uint8_t *row = p->codes + n * p->row_bytes;
  dec_ctx c = dec_make(p->bits);
  if (qgemm_a8_chunk(p) == 64) {
    for (int64_t k0 = 0; k0 < p->K; k0 += 64) {
      __m256i c0, c1;
      a8_chunk64(row, p->bits, k0, &c0, &c1);
      _mm256_storeu_si256((__m256i *)(out + k0), c0);
      _mm256_storeu_si256((__m256i *)(out + k0 + 32), c1);
    }
    return;
  }
  for (int64_t k0 = 0; k0 < p->K; k0 += 32)
    _mm256_storeu_si256((__m256i *)(out + k0), a8_chunk32(&c, row, p->bits, k0));
}

/* 32 codes (unsigned) times 32 int8 x by vpmaddubsw: pairs summed to int16, at most
 * 2 * 127 * 127 for b <= 7 (no saturation) */
AVX2 static inline __m256i a8_mul(__m256i cb, __m256i xv) { return _mm256_maddubs_epi16(cb, xv); }
AVX2 static inline __m256i a8_ld(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* int16 pairs summed to int32, as float */
AVX2 static inline __m256 a8_f32(__m256i p16) {
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

/* The step sizes a 64-code chunk at k of row n meets, per int32 lane of a8_f32's result: s_j
 * everywhere when the chunk is inside group j; for g = 32 (4 bits) int32 lanes 0-3 sum bytes
 * 0-15 of each half, the chunk's codes 0..31 (group j), lanes 4-7 codes 32..63 (group j + 1). */
AVX2 static inline __m256 a8_sv(const qat_packed *p, int64_t n, int64_t k) {
  int64_t i = n * p->G + k / p->group;
  if (p->group == 32) return _mm256_set_m128(_mm_set1_ps(scale_of(p, i + 1)), _mm_set1_ps(scale_of(p, i)));
  return _mm256_set1_ps(scale_of(p, i));
}

/* scales of row n, groups j0 .. j0 + nj, as floats: sb[nj] */
AVX2 static void a8_scales(const qat_packed *p, int64_t n, int64_t j0, int64_t nj, float *sb) {
  int64_t j = 0;
  if (p->sdtype == QAT_F16)
    for (const uint16_t *h = (const uint16_t *)p->scales + n * p->G + j0; j + 8 <= nj; j += 8)
      _mm256_storeu_ps(sb + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + j))));
  for (; j < nj; j++) sb[j] = scale_of(p, n * p->G + j0 + j);
}

#define A8_TILE 256 /* groups whose zero points (or scales) are unpacked at a time */

/* sum over groups j0 .. j0 + nj of s_j zp_j xqs_j for row n (the zero points' share), sb the
 * groups' scales as floats: sym is zp * (s . xqs); asym unpacks the zero points a tile at a time */
AVX2 static float a8_corr_sb(const qat_packed *p, int64_t n, int64_t j0, int64_t nj,
                             const float *sb, const float *xqs) {
  __m256 c = _mm256_setzero_ps();
  float t = 0.0f, zb[A8_TILE + 8];
  const float *xs = xqs + j0;
  if (p->sym) {
    int64_t i = 0;
    for (; i + 8 <= nj; i += 8) c = _mm256_fmadd_ps(_mm256_loadu_ps(sb + i), _mm256_loadu_ps(xs + i), c);
    for (; i < nj; i++) t += sb[i] * xs[i];
    return (float)(1 << (p->bits - 1)) * (hsum(c) + t);
  }
  for (int64_t i0 = 0; i0 < nj; i0 += A8_TILE) {
    int64_t m = nj - i0 < A8_TILE ? nj - i0 : A8_TILE, i = 0;
    avx2_decode(p->zeros + n * p->zrow_bytes, p->bits, j0 + i0, m, zb);
    for (; i + 8 <= m; i += 8)
      c = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(sb + i0 + i), _mm256_loadu_ps(zb + i)),
                          _mm256_loadu_ps(xs + i0 + i), c);
    for (; i < m; i++) t += sb[i0 + i] * zb[i] * xs[i0 + i];
  }
  return hsum(c) + t;
}

/* the same for the whole row, its scales converted a tile at a time */
AVX2 static float a8_corr(const qat_packed *p, int64_t n, const float *xqs) {
  float sb[A8_TILE + 8], corr = 0.0f;
  for (int64_t j0 = 0; j0 < p->G; j0 += A8_TILE) {
    int64_t nj = p->G - j0 < A8_TILE ? p->G - j0 : A8_TILE;
    a8_scales(p, n, j0, nj, sb);
    corr += a8_corr_sb(p, n, j0, nj, sb, xqs);
  }
  return corr;
}
#undef A8_TILE

AVX2 float qgemm_a8_dot_avx2(const qat_packed *p, int64_t n, const uint8_t *ub, const int8_t *xq,
                             const float *d, const float *xqs) {
  const uint8_t *row = p->codes + n * p->row_bytes;
  int b = p->bits;
  int64_t K = p->K;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(); /* two FMA chains */
  if (qgemm_a8_chunk(p) == 64) { /* b = 4 or 2: one x scale per 64, two products added in int16 */
    for (int64_t k = 0; k < K; k += 64) {
      __m256i c0, c1;
      if (ub) {
        c0 = a8_ld(ub + k);
        c1 = a8_ld(ub + k + 32);
      } else {
        a8_chunk64(row, b, k, &c0, &c1);
      }
      __m256 f = a8_f32(_mm256_add_epi16(a8_mul(c0, a8_ld(xq + k)), a8_mul(c1, a8_ld(xq + k + 32))));
      __m256 ds = _mm256_mul_ps(_mm256_set1_ps(d[k >> 6]), a8_sv(p, n, k));
      if ((k >> 6) & 1)
        acc1 = _mm256_fmadd_ps(f, ds, acc1);
      else
        acc0 = _mm256_fmadd_ps(f, ds, acc0);
    }
  } else {
    dec_ctx c = dec_make(b);
    for (int64_t k = 0; k < K; k += 32) {
      __m256i cb = ub ? a8_ld(ub + k) : a8_chunk32(&c, row, b, k);
      __m256 f = a8_f32(a8_mul(cb, a8_ld(xq + k)));
      float ds = d[k >> 5] * scale_of(p, n * p->G + k / p->group);
      if ((k >> 5) & 1)
        acc1 = _mm256_fmadd_ps(f, _mm256_set1_ps(ds), acc1);
      else
        acc0 = _mm256_fmadd_ps(f, _mm256_set1_ps(ds), acc0);
    }
  }
  return hsum(_mm256_add_ps(acc0, acc1)) - a8_corr(p, n, xqs);
}

#define A8_ROWS4_MAXG 1024 /* rows with more groups take a8_dot */

/* Four rows of 64-code chunks: the x loads and the x scale shared, one FMA chain per row; the
 * rows' scales converted to F32 once, up front. */
AVX2 static void a8_rows4(const qat_packed *p, int64_t n0, const int8_t *xq, const float *d,
                          const float *xqs, float out[4]) {
  int b = p->bits;
  int64_t G = p->G, g = p->group;
  if (G > A8_ROWS4_MAXG) {
    for (int r = 0; r < 4; r++) out[r] = qgemm_a8_dot_avx2(p, n0 + r, NULL, xq, d, xqs);
    return;
  }
  float sb[4][A8_ROWS4_MAXG + 2];
  for (int r = 0; r < 4; r++) a8_scales(p, n0 + r, 0, G, sb[r]);
  const uint8_t *r0 = p->codes + n0 * p->row_bytes, *r1 = r0 + p->row_bytes;
  const uint8_t *r2 = r1 + p->row_bytes, *r3 = r2 + p->row_bytes;
  const __m256i pair = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1); /* g = 32: s_j | s_j+1 */
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
#define A8_ROW(row, r, acc)                                                                      \
  do {                                                                                           \
    __m256i c0_, c1_;                                                                            \
    a8_chunk64(row, b, k, &c0_, &c1_);                                                           \
    __m256 f_ = a8_f32(_mm256_add_epi16(a8_mul(c0_, x0), a8_mul(c1_, x1)));                      \
    __m256 sv_ = g == 32 ? _mm256_permutevar8x32_ps(                                             \
                               _mm256_castps128_ps256(_mm_castsi128_ps(                          \
                                   _mm_loadl_epi64((const __m128i *)(sb[r] + j)))),              \
                               pair)                                                             \
                         : _mm256_broadcast_ss(sb[r] + j);                                       \
    acc = _mm256_fmadd_ps(f_, _mm256_mul_ps(dv, sv_), acc);                                      \
  } while (0)
  for (int64_t k = 0; k < p->K; k += 64) {
    int64_t j = k / g;
    __m256i x0 = a8_ld(xq + k), x1 = a8_ld(xq + k + 32);
    __m256 dv = _mm256_set1_ps(d[k >> 6]);
    A8_ROW(r0, 0, a0);
    A8_ROW(r1, 1, a1);
    A8_ROW(r2, 2, a2);
    A8_ROW(r3, 3, a3);
  }
#undef A8_ROW
  __m256 acc[4] = {a0, a1, a2, a3};
  for (int r = 0; r < 4; r++) out[r] = hsum(acc[r]) - a8_corr_sb(p, n0 + r, 0, G, sb[r], xqs);
}
#undef A8_ROWS4_MAXG

const qgemm_kern qgemm_kern_avx2 = {.decode = avx2_decode,
                                    .dot_row = avx2_dot_row,
                                    .dot4 = avx2_dot4,
                                    .dot = avx2_dot,
                                    .axpy = avx2_axpy,
                                    .a8_decode = qgemm_a8_decode_avx2,
                                    .a8_dot = qgemm_a8_dot_avx2,
                                    .a8_rows4 = a8_rows4,
                                    .name = "avx2"};
#endif
