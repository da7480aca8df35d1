/* Fake-quant throughput: the production ops (through the backend table) on tensors >= 64 MB,
 * cold L2 (a 256 MB buffer is written between repetitions), median of >= 20 repetitions, as GB/s
 * and as a share of the measured device copy bandwidth (read + write bytes of a D2D copy of the
 * same size). The CPU backend is timed on a smaller tensor for reference.
 * Correctness lives in tests/test_cuda_fakequant.c; this file only times.
 *
 *   bench_fakequant [--json] [--reps N]
 * Without a GPU (or a CPU-only build) it prints the CPU numbers and "skipped: no CUDA GPU", exit 0. */
#include "backend/backend.h"
#include "core/log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef QAT_HAVE_CUDA
#include <cuda_runtime.h>
/* cuda/fakequant.cu: the backend's stream, so CUDA events time exactly the op. */
void *qat_fq_cuda_stream(const qat_backend *be);
#endif

typedef struct result {
  char dev[8], name[96];
  double ms, gbs, pct; /* pct of copy bandwidth; < 0 when not applicable */
} result;

static result g_res[64];
static int g_nres;
static int g_json;

static void report(const char *dev, const char *name, double ms, double bytes, double copy_gbs) {
  result *r = &g_res[g_nres < 63 ? g_nres++ : 63];
  snprintf(r->dev, sizeof r->dev, "%s", dev);
  snprintf(r->name, sizeof r->name, "%s", name);
  r->ms = ms;
  r->gbs = bytes / (ms * 1e-3) / 1e9;
  r->pct = copy_gbs > 0 ? 100.0 * r->gbs / copy_gbs : -1;
  if (g_json) return;
  if (r->pct >= 0)
    printf("%-5s %-48s %9.3f ms %8.1f GB/s %5.1f%% of copy\n", dev, name, ms, r->gbs, r->pct);
  else
    printf("%-5s %-48s %9.3f ms %8.1f GB/s\n", dev, name, ms, r->gbs);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Host data: a fast reproducible fill (uniform-ish in [-0.05, 0.05]). */
static void fill(float *x, size_t n, uint64_t seed) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x[i] = ((float)(s >> 40) / (float)(1 << 24) - 0.5f) * 0.1f;
  }
}

#define TRY(expr)                                                                                  \
  do {                                                                                             \
    qat_status _st = (expr);                                                                       \
    if (_st != QAT_OK) {                                                                           \
      fprintf(stderr, "bench_fakequant: %s\n", qat_last_error());                                \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

/* ---- CPU reference ---------------------------------------------------------------------------- */

static void bench_cpu(int reps) {
  qat_backend *be = qat_backend_cpu();
  int64_t R = 1024, C = 4096, n = R * C;
  qat_qspec q = {4, 128, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0};
  int64_t ss[2];
  qat_qspec_sshape(&q, R, C, ss);
  int64_t ns = ss[0] * ss[1];
  float *w = malloc(4 * n), *o = malloc(4 * n), *g = malloc(4 * n), *dw = malloc(4 * n);
  float *s = malloc(4 * ns), *z = malloc(4 * ns), *ds = malloc(4 * ns), *dz = malloc(4 * ns);
  if (!w || !o || !g || !dw || !s || !z || !ds || !dz) {
    fprintf(stderr, "bench_fakequant: out of host memory\n");
    exit(1);
  }
  fill(w, n, 1);
  fill(g, n, 2);
  qat_tensor tw = qat_view2(w, QAT_F32, QAT_DEV_CPU, R, C), to = tw, tg = tw, tdw = tw;
  to.data = o;
  tg.data = g;
  tdw.data = dw;
  qat_tensor ts = qat_view2(s, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]), tz = ts, tds = ts, tdz = ts;
  tz.data = z;
  tds.data = ds;
  tdz.data = dz;
  TRY(QAT_OP(be, fq_init, &q, &tw, &ts, &tz));
  if (reps > 7) reps = 7; /* the CPU line is a reference, not the subject */
  double t[3][16];
  for (int r = 0; r < reps; r++) {
    double t0 = qat_now();
    TRY(QAT_OP(be, fq_init, &q, &tw, &ts, &tz));
    double t1 = qat_now();
    TRY(QAT_OP(be, fq_forward, &q, &tw, &ts, &tz, &to));
    double t2 = qat_now();
    TRY(QAT_OP(be, fq_backward, &q, &tw, &ts, &tz, &tg, &tdw, &tds, &tdz));
    double t3 = qat_now();
    t[0][r] = (t1 - t0) * 1e3;
    t[1][r] = (t2 - t1) * 1e3;
    t[2][r] = (t3 - t2) * 1e3;
  }
  double sz = 8.0 * ns;
  report("cpu", "init 1024x4096 g128 W4 asym", median(t[0], reps), 4.0 * n + sz, -1);
  report("cpu", "forward 1024x4096 g128 W4 asym F32", median(t[1], reps), 8.0 * n + sz, -1);
  report("cpu", "backward 1024x4096 g128 W4 asym F32 g", median(t[2], reps), 12.0 * n + 2 * sz,
         -1);
  qat_qspec qm = q; /* the MSE clipping search: 80 candidate passes, compute-bound */
  qm.init = QAT_QINIT_MSE;
  int mreps = reps < 3 ? reps : 3;
  for (int r = 0; r < mreps; r++) {
    double t0 = qat_now();
    TRY(QAT_OP(be, fq_init, &qm, &tw, &ts, &tz));
    t[0][r] = (qat_now() - t0) * 1e3;
  }
  report("cpu", "init mse 1024x4096 g128 W4 asym", median(t[0], mreps), 4.0 * n + sz, -1);
  free(w), free(o), free(g), free(dw), free(s), free(z), free(ds), free(dz);
}

/* ---- CUDA --------------------------------------------------------------------------------------- */

#ifdef QAT_HAVE_CUDA
typedef struct gpu_ctx {
  qat_backend *be;
  cudaStream_t st;
  void *flush;
  size_t flush_bytes;
  cudaEvent_t e0, e1;
} gpu_ctx;

typedef enum { OP_COPY, OP_INIT, OP_FWD, OP_BWD } op_kind;

typedef struct op_args {
  op_kind kind;
  qat_qspec q;
  qat_tensor *w, *s, *z, *out, *g, *dw, *ds, *dz;
  size_t bytes; /* for OP_COPY */
} op_args;

static void run_op(gpu_ctx *x, const op_args *a) {
  switch (a->kind) {
  case OP_COPY: TRY(x->be->copy(x->be, a->out->data, a->w->data, a->bytes)); break;
  case OP_INIT: TRY(QAT_OP(x->be, fq_init, &a->q, a->w, a->s, a->z)); break;
  case OP_FWD: TRY(QAT_OP(x->be, fq_forward, &a->q, a->w, a->s, a->z, a->out)); break;
  case OP_BWD: TRY(QAT_OP(x->be, fq_backward, &a->q, a->w, a->s, a->z, a->g, a->dw, a->ds, a->dz)); break;
  }
}

#define CU(call)                                                                                   \
  do {                                                                                             \
    cudaError_t _e = (call);                                                                       \
    if (_e != cudaSuccess) {                                                                       \
      fprintf(stderr, "bench_fakequant: CUDA %s (%s)\n", cudaGetErrorString(_e), #call);         \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

/* Median milliseconds of reps runs, each after writing the flush buffer (cold L2). OP_INIT syncs
 * inside (its non-finite check), so it is timed on the host clock instead. */
static double time_op(gpu_ctx *x, const op_args *a, int reps) {
  double t[256];
  if (reps > 256) reps = 256;
  run_op(x, a); /* warm-up */
  TRY(x->be->sync(x->be));
  for (int r = 0; r < reps; r++) {
    TRY(x->be->memset0(x->be, x->flush, x->flush_bytes));
    if (a->kind == OP_INIT) {
      TRY(x->be->sync(x->be));
      double t0 = qat_now();
      run_op(x, a);
      TRY(x->be->sync(x->be));
      t[r] = (qat_now() - t0) * 1e3;
      continue;
    }
    CU(cudaEventRecord(x->e0, x->st));
    run_op(x, a);
    CU(cudaEventRecord(x->e1, x->st));
    CU(cudaEventSynchronize(x->e1));
    float ms = 0;
    CU(cudaEventElapsedTime(&ms, x->e0, x->e1));
    t[r] = ms;
  }
  return median(t, reps);
}

static qat_tensor dnew(gpu_ctx *x, qat_dtype dt, int64_t r, int64_t c) {
  void *p = NULL;
  TRY(x->be->alloc(x->be, &p, (size_t)(r * c) * qat_dtype_size(dt)));
  return qat_view2(p, dt, QAT_DEV_CUDA, r, c);
}

static void bench_size(gpu_ctx *x, int64_t R, int64_t C, int reps, int extra) {
  int64_t n = R * C;
  float *h = malloc(4 * (size_t)n);
  uint16_t *h16 = malloc(2 * (size_t)n);
  if (!h || !h16) {
    fprintf(stderr, "bench_fakequant: out of host memory\n");
    exit(1);
  }
  qat_tensor w = dnew(x, QAT_F32, R, C), out = dnew(x, QAT_F32, R, C);
  qat_tensor out16 = dnew(x, QAT_BF16, R, C), g = dnew(x, QAT_F32, R, C);
  qat_tensor g16 = dnew(x, QAT_BF16, R, C), dw = dnew(x, QAT_F32, R, C);
  fill(h, (size_t)n, 11);
  TRY(x->be->upload(x->be, w.data, h, 4 * (size_t)n));
  fill(h, (size_t)n, 12);
  TRY(x->be->upload(x->be, g.data, h, 4 * (size_t)n));
  TRY(qat_convert_from_f32(h, h16, QAT_BF16, (size_t)n));
  TRY(x->be->upload(x->be, g16.data, h16, 2 * (size_t)n));
  free(h);
  free(h16);

  char name[96];
  double N = (double)n;
  op_args cp = {.kind = OP_COPY, .w = &w, .out = &out, .bytes = 4 * (size_t)n};
  double ms = time_op(x, &cp, reps);
  double copy_gbs = 8.0 * N / (ms * 1e-3) / 1e9;
  snprintf(name, sizeof name, "copy D2D %lldx%lld F32 (read+write)", (long long)R, (long long)C);
  report("cuda", name, ms, 8.0 * N, copy_gbs);

  struct {
    const char *label;
    int group, bits, sym;
    int only_extra;
  } specs[] = {{"g128 W4 asym", 128, 4, 0, 0},
               {"g64 W2 asym", 64, 2, 0, 1},
               {"per-channel W4 asym", -1, 4, 0, 1},
               {"per-tensor W8 sym", 0, 8, 1, 1}};
  for (size_t si = 0; si < sizeof specs / sizeof specs[0]; si++) {
    if (specs[si].only_extra && !extra) continue;
    qat_qspec q = {specs[si].bits, specs[si].group, specs[si].sym, QAT_QGRAD_EFFICIENTQAT,
                   QAT_QINIT_MINMAX, 0};
    int64_t ss[2];
    qat_qspec_sshape(&q, R, C, ss);
    double SZ = 4.0 * (double)(ss[0] * ss[1]); /* bytes of one of s, z, ds, dz */
    double nsz = q.sym ? 1 : 2;                /* s (and z) */
    qat_tensor s = dnew(x, QAT_F32, ss[0], ss[1]), z = dnew(x, QAT_F32, ss[0], ss[1]);
    qat_tensor ds = dnew(x, QAT_F32, ss[0], ss[1]), dz = dnew(x, QAT_F32, ss[0], ss[1]);
    op_args a = {.kind = OP_INIT, .q = q, .w = &w, .s = &s, .z = &z};
    run_op(x, &a);
    const char *L = specs[si].label;
    snprintf(name, sizeof name, "init %lldx%lld %s", (long long)R, (long long)C, L);
    report("cuda", name, time_op(x, &a, reps), 4.0 * N + nsz * SZ, copy_gbs);
    if (extra) { /* the MSE clipping search: 80 candidate passes, compute-bound (no % of copy) */
      a.q.init = QAT_QINIT_MSE;
      snprintf(name, sizeof name, "init mse %lldx%lld %s", (long long)R, (long long)C, L);
      report("cuda", name, time_op(x, &a, reps), 4.0 * N + nsz * SZ, -1);
      a.q.init = QAT_QINIT_MINMAX;
    }

    a.kind = OP_FWD;
    a.out = &out;
    snprintf(name, sizeof name, "forward %lldx%lld %s ->F32", (long long)R, (long long)C, L);
    report("cuda", name, time_op(x, &a, reps), 8.0 * N + nsz * SZ, copy_gbs);
    a.out = &out16;
    snprintf(name, sizeof name, "forward %lldx%lld %s ->BF16", (long long)R, (long long)C, L);
    report("cuda", name, time_op(x, &a, reps), 6.0 * N + nsz * SZ, copy_gbs);

    a.kind = OP_BWD;
    a.dw = &dw;
    a.ds = &ds;
    a.dz = q.sym ? NULL : &dz;
    a.g = &g;
    snprintf(name, sizeof name, "backward %lldx%lld %s F32 g", (long long)R, (long long)C, L);
    report("cuda", name, time_op(x, &a, reps), 12.0 * N + 2 * nsz * SZ, copy_gbs);
    a.g = &g16;
    snprintf(name, sizeof name, "backward %lldx%lld %s BF16 g", (long long)R, (long long)C, L);
    report("cuda", name, time_op(x, &a, reps), 10.0 * N + 2 * nsz * SZ, copy_gbs);
    x->be->free(x->be, s.data), x->be->free(x->be, z.data);
    x->be->free(x->be, ds.data), x->be->free(x->be, dz.data);
  }
  qat_tensor *all[] = {&w, &out, &out16, &g, &g16, &dw};
  for (int i = 0; i < 6; i++) x->be->free(x->be, all[i]->data);
}

static int bench_cuda(int reps, char *devname, size_t devname_n) {
  gpu_ctx x = {0};
  TRY(qat_backend_cuda(&x.be));
  x.st = (cudaStream_t)qat_fq_cuda_stream(x.be);
  struct cudaDeviceProp prop;
  CU(cudaGetDeviceProperties(&prop, 0));
  snprintf(devname, devname_n, "%s", prop.name);
  if (!g_json) printf("device: %s, %d SMs, L2 %.0f MB\n", prop.name, prop.multiProcessorCount,
                      prop.l2CacheSize / 1048576.0);
  x.flush_bytes = 256u << 20;
  TRY(x.be->alloc(x.be, &x.flush, x.flush_bytes));
  CU(cudaEventCreate(&x.e0));
  CU(cudaEventCreate(&x.e1));
  bench_size(&x, 4096, 4096, reps, 1); /* 64 MB F32 */
  bench_size(&x, 8192, 8192, reps, 0); /* 256 MB F32 */
  CU(cudaEventDestroy(x.e0));
  CU(cudaEventDestroy(x.e1));
  x.be->free(x.be, x.flush);
  return 0;
}
#endif

static void print_json(const char *device, const char *skipped) {
  printf("{\"bench\":\"fakequant\",\"device\":\"%s\"", device);
  if (skipped) printf(",\"skipped\":\"%s\"", skipped);
  printf(",\"results\":[");
  for (int i = 0; i < g_nres; i++) {
    result *r = &g_res[i];
    printf("%s{\"dev\":\"%s\",\"name\":\"%s\",\"ms\":%.5f,\"gbs\":%.2f", i ? "," : "", r->dev,
           r->name, r->ms, r->gbs);
    if (r->pct >= 0) printf(",\"pct_of_copy\":%.2f", r->pct);
    printf("}");
  }
  printf("]}\n");
}

int main(int argc, char **argv) {
  int reps = 20;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) {
      g_json = 1;
    } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = atoi(argv[++i]);
      if (reps < 1) reps = 1;
    } else {
      fprintf(stderr, "usage: bench_fakequant [--json] [--reps N]\n");
      return 2;
    }
  }
  bench_cpu(reps);
  if (!qat_cuda_available()) {
    if (g_json)
      print_json("cpu", "no CUDA GPU");
    else
      printf("skipped: no CUDA GPU\n");
    return 0;
  }
#ifdef QAT_HAVE_CUDA
  char dev[256] = "cuda";
  bench_cuda(reps, dev, sizeof dev);
  if (g_json) print_json(dev, NULL);
#endif
  return 0;
}
