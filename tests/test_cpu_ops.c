/* CPU dense, embedding and optimizer ops against naive double-precision references written here:
 * gemm (all four transposes, beta != 0, K = 0), axpy, scale, sumsq, bias fwd/bwd, embedding
 * fwd/bwd (finite differences, repeated ids, out-of-range ids), AdamW against the closed form for
 * 3 steps; "+=" outputs accumulate; bad shapes and dtypes are refused before anything is written;
 * reductions give the same bits on 1 and 3 threads. Tolerances: see test_cpu_util.h. */
#include "test_cpu_util.h"

#include <omp.h>
#include <string.h>

static qat_backend *cpu(void) { return qat_backend_cpu(); }

/* ---- gemm -------------------------------------------------------------------------------- */
START_TEST(test_gemm_transposes) {
  const int64_t M = 7, N = 5, K = 13;
  const float alpha = 0.7f, beta = -0.3f;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      float *A = tc_randn(1 + ta * 2 + tb, (size_t)(M * K), 1.0f);
      float *B = tc_randn(10 + ta * 2 + tb, (size_t)(K * N), 1.0f);
      float *C = tc_randn(20 + ta * 2 + tb, (size_t)(M * N), 1.0f);
      double *ref = tc_d((size_t)(M * N));
      for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
          double s = 0;
          for (int64_t p = 0; p < K; p++) {
            double a = ta ? A[p * M + i] : A[i * K + p]; /* A stored [K, M] when ta */
            double b = tb ? B[j * K + p] : B[p * N + j]; /* B stored [N, K] when tb */
            s += a * b;
          }
          ref[i * N + j] = alpha * s + beta * (double)C[i * N + j];
        }
      qat_tensor tA = ta ? TF(A, K, M) : TF(A, M, K);
      qat_tensor tB = tb ? TF(B, N, K) : TF(B, K, N);
      qat_tensor tC = TF(C, M, N);
      TU_REQUIRE_OK(cpu()->gemm(cpu(), ta, tb, M, N, K, alpha, &tA, &tB, beta, &tC));
      CK_NERR(C, ref, (size_t)(M * N), TOL_F32);
    }
}
END_TEST

/* M = 1 (the decode step): B stored [N, K] goes through gemv.c's row dots (four rows at a time,
 * prefetch, a tail of N % 4 rows and K % 16 columns), [K, N] through sgemv; both against the
 * double reference, with alpha / beta, beta = 0 over NaN (not read), and bit-identical results
 * for 1 and 3 threads (each output summed by one thread). */
START_TEST(test_gemm_m1) {
  const int64_t Ns[] = {1, 3, 4, 5, 37, 1029}, Ks[] = {1, 13, 16, 17, 100, 576};
  float *A = tc_randn(40, 576, 1.0f), *B = tc_randn(50, 1029 * 576, 1.0f);
  float *C0 = tc_randn(60, 1029, 1.0f), *C = tc_nanf(1029), *C3 = tc_nanf(1029);
  double *ref = tc_d(1029);
  for (int ni = 0; ni < 6; ni++)
    for (int ki = 0; ki < 6; ki++)
      for (int tb = 0; tb < 2; tb++)
        for (int bz = 0; bz < 2; bz++) {
          int64_t N = Ns[ni], K = Ks[ki];
          float alpha = 1.3f, beta = bz ? 0.0f : -0.6f;
          for (int64_t j = 0; j < N; j++) {
            double acc = 0;
            for (int64_t p = 0; p < K; p++) acc += (double)A[p] * (tb ? B[j * K + p] : B[p * N + j]);
            ref[j] = alpha * acc + (bz ? 0.0 : beta * (double)C0[j]);
          }
          memcpy(C, C0, sizeof(float) * (size_t)N);
          if (bz) C[N / 2] = NAN; /* beta = 0: must not be read */
          memcpy(C3, C, sizeof(float) * (size_t)N);
          qat_tensor tA = TF(A, 1, K), tB = tb ? TF(B, N, K) : TF(B, K, N), tC = TF(C, 1, N), tC3 = TF(C3, 1, N);
          int nt = omp_get_max_threads();
          omp_set_num_threads(1);
          TU_REQUIRE_OK(cpu()->gemm(cpu(), 0, tb, 1, N, K, alpha, &tA, &tB, beta, &tC));
          omp_set_num_threads(3);
          TU_REQUIRE_OK(cpu()->gemm(cpu(), 0, tb, 1, N, K, alpha, &tA, &tB, beta, &tC3));
          omp_set_num_threads(nt);
          CK_NERR(C, ref, (size_t)N, TOL_F32);
          if (tb)
            ck_assert_msg(memcmp(C, C3, sizeof(float) * (size_t)N) == 0, "N %lld K %lld: threads",
                          (long long)N, (long long)K);
        }
}
END_TEST

START_TEST(test_gemm_k0_and_3d) {
  /* K = 0: C = beta * C exactly; beta = 0 overwrites even NaN (BLAS semantics). */
  float C[6] = {1, 2, 3, 4, 5, 6}, A[1], B[1];
  qat_tensor tA = TF(A, 2, 0), tB = TF(B, 0, 3), tC = TF(C, 2, 3);
  TU_REQUIRE_OK(cpu()->gemm(cpu(), 0, 0, 2, 3, 0, 1.0f, &tA, &tB, 0.5f, &tC));
  for (int i = 0; i < 6; i++) ck_assert_float_eq(C[i], 0.5f * (float)(i + 1));
  C[2] = NAN;
  TU_REQUIRE_OK(cpu()->gemm(cpu(), 0, 0, 2, 3, 0, 1.0f, &tA, &tB, 0.0f, &tC));
  for (int i = 0; i < 6; i++) ck_assert_float_eq(C[i], 0.0f);
  /* activations [B, T, C] pass as [B*T, C]: y = x @ W^T with x [2, 3, 5], W [4, 5] */
  float *x = tc_randn(3, 30, 1.0f), *W = tc_randn(4, 20, 1.0f), *y = tc_nanf(24);
  double *ref = tc_d(24);
  for (int n = 0; n < 6; n++)
    for (int o = 0; o < 4; o++) {
      double s = 0;
      for (int c = 0; c < 5; c++) s += (double)x[n * 5 + c] * W[o * 5 + c];
      ref[n * 4 + o] = s;
    }
  qat_tensor tx = TF(x, 2, 3, 5), tW = TF(W, 4, 5), ty = TF(y, 2, 3, 4);
  TU_REQUIRE_OK(cpu()->gemm(cpu(), 0, 1, 6, 4, 5, 1.0f, &tx, &tW, 0.0f, &ty));
  CK_NERR(y, ref, 24, TOL_F32);
}
END_TEST

START_TEST(test_gemm_bad) {
  float *A = tc_randn(1, 35, 1), *B = tc_randn(2, 35, 1), *C = tc_f(49);
  qat_tensor tA = TF(A, 7, 5), tB = TF(B, 5, 7), tC = TF(C, 7, 7);
  /* numel disagreement */
  CK_FAILS(cpu()->gemm(cpu(), 0, 0, 7, 7, 4, 1, &tA, &tB, 0, &tC), QAT_EINVAL, "gemm: A");
  /* A [7, 5] read as stored [K=5, M=7] (ta = 1): same numel, wrong row length */
  CK_FAILS(cpu()->gemm(cpu(), 1, 0, 7, 7, 5, 1, &tA, &tB, 0, &tC), QAT_EINVAL, "last dim");
  CK_FAILS(cpu()->gemm(cpu(), 0, 0, -1, 7, 5, 1, &tA, &tB, 0, &tC), QAT_EINVAL, "negative");
  /* C aliasing an input */
  qat_tensor tC2 = TF(A, 7, 5), tB2 = TF(B, 5, 5);
  CK_FAILS(cpu()->gemm(cpu(), 0, 0, 7, 5, 5, 1, &tA, &tB2, 0, &tC2), QAT_EINVAL, "overlaps");
  qat_tensor tbf = qat_view(A, QAT_BF16, QAT_DEV_CPU, 2, (int64_t[]){7, 5});
  CK_FAILS(cpu()->gemm(cpu(), 0, 0, 7, 7, 5, 1, &tbf, &tB, 0, &tC), QAT_EUNSUPPORTED, "BF16");
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "gemm"));
  qat_tensor tgpu = tA;
  tgpu.device = QAT_DEV_CUDA;
  CK_FAILS(cpu()->gemm(cpu(), 0, 0, 7, 7, 5, 1, &tgpu, &tB, 0, &tC), QAT_EINVAL, "cpu device");
  CK_FAILS(cpu()->gemm(cpu(), 0, 0, 7, 7, 5, 1, NULL, &tB, 0, &tC), QAT_EINVAL, "NULL");
}
END_TEST

/* ---- axpy, scale, sumsq -------------------------------------------------------------------- */
START_TEST(test_axpy_scale_sumsq) {
  const size_t n = 1000003; /* odd and above the threading threshold */
  float *x = tc_randn(5, n, 1.0f), *y = tc_randn(6, n, 1.0f);
  double *ref = tc_d(n);
  for (size_t i = 0; i < n; i++) ref[i] = (double)y[i] + 0.37 * (double)x[i];
  qat_tensor tx = TF(x, (int64_t)n), ty = TF(y, (int64_t)n);
  TU_REQUIRE_OK(cpu()->axpy(cpu(), 0.37f, &tx, &ty)); /* += */
  CK_NERR(y, ref, n, TOL_F32);
  for (size_t i = 0; i < n; i++) ref[i] = -2.5 * (double)x[i];
  TU_REQUIRE_OK(cpu()->scale(cpu(), -2.5f, &tx));
  CK_NERR(x, ref, n, TOL_F32);
  double s = 0, got;
  for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
  TU_REQUIRE_OK(cpu()->sumsq(cpu(), &tx, &got));
  /* double sums of F32 squares (exact products) in another order: ~n * 1e-16 relative */
  ck_assert_msg(fabs(got - s) <= 1e-10 * s, "sumsq %.17g vs %.17g", got, s);
  /* determinism: the same bits on 1 and 3 threads */
  double g1, g3;
  omp_set_num_threads(1);
  TU_REQUIRE_OK(cpu()->sumsq(cpu(), &tx, &g1));
  omp_set_num_threads(3);
  TU_REQUIRE_OK(cpu()->sumsq(cpu(), &tx, &g3));
  omp_set_num_threads(2);
  ck_assert(memcmp(&g1, &g3, sizeof g1) == 0);
  /* NaN and Inf propagate; empty tensor sums to 0 */
  x[17] = INFINITY;
  TU_REQUIRE_OK(cpu()->sumsq(cpu(), &tx, &got));
  ck_assert(isinf(got));
  x[999] = NAN;
  TU_REQUIRE_OK(cpu()->sumsq(cpu(), &tx, &got));
  ck_assert(isnan(got));
  qat_tensor te = TF(x, 0);
  TU_REQUIRE_OK(cpu()->sumsq(cpu(), &te, &got));
  ck_assert(got == 0.0);
  qat_tensor t7 = TF(x, 7);
  CK_FAILS(cpu()->axpy(cpu(), 1.0f, &t7, &ty), QAT_EINVAL, "axpy: x");
  qat_tensor ti = TI(x, 7);
  CK_FAILS(cpu()->scale(cpu(), 1.0f, &ti), QAT_EUNSUPPORTED, "I32");
}
END_TEST

/* ---- bias -------------------------------------------------------------------------------- */
START_TEST(test_bias) {
  const int64_t N = 7, C = 13;
  float *y = tc_randn(7, N * C, 1.0f), *b = tc_randn(8, C, 1.0f);
  double *ref = tc_d(N * C);
  for (int64_t i = 0; i < N * C; i++) ref[i] = (double)y[i] + b[i % C];
  qat_tensor ty = TF(y, N, C), tb = TF(b, C);
  TU_REQUIRE_OK(cpu()->bias_fwd(cpu(), &ty, &tb)); /* += */
  CK_NERR(y, ref, N * C, TOL_F32);
  /* bias_bwd accumulates into a prefilled db */
  float *db = tc_randn(9, C, 1.0f);
  double *rb = tc_d(C);
  for (int64_t c = 0; c < C; c++) {
    rb[c] = db[c];
    for (int64_t n = 0; n < N; n++) rb[c] += y[n * C + c];
  }
  qat_tensor tdb = TF(db, C);
  TU_REQUIRE_OK(cpu()->bias_bwd(cpu(), &ty, &tdb));
  CK_NERR(db, rb, C, TOL_F32);
  qat_tensor tb12 = TF(b, 12);
  CK_FAILS(cpu()->bias_fwd(cpu(), &ty, &tb12), QAT_EINVAL, "bias_fwd: b");
  CK_FAILS(cpu()->bias_bwd(cpu(), &ty, &tb12), QAT_EINVAL, "bias_bwd: db");
}
END_TEST

START_TEST(test_bias_bwd_deterministic) {
  const int64_t N = 3001, C = 197;
  float *dy = tc_randn(11, N * C, 1.0f), *d1 = tc_f(C), *d3 = tc_f(C);
  qat_tensor tdy = TF(dy, N, C), t1 = TF(d1, C), t3 = TF(d3, C);
  omp_set_num_threads(1);
  TU_REQUIRE_OK(cpu()->bias_bwd(cpu(), &tdy, &t1));
  omp_set_num_threads(3);
  TU_REQUIRE_OK(cpu()->bias_bwd(cpu(), &tdy, &t3));
  omp_set_num_threads(2);
  CK_SAME_BITS(d1, d3, C);
}
END_TEST

/* ---- embedding --------------------------------------------------------------------------- */
typedef struct emb_ctx {
  qat_tensor *tok, *tab, *out;
  float *outp, *tabp;
  const double *R;
  const int32_t *ids;
  double *tabd;
  int64_t N, C;
} emb_ctx;

static double emb_loss_op(void *p) {
  emb_ctx *c = p;
  TU_REQUIRE_OK(cpu()->embedding_fwd(cpu(), c->tok, c->tab, c->out));
  return dot_fd(c->outp, c->R, (size_t)(c->N * c->C));
}
static double emb_loss_ref(void *p) {
  emb_ctx *c = p;
  double s = 0;
  for (int64_t n = 0; n < c->N; n++)
    for (int64_t j = 0; j < c->C; j++) s += c->tabd[c->ids[n] * c->C + j] * c->R[n * c->C + j];
  return s;
}

START_TEST(test_embedding) {
  const int64_t B = 2, T = 5, V = 11, C = 13, N = B * T;
  int32_t ids[10] = {3, 0, 10, 3, 7, 3, 10, 1, 0, 5}; /* repeats: scatter-add must sum them */
  float *tab = tc_randn(12, V * C, 1.0f), *out = tc_nanf(N * C);
  qat_tensor tt = TI(ids, B, T), ttab = TF(tab, V, C), tout = TF(out, B, T, C);
  TU_REQUIRE_OK(cpu()->embedding_fwd(cpu(), &tt, &ttab, &tout));
  for (int64_t n = 0; n < N; n++)
    for (int64_t j = 0; j < C; j++) ck_assert_float_eq(out[n * C + j], tab[ids[n] * C + j]);
  /* backward: gradient of L = sum(out * R) w.r.t. the table, accumulated onto a prefilled one */
  float *Rf = tc_randn(13, N * C, 1.0f);
  double *R = tc_tod(Rf, N * C);
  float *dtab = tc_randn(14, V * C, 1.0f), *dtab0 = tc_copyf(dtab, V * C);
  qat_tensor tR = TF(Rf, B, T, C), tdtab = TF(dtab, V, C);
  TU_REQUIRE_OK(cpu()->embedding_bwd(cpu(), &tt, &tR, &tdtab));
  emb_ctx ctx = {&tt, &ttab, &tout, out, tab, R, ids, tc_tod(tab, V * C), N, C};
  double *g = tc_d(V * C);
  fd_double(ctx.tabd, V * C, 1e-5, emb_loss_ref, &ctx, g);
  for (int64_t i = 0; i < V * C; i++) dtab[i] -= dtab0[i]; /* += semantics: remove the prefill */
  CK_NERR(dtab, g, V * C, TOL_F32);
  fd_float(tab, V * C, 1e-3f, emb_loss_op, &ctx, g);
  CK_NERR(dtab, g, V * C, TOL_FD_F32);
  /* an id out of range is refused, named, and nothing is written */
  ids[6] = 11;
  float *before = tc_copyf(tdtab.data, V * C);
  CK_FAILS(cpu()->embedding_bwd(cpu(), &tt, &tR, &tdtab), QAT_EINVAL, "token id 11");
  ck_assert(memcmp(before, dtab, V * C * sizeof(float)) == 0);
  ids[6] = -1;
  CK_FAILS(cpu()->embedding_fwd(cpu(), &tt, &ttab, &tout), QAT_EINVAL, "token id -1");
  ids[6] = 2;
  qat_tensor tbad = TF(out, N, C - 1);
  CK_FAILS(cpu()->embedding_fwd(cpu(), &tt, &ttab, &tbad), QAT_EINVAL, "embedding_fwd: x");
  qat_tensor tf = TF(ids, B, T);
  CK_FAILS(cpu()->embedding_fwd(cpu(), &tf, &ttab, &tout), QAT_EUNSUPPORTED, "F32");
}
END_TEST

START_TEST(test_embedding_bwd_deterministic) {
  const int64_t N = 2000, V = 50, C = 150;
  int32_t *ids = tc_alloc(N * sizeof(int32_t));
  tu_rng r = {21};
  for (int64_t n = 0; n < N; n++) ids[n] = (int32_t)(tu_next(&r) % V);
  float *g = tc_randn(22, N * C, 1.0f), *d1 = tc_f(V * C), *d3 = tc_f(V * C);
  qat_tensor tt = TI(ids, N), tg = TF(g, N, C), t1 = TF(d1, V, C), t3 = TF(d3, V, C);
  omp_set_num_threads(1);
  TU_REQUIRE_OK(cpu()->embedding_bwd(cpu(), &tt, &tg, &t1));
  omp_set_num_threads(3);
  TU_REQUIRE_OK(cpu()->embedding_bwd(cpu(), &tt, &tg, &t3));
  omp_set_num_threads(2);
  CK_SAME_BITS(d1, d3, V * C);
}
END_TEST

/* ---- AdamW ------------------------------------------------------------------------------- */
START_TEST(test_adamw_closed_form) {
  const int64_t n = 37;
  const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  float *p = tc_randn(31, n, 1.0f), *m = tc_f(n), *v = tc_f(n);
  double *P = tc_tod(p, n), *Mm = tc_d(n), *Vv = tc_d(n), *P0 = tc_tod(p, n);
  qat_tensor tp = TF(p, n), tm = TF(m, n), tv = TF(v, n);
  for (int64_t t = 1; t <= 3; t++) {
    float *g = tc_randn(40 + t, n, 1.0f);
    g[0] = 0.0f; /* a zero gradient: only the decay and the momentum move it */
    qat_tensor tg = TF(g, n);
    TU_REQUIRE_OK(cpu()->adamw(cpu(), &tp, &tg, &tm, &tv, lr, b1, b2, eps, wd, t));
    for (int64_t i = 0; i < n; i++) { /* torch.optim.AdamW, written out */
      P[i] -= (double)lr * wd * P[i];
      Mm[i] = b1 * Mm[i] + (1 - (double)b1) * g[i];
      Vv[i] = b2 * Vv[i] + (1 - (double)b2) * (double)g[i] * g[i];
      double mh = Mm[i] / (1 - pow(b1, (double)t)), vh = Vv[i] / (1 - pow(b2, (double)t));
      P[i] -= lr * mh / (sqrt(vh) + eps);
    }
  }
  CK_NERR(p, P, n, TOL_F32);
  CK_NERR(m, Mm, n, TOL_F32);
  CK_NERR(v, Vv, n, TOL_F32);
  /* the update itself (p - p0, ~3 lr) is right to F32 rounding of p (~1e-7 / 3e-2) */
  double *dP = tc_d(n);
  float *dp = tc_f(n);
  for (int64_t i = 0; i < n; i++) {
    dP[i] = P[i] - P0[i];
    dp[i] = (float)((double)p[i] - P0[i]);
  }
  CK_NERR(dp, dP, n, 1e-4);
  float *g = tc_f(n);
  qat_tensor tg = TF(g, n), tg5 = TF(g, 5);
  CK_FAILS(cpu()->adamw(cpu(), &tp, &tg, &tm, &tv, lr, b1, b2, eps, wd, 0), QAT_EINVAL, "step");
  CK_FAILS(cpu()->adamw(cpu(), &tp, &tg5, &tm, &tv, lr, b1, b2, eps, wd, 1), QAT_EINVAL,
           "adamw: grad");
}
END_TEST

/* convert between the 16-bit float types (through an exact F32 step, one rounding) and within one
 * type (a copy); hand-computed encodings: F16 1.0, 1/3, the smallest subnormal, -0; BF16 pi (as
 * bf16), its max finite (overflows F16 to +Inf), 1.0. */
START_TEST(test_convert_16bit_pairs) {
  qat_backend *be = qat_backend_cpu();
  uint16_t h[4] = {0x3c00, 0x3555, 0x0001, 0x8000}, hb[4], want_hb[4] = {0x3f80, 0x3eab, 0x3380, 0x8000};
  uint16_t b[3] = {0x4049, 0x7f7f, 0x3f80}, bh[3], want_bh[3] = {0x4248, 0x7c00, 0x3c00};
  qat_tensor th = qat_view1(h, QAT_F16, QAT_DEV_CPU, 4), thb = qat_view1(hb, QAT_BF16, QAT_DEV_CPU, 4);
  qat_tensor tb = qat_view1(b, QAT_BF16, QAT_DEV_CPU, 3), tbh = qat_view1(bh, QAT_F16, QAT_DEV_CPU, 3);
  TU_REQUIRE_OK(QAT_OP(be, convert, &thb, &th));
  TU_REQUIRE_OK(QAT_OP(be, convert, &tbh, &tb));
  ck_assert_mem_eq(hb, want_hb, sizeof hb);
  ck_assert_mem_eq(bh, want_bh, sizeof bh);
  uint16_t c[4];
  qat_tensor tc = qat_view1(c, QAT_F16, QAT_DEV_CPU, 4);
  TU_REQUIRE_OK(QAT_OP(be, convert, &tc, &th));
  ck_assert_mem_eq(c, h, sizeof c);
  int32_t iv[4];
  qat_tensor ti = qat_view1(iv, QAT_I32, QAT_DEV_CPU, 4);
  ck_assert_int_eq(QAT_OP(be, convert, &ti, &th), QAT_EUNSUPPORTED);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cpu_ops");
  TCase *tc = tcase_create("cpu_ops");
  tcase_add_checked_fixture(tc, NULL, tc_free_all);
  tcase_add_test(tc, test_gemm_transposes);
  tcase_add_test(tc, test_convert_16bit_pairs);
  tcase_add_test(tc, test_gemm_m1);
  tcase_add_test(tc, test_gemm_k0_and_3d);
  tcase_add_test(tc, test_gemm_bad);
  tcase_add_test(tc, test_axpy_scale_sumsq);
  tcase_add_test(tc, test_bias);
  tcase_add_test(tc, test_bias_bwd_deterministic);
  tcase_add_test(tc, test_embedding);
  tcase_add_test(tc, test_embedding_bwd_deterministic);
  tcase_add_test(tc, test_adamw_closed_form);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
