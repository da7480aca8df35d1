/* qgemm_ds on the CPU (host/backend/cpu/qgemm_ds.c): E2E-QP's step-size gradient from packed
 * codes, against the unpacked path it replaces.
 * References:
 * - the U8 path: dW = gemm(1, 0, dy, x) (the CPU gemm op, OpenBLAS), then dq_backward on the U8
 *   codes (cpu/codes.c, which never reads the packed form) with z: qgemm_ds must equal it BIT
 *   FOR BIT when W fits one 4 MB panel (the same sgemm call, the same double reduction: the
 *   claim of qgemm_ds.c), and otherwise lie within the F32 bound of dW's summation order,
 *   |ds - ds_u8| <= 2 M eps sum_k (sum_m |dy x|) |code - zp| (OpenBLAS may order a dW
 *   element's sum differently for a panel's row count; measured: last-bit differences);
 * - an independent double computation here (dW in double from dy, x; codes from fq_codes;
 *   z~ = clamp(round(z))): normalized error < 1e-5 (F32 dW rounding, test_cpu_util.h's bound).
 * Cases: bits 2, 3, 4, 8, sym / asym, groups 32 / 64 / 128 and per-channel, odd N, M in
 * {1, 5, 37}, and a K = 4096 Linear with N = 600 so the 4 MB row panels split it in three (the
 * panel edges must not change a single bit). Also M = 0 (zeros), bad arguments refused. */
#include "testutil.h"

#include "quant/packed.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void one_case(int bits, int group, int sym, int64_t N, int64_t K, int64_t M,
                     uint64_t seed) {
  qat_backend *be = qat_backend_cpu();
  tu_rng r = {seed};
  qat_qspec q = {.bits = bits, .group = group, .sym = sym};
  int64_t G = qat_qspec_groups(&q, K), g = K / G;
  size_t nk = (size_t)(N * K), ng = (size_t)(N * G);
  float *w = malloc(4 * nk), *s = malloc(4 * ng), *z = calloc(ng, 4);
  float *dy = malloc(4 * (size_t)(M * N) + 4), *x = malloc(4 * (size_t)(M * K) + 4);
  float *dW = malloc(4 * nk), *ds_u8 = malloc(4 * ng), *ds_pk = malloc(4 * ng);
  uint8_t *c = malloc(nk);
  tu_fill_normal(&r, w, nk, 0.05f);
  tu_fill_normal(&r, dy, (size_t)(M * N), 1.0f);
  tu_fill_normal(&r, x, (size_t)(M * K), 1.0f);
  qat_tensor tw = qat_view2(w, QAT_F32, QAT_DEV_CPU, N, K), tc = qat_view2(c, QAT_U8, QAT_DEV_CPU, N, K);
  qat_tensor ts = qat_view2(s, QAT_F32, QAT_DEV_CPU, N, G), tz = qat_view2(z, QAT_F32, QAT_DEV_CPU, N, G);
  TU_REQUIRE_OK(QAT_OP(be, fq_init, &q, &tw, &ts, sym ? NULL : &tz));
  if (!sym) /* non-integer zero points: the packed z~ must be clamp(round(z)) as dq_backward's */
    for (size_t i = 0; i < ng; i++) z[i] += (float)((int)(i % 3) - 1) * 0.3f;
  TU_REQUIRE_OK(QAT_OP(be, fq_codes, &q, &tw, &ts, sym ? NULL : &tz, &tc));
  qat_packed p;
  TU_REQUIRE_OK(qat_packed_alloc(&p, &q, N, K, QAT_F32, "w"));
  TU_REQUIRE_OK(qat_packed_pack(&p, c, s, sym ? NULL : z, "w"));

  qat_tensor tdy = qat_view2(dy, QAT_F32, QAT_DEV_CPU, M, N), tx = qat_view2(x, QAT_F32, QAT_DEV_CPU, M, K);
  qat_tensor tdW = qat_view2(dW, QAT_F32, QAT_DEV_CPU, N, K);
  qat_tensor tu8 = qat_view2(ds_u8, QAT_F32, QAT_DEV_CPU, N, G), tpk = qat_view2(ds_pk, QAT_F32, QAT_DEV_CPU, N, G);
  if (M > 0) {
    TU_REQUIRE_OK(QAT_OP(be, gemm, 1, 0, N, K, M, 1.0f, &tdy, &tx, 0.0f, &tdW));
  } else {
    memset(dW, 0, 4 * nk);
  }
  TU_REQUIRE_OK(QAT_OP(be, dq_backward, &q, &tc, sym ? NULL : &tz, &tdW, &tu8));
  for (size_t i = 0; i < ng; i++) ds_pk[i] = NAN;
  TU_REQUIRE_OK(QAT_OP(be, qgemm_ds, M, &p, &tdy, &tx, &tpk));
  int one_panel = N * K * 4 <= (4 << 20);
  if (one_panel && memcmp(ds_u8, ds_pk, 4 * ng) != 0) {
    for (size_t i = 0; i < ng; i++)
      if (memcmp(&ds_u8[i], &ds_pk[i], 4))
        ck_abort_msg("bits %d group %d sym %d N %lld K %lld M %lld: ds[%zu] packed %.9g, U8 path "
                     "%.9g",
                     bits, group, sym, (long long)N, (long long)K, (long long)M, i,
                     (double)ds_pk[i], (double)ds_u8[i]);
  }
  /* the independent double reference */
  double err = 0, ref_max = 0;
  int diff_any = 0;
  int qmax = (1 << bits) - 1;
  for (int64_t n = 0; n < N; n++)
    for (int64_t j = 0; j < G; j++) {
      double zt = sym ? (double)(1 << (bits - 1))
                      : fmin(fmax(rint((double)z[n * G + j]), 0.0), (double)qmax);
      double acc = 0;
      for (int64_t k = j * g; k < (j + 1) * g; k++) {
        double d = 0;
        for (int64_t m = 0; m < M; m++) d += (double)dy[m * N + n] * x[m * K + k];
        acc += d * ((double)c[n * K + k] - zt);
      }
      err = fmax(err, fabs(acc - ds_pk[n * G + j]));
      if (!one_panel) { /* the summation-order bound against the U8 path */
        double bnd = 0;
        for (int64_t k = j * g; k < (j + 1) * g; k++) {
          double a = 0;
          for (int64_t m = 0; m < M; m++) a += fabs((double)dy[m * N + n] * x[m * K + k]);
          bnd += a * fabs((double)c[n * K + k] - zt);
        }
        bnd *= 2.0 * (double)M * 0x1p-24;
        double d = fabs((double)ds_pk[n * G + j] - ds_u8[n * G + j]);
        ck_assert_msg(d <= bnd, "N %lld K %lld: ds[%lld, %lld] packed %.9g, U8 path %.9g, bound %g",
                      (long long)N, (long long)K, (long long)n, (long long)j,
                      (double)ds_pk[n * G + j], (double)ds_u8[n * G + j], bnd);
        diff_any |= d > 0;
      }
      ref_max = fmax(ref_max, fabs(acc));
    }
  if (M > 0)
    ck_assert_msg(err <= 1e-5 * ref_max, "bits %d group %d: normalized error %g", bits, group,
                  err / ref_max);
  else
    ck_assert(err == 0);
  if (!one_panel && diff_any) printf("N %lld K %lld M %lld: some ds differ from the U8 path within the bound\n",
                                     (long long)N, (long long)K, (long long)M);
  qat_packed_free(&p);
  free(w), free(s), free(z), free(dy), free(x), free(dW), free(ds_u8), free(ds_pk), free(c);
}

START_TEST(against_u8_path) {
  const int bits[] = {2, 3, 4, 8};
  const int groups[] = {32, 64, 128, -1};
  uint64_t seed = 1;
  for (int b = 0; b < 4; b++)
    for (int gi = 0; gi < 4; gi++)
      for (int sym = 0; sym < 2; sym++) {
        one_case(bits[b], groups[gi], sym, 13, 256, 37, seed++);
        one_case(bits[b], groups[gi], sym, 7, 384, 5, seed++);
      }
  one_case(2, 64, 0, 5, 128, 1, seed++);
  one_case(3, 32, 1, 5, 128, 0, seed++);
}
END_TEST

START_TEST(panel_edges) {
  /* K = 4096: 256 rows per 4 MB panel, N = 600 is three panels, the last one short */
  one_case(2, 64, 0, 600, 4096, 19, 99);
  one_case(4, 128, 1, 600, 4096, 19, 100);
}
END_TEST

START_TEST(bad_args) {
  qat_backend *be = qat_backend_cpu();
  qat_qspec q = {.bits = 2, .group = 32, .sym = 0};
  qat_packed p;
  TU_REQUIRE_OK(qat_packed_alloc(&p, &q, 4, 64, QAT_F32, "w"));
  float dy[3 * 4] = {0}, x[3 * 64] = {0}, ds[4 * 2], bad[4 * 3];
  qat_tensor tdy = qat_view2(dy, QAT_F32, QAT_DEV_CPU, 3, 4), tx = qat_view2(x, QAT_F32, QAT_DEV_CPU, 3, 64);
  qat_tensor tds = qat_view2(ds, QAT_F32, QAT_DEV_CPU, 4, 2), tbad = qat_view2(bad, QAT_F32, QAT_DEV_CPU, 4, 3);
  TU_REQUIRE_OK(QAT_OP(be, qgemm_ds, 3, &p, &tdy, &tx, &tds));
  ck_assert_int_ne(QAT_OP(be, qgemm_ds, 3, &p, &tdy, &tx, &tbad), QAT_OK); /* ds [4, 3] */
  ck_assert_int_ne(QAT_OP(be, qgemm_ds, 2, &p, &tdy, &tx, &tds), QAT_OK);  /* M mismatch */
  uint8_t *zeros = p.zeros;
  p.zeros = NULL; /* asymmetric without zero points */
  ck_assert_int_ne(QAT_OP(be, qgemm_ds, 3, &p, &tdy, &tx, &tds), QAT_OK);
  p.zeros = zeros;
  ck_assert_int_ne(QAT_OP(be, qgemm_ds, 3, NULL, &tdy, &tx, &tds), QAT_OK);
  qat_packed_free(&p);
}
END_TEST

int main(void) {
  Suite *s = suite_create("qgemm_ds");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, against_u8_path);
  tcase_add_test(tc, panel_edges);
  tcase_add_test(tc, bad_args);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
