/* CPU kd_xent op (backend/cpu/kd.c) against the double-precision host reference qat_distill_loss
 * (train/distill.c, itself checked by finite differences in test_distill.c), on odd shapes, for
 * several temperatures and alphas (0 and 1 included), ignored targets and masked (-inf) teacher
 * logits; aliasing (dlogits == student) must be bit-identical to a separate output; finite
 * differences of the op's own loss; alpha = 0 against the xent op; validation errors.
 *
 * Tolerances (the op computes elementwise in F32 with double row sums, the reference all in double):
 * - losses: |op - ref| <= 1e-6 * m per row, where m = (1 - alpha) (|ms| + |s_y| + |log Z1|)
 *   + alpha T^2 (max |t' - s'| + |log ZtT| + |log ZsT|) bounds the magnitude of the terms that
 *   are summed. Each term carries a few F32 roundings (expf within an ulp, the shifted logits
 *   rounded once), i.e. a few 6e-8 relative; 1e-6 is ~16 ulps of slack, while a wrong factor of T
 *   or a missing term is off by O(m).
 * - dlogits: normalized error (max |op - ref| / max |ref|) <= 1e-5: each element is a combination
 *   of probabilities computed with F32 expf (an ulp each) and rounded once to F32. */
#include "testutil.h"
#include "train/distill.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static qat_backend *cpu(void) { return qat_backend_cpu(); }

static float *fvec(size_t n) {
  float *p = calloc(n ? n : 1, sizeof(float));
  ck_assert_ptr_nonnull(p);
  return p;
}

static qat_tensor t2(float *x, int64_t N, int64_t V) {
  return qat_view2(x, QAT_F32, QAT_DEV_CPU, N, V);
}
static qat_tensor t1f(float *x, int64_t N) { return qat_view1(x, QAT_F32, QAT_DEV_CPU, N); }
static qat_tensor t1i(int32_t *x, int64_t N) { return qat_view1(x, QAT_I32, QAT_DEV_CPU, N); }

/* The term magnitude m of a row (see the tolerance note at the top). */
static double row_mag(const float *s, const float *t, int64_t V, int32_t y, double T, double a) {
  double ms = -INFINITY, mt = -INFINITY, z1 = 0, zs = 0, zt = 0, dmax = 0;
  for (int64_t j = 0; j < V; j++) ms = fmax(ms, s[j]), mt = fmax(mt, t[j]);
  for (int64_t j = 0; j < V; j++) {
    double sj = (s[j] - ms) / T, tj = (t[j] - mt) / T;
    z1 += exp(s[j] - ms), zs += exp(sj), zt += exp(tj);
    if (isfinite(tj)) dmax = fmax(dmax, fabs(tj - sj));
  }
  return (1 - a) * (fabs(ms) + fabs(s[y]) + fabs(log(z1))) +
         a * T * T * (dmax + fabs(log(zt)) + fabs(log(zs)));
}

/* One comparison case: N rows of V, targets with ignored rows (every 3rd) and V - 1 on the last;
 * mask: some teacher logits are -inf. Also checks aliasing and the loss-only call. */
static void ref_case(int64_t N, int64_t V, float T, float alpha, int mask, uint64_t seed) {
  tu_rng r = {seed};
  size_t nv = (size_t)(N * V);
  float *s = fvec(nv), *t = fvec(nv), *d = fvec(nv), *dref = fvec(nv), *alias = fvec(nv);
  float *l = fvec(N), *l2 = fvec(N), *l3 = fvec(N);
  int32_t *y = malloc((size_t)N * sizeof *y);
  ck_assert_ptr_nonnull(y);
  tu_fill_normal(&r, s, nv, 3.0f);
  tu_fill_normal(&r, t, nv, 3.0f);
  for (int64_t i = 0; i < N; i++) y[i] = i % 3 == 1 ? -1 : (int32_t)(tu_next(&r) % (uint64_t)V);
  y[N - 1] = (int32_t)(V - 1);
  if (mask)
    for (int64_t i = 0; i < N; i++) t[i * V + (i * 5) % V] = -INFINITY;
  const float dscale = 1.0f / (float)N;
  qat_tensor S = t2(s, N, V), Tt = t2(t, N, V), D = t2(d, N, V), Y = t1i(y, N), L = t1f(l, N);
  TU_REQUIRE_OK(QAT_OP(cpu(), kd_xent, &S, &Tt, &Y, T, alpha, dscale, &L, &D));

  /* reference: the whole gradient at once, losses row by row (scale 1) */
  double tot = 0, maxe = 0;
  int64_t cnt = 0;
  TU_REQUIRE_OK(qat_distill_loss(s, t, y, N, V, T, alpha, dscale, dref, &tot, NULL, &cnt));
  for (int64_t i = 0; i < N; i++) {
    double li = 0;
    TU_REQUIRE_OK(qat_distill_loss(s + i * V, t + i * V, y + i, 1, V, T, alpha, 1.0, NULL, &li,
                                   NULL, NULL));
    ck_assert(isfinite(li));
    if (y[i] < 0) {
      ck_assert_float_eq(l[i], 0.0f);
      for (int64_t j = 0; j < V; j++) ck_assert_float_eq(d[i * V + j], 0.0f);
      continue;
    }
    double m = row_mag(s + i * V, t + i * V, V, y[i], T, alpha);
    double e = fabs(l[i] - li);
    ck_assert_msg(e <= 1e-6 * m, "N%lld V%lld T %g alpha %g row %lld: loss %.9g ref %.9g (m %g)",
                  (long long)N, (long long)V, T, alpha, (long long)i, l[i], li, m);
    maxe = fmax(maxe, e / m);
  }
  double ne = tu_nerr(d, dref, nv);
  printf("  kd N%-3lld V%-5lld T %-4g alpha %-4g%s: loss err/m %.2g, dlogits nerr %.2g\n",
         (long long)N, (long long)V, T, alpha, mask ? " masked" : "", maxe, ne);
  ck_assert_msg(ne <= 1e-5, "dlogits nerr %g", ne);

  /* aliased: dlogits written over a copy of the student, bit for bit the same */
  memcpy(alias, s, nv * sizeof(float));
  qat_tensor A = t2(alias, N, V), L2 = t1f(l2, N);
  TU_REQUIRE_OK(QAT_OP(cpu(), kd_xent, &A, &Tt, &Y, T, alpha, dscale, &L2, &A));
  ck_assert(memcmp(alias, d, nv * sizeof(float)) == 0);
  ck_assert(memcmp(l2, l, (size_t)N * sizeof(float)) == 0);
  /* loss only: same losses */
  qat_tensor L3 = t1f(l3, N);
  TU_REQUIRE_OK(QAT_OP(cpu(), kd_xent, &S, &Tt, &Y, T, alpha, dscale, &L3, NULL));
  ck_assert(memcmp(l3, l, (size_t)N * sizeof(float)) == 0);

  free(s), free(t), free(d), free(dref), free(alias), free(l), free(l2), free(l3), free(y);
}

START_TEST(test_kd_vs_reference) {
  const float temps[4] = {1.0f, 2.0f, 0.5f, 4.0f}, alphas[4] = {0.0f, 0.3f, 0.9f, 1.0f};
  uint64_t seed = 1;
  for (int a = 0; a < 4; a++)
    for (int k = 0; k < 4; k++) ref_case(7, 13, temps[k], alphas[a], 0, seed++);
  ref_case(7, 13, 2.0f, 0.5f, 1, seed++);
  ref_case(7, 1000, 1.0f, 0.5f, 0, seed++);
  ref_case(7, 1000, 4.0f, 0.7f, 1, seed++);
  ref_case(7, 1000, 0.5f, 1.0f, 0, seed++);
  ref_case(5, 1, 2.0f, 0.5f, 0, seed++); /* V = 1: both softmaxes are 1, loss and gradient 0 */
}
END_TEST

/* Sum of the op's per-row losses (scale 1). */
static double op_loss(float *s, float *t, int32_t *y, int64_t N, int64_t V, float T, float a) {
  float *l = fvec(N);
  qat_tensor S = t2(s, N, V), Tt = t2(t, N, V), Y = t1i(y, N), L = t1f(l, N);
  TU_REQUIRE_OK(QAT_OP(cpu(), kd_xent, &S, &Tt, &Y, T, a, 1.0f, &L, NULL));
  double sum = 0;
  for (int64_t i = 0; i < N; i++) sum += l[i];
  free(l);
  return sum;
}

/* Central differences of the op's own loss against its dlogits. eps = 1e-2: truncation O(eps^2)
 * ~1e-4 relative; the losses are F32 (an ulp of ~10 is 1e-6, /(2 eps) gives ~1e-4 absolute), so
 * 2e-3 * max(max |grad|, 1) separates a correct gradient from a wrong one (a T factor is off by
 * O(1)). */
START_TEST(test_kd_grad_fd) {
  enum { N = 3, V = 11 };
  const float temps[3] = {1.0f, 3.0f, 0.5f}, alphas[3] = {0.5f, 1.0f, 0.0f};
  tu_rng r = {99};
  float s[N * V], t[N * V], d[N * V];
  int32_t y[N] = {4, -1, 10};
  tu_fill_normal(&r, s, N * V, 2.0f);
  tu_fill_normal(&r, t, N * V, 2.0f);
  for (int c = 0; c < 3; c++) {
    qat_tensor S = t2(s, N, V), Tt = t2(t, N, V), D = t2(d, N, V), Y = t1i(y, N);
    TU_REQUIRE_OK(QAT_OP(cpu(), kd_xent, &S, &Tt, &Y, temps[c], alphas[c], 1.0f, NULL, &D));
    double maxerr = 0, maxg = 0;
    for (int i = 0; i < N * V; i++) {
      float sp[N * V], sm[N * V];
      memcpy(sp, s, sizeof s), memcpy(sm, s, sizeof s);
      const float eps = 1e-2f;
      sp[i] += eps, sm[i] -= eps;
      double fd = (op_loss(sp, t, y, N, V, temps[c], alphas[c]) -
                   op_loss(sm, t, y, N, V, temps[c], alphas[c])) /
                  ((double)sp[i] - sm[i]);
      maxerr = fmax(maxerr, fabs(fd - d[i]));
      maxg = fmax(maxg, fabs(d[i]));
    }
    printf("  kd fd T %g alpha %g: max |fd - grad| %.2g (max grad %.2g)\n", temps[c], alphas[c],
           maxerr, maxg);
    ck_assert_msg(maxerr <= 2e-3 * fmax(maxg, 1.0), "T %g alpha %g: max |fd - grad| %g",
                  temps[c], alphas[c], maxerr);
  }
}
END_TEST

/* alpha = 0 is plain cross-entropy: the xent op's results up to rounding (1e-6: same F32 terms,
 * the KL part is multiplied by 0); teacher == student with alpha = 1 gives zero loss and
 * gradient; a teacher shifted by a constant gives the same results (softmax invariance; 1e-5:
 * the shift of 50 is exact in F32 for these magnitudes only up to an ulp of 50 ~ 4e-6). */
START_TEST(test_kd_limits) {
  enum { N = 6, V = 29 };
  tu_rng r = {5};
  float s[N * V], t[N * V], ts[N * V], d[N * V], dx[N * V], l[N], lx[N];
  int32_t y[N] = {0, 28, -1, 3, 7, 11};
  tu_fill_normal(&r, s, N * V, 2.0f);
  tu_fill_normal(&r, t, N * V, 2.0f);
  qat_tensor S = t2(s, N, V), Tt = t2(t, N, V), D = t2(d, N, V), DX = t2(dx, N, V);
  qat_tensor Y = t1i(y, N), L = t1f(l, N), LX = t1f(lx, N);
  TU_REQUIRE_OK(QAT_OP(cpu(), kd_xent, &S, &Tt, &Y, 3.0f, 0.0f, 0.5f, &L, &D));
  TU_REQUIRE_OK(QAT_OP(cpu(), xent, &S, &Y, &LX, &DX, 0.5f));
  ck_assert_double_le(tu_nerr(l, lx, N), 1e-6);
  ck_assert_double_le(tu_nerr(d, dx, N * V), 1e-6);

  TU_REQUIRE_OK(QAT_OP(cpu(), kd_xent, &S, &S, &Y, 2.0f, 1.0f, 1.0f, &L, &D));
  for (int i = 0; i < N; i++) ck_assert_double_le(fabs(l[i]), 1e-6);
  for (int i = 0; i < N * V; i++) ck_assert_double_le(fabs(d[i]), 1e-7);

  TU_REQUIRE_OK(QAT_OP(cpu(), kd_xent, &S, &Tt, &Y, 2.0f, 0.6f, 1.0f, &L, &D));
  for (int i = 0; i < N * V; i++) ts[i] = t[i] + 50.0f;
  qat_tensor TS = t2(ts, N, V);
  TU_REQUIRE_OK(QAT_OP(cpu(), kd_xent, &S, &TS, &Y, 2.0f, 0.6f, 1.0f, &LX, &DX));
  ck_assert_double_le(tu_nerr(lx, l, N), 1e-5);
  ck_assert_double_le(tu_nerr(dx, d, N * V), 1e-5);

  /* leading dims: [2, 3, V] is N = 6 rows */
  float d3[N * V], l3[N];
  qat_tensor S3 = qat_view(s, QAT_F32, QAT_DEV_CPU, 3, (int64_t[]){2, 3, V});
  qat_tensor T3 = qat_view(t, QAT_F32, QAT_DEV_CPU, 3, (int64_t[]){2, 3, V});
  qat_tensor D3 = qat_view(d3, QAT_F32, QAT_DEV_CPU, 3, (int64_t[]){2, 3, V}), L3 = t1f(l3, N);
  TU_REQUIRE_OK(QAT_OP(cpu(), kd_xent, &S3, &T3, &Y, 2.0f, 0.6f, 1.0f, &L3, &D3));
  ck_assert(memcmp(d3, d, sizeof d) == 0);
  ck_assert(memcmp(l3, l, sizeof l) == 0);
}
END_TEST

/* Expect code and a message naming the op; the outputs must be untouched. */
static void expect_fail(qat_status got, qat_status want, const float *d, const float *l, int nd,
                        int nl, const char *what) {
  ck_assert_msg(got == want, "%s: got %s, want %s", what, qat_status_name(got),
                qat_status_name(want));
  ck_assert_msg(strstr(qat_last_error(), "kd_xent") != NULL, "%s: message '%s'", what,
                qat_last_error());
  for (int i = 0; i < nd; i++) ck_assert_float_eq(d[i], 7.0f);
  for (int i = 0; i < nl; i++) ck_assert_float_eq(l[i], 7.0f);
}

START_TEST(test_kd_validation) {
  enum { N = 4, V = 5 };
  float s[N * V], t[N * V], d[N * V], l[N];
  int32_t y[N] = {0, 1, -1, 4};
  for (int i = 0; i < N * V; i++) s[i] = (float)i * 0.1f, t[i] = (float)(i % 7), d[i] = 7.0f;
  for (int i = 0; i < N; i++) l[i] = 7.0f;
  qat_tensor S = t2(s, N, V), Tt = t2(t, N, V), D = t2(d, N, V), Y = t1i(y, N), L = t1f(l, N);
  const qat_backend *be = cpu();
#define KD(...) QAT_OP(be, kd_xent, __VA_ARGS__)
  expect_fail(KD(&S, &Tt, &Y, 0.0f, 0.5f, 1.0f, &L, &D), QAT_EINVAL, d, l, N * V, N, "T = 0");
  expect_fail(KD(&S, &Tt, &Y, -1.0f, 0.5f, 1.0f, &L, &D), QAT_EINVAL, d, l, N * V, N, "T < 0");
  expect_fail(KD(&S, &Tt, &Y, NAN, 0.5f, 1.0f, &L, &D), QAT_EINVAL, d, l, N * V, N, "T NaN");
  expect_fail(KD(&S, &Tt, &Y, INFINITY, 0.5f, 1.0f, &L, &D), QAT_EINVAL, d, l, N * V, N, "T inf");
  expect_fail(KD(&S, &Tt, &Y, 1.0f, -0.1f, 1.0f, &L, &D), QAT_EINVAL, d, l, N * V, N, "a < 0");
  expect_fail(KD(&S, &Tt, &Y, 1.0f, 1.5f, 1.0f, &L, &D), QAT_EINVAL, d, l, N * V, N, "a > 1");
  expect_fail(KD(&S, &Tt, &Y, 1.0f, NAN, 1.0f, &L, &D), QAT_EINVAL, d, l, N * V, N, "a NaN");
  int32_t y_hi[N] = {0, 5, 1, 2}, y_lo[N] = {0, 1, -2, 2};
  qat_tensor YH = t1i(y_hi, N), YL = t1i(y_lo, N);
  expect_fail(KD(&S, &Tt, &YH, 1.0f, 0.5f, 1.0f, &L, &D), QAT_EINVAL, d, l, N * V, N, "y = V");
  expect_fail(KD(&S, &Tt, &YL, 1.0f, 0.5f, 1.0f, &L, &D), QAT_EINVAL, d, l, N * V, N, "y = -2");
  qat_tensor Tbad = t2(t, V, N); /* same numel, transposed shape */
  expect_fail(KD(&S, &Tbad, &Y, 1.0f, 0.5f, 1.0f, &L, &D), QAT_EINVAL, d, l, N * V, N, "teacher");
  qat_tensor Ybad = t1i(y, N - 1), Lbad = t1f(l, N - 1), Dbad = t2(d, N - 1, V);
  expect_fail(KD(&S, &Tt, &Ybad, 1.0f, 0.5f, 1.0f, &L, &D), QAT_EINVAL, d, l, N * V, N, "targets");
  expect_fail(KD(&S, &Tt, &Y, 1.0f, 0.5f, 1.0f, &Lbad, &D), QAT_EINVAL, d, l, N * V, N, "losses");
  expect_fail(KD(&S, &Tt, &Y, 1.0f, 0.5f, 1.0f, &L, &Dbad), QAT_EINVAL, d, l, N * V, N, "dlogits");
  qat_tensor Yf = qat_view1(y, QAT_U32, QAT_DEV_CPU, N);
  expect_fail(KD(&S, &Tt, &Yf, 1.0f, 0.5f, 1.0f, &L, &D), QAT_EUNSUPPORTED, d, l, N * V, N,
              "targets dtype");
  qat_tensor Sb = qat_view2(s, QAT_BF16, QAT_DEV_CPU, N, V);
  expect_fail(KD(&Sb, &Tt, &Y, 1.0f, 0.5f, 1.0f, &L, &D), QAT_EUNSUPPORTED, d, l, N * V, N,
              "bf16 on cpu");
  qat_tensor Sg = S;
  Sg.device = QAT_DEV_CUDA;
  expect_fail(KD(&Sg, &Tt, &Y, 1.0f, 0.5f, 1.0f, &L, &D), QAT_EINVAL, d, l, N * V, N, "device");
  expect_fail(KD(NULL, &Tt, &Y, 1.0f, 0.5f, 1.0f, &L, &D), QAT_EINVAL, d, l, N * V, N, "NULL");
  /* dlogits over the teacher would change it while other rows still read it */
  memcpy(d, t, sizeof t);
  expect_fail(KD(&S, &Tt, &Y, 1.0f, 0.5f, 1.0f, &L, &Tt), QAT_EINVAL, NULL, l, 0, N, "alias t");
  ck_assert(memcmp(t, d, sizeof t) == 0);
#undef KD
}
END_TEST

int main(void) {
  Suite *s = suite_create("kd");
  TCase *tc = tcase_create("kd");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_kd_vs_reference);
  tcase_add_test(tc, test_kd_grad_fd);
  tcase_add_test(tc, test_kd_limits);
  tcase_add_test(tc, test_kd_validation);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
