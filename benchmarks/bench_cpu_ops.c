/* CPU backend throughput of the LLaMA-block ops that dominate CPU training and eval: attention
 * forward / backward, xent, rmsnorm, swiglu, rope, timed through the production op table (so a
 * comparison binary can link other versions of the op files against the same driver). Two shapes:
 *   demo:   the stories260K `make demo` job, B=8, T=256, Hq=8, Hkv=4, D=8, C=64, F=172, V=512
 *   llama:  one Llama-ish layer, B=1, T=1024, Hq=32, Hkv=8, D=128, C=4096, F=11008, V=32000
 * Median of reps after one warm-up, in ms, with GFLOP/s for attention (causal: half the score
 * matrix; forward 2 matmuls, backward 5 with the recomputed scores) and GB/s (bytes read +
 * written once) for the memory-bound ops. Correctness lives in tests/test_cpu_*.c.
 *
 *   bench_cpu_ops [--reps N] [--only demo|llama] [--cpu-time] [--json]
 * OMP_NUM_THREADS picks the thread count as for every CPU op. */
#include "backend/backend.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct shape {
  const char *name;
  int64_t B, T, Hq, Hkv, D, C, F, V;
} shape;

static int g_json, g_first = 1;

static double clock_ms(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}
/* Wall time, or with --cpu-time the process CPU time (all threads): on a shared, loaded machine
 * the CPU time of a 1-thread run (OMP_NUM_THREADS=1) is the fairer before/after comparison. */
static int g_cpu_time;
static double now_ms(void) {
  return clock_ms(g_cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC);
}
static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Reproducible fill, uniform in [-amp, amp]. */
static float *filled(size_t n, uint64_t seed, float amp) {
  float *x = malloc(n * sizeof(float) + 1);
  if (!x) {
    fprintf(stderr, "bench_cpu_ops: out of memory (%zu floats)\n", n);
    exit(1);
  }
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x[i] = ((float)(s >> 40) / (float)(1 << 24) - 0.5f) * 2.0f * amp;
  }
  return x;
}

static qat_tensor T1(float *p, int64_t a) {
  return qat_view(p, QAT_F32, QAT_DEV_CPU, 1, (int64_t[]){a});
}
static qat_tensor T2(float *p, int64_t a, int64_t b) {
  return qat_view(p, QAT_F32, QAT_DEV_CPU, 2, (int64_t[]){a, b});
}
static qat_tensor T3(float *p, int64_t a, int64_t b, int64_t c) {
  return qat_view(p, QAT_F32, QAT_DEV_CPU, 3, (int64_t[]){a, b, c});
}
static qat_tensor T4(float *p, int64_t a, int64_t b, int64_t c, int64_t d) {
  return qat_view(p, QAT_F32, QAT_DEV_CPU, 4, (int64_t[]){a, b, c, d});
}

#define TRY(expr)                                                                                  \
  do {                                                                                             \
    if ((expr) != QAT_OK) {                                                                        \
      fprintf(stderr, "bench_cpu_ops: %s\n", qat_last_error());                                   \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

/* Times `body` reps times (after one warm-up) and prints the median. */
#define TIME(sh, opname, reps, flops, bytes, body)                                                 \
  do {                                                                                             \
    body;                                                                                          \
    double _t[256];                                                                                \
    int _n = (reps) < 256 ? (reps) : 256;                                                          \
    for (int _r = 0; _r < _n; _r++) {                                                              \
      double _t0 = now_ms();                                                                       \
      body;                                                                                        \
      _t[_r] = now_ms() - _t0;                                                                     \
    }                                                                                              \
    qsort(_t, (size_t)_n, sizeof(double), cmp_double);                                             \
    report((sh)->name, opname, _t[_n / 2], flops, bytes);                                          \
  } while (0)

static void report(const char *sh, const char *op, double ms, double flops, double bytes) {
  double gf = flops > 0 ? flops / (ms * 1e6) : 0, gb = bytes > 0 ? bytes / (ms * 1e6) : 0;
  if (g_json) {
    printf("%s{\"shape\": \"%s\", \"op\": \"%s\", \"threads\": %d, \"ms\": %.4f, \"gflops\": %.3f, "
           "\"gbs\": %.3f}",
           g_first ? "[" : ",\n ", sh, op, omp_get_max_threads(), ms, gf, gb);
    g_first = 0;
    return;
  }
  printf("%-6s %-16s %10.3f ms", sh, op, ms);
  if (flops > 0) printf(" %9.2f GFLOP/s", gf);
  if (bytes > 0) printf(" %9.2f GB/s", gb);
  printf("\n");
}

static void bench_shape(const shape *s, int reps) {
  qat_backend *be = qat_backend_cpu();
  int64_t B = s->B, T = s->T, Hq = s->Hq, Hkv = s->Hkv, D = s->D, N = B * T;
  size_t nq = (size_t)(N * Hq * D), nk = (size_t)(N * Hkv * D), nl = (size_t)(B * Hq * T);
  /* attention: q[B, T, Hq, D], k, v[B, T, Hkv, D], out, dout like q, lse[B, Hq, T] */
  float *q = filled(nq, 1, 1.0f), *k = filled(nk, 2, 1.0f), *v = filled(nk, 3, 1.0f);
  float *o = filled(nq, 4, 0), *g = filled(nq, 5, 1.0f), *l = filled(nl, 6, 0);
  float *dq = filled(nq, 7, 0), *dk = filled(nk, 8, 0), *dv = filled(nk, 9, 0);
  qat_tensor tq = T4(q, B, T, Hq, D), tk = T4(k, B, T, Hkv, D), tv = T4(v, B, T, Hkv, D);
  qat_tensor to = T4(o, B, T, Hq, D), tg = T4(g, B, T, Hq, D), tl = T3(l, B, Hq, T);
  qat_tensor tdq = T4(dq, B, T, Hq, D), tdk = T4(dk, B, T, Hkv, D), tdv = T4(dv, B, T, Hkv, D);
  float scale = 1.0f / sqrtf((float)D);
  double mm = 2.0 * (double)B * Hq * T * (T + 1) / 2 * D; /* one causal [T, T, D] matmul */
  TIME(s, "attention_fwd", reps, 2 * mm, 0,
       TRY(be->attention_fwd(be, &tq, &tk, &tv, scale, &to, &tl)));
  TIME(s, "attention_bwd", reps, 5 * mm, 0,
       TRY(be->attention_bwd(be, &tg, &tq, &tk, &tv, &to, &tl, scale, &tdq, &tdk, &tdv)));
  free(q), free(k), free(v), free(o), free(g), free(l), free(dq), free(dk), free(dv);

  /* rope in place on q-shaped x; inv_freq[D/2] */
  float *x4 = filled(nq, 10, 1.0f), *inv = filled((size_t)(D / 2), 11, 0);
  for (int64_t i = 0; i < D / 2; i++) inv[i] = powf(10000.0f, -2.0f * (float)i / (float)D);
  qat_tensor tx4 = T4(x4, B, T, Hq, D), tinv = T1(inv, D / 2);
  TIME(s, "rope", reps, 0, 8.0 * nq, TRY(be->rope(be, &tx4, &tinv, 0, 0)));
  free(x4), free(inv);

  /* rmsnorm on x[N, C] */
  int64_t C = s->C;
  size_t nc = (size_t)(N * C);
  float *x = filled(nc, 12, 1.0f), *w = filled((size_t)C, 13, 1.0f), *y = filled(nc, 14, 0);
  float *r = filled((size_t)N, 15, 0), *dy = filled(nc, 16, 1.0f), *dx = filled(nc, 17, 0);
  float *dw = filled((size_t)C, 18, 0);
  qat_tensor tx = T2(x, N, C), tw = T1(w, C), ty = T2(y, N, C), tr = T1(r, N);
  qat_tensor tdy = T2(dy, N, C), tdx = T2(dx, N, C), tdw = T1(dw, C);
  TIME(s, "rmsnorm_fwd", reps, 0, 8.0 * nc, TRY(be->rmsnorm_fwd(be, &tx, &tw, 1e-5f, &ty, &tr)));
  TIME(s, "rmsnorm_bwd", reps, 0, 16.0 * nc,
       TRY(be->rmsnorm_bwd(be, &tdy, &tx, &tw, &tr, &tdx, &tdw)));
  free(x), free(w), free(y), free(r), free(dy), free(dx), free(dw);

  /* swiglu on [N, F] */
  size_t nf = (size_t)(N * s->F);
  float *ga = filled(nf, 19, 3.0f), *up = filled(nf, 20, 1.0f), *out = filled(nf, 21, 0);
  float *dout = filled(nf, 22, 1.0f), *dga = filled(nf, 23, 0), *dup = filled(nf, 24, 0);
  qat_tensor tga = T2(ga, N, s->F), tup = T2(up, N, s->F), tout = T2(out, N, s->F);
  qat_tensor tdout = T2(dout, N, s->F), tdga = T2(dga, N, s->F), tdup = T2(dup, N, s->F);
  TIME(s, "swiglu_fwd", reps, 0, 12.0 * nf, TRY(be->swiglu_fwd(be, &tga, &tup, &tout)));
  TIME(s, "swiglu_bwd", reps, 0, 20.0 * nf,
       TRY(be->swiglu_bwd(be, &tdout, &tga, &tup, &tdga, &tdup)));
  free(ga), free(up), free(out), free(dout), free(dga), free(dup);

  /* xent on logits[N, V] with a separate dlogits (the aliasing case costs the same) */
  size_t nv = (size_t)(N * s->V);
  float *lg = filled(nv, 25, 4.0f), *dl = filled(nv, 26, 0), *ls = filled((size_t)N, 27, 0);
  int32_t *tgt = malloc((size_t)N * sizeof(int32_t) + 1);
  for (int64_t n = 0; n < N; n++) tgt[n] = (int32_t)((n * 7919) % s->V);
  qat_tensor tlg = T2(lg, N, s->V), tdl = T2(dl, N, s->V), tls = T1(ls, N);
  qat_tensor ttg = qat_view(tgt, QAT_I32, QAT_DEV_CPU, 1, (int64_t[]){N});
  TIME(s, "xent_loss", reps, 0, 4.0 * nv, TRY(be->xent(be, &tlg, &ttg, &tls, NULL, 0.0f)));
  TIME(s, "xent_loss_grad", reps, 0, 8.0 * nv, TRY(be->xent(be, &tlg, &ttg, &tls, &tdl, 1.0f)));
  free(lg), free(dl), free(ls), free(tgt);
}

int main(int argc, char **argv) {
  int reps = 0;
  const char *only = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) g_json = 1;
    else if (!strcmp(argv[i], "--cpu-time")) g_cpu_time = 1;
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    else {
      fprintf(stderr,
              "usage: bench_cpu_ops [--reps N] [--only demo|llama] [--cpu-time] [--json]\n");
      return 2;
    }
  }
  static const shape shapes[] = {
      {"demo", 8, 256, 8, 4, 8, 64, 172, 512},
      {"llama", 1, 1024, 32, 8, 128, 4096, 11008, 32000},
  };
  if (!g_json)
    printf("bench_cpu_ops: %d OpenMP threads, %s time\n", omp_get_max_threads(),
           g_cpu_time ? "process CPU" : "wall");
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
    if (only && strcmp(only, shapes[i].name)) continue;
    /* the llama shape's old reference attention takes seconds per call: fewer reps there */
    int n = reps > 0 ? reps : (i == 0 ? 21 : 5);
    bench_shape(&shapes[i], n);
  }
  if (g_json) printf("%s]\n", g_first ? "[" : "");
  return 0;
}
