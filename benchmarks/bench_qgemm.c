/* qgemm (packed low-bit weights, host/backend/cpu/qgemm*.c) against OpenBLAS on F32 weights
 * (cblas_sgemv at M = 1, cblas_sgemm otherwise) on the dequantized weight, in the same run.
 * Weights cold for both sides: each repetition uses the next of enough distinct copies that
 * their total exceeds 4x the last-level cache (8 MiB here; QGEMM_COLD_MB, default 64), so a
 * small packed matrix does not win by staying in cache. Median of the repetitions (at least 3,
 * until ~0.25 s per side). Correctness lives in tests/test_qgemm.c; this file only times.
 *
 *   bench_qgemm [--json] [--quick] [--act f32|int8|both] [--device cpu|cuda|both]
 * Cases: SmolLM2-135M shapes (576x576, 1536x576, 576x1536) and Llama-2-7B shapes (4096x4096,
 * 11008x4096, 4096x11008) as N x K, at M = 1, 16, 128 (issue 11's); W4 g128, W3 g128, W2 g64
 * (asymmetric, F16 scales); on SmolLM2, whose 576 columns are not whole groups of 128, g64.
 * Activations (qat_backend.qgemm_act8): F32, and at M <= 16 also int8 (llama.cpp's Q8_0
 * scheme; M = 128 runs the panel path either way). --quick: the SmolLM2 shapes and 4096x4096.
 * Record: device "cpu", model, bits, group, act, M, N, K, ms, baseline_ms, speedup, weight_gbps
 * (packed bytes / ms) and baseline_gbps (F32 bytes / baseline_ms).
 * --device both (default) then runs the CUDA side when the build has CUDA and a GPU is visible:
 * the same 7B cases against cuBLASLt BF16, records in the same JSON list (qgemm_cuda_side.h). */
#include "backend/backend.h"
#include "quant/packed.h"
#include "qgemm_cuda_side.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static uint64_t g_rng = 88172645463325252ull;
static uint64_t next(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

static size_t g_cold_bytes = (size_t)64 << 20;

/* Times fn over cycling copies; returns the median in ms. */
typedef qat_status (*run_fn)(void *ctx, int copy);
static double time_it(run_fn fn, void *ctx, int ncopies) {
  double t[64];
  int n = 0;
  double start = now_ms();
  fn(ctx, 0); /* warm-up (page faults, OpenBLAS threads) */
  while (n < 64 && (n < 3 || now_ms() - start < 250.0)) {
    double t0 = now_ms();
    qat_status st = fn(ctx, (n + 1) % ncopies);
    t[n++] = now_ms() - t0;
    if (st != QAT_OK) {
      fprintf(stderr, "bench_qgemm: %s\n", qat_last_error());
      exit(1);
    }
  }
  qsort(t, (size_t)n, sizeof *t, cmp_double);
  return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

typedef struct ctx {
  qat_backend *be;
  int64_t M, N, K;
  qat_packed *pk; /* [ncopies] */
  float **wf;     /* [ncopies] F32 [N, K] */
  qat_tensor x, y;
} ctx;

static qat_status run_q(void *c_, int i) {
  ctx *c = c_;
  return QAT_OP(c->be, qgemm, 0, c->M, &c->pk[i], &c->x, &c->y);
}
/* the baseline is OpenBLAS itself (the peer), called directly: the backend's gemm op
 * runs M = 1 on its own row dots (gemv.c) */
static qat_status run_f(void *c_, int i) {
  ctx *c = c_;
  const float *x = c->x.data, *w = c->wf[i];
  float *y = c->y.data;
  if (c->M == 1)
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)c->N, (int)c->K, 1.0f, w, (int)c->K, x, 1, 0.0f,
                y, 1);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->M, (int)c->N, (int)c->K, 1.0f, x,
                (int)c->K, w, (int)c->K, 0.0f, y, (int)c->N);
  return QAT_OK;
}

static int ncopies_for(size_t bytes) {
  size_t n = (g_cold_bytes + bytes - 1) / bytes;
  return n < 1 ? 1 : (n > 64 ? 64 : (int)n);
}

static int g_json, g_first = 1;

static void bench_case(const char *model, int bits, int group, int64_t M, int64_t N, int64_t K,
                       int act8) {
  qat_backend *be = qat_backend_cpu();
  qat_qspec q = {.bits = bits, .group = group, .sym = 0};
  qat_packed base;
  if (qat_packed_alloc(&base, &q, N, K, QAT_F16, "w") != QAT_OK) {
    fprintf(stderr, "bench_qgemm: %s\n", qat_last_error());
    exit(1);
  }
  for (int64_t i = 0; i < N * base.row_bytes; i++) base.codes[i] = (uint8_t)next();
  for (int64_t i = 0; i < N * base.zrow_bytes; i++) base.zeros[i] = (uint8_t)next();
  for (int64_t i = 0; i < N * base.G; i++)
    ((uint16_t *)base.scales)[i] = qat_f32_to_f16(0.001f + 0.01f * (float)(next() % 1000) / 1000);
  int nq = ncopies_for((size_t)qat_packed_bytes(&base)), nf = ncopies_for((size_t)(N * K) * 4);
  ctx c = {.be = be, .M = M, .N = N, .K = K};
  c.pk = calloc((size_t)nq, sizeof *c.pk);
  c.wf = calloc((size_t)nf, sizeof *c.wf);
  for (int i = 0; i < nq; i++) {
    if (qat_packed_alloc(&c.pk[i], &q, N, K, QAT_F16, "w") != QAT_OK) exit(1);
    memcpy(c.pk[i].codes, base.codes, (size_t)(N * base.row_bytes));
    memcpy(c.pk[i].zeros, base.zeros, (size_t)(N * base.zrow_bytes));
    memcpy(c.pk[i].scales, base.scales, (size_t)(N * base.G) * 2);
  }
  for (int i = 0; i < nf; i++) {
    c.wf[i] = malloc((size_t)(N * K) * 4);
    if (!c.wf[i]) {
      fprintf(stderr, "bench_qgemm: out of memory\n");
      exit(1);
    }
    qat_packed_dequant(&base, 0, N, c.wf[i]);
  }
  float *x = malloc((size_t)(M * K) * 4), *y = malloc((size_t)(M * N) * 4);
  for (int64_t i = 0; i < M * K; i++) x[i] = (float)((int)(next() % 2001) - 1000) * 1e-3f;
  c.x = qat_view2(x, QAT_F32, QAT_DEV_CPU, M, K);
  c.y = qat_view2(y, QAT_F32, QAT_DEV_CPU, M, N);
  be->qgemm_act8 = act8;
  double ms = time_it(run_q, &c, nq);
  be->qgemm_act8 = 0;
  double bms = time_it(run_f, &c, nf);
  const char *act = act8 ? "int8" : "f32";
  double qb = (double)qat_packed_bytes(&base), fb = (double)(N * K) * 4;
  if (g_json)
    printf("%s{\"device\": \"cpu\", \"model\": \"%s\", \"bits\": %d, \"group\": %d, \"act\": \"%s\", \"M\": %lld, "
           "\"N\": %lld, \"K\": %lld, \"ms\": %.4f, \"baseline_ms\": %.4f, \"speedup\": %.3f, "
           "\"weight_gbps\": %.2f, \"baseline_gbps\": %.2f}",
           g_first ? "[\n" : ",\n", model, bits, group, act, (long long)M, (long long)N,
           (long long)K, ms, bms, bms / ms, qb / (ms * 1e6), fb / (bms * 1e6));
  else
    printf("| %-8s | W%d g%-3d | %-4s | %4lld | %5lld x %5lld | %9.3f | %9.3f | %6.2fx | %7.2f | %7.2f |\n",
           model, bits, group, act, (long long)M, (long long)N, (long long)K, ms, bms, bms / ms,
           qb / (ms * 1e6), fb / (bms * 1e6));
  fflush(stdout);
  g_first = 0;
  for (int i = 0; i < nq; i++) qat_packed_free(&c.pk[i]);
  for (int i = 0; i < nf; i++) free(c.wf[i]);
  free(c.pk);
  free(c.wf);
  free(x);
  free(y);
  qat_packed_free(&base);
}

int main(int argc, char **argv) {
  int quick = 0, acts = 3; /* bit 0: F32 activations, bit 1: int8 (M <= 16 only) */
  int devs = 3;            /* bit 0: the CPU side, bit 1: the CUDA side */
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json"))
      g_json = 1;
    else if (!strcmp(argv[i], "--quick"))
      quick = 1;
    else if (!strcmp(argv[i], "--act") && i + 1 < argc && (!strcmp(argv[i + 1], "f32") ||
                                                           !strcmp(argv[i + 1], "int8") ||
                                                           !strcmp(argv[i + 1], "both"))) {
      i++;
      acts = !strcmp(argv[i], "f32") ? 1 : !strcmp(argv[i], "int8") ? 2 : 3;
    } else if (!strcmp(argv[i], "--device") && i + 1 < argc && (!strcmp(argv[i + 1], "cpu") ||
                                                                !strcmp(argv[i + 1], "cuda") ||
                                                                !strcmp(argv[i + 1], "both"))) {
      i++;
      devs = !strcmp(argv[i], "cpu") ? 1 : !strcmp(argv[i], "cuda") ? 2 : 3;
    } else {
      fprintf(stderr, "usage: bench_qgemm [--json] [--quick] [--act f32|int8|both] "
                      "[--device cpu|cuda|both]\n");
      return 2;
    }
  }
  const char *cold = getenv("QGEMM_COLD_MB");
  if (cold && atoi(cold) > 0) g_cold_bytes = (size_t)atoi(cold) << 20;
  const struct { const char *model; int64_t N, K; int big; } shapes[] = {
      {"smollm2", 576, 576, 0},     {"smollm2", 1536, 576, 0},    {"smollm2", 576, 1536, 0},
      {"llama7b", 4096, 4096, 0},   {"llama7b", 11008, 4096, 1},  {"llama7b", 4096, 11008, 1},
  };
  const int cfg[][2] = {{4, 128}, {3, 128}, {2, 64}};
  const int64_t Ms[] = {1, 16, 128};
  if (!g_json && (devs & 1)) {
    printf("qgemm vs F32 gemm (OpenBLAS) on the dequantized weight, %d OpenMP threads, cold "
           "weights (%zu MiB of copies)\n",
           omp_get_max_threads(), g_cold_bytes >> 20);
    printf("| model    | format  | act  |    M |      N x K    |  qgemm ms |    F32 ms | speedup | q GB/s  | F32 GB/s|\n");
    printf("|----------|---------|------|------|---------------|-----------|-----------|---------|---------|---------|\n");
  }
  for (int s = 0; s < 6 && (devs & 1); s++) {
    if (quick && shapes[s].big) continue;
    for (int mi = 0; mi < 3; mi++)
      for (int c = 0; c < 3; c++) /* SmolLM2's 576 columns are 4.5 groups of 128: g64 there */
        for (int a8 = 0; a8 <= 1; a8++) {
          if (!(acts >> a8 & 1) || (a8 && Ms[mi] > 16)) continue; /* int8 x: the small-M path */
          bench_case(shapes[s].model, cfg[c][0], shapes[s].K % cfg[c][1] ? 64 : cfg[c][1], Ms[mi],
                     shapes[s].N, shapes[s].K, a8);
        }
  }
  if (devs & 2) qgemm_cuda_side(g_json, quick, &g_first);
  if (g_json) printf(g_first ? "[]\n" : "\n]\n");
  return 0;
}
