/* Block-AP cost on a Llama-2-7B-shaped decoder block (dim 4096, hidden 11008, 32 heads, random
 * weights: a 1-layer qat_llama_random with a 256-token vocabulary), W2 g64 asymmetric, 2 x 2048
 * tokens per step (the paper's batch): seconds per optimizer step of the production step
 * (qat_block_ap_step: forward, MSE, backward, fake-quant backward, AdamW on W, s, z), memory in
 * use (CUDA: cudaMemGetInfo deltas from before the model is created, sampled after setup and
 * after the timed steps; CPU: growth of the peak resident set), and the projected Block-AP time
 * for the paper's budget (4096 steps per block x 32 blocks, activation streaming not included)
 * next to the paper's 3.3 h on one A100.
 *
 *   bench_block_ap [--json] [--steps N] [--device cuda|cpu]
 * cuda (default): without a GPU (or in a CPU-only build) prints "skipped: no CUDA GPU" and exits
 * 0. cpu: the same step on the CPU backend (tens of seconds per step on a few cores): evidence
 * that the 7B-shaped block plans, trains and fits, not a speed anyone should project from. */
#include "backend/backend.h"
#include "core/log.h"
#include "model/llama.h"
#include "train/eqat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef QAT_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#define PAPER_HOURS 3.3
#define PAPER_GB 8.5
#define STEPS_PER_BLOCK 4096
#define BLOCKS 32

/* Memory in use since setup began: the device's (cudaMemGetInfo deltas) on CUDA, the process's
 * peak resident set growth (getrusage) on the CPU backend. */
typedef struct mem_probe {
  int cuda;
  size_t free0; /* CUDA: free device bytes before the model */
  long rss0_kb; /* CPU: peak RSS before the model */
} mem_probe;

static long peak_rss_kb(void) {
  struct rusage ru;
  return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : 0;
}

static void mem_start(mem_probe *p, int cuda) {
  memset(p, 0, sizeof *p);
  p->cuda = cuda;
#ifdef QAT_HAVE_CUDA
  size_t tot = 0;
  if (cuda) cudaMemGetInfo(&p->free0, &tot);
#endif
  if (!cuda) p->rss0_kb = peak_rss_kb();
}

static size_t mem_used(const mem_probe *p) {
#ifdef QAT_HAVE_CUDA
  if (p->cuda) {
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) return 0;
    return p->free0 > fr ? p->free0 - fr : 0;
  }
#endif
  long kb = peak_rss_kb() - p->rss0_kb;
  return kb > 0 ? (size_t)kb * 1024 : 0;
}

static int run(int json, int steps, int cuda) {
  qat_backend *be = NULL;
  char devname[256] = "CPU";
  if (cuda) {
    if (qat_backend_cuda(&be) != QAT_OK) {
      fprintf(stderr, "bench_block_ap: %s\n", qat_last_error());
      return 1;
    }
#ifdef QAT_HAVE_CUDA
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    snprintf(devname, sizeof devname, "%s", prop.name);
#endif
  } else {
    be = qat_backend_cpu();
#ifdef _OPENMP
    snprintf(devname, sizeof devname, "CPU (%d threads)", omp_get_max_threads());
#endif
  }
  mem_probe mp;
  mem_start(&mp, cuda);
  qat_llama_config c;
  memset(&c, 0, sizeof c);
  snprintf(c.arch, sizeof c.arch, "llama");
  c.dim = 4096;
  c.hidden = 11008;
  c.n_layers = 1;
  c.n_heads = 32;
  c.n_kv_heads = 32;
  c.head_dim = 128;
  c.vocab = 256;
  c.max_seq = 2048;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.bos_id = 1;
  c.eos_id = 2;
  c.file_dtype = QAT_BF16;
  const int B = 2, T = 2048;
  const int64_t N = (int64_t)B * T;
  qat_qspec q = {.bits = 2, .group = 64, .sym = 0, .grad = QAT_QGRAD_EFFICIENTQAT};
  qat_llama *m = NULL;
  qat_param *ps = NULL;
  int np = 0;
  qat_optim opt;
  memset(&opt, 0, sizeof opt);
  qat_arena a = {0};
  qat_tensor x, y, out, d;
  double s_step = 0, loss = 0;
  size_t mem_setup = 0, mem_peak = 0;
  qat_status st = qat_llama_random(&c, be, 1, &m);
  if (st == QAT_OK) st = qat_llama_set_quant(m, &q);
  if (st == QAT_OK) st = qat_llama_plan_block(m, B, T, 1);
  if (st == QAT_OK) st = qat_llama_block_params(m, 0, &ps, &np);
  qat_optim_group groups[3] = {{2e-5, 0, 1}, {1e-4, 0, 1}, {0, 0, 0}};
  if (st == QAT_OK) st = qat_optim_init(&opt, be, ps, np, groups);
  if (st == QAT_OK) st = qat_arena_init(&a, be, "bench", 4 * qat_arena_need(QAT_F32, N * c.dim));
  const int64_t sh[2] = {N, c.dim};
  qat_tensor *ts[4] = {&x, &y, &out, &d};
  for (int i = 0; st == QAT_OK && i < 4; i++) st = qat_arena_tensor(&a, ts[i], QAT_F32, 2, sh, "bench");
  float *h = st == QAT_OK ? malloc((size_t)N * c.dim * 4) : NULL;
  if (st == QAT_OK && !h) st = QAT_FAIL(QAT_ENOMEM, "bench: out of host memory");
  for (int k = 0; st == QAT_OK && k < 2; k++) { /* inputs ~ N(0, 1)-ish, targets nearby */
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(k + 1);
    for (int64_t i = 0; i < N * c.dim; i++) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      h[i] = ((float)(s >> 40) / (float)(1 << 24) - 0.5f) * (k ? 0.1f : 3.4f);
    }
    st = be->upload(be, ts[k]->data, h, (size_t)N * c.dim * 4);
  }
  free(h);
  if (st == QAT_OK) st = be->sync(be);
  mem_setup = mem_used(&mp);
  double lr[3] = {2e-5, 1e-4, 0};
  for (int k = 0; st == QAT_OK && k < (cuda ? 2 : 1); k++) /* warm-up */
    st = qat_block_ap_step(m, 0, &opt, lr, &x, &y, &out, &d, B, T, &loss);
  if (st == QAT_OK) st = be->sync(be);
  if (st == QAT_OK) {
    double t0 = qat_now();
    for (int k = 0; st == QAT_OK && k < steps; k++)
      st = qat_block_ap_step(m, 0, &opt, lr, &x, &y, &out, &d, B, T, &loss);
    if (st == QAT_OK) st = be->sync(be);
    s_step = (qat_now() - t0) / steps;
  }
  mem_peak = mem_used(&mp);
  if (mem_setup > mem_peak) mem_peak = mem_setup;
  qat_arena_free(&a);
  qat_optim_free(&opt);
  free(ps);
  if (m) qat_llama_free(m);
  if (st != QAT_OK) {
    fprintf(stderr, "bench_block_ap: %s\n", qat_last_error());
    return 1;
  }
  double proj_h = s_step * STEPS_PER_BLOCK * BLOCKS / 3600.0;
  double gb = mem_peak / 1e9;
  if (json) {
    printf("{\"bench\": \"block_ap\", \"device\": \"%s\", \"dim\": 4096, \"hidden\": 11008, "
           "\"heads\": 32, \"tokens_per_step\": %lld, \"quant\": \"W2g64\", \"steps\": %d, "
           "\"s_per_step\": %.6f, \"device_mem_gb\": %.3f, \"projected_hours\": %.3f, "
           "\"paper_hours\": %.1f, \"paper_gb\": %.1f, \"loss\": %.6g}\n",
           devname, (long long)N, steps, s_step, gb, proj_h, PAPER_HOURS, PAPER_GB, loss);
  } else {
    printf("Block-AP step on a Llama-2-7B block (W2 g64, %d x %d tokens) on %s:\n", B, T,
           devname);
    printf("  %.1f ms per step (%d timed steps), %s %.2f GB (paper: %.1f GB incl. model)\n",
           s_step * 1e3, steps, cuda ? "device memory" : "peak resident memory growth", gb,
           PAPER_GB);
    printf("  projected Block-AP for 4096 steps x 32 blocks: %.2f h (paper, A100: %.1f h; "
           "activation streaming not included)\n",
           proj_h, PAPER_HOURS);
  }
  return 0;
}

int main(int argc, char **argv) {
  int json = 0, steps = 10, cuda = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json"))
      json = 1;
    else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
      steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--device") && i + 1 < argc && !strcmp(argv[i + 1], "cpu"))
      cuda = 0, i++;
    else if (!strcmp(argv[i], "--device") && i + 1 < argc && !strcmp(argv[i + 1], "cuda"))
      cuda = 1, i++;
    else {
      fprintf(stderr, "usage: bench_block_ap [--json] [--steps N] [--device cuda|cpu]\n");
      return 2;
    }
  }
  if (steps < 1) steps = 1;
  if (cuda && !qat_cuda_available()) {
    printf("skipped: no CUDA GPU\n");
    return 0;
  }
  return run(json, steps, cuda);
}
