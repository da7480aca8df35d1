/* GPTQ's host step (quant/gptq.h: Cholesky of H^-1 with LAPACK, the column loop, the lazy-block
 * GEMMs) on Llama-2-7B Linear shapes, W4 g128 asymmetric, random W and a random positive
 * definite H (X^T X of 2 * in random rows, so its cost is what it is for real data): seconds per
 * Linear next to the GEMM rate of the same machine (an sgemm of the block-update shape), and the
 * projected host time of a whole 7B model (32 x (4 of [4096, 4096] + 2 of [11008, 4096] +
 * 1 of [4096, 11008])). The H accumulation and the block passes run on the device and are not
 * included.
 *
 *   bench_gptq [--json] [--small]     (--small: [512, 512] and [1376, 512] only, for CI-sized runs)
 * Correctness lives in tests/test_gptq.c and tests/test_gptq_model.sh; this file only times. */
#include "core/log.h"
#include "quant/gptq.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static float frand(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return (float)(*s >> 40) / (float)(1 << 24) - 0.5f;
}

/* Seconds of one GPTQ of W[out, in] (the H build not timed); 0 on failure. */
static double time_linear(int64_t out, int64_t in) {
  uint64_t seed = 42;
  int64_t nx = 2 * in;
  float *W = malloc((size_t)(out * in) * 4), *X = malloc((size_t)(nx * in) * 4);
  float *Hf = malloc((size_t)(in * in) * 4);
  double *H = malloc((size_t)(in * in) * 8);
  float *s = malloc((size_t)(out * in) * 4), *z = malloc((size_t)(out * in) * 4);
  if (!W || !X || !Hf || !H || !s || !z) return 0;
  for (int64_t i = 0; i < out * in; i++) W[i] = 0.05f * frand(&seed);
  for (int64_t i = 0; i < nx * in; i++) X[i] = frand(&seed);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)in, (int)in, (int)nx, 1.0f, X,
              (int)in, X, (int)in, 0.0f, Hf, (int)in);
  for (int64_t i = 0; i < in * in; i++) H[i] = Hf[i];
  qat_qspec q = {.bits = 4, .group = 128, .sym = 0};
  qat_gptq_opts o = {.damp = 0.01, .block = 128};
  double t0 = qat_now();
  qat_status st = qat_gptq_linear(&q, &o, W, out, in, H, s, z, NULL);
  double t = qat_now() - t0;
  if (st != QAT_OK) fprintf(stderr, "bench_gptq: %s\n", qat_last_error());
  free(W);
  free(X);
  free(Hf);
  free(H);
  free(s);
  free(z);
  return st == QAT_OK ? t : 0;
}

/* GFLOP/s of an sgemm [out, nb] @ [nb, in] (the lazy-block update's shape). */
static double gemm_rate(int64_t out, int64_t in, int64_t nb) {
  float *a = calloc((size_t)(out * nb), 4), *b = calloc((size_t)(nb * in), 4),
        *c = calloc((size_t)(out * in), 4);
  if (!a || !b || !c) return 0;
  double best = 1e30;
  for (int r = 0; r < 3; r++) {
    double t0 = qat_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)out, (int)in, (int)nb, -1.0f, a,
                (int)nb, b, (int)in, 1.0f, c, (int)in);
    double t = qat_now() - t0;
    best = t < best ? t : best;
  }
  free(a);
  free(b);
  free(c);
  return 2.0 * out * in * nb / best / 1e9;
}

int main(int argc, char **argv) {
  int json = 0, small = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json"))
      json = 1;
    else if (!strcmp(argv[i], "--small"))
      small = 1;
    else {
      fprintf(stderr, "usage: bench_gptq [--json] [--small]\n");
      return 2;
    }
  }
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  const int64_t shapes[3][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}}; /* [out, in] */
  const int64_t small_shapes[3][2] = {{512, 512}, {1376, 512}, {512, 1376}};
  const int count[3] = {4, 2, 1}; /* per decoder block: q k v o | gate up | down */
  double sec[3], total = 0;
  for (int k = 0; k < 3; k++) {
    const int64_t *sh = small ? small_shapes[k] : shapes[k];
    sec[k] = time_linear(sh[0], sh[1]);
    if (sec[k] <= 0) return 1;
    total += count[k] * sec[k];
  }
  double rate = gemm_rate(small ? 512 : 4096, small ? 512 : 4096, 128);
  double proj_h = total * 32 / 3600.0;
  if (json) {
    printf("{\"bench\": \"gptq\", \"device\": \"cpu\", \"threads\": %d, \"quant\": \"W4g128\", "
           "\"small\": %s, \"s_per_linear\": [%.4f, %.4f, %.4f], \"sgemm_gflops\": %.1f, "
           "\"projected_7b_host_hours\": %.4f}\n",
           threads, small ? "true" : "false", sec[0], sec[1], sec[2], rate, proj_h);
    return 0;
  }
  printf("GPTQ host step (W4 g128, blocks of 128), %d threads:\n", threads);
  for (int k = 0; k < 3; k++) {
    const int64_t *sh = small ? small_shapes[k] : shapes[k];
    printf("  [%lld, %lld]  %.3f s per Linear\n", (long long)sh[0], (long long)sh[1], sec[k]);
  }
  printf("  sgemm [%d, 128] @ [128, %d]: %.1f GFLOP/s on this machine\n", small ? 512 : 4096,
         small ? 512 : 4096, rate);
  if (!small)
    printf("  projected for Llama-2-7B (224 Linears): %.2f h of host time (H accumulation and "
           "block passes on the device not included)\n",
           proj_h);
  return 0;
}
