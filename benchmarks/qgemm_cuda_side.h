/* The CUDA side of benchmarks/bench_qgemm.c (included by it only; a header so the one binary
 * times both backends in the same run): qgemm on packed weights (cuda/qgemm*.cu) against
 * cuBLASLt BF16 (the backend's gemm, BF16 x BF16 -> F32, FP32 accumulation) on the same weights
 * dequantized to BF16. Without a CUDA build or a visible GPU it says so on stderr and adds no
 * records; benchmarks/gpu_check.sh runs bench_qgemm with and without --json on a GPU machine.
 *
 * Weights cold for both sides: every call uses the next of enough distinct device copies that
 * their total exceeds QGEMM_CUDA_COLD_MB (default 256 MiB, 5x the 50 MiB L2 of H100/H200). Each
 * side's calls (a batch cycling through its copies, >= 20 calls) are captured once into a CUDA
 * graph and the graph is launched 7 times; ms = median launch / calls per batch, so host launch
 * overhead does not decide the ratio (where capture is refused: plain back-to-back calls timed
 * with events on the backend's stream, reported as "timing": "stream"). qgemm's time includes its
 * own F32 -> BF16 conversion of x; the baseline's x is BF16 already.
 *
 * Cases: Llama-2-7B shapes (4096x4096, 11008x4096, 4096x11008) as N x K at M = 1, 16, 128;
 * W4 g128, W3 g128, W2 g64 (asymmetric, F16 scales); quick: 4096x4096 only.
 * Record: device "cuda", model, bits, group, act "bf16" (x is rounded to BF16 on both sides), M,
 * N, K, ms, baseline_ms, speedup, weight_gbps (packed bytes / ms), baseline_gbps (BF16 bytes /
 * baseline_ms), baseline, timing. Correctness: tests/test_cuda_qgemm.c. */
#ifndef QAT_BENCH_QGEMM_CUDA_SIDE_H
#define QAT_BENCH_QGEMM_CUDA_SIDE_H

#include "backend/backend.h"
#include "backend/cuda_stream.h"
#include "quant/packed.h"
#include "quant/packed_dev.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef QAT_HAVE_CUDA
#include <cuda_runtime.h>

static uint64_t cq_rng = 88172645463325252ull;
static uint64_t cq_next(void) {
  cq_rng ^= cq_rng << 13;
  cq_rng ^= cq_rng >> 7;
  cq_rng ^= cq_rng << 17;
  return cq_rng;
}

static size_t cq_cold_bytes = (size_t)256 << 20;
static int cq_json, *cq_first; /* bench_qgemm.c's: one JSON list for both sides */

static void cq_die(const char *what) {
  fprintf(stderr, "bench_qgemm (cuda): %s: %s\n", what, qat_last_error());
  exit(1);
}
static void cq_cuda_die(const char *what, cudaError_t e) {
  fprintf(stderr, "bench_qgemm (cuda): %s: %s\n", what, cudaGetErrorString(e));
  exit(1);
}

/* The backend's one stream (every op runs on it; backend/cuda_stream.h). */
static cudaStream_t cq_stream(const qat_backend *be) {
  return (cudaStream_t)qat_cuda_compute_stream(be);
}

typedef struct cq_side {
  qat_backend *be;
  int quant; /* 1: qgemm on pk[i]; 0: gemm on wb[i] */
  int64_t M, N, K;
  qat_packed *pk;
  void **wb;
  int ncopies;
  qat_tensor x, xb, y;
} cq_side;

static qat_status cq_call(cq_side *s, int i) {
  if (s->quant) return QAT_OP(s->be, qgemm, 0, s->M, &s->pk[i % s->ncopies], &s->x, &s->y);
  qat_tensor w = qat_view2(s->wb[i % s->ncopies], QAT_BF16, QAT_DEV_CUDA, s->N, s->K);
  return QAT_OP(s->be, gemm, 0, 1, s->M, s->N, s->K, 1.0f, &s->xb, &w, 0.0f, &s->y);
}

static int cq_cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

/* ms per call (median of 7 timed batches); *graph = 1 when the batch ran as a CUDA graph. */
static double cq_time_side(cq_side *s, int *graph) {
  cudaStream_t st = cq_stream(s->be);
  int calls = s->ncopies < 20 ? 20 : s->ncopies;
  for (int i = 0; i < 3; i++) /* warm-up: scratch allocation, kernel attributes, heuristics */
    if (cq_call(s, i) != QAT_OK) cq_die("warm-up");
  if (s->be->sync(s->be) != QAT_OK) cq_die("sync");
  cudaGraph_t g = NULL;
  cudaGraphExec_t ge = NULL;
  *graph = 0;
  if (cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
    int ok = 1;
    for (int i = 0; i < calls && ok; i++) ok = cq_call(s, i) == QAT_OK;
    cudaError_t e = cudaStreamEndCapture(st, &g);
    if (ok && e == cudaSuccess && cudaGraphInstantiate(&ge, g, 0) == cudaSuccess) *graph = 1;
  }
  if (!*graph) { /* capture refused somewhere: clear it and time the plain calls */
    cudaGetLastError();
    if (ge) cudaGraphExecDestroy(ge);
    if (g) cudaGraphDestroy(g);
    ge = NULL;
    g = NULL;
  }
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  float t[7];
  for (int r = -1; r < 7; r++) { /* r = -1: one untimed launch */
    cudaEventRecord(e0, st);
    if (*graph) {
      cudaError_t e = cudaGraphLaunch(ge, st);
      if (e != cudaSuccess) cq_cuda_die("graph launch", e);
    } else {
      for (int i = 0; i < calls; i++)
        if (cq_call(s, i) != QAT_OK) cq_die("call");
    }
    cudaEventRecord(e1, st);
    cudaError_t e = cudaEventSynchronize(e1);
    if (e != cudaSuccess) cq_cuda_die("timing", e);
    if (r >= 0) cudaEventElapsedTime(&t[r], e0, e1);
  }
  qsort(t, 7, sizeof *t, cq_cmp_float);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  if (ge) cudaGraphExecDestroy(ge);
  if (g) cudaGraphDestroy(g);
  return (double)t[3] / calls;
}

static int cq_ncopies_for(size_t bytes) {
  size_t n = (cq_cold_bytes + bytes - 1) / bytes;
  return n < 1 ? 1 : (n > 64 ? 64 : (int)n);
}

static void *cq_dev_alloc(qat_backend *be, size_t bytes) {
  void *p = NULL;
  if (be->alloc(be, &p, bytes) != QAT_OK) cq_die("device allocation");
  return p;
}

static void cq_bench_case(qat_backend *be, int bits, int group, int64_t M, int64_t N, int64_t K) {
  qat_qspec q = {.bits = bits, .group = group, .sym = 0};
  qat_packed base;
  if (qat_packed_alloc(&base, &q, N, K, QAT_F16, "w") != QAT_OK) cq_die("packed alloc");
  for (int64_t i = 0; i < N * base.row_bytes; i++) base.codes[i] = (uint8_t)cq_next();
  for (int64_t i = 0; i < N * base.zrow_bytes; i++) base.zeros[i] = (uint8_t)cq_next();
  for (int64_t i = 0; i < N * base.G; i++)
    ((uint16_t *)base.scales)[i] = qat_f32_to_f16(0.001f + 0.01f * (float)(cq_next() % 1000) / 1000);
  /* the baseline's weight: the same values in BF16 */
  float *wf = malloc((size_t)(N * K) * 4);
  uint16_t *wh = malloc((size_t)(N * K) * 2);
  if (!wf || !wh) cq_die("host memory");
  qat_packed_dequant(&base, 0, N, wf);
  for (int64_t i = 0; i < N * K; i++) wh[i] = qat_f32_to_bf16(wf[i]);
  free(wf);
  cq_side sq = {.be = be, .quant = 1, .M = M, .N = N, .K = K};
  cq_side sf = {.be = be, .quant = 0, .M = M, .N = N, .K = K};
  sq.ncopies = cq_ncopies_for((size_t)qat_packed_bytes(&base));
  sf.ncopies = cq_ncopies_for((size_t)(N * K) * 2);
  sq.pk = calloc((size_t)sq.ncopies, sizeof *sq.pk);
  sf.wb = calloc((size_t)sf.ncopies, sizeof *sf.wb);
  for (int i = 0; i < sq.ncopies; i++)
    if (qat_packed_upload(be, &base, &sq.pk[i], "w") != QAT_OK) cq_die("upload packed");
  for (int i = 0; i < sf.ncopies; i++) {
    sf.wb[i] = cq_dev_alloc(be, (size_t)(N * K) * 2);
    if (be->upload(be, sf.wb[i], wh, (size_t)(N * K) * 2) != QAT_OK) cq_die("upload BF16");
  }
  free(wh);
  float *x = malloc((size_t)(M * K) * 4);
  uint16_t *xh = malloc((size_t)(M * K) * 2);
  for (int64_t i = 0; i < M * K; i++) {
    x[i] = (float)((int)(cq_next() % 2001) - 1000) * 1e-3f;
    xh[i] = qat_f32_to_bf16(x[i]);
  }
  void *dx = cq_dev_alloc(be, (size_t)(M * K) * 4), *dxb = cq_dev_alloc(be, (size_t)(M * K) * 2);
  void *dy = cq_dev_alloc(be, (size_t)(M * N) * 4);
  if (be->upload(be, dx, x, (size_t)(M * K) * 4) != QAT_OK ||
      be->upload(be, dxb, xh, (size_t)(M * K) * 2) != QAT_OK)
    cq_die("upload x");
  sq.x = sf.x = qat_view2(dx, QAT_F32, QAT_DEV_CUDA, M, K);
  sq.xb = sf.xb = qat_view2(dxb, QAT_BF16, QAT_DEV_CUDA, M, K);
  sq.y = sf.y = qat_view2(dy, QAT_F32, QAT_DEV_CUDA, M, N);
  int gq = 0, gf = 0;
  double ms = cq_time_side(&sq, &gq), bms = cq_time_side(&sf, &gf);
  const char *timing = gq && gf ? "graph" : "stream";
  double qb = (double)qat_packed_bytes(&base), fb = (double)(N * K) * 2;
  if (cq_json)
    printf("%s{\"device\": \"cuda\", \"model\": \"llama7b\", \"bits\": %d, \"group\": %d, "
           "\"act\": \"bf16\", \"M\": %lld, \"N\": %lld, \"K\": %lld, \"ms\": %.5f, \"baseline_ms\": %.5f, "
           "\"speedup\": %.3f, \"weight_gbps\": %.1f, \"baseline_gbps\": %.1f, "
           "\"baseline\": \"cublaslt_bf16\", \"timing\": \"%s\"}",
           *cq_first ? "[\n" : ",\n", bits, group, (long long)M, (long long)N, (long long)K, ms,
           bms, bms / ms, qb / (ms * 1e6), fb / (bms * 1e6), timing);
  else
    printf("| W%d g%-3d | %4lld | %5lld x %5lld | %9.4f | %9.4f | %6.2fx | %7.1f | %7.1f | %s |\n",
           bits, group, (long long)M, (long long)N, (long long)K, ms, bms, bms / ms,
           qb / (ms * 1e6), fb / (bms * 1e6), timing);
  fflush(stdout);
  *cq_first = 0;
  for (int i = 0; i < sq.ncopies; i++) qat_packed_free_on(be, &sq.pk[i]);
  for (int i = 0; i < sf.ncopies; i++) be->free(be, sf.wb[i]);
  be->free(be, dx);
  be->free(be, dxb);
  be->free(be, dy);
  free(sq.pk);
  free(sf.wb);
  free(x);
  free(xh);
  qat_packed_free(&base);
}

/* Runs the CUDA cases, appending records to the caller's JSON list (*first: no record yet). */
static void qgemm_cuda_side(int json, int quick, int *first) {
  cq_json = json;
  cq_first = first;
  if (!qat_cuda_available()) {
    fprintf(stderr, "bench_qgemm: no CUDA GPU visible; the CUDA side is skipped\n");
    return;
  }
  qat_backend *be = NULL;
  if (qat_backend_cuda(&be) != QAT_OK) cq_die("CUDA backend");
  const char *cold = getenv("QGEMM_CUDA_COLD_MB");
  if (cold && atoi(cold) > 0) cq_cold_bytes = (size_t)atoi(cold) << 20;
  const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
  const int cfg[][2] = {{4, 128}, {3, 128}, {2, 64}};
  const int64_t Ms[] = {1, 16, 128};
  if (!json) {
    printf("\nqgemm (CUDA) vs cuBLASLt BF16 on the dequantized weight, cold weights (%zu MiB of "
           "copies)\n", cq_cold_bytes >> 20);
    printf("| format  |    M |      N x K    |  qgemm ms |   BF16 ms | speedup | q GB/s  | BF16 GB/s | timing |\n");
    printf("|---------|------|---------------|-----------|-----------|---------|---------|---------|--------|\n");
  }
  for (int s = 0; s < 3; s++) {
    if (quick && s > 0) continue;
    for (int mi = 0; mi < 3; mi++)
      for (int c = 0; c < 3; c++)
        cq_bench_case(be, cfg[c][0], cfg[c][1], Ms[mi], shapes[s][0], shapes[s][1]);
  }
}
#else
static void qgemm_cuda_side(int json, int quick, int *first) {
  (void)json;
  (void)quick;
  (void)first;
  fprintf(stderr, "bench_qgemm: built without CUDA; the CUDA side is skipped\n");
}
#endif

#endif
