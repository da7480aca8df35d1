/* Helpers shared by the CPU op tests (test_cpu_ops.c, test_cpu_blocks.c, test_cpu_attention.c):
 * tensor views of test buffers, allocations freed after each test, normalized errors against
 * double references, central finite differences and error-message checks.
 *
 * Tolerances used by these tests (why):
 * - F32 op vs double reference: normalized error (max |a - ref| / max |ref|) < 1e-5: the ops
 *   round their results to F32 (2^-24 ~ 6e-8 relative) after double or F32 arithmetic over at
 *   most a few hundred terms; 1e-5 leaves room for that and catches any real formula error.
 * - backward vs central differences of the test's double forward (h = 1e-5): the difference
 *   quotient is accurate to ~1e-9, so the same 1e-5 F32 bound applies.
 * - backward vs central differences of the F32 op's own forward (h = 1e-3): F32 rounding of the
 *   loss (~1e-7 relative) divided by 2h gives ~1e-4 noise, hence 1e-2. */
#ifndef QAT_TEST_CPU_UTIL_H
#define QAT_TEST_CPU_UTIL_H

#include "testutil.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_F32 1e-5
#define TOL_FD_F32 1e-2

#define NDIMS_(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
/* A CPU tensor view of a test buffer: TF(p, 7, 13) is F32 [7, 13]. */
#define TV_(p, dt, ...)                                                                            \
  qat_view((p), (dt), QAT_DEV_CPU, NDIMS_(__VA_ARGS__), (int64_t[]){__VA_ARGS__})
#define TF(p, ...) TV_(p, QAT_F32, __VA_ARGS__)
#define TI(p, ...) TV_(p, QAT_I32, __VA_ARGS__)

/* Allocations live until the end of the test (freed by the tc_free_all teardown). */
static void *g_tc_allocs[512];
static int g_tc_nallocs;
static inline void *tc_alloc(size_t bytes) {
  ck_assert_int_lt(g_tc_nallocs, 512);
  void *p = calloc(1, bytes ? bytes : 1);
  ck_assert_ptr_nonnull(p);
  g_tc_allocs[g_tc_nallocs++] = p;
  return p;
}
static inline void tc_free_all(void) {
  for (int i = 0; i < g_tc_nallocs; i++) free(g_tc_allocs[i]);
  g_tc_nallocs = 0;
}
static inline float *tc_f(size_t n) { return (float *)tc_alloc(n * sizeof(float)); }
static inline double *tc_d(size_t n) { return (double *)tc_alloc(n * sizeof(double)); }
/* n normal(0, sd) floats from a seeded generator. */
static inline float *tc_randn(uint64_t seed, size_t n, float sd) {
  tu_rng r = {seed};
  float *x = tc_f(n);
  tu_fill_normal(&r, x, n, sd);
  return x;
}
static inline float *tc_copyf(const float *x, size_t n) {
  float *y = tc_f(n);
  memcpy(y, x, n * sizeof(float));
  return y;
}
static inline double *tc_tod(const float *x, size_t n) {
  double *y = tc_d(n);
  for (size_t i = 0; i < n; i++) y[i] = x[i];
  return y;
}
static inline float *tc_nanf(size_t n) {
  float *x = tc_f(n);
  for (size_t i = 0; i < n; i++) x[i] = NAN;
  return x;
}

/* max |a - ref| / max |ref| (a NaN in a makes it infinite). QAT_TEST_VERBOSE=1 prints each. */
static inline double nerr_fd(const float *a, const double *ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - ref[i]);
    if (d > num || d != d) num = d != d ? INFINITY : d;
    if (fabs(ref[i]) > den) den = fabs(ref[i]);
  }
  return num / (den + 1e-30);
}

#define CK_NERR(a, ref, n, tol)                                                                    \
  do {                                                                                             \
    double _e = nerr_fd((a), (ref), (n));                                                          \
    if (getenv("QAT_TEST_VERBOSE")) printf("%s:%d %s: nerr %.2e\n", __FILE__, __LINE__, #a, _e);  \
    ck_assert_msg(_e < (tol), "%s vs %s: normalized error %.3g >= %.3g", #a, #ref, _e,            \
                  (double)(tol));                                                                  \
  } while (0)

static inline double dot_fd(const float *a, const double *r, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)a[i] * r[i];
  return s;
}
static inline double dot_dd(const double *a, const double *r, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += a[i] * r[i];
  return s;
}

/* Central differences of loss(ctx) w.r.t. each x[i] (double inputs, step h). */
static inline void fd_double(double *x, size_t n, double h, double (*loss)(void *), void *ctx,
                             double *grad) {
  for (size_t i = 0; i < n; i++) {
    double x0 = x[i];
    x[i] = x0 + h;
    double lp = loss(ctx);
    x[i] = x0 - h;
    double lm = loss(ctx);
    x[i] = x0;
    grad[i] = (lp - lm) / (2 * h);
  }
}
/* Same on F32 inputs (the op's own forward); the step actually taken is divided by. */
static inline void fd_float(float *x, size_t n, float h, double (*loss)(void *), void *ctx,
                            double *grad) {
  for (size_t i = 0; i < n; i++) {
    float x0 = x[i], xp = x0 + h, xm = x0 - h;
    x[i] = xp;
    double lp = loss(ctx);
    x[i] = xm;
    double lm = loss(ctx);
    x[i] = x0;
    grad[i] = (lp - lm) / ((double)xp - (double)xm);
  }
}

/* expr fails with `code` and a message containing `sub`. */
#define CK_FAILS(expr, code, sub)                                                                  \
  do {                                                                                             \
    qat_status _s = (expr);                                                                        \
    ck_assert_msg(_s == (code), "%s -> %s (%s), expected %s", #expr, qat_status_name(_s),         \
                  qat_last_error(), qat_status_name(code));                                        \
    ck_assert_msg(strstr(qat_last_error(), (sub)) != NULL, "%s: message '%s' lacks '%s'", #expr,  \
                  qat_last_error(), (sub));                                                        \
  } while (0)

/* Bitwise equality (determinism across thread counts). */
#define CK_SAME_BITS(a, b, n)                                                                      \
  ck_assert_msg(memcmp((a), (b), (n) * sizeof(*(a))) == 0, "%s and %s differ bitwise", #a, #b)

#endif
