/* CUDA kd_xent (cuda/kd.cu) against the CPU op (backend/cpu/kd.c, itself checked against the
 * double host reference in test_kd.c): F32 and BF16 inputs, separate and aliased (in place)
 * dlogits, F32 dlogits from BF16 inputs, loss-only calls, ignored targets, masked (-inf) teacher
 * logits, odd shapes and full 32000 / 128256 vocabularies. Without a GPU every case skips.
 *
 * Protocol: inputs are drawn in F32; for BF16 cases they are rounded to bf16 first and the CPU
 * gets the same rounded values as F32, so both sides see identical inputs.
 *
 * Tolerances (normalized error, max |cuda - cpu| / max |cpu|):
 * - F32 outputs 1e-5, in the BF16-input cases too: both sides widen the inputs to F32 exactly,
 *   then run the same F32 elementwise formulas (expf on both, not the fast intrinsic) with double
 *   row sums, so they differ only by libm-vs-CUDA expf ulps and the order of the double sums: a
 *   few 1e-7 of the largest value. A wrong T factor or a dropped term is off by O(1).
 * - BF16 dlogits 8e-3: the GPU rounds each gradient to bf16 once (relative error <= 2^-9 of the
 *   element, so <= 2e-3 of the largest); 8e-3 leaves ~4x margin and still catches any wrong
 *   term. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_F32 1e-5
#define TOL_BF16_OUT 8e-3

static qat_backend *g_gpu;

static int need_gpu(void) { return tu_need_gpu(&g_gpu); }

static qat_backend *cpu(void) { return qat_backend_cpu(); }

static float *fvec(size_t n) {
  float *p = calloc(n ? n : 1, sizeof(float));
  ck_assert_ptr_nonnull(p);
  return p;
}

/* A tensor on be of dtype dt and shape [n0, n1] (n1 = 0: [n0]) holding x, or zeros. */
static qat_tensor mk(const qat_backend *be, qat_dtype dt, int64_t n0, int64_t n1, const float *x) {
  qat_tensor t = n1 ? qat_view2(NULL, dt, be->device, n0, n1) : qat_view1(NULL, dt, be->device, n0);
  size_t nb = qat_nbytes(&t), n = (size_t)qat_numel(&t);
  TU_REQUIRE_OK(be->alloc(be, &t.data, nb ? nb : 1));
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

static qat_tensor mk_i32(const qat_backend *be, int64_t n, const int32_t *v) {
  qat_tensor t = qat_view1(NULL, QAT_I32, be->device, n);
  TU_REQUIRE_OK(be->alloc(be, &t.data, qat_nbytes(&t)));
  TU_REQUIRE_OK(be->upload(be, t.data, v, qat_nbytes(&t)));
  return t;
}

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

static void cmp(const char *what, const qat_tensor *g, const qat_tensor *c, double tol) {
  size_t n = (size_t)qat_numel(c);
  ck_assert_int_eq(qat_numel(g), (int64_t)n);
  float *a = get(g_gpu, g), *b = get(cpu(), c);
  double e = tu_nerr(a, b, n);
  printf("  %-52s %-4s nerr %.3g (tol %.0e)\n", what, qat_dtype_name(g->dtype), e, tol);
  ck_assert_msg(e <= tol, "%s (%s): normalized error %g > %g", what, qat_dtype_name(g->dtype), e,
                tol);
  free(a);
  free(b);
}

/* in dtype dt (student and teacher); dd: dlogits dtype; in_place: dlogits is the student. */
static void kd_case(qat_dtype dt, qat_dtype dd, int in_place, int64_t N, int64_t V, float T,
                    float alpha, uint64_t seed) {
  tu_rng r = {seed};
  size_t nv = (size_t)(N * V);
  float *s = fvec(nv), *t = fvec(nv);
  tu_fill_normal(&r, s, nv, 3.0f);
  tu_fill_normal(&r, t, nv, 3.0f);
  for (int64_t i = 0; i < N; i++) t[i * V + (i * 7) % V] = -INFINITY; /* a masked teacher token */
  if (dt == QAT_BF16)
    for (size_t i = 0; i < nv; i++) {
      s[i] = qat_bf16_to_f32(qat_f32_to_bf16(s[i]));
      t[i] = qat_bf16_to_f32(qat_f32_to_bf16(t[i]));
    }
  int32_t *y = malloc((size_t)N * sizeof *y);
  ck_assert_ptr_nonnull(y);
  for (int64_t i = 0; i < N; i++) y[i] = (int32_t)(tu_next(&r) % (uint64_t)V);
  y[N / 2] = -1;
  if (N > 2) y[N - 1] = (int32_t)(V - 1);
  const float dscale = 1.0f / (float)N;
  qat_tensor cs = mk(cpu(), QAT_F32, N, V, s), ct = mk(cpu(), QAT_F32, N, V, t);
  qat_tensor cy = mk_i32(cpu(), N, y), cl = mk(cpu(), QAT_F32, N, 0, NULL);
  qat_tensor cd = mk(cpu(), QAT_F32, N, V, NULL);
  qat_tensor gs = mk(g_gpu, dt, N, V, s), gt = mk(g_gpu, dt, N, V, t);
  qat_tensor gy = mk_i32(g_gpu, N, y), gl = mk(g_gpu, QAT_F32, N, 0, NULL);
  qat_tensor gd = in_place ? gs : mk(g_gpu, dd, N, V, NULL);
  TU_REQUIRE_OK(QAT_OP(cpu(), kd_xent, &cs, &ct, &cy, T, alpha, dscale, &cl, &cd));
  TU_REQUIRE_OK(QAT_OP(g_gpu, kd_xent, &gs, &gt, &gy, T, alpha, dscale, &gl, &gd));
  char what[128];
  snprintf(what, sizeof what, "kd %s N%lld V%lld T %g a %g%s losses", qat_dtype_name(dt),
           (long long)N, (long long)V, T, alpha, in_place ? " in place" : "");
  cmp(what, &gl, &cl, TOL_F32);
  cmp("  dlogits", &gd, &cd, gd.dtype == QAT_F32 ? TOL_F32 : TOL_BF16_OUT);
  if (!in_place) { /* loss only: the same losses */
    qat_tensor gl2 = mk(g_gpu, QAT_F32, N, 0, NULL);
    TU_REQUIRE_OK(QAT_OP(g_gpu, kd_xent, &gs, &gt, &gy, T, alpha, dscale, &gl2, NULL));
    cmp("  losses without dlogits", &gl2, &cl, TOL_F32);
    del(g_gpu, &gl2);
    del(g_gpu, &gd);
  }
  del(cpu(), &cs), del(cpu(), &ct), del(cpu(), &cy), del(cpu(), &cl), del(cpu(), &cd);
  del(g_gpu, &gs), del(g_gpu, &gt), del(g_gpu, &gy), del(g_gpu, &gl);
  free(s), free(t), free(y);
}

START_TEST(test_cuda_kd_f32) {
  if (!need_gpu()) return;
  kd_case(QAT_F32, QAT_F32, 0, 7, 13, 2.0f, 0.5f, 1);
  kd_case(QAT_F32, QAT_F32, 1, 7, 13, 0.5f, 1.0f, 2);
  kd_case(QAT_F32, QAT_F32, 0, 7, 13, 1.0f, 0.0f, 3);
  kd_case(QAT_F32, QAT_F32, 0, 33, 1000, 4.0f, 0.7f, 4);
  kd_case(QAT_F32, QAT_F32, 1, 33, 1000, 1.0f, 0.3f, 5);
  kd_case(QAT_F32, QAT_F32, 0, 16, 32000, 2.0f, 0.5f, 6);
  kd_case(QAT_F32, QAT_F32, 1, 5, 128256, 3.0f, 0.9f, 7);
}
END_TEST

START_TEST(test_cuda_kd_bf16) {
  if (!need_gpu()) return;
  kd_case(QAT_BF16, QAT_F32, 0, 7, 13, 2.0f, 0.5f, 11);
  kd_case(QAT_BF16, QAT_BF16, 1, 7, 13, 2.0f, 0.5f, 12);
  kd_case(QAT_BF16, QAT_F32, 0, 33, 1000, 0.5f, 1.0f, 13);
  kd_case(QAT_BF16, QAT_BF16, 0, 33, 1000, 4.0f, 0.0f, 14);
  kd_case(QAT_BF16, QAT_F32, 0, 16, 32000, 2.0f, 0.5f, 15);
  kd_case(QAT_BF16, QAT_BF16, 1, 5, 128256, 1.0f, 0.8f, 16);
  kd_case(QAT_F32, QAT_BF16, 0, 7, 1000, 2.0f, 0.5f, 17); /* BF16 gradient of F32 logits */
}
END_TEST

/* Bad targets, T and alpha, mismatched teachers and aliasing the teacher are errors naming the
 * op, and nothing is written. */
START_TEST(test_cuda_kd_validation) {
  if (!need_gpu()) return;
  enum { N = 2, V = 4 };
  float x[N * V] = {1, 2, 3, 4, 5, 6, 7, 8};
  int32_t bad[N] = {0, 4}, ok[N] = {0, -1};
  qat_tensor gs = mk(g_gpu, QAT_F32, N, V, x), gt = mk(g_gpu, QAT_F32, N, V, x);
  qat_tensor gtb = mk(g_gpu, QAT_BF16, N, V, x), gt2 = mk(g_gpu, QAT_F32, V, N, x);
  qat_tensor gb = mk_i32(g_gpu, N, bad), gy = mk_i32(g_gpu, N, ok);
  qat_tensor gl = mk(g_gpu, QAT_F32, N, 0, NULL), gdb = mk(g_gpu, QAT_BF16, N, V, NULL);
  struct {
    qat_status st;
    const char *what;
  } cases[] = {
      {QAT_OP(g_gpu, kd_xent, &gs, &gt, &gb, 1.0f, 0.5f, 1.0f, &gl, &gs), "target = V"},
      {QAT_OP(g_gpu, kd_xent, &gs, &gt, &gy, 0.0f, 0.5f, 1.0f, &gl, &gs), "T = 0"},
      {QAT_OP(g_gpu, kd_xent, &gs, &gt, &gy, 1.0f, 1.5f, 1.0f, &gl, &gs), "alpha > 1"},
      {QAT_OP(g_gpu, kd_xent, &gs, &gt2, &gy, 1.0f, 0.5f, 1.0f, &gl, &gs), "teacher shape"},
      {QAT_OP(g_gpu, kd_xent, &gs, &gt, &gy, 1.0f, 0.5f, 1.0f, &gl, &gt), "alias teacher"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ck_assert_msg(cases[i].st == QAT_EINVAL, "%s: %s", cases[i].what,
                  qat_status_name(cases[i].st));
  }
  ck_assert_int_eq(QAT_OP(g_gpu, kd_xent, &gs, &gtb, &gy, 1.0f, 0.5f, 1.0f, &gl, &gs),
                   QAT_EUNSUPPORTED); /* teacher dtype differs */
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "kd_xent"));
  qat_tensor gsa = gs; /* the student's buffer viewed as BF16: aliased, so dtypes must match */
  gsa.dtype = QAT_BF16;
  ck_assert_int_eq(QAT_OP(g_gpu, kd_xent, &gs, &gt, &gy, 1.0f, 0.5f, 1.0f, &gl, &gsa),
                   QAT_EUNSUPPORTED);
  ck_assert_int_eq(QAT_OP(g_gpu, kd_xent, &gtb, &gtb, &gy, 1.0f, 0.5f, 1.0f, NULL, &gdb), QAT_OK);
  float *after = get(g_gpu, &gs), *ga = get(g_gpu, &gt), *lo = get(g_gpu, &gl);
  for (int i = 0; i < N * V; i++) {
    ck_assert_float_eq(after[i], x[i]);
    ck_assert_float_eq(ga[i], x[i]);
  }
  for (int i = 0; i < N; i++) ck_assert_float_eq(lo[i], 0.0f); /* never written */
  del(g_gpu, &gs), del(g_gpu, &gt), del(g_gpu, &gtb), del(g_gpu, &gt2), del(g_gpu, &gb);
  del(g_gpu, &gy), del(g_gpu, &gl), del(g_gpu, &gdb);
  free(after), free(ga), free(lo);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cuda_kd");
  TCase *tc = tcase_create("cuda_kd");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_cuda_kd_f32);
  tcase_add_test(tc, test_cuda_kd_bf16);
  tcase_add_test(tc, test_cuda_kd_validation);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
