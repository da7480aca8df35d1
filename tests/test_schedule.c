/* Learning-rate schedules against values worked out by hand (schedule.h gives the formulas).
 * Tolerance: 1e-15 relative. Values that involve only + - * / of short decimals are within a few
 * ulps; cos(pi * p) for p = 1/3, 1/2, 1 is within 1 ulp of 0.5, 0, -1. */
#include "testutil.h"
#include "train/schedule.h"

#include <math.h>

static void near(double got, double want) {
  ck_assert_msg(fabs(got - want) <= 1e-15 * fabs(want) + 1e-300, "got %.17g want %.17g", got, want);
}

START_TEST(test_warmup) {
  /* warmup 4: (step + 1) / 4 of base, reaching base at step 3; base again at step 4 */
  for (int s = 0; s < 3; s++) {
    qat_lr_schedule sc = (qat_lr_schedule)s;
    near(qat_lr_at(sc, 2.0, 0, 14, 4, 0.05), 0.5);
    near(qat_lr_at(sc, 2.0, 1, 14, 4, 0.05), 1.0);
    near(qat_lr_at(sc, 2.0, 2, 14, 4, 0.05), 1.5);
    near(qat_lr_at(sc, 2.0, 3, 14, 4, 0.05), 2.0);
    near(qat_lr_at(sc, 2.0, 4, 14, 4, 0.05), 2.0); /* first decay step: p = 0 */
    near(qat_lr_at(sc, 2.0, -3, 14, 4, 0.05), 0.5); /* negative step counts as 0 */
  }
}
END_TEST

START_TEST(test_cosine) {
  /* total 14, warmup 4: decay over steps 4..13, p = (step - 4) / 9, min = 0.05 */
  near(qat_lr_at(QAT_SCHED_COSINE, 1.0, 7, 14, 4, 0.05), 0.05 + 0.95 * 0.75);   /* p = 1/3 */
  near(qat_lr_at(QAT_SCHED_COSINE, 1.0, 13, 14, 4, 0.05), 0.05);               /* last step */
  near(qat_lr_at(QAT_SCHED_COSINE, 1.0, 100, 14, 4, 0.05), 0.05);              /* past the end */
  /* no warmup, 11 steps: p = step / 10; the midpoint is halfway between base and min */
  near(qat_lr_at(QAT_SCHED_COSINE, 1e-3, 0, 11, 0, 0.1), 1e-3);
  near(qat_lr_at(QAT_SCHED_COSINE, 1e-3, 5, 11, 0, 0.1), 5.5e-4);
  near(qat_lr_at(QAT_SCHED_COSINE, 1e-3, 10, 11, 0, 0.1), 1e-4);
  /* cosine is monotone non-increasing after warmup */
  double prev = INFINITY;
  for (int s = 0; s < 1000; s++) {
    double lr = qat_lr_at(QAT_SCHED_COSINE, 1.0, s, 1000, 0, 0.0);
    ck_assert(lr <= prev && lr >= 0);
    prev = lr;
  }
  ck_assert_double_eq(prev, 0.0);
}
END_TEST

START_TEST(test_linear_constant) {
  near(qat_lr_at(QAT_SCHED_LINEAR, 1.0, 7, 14, 4, 0.05), 1.0 - 0.95 / 3.0);
  near(qat_lr_at(QAT_SCHED_LINEAR, 1.0, 13, 14, 4, 0.05), 0.05);
  near(qat_lr_at(QAT_SCHED_LINEAR, 4.0, 5, 11, 0, 0.5), 3.0); /* 4 - 2 * 0.5 */
  near(qat_lr_at(QAT_SCHED_CONSTANT, 3e-5, 0, 100, 0, 0.05), 3e-5);
  near(qat_lr_at(QAT_SCHED_CONSTANT, 3e-5, 99, 100, 0, 0.05), 3e-5);
  near(qat_lr_at(QAT_SCHED_CONSTANT, 3e-5, 1, 100, 10, 0.05), 6e-6); /* still warms up */
}
END_TEST

START_TEST(test_short_runs) {
  /* a 1-step run, or warmup leaving a single decay step, runs that step at base (no decay) */
  near(qat_lr_at(QAT_SCHED_COSINE, 1.0, 0, 1, 0, 0.05), 1.0);
  near(qat_lr_at(QAT_SCHED_LINEAR, 1.0, 4, 5, 4, 0.05), 1.0);
  /* two decay steps: base then min */
  near(qat_lr_at(QAT_SCHED_COSINE, 1.0, 0, 2, 0, 0.05), 1.0);
  near(qat_lr_at(QAT_SCHED_COSINE, 1.0, 1, 2, 0, 0.05), 0.05);
  ck_assert_str_eq(qat_lr_schedule_name(QAT_SCHED_LINEAR), "linear");
}
END_TEST

int main(void) {
  Suite *s = suite_create("schedule");
  TCase *tc = tcase_create("schedule");
  tcase_add_test(tc, test_warmup);
  tcase_add_test(tc, test_cosine);
  tcase_add_test(tc, test_linear_constant);
  tcase_add_test(tc, test_short_runs);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
