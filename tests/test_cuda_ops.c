/* CUDA dense, LLaMA-block and optimizer ops against the CPU backend (the plain-C reference, itself
 * tested against naive double-precision code in test_cpu_*.c): every op forward and backward, on
 * odd shapes (tile tails, non-multiple-of-32 rows, GQA groups) and one realistic shape per op, in
 * F32 and BF16. Without a GPU every case skips (exit 77).
 *
 * Protocol: inputs are drawn in F32; for BF16 cases they are rounded to bf16 first and the CPU
 * gets the same rounded values as F32, so both sides see identical inputs. Outputs are compared
 * by normalized error (max |cuda - cpu| / max |cpu|, tu_nerr).
 *
 * Tolerances:
 * - F32 1e-5: both sides compute in F32 or better, differing only in summation order and in libm
 *   vs CUDA transcendental ulps: a few 1e-7 of the largest value.
 * - gemm F32 1e-4: sums of up to 4096 products in different blocked orders; cuBLASLt runs
 *   CUBLAS_COMPUTE_32F (pure FP32, TF32 off; TF32 would give ~1e-3 and fail).
 * - BF16 2e-2: CUDA rounds its outputs to bf16 (relative error up to 2^-8 = 3.9e-3 of each
 *   element), and "+=" outputs add one more rounding of the accumulator; intermediates stay F32.
 *   2e-2 leaves a margin of ~4x over those roundings yet any wrong term (a dropped mask, a
 *   missing scale, a wrong GQA head) gives errors of order 1.
 * - F32 statistics (lse, losses, rstd) are compared at 1e-5 even in BF16 cases: they are F32
 *   results of identical inputs. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_F32 1e-5
#define TOL_GEMM_F32 1e-4
#define TOL_BF16 2e-2

static qat_backend *g_gpu;

/* Returns 0 (after tu_skip) when no GPU is usable. */
static int need_gpu(void) { return tu_need_gpu(&g_gpu); }

static qat_backend *cpu(void) { return qat_backend_cpu(); }

static float *fvec(size_t n) {
  float *p = (float *)calloc(n ? n : 1, sizeof(float));
  ck_assert_ptr_nonnull(p);
  return p;
}

static float *randn(tu_rng *r, size_t n, float sd) {
  float *p = fvec(n);
  tu_fill_normal(r, p, n, sd);
  return p;
}

static void round_bf16(float *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = qat_bf16_to_f32(qat_f32_to_bf16(x[i]));
}

static void round_to(qat_dtype dt, float *x, size_t n) {
  if (dt == QAT_BF16) round_bf16(x, n);
}

static double tol_for(qat_dtype dt) { return dt == QAT_BF16 ? TOL_BF16 : TOL_F32; }

/* A tensor on backend be of dtype dt with the values x (F32, converted), or zeros when x is NULL. */
static qat_tensor mk(const qat_backend *be, qat_dtype dt, int ndim, const int64_t *shape,
                     const float *x) {
  qat_tensor t = qat_view(NULL, dt, be->device, ndim, shape);
  size_t nb = qat_nbytes(&t), n = (size_t)qat_numel(&t);
  TU_REQUIRE_OK(be->alloc(be, &t.data, nb));
  if (x) {
    void *buf = malloc(nb ? nb : 1);
    ck_assert_ptr_nonnull(buf);
    TU_REQUIRE_OK(qat_convert_from_f32(x, buf, dt, n));
    TU_REQUIRE_OK(be->upload(be, t.data, buf, nb));
    free(buf);
  } else {
    TU_REQUIRE_OK(be->memset0(be, t.data, nb));
  }
  return t;
}

static qat_tensor mk1(const qat_backend *be, qat_dtype dt, int64_t n0, const float *x) {
  return mk(be, dt, 1, (int64_t[]){n0}, x);
}
static qat_tensor mk2(const qat_backend *be, qat_dtype dt, int64_t n0, int64_t n1, const float *x) {
  return mk(be, dt, 2, (int64_t[]){n0, n1}, x);
}
static qat_tensor mk4(const qat_backend *be, qat_dtype dt, int64_t n0, int64_t n1, int64_t n2,
                      int64_t n3, const float *x) {
  return mk(be, dt, 4, (int64_t[]){n0, n1, n2, n3}, x);
}

static qat_tensor mk_i32(const qat_backend *be, int64_t n, const int32_t *v) {
  qat_tensor t = qat_view1(NULL, QAT_I32, be->device, n);
  TU_REQUIRE_OK(be->alloc(be, &t.data, qat_nbytes(&t)));
  TU_REQUIRE_OK(be->upload(be, t.data, v, qat_nbytes(&t)));
  return t;
}

/* Download (and convert) a tensor into a fresh F32 host array. */
static float *get(const qat_backend *be, const qat_tensor *t) {
  size_t nb = qat_nbytes(t), n = (size_t)qat_numel(t);
  void *buf = malloc(nb ? nb : 1);
  ck_assert_ptr_nonnull(buf);
  TU_REQUIRE_OK(be->sync(be));
  TU_REQUIRE_OK(be->download(be, buf, t->data, nb));
  float *out = fvec(n);
  TU_REQUIRE_OK(qat_convert_to_f32(buf, t->dtype, out, n));
  free(buf);
  return out;
}

static void del(const qat_backend *be, qat_tensor *t) {
  be->free(be, t->data);
  t->data = NULL;
}

/* Compare the GPU tensor g with the CPU tensor c. */
static void cmp(const char *what, const qat_tensor *g, const qat_tensor *c, double tol) {
  size_t n = (size_t)qat_numel(c);
  ck_assert_int_eq(qat_numel(g), (int64_t)n);
  float *a = get(g_gpu, g), *b = get(cpu(), c);
  double e = tu_nerr(a, b, n);
  printf("  %-44s %-4s nerr %.3g (tol %.0e)\n", what, qat_dtype_name(g->dtype), e, tol);
  ck_assert_msg(e <= tol, "%s (%s): normalized error %g > %g", what, qat_dtype_name(g->dtype), e,
                tol);
  free(a);
  free(b);
}

/* ---- dense ------------------------------------------------------------------------------------ */

static void gemm_case(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, float beta,
                      qat_dtype dab, qat_dtype dc, uint64_t seed) {
  tu_rng r = {seed};
  float *A = randn(&r, (size_t)(M * K), 1.0f), *B = randn(&r, (size_t)(K * N), 1.0f);
  float *C = randn(&r, (size_t)(M * N), 1.0f);
  round_to(dab, A, (size_t)(M * K));
  round_to(dab, B, (size_t)(K * N));
  round_to(dc, C, (size_t)(M * N));
  int64_t as[2] = {ta ? K : M, ta ? M : K}, bs[2] = {tb ? N : K, tb ? K : N};
  qat_tensor cA = mk(cpu(), QAT_F32, 2, as, A), cB = mk(cpu(), QAT_F32, 2, bs, B);
  qat_tensor cC = mk2(cpu(), QAT_F32, M, N, C);
  qat_tensor gA = mk(g_gpu, dab, 2, as, A), gB = mk(g_gpu, dab, 2, bs, B);
  qat_tensor gC = mk2(g_gpu, dc, M, N, C);
  TU_REQUIRE_OK(QAT_OP(cpu(), gemm, ta, tb, M, N, K, alpha, &cA, &cB, beta, &cC));
  TU_REQUIRE_OK(QAT_OP(g_gpu, gemm, ta, tb, M, N, K, alpha, &gA, &gB, beta, &gC));
  char what[96];
  snprintf(what, sizeof what, "gemm ta=%d tb=%d %lldx%lldx%lld %s->", ta, tb, (long long)M,
           (long long)N, (long long)K, qat_dtype_name(dab));
  cmp(what, &gC, &cC, dc == QAT_BF16 ? TOL_BF16 : TOL_GEMM_F32);
  del(cpu(), &cA), del(cpu(), &cB), del(cpu(), &cC);
  del(g_gpu, &gA), del(g_gpu, &gB), del(g_gpu, &gC);
  free(A), free(B), free(C);
}

START_TEST(test_gemm_odd) {
  if (!need_gpu()) return;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      gemm_case(ta, tb, 37, 29, 53, 0.7f, 0.3f, QAT_F32, QAT_F32, 1 + ta * 2 + tb);
      gemm_case(ta, tb, 37, 29, 53, 1.0f, 0.0f, QAT_BF16, QAT_BF16, 11 + ta * 2 + tb);
      /* BF16 operands accumulating into an F32 gradient: F32 output of identical inputs. */
      gemm_case(ta, tb, 37, 29, 53, 1.0f, 1.0f, QAT_BF16, QAT_F32, 21 + ta * 2 + tb);
    }
  gemm_case(0, 1, 1, 5, 7, 1.0f, 0.0f, QAT_F32, QAT_F32, 31);   /* a single row */
}
END_TEST

START_TEST(test_gemm_4096) {
  if (!need_gpu()) return;
  gemm_case(0, 1, 4096, 4096, 4096, 1.0f, 0.0f, QAT_F32, QAT_F32, 41);
  gemm_case(0, 1, 4096, 4096, 4096, 1.0f, 0.0f, QAT_BF16, QAT_BF16, 42);
}
END_TEST

/* A gemm with a beta that must not read C when 0: C full of NaN stays out of the result. */
START_TEST(test_gemm_beta0_ignores_c) {
  if (!need_gpu()) return;
  tu_rng r = {7};
  int64_t M = 9, N = 11, K = 13;
  float *A = randn(&r, M * K, 1), *B = randn(&r, K * N, 1), *C = fvec(M * N);
  for (int64_t i = 0; i < M * N; i++) C[i] = NAN;
  qat_tensor gA = mk2(g_gpu, QAT_F32, M, K, A), gB = mk2(g_gpu, QAT_F32, K, N, B);
  qat_tensor gC = mk2(g_gpu, QAT_F32, M, N, C);
  TU_REQUIRE_OK(QAT_OP(g_gpu, gemm, 0, 0, M, N, K, 1.0f, &gA, &gB, 0.0f, &gC));
  float *out = get(g_gpu, &gC);
  for (int64_t i = 0; i < M * N; i++) ck_assert_msg(isfinite(out[i]), "C[%lld] not finite", (long long)i);
  /* K = 0 (cuBLASLt needs k >= 1): C = beta * C, done by a kernel */
  qat_tensor a0 = qat_view2(gA.data, QAT_F32, QAT_DEV_CUDA, M, 0);
  qat_tensor b0 = qat_view2(gB.data, QAT_F32, QAT_DEV_CUDA, 0, N);
  TU_REQUIRE_OK(QAT_OP(g_gpu, gemm, 0, 0, M, N, 0, 1.0f, &a0, &b0, 0.5f, &gC));
  float *halved = get(g_gpu, &gC);
  for (int64_t i = 0; i < M * N; i++) ck_assert_float_eq(halved[i], 0.5f * out[i]);
  free(halved);
  /* mismatched numel is an error, not a crash */
  ck_assert_int_eq(QAT_OP(g_gpu, gemm, 0, 0, M, N, K + 1, 1.0f, &gA, &gB, 0.0f, &gC), QAT_EINVAL);
  del(g_gpu, &gA), del(g_gpu, &gB), del(g_gpu, &gC);
  free(A), free(B), free(C), free(out);
}
END_TEST

static void axpy_case(qat_dtype dx, qat_dtype dy, int64_t n, uint64_t seed) {
  tu_rng r = {seed};
  float *x = randn(&r, n, 1), *y = randn(&r, n, 1);
  round_to(dx, x, n);
  round_to(dy, y, n);
  qat_tensor cx = mk1(cpu(), QAT_F32, n, x), cy = mk1(cpu(), QAT_F32, n, y);
  qat_tensor gx = mk1(g_gpu, dx, n, x), gy = mk1(g_gpu, dy, n, y);
  TU_REQUIRE_OK(QAT_OP(cpu(), axpy, -0.37f, &cx, &cy));
  TU_REQUIRE_OK(QAT_OP(g_gpu, axpy, -0.37f, &gx, &gy));
  cmp("axpy", &gy, &cy, tol_for(dy));
  TU_REQUIRE_OK(QAT_OP(cpu(), scale, 1.7f, &cy));
  TU_REQUIRE_OK(QAT_OP(g_gpu, scale, 1.7f, &gy));
  cmp("scale", &gy, &cy, tol_for(dy));
  del(cpu(), &cx), del(cpu(), &cy), del(g_gpu, &gx), del(g_gpu, &gy);
  free(x), free(y);
}

START_TEST(test_axpy_scale) {
  if (!need_gpu()) return;
  axpy_case(QAT_F32, QAT_F32, 100003, 1);
  axpy_case(QAT_BF16, QAT_BF16, 100003, 2);
  axpy_case(QAT_BF16, QAT_F32, 1001, 3); /* bf16 gradient into an F32 accumulator */
  axpy_case(QAT_F32, QAT_F32, 3, 4);
  axpy_case(QAT_F32, QAT_F32, 4096 * 4096, 5);
}
END_TEST

static void sumsq_case(qat_dtype dt, int64_t n, uint64_t seed) {
  tu_rng r = {seed};
  float *x = randn(&r, n, 2);
  round_to(dt, x, n);
  qat_tensor cx = mk1(cpu(), QAT_F32, n, x), gx = mk1(g_gpu, dt, n, x);
  double a = -1, b = -1, a2 = -1;
  TU_REQUIRE_OK(QAT_OP(cpu(), sumsq, &cx, &b));
  TU_REQUIRE_OK(QAT_OP(g_gpu, sumsq, &gx, &a));
  TU_REQUIRE_OK(QAT_OP(g_gpu, sumsq, &gx, &a2));
  /* Both sum exact float squares in double: the relative error is bounded by n * 2^-53 ~ 1e-10
   * for n = 1e6. */
  printf("  sumsq n=%lld %s: cuda %.17g cpu %.17g\n", (long long)n, qat_dtype_name(dt), a, b);
  ck_assert_msg(fabs(a - b) <= 1e-9 * fabs(b) + 1e-300, "sumsq %.17g vs %.17g", a, b);
  ck_assert_msg(a == a2, "sumsq is not deterministic: %.17g then %.17g", a, a2);
  del(cpu(), &cx), del(g_gpu, &gx);
  free(x);
}

START_TEST(test_sumsq) {
  if (!need_gpu()) return;
  sumsq_case(QAT_F32, 1000003, 1);
  sumsq_case(QAT_BF16, 1000003, 2);
  sumsq_case(QAT_F32, 1, 3);
  sumsq_case(QAT_F32, 4096 * 4096, 4);
  /* NaN and Inf propagate (used for finiteness checks of gradients) */
  float x[5] = {1, 2, NAN, 3, 4};
  qat_tensor g = mk1(g_gpu, QAT_F32, 5, x);
  double s = 0;
  TU_REQUIRE_OK(QAT_OP(g_gpu, sumsq, &g, &s));
  ck_assert(isnan(s));
  x[2] = INFINITY;
  del(g_gpu, &g);
  g = mk1(g_gpu, QAT_F32, 5, x);
  TU_REQUIRE_OK(QAT_OP(g_gpu, sumsq, &g, &s));
  ck_assert(isinf(s));
  del(g_gpu, &g);
}
END_TEST

static void bias_case(qat_dtype dy, qat_dtype db, int64_t N, int64_t C, uint64_t seed) {
  tu_rng r = {seed};
  float *y = randn(&r, N * C, 1), *b = randn(&r, C, 1), *d = randn(&r, N * C, 1);
  float *db0 = randn(&r, C, 1);
  round_to(dy, y, N * C);
  round_to(dy, d, N * C);
  round_to(db, b, C);
  round_to(db, db0, C);
  qat_tensor cy = mk2(cpu(), QAT_F32, N, C, y), cb = mk1(cpu(), QAT_F32, C, b);
  qat_tensor cd = mk2(cpu(), QAT_F32, N, C, d), cdb = mk1(cpu(), QAT_F32, C, db0);
  qat_tensor gy = mk2(g_gpu, dy, N, C, y), gb = mk1(g_gpu, db, C, b);
  qat_tensor gd = mk2(g_gpu, dy, N, C, d), gdb = mk1(g_gpu, db, C, db0);
  TU_REQUIRE_OK(QAT_OP(cpu(), bias_fwd, &cy, &cb));
  TU_REQUIRE_OK(QAT_OP(g_gpu, bias_fwd, &gy, &gb));
  cmp("bias_fwd", &gy, &cy, tol_for(dy));
  TU_REQUIRE_OK(QAT_OP(cpu(), bias_bwd, &cd, &cdb));
  TU_REQUIRE_OK(QAT_OP(g_gpu, bias_bwd, &gd, &gdb));
  cmp("bias_bwd (db +=)", &gdb, &cdb, tol_for(db));
  del(cpu(), &cy), del(cpu(), &cb), del(cpu(), &cd), del(cpu(), &cdb);
  del(g_gpu, &gy), del(g_gpu, &gb), del(g_gpu, &gd), del(g_gpu, &gdb);
  free(y), free(b), free(d), free(db0);
}

START_TEST(test_bias) {
  if (!need_gpu()) return;
  bias_case(QAT_F32, QAT_F32, 77, 131, 1);
  bias_case(QAT_BF16, QAT_BF16, 77, 131, 2);
  bias_case(QAT_BF16, QAT_F32, 5, 3, 3);
  bias_case(QAT_F32, QAT_F32, 4096, 4096, 4);
}
END_TEST

/* ---- LLaMA blocks ----------------------------------------------------------------------------- */

static void embedding_case(qat_dtype dt, int64_t V, int64_t C, int64_t N, uint64_t seed) {
  tu_rng r = {seed};
  float *table = fvec(V * C), *dout = randn(&r, N * C, 1), *dt0 = randn(&r, V * C, 0.1f);
  for (int64_t i = 0; i < V * C; i++) table[i] = tu_uniform(&r, -1, 1);
  round_to(dt, table, V * C);
  round_to(dt, dout, N * C);
  int32_t *tok = (int32_t *)malloc(N * sizeof(int32_t));
  /* repeats on purpose: the backward must add them all */
  for (int64_t i = 0; i < N; i++) tok[i] = (int32_t)(tu_next(&r) % (uint64_t)(i % 3 ? V : 5));
  qat_tensor ct = mk_i32(cpu(), N, tok), gt = mk_i32(g_gpu, N, tok);
  qat_tensor ctab = mk2(cpu(), QAT_F32, V, C, table), gtab = mk2(g_gpu, dt, V, C, table);
  qat_tensor co = mk2(cpu(), QAT_F32, N, C, NULL), go = mk2(g_gpu, dt, N, C, NULL);
  TU_REQUIRE_OK(QAT_OP(cpu(), embedding_fwd, &ct, &ctab, &co));
  TU_REQUIRE_OK(QAT_OP(g_gpu, embedding_fwd, &gt, &gtab, &go));
  cmp("embedding_fwd", &go, &co, tol_for(dt));
  /* dtable is F32 (F32 atomics); dout in the activation dtype */
  qat_tensor cd = mk2(cpu(), QAT_F32, N, C, dout), gd = mk2(g_gpu, dt, N, C, dout);
  qat_tensor cdt = mk2(cpu(), QAT_F32, V, C, dt0), gdt = mk2(g_gpu, QAT_F32, V, C, dt0);
  TU_REQUIRE_OK(QAT_OP(cpu(), embedding_bwd, &ct, &cd, &cdt));
  TU_REQUIRE_OK(QAT_OP(g_gpu, embedding_bwd, &gt, &gd, &gdt));
  /* F32 sums of identical inputs in another order (atomics): F32 tolerance in both modes */
  cmp("embedding_bwd (dtable +=)", &gdt, &cdt, TOL_F32);
  del(cpu(), &ct), del(cpu(), &ctab), del(cpu(), &co), del(cpu(), &cd), del(cpu(), &cdt);
  del(g_gpu, &gt), del(g_gpu, &gtab), del(g_gpu, &go), del(g_gpu, &gd), del(g_gpu, &gdt);
  free(table), free(dout), free(dt0), free(tok);
}

START_TEST(test_embedding) {
  if (!need_gpu()) return;
  embedding_case(QAT_F32, 1000, 67, 300, 1);
  embedding_case(QAT_BF16, 1000, 67, 300, 2);
  embedding_case(QAT_F32, 32000, 4096, 2048, 3);
}
END_TEST

START_TEST(test_embedding_errors) {
  if (!need_gpu()) return;
  int32_t tok[3] = {1, 7, 2};
  float tab[5 * 4] = {0};
  qat_tensor gt = mk_i32(g_gpu, 3, tok), gtab = mk2(g_gpu, QAT_F32, 5, 4, tab);
  qat_tensor go = mk2(g_gpu, QAT_F32, 3, 4, NULL);
  ck_assert_int_eq(QAT_OP(g_gpu, embedding_fwd, &gt, &gtab, &go), QAT_EINVAL); /* 7 >= V */
  ck_assert_int_eq(QAT_OP(g_gpu, embedding_bwd, &gt, &go, &gtab), QAT_EINVAL);
  float *after = get(g_gpu, &gtab);
  for (int i = 0; i < 20; i++) ck_assert_float_eq(after[i], 0.0f); /* nothing written */
  tok[1] = 3;
  qat_tensor gt2 = mk_i32(g_gpu, 3, tok), gb = mk2(g_gpu, QAT_BF16, 5, 4, tab);
  ck_assert_int_eq(QAT_OP(g_gpu, embedding_bwd, &gt2, &go, &gb), QAT_EUNSUPPORTED);
  del(g_gpu, &gt), del(g_gpu, &gt2), del(g_gpu, &gtab), del(g_gpu, &go), del(g_gpu, &gb);
  free(after);
}
END_TEST

static void rmsnorm_case(qat_dtype dt, qat_dtype dw_t, int64_t N, int64_t C, uint64_t seed) {
  tu_rng r = {seed};
  float *x = randn(&r, N * C, 1.5f), *w = randn(&r, C, 1), *dout = randn(&r, N * C, 1);
  float *dx0 = randn(&r, N * C, 1), *dw0 = randn(&r, C, 1);
  for (int64_t i = 0; i < C; i++) w[i] += 1.0f;
  round_to(dt, x, N * C), round_to(dt, dout, N * C), round_to(dt, dx0, N * C);
  round_to(dw_t, w, C), round_to(dw_t, dw0, C);
  const float eps = 1e-5f;
  qat_tensor cx = mk2(cpu(), QAT_F32, N, C, x), gx = mk2(g_gpu, dt, N, C, x);
  qat_tensor cw = mk1(cpu(), QAT_F32, C, w), gw = mk1(g_gpu, dw_t, C, w);
  qat_tensor co = mk2(cpu(), QAT_F32, N, C, NULL), go = mk2(g_gpu, dt, N, C, NULL);
  qat_tensor cr = mk1(cpu(), QAT_F32, N, NULL), gr = mk1(g_gpu, QAT_F32, N, NULL);
  TU_REQUIRE_OK(QAT_OP(cpu(), rmsnorm_fwd, &cx, &cw, eps, &co, &cr));
  TU_REQUIRE_OK(QAT_OP(g_gpu, rmsnorm_fwd, &gx, &gw, eps, &go, &gr));
  cmp("rmsnorm_fwd out", &go, &co, tol_for(dt));
  cmp("rmsnorm_fwd rstd", &gr, &cr, TOL_F32);
  qat_tensor cd = mk2(cpu(), QAT_F32, N, C, dout), gd = mk2(g_gpu, dt, N, C, dout);
  qat_tensor cdx = mk2(cpu(), QAT_F32, N, C, dx0), gdx = mk2(g_gpu, dt, N, C, dx0);
  qat_tensor cdw = mk1(cpu(), QAT_F32, C, dw0), gdw = mk1(g_gpu, dw_t, C, dw0);
  TU_REQUIRE_OK(QAT_OP(cpu(), rmsnorm_bwd, &cd, &cx, &cw, &cr, &cdx, &cdw));
  TU_REQUIRE_OK(QAT_OP(g_gpu, rmsnorm_bwd, &gd, &gx, &gw, &gr, &gdx, &gdw));
  cmp("rmsnorm_bwd dx +=", &gdx, &cdx, tol_for(dt));
  cmp("rmsnorm_bwd dw +=", &gdw, &cdw, tol_for(dw_t));
  del(cpu(), &cx), del(cpu(), &cw), del(cpu(), &co), del(cpu(), &cr), del(cpu(), &cd);
  del(cpu(), &cdx), del(cpu(), &cdw);
  del(g_gpu, &gx), del(g_gpu, &gw), del(g_gpu, &go), del(g_gpu, &gr), del(g_gpu, &gd);
  del(g_gpu, &gdx), del(g_gpu, &gdw);
  free(x), free(w), free(dout), free(dx0), free(dw0);
}

START_TEST(test_rmsnorm) {
  if (!need_gpu()) return;
  rmsnorm_case(QAT_F32, QAT_F32, 13, 333, 1);
  rmsnorm_case(QAT_BF16, QAT_BF16, 13, 333, 2);
  rmsnorm_case(QAT_BF16, QAT_F32, 7, 96, 3); /* bf16 activations, F32 norm weight */
  rmsnorm_case(QAT_F32, QAT_F32, 1, 1, 4);
  rmsnorm_case(QAT_F32, QAT_F32, 64, 4096, 5);
  rmsnorm_case(QAT_BF16, QAT_BF16, 64, 4096, 6);
}
END_TEST

static void rope_case(qat_dtype dt, int64_t B, int64_t T, int64_t H, int64_t D, int64_t pos0,
                      double theta, uint64_t seed) {
  tu_rng r = {seed};
  int64_t n = B * T * H * D;
  float *x = randn(&r, n, 1), *f = fvec(D / 2);
  for (int64_t i = 0; i < D / 2; i++) f[i] = (float)pow(theta, -2.0 * i / D);
  round_to(dt, x, n);
  qat_tensor cf = mk1(cpu(), QAT_F32, D / 2, f), gf = mk1(g_gpu, QAT_F32, D / 2, f);
  for (int inv = 0; inv < 2; inv++) {
    qat_tensor cx = mk4(cpu(), QAT_F32, B, T, H, D, x), gx = mk4(g_gpu, dt, B, T, H, D, x);
    TU_REQUIRE_OK(QAT_OP(cpu(), rope, &cx, &cf, pos0, inv));
    TU_REQUIRE_OK(QAT_OP(g_gpu, rope, &gx, &gf, pos0, inv));
    cmp(inv ? "rope inverse" : "rope", &gx, &cx, tol_for(dt));
    if (!inv && dt == QAT_F32) { /* the inverse undoes the rotation on the device too */
      TU_REQUIRE_OK(QAT_OP(g_gpu, rope, &gx, &gf, pos0, 1));
      float *back = get(g_gpu, &gx);
      double e = tu_nerr(back, x, n);
      ck_assert_msg(e < 1e-5, "rope then inverse: nerr %g", e);
      free(back);
    }
    del(cpu(), &cx), del(g_gpu, &gx);
  }
  del(cpu(), &cf), del(g_gpu, &gf);
  free(x), free(f);
}

START_TEST(test_rope) {
  if (!need_gpu()) return;
  rope_case(QAT_F32, 2, 17, 3, 32, 5, 10000.0, 1);
  rope_case(QAT_BF16, 2, 17, 3, 32, 5, 10000.0, 2);
  rope_case(QAT_F32, 1, 3, 2, 6, 0, 10000.0, 3);
  rope_case(QAT_F32, 1, 2048, 32, 128, 0, 10000.0, 4);
  rope_case(QAT_BF16, 1, 2048, 8, 128, 0, 500000.0, 5);
}
END_TEST

/* Attention: forward compares out and lse; the backward runs on both sides with the same
 * (CUDA-produced) out and lse, so it is tested on its own. */
static void attention_case(qat_dtype dt, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
                           uint64_t seed) {
  tu_rng r = {seed};
  int64_t nq = B * T * Hq * D, nk = B * T * Hkv * D;
  float *q = randn(&r, nq, 1), *k = randn(&r, nk, 1), *v = randn(&r, nk, 1);
  float *dout = randn(&r, nq, 1);
  round_to(dt, q, nq), round_to(dt, k, nk), round_to(dt, v, nk), round_to(dt, dout, nq);
  const float scale = 1.0f / sqrtf((float)D);
  qat_tensor cq = mk4(cpu(), QAT_F32, B, T, Hq, D, q), gq = mk4(g_gpu, dt, B, T, Hq, D, q);
  qat_tensor ck = mk4(cpu(), QAT_F32, B, T, Hkv, D, k), gk = mk4(g_gpu, dt, B, T, Hkv, D, k);
  qat_tensor cv = mk4(cpu(), QAT_F32, B, T, Hkv, D, v), gv = mk4(g_gpu, dt, B, T, Hkv, D, v);
  qat_tensor co = mk4(cpu(), QAT_F32, B, T, Hq, D, NULL), go = mk4(g_gpu, dt, B, T, Hq, D, NULL);
  int64_t ls[3] = {B, Hq, T};
  qat_tensor cl = mk(cpu(), QAT_F32, 3, ls, NULL), gl = mk(g_gpu, QAT_F32, 3, ls, NULL);
  TU_REQUIRE_OK(QAT_OP(cpu(), attention_fwd, &cq, &ck, &cv, scale, &co, &cl));
  TU_REQUIRE_OK(QAT_OP(g_gpu, attention_fwd, &gq, &gk, &gv, scale, &go, &gl));
  char what[96];
  snprintf(what, sizeof what, "attention_fwd B%lld T%lld H%lld/%lld D%lld out", (long long)B,
           (long long)T, (long long)Hq, (long long)Hkv, (long long)D);
  cmp(what, &go, &co, tol_for(dt));
  cmp("  lse", &gl, &cl, TOL_F32);

  /* backward from the same out / lse on both sides */
  float *o_dev = get(g_gpu, &go), *l_dev = get(g_gpu, &gl);
  qat_tensor co2 = mk4(cpu(), QAT_F32, B, T, Hq, D, o_dev), cl2 = mk(cpu(), QAT_F32, 3, ls, l_dev);
  qat_tensor cd = mk4(cpu(), QAT_F32, B, T, Hq, D, dout), gd = mk4(g_gpu, dt, B, T, Hq, D, dout);
  qat_tensor cdq = mk4(cpu(), QAT_F32, B, T, Hq, D, NULL), gdq = mk4(g_gpu, dt, B, T, Hq, D, NULL);
  qat_tensor cdk = mk4(cpu(), QAT_F32, B, T, Hkv, D, NULL), gdk = mk4(g_gpu, dt, B, T, Hkv, D, NULL);
  qat_tensor cdv = mk4(cpu(), QAT_F32, B, T, Hkv, D, NULL), gdv = mk4(g_gpu, dt, B, T, Hkv, D, NULL);
  TU_REQUIRE_OK(QAT_OP(cpu(), attention_bwd, &cd, &cq, &ck, &cv, &co2, &cl2, scale, &cdq, &cdk, &cdv));
  TU_REQUIRE_OK(QAT_OP(g_gpu, attention_bwd, &gd, &gq, &gk, &gv, &go, &gl, scale, &gdq, &gdk, &gdv));
  cmp("  attention_bwd dq", &gdq, &cdq, tol_for(dt));
  cmp("  attention_bwd dk", &gdk, &cdk, tol_for(dt));
  cmp("  attention_bwd dv", &gdv, &cdv, tol_for(dt));
  qat_tensor *cs[] = {&cq, &ck, &cv, &co, &cl, &co2, &cl2, &cd, &cdq, &cdk, &cdv};
  qat_tensor *gs[] = {&gq, &gk, &gv, &go, &gl, &gd, &gdq, &gdk, &gdv};
  for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) del(cpu(), cs[i]);
  for (size_t i = 0; i < sizeof gs / sizeof *gs; i++) del(g_gpu, gs[i]);
  free(q), free(k), free(v), free(dout), free(o_dev), free(l_dev);
}

START_TEST(test_attention_odd) {
  if (!need_gpu()) return;
  const int64_t Ds[] = {32, 48, 64, 80, 96, 128};
  for (int i = 0; i < 6; i++) {
    attention_case(QAT_F32, 2, 67, 6, 3, Ds[i], 10 + i); /* GQA groups of 2, a 3-row tail tile */
    attention_case(QAT_BF16, 2, 67, 6, 3, Ds[i], 20 + i);
  }
  /* two tokens, MQA (one token would make dq = dk = 0 exactly: P = 1 so dP - Di = 0, and the
   * normalized error of a zero reference is meaningless) */
  attention_case(QAT_F32, 1, 2, 4, 1, 64, 30);
  attention_case(QAT_F32, 3, 64, 2, 2, 32, 31);  /* exactly one tile, MHA */
  attention_case(QAT_F32, 1, 129, 4, 4, 64, 32); /* a one-row tail tile */
}
END_TEST

START_TEST(test_attention_realistic) {
  if (!need_gpu()) return;
  attention_case(QAT_F32, 1, 257, 8, 2, 64, 1);
  attention_case(QAT_F32, 1, 257, 8, 2, 128, 2);
  attention_case(QAT_BF16, 1, 257, 8, 2, 64, 3);
  attention_case(QAT_BF16, 1, 257, 8, 2, 128, 4);
}
END_TEST

START_TEST(test_attention_unsupported) {
  if (!need_gpu()) return;
  qat_tensor q = mk4(g_gpu, QAT_F32, 1, 5, 2, 40, NULL), k = mk4(g_gpu, QAT_F32, 1, 5, 1, 40, NULL);
  qat_tensor v = mk4(g_gpu, QAT_F32, 1, 5, 1, 40, NULL), o = mk4(g_gpu, QAT_F32, 1, 5, 2, 40, NULL);
  qat_tensor l = mk(g_gpu, QAT_F32, 3, (int64_t[]){1, 2, 5}, NULL);
  ck_assert_int_eq(QAT_OP(g_gpu, attention_fwd, &q, &k, &v, 0.1f, &o, &l), QAT_EUNSUPPORTED);
  qat_tensor k3 = mk4(g_gpu, QAT_F32, 1, 5, 3, 40, NULL); /* 2 query heads, 3 kv heads */
  ck_assert_int_eq(QAT_OP(g_gpu, attention_fwd, &q, &k3, &k3, 0.1f, &o, &l), QAT_EINVAL);
  del(g_gpu, &q), del(g_gpu, &k), del(g_gpu, &v), del(g_gpu, &o), del(g_gpu, &l), del(g_gpu, &k3);
}
END_TEST

static void swiglu_case(qat_dtype dt, int64_t N, int64_t F, uint64_t seed) {
  tu_rng r = {seed};
  int64_t n = N * F;
  float *g = randn(&r, n, 2), *u = randn(&r, n, 1), *d = randn(&r, n, 1);
  round_to(dt, g, n), round_to(dt, u, n), round_to(dt, d, n);
  qat_tensor cg = mk2(cpu(), QAT_F32, N, F, g), gg = mk2(g_gpu, dt, N, F, g);
  qat_tensor cu = mk2(cpu(), QAT_F32, N, F, u), gu = mk2(g_gpu, dt, N, F, u);
  qat_tensor cd = mk2(cpu(), QAT_F32, N, F, d), gd = mk2(g_gpu, dt, N, F, d);
  qat_tensor co = mk2(cpu(), QAT_F32, N, F, NULL), go = mk2(g_gpu, dt, N, F, NULL);
  qat_tensor cdg = mk2(cpu(), QAT_F32, N, F, NULL), gdg = mk2(g_gpu, dt, N, F, NULL);
  qat_tensor cdu = mk2(cpu(), QAT_F32, N, F, NULL), gdu = mk2(g_gpu, dt, N, F, NULL);
  TU_REQUIRE_OK(QAT_OP(cpu(), swiglu_fwd, &cg, &cu, &co));
  TU_REQUIRE_OK(QAT_OP(g_gpu, swiglu_fwd, &gg, &gu, &go));
  cmp("swiglu_fwd", &go, &co, tol_for(dt));
  TU_REQUIRE_OK(QAT_OP(cpu(), swiglu_bwd, &cd, &cg, &cu, &cdg, &cdu));
  TU_REQUIRE_OK(QAT_OP(g_gpu, swiglu_bwd, &gd, &gg, &gu, &gdg, &gdu));
  cmp("swiglu_bwd dgate", &gdg, &cdg, tol_for(dt));
  cmp("swiglu_bwd dup", &gdu, &cdu, tol_for(dt));
  qat_tensor *cs[] = {&cg, &cu, &cd, &co, &cdg, &cdu}, *gs[] = {&gg, &gu, &gd, &go, &gdg, &gdu};
  for (int i = 0; i < 6; i++) del(cpu(), cs[i]), del(g_gpu, gs[i]);
  free(g), free(u), free(d);
}

START_TEST(test_swiglu) {
  if (!need_gpu()) return;
  swiglu_case(QAT_F32, 37, 301, 1);
  swiglu_case(QAT_BF16, 37, 301, 2);
  swiglu_case(QAT_F32, 512, 11008, 3);
  swiglu_case(QAT_BF16, 512, 11008, 4);
}
END_TEST

static void xent_case(qat_dtype dt, int64_t N, int64_t V, int in_place, uint64_t seed) {
  tu_rng r = {seed};
  float *x = randn(&r, N * V, 3);
  round_to(dt, x, N * V);
  int32_t *t = (int32_t *)malloc(N * sizeof(int32_t));
  for (int64_t i = 0; i < N; i++) t[i] = (int32_t)(tu_next(&r) % (uint64_t)V);
  t[N / 2] = -1; /* an ignored position */
  if (N > 3) t[N - 1] = (int32_t)(V - 1);
  const float dscale = 1.0f / (float)N;
  qat_tensor ct = mk_i32(cpu(), N, t), gt = mk_i32(g_gpu, N, t);
  qat_tensor cx = mk2(cpu(), QAT_F32, N, V, x), gx = mk2(g_gpu, dt, N, V, x);
  qat_tensor cl = mk1(cpu(), QAT_F32, N, NULL), gl = mk1(g_gpu, QAT_F32, N, NULL);
  qat_tensor cdl = mk2(cpu(), QAT_F32, N, V, NULL);
  qat_tensor gdl = in_place ? gx : mk2(g_gpu, dt, N, V, NULL);
  TU_REQUIRE_OK(QAT_OP(cpu(), xent, &cx, &ct, &cl, &cdl, dscale));
  TU_REQUIRE_OK(QAT_OP(g_gpu, xent, &gx, &gt, &gl, &gdl, dscale));
  char what[96];
  snprintf(what, sizeof what, "xent N%lld V%lld%s losses", (long long)N, (long long)V,
           in_place ? " in place" : "");
  cmp(what, &gl, &cl, TOL_F32);
  cmp("  xent dlogits", &gdl, &cdl, tol_for(dt));
  /* losses only */
  if (!in_place) {
    qat_tensor gl2 = mk1(g_gpu, QAT_F32, N, NULL);
    TU_REQUIRE_OK(QAT_OP(g_gpu, xent, &gx, &gt, &gl2, NULL, dscale));
    cmp("  xent losses without dlogits", &gl2, &cl, TOL_F32);
    del(g_gpu, &gl2);
    del(g_gpu, &gdl);
  }
  del(cpu(), &ct), del(cpu(), &cx), del(cpu(), &cl), del(cpu(), &cdl);
  del(g_gpu, &gt), del(g_gpu, &gx), del(g_gpu, &gl);
  free(x), free(t);
}

START_TEST(test_xent) {
  if (!need_gpu()) return;
  xent_case(QAT_F32, 17, 1001, 0, 1);
  xent_case(QAT_BF16, 17, 1001, 0, 2);
  xent_case(QAT_F32, 17, 1001, 1, 3);
  xent_case(QAT_BF16, 5, 3, 1, 4);
  xent_case(QAT_F32, 64, 32000, 0, 5);
  xent_case(QAT_BF16, 64, 32000, 1, 6);
  xent_case(QAT_F32, 2, 256000, 0, 7); /* a 256K vocabulary */
  /* a target outside [-1, V) is an error and nothing is written */
  int32_t bad[2] = {0, 5};
  float x[2 * 4] = {1, 2, 3, 4, 5, 6, 7, 8};
  qat_tensor gt = mk_i32(g_gpu, 2, bad), gx = mk2(g_gpu, QAT_F32, 2, 4, x);
  qat_tensor gl = mk1(g_gpu, QAT_F32, 2, NULL);
  ck_assert_int_eq(QAT_OP(g_gpu, xent, &gx, &gt, &gl, &gx, 1.0f), QAT_EINVAL);
  float *after = get(g_gpu, &gx);
  for (int i = 0; i < 8; i++) ck_assert_float_eq(after[i], x[i]);
  del(g_gpu, &gt), del(g_gpu, &gx), del(g_gpu, &gl);
  free(after);
}
END_TEST

/* ---- optimizer ---------------------------------------------------------------------------------- */

/* off: element offset into the buffers, so off = 1 exercises the unaligned (scalar) path. */
static void adamw_case(int64_t n, int64_t off, uint64_t seed) {
  tu_rng r = {seed};
  int64_t tot = n + off;
  float *p = randn(&r, tot, 1), *m = fvec(tot), *v = fvec(tot);
  qat_tensor cp = mk1(cpu(), QAT_F32, tot, p), cm = mk1(cpu(), QAT_F32, tot, m);
  qat_tensor cv = mk1(cpu(), QAT_F32, tot, v);
  qat_tensor gp = mk1(g_gpu, QAT_F32, tot, p), gm = mk1(g_gpu, QAT_F32, tot, m);
  qat_tensor gv = mk1(g_gpu, QAT_F32, tot, v);
  qat_tensor vcp = qat_rows(&cp, off, n), vcm = qat_rows(&cm, off, n), vcv = qat_rows(&cv, off, n);
  qat_tensor vgp = qat_rows(&gp, off, n), vgm = qat_rows(&gm, off, n), vgv = qat_rows(&gv, off, n);
  for (int64_t t = 1; t <= 3; t++) {
    float *g = randn(&r, tot, 0.1f);
    qat_tensor cg = mk1(cpu(), QAT_F32, tot, g), gg = mk1(g_gpu, QAT_F32, tot, g);
    qat_tensor vcg = qat_rows(&cg, off, n), vgg = qat_rows(&gg, off, n);
    TU_REQUIRE_OK(QAT_OP(cpu(), adamw, &vcp, &vcg, &vcm, &vcv, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, t));
    TU_REQUIRE_OK(QAT_OP(g_gpu, adamw, &vgp, &vgg, &vgm, &vgv, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, t));
    del(cpu(), &cg), del(g_gpu, &gg);
    free(g);
  }
  cmp("adamw param", &gp, &cp, TOL_F32);
  cmp("adamw m", &gm, &cm, TOL_F32);
  cmp("adamw v", &gv, &cv, TOL_F32);
  del(cpu(), &cp), del(cpu(), &cm), del(cpu(), &cv), del(g_gpu, &gp), del(g_gpu, &gm), del(g_gpu, &gv);
  free(p), free(m), free(v);
}

START_TEST(test_adamw) {
  if (!need_gpu()) return;
  adamw_case(100003, 0, 1);
  adamw_case(100003, 1, 2);
  adamw_case(3, 0, 3);
  adamw_case(4096 * 4096, 0, 4);
}
END_TEST

START_TEST(test_table_complete) {
  if (!need_gpu()) return;
  const qat_backend *b = g_gpu;
  ck_assert(b->gemm && b->axpy && b->scale && b->sumsq && b->bias_fwd && b->bias_bwd);
  ck_assert(b->embedding_fwd && b->embedding_bwd && b->rmsnorm_fwd && b->rmsnorm_bwd && b->rope);
  ck_assert(b->attention_fwd && b->attention_bwd && b->swiglu_fwd && b->swiglu_bwd && b->xent);
  ck_assert(b->adamw);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cuda_ops");
  TCase *tc = tcase_create("cuda_ops");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, test_table_complete);
  tcase_add_test(tc, test_gemm_odd);
  tcase_add_test(tc, test_gemm_beta0_ignores_c);
  tcase_add_test(tc, test_gemm_4096);
  tcase_add_test(tc, test_axpy_scale);
  tcase_add_test(tc, test_sumsq);
  tcase_add_test(tc, test_bias);
  tcase_add_test(tc, test_embedding);
  tcase_add_test(tc, test_embedding_errors);
  tcase_add_test(tc, test_rmsnorm);
  tcase_add_test(tc, test_rope);
  tcase_add_test(tc, test_attention_odd);
  tcase_add_test(tc, test_attention_realistic);
  tcase_add_test(tc, test_attention_unsupported);
  tcase_add_test(tc, test_swiglu);
  tcase_add_test(tc, test_xent);
  tcase_add_test(tc, test_adamw);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
