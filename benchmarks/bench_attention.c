/* Attention benchmark: the CUDA backend's causal flash attention (cuda/attention.cu), forward and
 * backward, BF16, B=2, T=2048, Hq=32, D=128 with Hkv=32 (MHA) and Hkv=8 (GQA), median of --reps
 * timed repetitions after warm-up. Runs through the op table, so it times exactly the production
 * kernels (including the backward's Di pre-pass and scratch handling).
 *
 * FLOPs use the flash-attention convention for causal attention: forward 4 * B * Hq * T^2 * D / 2
 * (two matmuls, half the score matrix), backward 2.5x the forward (five matmuls). The backward's
 * recomputation (P twice, since dQ is a separate pass) is not counted, so TFLOP/s compare with
 * other implementations' numbers.
 *
 * Usage: bench_attention [--json] [--reps N]. Without a GPU (or in a CPU-only build) it prints
 * "skipped: no CUDA GPU" and exits 0. */
#include "backend/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef QAT_HAVE_CUDA

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define CHECK(expr)                                                                                \
  do {                                                                                             \
    qat_status _s = (expr);                                                                        \
    if (_s != QAT_OK) {                                                                            \
      fprintf(stderr, "bench_attention: %s: %s\n", #expr, qat_last_error());                     \
      goto fail;                                                                                   \
    }                                                                                              \
  } while (0)

/* A BF16 device tensor filled with uniform values in [-a, a] (fixed seed). */
static qat_status make(qat_backend *be, qat_tensor *t, int ndim, const int64_t *shape, float a,
                       uint64_t seed, int fill) {
  *t = qat_view(NULL, QAT_BF16, QAT_DEV_CUDA, ndim, shape);
  size_t n = (size_t)qat_numel(t);
  QAT_TRY(be->alloc(be, &t->data, qat_nbytes(t)));
  if (!fill) return be->memset0(be, t->data, qat_nbytes(t));
  float *h = malloc(n * sizeof(float));
  uint16_t *b = malloc(n * sizeof(uint16_t));
  if (!h || !b) {
    free(h);
    free(b);
    return QAT_FAIL(QAT_ENOMEM, "bench_attention: host buffers");
  }
  uint64_t s = seed;
  for (size_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    h[i] = a * (2.0f * (float)((s >> 40) * (1.0 / 16777216.0)) - 1.0f);
  }
  qat_status st = qat_convert_from_f32(h, b, QAT_BF16, n);
  if (st == QAT_OK) st = be->upload(be, t->data, b, n * sizeof(uint16_t));
  free(h);
  free(b);
  return st;
}

typedef struct {
  int64_t B, T, Hq, Hkv, D;
  double fwd_ms, bwd_ms, fwd_tflops, bwd_tflops, total_tflops;
} result;

static int run_case(qat_backend *be, result *r, int reps) {
  const int64_t B = r->B, T = r->T, Hq = r->Hq, Hkv = r->Hkv, D = r->D;
  qat_tensor q = {0}, k = {0}, v = {0}, o = {0}, l = {0}, dout = {0}, dq = {0}, dk = {0}, dv = {0};
  double *tf = calloc((size_t)reps, sizeof(double)), *tb = calloc((size_t)reps, sizeof(double));
  int rc = 1;
  if (!tf || !tb) goto fail;
  const int64_t sq[4] = {B, T, Hq, D}, skv[4] = {B, T, Hkv, D}, sl[3] = {B, Hq, T};
  CHECK(make(be, &q, 4, sq, 2.0f, 1, 1));
  CHECK(make(be, &k, 4, skv, 2.0f, 2, 1));
  CHECK(make(be, &v, 4, skv, 1.0f, 3, 1));
  CHECK(make(be, &dout, 4, sq, 1.0f, 4, 1));
  CHECK(make(be, &o, 4, sq, 0, 0, 0));
  CHECK(make(be, &dq, 4, sq, 0, 0, 0));
  CHECK(make(be, &dk, 4, skv, 0, 0, 0));
  CHECK(make(be, &dv, 4, skv, 0, 0, 0));
  l = qat_view(NULL, QAT_F32, QAT_DEV_CUDA, 3, sl);
  CHECK(be->alloc(be, &l.data, qat_nbytes(&l)));
  const float scale = 1.0f / 11.313708498984761f; /* 1 / sqrt(128) */
  for (int i = 0; i < 3; i++) { /* warm-up: smem attributes, scratch pool, clocks */
    CHECK(QAT_OP(be, attention_fwd, &q, &k, &v, scale, &o, &l));
    CHECK(QAT_OP(be, attention_bwd, &dout, &q, &k, &v, &o, &l, scale, &dq, &dk, &dv));
  }
  CHECK(be->sync(be));
  for (int i = 0; i < reps; i++) {
    double t0 = now_s();
    CHECK(QAT_OP(be, attention_fwd, &q, &k, &v, scale, &o, &l));
    CHECK(be->sync(be));
    double t1 = now_s();
    CHECK(QAT_OP(be, attention_bwd, &dout, &q, &k, &v, &o, &l, scale, &dq, &dk, &dv));
    CHECK(be->sync(be));
    double t2 = now_s();
    tf[i] = t1 - t0;
    tb[i] = t2 - t1;
  }
  const double flops_fwd = 4.0 * B * Hq * (double)T * T * D / 2.0, flops_bwd = 2.5 * flops_fwd;
  const double mf = median(tf, reps), mb = median(tb, reps);
  r->fwd_ms = mf * 1e3;
  r->bwd_ms = mb * 1e3;
  r->fwd_tflops = flops_fwd / mf * 1e-12;
  r->bwd_tflops = flops_bwd / mb * 1e-12;
  r->total_tflops = (flops_fwd + flops_bwd) / (mf + mb) * 1e-12;
  rc = 0;
fail:
  free(tf);
  free(tb);
  qat_tensor *all[] = {&q, &k, &v, &o, &l, &dout, &dq, &dk, &dv};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++)
    if (all[i]->data) be->free(be, all[i]->data);
  return rc;
}

int main(int argc, char **argv) {
  int json = 0, reps = 20;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) {
      json = 1;
    } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = atoi(argv[++i]);
      if (reps < 1) reps = 1;
    } else {
      fprintf(stderr, "usage: %s [--json] [--reps N]\n", argv[0]);
      return 2;
    }
  }
  if (!qat_cuda_available()) {
    printf("skipped: no CUDA GPU\n");
    return 0;
  }
  qat_backend *be = NULL;
  if (qat_backend_cuda(&be) != QAT_OK) {
    fprintf(stderr, "bench_attention: %s\n", qat_last_error());
    return 1;
  }
  result cases[2] = {{2, 2048, 32, 32, 128, 0, 0, 0, 0, 0}, {2, 2048, 32, 8, 128, 0, 0, 0, 0, 0}};
  for (int c = 0; c < 2; c++)
    if (run_case(be, &cases[c], reps)) return 1;
  if (json) {
    printf("{\"bench\": \"attention\", \"backend\": \"cuda\", \"dtype\": \"BF16\", \"causal\": true, "
           "\"reps\": %d, \"stat\": \"median\", \"cases\": [",
           reps);
    for (int c = 0; c < 2; c++) {
      const result *r = &cases[c];
      printf("%s{\"B\": %lld, \"T\": %lld, \"Hq\": %lld, \"Hkv\": %lld, \"D\": %lld, "
             "\"fwd_ms\": %.4f, \"bwd_ms\": %.4f, \"fwd_tflops\": %.3f, \"bwd_tflops\": %.3f, "
             "\"fwd_bwd_tflops\": %.3f}",
             c ? ", " : "", (long long)r->B, (long long)r->T, (long long)r->Hq, (long long)r->Hkv,
             (long long)r->D, r->fwd_ms, r->bwd_ms, r->fwd_tflops, r->bwd_tflops,
             r->total_tflops);
    }
    printf("]}\n");
  } else {
    printf("causal attention, BF16, median of %d (flash-attention FLOP convention)\n", reps);
    for (int c = 0; c < 2; c++) {
      const result *r = &cases[c];
      printf("B=%lld T=%lld Hq=%lld Hkv=%lld D=%lld: fwd %.3f ms (%.2f TFLOP/s), bwd %.3f ms "
             "(%.2f TFLOP/s), fwd+bwd %.2f TFLOP/s\n",
             (long long)r->B, (long long)r->T, (long long)r->Hq, (long long)r->Hkv,
             (long long)r->D, r->fwd_ms, r->fwd_tflops, r->bwd_ms, r->bwd_tflops,
             r->total_tflops);
    }
  }
  return 0;
}

#else

int main(void) {
  printf("skipped: no CUDA GPU\n");
  return 0;
}

#endif
