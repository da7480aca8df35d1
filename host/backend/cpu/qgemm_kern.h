/* Private to the CPU qgemm (qgemm.c, qgemm_avx2.c): the inner kernels over one packed row.
 * Each has a portable version (qgemm.c) and an AVX2+FMA one (qgemm_avx2.c, compiled with
 * __attribute__((target)) and chosen at run time with __builtin_cpu_supports), reached through
 * the qgemm_kern table. No AVX-512 variant: this project's CPU machine (AMD EPYC) has none to
 * test it on. */
#ifndef QAT_CPU_QGEMM_KERN_H
#define QAT_CPU_QGEMM_KERN_H

#include "core/status.h"
#include "quant/packed_layout.h"

typedef struct qgemm_kern {
  /* out[0 .. n) = codes k0 .. k0+n-1 of the b-bit stream row, as floats (integers 0..2^b-1) */
  void (*decode)(const uint8_t *row, int bits, int64_t k0, int64_t n, float *out);
  /* sum_k x[k] * code[k] over one row of W for M = 1, group-wise:
   *   returns sum_j s_j * (sum_{k in j} x[k] q[k] - zp_j * xs[j]), xs[j] = sum_{k in j} x[k] */
  float (*dot_row)(const qat_packed *p, int64_t n, const float *x, const float *xs);
  /* out[i] = sum_k x[i * ldx + k] w[k] for i < 4 (four rows of x against one weight row) */
  void (*dot4)(const float *x, int64_t ldx, const float *w, int64_t n, float out[4]);
  /* sum_k a[k] b[k], n elements */
  float (*dot)(const float *a, const float *b, int64_t n);
  /* y[k] += alpha * x[k], n elements */
  void (*axpy)(float alpha, const float *x, float *y, int64_t n);
  /* ---- int8 activations (qat_backend.qgemm_act8; qgemm_a8.c) ----
   * Rows are cut into chunks of qgemm_a8_chunk(p) codes (64 or 32; one group or, 4 bits at
   * g = 32, two whole groups), and each chunk of x is one block with its own int8 scale d. A chunk's codes decode
   * to as many unsigned bytes in the order that is cheapest for b bits, qgemm_a8_lane; x is
   * quantized into the same order, so the dot products line up. Needs 2 <= b <= 7 (code x int8
   * pairs fit int16) and g % 32 == 0. */
  /* out[0 .. K) = the codes of row n, each chunk in lane order */
  void (*a8_decode)(const qat_packed *p, int64_t n, uint8_t *out);
  /* sum_c d_c sum_{j} s_j (sum_{k in c, j} q_k xq_k) - sum_j s_j zp_j xqs_j for row n, with
   * xq int8 [K] in lane order, d [K / chunk] the x scales, xqs [G] = sum over group j's inputs
   * of d_c xq; the codes from ub (a8_decode's output) or, when ub is NULL, straight from the
   * stream */
  float (*a8_dot)(const qat_packed *p, int64_t n, const uint8_t *ub, const int8_t *xq,
                  const float *d, const float *xqs);
  /* out[r] = a8_dot of rows n0 + r, r < 4, from the stream, x loads shared by the four rows;
   * only for chunks of 64 (qgemm_a8_chunk); NULL when the kernel set has none */
  void (*a8_rows4)(const qat_packed *p, int64_t n0, const int8_t *xq, const float *d,
                   const float *xqs, float out[4]);
  const char *name;
} qgemm_kern;

/* Codes per chunk: 64 for b = 4 (g % 64 == 0, or g = 32 with K % 64 == 0: a chunk then holds
 * two groups) and for b = 2 with g % 64 == 0, else 32. One 32-byte or 16-byte load gives 64
 * codes with no lane-crossing shuffle, and two vpmaddubsw results still fit int16. */
static inline int qgemm_a8_chunk(const qat_packed *p) {
  if (p->bits == 4 && (p->group % 64 == 0 || (p->group == 32 && p->K % 64 == 0))) return 64;
  return p->bits == 2 && p->group % 64 == 0 ? 64 : 32;
}

/* Position within its chunk of the code that lane i (0 .. chunk-1) of a decoded chunk holds:
 * b = 4: the low nibbles of the chunk's bytes, then the high ones; b = 2: bit pair t of every
 * byte in lanes t * chunk/4 .. (t+1) * chunk/4 - 1; other b: in order. */
static inline int qgemm_a8_lane(const qat_packed *p, int i) {
  int c = qgemm_a8_chunk(p);
  if (p->bits == 4) return i < c / 2 ? 2 * i : 2 * (i - c / 2) + 1;
  if (p->bits == 2) return 4 * (i % (c / 4)) + i / (c / 4);
  return i;
}

/* Whether the int8-activation kernels take this weight. */
static inline int qgemm_a8_ok(const qat_packed *p) {
  return p->bits >= 2 && p->bits <= 7 && p->group % 32 == 0;
}

extern const qgemm_kern qgemm_kern_portable;
void qgemm_a8_decode_portable(const qat_packed *p, int64_t n, uint8_t *out);
float qgemm_a8_dot_portable(const qat_packed *p, int64_t n, const uint8_t *ub, const int8_t *xq,
                            const float *d, const float *xqs);
/* y[M, N] = x[M, K] @ dequant(W)^T through the int8-activation kernels (qgemm_a8.c) */
qat_status qgemm_fwd_a8(const qgemm_kern *kn, const qat_packed *p, int64_t M, const float *x,
                        float *y);
#if defined(__x86_64__) || defined(__i386__)
void qgemm_a8_decode_avx2(const qat_packed *p, int64_t n, uint8_t *out);
float qgemm_a8_dot_avx2(const qat_packed *p, int64_t n, const uint8_t *ub, const int8_t *xq,
                        const float *d, const float *xqs);
#endif
#if defined(__x86_64__) || defined(__i386__)
extern const qgemm_kern qgemm_kern_avx2;
#define QAT_QGEMM_HAVE_AVX2 1
#endif

/* The kernels this CPU runs (AVX2 when supported and QAT_QGEMM_PORTABLE is unset). */
const qgemm_kern *qgemm_kern_pick(void);

#endif
