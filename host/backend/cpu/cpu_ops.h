/* Private to the CPU backend's dense, LLaMA-block and optimizer ops (gemm.c, elementwise.c,
 * embedding.c, rmsnorm.c, rope.c, attention.c, swiglu.c, xent.c, adamw.c): their entry points,
 * which nn.c registers in the op table, and the argument checks they share.
 *
 * Every op validates before it writes anything: a tensor that is NULL, not on the CPU, not F32
 * (QAT_EUNSUPPORTED naming the op and the dtype) or whose shape disagrees with the others
 * (QAT_EINVAL naming the op and both shapes) leaves every output untouched.
 *
 * Determinism: no result depends on the number of OpenMP threads. Each output element is written
 * by one thread, and every reduction (bias_bwd, rmsnorm dw, embedding_bwd, GQA dk/dv, sumsq) runs
 * in an order fixed by the shapes alone. */
#ifndef QAT_BACKEND_CPU_OPS_H
#define QAT_BACKEND_CPU_OPS_H

#include "backend/backend.h"

#include <stdint.h>
#include <string.h>

/* Loops over fewer elements than this stay on one thread: forking costs more than they do. */
#define QAT_CPU_PAR_MIN 16384

/* ---- argument checks (file:line of the caller goes into the message) ---- */
/* t non-NULL, on the CPU, of dtype `want`, with data when it has elements. */
qat_status qat_cpu_check_arg(const char *op, const char *what, const qat_tensor *t, qat_dtype want,
                             const char *file, int line);
/* a and b have the same ndim and dims. */
qat_status qat_cpu_check_same(const char *op, const char *an, const qat_tensor *a, const char *bn,
                              const qat_tensor *b, const char *file, int line);
/* numel(t) == n. */
qat_status qat_cpu_check_numel(const char *op, const char *what, const qat_tensor *t, int64_t n,
                               const char *file, int line);
/* t has ndim >= 1 and its last dim is `cols` (t is then [rows, cols] with rows = the product of
 * the leading dims). */
qat_status qat_cpu_check_cols(const char *op, const char *what, const qat_tensor *t, int64_t cols,
                              const char *file, int line);

#define CPU_ARG(op, t, dt) QAT_TRY(qat_cpu_check_arg((op), #t, (t), (dt), __FILE__, __LINE__))
#define CPU_F32(op, t) CPU_ARG(op, t, QAT_F32)
#define CPU_SAME(op, a, b) QAT_TRY(qat_cpu_check_same((op), #a, (a), #b, (b), __FILE__, __LINE__))
#define CPU_NUMEL(op, t, n) QAT_TRY(qat_cpu_check_numel((op), #t, (t), (n), __FILE__, __LINE__))
#define CPU_COLS(op, t, c) QAT_TRY(qat_cpu_check_cols((op), #t, (t), (c), __FILE__, __LINE__))

/* Last dim and product of the leading dims of a tensor with ndim >= 1 (no division, so a zero
 * last dim is fine). */
int64_t qat_cpu_cols(const qat_tensor *t);
int64_t qat_cpu_rows(const qat_tensor *t);

/* ---- ops (semantics in backend/backend.h) ---- */
qat_status qat_cpu_gemm(const qat_backend *be, int ta, int tb, int64_t M, int64_t N, int64_t K,
                        float alpha, const qat_tensor *A, const qat_tensor *B, float beta,
                        qat_tensor *C);
/* c[N] = alpha * B[N, K] a[K] + beta * c (row stride ldb; beta == 0 never reads c): the M = 1
 * GEMV of the gemm op, on OpenMP threads (gemv.c) */
void qat_cpu_gemv_rows(int64_t N, int64_t K, float alpha, const float *B, int64_t ldb,
                       const float *a, float beta, float *c);
qat_status qat_cpu_axpy(const qat_backend *be, float alpha, const qat_tensor *x, qat_tensor *y);
qat_status qat_cpu_scale(const qat_backend *be, float alpha, qat_tensor *x);
qat_status qat_cpu_sumsq(const qat_backend *be, const qat_tensor *x, double *out);
qat_status qat_cpu_bias_fwd(const qat_backend *be, qat_tensor *y, const qat_tensor *b);
qat_status qat_cpu_bias_bwd(const qat_backend *be, const qat_tensor *dy, qat_tensor *db);

qat_status qat_cpu_embedding_fwd(const qat_backend *be, const qat_tensor *tokens,
                                 const qat_tensor *table, qat_tensor *out);
qat_status qat_cpu_embedding_bwd(const qat_backend *be, const qat_tensor *tokens,
                                 const qat_tensor *dout, qat_tensor *dtable);
qat_status qat_cpu_rmsnorm_fwd(const qat_backend *be, const qat_tensor *x, const qat_tensor *w,
                               float eps, qat_tensor *out, qat_tensor *rstd);
qat_status qat_cpu_rmsnorm_bwd(const qat_backend *be, const qat_tensor *dout, const qat_tensor *x,
                               const qat_tensor *w, const qat_tensor *rstd, qat_tensor *dx,
                               qat_tensor *dw);
qat_status qat_cpu_rope(const qat_backend *be, qat_tensor *x, const qat_tensor *inv_freq,
                        int64_t pos0, int inverse);
qat_status qat_cpu_attention_fwd(const qat_backend *be, const qat_tensor *q, const qat_tensor *k,
                                 const qat_tensor *v, float scale, qat_tensor *out,
                                 qat_tensor *lse);
qat_status qat_cpu_attention_bwd(const qat_backend *be, const qat_tensor *dout,
                                 const qat_tensor *q, const qat_tensor *k, const qat_tensor *v,
                                 const qat_tensor *out, const qat_tensor *lse, float scale,
                                 qat_tensor *dq, qat_tensor *dk, qat_tensor *dv);
qat_status qat_cpu_swiglu_fwd(const qat_backend *be, const qat_tensor *gate, const qat_tensor *up,
                              qat_tensor *out);
qat_status qat_cpu_swiglu_bwd(const qat_backend *be, const qat_tensor *dout,
                              const qat_tensor *gate, const qat_tensor *up, qat_tensor *dgate,
                              qat_tensor *dup);
qat_status qat_cpu_xent(const qat_backend *be, const qat_tensor *logits, const qat_tensor *targets,
                        qat_tensor *losses, qat_tensor *dlogits, float dscale);

qat_status qat_cpu_adamw(const qat_backend *be, qat_tensor *param, const qat_tensor *grad,
                         qat_tensor *m, qat_tensor *v, float lr, float beta1, float beta2,
                         float eps, float weight_decay, int64_t t);

/* exp(x) for softmax arguments x <= 0 (any x < 88 works), within 2 ulp of expf; 0 below -87.3
 * (where expf is denormal, < 1.2e-38). Cephes expf: x = n ln2 + r, |r| <= ln2/2, a degree-5
 * minimax for (e^r - 1 - r) / r^2, 2^n put into the exponent bits: measured within 1 ulp of
 * exp over [-87.3, 1]. Branch-free so `omp simd` loops vectorize it (glibc's expf is a scalar
 * call). -inf gives 0, NaN gives NaN. */
static inline float qat_fast_expf(float x) {
  const float big = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer in the low bits */
  float t = x * 1.44269504088896341f + big;
  float n = t - big;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * r * r + r + 1.0f;
  /* float <-> int through memcpy and masks, not unions or float selects: those stop GCC's
   * vectorizer ("control flow in loop") */
  int32_t tb, yb, eb;
  memcpy(&tb, &t, sizeof tb);
  int32_t ni = tb - 0x4B400000; /* = n */
  ni = ni < -126 ? -126 : ni;
  eb = (ni + 127) << 23; /* 2^n */
  float e;
  memcpy(&e, &eb, sizeof e);
  y = y * e;
  int32_t keep = -(int32_t)!(x < -87.33f); /* all ones, or 0 where x < -87.33 (NaN kept) */
  memcpy(&yb, &y, sizeof yb);
  yb &= keep;
  memcpy(&y, &yb, sizeof y);
  return y;
}


#endif
