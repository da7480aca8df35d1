/* Distillation loss: gradient vs central finite differences (double), alpha = 0 reduces to
 * cross-entropy, identical teacher and student give zero KL, ignored targets. */
#include "testutil.h"
#include "train/distill.h"

#include <math.h>
#include <stdlib.h>

enum { N = 5, V = 7 };

static double loss_at(const float *s, const float *t, const int32_t *y, double T, double a) {
  float d[N * V];
  double l = 0;
  int64_t cnt = 0;
  TU_REQUIRE_OK(qat_distill_loss(s, t, y, N, V, T, a, 1.0, d, &l, NULL, &cnt));
  return l;
}

START_TEST(test_distill_grad_fd) {
  tu_rng r = {42};
  float s[N * V], t[N * V], d[N * V];
  int32_t y[N] = {0, 3, -1, 6, 2};
  tu_fill_normal(&r, s, N * V, 2.0f);
  tu_fill_normal(&r, t, N * V, 2.0f);
  double temps[3] = {1.0, 2.0, 0.5}, alphas[3] = {0.5, 1.0, 0.0};
  for (int c = 0; c < 3; c++) {
    double l = 0, ce = 0;
    int64_t cnt = 0;
    TU_REQUIRE_OK(qat_distill_loss(s, t, y, N, V, temps[c], alphas[c], 1.0, d, &l, &ce, &cnt));
    ck_assert_int_eq(cnt, 4);
    double maxerr = 0, maxg = 0;
    for (int i = 0; i < N * V; i++) {
      float sp[N * V], sm[N * V];
      for (int k = 0; k < N * V; k++) sp[k] = sm[k] = s[k];
      /* eps 1e-2 in float logits: FD truncation error O(eps^2 * f''') ~ 1e-4 relative; the loss
       * is evaluated in double inside, so rounding of the perturbation is the only float error */
      const float eps = 1e-2f;
      sp[i] += eps;
      sm[i] -= eps;
      double fd = (loss_at(sp, t, y, temps[c], alphas[c]) - loss_at(sm, t, y, temps[c], alphas[c])) /
                  ((double)sp[i] - sm[i]);
      maxerr = fmax(maxerr, fabs(fd - d[i]));
      maxg = fmax(maxg, fabs(d[i]));
    }
    ck_assert_msg(maxerr < 1e-3 * fmax(maxg, 1.0), "T %g alpha %g: max |fd - grad| %g (max grad %g)",
                  temps[c], alphas[c], maxerr, maxg);
    for (int k = 0; k < V; k++) ck_assert_float_eq(d[2 * V + k], 0.0f); /* ignored row */
  }
}
END_TEST

START_TEST(test_distill_limits) {
  tu_rng r = {7};
  float s[N * V], d[N * V];
  int32_t y[N] = {1, 2, 3, 4, 5};
  tu_fill_normal(&r, s, N * V, 1.0f);
  /* alpha = 0: plain cross-entropy, computed independently here */
  double l = 0, ce = 0, ref = 0;
  int64_t cnt;
  TU_REQUIRE_OK(qat_distill_loss(s, s, y, N, V, 1.0, 0.0, 1.0, d, &l, &ce, &cnt));
  for (int i = 0; i < N; i++) {
    double mx = -INFINITY, z = 0;
    for (int k = 0; k < V; k++) mx = fmax(mx, s[i * V + k]);
    for (int k = 0; k < V; k++) z += exp(s[i * V + k] - mx);
    ref += mx + log(z) - s[i * V + y[i]];
  }
  ck_assert_double_eq_tol(l, ref, 1e-9 * ref);
  ck_assert_double_eq_tol(ce, ref, 1e-9 * ref);
  /* teacher == student, alpha = 1: KL is zero and so is the gradient */
  TU_REQUIRE_OK(qat_distill_loss(s, s, y, N, V, 2.0, 1.0, 1.0, d, &l, &ce, &cnt));
  ck_assert_double_eq_tol(l, 0.0, 1e-12);
  for (int i = 0; i < N * V; i++) ck_assert_double_eq_tol(d[i], 0.0, 1e-7);
  /* bad arguments */
  ck_assert_int_eq(qat_distill_loss(s, s, y, N, V, 0.0, 0.5, 1.0, d, &l, &ce, &cnt), QAT_EINVAL);
  ck_assert_int_eq(qat_distill_loss(s, s, y, N, V, 1.0, 1.5, 1.0, d, &l, &ce, &cnt), QAT_EINVAL);
  int32_t bad[N] = {0, 0, 99, 0, 0};
  ck_assert_int_eq(qat_distill_loss(s, s, bad, N, V, 1.0, 0.5, 1.0, d, &l, &ce, &cnt), QAT_EINVAL);
}
END_TEST

int main(void) {
  Suite *s = suite_create("distill");
  TCase *tc = tcase_create("distill");
  tcase_add_test(tc, test_distill_grad_fd);
  tcase_add_test(tc, test_distill_limits);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
