/* qgemm on CUDA (cuda/qgemm*.cu) against the CPU qgemm (host/backend/cpu/qgemm.c, itself tested
 * against a double reference in test_qgemm.c) and against a double reference here: y = x @ W^T
 * (trans 0) or x @ W (trans 1) with W = qat_packed_dequant (the plain C reference) of the same
 * packed weight, summed in double. Skips without a GPU.
 *
 * Cases: bits 2..8, groups 32 / 64 / 128 and per-channel (K = 100: not a multiple of 16, one
 * k-tile, no split-K) and an odd group of 20 (the dequantize fallback), sym and asym, F16 and F32
 * scales, N = 75 (two row tiles, the second partial), K = 352 / 448 / 384 (row_bytes not always a
 * multiple of 16: both cp.async widths; three k-tiles: split-K), M in {1, 5, 16, 17, 64, 65, 130},
 * trans 0 through both paths (QAT_CUDA_QGEMM_FUSED_M = 1000: the fused kernel for every M, in
 * 64-row chunks past 64; = 0: dequantize + cuBLASLt for every M) and trans 1 (always the latter).
 *
 * Tolerances, with mag = sum_i |x_i| s_i (q_i + zp_i) >= sum_i |x_i w_i| over the reduction:
 * - exact inputs (x already BF16 numbers, scales powers of two): every weight the GPU uses is
 *   exact (the fused kernel feeds q - zp, an integer below 256, to the mma and multiplies FP32
 *   group sums by s = 2^e; the dequantize path's (q - zp) * 2^e has <= 8 significant bits, so
 *   its BF16 rounding is exact) and each product is exact in FP32, so only FP32 summation error
 *   remains: |gpu - ref| <= 8 (n + 2) eps32 mag. Why 8: the tensor cores' FP32 accumulation may
 *   truncate instead of rounding (up to 2 eps32 per addition instead of 1), and the group-scale
 *   flushes and the split-K sums add at most another n additions; 2 x 2 x the CPU's
 *   2 (n + 2) eps32 mag. At these shapes one wrong code at 2..4 bits (|x_k| s_k) is above it.
 * - general inputs: x rounds to BF16 (relative 2^-8, unit roundoff of an 8-bit significand) and
 *   the dequantize path also rounds each weight to BF16 (another 2^-8): |gpu - ref| <=
 *   (2^-7 + 8 (n + 2) eps32) mag for both paths (the fused one only needs 2^-8 of it).
 * - GPU vs CPU qgemm: the sum of the two bounds (each is within its own of the reference).
 * Also: bad arguments refused with the CPU op's status codes; a host-memory weight refused. */
#include "testutil.h"

#include "quant/packed.h"
#include "quant/packed_dev.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static qat_backend *g_cuda;

typedef struct qfix {
  int64_t N, K;
  int pow2; /* scales rounded to powers of two */
  qat_packed p, dp; /* host, device */
  float *W; /* [N, K] qat_packed_dequant */
  float *A; /* [N, K] s (q + zp) */
} qfix;

static void qfix_make(qfix *f, int bits, int group, int sym, int64_t N, int64_t K, int f16,
                      int pow2, uint64_t seed) {
  qat_backend *be = qat_backend_cpu();
  tu_rng r = {seed};
  qat_qspec q = {.bits = bits, .group = group, .sym = sym};
  f->N = N;
  f->K = K;
  f->pow2 = pow2;
  int64_t G = qat_qspec_groups(&q, K);
  size_t nk = (size_t)(N * K), ng = (size_t)(N * G);
  float *w = malloc(4 * nk), *s = malloc(4 * ng), *z = calloc(ng, 4), *zt = malloc(4 * ng);
  uint8_t *c = malloc(nk);
  tu_fill_normal(&r, w, nk, 0.05f);
  qat_tensor tw = qat_view2(w, QAT_F32, QAT_DEV_CPU, N, K), tc = qat_view2(c, QAT_U8, QAT_DEV_CPU, N, K);
  qat_tensor ts = qat_view2(s, QAT_F32, QAT_DEV_CPU, N, G), tz = qat_view2(z, QAT_F32, QAT_DEV_CPU, N, G);
  TU_REQUIRE_OK(QAT_OP(be, fq_init, &q, &tw, &ts, sym ? NULL : &tz));
  TU_REQUIRE_OK(QAT_OP(be, fq_codes, &q, &tw, &ts, sym ? NULL : &tz, &tc));
  if (pow2) /* the codes stay what they are: any codes are a valid weight */
    for (size_t i = 0; i < ng; i++) s[i] = exp2f(rintf(log2f(s[i])));
  TU_REQUIRE_OK(qat_packed_alloc(&f->p, &q, N, K, f16 ? QAT_F16 : QAT_F32, "w"));
  TU_REQUIRE_OK(qat_packed_pack(&f->p, c, s, sym ? NULL : z, "w"));
  TU_REQUIRE_OK(qat_packed_upload(g_cuda, &f->p, &f->dp, "w"));
  f->W = malloc(4 * nk);
  f->A = malloc(4 * nk);
  qat_packed_dequant(&f->p, 0, N, f->W);
  qat_packed_unpack(&f->p, c, s, zt);
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < K; k++) {
      int64_t j = k / f->p.group;
      f->A[n * K + k] = s[n * G + j] * ((float)c[n * K + k] + zt[n * G + j]);
    }
  free(w);
  free(s);
  free(z);
  free(zt);
  free(c);
}

static void qfix_free(qfix *f) {
  qat_packed_free(&f->p);
  qat_packed_free_on(g_cuda, &f->dp);
  free(f->W);
  free(f->A);
}

static qat_tensor dev_new(int64_t r, int64_t c) {
  void *p = NULL;
  TU_REQUIRE_OK(g_cuda->alloc(g_cuda, &p, (size_t)(r * c) * 4 + 4));
  return qat_view2(p, QAT_F32, QAT_DEV_CUDA, r, c);
}

/* One call on both backends; checks against the double reference and each other. */
static void check_case(qfix *f, int trans, int64_t M, int xexact, uint64_t seed, const char *what) {
  qat_backend *cpu = qat_backend_cpu();
  int64_t N = f->N, K = f->K, in = trans ? N : K, out = trans ? K : N;
  tu_rng r = {seed};
  size_t nx = (size_t)(M * in), ny = (size_t)(M * out);
  float *x = malloc(4 * nx), *yc = malloc(4 * ny), *yg = malloc(4 * ny);
  tu_fill_normal(&r, x, nx, 1.0f);
  if (xexact)
    for (size_t i = 0; i < nx; i++) x[i] = qat_bf16_to_f32(qat_f32_to_bf16(x[i]));
  qat_tensor tx = qat_view2(x, QAT_F32, QAT_DEV_CPU, M, in), ty = qat_view2(yc, QAT_F32, QAT_DEV_CPU, M, out);
  TU_REQUIRE_OK(QAT_OP(cpu, qgemm, trans, M, &f->p, &tx, &ty));
  qat_tensor dx = dev_new(M, in), dy = dev_new(M, out);
  for (size_t i = 0; i < ny; i++) yg[i] = NAN;
  TU_REQUIRE_OK(g_cuda->upload(g_cuda, dx.data, x, 4 * nx));
  TU_REQUIRE_OK(g_cuda->upload(g_cuda, dy.data, yg, 4 * ny)); /* NaN: every element is written */
  TU_REQUIRE_OK(QAT_OP(g_cuda, qgemm, trans, M, &f->dp, &dx, &dy));
  TU_REQUIRE_OK(g_cuda->sync(g_cuda));
  TU_REQUIRE_OK(g_cuda->download(g_cuda, yg, dy.data, 4 * ny));
  const double eps = FLT_EPSILON / 2;
  const int exact = xexact && f->pow2;
  for (int64_t m = 0; m < M; m++)
    for (int64_t o = 0; o < out; o++) {
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < in; i++) {
        int64_t wi = trans ? i * K + o : o * K + i;
        ref += (double)x[m * in + i] * f->W[wi];
        mag += fabs((double)x[m * in + i]) * f->A[wi];
      }
      double bc = 2.0 * (double)(in + 2) * eps * mag;
      double bg = (exact ? 0.0 : 1.0 / 128) * mag + 8.0 * (double)(in + 2) * eps * mag;
      double g = yg[m * out + o], c = yc[m * out + o];
      ck_assert_msg(fabs(g - ref) <= bg,
                    "%s M=%lld [%lld, %lld]: cuda %.9g ref %.9g err %.3g bound %.3g (%s)", what,
                    (long long)M, (long long)m, (long long)o, g, ref, fabs(g - ref), bg,
                    exact ? "exact inputs" : "BF16 bound");
      ck_assert_msg(fabs(g - c) <= bg + bc, "%s M=%lld [%lld, %lld]: cuda %.9g cpu %.9g", what,
                    (long long)M, (long long)m, (long long)o, g, c);
    }
  g_cuda->free(g_cuda, dx.data);
  g_cuda->free(g_cuda, dy.data);
  free(x);
  free(yc);
  free(yg);
}

START_TEST(against_cpu) {
  if (!tu_need_gpu(&g_cuda)) return;
  const int groups[] = {32, 64, 128, -1, 20};
  const int64_t Ks[] = {352, 448, 384, 100, 100};
  const int64_t Ms[] = {1, 5, 16, 17, 64, 65, 130};
  int ncase = 0;
  for (int bits = 2; bits <= 8; bits++)
    for (int gi = 0; gi < 5; gi++)
      for (int sym = 0; sym <= 1; sym++) {
        if (gi == 4 && (bits & 1) == sym) continue; /* the odd group: half the combinations */
        qfix f;
        int f16 = (gi & 1) ^ sym, pow2 = (bits + sym) & 1;
        qfix_make(&f, bits, groups[gi], sym, 75, Ks[gi], f16, pow2,
                  500u + (unsigned)(bits * 100 + gi * 10 + sym));
        for (int mi = 0; mi < 7; mi++)
          for (int path = 0; path < 3; path++) { /* fused, dequantize (trans 0), trans 1 */
            char what[128];
            snprintf(what, sizeof what, "b%d g%d %s %s %s", bits, groups[gi], sym ? "sym" : "asym",
                     f16 ? "F16" : "F32", path == 0 ? "fused" : path == 1 ? "dequant" : "trans1");
            setenv("QAT_CUDA_QGEMM_FUSED_M", path == 0 ? "1000" : "0", 1);
            check_case(&f, path == 2, Ms[mi], (mi + path) & 1 ? 0 : 1,
                       7u + (unsigned)(mi * 3 + path), what);
            ncase++;
          }
        unsetenv("QAT_CUDA_QGEMM_FUSED_M");
        qfix_free(&f);
      }
  ck_assert_int_eq(ncase, 7 * (4 * 2 + 1) * 7 * 3);
}
END_TEST

/* The default crossover (fused up to M = 64, then dequantize) on a realistic slice. */
START_TEST(default_paths) {
  if (!tu_need_gpu(&g_cuda)) return;
  qfix f;
  qfix_make(&f, 4, 128, 0, 300, 1024, 1, 0, 77);
  const int64_t Ms[] = {1, 16, 64, 128};
  for (int mi = 0; mi < 4; mi++) check_case(&f, 0, Ms[mi], 0, 11u + (unsigned)mi, "W4 g128 default");
  qfix_free(&f);
}
END_TEST

START_TEST(bad_args) {
  if (!tu_need_gpu(&g_cuda)) return;
  qfix f;
  qfix_make(&f, 4, 32, 0, 8, 64, 0, 0, 1);
  qat_tensor tx = dev_new(2, 64), ty = dev_new(2, 8);
  qat_tensor tbad = qat_view2(ty.data, QAT_F32, QAT_DEV_CUDA, 2, 7);
  ck_assert_int_eq(QAT_OP(g_cuda, qgemm, 0, 2, &f.dp, &tx, &tbad), QAT_EINVAL);
  ck_assert_int_eq(QAT_OP(g_cuda, qgemm, 1, 2, &f.dp, &tx, &ty), QAT_EINVAL); /* x is [M, N] */
  ck_assert_int_eq(QAT_OP(g_cuda, qgemm, 0, 2, NULL, &tx, &ty), QAT_EINVAL);
  qat_tensor th = qat_view2(tx.data, QAT_BF16, QAT_DEV_CUDA, 2, 64);
  ck_assert_int_eq(QAT_OP(g_cuda, qgemm, 0, 2, &f.dp, &th, &ty), QAT_EUNSUPPORTED);
  qat_packed broken = f.dp;
  broken.group = 48;
  ck_assert_int_eq(QAT_OP(g_cuda, qgemm, 0, 2, &broken, &tx, &ty), QAT_EINVAL);
  ck_assert_int_eq(QAT_OP(g_cuda, qgemm, 0, 2, &f.p, &tx, &ty), QAT_EINVAL); /* host buffers */
  qat_tensor hx = qat_view2(f.W, QAT_F32, QAT_DEV_CPU, 2, 64);
  ck_assert_int_eq(QAT_OP(g_cuda, qgemm, 0, 2, &f.dp, &hx, &ty), QAT_EINVAL); /* host x */
  g_cuda->free(g_cuda, tx.data);
  g_cuda->free(g_cuda, ty.data);
  qfix_free(&f);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cuda_qgemm");
  TCase *tc = tcase_create("cuda_qgemm");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, against_cpu);
  tcase_add_test(tc, default_paths);
  tcase_add_test(tc, bad_args);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
