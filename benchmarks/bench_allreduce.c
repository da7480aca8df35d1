/* Collectives of the communicator (host/dist) in the style of nccl-tests: for each size, inputs
 * crafted so every result is exactly predictable (small integers, exact in F32 and BF16 for up to
 * 7 ranks), a warm-up, timed iterations, algorithm and bus bandwidth, and every element of the
 * last result checked (wrong elements counted; any wrong element makes the exit status 1).
 *   mpirun -np N bench_allreduce [--backend auto|mpi|nccl] [--device cpu|cuda] [--min BYTES]
 *                                [--max BYTES] [--iters K] [--check] [--json]
 *   bench_allreduce --have mpi|nccl   (exit 0 when that communicator is built in, else 3)
 * --check: small sizes, few iterations, and also broadcast, all-gather, reduce-scatter, AVG/MIN/
 * MAX, BF16, the scalar reductions and the asynchronous all-reduce of the gradient buckets
 * (the correctness test tests/test_dist_comm.sh runs; benchmarks/gpu_check.sh on NCCL).
 * busbw = algbw * 2 (W - 1) / W for all-reduce (nccl-tests' convention: comparable to link
 * bandwidth); (W - 1) / W for all-gather and reduce-scatter. Only rank 0 prints. */
#include "backend/backend.h"
#include "backend/cuda_stream.h"
#include "core/log.h"
#include "dist/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ctx {
  qat_dist *d;
  qat_backend *be;
  int64_t wrong; /* elements that differed from the exact expectation */
} ctx;

/* x_r[i] = (r + 1) * (i % 7 + 1): the sum over W ranks is (i % 7 + 1) * W (W + 1) / 2. */
static float val(int r, int64_t i) { return (float)((r + 1) * (int)(i % 7 + 1)); }

static void fill(const ctx *c, float *h, int64_t n, qat_dtype dt, int r) {
  uint16_t *b = (uint16_t *)h;
  for (int64_t i = 0; i < n; i++) {
    if (dt == QAT_F32) h[i] = val(r, i);
    else b[i] = qat_f32_to_bf16(val(r, i));
  }
}

static double get(const void *h, int64_t i, qat_dtype dt) {
  return dt == QAT_F32 ? ((const float *)h)[i] : qat_bf16_to_f32(((const uint16_t *)h)[i]);
}

/* Expected element i of a reduction over all ranks. */
static double expect(int W, int64_t i, qat_dist_op op) {
  double k = (double)(i % 7 + 1);
  switch (op) {
  case QAT_RED_SUM: return k * W * (W + 1) / 2;
  case QAT_RED_AVG: return k * (W + 1) / 2;
  case QAT_RED_MIN: return k;
  case QAT_RED_MAX: return k * W;
  }
  return 0;
}

static qat_status run_allreduce(ctx *c, int64_t n, qat_dtype dt, qat_dist_op op, int iters,
                                int warm, double *sec) {
  qat_dist *d = c->d;
  size_t bytes = (size_t)n * qat_dtype_size(dt);
  void *h = malloc(bytes + 4), *dev = NULL;
  if (!h) return QAT_FAIL(QAT_ENOMEM, "bench: out of memory");
  qat_status st = c->be->alloc(c->be, &dev, bytes + 4);
  double t = 0;
  for (int it = 0; st == QAT_OK && it < warm + iters; it++) {
    fill(c, h, n, dt, d->rank);
    st = c->be->upload(c->be, dev, h, bytes);
    if (st == QAT_OK) st = d->barrier(d);
    double t0 = qat_now();
    if (st == QAT_OK) st = d->allreduce(d, dev, n, dt, op);
    if (it >= warm) t += qat_now() - t0;
  }
  if (st == QAT_OK) st = c->be->download(c->be, h, dev, bytes);
  for (int64_t i = 0; st == QAT_OK && i < n; i++)
    if (get(h, i, dt) != expect(d->world, i, op)) c->wrong++;
  c->be->free(c->be, dev);
  free(h);
  /* the slowest rank's time is the collective's */
  double v[1] = {iters ? t / iters : 0};
  if (st == QAT_OK) st = d->allreduce_f64(d, v, 1, QAT_RED_MAX);
  *sec = v[0];
  return st;
}

/* The asynchronous all-reduce the gradient buckets use (dist.h allreduce_start / _wait): three
 * buffers in flight at once, each written on the compute stream just before its start (on NCCL
 * the collective must wait for that kernel: an event orders it) and read there just after its
 * wait (which must come after the sum). F32: scaled by 2 before and 3 after (6 x the sum); BF16:
 * converted from an F32 2 x the values before and back to F32 after (2 x the sum); exact. */
static qat_status check_async(ctx *c) {
  qat_dist *d = c->d;
  const int64_t n = 4097;
  void *stream = qat_cuda_compute_stream(c->be), *dev[3] = {0}, *req[3] = {0}, *tmp = NULL;
  float *h = malloc((size_t)n * 4);
  if (!h) return QAT_FAIL(QAT_ENOMEM, "bench: out of memory");
  qat_status st = c->be->alloc(c->be, &tmp, (size_t)n * 4);
  qat_tensor t32 = qat_view1(tmp, QAT_F32, c->be->device, n);
  for (int k = 0; st == QAT_OK && k < 2; k++) {
    qat_dtype dt = k ? QAT_BF16 : QAT_F32;
    for (int b = 0; st == QAT_OK && b < 3; b++) {
      st = c->be->alloc(c->be, &dev[b], (size_t)n * 4);
      qat_tensor t = qat_view1(dev[b], dt, c->be->device, n);
      fill(c, h, n, QAT_F32, d->rank);
      if (st == QAT_OK && dt == QAT_F32) {
        st = c->be->upload(c->be, dev[b], h, (size_t)n * 4);
        if (st == QAT_OK) st = QAT_OP(c->be, scale, 2.0f, &t);
      } else if (st == QAT_OK) {
        for (int64_t i = 0; i < n; i++) h[i] *= 2.0f;
        st = c->be->upload(c->be, tmp, h, (size_t)n * 4);
        if (st == QAT_OK) st = QAT_OP(c->be, convert, &t, &t32);
      }
      if (st == QAT_OK)
        st = qat_dist_allreduce_start(d, dev[b], n, dt, QAT_RED_SUM, stream, &req[b]);
    }
    for (int b = 0; b < 3; b++) {
      if (st == QAT_OK) st = qat_dist_allreduce_wait(d, req[b], stream, b == 2);
      qat_tensor t = qat_view1(dev[b], dt, c->be->device, n);
      if (st == QAT_OK) st = dt == QAT_F32 ? QAT_OP(c->be, scale, 3.0f, &t)
                                           : QAT_OP(c->be, convert, &t32, &t);
      if (st == QAT_OK) st = c->be->download(c->be, h, dt == QAT_F32 ? dev[b] : tmp, (size_t)n * 4);
      for (int64_t i = 0; st == QAT_OK && i < n; i++)
        c->wrong += h[i] != (dt == QAT_F32 ? 6.0 : 2.0) * expect(d->world, i, QAT_RED_SUM);
    }
    for (int b = 0; b < 3; b++) {
      if (dev[b]) c->be->free(c->be, dev[b]);
      dev[b] = NULL;
    }
  }
  if (tmp) c->be->free(c->be, tmp);
  free(h);
  return st;
}

/* Broadcast from the last rank, all-gather and reduce-scatter (F32 and BF16), scalars. */
static qat_status check_others(ctx *c) {
  qat_dist *d = c->d;
  int W = d->world, R = d->rank;
  const int64_t n = 1000;
  size_t fb = (size_t)n * W * 4;
  float *h = malloc(fb), *g = malloc(fb);
  void *da = NULL, *db = NULL;
  if (!h || !g) return QAT_FAIL(QAT_ENOMEM, "bench: out of memory");
  qat_status st = c->be->alloc(c->be, &da, fb);
  if (st == QAT_OK) st = c->be->alloc(c->be, &db, fb);
  /* broadcast: the root's values arrive everywhere */
  int root = W - 1;
  fill(c, h, n, QAT_F32, R);
  if (st == QAT_OK) st = c->be->upload(c->be, da, h, (size_t)n * 4);
  if (st == QAT_OK) st = d->broadcast(d, da, (size_t)n * 4, root);
  if (st == QAT_OK) st = c->be->download(c->be, h, da, (size_t)n * 4);
  for (int64_t i = 0; st == QAT_OK && i < n; i++) c->wrong += h[i] != val(root, i);
  /* all-gather: block r holds rank r's values */
  fill(c, h, n, QAT_F32, R);
  if (st == QAT_OK) st = c->be->upload(c->be, da, h, (size_t)n * 4);
  if (st == QAT_OK) st = d->allgather(d, da, db, (size_t)n * 4);
  if (st == QAT_OK) st = c->be->download(c->be, g, db, fb);
  for (int r = 0; st == QAT_OK && r < W; r++)
    for (int64_t i = 0; i < n; i++) c->wrong += g[r * n + i] != val(r, i);
  /* reduce-scatter of W * n elements: rank R gets the sums of block R */
  for (int k = 0; k < 2; k++) {
    qat_dtype dt = k ? QAT_BF16 : QAT_F32;
    size_t es = qat_dtype_size(dt);
    fill(c, h, n * W, dt, R);
    if (st == QAT_OK) st = c->be->upload(c->be, da, h, (size_t)(n * W) * es);
    if (st == QAT_OK) st = d->reduce_scatter(d, da, db, n, dt, QAT_RED_SUM);
    if (st == QAT_OK) st = c->be->download(c->be, g, db, (size_t)n * es);
    for (int64_t i = 0; st == QAT_OK && i < n; i++)
      c->wrong += get(g, i, dt) != expect(W, R * n + i, QAT_RED_SUM);
  }
  /* host scalars */
  double f[3] = {R + 1.0, R + 1.0, R + 1.0};
  int64_t v[2] = {R, R};
  if (st == QAT_OK) st = d->allreduce_f64(d, f, 1, QAT_RED_SUM);
  if (st == QAT_OK) st = d->allreduce_f64(d, f + 1, 1, QAT_RED_AVG);
  if (st == QAT_OK) st = d->allreduce_f64(d, f + 2, 1, QAT_RED_MAX);
  if (st == QAT_OK) st = d->allreduce_i64(d, v, 1, QAT_RED_MIN);
  if (st == QAT_OK) st = d->allreduce_i64(d, v + 1, 1, QAT_RED_SUM);
  if (st == QAT_OK) {
    c->wrong += f[0] != W * (W + 1) / 2.0;
    c->wrong += f[1] != (W + 1) / 2.0;
    c->wrong += f[2] != W;
    c->wrong += v[0] != 0;
    c->wrong += v[1] != (int64_t)W * (W - 1) / 2;
  }
  if (st == QAT_OK) st = qat_dist_check_same(d, 0x1234u, "test value");
  if (st == QAT_OK) st = d->barrier(d);
  c->be->free(c->be, da);
  c->be->free(c->be, db);
  free(h);
  free(g);
  return st;
}

static qat_status run(int argc, char **argv, int *failed) {
  const char *backend = "auto", *device = "cpu";
  int64_t lo = 8, hi = 64 << 20;
  int iters = 20, check = 0, json = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend = argv[++i];
    else if (!strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
    else if (!strcmp(argv[i], "--min") && i + 1 < argc) lo = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--max") && i + 1 < argc) hi = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--check")) check = 1;
    else if (!strcmp(argv[i], "--json")) json = 1;
    else
      return QAT_FAIL(QAT_EUSAGE, "usage: bench_allreduce [--backend auto|mpi|nccl] [--device "
                                  "cpu|cuda] [--min B] [--max B] [--iters K] [--check] [--json]");
  }
  if (check) {
    lo = 4;
    hi = 1 << 20;
    iters = 2;
  }
  ctx c = {0};
  qat_dist_kind kind;
  QAT_TRY(qat_dist_kind_parse(backend, &kind));
  /* the communicator first: NCCL picks GPU local_rank, which the CUDA backend then keeps */
  QAT_TRY(qat_dist_open(kind, strcmp(device, "cuda") ? QAT_DEV_CPU : QAT_DEV_CUDA, 60, &c.d));
  QAT_TRY(qat_backend_by_name(device, &c.be));
  qat_dist *d = c.d;
  qat_status st = QAT_OK;
  if (d->rank == 0 && !json)
    printf("# bench_allreduce: %s, %d ranks, device %s\n# %12s %6s %10s %10s %10s %8s\n", d->name,
           d->world, c.be->name, "bytes", "dtype", "time_us", "algbw_GB/s", "busbw_GB/s", "wrong");
  if (d->rank == 0 && json) printf("[");
  int first = 1;
  for (int k = 0; st == QAT_OK && k < (check ? 5 : 1); k++) {
    /* check: F32 SUM, AVG, MIN, MAX, then BF16 SUM; timing: F32 SUM */
    qat_dtype dt = k == 4 ? QAT_BF16 : QAT_F32;
    qat_dist_op op = k == 4 ? QAT_RED_SUM : (qat_dist_op)k;
    for (int64_t bytes = lo; st == QAT_OK && bytes <= hi; bytes *= check ? 16 : 2) {
      int64_t n = bytes / (int64_t)qat_dtype_size(dt);
      if (check && n > 1) n += 1; /* odd counts */
      int64_t before = c.wrong;
      double sec = 0;
      st = run_allreduce(&c, n, dt, op, iters, check ? 0 : 3, &sec);
      double nb = (double)n * qat_dtype_size(dt), alg = sec > 0 ? nb / sec / 1e9 : 0;
      double bus = alg * 2.0 * (d->world - 1) / d->world;
      if (st == QAT_OK && d->rank == 0) {
        if (json)
          printf("%s{\"op\": \"allreduce\", \"red\": %d, \"bytes\": %.0f, \"dtype\": \"%s\", "
                 "\"time_us\": %.2f, \"algbw\": %.4f, \"busbw\": %.4f, \"wrong\": %lld}",
                 first ? "" : ", ", (int)op, nb, qat_dtype_name(dt), sec * 1e6, alg, bus,
                 (long long)(c.wrong - before));
        else
          printf("  %12.0f %6s %10.2f %10.4f %10.4f %8lld\n", nb, qat_dtype_name(dt), sec * 1e6,
                 alg, bus, (long long)(c.wrong - before));
        first = 0;
      }
    }
  }
  if (st == QAT_OK && check) st = check_others(&c);
  if (st == QAT_OK && check) st = check_async(&c);
  int64_t w[1] = {c.wrong};
  if (st == QAT_OK) st = d->allreduce_i64(d, w, 1, QAT_RED_SUM);
  if (st == QAT_OK && d->rank == 0) {
    if (json) printf("]\n");
    else printf("# %lld wrong elements over all ranks\n", (long long)w[0]);
  }
  *failed = st == QAT_OK && w[0] != 0;
  qat_dist_close(d, st == QAT_OK);
  return st;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--have")) { /* is communicator KIND built in: exit 0 / 3 */
    qat_dist_kind k;
    return qat_dist_kind_parse(argv[2], &k) == QAT_OK && qat_dist_have(k) ? 0 : 3;
  }
  int failed = 0;
  qat_status st = run(argc, argv, &failed);
  if (st != QAT_OK) {
    fprintf(stderr, "bench_allreduce: error: %s\n", qat_last_error());
    return qat_exit_code(st);
  }
  return failed ? 1 : 0;
}
