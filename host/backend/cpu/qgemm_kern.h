/* Private to the CPU qgemm (qgemm.c, qgemm_avx2.c): the inner kernels over one packed row.
 * Each has a portable version (qgemm.c) and an AVX2+FMA one (qgemm_avx2.c, compiled with
 * __attribute__((target)) and chosen at run time with __builtin_cpu_supports), reached through
 * the qgemm_kern table. No AVX-512 variant: this project's CPU machine (AMD EPYC) has none to
 * test it on. */
#ifndef QAT_CPU_QGEMM_KERN_H
#define QAT_CPU_QGEMM_KERN_H

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
  const char *name;
} qgemm_kern;

extern const qgemm_kern qgemm_kern_portable;
#if defined(__x86_64__) || defined(__i386__)
extern const qgemm_kern qgemm_kern_avx2;
#define QAT_QGEMM_HAVE_AVX2 1
#endif

/* The kernels this CPU runs (AVX2 when supported and QAT_QGEMM_PORTABLE is unset). */
const qgemm_kern *qgemm_kern_pick(void);

#endif
