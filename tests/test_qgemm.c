/* qgemm on the CPU (host/backend/cpu/qgemm*.c) against dequant + gemm.
 * Reference: W dequantized by dq_forward (codes.c, not the packed code) from the same codes and
 * scales, then y = x @ W^T (trans 0) or x @ W (trans 1) summed in double here, and also the
 * existing CPU gemm op (OpenBLAS) in float.
 * Tolerance, elementwise and principled (no tuning): float32 summation of K products in any
 * order has forward error <= K * eps * sum_k |x_k| |w_k| (Higham's gamma_K), and the group-wise
 * factorization s * (x . q - zp * sum x) adds at most the same bound on the terms |x q s| and
 * |x zp s|; so |y - y_ref| <= 2 (K + 2) eps sum_k |x_k| s_k (q_k + zp_k). A single wrong code
 * moves y by |x_k| s_k, far above that for these shapes.
 * Cases: bits 2, 3, 4, 8 (and 5 on the gather path), sym / asym, groups 32 / 64 / 128 and
 * per-channel on odd K, odd N, M in {1, 3, 16} (decode-and-dot) and {17, 40} (panels + sgemm),
 * both transposes, F16 and F32 scales. Also: small-M results bit-identical for 1 and 2 threads;
 * the AVX2 decode bit-identical to the portable one and its row dot within the bound; bad
 * arguments refused. The int8-activation path (qgemm_act8): its own bound below, fallbacks, NaN,
 * thread independence, AVX2 against portable. */
#include "testutil.h"

#include "backend/cpu/qgemm_kern.h"
#include "quant/packed.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct qfix {
  qat_qspec q;
  int64_t N, K, G;
  qat_packed p;
  float *W;    /* [N, K] dq_forward of the packed codes and stored scales */
  float *A;    /* [N, K] s (q + zp): the magnitude terms of the bound */
} qfix;

static void qfix_make(qfix *f, int bits, int group, int sym, int64_t N, int64_t K, int f16,
                      uint64_t seed) {
  qat_backend *be = qat_backend_cpu();
  tu_rng r = {seed};
  f->q = (qat_qspec){.bits = bits, .group = group, .sym = sym};
  f->N = N;
  f->K = K;
  f->G = qat_qspec_groups(&f->q, K);
  size_t nk = (size_t)(N * K), ng = (size_t)(N * f->G);
  float *w = malloc(4 * nk), *s = malloc(4 * ng), *z = calloc(ng, 4);
  uint8_t *c = malloc(nk);
  tu_fill_normal(&r, w, nk, 0.05f);
  qat_tensor tw = qat_view2(w, QAT_F32, QAT_DEV_CPU, N, K), tc = qat_view2(c, QAT_U8, QAT_DEV_CPU, N, K);
  qat_tensor ts = qat_view2(s, QAT_F32, QAT_DEV_CPU, N, f->G), tz = qat_view2(z, QAT_F32, QAT_DEV_CPU, N, f->G);
  TU_REQUIRE_OK(QAT_OP(be, fq_init, &f->q, &tw, &ts, sym ? NULL : &tz));
  TU_REQUIRE_OK(QAT_OP(be, fq_codes, &f->q, &tw, &ts, sym ? NULL : &tz, &tc));
  TU_REQUIRE_OK(qat_packed_alloc(&f->p, &f->q, N, K, f16 ? QAT_F16 : QAT_F32, "w"));
  TU_REQUIRE_OK(qat_packed_pack(&f->p, c, s, sym ? NULL : z, "w"));
  /* the reference weight: dq_forward on the scales as stored (F16-rounded when f16) */
  for (size_t i = 0; i < ng; i++) s[i] = qat_packed_scale(&f->p, (int64_t)i / f->G, (int64_t)i % f->G);
  f->W = malloc(4 * nk);
  f->A = malloc(4 * nk);
  qat_tensor tW = qat_view2(f->W, QAT_F32, QAT_DEV_CPU, N, K);
  TU_REQUIRE_OK(QAT_OP(be, dq_forward, &f->q, &tc, &ts, sym ? NULL : &tz, &tW));
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < K; k++) {
      int64_t j = k / (K / f->G);
      float zp = sym ? (float)(1 << (bits - 1)) : fminf(fmaxf(rintf(z[n * f->G + j]), 0), (float)((1 << bits) - 1));
      f->A[n * K + k] = s[n * f->G + j] * ((float)c[n * K + k] + zp);
    }
  free(w);
  free(s);
  free(z);
  free(c);
}

static void qfix_free(qfix *f) {
  qat_packed_free(&f->p);
  free(f->W);
  free(f->A);
}

/* y = qgemm; checks against the double reference with the bound, and against the gemm op. */
static void check_case(qfix *f, int trans, int64_t M, uint64_t seed, const char *what) {
  qat_backend *be = qat_backend_cpu();
  int64_t N = f->N, K = f->K, in = trans ? N : K, out = trans ? K : N;
  tu_rng r = {seed};
  float *x = malloc(sizeof(float) * (size_t)(M * in)), *y = malloc(sizeof(float) * (size_t)(M * out));
  float *yg = malloc(sizeof(float) * (size_t)(M * out));
  tu_fill_normal(&r, x, (size_t)(M * in), 1.0f);
  for (int64_t i = 0; i < M * out; i++) y[i] = NAN; /* overwritten, never read */
  qat_tensor tx = qat_view2(x, QAT_F32, QAT_DEV_CPU, M, in), ty = qat_view2(y, QAT_F32, QAT_DEV_CPU, M, out);
  qat_tensor tyg = qat_view2(yg, QAT_F32, QAT_DEV_CPU, M, out), tW = qat_view2(f->W, QAT_F32, QAT_DEV_CPU, N, K);
  TU_REQUIRE_OK(QAT_OP(be, qgemm, trans, M, &f->p, &tx, &ty));
  TU_REQUIRE_OK(QAT_OP(be, gemm, 0, trans ? 0 : 1, M, out, in, 1.0f, &tx, &tW, 0.0f, &tyg));
  double eps = FLT_EPSILON / 2, worst = 0;
  for (int64_t m = 0; m < M; m++)
    for (int64_t o = 0; o < out; o++) {
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < in; i++) {
        int64_t wi = trans ? i * K + o : o * K + i;
        ref += (double)x[m * in + i] * f->W[wi];
        mag += fabs((double)x[m * in + i]) * f->A[wi];
      }
      double bound = 2.0 * (double)(in + 2) * eps * mag;
      double e = fabs((double)y[m * out + o] - ref), eg = fabs((double)yg[m * out + o] - ref);
      ck_assert_msg(e <= bound, "%s M=%lld [%lld, %lld]: qgemm %.9g ref %.9g err %.3g bound %.3g",
                    what, (long long)M, (long long)m, (long long)o, y[m * out + o], ref, e, bound);
      ck_assert_msg(eg <= bound, "%s: gemm reference outside its own bound", what);
      if (bound > 0 && e / bound > worst) worst = e / bound;
    }
  free(x);
  free(y);
  free(yg);
}

START_TEST(against_dequant_gemm) {
  const int bits_list[] = {2, 3, 4, 8, 5};
  const int groups[] = {32, 64, 128, -1};
  const int64_t Ms[] = {1, 3, 16, 17, 40};
  int ncase = 0;
  for (int bi = 0; bi < 5; bi++)
    for (int gi = 0; gi < 4; gi++)
      for (int sym = 0; sym <= 1; sym++) {
        int64_t K = groups[gi] > 0 ? 3 * 128 : 100, N = 37;
        qfix f;
        qfix_make(&f, bits_list[bi], groups[gi], sym, N, K, (bi + gi + sym) & 1,
                  900u + (unsigned)(bi * 100 + gi * 10 + sym));
        for (int mi = 0; mi < 5; mi++)
          for (int trans = 0; trans <= 1; trans++) {
            char what[96];
            snprintf(what, sizeof what, "b%d g%d %s trans%d", bits_list[bi], groups[gi],
                     sym ? "sym" : "asym", trans);
            check_case(&f, trans, Ms[mi], 7u + (unsigned)(mi * 2 + trans), what);
            ncase++;
          }
        qfix_free(&f);
      }
  ck_assert_int_eq(ncase, 5 * 4 * 2 * 5 * 2);
}
END_TEST

/* The int8-activation path (qat_backend.qgemm_act8, qgemm_a8.c) against the double reference on
 * the exact x. Its error is x's rounding, |x_k - d_b xq_k| <= d_b / 2 with d_b = max|x_b| / 127
 * per chunk b of 32 or 64 inputs (qgemm_a8_chunk; the zero-point term uses the quantized x, so the error meets the weight
 * w = s (q - zp) itself), plus F32 summation as above on |x~| <= |x| + d / 2:
 *   |y - y_ref| <= sum_k |w_k| d_b(k) (1/2 + 1e-6) + 2 (K + 2) eps sum_k (|x_k| + d_b) s_k (q_k + zp_k).
 * The 1e-6 covers rounding x * (127 / amax) instead of x / d. Also checked: the error is not
 * zero (the path really quantizes); the largest relative error |y - y_ref| / sum |x w| is printed. */
static double g_a8_rel; /* largest |y - y_ref| / sum |x w| seen */

static double check_case_a8(qfix *f, int64_t M, uint64_t seed, const char *what) {
  qat_backend *be = qat_backend_cpu();
  int64_t N = f->N, K = f->K;
  tu_rng r = {seed};
  float *x = malloc(sizeof(float) * (size_t)(M * K)), *y = malloc(sizeof(float) * (size_t)(M * N));
  tu_fill_normal(&r, x, (size_t)(M * K), 1.0f);
  for (int64_t i = 0; i < M * K; i += 97) x[i] *= 20.0f; /* outliers: blocks of unequal scale */
  qat_tensor tx = qat_view2(x, QAT_F32, QAT_DEV_CPU, M, K), ty = qat_view2(y, QAT_F32, QAT_DEV_CPU, M, N);
  be->qgemm_act8 = 1;
  qat_status st = QAT_OP(be, qgemm, 0, M, &f->p, &tx, &ty);
  be->qgemm_act8 = 0;
  TU_REQUIRE_OK(st);
  double eps = FLT_EPSILON / 2, worst = 0, maxerr = 0;
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      double ref = 0, qb = 0, fb = 0, scale = 0;
      int64_t ch = qgemm_a8_chunk(&f->p);
      for (int64_t k0 = 0; k0 < K; k0 += ch) {
        float amax = 0;
        for (int64_t k = k0; k < k0 + ch; k++) amax = fmaxf(amax, fabsf(x[m * K + k]));
        double db = amax / 127.0f;
        for (int64_t k = k0; k < k0 + ch; k++) {
          double xv = x[m * K + k], wv = f->W[n * K + k];
          ref += xv * wv;
          qb += fabs(wv) * db * (0.5 + 1e-6);
          fb += (fabs(xv) + db) * f->A[n * K + k];
          scale += fabs(xv * wv);
        }
      }
      double bound = qb + 2.0 * (double)(K + 2) * eps * fb;
      double e = fabs((double)y[m * N + n] - ref);
      if (scale > 0 && e / scale > g_a8_rel) g_a8_rel = e / scale;
      ck_assert_msg(e <= bound, "%s a8 M=%lld [%lld, %lld]: qgemm %.9g ref %.9g err %.3g bound %.3g",
                    what, (long long)M, (long long)m, (long long)n, y[m * N + n], ref, e, bound);
      if (e > maxerr) maxerr = e;
      if (bound > 0 && e / bound > worst) worst = e / bound;
    }
  free(x);
  free(y);
  return maxerr;
}

START_TEST(act8_against_reference) {
  const int bits_list[] = {2, 3, 4, 5, 7};
  const int groups[] = {32, 64, 128, -1};
  const int64_t Ms[] = {1, 3, 16};
  int ncase = 0;
  double tot = 0;
  for (int bi = 0; bi < 5; bi++)
    for (int gi = 0; gi < 4; gi++)
      for (int sym = 0; sym <= 1; sym++) {
        int64_t K = 3 * 128, N = 37; /* per-channel: K = 384 is whole blocks of 32 */
        qfix f;
        qfix_make(&f, bits_list[bi], groups[gi], sym, N, K, (bi + gi + sym) & 1,
                  500u + (unsigned)(bi * 100 + gi * 10 + sym));
        for (int mi = 0; mi < 3; mi++) {
          char what[96];
          snprintf(what, sizeof what, "b%d g%d %s", bits_list[bi], groups[gi], sym ? "sym" : "asym");
          tot += check_case_a8(&f, Ms[mi], 11u + (unsigned)mi, what);
          ncase++;
        }
        qfix_free(&f);
      }
  ck_assert_int_eq(ncase, 5 * 4 * 2 * 3);
  ck_assert_msg(tot > 0, "int8 activations gave the exact result: the path did not run");
  fprintf(stderr, "act8: %d cases within the bound; largest |y - y_ref| / sum |x w| = %.3g\n", ncase,
          g_a8_rel);
}
END_TEST

/* Weights the int8 path does not take (8 bits, groups not a multiple of 32) give the F32 path's
 * result bit for bit; a NaN in x reaches every output. */
START_TEST(act8_fallback_and_nan) {
  qat_backend *be = qat_backend_cpu();
  const int cases[][2] = {{8, 64}, {4, 48}};
  for (int c = 0; c < 2; c++) {
    qfix f;
    qfix_make(&f, cases[c][0], cases[c][1], 0, 9, 192, 0, 77u + (unsigned)c);
    float x[2 * 192], y0[2 * 9], y1[2 * 9];
    tu_rng r = {5};
    tu_fill_normal(&r, x, 2 * 192, 1.0f);
    qat_tensor tx = qat_view2(x, QAT_F32, QAT_DEV_CPU, 2, 192);
    qat_tensor t0 = qat_view2(y0, QAT_F32, QAT_DEV_CPU, 2, 9), t1 = qat_view2(y1, QAT_F32, QAT_DEV_CPU, 2, 9);
    TU_REQUIRE_OK(QAT_OP(be, qgemm, 0, 2, &f.p, &tx, &t0));
    be->qgemm_act8 = 1;
    qat_status st = QAT_OP(be, qgemm, 0, 2, &f.p, &tx, &t1);
    be->qgemm_act8 = 0;
    TU_REQUIRE_OK(st);
    ck_assert_msg(memcmp(y0, y1, sizeof y0) == 0, "b%d g%d: fallback differs", cases[c][0], cases[c][1]);
    qfix_free(&f);
  }
  qfix f;
  qfix_make(&f, 4, 64, 0, 9, 192, 1, 99);
  for (int64_t M = 1; M <= 2; M++) {
    float x[2 * 192], y[2 * 9];
    tu_rng r = {6};
    tu_fill_normal(&r, x, 2 * 192, 1.0f);
    x[(M - 1) * 192 + 100] = NAN;
    qat_tensor tx = qat_view2(x, QAT_F32, QAT_DEV_CPU, M, 192), ty = qat_view2(y, QAT_F32, QAT_DEV_CPU, M, 9);
    be->qgemm_act8 = 1;
    qat_status st = QAT_OP(be, qgemm, 0, M, &f.p, &tx, &ty);
    be->qgemm_act8 = 0;
    TU_REQUIRE_OK(st);
    for (int n = 0; n < 9; n++) {
      ck_assert_msg(isnan(y[(M - 1) * 9 + n]), "M %lld: NaN in x gave y[%d] = %g", (long long)M, n,
                    y[(M - 1) * 9 + n]);
      if (M == 2) ck_assert_msg(isfinite(y[n]), "NaN leaked into row 0");
    }
  }
  qfix_free(&f);
}
END_TEST

START_TEST(threads_independent) {
  qat_backend *be = qat_backend_cpu();
  qfix f;
  qfix_make(&f, 4, 64, 0, 45, 192, 1, 42);
  for (int trans = 0; trans <= 1; trans++)
    for (int64_t M = 1; M <= 16; M += 15) {
      int64_t in = trans ? f.N : f.K, out = trans ? f.K : f.N;
      tu_rng r = {3};
      float *x = malloc(sizeof(float) * (size_t)(M * in));
      float *y1 = malloc(sizeof(float) * (size_t)(M * out)), *y2 = malloc(sizeof(float) * (size_t)(M * out));
      tu_fill_normal(&r, x, (size_t)(M * in), 1.0f);
      qat_tensor tx = qat_view2(x, QAT_F32, QAT_DEV_CPU, M, in);
      qat_tensor t1 = qat_view2(y1, QAT_F32, QAT_DEV_CPU, M, out), t2 = qat_view2(y2, QAT_F32, QAT_DEV_CPU, M, out);
      int nt = omp_get_max_threads();
      omp_set_num_threads(1);
      TU_REQUIRE_OK(QAT_OP(be, qgemm, trans, M, &f.p, &tx, &t1));
      omp_set_num_threads(3);
      TU_REQUIRE_OK(QAT_OP(be, qgemm, trans, M, &f.p, &tx, &t2));
      ck_assert_msg(memcmp(y1, y2, sizeof(float) * (size_t)(M * out)) == 0, "trans %d M %lld", trans,
                    (long long)M);
      if (!trans) { /* the int8-activation path too */
        be->qgemm_act8 = 1;
        omp_set_num_threads(1);
        TU_REQUIRE_OK(QAT_OP(be, qgemm, trans, M, &f.p, &tx, &t1));
        omp_set_num_threads(3);
        TU_REQUIRE_OK(QAT_OP(be, qgemm, trans, M, &f.p, &tx, &t2));
        be->qgemm_act8 = 0;
        ck_assert_msg(memcmp(y1, y2, sizeof(float) * (size_t)(M * out)) == 0, "act8 M %lld", (long long)M);
      }
      omp_set_num_threads(nt);
      free(x);
      free(y1);
      free(y2);
    }
  qfix_free(&f);
}
END_TEST

START_TEST(avx2_vs_portable) {
#ifdef QAT_QGEMM_HAVE_AVX2
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    tu_skip("no AVX2 on this CPU");
    return;
  }
  const qgemm_kern *a = &qgemm_kern_avx2, *p = &qgemm_kern_portable;
  for (int b = 2; b <= 8; b++) {
    qfix f;
    qfix_make(&f, b, 32, b & 1, 5, 160, 0, 60u + (unsigned)b);
    float da[160], dp[160];
    for (int64_t n = 0; n < f.N; n++) {
      const uint8_t *row = f.p.codes + n * f.p.row_bytes;
      for (int64_t k0 = 0; k0 < 160; k0 += 8) { /* aligned starts, every tail length */
        a->decode(row, b, k0, 160 - k0 - (k0 % 24) / 8, da);
        p->decode(row, b, k0, 160 - k0 - (k0 % 24) / 8, dp);
        ck_assert_msg(memcmp(da, dp, sizeof(float) * (size_t)(160 - k0 - (k0 % 24) / 8)) == 0,
                      "decode b%d k0 %lld", b, (long long)k0);
      }
      a->decode(row, b, 3, 100, da); /* unaligned start: portable inside */
      p->decode(row, b, 3, 100, dp);
      ck_assert(memcmp(da, dp, sizeof(float) * 100) == 0);
    }
    qfix_free(&f);
  }
  /* int8 activations: the lane-order decode bit-identical; the row dot equal up to the order of
   * F32 sums of the exact integer chunk sums (bound (nb + G + 4) eps sum of |terms|, doubled);
   * g 32 and 64 (chunks of 32 and, for 4 and 2 bits, 64) and 192 = 3 x 64 (tail-free, G = 1) */
  for (int b = 2; b <= 7; b++)
    for (int gi = 0; gi < 3; gi++) {
      int g = gi == 2 ? 192 : gi ? 64 : 32;
      qfix f;
      qfix_make(&f, b, g, b & 1, 4, 192, gi, 70u + (unsigned)b);
      uint8_t ua[192], up[192];
      float vr[4];
      double vref[4], vbound[4]; /* per row (f.N = 4) */
      int ch = qgemm_a8_chunk(&f.p);
      int8_t xq[192];
      float d[6], xqs[6];
      tu_rng r = {(uint64_t)b};
      for (int i = 0; i < 192; i++) xq[i] = (int8_t)((int)(tu_next(&r) % 255) - 127);
      for (int i = 0; i < 6; i++) d[i] = 0.01f * (float)(i + 1);
      for (int j = 0; j < f.p.G; j++) xqs[j] = 0.5f - 0.1f * (float)j;
      for (int64_t n = 0; n < f.N; n++) {
        a->a8_decode(&f.p, n, ua);
        p->a8_decode(&f.p, n, up);
        ck_assert_msg(memcmp(ua, up, 192) == 0, "a8_decode b%d row %lld", b, (long long)n);
        for (int i = 0; i < 192; i++) /* lane order: the code qgemm_a8_lane names */
          ck_assert_uint_eq(up[i], qat_packed_get(f.p.codes + n * f.p.row_bytes, b,
                                                  i / ch * ch + qgemm_a8_lane(&f.p, i % ch)));
        /* reference: lane i of chunk c holds code c * ch + qgemm_a8_lane(i), of group code / g */
        double ref = 0, mag = 0, eps = FLT_EPSILON / 2;
        for (int64_t k0 = 0; k0 < 192; k0 += ch)
          for (int i = 0; i < ch; i++) {
            int64_t j = (k0 + qgemm_a8_lane(&f.p, i)) / g;
            double t = (double)up[k0 + i] * xq[k0 + i] * d[k0 / ch] * qat_packed_scale(&f.p, n, j);
            ref += t;
            mag += fabs(t);
          }
        for (int64_t j = 0; j < f.p.G; j++) {
          double s = qat_packed_scale(&f.p, n, j), zp = qat_packed_zp(&f.p, n, j);
          ref -= s * zp * xqs[j];
          mag += fabs(s * zp * xqs[j]);
        }
        double bound = (6 + f.p.G + 4) * eps * mag * 2;
        float va = a->a8_dot(&f.p, n, NULL, xq, d, xqs), vb = a->a8_dot(&f.p, n, ua, xq, d, xqs);
        float vp = p->a8_dot(&f.p, n, NULL, xq, d, xqs);
        ck_assert_msg(fabs(va - ref) <= bound && fabs(vp - ref) <= bound,
                      "a8_dot b%d g%d: avx2 %.9g portable %.9g ref %.9g bound %.3g", b, g, va, vp, ref, bound);
        ck_assert_msg(va == vb, "a8_dot from the stream and from the buffer differ");
        vr[n] = va;
        vref[n] = ref;
        vbound[n] = bound;
      }
      if (ch == 64) { /* four rows at once, the same sums per row up to F32 order */
        float o4[4];
        a->a8_rows4(&f.p, 0, xq, d, xqs, o4);
        for (int r = 0; r < 4; r++)
          ck_assert_msg(fabs(o4[r] - vref[r]) <= vbound[r], "a8_rows4 b%d g%d row %d: %.9g vs %.9g",
                        b, g, r, o4[r], vr[r]);
      }
      qfix_free(&f);
    }
#else
  tu_skip("not x86-64");
#endif
}
END_TEST

START_TEST(bad_args) {
  qat_backend *be = qat_backend_cpu();
  qfix f;
  qfix_make(&f, 4, 32, 0, 8, 64, 0, 1);
  float x[2 * 64], y[2 * 8];
  qat_tensor tx = qat_view2(x, QAT_F32, QAT_DEV_CPU, 2, 64), ty = qat_view2(y, QAT_F32, QAT_DEV_CPU, 2, 8);
  qat_tensor tbad = qat_view2(y, QAT_F32, QAT_DEV_CPU, 2, 7);
  ck_assert_int_eq(QAT_OP(be, qgemm, 0, 2, &f.p, &tx, &tbad), QAT_EINVAL);
  ck_assert_int_eq(QAT_OP(be, qgemm, 1, 2, &f.p, &tx, &ty), QAT_EINVAL); /* trans: x is [M, N] */
  ck_assert_int_eq(QAT_OP(be, qgemm, 0, 2, NULL, &tx, &ty), QAT_EINVAL);
  qat_tensor th = qat_view2(x, QAT_BF16, QAT_DEV_CPU, 2, 64);
  ck_assert_int_eq(QAT_OP(be, qgemm, 0, 2, &f.p, &th, &ty), QAT_EUNSUPPORTED);
  qat_packed broken = f.p;
  broken.group = 48;
  ck_assert_int_eq(QAT_OP(be, qgemm, 0, 2, &broken, &tx, &ty), QAT_EINVAL);
  qfix_free(&f);
}
END_TEST

int main(void) {
  setenv("QAT_QGEMM_A8_M", "16", 1); /* the int8 path at every small M, not only decode's M = 1 */
  Suite *s = suite_create("qgemm");
  TCase *tc = tcase_create("qgemm");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, against_dequant_gemm);
  tcase_add_test(tc, act8_against_reference);
  tcase_add_test(tc, act8_fallback_and_nan);
  tcase_add_test(tc, threads_independent);
  tcase_add_test(tc, avx2_vs_portable);
  tcase_add_test(tc, bad_args);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
