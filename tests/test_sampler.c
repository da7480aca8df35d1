/* Window sampler: determinism, exact resume from (seed, counter), range, uniformity, agreement
 * with a plain sequential splitmix64, and the validation windows of REFERENCE.md section 5. */
#include "testutil.h"
#include "train/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Reference: the textbook sequential splitmix64 (state += gamma; output = mix(state)), started
 * from mix(seed). Output k must equal the sampler's counter-based word k. */
static uint64_t ref_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

START_TEST(test_matches_sequential_splitmix) {
  uint64_t seeds[] = {0, 1, 42, 0xFFFFFFFFFFFFFFFFull};
  for (int si = 0; si < 4; si++) {
    uint64_t state = ref_mix(seeds[si]);
    for (uint64_t k = 0; k < 1000; k++) {
      state += 0x9E3779B97F4A7C15ull;
      ck_assert_uint_eq(qat_window_word(seeds[si], k), ref_mix(state));
    }
  }
  /* known splitmix64 output: the first word from state 0 is 0xE220A8397B1DCDAF */
  ck_assert_uint_eq(ref_mix(0x9E3779B97F4A7C15ull), 0xE220A8397B1DCDAFull);
}
END_TEST

START_TEST(test_determinism_and_resume) {
  const int64_t n = 100003, T = 512;
  enum { N = 300 };
  int64_t a[N], b[N];
  qat_window_sampler s1, s2;
  qat_window_sampler_init(&s1, 7);
  qat_window_sampler_init(&s2, 7);
  for (int i = 0; i < N; i++) {
    TU_REQUIRE_OK(qat_window_next(&s1, n, T, &a[i]));
    TU_REQUIRE_OK(qat_window_next(&s2, n, T, &b[i]));
    ck_assert_int_eq(a[i], b[i]);
  }
  ck_assert_uint_eq(s1.counter, N);
  /* resume at counter 137 from the two stored integers only */
  qat_window_sampler r = {.seed = 7, .counter = 137};
  for (int i = 137; i < N; i++) {
    int64_t x;
    TU_REQUIRE_OK(qat_window_next(&r, n, T, &x));
    ck_assert_int_eq(x, a[i]);
  }
  /* another seed gives another sequence */
  qat_window_sampler o;
  qat_window_sampler_init(&o, 8);
  int same = 0;
  for (int i = 0; i < N; i++) {
    int64_t x;
    TU_REQUIRE_OK(qat_window_next(&o, n, T, &x));
    same += x == a[i];
  }
  ck_assert_int_lt(same, 5);
}
END_TEST

START_TEST(test_range_and_errors) {
  qat_window_sampler s;
  qat_window_sampler_init(&s, 3);
  int64_t x;
  /* exactly one window: the start is always 0 */
  for (int i = 0; i < 50; i++) {
    TU_REQUIRE_OK(qat_window_next(&s, 17, 16, &x));
    ck_assert_int_eq(x, 0);
  }
  /* n - T = 5 valid starts 0..4: all reached, none outside */
  int seen[5] = {0};
  for (int i = 0; i < 500; i++) {
    TU_REQUIRE_OK(qat_window_next(&s, 21, 16, &x));
    ck_assert(x >= 0 && x <= 4);
    seen[x]++;
  }
  for (int i = 0; i < 5; i++) ck_assert_int_gt(seen[i], 0);
  /* the last window [x, x + T] stays inside a long stream too */
  for (int i = 0; i < 1000; i++) {
    TU_REQUIRE_OK(qat_window_next(&s, 5000000000ll, 2048, &x));
    ck_assert(x >= 0 && x + 2048 <= 5000000000ll - 1);
  }
  uint64_t c = s.counter;
  ck_assert_int_eq(qat_window_next(&s, 16, 16, &x), QAT_EINVAL); /* 16 tokens < 17 */
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "16 tokens"));
  ck_assert_int_eq(qat_window_next(&s, 100, 0, &x), QAT_EINVAL);
  ck_assert_uint_eq(s.counter, c); /* failures do not advance */
}
END_TEST

START_TEST(test_uniformity) {
  /* 200000 draws over 1000 starts in 20 buckets of 50: Pearson chi-square with 19 degrees of
   * freedom; 43.82 is its 0.999 quantile (the seed is fixed, so the test is deterministic). */
  enum { B = 20, N = 200000 };
  int64_t cnt[B] = {0};
  qat_window_sampler s;
  qat_window_sampler_init(&s, 12345);
  for (int i = 0; i < N; i++) {
    int64_t x;
    TU_REQUIRE_OK(qat_window_next(&s, 1000 + 64, 64, &x));
    cnt[x / 50]++;
  }
  double e = (double)N / B, chi2 = 0;
  for (int b = 0; b < B; b++) chi2 += (cnt[b] - e) * (cnt[b] - e) / e;
  ck_assert_msg(chi2 < 43.82, "chi2 %.2f", chi2);
  /* consecutive windows are not correlated: lag-1 autocorrelation of the starts near 0
   * (|r| < 4 / sqrt(N) ~ 0.009, four standard errors) */
  qat_window_sampler_init(&s, 99);
  double sx = 0, sxx = 0, sxy = 0, prev = 0;
  for (int i = 0; i < N; i++) {
    int64_t x;
    TU_REQUIRE_OK(qat_window_next(&s, 1000 + 64, 64, &x));
    sx += (double)x;
    sxx += (double)x * x;
    if (i) sxy += prev * x;
    prev = (double)x;
  }
  double m = sx / N, var = sxx / N - m * m, cov = sxy / (N - 1) - m * m;
  ck_assert_msg(fabs(cov / var) < 4.0 / sqrt(N), "lag-1 r %.4f", cov / var);
}
END_TEST

START_TEST(test_val_windows) {
  ck_assert_int_eq(qat_val_window_count(1000, 100, 0), 10);
  ck_assert_int_eq(qat_val_window_count(1099, 100, 0), 10); /* remainder dropped */
  ck_assert_int_eq(qat_val_window_count(1100, 100, 0), 11);
  ck_assert_int_eq(qat_val_window_count(1000, 100, 3), 3);
  ck_assert_int_eq(qat_val_window_count(1000, 100, 50), 10);
  ck_assert_int_eq(qat_val_window_count(99, 100, 0), 0);
  ck_assert_int_eq(qat_val_window_count(1000, 0, 0), 0);
  ck_assert_int_eq(qat_val_window_start(0, 2048), 0);
  ck_assert_int_eq(qat_val_window_start(3, 2048), 6144);
}
END_TEST

int main(void) {
  Suite *s = suite_create("sampler");
  TCase *tc = tcase_create("sampler");
  tcase_add_test(tc, test_matches_sequential_splitmix);
  tcase_add_test(tc, test_determinism_and_resume);
  tcase_add_test(tc, test_range_and_errors);
  tcase_add_test(tc, test_uniformity);
  tcase_add_test(tc, test_val_windows);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
