/* Forward + backward throughput of one Llama-2-7B-shaped decoder block (dim 4096, hidden 11008,
 * 32 heads of 128, random weights, BF16 compute with FP32 accumulation, 2 x 2048 tokens), with
 * and without W4 g128 fake-quant, next to the time of the same block's GEMMs alone through the
 * backend's cuBLASLt gemm - the ceiling the fused non-GEMM work is measured against.
 * The model is a 1-layer LLaMA with a 256-token vocabulary so the head costs next to nothing.
 * MFU counts 6 * N * (block params) + causal attention (6 * B * T^2 * H * D, fwd + bwd) against
 * the H100 SXM dense BF16 peak (989 TFLOP/s) unless --peak-tflops says otherwise.
 * usage: bench_block [--reps N] [--tokens T] [--json] [--peak-tflops P] */
#include "backend/backend.h"
#include "core/log.h"
#include "model/llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define CHECK(x)                                                                                   \
  do {                                                                                             \
    qat_status _s = (x);                                                                           \
    if (_s != QAT_OK) {                                                                            \
      fprintf(stderr, "bench_block: %s: %s\n", #x, qat_last_error());                             \
      return 1;                                                                                    \
    }                                                                                              \
  } while (0)

/* fwd + bwd of the 7 Linears: y = x W^T, dx = dy W, dW = dy^T x (3 GEMMs each). */
static qat_status gemms_only(qat_backend *be, qat_llama *m, int64_t N, qat_tensor *xa,
                             qat_tensor *ya, qat_tensor *dwa) {
  qat_llama_layer *L = &m->layers[0];
  qat_linear *lins[7] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
  for (int i = 0; i < 7; i++) {
    qat_linear *li = lins[i];
    qat_tensor x = *xa, y = *ya, dw = *dwa;
    x.ndim = y.ndim = dw.ndim = 2;
    x.shape[0] = N, x.shape[1] = li->in;
    y.shape[0] = N, y.shape[1] = li->out;
    dw.shape[0] = li->out, dw.shape[1] = li->in;
    QAT_TRY(QAT_OP(be, gemm, 0, 1, N, li->out, li->in, 1.0f, &x, &li->w_hat, 0.0f, &y));
    QAT_TRY(QAT_OP(be, gemm, 0, 0, N, li->in, li->out, 1.0f, &y, &li->w_hat, 0.0f, &x));
    QAT_TRY(QAT_OP(be, gemm, 1, 0, li->out, li->in, N, 1.0f, &y, &x, 1.0f, &dw));
  }
  return be->sync(be);
}

static qat_status step(qat_llama *m, const int32_t *tok, const int32_t *tgt, int B, int T) {
  double loss;
  int64_t cnt;
  QAT_TRY(qat_llama_zero_grad(m));
  QAT_TRY(qat_llama_forward(m, tok, B, T));
  QAT_TRY(qat_llama_xent(m, tgt, 1.0f / (B * T), &loss, &cnt));
  QAT_TRY(qat_llama_backward(m));
  QAT_TRY(qat_llama_finish_backward(m));
  return m->be->sync(m->be);
}

int main(int argc, char **argv) {
  int reps = 10, json = 0, T = 2048, B = 2;
  double peak = 989.0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) T = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--peak-tflops") && i + 1 < argc) peak = atof(argv[++i]);
    else if (!strcmp(argv[i], "--json")) json = 1;
  }
  if (!qat_cuda_available()) {
    printf("skipped: no CUDA GPU\n");
    return 0;
  }
  qat_backend *be;
  CHECK(qat_backend_cuda(&be));
  qat_llama_config c = {.arch = "llama", .dim = 4096, .hidden = 11008, .n_layers = 1,
                        .n_heads = 32, .n_kv_heads = 32, .head_dim = 128, .vocab = 256,
                        .max_seq = 4096, .norm_eps = 1e-5f, .rope_theta = 10000.0f,
                        .bos_id = 1, .eos_id = 2, .file_dtype = QAT_BF16};
  qat_llama *m;
  CHECK(qat_llama_random(&c, be, 1, &m));
  m->act_dtype = QAT_BF16;
  int64_t N = (int64_t)B * T;
  int32_t *tok = malloc((size_t)N * 4), *tgt = malloc((size_t)N * 4);
  for (int64_t i = 0; i < N; i++) tok[i] = (int32_t)((i * 7919) % c.vocab), tgt[i] = tok[i];

  double params = 4.0 * c.dim * c.dim + 3.0 * c.dim * c.hidden;
  double flops = 6.0 * N * params + 6.0 * B * (double)T * T * c.n_heads * c.head_dim;
  double gemm_flops = 6.0 * N * params;
  double t_fp = 0, t_q = 0, t_gemm = 0, *ts = malloc(sizeof(double) * (size_t)(reps + 1));

  for (int mode = 0; mode < 2; mode++) {
    qat_qspec q = {.bits = 4, .group = 128, .sym = 0, .grad = QAT_QGRAD_EFFICIENTQAT};
    CHECK(qat_llama_set_quant(m, mode ? &q : NULL));
    CHECK(qat_llama_plan(m, B, T, 1));
    for (int w = 0; w < 2; w++) CHECK(step(m, tok, tgt, B, T));
    for (int r = 0; r < reps; r++) {
      double t0 = qat_now();
      CHECK(step(m, tok, tgt, B, T));
      ts[r] = qat_now() - t0;
    }
    *(mode ? &t_q : &t_fp) = median(ts, reps);
  }
  /* GEMMs alone on the same shapes and dtypes (w_hat is BF16) */
  qat_arena a;
  qat_tensor x, y, dw;
  size_t need = qat_arena_need(QAT_BF16, N * c.hidden) * 2 + qat_arena_need(QAT_F32, (int64_t)c.hidden * c.dim);
  CHECK(qat_arena_init(&a, be, "bench gemm", need));
  CHECK(qat_arena_tensor(&a, &x, QAT_BF16, 1, (int64_t[]){N * c.hidden}, "x"));
  CHECK(qat_arena_tensor(&a, &y, QAT_BF16, 1, (int64_t[]){N * c.hidden}, "y"));
  CHECK(qat_arena_tensor(&a, &dw, QAT_F32, 1, (int64_t[]){(int64_t)c.hidden * c.dim}, "dw"));
  CHECK(gemms_only(be, m, N, &x, &y, &dw));
  for (int r = 0; r < reps; r++) {
    double t0 = qat_now();
    CHECK(gemms_only(be, m, N, &x, &y, &dw));
    ts[r] = qat_now() - t0;
  }
  t_gemm = median(ts, reps);
  qat_arena_free(&a);

  double tps_fp = N / t_fp, tps_q = N / t_q;
  if (json)
    printf("{\"bench\": \"block\", \"tokens\": %lld, \"fp_s\": %.6f, \"w4g128_s\": %.6f, "
           "\"gemm_s\": %.6f, \"fp_tokens_per_s\": %.1f, \"w4_tokens_per_s\": %.1f, "
           "\"fp_mfu\": %.4f, \"w4_mfu\": %.4f, \"gemm_tflops\": %.1f}\n",
           (long long)N, t_fp, t_q, t_gemm, tps_fp, tps_q, flops / t_fp / (peak * 1e12),
           flops / t_q / (peak * 1e12), gemm_flops / t_gemm / 1e12);
  else {
    printf("Llama-2-7B block, %d x %d tokens, BF16 (median of %d)\n", B, T, reps);
    printf("  fwd+bwd fp      %8.2f ms  %9.0f tok/s  MFU %.1f%%\n", t_fp * 1e3, tps_fp,
           100 * flops / t_fp / (peak * 1e12));
    printf("  fwd+bwd W4g128  %8.2f ms  %9.0f tok/s  MFU %.1f%%\n", t_q * 1e3, tps_q,
           100 * flops / t_q / (peak * 1e12));
    printf("  GEMMs alone     %8.2f ms  %6.1f TFLOP/s  (%.0f%% of the fp step)\n", t_gemm * 1e3,
           gemm_flops / t_gemm / 1e12, 100 * t_gemm / t_fp);
  }
  free(ts);
  free(tok);
  free(tgt);
  qat_llama_free(m);
  return 0;
}
