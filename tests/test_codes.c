/* CPU ops on frozen integer codes (host/backend/cpu/codes.c): fq_codes, dq_forward, dq_backward.
 * - fq_forward(w) == dq_forward(fq_codes(w)) bit for bit (F32 and BF16 w_hat), on odd shapes,
 *   bits 2..8, sym / asym, group > 0 with a partial trailing group, per-channel, per-tensor, with
 *   weights beyond both clamps, scales below QAT_S_MIN and zero points outside [0, qmax];
 *   the codes themselves against the formula of REFERENCE.md section 1 written here.
 * - dq_backward against a double-precision reference (tolerance: the op sums in double and
 *   rounds once to float, so 1 float rounding, 2^-24 relative; we allow 1e-6 relative to the
 *   group's sum of |g * (q - z)|), BF16 g equal to F32 g holding the same values (exact: same
 *   double sums), and against central differences of L(s) = sum G * dq_forward(s): dq_forward is
 *   linear in s inside the clamp, so the difference is exact up to the F32 rounding of w_hat
 *   (2^-24 relative per element, summed: 1e-5 of the group's sum of |G * (q - z)| * s is far
 *   above that and far below any wrong factor). Groups whose s is clamped are skipped there
 *   (their gradient is straight-through by contract, which differences cannot see).
 * - validation: every argument error is QAT_EINVAL and names the tensor; NaN weights refused. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ccase {
  int64_t R, C;
  int group, bits, sym;
} ccase;

static const ccase k_cases[] = {
    {7, 45, 16, 4, 0}, /* partial trailing group (13) */
    {5, 33, -1, 3, 1}, /* per-channel sym */
    {3, 10, 0, 2, 0},  /* per-tensor */
    {6, 50, 7, 2, 1},  /* odd group, 2-bit sym */
    {9, 13, 64, 8, 0}, /* group wider than the row: one partial group per row */
    {11, 129, 128, 8, 1}, /* 8-bit sym: codes use all of 0..255 */
    {4, 31, 0, 3, 1},  /* per-tensor sym */
    {1, 1, -1, 4, 0},  /* a single weight */
};
#define NCASES (int)(sizeof k_cases / sizeof k_cases[0])

typedef struct fix {
  qat_qspec q;
  int64_t R, C, ns;
  float *w, *s, *z;
  qat_tensor tw, ts, tz;
} fix;

/* Random w, s, z: most weights inside the code range, some far outside (both clamps); one in
 * five scales below QAT_S_MIN for small groups; zero points fractional and sometimes out of
 * range. */
static void fix_make(fix *f, const ccase *cc, uint64_t seed) {
  tu_rng r = {seed};
  f->q = (qat_qspec){.bits = cc->bits, .group = cc->group, .sym = cc->sym,
                     .grad = QAT_QGRAD_EFFICIENTQAT};
  f->R = cc->R;
  f->C = cc->C;
  int64_t ss[2];
  qat_qspec_sshape(&f->q, f->R, f->C, ss);
  f->ns = ss[0] * ss[1];
  f->w = malloc(sizeof(float) * (size_t)(f->R * f->C));
  f->s = malloc(sizeof(float) * (size_t)f->ns);
  f->z = malloc(sizeof(float) * (size_t)f->ns);
  int qmax = (1 << cc->bits) - 1;
  for (int64_t k = 0; k < f->ns; k++) {
    f->s[k] = tu_next(&r) % 5 == 0 ? 3e-5f : tu_uniform(&r, 0.01f, 0.2f);
    f->z[k] = tu_uniform(&r, -2.0f, (float)qmax + 2.0f);
  }
  for (int64_t i = 0; i < f->R * f->C; i++) {
    float v = tu_normal(&r) * 0.04f * (float)(1 << (cc->bits - 1));
    if (tu_next(&r) % 11 == 0) v *= 50.0f;
    f->w[i] = v;
  }
  f->tw = qat_view2(f->w, QAT_F32, QAT_DEV_CPU, f->R, f->C);
  f->tw.name = "test.w";
  f->ts = qat_view2(f->s, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
  f->ts.name = "test.s";
  f->tz = qat_view2(f->z, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
  f->tz.name = "test.z";
}

static void fix_free(fix *f) {
  free(f->w);
  free(f->s);
  free(f->z);
}

static const qat_tensor *zp(fix *f) { return f->q.sym ? NULL : &f->tz; }

/* Group index of W[r, c]. */
static int64_t gidx(const fix *f, int64_t r, int64_t c) {
  if (f->q.group == 0) return 0;
  if (f->q.group < 0) return r;
  int64_t G = (f->C + f->q.group - 1) / f->q.group;
  return r * G + c / f->q.group;
}

/* REFERENCE.md section 1: clamped step, rounded clamped zero point, code range, stored offset. */
static void ref_group(const fix *f, int64_t k, float *st, float *zt, float *lo, float *hi,
                      float *off) {
  *st = fminf(fmaxf(f->s[k], QAT_S_MIN), QAT_S_MAX);
  if (f->q.sym) {
    *lo = -(float)(1 << (f->q.bits - 1));
    *hi = (float)((1 << (f->q.bits - 1)) - 1);
    *zt = 0.0f;
    *off = (float)(1 << (f->q.bits - 1));
  } else {
    *lo = 0.0f;
    *hi = (float)((1 << f->q.bits) - 1);
    *zt = fminf(fmaxf(nearbyintf(f->z[k]), 0.0f), *hi);
    *off = 0.0f;
  }
}

static uint8_t *codes_of(fix *f) {
  uint8_t *q = malloc((size_t)(f->R * f->C));
  qat_tensor tq = qat_view2(q, QAT_U8, QAT_DEV_CPU, f->R, f->C);
  TU_REQUIRE_OK(QAT_OP(qat_backend_cpu(), fq_codes, &f->q, &f->tw, &f->ts, zp(f), &tq));
  return q;
}

START_TEST(test_roundtrip_bit_exact) {
  qat_backend *be = qat_backend_cpu();
  int64_t clamped = 0, total = 0;
  for (int ci = 0; ci < NCASES; ci++) {
    fix f;
    fix_make(&f, &k_cases[ci], 100 + (uint64_t)ci);
    int64_t n = f.R * f.C;
    uint8_t *q = codes_of(&f);
    /* the codes by the formula */
    for (int64_t r = 0; r < f.R; r++)
      for (int64_t c = 0; c < f.C; c++) {
        float st, zt, lo, hi, off;
        ref_group(&f, gidx(&f, r, c), &st, &zt, &lo, &hi, &off);
        float u = nearbyintf(f.w[r * f.C + c] / st) + zt;
        float code = fminf(fmaxf(u, lo), hi);
        clamped += u < lo || u > hi;
        total++;
        ck_assert_msg(q[r * f.C + c] == (uint8_t)(code + off),
                      "case %d [%lld, %lld]: code %u, formula %g", ci, (long long)r, (long long)c,
                      q[r * f.C + c], (double)(code + off));
      }
    qat_tensor tq = qat_view2(q, QAT_U8, QAT_DEV_CPU, f.R, f.C);
    for (int bf = 0; bf < 2; bf++) {
      qat_dtype dt = bf ? QAT_BF16 : QAT_F32;
      size_t es = qat_dtype_size(dt);
      void *a = malloc((size_t)n * es), *b = malloc((size_t)n * es);
      qat_tensor ta = qat_view2(a, dt, QAT_DEV_CPU, f.R, f.C), tb = qat_view2(b, dt, QAT_DEV_CPU, f.R, f.C);
      TU_REQUIRE_OK(QAT_OP(be, fq_forward, &f.q, &f.tw, &f.ts, zp(&f), &ta));
      TU_REQUIRE_OK(QAT_OP(be, dq_forward, &f.q, &tq, &f.ts, zp(&f), &tb));
      ck_assert_msg(memcmp(a, b, (size_t)n * es) == 0, "case %d %s: dq_forward(fq_codes(w)) != fq_forward(w)",
                    ci, qat_dtype_name(dt));
      free(a);
      free(b);
    }
    free(q);
    fix_free(&f);
  }
  /* the clamps were exercised */
  ck_assert_int_gt(clamped, total / 50);
  ck_assert_int_lt(clamped, total / 2);
}
END_TEST

/* Round-half-to-even ties and -0: w / s exactly k + 0.5 and tiny negative weights. */
START_TEST(test_ties) {
  float w[8] = {0.5f, 1.5f, 2.5f, -0.5f, -1e-9f, -0.0f, 3.5f, -2.5f}, s = 1.0f, z = 4.0f;
  uint8_t q[8];
  qat_qspec spec = {.bits = 4, .group = -1, .sym = 0};
  qat_tensor tw = qat_view2(w, QAT_F32, QAT_DEV_CPU, 1, 8), ts = qat_view2(&s, QAT_F32, QAT_DEV_CPU, 1, 1);
  qat_tensor tz = qat_view2(&z, QAT_F32, QAT_DEV_CPU, 1, 1), tq = qat_view2(q, QAT_U8, QAT_DEV_CPU, 1, 8);
  TU_REQUIRE_OK(QAT_OP(qat_backend_cpu(), fq_codes, &spec, &tw, &ts, &tz, &tq));
  const uint8_t want[8] = {4, 6, 6, 4, 4, 4, 8, 2};
  for (int i = 0; i < 8; i++) ck_assert_int_eq(q[i], want[i]);
  float a[8], b[8];
  qat_tensor ta = qat_view2(a, QAT_F32, QAT_DEV_CPU, 1, 8), tb = qat_view2(b, QAT_F32, QAT_DEV_CPU, 1, 8);
  TU_REQUIRE_OK(QAT_OP(qat_backend_cpu(), fq_forward, &spec, &tw, &ts, &tz, &ta));
  TU_REQUIRE_OK(QAT_OP(qat_backend_cpu(), dq_forward, &spec, &tq, &ts, &tz, &tb));
  ck_assert(memcmp(a, b, sizeof a) == 0);
}
END_TEST

START_TEST(test_backward_reference) {
  qat_backend *be = qat_backend_cpu();
  for (int ci = 0; ci < NCASES; ci++) {
    fix f;
    fix_make(&f, &k_cases[ci], 200 + (uint64_t)ci);
    int64_t n = f.R * f.C;
    uint8_t *q = codes_of(&f);
    qat_tensor tq = qat_view2(q, QAT_U8, QAT_DEV_CPU, f.R, f.C);
    float *g = malloc(sizeof(float) * (size_t)n), *ds = malloc(sizeof(float) * (size_t)f.ns);
    float *ds16 = malloc(sizeof(float) * (size_t)f.ns);
    uint16_t *g16 = malloc(sizeof(uint16_t) * (size_t)n);
    tu_rng r = {300 + (uint64_t)ci};
    for (int64_t i = 0; i < n; i++) {
      g16[i] = qat_f32_to_bf16(tu_normal(&r));
      g[i] = qat_bf16_to_f32(g16[i]); /* values representable in both dtypes */
    }
    double *ref = calloc((size_t)f.ns, sizeof *ref), *mag = calloc((size_t)f.ns, sizeof *mag);
    for (int64_t rr = 0; rr < f.R; rr++)
      for (int64_t c = 0; c < f.C; c++) {
        int64_t k = gidx(&f, rr, c);
        float st, zt, lo, hi, off;
        ref_group(&f, k, &st, &zt, &lo, &hi, &off);
        double d = ((double)q[rr * f.C + c] - off - zt) * g[rr * f.C + c];
        ref[k] += d;
        mag[k] += fabs(d);
      }
    int64_t ss[2];
    qat_qspec_sshape(&f.q, f.R, f.C, ss);
    qat_tensor tds = qat_view2(ds, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
    qat_tensor tds16 = qat_view2(ds16, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
    qat_tensor tg = qat_view2(g, QAT_F32, QAT_DEV_CPU, f.R, f.C);
    qat_tensor tg16 = qat_view2(g16, QAT_BF16, QAT_DEV_CPU, f.R, f.C);
    TU_REQUIRE_OK(QAT_OP(be, dq_backward, &f.q, &tq, zp(&f), &tg, &tds));
    TU_REQUIRE_OK(QAT_OP(be, dq_backward, &f.q, &tq, zp(&f), &tg16, &tds16));
    for (int64_t k = 0; k < f.ns; k++) {
      ck_assert_msg(fabs(ds[k] - ref[k]) <= 1e-6 * mag[k] + 1e-30, "case %d ds[%lld] = %.9g, ref %.9g",
                    ci, (long long)k, ds[k], ref[k]);
      ck_assert_msg(ds[k] == ds16[k], "case %d ds[%lld]: F32 g %.9g vs BF16 g %.9g", ci,
                    (long long)k, ds[k], ds16[k]);
    }
    free(ref);
    free(mag);
    free(g);
    free(g16);
    free(ds);
    free(ds16);
    free(q);
    fix_free(&f);
  }
}
END_TEST

/* L(s) = sum_i G_i * dq_forward(q, s)_i in double. */
static double loss_s(fix *f, qat_tensor *tq, const float *G, float *wh) {
  qat_tensor tw = qat_view2(wh, QAT_F32, QAT_DEV_CPU, f->R, f->C);
  TU_REQUIRE_OK(QAT_OP(qat_backend_cpu(), dq_forward, &f->q, tq, &f->ts, zp(f), &tw));
  double L = 0;
  for (int64_t i = 0; i < f->R * f->C; i++) L += (double)G[i] * wh[i];
  return L;
}

START_TEST(test_backward_finite_differences) {
  int checked = 0;
  for (int ci = 0; ci < NCASES; ci++) {
    fix f;
    fix_make(&f, &k_cases[ci], 400 + (uint64_t)ci);
    int64_t n = f.R * f.C;
    uint8_t *q = codes_of(&f);
    qat_tensor tq = qat_view2(q, QAT_U8, QAT_DEV_CPU, f.R, f.C);
    float *G = malloc(sizeof(float) * (size_t)n), *wh = malloc(sizeof(float) * (size_t)n);
    float *ds = malloc(sizeof(float) * (size_t)f.ns);
    tu_rng r = {500 + (uint64_t)ci};
    for (int64_t i = 0; i < n; i++) G[i] = tu_normal(&r);
    int64_t ss[2];
    qat_qspec_sshape(&f.q, f.R, f.C, ss);
    qat_tensor tds = qat_view2(ds, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
    qat_tensor tg = qat_view2(G, QAT_F32, QAT_DEV_CPU, f.R, f.C);
    TU_REQUIRE_OK(QAT_OP(qat_backend_cpu(), dq_backward, &f.q, &tq, zp(&f), &tg, &tds));
    for (int64_t k = 0; k < f.ns; k++) {
      float s0 = f.s[k];
      if (s0 < 2 * QAT_S_MIN) continue; /* clamped: straight-through by contract */
      /* the group's scale of the sum, for the noise term */
      double mag = 0;
      float st, zt, lo, hi, off;
      ref_group(&f, k, &st, &zt, &lo, &hi, &off);
      for (int64_t i = 0; i < n; i++)
        if (gidx(&f, i / f.C, i % f.C) == k) mag += fabs(G[i] * ((double)q[i] - off - zt));
      float e = 1e-2f * s0, sp = s0 + e, sm = s0 - e;
      f.s[k] = sp;
      double Lp = loss_s(&f, &tq, G, wh);
      f.s[k] = sm;
      double Lm = loss_s(&f, &tq, G, wh);
      f.s[k] = s0;
      double fd = (Lp - Lm) / ((double)sp - sm);
      ck_assert_msg(fabs(fd - ds[k]) <= 1e-5 * mag + 1e-30,
                    "case %d group %lld: difference %.9g vs dq_backward %.9g", ci, (long long)k,
                    fd, ds[k]);
      checked++;
    }
    free(G);
    free(wh);
    free(ds);
    free(q);
    fix_free(&f);
  }
  ck_assert_int_gt(checked, 70); /* about 4 in 5 of the 108 groups */
}
END_TEST

START_TEST(test_validation) {
  qat_backend *be = qat_backend_cpu();
  fix f;
  fix_make(&f, &k_cases[0], 9); /* 7 x 45, g16, asym 4-bit: s, z [7, 3] */
  uint8_t *q = codes_of(&f);
  float *wh = malloc(sizeof(float) * 7 * 45), ds[21];
  qat_tensor tq = qat_view2(q, QAT_U8, QAT_DEV_CPU, 7, 45), tw = qat_view2(wh, QAT_F32, QAT_DEV_CPU, 7, 45);
  qat_tensor tds = qat_view2(ds, QAT_F32, QAT_DEV_CPU, 7, 3);
  tq.name = "test.codes";
  /* codes of the wrong dtype */
  qat_tensor qf = qat_view2(wh, QAT_F32, QAT_DEV_CPU, 7, 45);
  qf.name = "bad.codes";
  ck_assert_int_eq(QAT_OP(be, dq_forward, &f.q, &qf, &f.ts, &f.tz, &tw), QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "bad.codes"));
  ck_assert_int_eq(QAT_OP(be, dq_backward, &f.q, &qf, &f.tz, &tw, &tds), QAT_EINVAL);
  /* s of the wrong shape */
  qat_tensor sbad = qat_view2(f.s, QAT_F32, QAT_DEV_CPU, 7, 2);
  sbad.name = "bad.s";
  ck_assert_int_eq(QAT_OP(be, dq_forward, &f.q, &tq, &sbad, &f.tz, &tw), QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "bad.s"));
  ck_assert_int_eq(QAT_OP(be, fq_codes, &f.q, &f.tw, &sbad, &f.tz, &tq), QAT_EINVAL);
  /* asym without z */
  ck_assert_int_eq(QAT_OP(be, dq_forward, &f.q, &tq, &f.ts, NULL, &tw), QAT_EINVAL);
  ck_assert_int_eq(QAT_OP(be, dq_backward, &f.q, &tq, NULL, &tw, &tds), QAT_EINVAL);
  ck_assert_int_eq(QAT_OP(be, fq_codes, &f.q, &f.tw, &f.ts, NULL, &tq), QAT_EINVAL);
  /* missing s, wrong output dtypes / shapes */
  ck_assert_int_eq(QAT_OP(be, dq_forward, &f.q, &tq, NULL, &f.tz, &tw), QAT_EINVAL);
  qat_tensor wi = qat_view2(wh, QAT_I32, QAT_DEV_CPU, 7, 45);
  wi.name = "bad.w_hat";
  ck_assert_int_eq(QAT_OP(be, dq_forward, &f.q, &tq, &f.ts, &f.tz, &wi), QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "bad.w_hat"));
  qat_tensor dsb = qat_view2(ds, QAT_F32, QAT_DEV_CPU, 3, 7);
  dsb.name = "bad.ds";
  ck_assert_int_eq(QAT_OP(be, dq_backward, &f.q, &tq, &f.tz, &tw, &dsb), QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "bad.ds"));
  qat_tensor gb = qat_view2(wh, QAT_F32, QAT_DEV_CPU, 45, 7);
  ck_assert_int_eq(QAT_OP(be, dq_backward, &f.q, &tq, &f.tz, &gb, &tds), QAT_EINVAL);
  qat_tensor qs = qat_view2(q, QAT_U8, QAT_DEV_CPU, 7, 44);
  ck_assert_int_eq(QAT_OP(be, fq_codes, &f.q, &f.tw, &f.ts, &f.tz, &qs), QAT_EINVAL);
  /* a tensor on another device */
  qat_tensor qd = tq;
  qd.device = QAT_DEV_CUDA;
  ck_assert_int_eq(QAT_OP(be, dq_forward, &f.q, &qd, &f.ts, &f.tz, &tw), QAT_EINVAL);
  /* bad spec */
  qat_qspec b9 = f.q;
  b9.bits = 9;
  ck_assert_int_eq(QAT_OP(be, dq_forward, &b9, &tq, &f.ts, &f.tz, &tw), QAT_EINVAL);
  ck_assert_int_eq(QAT_OP(be, fq_codes, &b9, &f.tw, &f.ts, &f.tz, &tq), QAT_EINVAL);
  /* a NaN weight has no code: refused with its position */
  f.w[2 * 45 + 17] = NAN;
  ck_assert_int_eq(QAT_OP(be, fq_codes, &f.q, &f.tw, &f.ts, &f.tz, &tq), QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "test.w"));
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "[2, 17]"));
  free(wh);
  free(q);
  fix_free(&f);
}
END_TEST

int main(void) {
  Suite *s = suite_create("codes");
  TCase *tc = tcase_create("cpu");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_roundtrip_bit_exact);
  tcase_add_test(tc, test_ties);
  tcase_add_test(tc, test_backward_reference);
  tcase_add_test(tc, test_backward_finite_differences);
  tcase_add_test(tc, test_validation);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
