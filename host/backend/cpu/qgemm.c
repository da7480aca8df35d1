/* CPU qgemm on packed low-bit weights (layout: quant/packed_layout.h), the reference for a
 * CUDA twin.  W[N, K] packed; x, y F32 row-major.
 *   trans 0: y[M, N] = x[M, K] @ dequant(W)^T      (a Linear's forward)
 *   trans 1: y[M, K] = x[M, N] @ dequant(W)        (its input gradient dx = dy @ W)
 * Two regimes:
 * - M <= QAT_QGEMM_SMALL_M: decode-and-dot, the weights read once as codes (what makes low-bit
 *   decode fast: the F32 weights are 4-16x the bytes). Forward: OpenMP over rows n of W; M = 1
 *   dots the codes straight from the stream, per group j s_j * (x . q - zp_j * sum x) with the
 *   group sums of x computed once; M > 1 dequantizes the row once into a K-float buffer and
 *   dots it with four rows of x at a time. Transposed: OpenMP
 *   over column chunks of K; each thread adds x[m, n] * dequant(W[n, chunk]) into its own y
 *   columns. Inner kernels AVX2+FMA when the CPU has them (qgemm_avx2.c), else portable C.
 *   With qat_backend.qgemm_act8 the M = 1 forward quantizes x to int8 instead (qgemm_a8.c).
 * - larger M: dequantize a panel of W rows to F32 and cblas_sgemm it (compute bound there, and
 *   OpenBLAS's blocking wins; the panel is a few MB, so the F32 weight never exists whole).
 * Each output element is summed by one thread in an order fixed by the shapes, so the small-M
 * results do not depend on the thread count. */
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/qgemm_kern.h"

#include <cblas.h>
#include <limits.h>
#include <omp.h>
#include <stdlib.h>

#define QAT_QGEMM_SMALL_M 16 /* default crossover; QAT_QGEMM_SMALL_M in the environment overrides
                               it (benchmarks/bench_qgemm measures both sides of it) */
#define QAT_QGEMM_A8_M 1 /* int8 activations (qgemm_act8) up to this M: decode steps. At M = 16
                           the per-m dots lose to the F32 dequantize-once path (SmolLM2 shapes,
                           2 threads: 0.55 vs 0.29 ms); QAT_QGEMM_A8_M overrides */
#define PANEL_MB 4 /* F32 panel of W rows for the large-M path, MiB; QAT_QGEMM_PANEL_MB overrides */

/* ---- portable kernels ------------------------------------------------------------------------ */

static void port_decode(const uint8_t *row, int bits, int64_t k0, int64_t n, float *out) {
  for (int64_t i = 0; i < n; i++) out[i] = (float)qat_packed_get(row, bits, k0 + i);
}

static float port_dot_row(const qat_packed *p, int64_t n, const float *x, const float *xs) {
  const uint8_t *row = p->codes + n * p->row_bytes;
  float tot = 0.0f, corr = 0.0f;
  for (int64_t j = 0; j < p->G; j++) {
    float a = 0.0f;
    for (int64_t k = j * p->group; k < (j + 1) * p->group; k++)
      a += x[k] * (float)qat_packed_get(row, p->bits, k);
    float s = qat_packed_scale(p, n, j);
    tot += s * a;
    corr += s * qat_packed_zp(p, n, j) * xs[j];
  }
  return tot - corr;
}

static float port_dot(const float *a, const float *b, int64_t n) {
  float r = 0.0f;
  for (int64_t i = 0; i < n; i++) r += a[i] * b[i];
  return r;
}

static void port_dot4(const float *x, int64_t ldx, const float *w, int64_t n, float out[4]) {
  for (int i = 0; i < 4; i++) out[i] = port_dot(x + i * ldx, w, n);
}

static void port_axpy(float alpha, const float *x, float *y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

const qgemm_kern qgemm_kern_portable = {.decode = port_decode,
                                        .dot_row = port_dot_row,
                                        .dot4 = port_dot4,
                                        .dot = port_dot,
                                        .axpy = port_axpy,
                                        .a8_decode = qgemm_a8_decode_portable,
                                        .a8_dot = qgemm_a8_dot_portable,
                                        .name = "portable"};

const qgemm_kern *qgemm_kern_pick(void) {
  static const qgemm_kern *k;
  if (!k) {
    const qgemm_kern *pick = &qgemm_kern_portable;
#ifdef QAT_QGEMM_HAVE_AVX2
    const char *env = getenv("QAT_QGEMM_PORTABLE");
    __builtin_cpu_init();
    if (!(env && *env && *env != '0') && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma"))
      pick = &qgemm_kern_avx2;
#endif
    k = pick;
  }
  return k;
}

/* ---- helpers --------------------------------------------------------------------------------- */

/* *cache = the integer in environment variable name (dflt when unset or empty), read once */
static int64_t env_int(const char *name, int64_t dflt, int64_t *cache) {
  if (*cache < 0) {
    const char *e = getenv(name);
    *cache = e && *e ? atoll(e) : dflt;
  }
  return *cache;
}

/* Dequantize columns [k0, k1) of row n into out[k1 - k0] (k0, k1 arbitrary; decode vectorized
 * when k0 is a multiple of 8). dq_forward's arithmetic: (q - zp) * s. */
static void dequant_cols(const qgemm_kern *kn, const qat_packed *p, int64_t n, int64_t k0,
                         int64_t k1, float *out) {
  const uint8_t *row = p->codes + n * p->row_bytes;
  kn->decode(row, p->bits, k0, k1 - k0, out);
  for (int64_t k = k0; k < k1;) {
    int64_t j = k / p->group, e = (j + 1) * p->group < k1 ? (j + 1) * p->group : k1;
    float s = qat_packed_scale(p, n, j), zp = qat_packed_zp(p, n, j);
    for (int64_t i = k; i < e; i++) out[i - k0] = (out[i - k0] - zp) * s;
    k = e;
  }
}

/* xs[m, j] = sum of x[m, group j] */
static void group_sums(const qat_packed *p, int64_t M, const float *x, float *xs) {
  for (int64_t m = 0; m < M; m++)
    for (int64_t j = 0; j < p->G; j++) {
      float a = 0.0f;
      const float *xr = x + m * p->K + j * p->group;
      for (int64_t k = 0; k < p->group; k++) a += xr[k];
      xs[m * p->G + j] = a;
    }
}

/* ---- small M --------------------------------------------------------------------------------- */

static qat_status fwd_small(const qgemm_kern *kn, const qat_packed *p, int64_t M, const float *x,
                            float *y) {
  int64_t N = p->N, K = p->K, G = p->G;
  float *xs = NULL;
  if (M == 1) {
    xs = malloc(sizeof(float) * (size_t)G);
    if (!xs) return QAT_FAIL(QAT_ENOMEM, "qgemm: group sums [%lld]", (long long)G);
    group_sums(p, 1, x, xs);
  }
  int fail = 0;
#pragma omp parallel reduction(| : fail)
  {
    float *wb = M > 1 ? malloc(sizeof(float) * (size_t)(K + 8)) : NULL;
    if (M > 1 && !wb) fail = 1;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      if (fail) continue;
      if (M == 1) { /* codes dotted straight from the stream, group-wise */
        y[n] = kn->dot_row(p, n, x, xs);
        continue;
      }
      /* the row dequantized once (K floats, in L1/L2), then dotted with every row of x */
      dequant_cols(kn, p, n, 0, K, wb);
      int64_t m = 0;
      float o[4];
      for (; m + 4 <= M; m += 4) {
        kn->dot4(x + m * K, K, wb, K, o);
        for (int i = 0; i < 4; i++) y[(m + i) * N + n] = o[i];
      }
      for (; m < M; m++) y[m * N + n] = kn->dot(x + m * K, wb, K);
    }
    free(wb);
  }
  free(xs);
  return fail ? QAT_FAIL(QAT_ENOMEM, "qgemm: per-thread row buffer") : QAT_OK;
}

static qat_status bwd_small(const qgemm_kern *kn, const qat_packed *p, int64_t M, const float *x,
                            float *y) {
  int64_t N = p->N, K = p->K;
  int fail = 0;
  memset(y, 0, sizeof(float) * (size_t)(M * K));
#pragma omp parallel reduction(| : fail)
  {
    int nt = omp_get_num_threads(), t = omp_get_thread_num();
    /* column chunk of this thread, 8-aligned so the decode vectorizes */
    int64_t per = ((K + nt - 1) / nt + 7) / 8 * 8;
    int64_t k0 = t * per < K ? t * per : K, k1 = k0 + per < K ? k0 + per : K;
    float *wb = k1 > k0 ? malloc(sizeof(float) * (size_t)(k1 - k0 + 8)) : NULL;
    if (k1 > k0 && !wb) fail = 1;
    for (int64_t n = 0; n < N && wb; n++) {
      dequant_cols(kn, p, n, k0, k1, wb);
      for (int64_t m = 0; m < M; m++) kn->axpy(x[m * N + n], wb, y + m * K + k0, k1 - k0);
    }
    free(wb);
  }
  return fail ? QAT_FAIL(QAT_ENOMEM, "qgemm: per-thread weight buffer") : QAT_OK;
}

/* ---- large M: dequantized panels + sgemm ----------------------------------------------------- */

static qat_status panels(const qgemm_kern *kn, const qat_packed *p, int trans, int64_t M,
                         const float *x, float *y) {
  int64_t N = p->N, K = p->K;
  static int64_t panel_mb = -1;
  env_int("QAT_QGEMM_PANEL_MB", PANEL_MB, &panel_mb);
  if (panel_mb <= 0) panel_mb = PANEL_MB;
  int64_t nb = (int64_t)(((size_t)panel_mb << 20) / (4 * (size_t)K));
  nb = nb < 16 ? 16 : nb / 16 * 16;
  if (nb > N) nb = N;
  float *w = malloc(sizeof(float) * (size_t)(nb * K + 8));
  if (!w) return QAT_FAIL(QAT_ENOMEM, "qgemm: panel [%lld, %lld]", (long long)nb, (long long)K);
  for (int64_t n0 = 0; n0 < N; n0 += nb) {
    int64_t r = n0 + nb <= N ? nb : N - n0;
    /* on this thread alone: an OpenMP region here would alternate with OpenBLAS's own pool
     * 16+ times a call, each waiting for the other's spinning workers to yield the cores
     * (Llama-2-7B 4096 x 4096 at M = 128, 2 threads: 168 ms with it vs 82 ms, OpenBLAS F32 81) */
    for (int64_t i = 0; i < r; i++) dequant_cols(kn, p, n0 + i, 0, K, w + i * K);
    if (!trans) /* y[:, n0 : n0+r] = x[M, K] @ w[r, K]^T */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)r, (int)K, 1.0f, x,
                  (int)K, w, (int)K, 0.0f, y + n0, (int)N);
    else /* y[M, K] += x[:, n0 : n0+r] @ w[r, K] */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)K, (int)r, 1.0f,
                  x + n0, (int)N, w, (int)K, n0 == 0 ? 0.0f : 1.0f, y, (int)K);
  }
  free(w);
  return QAT_OK;
}

/* ---- the op ---------------------------------------------------------------------------------- */

static qat_status cpu_qgemm(const qat_backend *be, int trans, int64_t M, const qat_packed *w,
                            const qat_tensor *x, qat_tensor *y) {
  const char *op = "qgemm";
  if (!w || !w->codes || !w->scales || (!w->sym && !w->zeros))
    return QAT_FAIL(QAT_EINVAL, "qgemm: packed weight missing or empty");
  if (w->bits < 2 || w->bits > 8 || w->group <= 0 || w->K % w->group != 0 ||
      w->G != w->K / w->group || w->row_bytes != qat_packed_stream_bytes(w->K, w->bits))
    return QAT_FAIL(QAT_EINVAL, "qgemm: inconsistent packed weight (bits %d, group %d, K %lld)",
                    w->bits, w->group, (long long)w->K);
  CPU_F32(op, x);
  CPU_F32(op, y);
  if (M < 0 || M > INT_MAX || w->N > INT_MAX || w->K > INT_MAX)
    return QAT_FAIL(QAT_EINVAL, "qgemm: M=%lld N=%lld K=%lld outside the BLAS int range",
                    (long long)M, (long long)w->N, (long long)w->K);
  int64_t in = trans ? w->N : w->K, out = trans ? w->K : w->N;
  CPU_NUMEL(op, x, M * in);
  CPU_NUMEL(op, y, M * out);
  if (M == 0) return QAT_OK;
  CPU_COLS(op, x, in);
  CPU_COLS(op, y, out);
  if (x->data == y->data) return QAT_FAIL(QAT_EINVAL, "qgemm: y aliases x");
  const qgemm_kern *kn = qgemm_kern_pick();
  static int64_t small_m = -1, a8_m = -1;
  int64_t sm = env_int("QAT_QGEMM_SMALL_M", QAT_QGEMM_SMALL_M, &small_m);
  if (M > sm) return panels(kn, w, trans, M, x->data, y->data);
  if (!trans && be->qgemm_act8 && M <= env_int("QAT_QGEMM_A8_M", QAT_QGEMM_A8_M, &a8_m) &&
      qgemm_a8_ok(w))
    return qgemm_fwd_a8(kn, w, M, x->data, y->data);
  return trans ? bwd_small(kn, w, M, x->data, y->data) : fwd_small(kn, w, M, x->data, y->data);
}

void qat_cpu_register_qgemm(qat_backend *be) { be->qgemm = cpu_qgemm; }
