/* CPU fake-quant ops (host/backend/cpu/fakequant.c) and the quant layer (host/quant/quant.c)
 * against a naive double-precision reference written here straight from REFERENCE.md sections
 * 1-2, on odd shapes (partial groups, per-channel, per-tensor), asym and sym, bits 2, 3, 4, 8.
 *
 * Tolerances (why):
 * - init s: two float roundings ((max - min) and the division): |ds| <= 2^-23 |s|.
 * - forward F32: given the same float s and z, (code - z~) is an exact integer and the product is
 *   rounded once: |err| <= 2^-24 |w_hat|. Elements whose u = w / s lies within 1e-4 of a .5 tie
 *   are excluded (float vs double u may round differently there); they must be rare (< 1%).
 * - forward BF16: one more rounding to 8 significant bits: 2^-8 relative.
 * - gradients: gradient data is nudged so no u is within 3e-3 of a tie, so dw (a mask) is exact;
 *   ds, dz sums differ from the double reference only through float u (2^-24 |u| per term):
 *   |err| <= 2^-22 * sum |G| (|u| + qmax + 1) per group. */
#include "testutil.h"

#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- reference (double) --------------------------------------------------------------------- */

typedef struct ref_q {
  double lo, hi, qp; /* code range and the Qp of the LSQ scale */
  int asym;
} ref_q;

static ref_q ref_make(const qat_qspec *q) {
  ref_q r = {.asym = !q->sym};
  if (r.asym) {
    r.lo = 0;
    r.hi = pow(2, q->bits) - 1;
  } else {
    r.lo = -pow(2, q->bits - 1);
    r.hi = pow(2, q->bits - 1) - 1;
  }
  r.qp = r.hi;
  return r;
}
static double dclamp(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }

/* Group k of W[R, C] as a list of flat indices [first, first + n) per row: per-tensor groups span
 * rows, so iterate by (row range, column range). */
typedef struct grp {
  int64_t r0, r1, c0, c1;
} grp;
static grp group_of(const qat_qspec *q, int64_t R, int64_t C, int64_t k) {
  if (q->group == 0) return (grp){0, R, 0, C};
  if (q->group < 0) return (grp){k, k + 1, 0, C};
  int64_t G = (C + q->group - 1) / q->group, r = k / G, j = k % G;
  int64_t c1 = (j + 1) * q->group < C ? (j + 1) * q->group : C;
  return (grp){r, r + 1, j * q->group, c1};
}
#define FOR_GROUP(gr, C, i)                                                                        \
  for (int64_t _r = (gr).r0; _r < (gr).r1; _r++)                                                   \
    for (int64_t _c = (gr).c0, i = _r * (C) + _c; _c < (gr).c1; _c++, i = _r * (C) + _c)

static double ref_s(double s) { return dclamp(s, 1e-4, 1e4); }
static double ref_z(const ref_q *rq, const float *z, int64_t k) {
  return rq->asym ? dclamp(nearbyint(z[k]), 0, rq->hi) : 0.0;
}
static double ref_fwd1(const ref_q *rq, double w, double s, double zt) {
  double code = dclamp(nearbyint(w / s) + zt, rq->lo, rq->hi);
  return (code - zt) * s;
}
/* distance of u from the nearest .5 tie */
static double tie_dist(double u) {
  double f = u - floor(u);
  return fabs(f - 0.5);
}

/* ---- data --------------------------------------------------------------------------------- */

typedef struct fx {
  qat_qspec q;
  int64_t R, C, ns;
  float *w, *s, *z, *g; /* w, g [R, C]; s, z [ns] */
  qat_tensor tw, ts, tz, tg;
} fx;

static void fx_init(fx *f, qat_qspec q, int64_t R, int64_t C, uint64_t seed) {
  memset(f, 0, sizeof *f);
  f->q = q;
  f->R = R;
  f->C = C;
  int64_t ss[2];
  qat_qspec_sshape(&q, R, C, ss);
  f->ns = ss[0] * ss[1];
  f->w = malloc(sizeof(float) * R * C);
  f->g = malloc(sizeof(float) * R * C);
  f->s = malloc(sizeof(float) * f->ns);
  f->z = malloc(sizeof(float) * f->ns);
  tu_rng rng = {seed};
  tu_fill_normal(&rng, f->w, R * C, 0.05f);
  tu_fill_normal(&rng, f->g, R * C, 1.0f);
  f->tw = qat_view2(f->w, QAT_F32, QAT_DEV_CPU, R, C);
  f->tw.name = "blk0.wq";
  f->tg = qat_view2(f->g, QAT_F32, QAT_DEV_CPU, R, C);
  f->ts = qat_view2(f->s, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
  f->tz = qat_view2(f->z, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
  TU_REQUIRE_OK(QAT_OP(qat_backend_cpu(), fq_init, &q, &f->tw, &f->ts, &f->tz));
}

/* Perturb s (x0.5 for every third group, so each case clips; else x0.6..1.4) and z (fractional, some out of [0, qmax]) so that
 * training-time states are covered, then move w off rounding ties (|u - tie| >= 3e-3). */
static void fx_perturb(fx *f, uint64_t seed) {
  tu_rng rng = {seed};
  ref_q rq = ref_make(&f->q);
  for (int64_t k = 0; k < f->ns; k++) {
    float factor = tu_uniform(&rng, 0.6f, 1.4f);
    f->s[k] *= k % 3 == 0 ? 0.5f : factor;
    if (rq.asym) {
      float off = tu_uniform(&rng, -1.45f, 1.45f);
      if (k % 7 == 3) off = -(float)rq.hi - 2.0f; /* z < 0 after rounding: clamps to 0 */
      if (k % 7 == 5) off = (float)rq.hi + 2.0f;  /* z > qmax: clamps to qmax */
      f->z[k] += off;
    }
  }
  for (int64_t k = 0; k < f->ns; k++) {
    grp gr = group_of(&f->q, f->R, f->C, k);
    double s = ref_s(f->s[k]);
    FOR_GROUP(gr, f->C, i) {
      if (tie_dist(f->w[i] / s) < 3e-3) f->w[i] += (float)(6e-3 * s);
    }
  }
}

static void fx_free(fx *f) {
  free(f->w);
  free(f->g);
  free(f->s);
  free(f->z);
}

static const struct {
  int64_t R, C;
  int group;
} k_shapes[] = {{7, 45, 16}, {5, 33, -1}, {3, 10, 0}, {6, 96, 32},
                {4, 200, 64}, {3, 300, 128}, {9, 130, 128}, {4, 37, 0}};
#define NSHAPES (int)(sizeof k_shapes / sizeof k_shapes[0])
static const int k_bits[] = {2, 3, 4, 8};

#define FOR_CASES(q)                                                                               \
  for (int _si = 0; _si < NSHAPES; _si++)                                                          \
    for (int _bi = 0; _bi < 4; _bi++)                                                              \
      for (int _sym = 0; _sym < 2; _sym++)                                                         \
        for (qat_qspec q = {k_bits[_bi], k_shapes[_si].group, _sym, QAT_QGRAD_EFFICIENTQAT,        \
                            QAT_QINIT_MINMAX, 0};                                                     \
             q.bits; q.bits = 0)

static uint64_t case_seed(const qat_qspec *q, int64_t R, int64_t C) {
  return 1000003ull * (uint64_t)q->bits + 7919ull * (uint64_t)(q->group + 2) +
         104729ull * (uint64_t)q->sym + (uint64_t)(R * 131 + C);
}

/* ---- init ----------------------------------------------------------------------------------- */

START_TEST(test_init_matches_reference) {
  FOR_CASES(q) {
    int64_t R = k_shapes[_si].R, C = k_shapes[_si].C;
    fx f;
    fx_init(&f, q, R, C, case_seed(&q, R, C));
    ref_q rq = ref_make(&q);
    for (int64_t k = 0; k < f.ns; k++) {
      grp gr = group_of(&q, R, C, k);
      double mn = INFINITY, mx = -INFINITY;
      FOR_GROUP(gr, C, i) {
        mn = fmin(mn, f.w[i]);
        mx = fmax(mx, f.w[i]);
      }
      double s = rq.asym ? dclamp((mx - mn) / rq.hi, 1e-4, 1e4)
                         : dclamp(fmax(fabs(mn), fabs(mx)) / rq.hi, 1e-4, 1e4);
      ck_assert_msg(fabs(f.s[k] - s) <= 0x1p-23 * s, "bits %d group %d sym %d k %lld: s %.9g vs %.9g",
                    q.bits, q.group, q.sym, (long long)k, f.s[k], s);
      if (rq.asym) {
        double zr = -dclamp(mn / s, -1e4, 1e4);
        if (tie_dist(zr) > 1e-4)
          ck_assert_msg(f.z[k] == nearbyint(zr), "z %g vs %g", f.z[k], nearbyint(zr));
      }
    }
    fx_free(&f);
  }
}
END_TEST

/* RTN grid: after min-max init every weight is within s/2 of w_hat. Asym: the grid's ends are
 * within s/2 of min and max (z = round(-min / s)), so a clipped extreme is at most s/2 off, except
 * in a one-signed group: z clamps to 0 (min > 0) or qmax (max < 0), the grid [0, (max - min)] or
 * [min - max, 0] then misses up to min (or |max|) of the range. Sym: [Qn s, Qp s] covers
 * [-max|w|, max|w|]. 1e-5 relative covers float rounding of u. */
START_TEST(test_init_forward_error_bound) {
  FOR_CASES(q) {
    int64_t R = k_shapes[_si].R, C = k_shapes[_si].C;
    fx f;
    fx_init(&f, q, R, C, case_seed(&q, R, C) + 1);
    float *out = malloc(sizeof(float) * R * C);
    qat_tensor to = qat_view2(out, QAT_F32, QAT_DEV_CPU, R, C);
    TU_REQUIRE_OK(QAT_OP(qat_backend_cpu(), fq_forward, &q, &f.tw, &f.ts, &f.tz, &to));
    for (int64_t k = 0; k < f.ns; k++) {
      grp gr = group_of(&q, R, C, k);
      double mn = INFINITY, mx = -INFINITY;
      FOR_GROUP(gr, C, i) {
        mn = fmin(mn, f.w[i]);
        mx = fmax(mx, f.w[i]);
      }
      double shift = q.sym ? 0 : mn > 0 ? mn : mx < 0 ? -mx : 0;
      double bound = fmax(0.5 * f.s[k] * (1 + 1e-5), shift * (1 + 1e-5));
      FOR_GROUP(gr, C, i) ck_assert_msg(fabs(out[i] - f.w[i]) <= bound, "err %g > %g",
                                        fabs(out[i] - f.w[i]), bound);
    }
    free(out);
    fx_free(&f);
  }
}
END_TEST

START_TEST(test_zero_groups) {
  /* 3 x 40, g = 16: row 1 all zero, group 0 of row 2 zero; and all-zero per-tensor/per-channel */
  int groups[] = {16, -1, 0};
  for (int gi = 0; gi < 3; gi++)
    for (int sym = 0; sym < 2; sym++) {
      qat_qspec q = {4, groups[gi], sym, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0};
      int64_t R = 3, C = 40, ss[2];
      qat_qspec_sshape(&q, R, C, ss);
      float w[120], out[120], g[120], dw[120], s[9], z[9], ds[9], dz[9];
      tu_rng rng = {42};
      tu_fill_normal(&rng, w, 120, 1.0f);
      tu_fill_normal(&rng, g, 120, 1.0f);
      for (int c = 0; c < 40; c++) w[40 + c] = 0.0f;
      for (int c = 0; c < 16; c++) w[80 + c] = 0.0f;
      if (groups[gi] == 0) memset(w, 0, sizeof w);
      qat_tensor tw = qat_view2(w, QAT_F32, QAT_DEV_CPU, R, C), to = tw, tg = tw, tdw = tw;
      to.data = out;
      tg.data = g;
      tdw.data = dw;
      qat_tensor ts = qat_view2(s, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]), tz = ts, tds = ts, tdz = ts;
      tz.data = z;
      tds.data = ds;
      tdz.data = dz;
      qat_backend *be = qat_backend_cpu();
      TU_REQUIRE_OK(QAT_OP(be, fq_init, &q, &tw, &ts, &tz));
      TU_REQUIRE_OK(QAT_OP(be, fq_forward, &q, &tw, &ts, &tz, &to));
      TU_REQUIRE_OK(QAT_OP(be, fq_backward, &q, &tw, &ts, &tz, &tg, &tdw, &tds, &tdz));
      for (int i = 0; i < 120; i++) {
        ck_assert(isfinite(out[i]) && isfinite(dw[i]));
        if (w[i] == 0.0f) ck_assert_float_eq(out[i], 0.0f);
      }
      for (int64_t k = 0; k < ss[0] * ss[1]; k++) {
        ck_assert(isfinite(s[k]) && s[k] >= QAT_S_MIN && isfinite(ds[k]));
        if (!sym) ck_assert(isfinite(z[k]) && isfinite(dz[k]));
      }
      /* the all-zero groups themselves: s clamps to 1e-4 and z to 0 */
      int64_t kz = groups[gi] == 16 ? 3 : groups[gi] == -1 ? 1 : 0; /* row 1 group 0 */
      ck_assert_float_eq(s[kz], QAT_S_MIN);
      if (!sym) ck_assert(z[kz] == 0.0f && !signbit(z[kz]));
    }
}
END_TEST

/* ---- MSE init (q.init = QAT_QINIT_MSE, backend.h qat_qinit) ---------------------------------
 * Candidates are defined in float: (s_i, z_i) = the min-max formula of REFERENCE.md section 1 in
 * float on the range shrunk by p_i = (float)(1 - i/100) (written out again here, flt_mse_cand).
 * Reference: each candidate's error from the double forward and pow(|e|, 2.4) summed in double;
 * the first smallest wins. The op sums a float |e|^2.4 accurate to 4e-7 relative in double, so:
 * - its (s, z) must be exactly one candidate's (stored as min-max makes them);
 * - that candidate's reference error must be within kMseTol relative of the reference minimum
 *   (4e-7 per evaluation from the power, two evaluations compared; float vs double forward differ
 *   only at rounding ties, where either neighbour is at the same distance);
 * - it must not be above min-max's (candidate 0) reference error by more than kMseTol;
 * - the chosen index equals the reference's in most groups (they differ only where two
 *   candidates' errors are within ~1e-6 of each other). */
static const double kMseTol = 1e-6;

typedef struct mse_stats {
  int64_t groups, same, clipped; /* groups; chosen index == reference's; chosen index > 0 */
} mse_stats;

/* float: s, z of candidate i, REFERENCE.md section 1 in float on the float-shrunk range */
static void flt_mse_cand(const ref_q *rq, int i, float mn, float mx, float *s, float *z) {
  float p = (float)(1.0 - i / 100.0), a = p * mn, b = p * mx, hi = (float)rq->hi;
  if (rq->asym) {
    float sv = (b - a) / hi;
    sv = sv < 1e-4f ? 1e-4f : sv > 1e4f ? 1e4f : sv;
    float u = a / sv;
    u = u < -1e4f ? -1e4f : u > 1e4f ? 1e4f : u;
    *s = sv;
    *z = rintf(-u) + 0.0f;
  } else {
    float sv = fmaxf(fabsf(a), fabsf(b)) / hi;
    *s = sv < 1e-4f ? 1e-4f : sv > 1e4f ? 1e4f : sv;
    *z = 0.0f;
  }
}
static double ref_group_err24(const ref_q *rq, const float *w, int64_t C, grp gr, double s,
                              double zt) {
  double e = 0;
  FOR_GROUP(gr, C, i) e += pow(fabs(ref_fwd1(rq, w[i], s, zt) - w[i]), 2.4);
  return e;
}

/* Runs the CPU MSE init on w[R, C] and checks every group against the reference; s_out, z_out
 * (ns each, may be NULL) get the op's result. */
static void mse_check(qat_qspec q, const float *w, int64_t R, int64_t C, mse_stats *st,
                      float *s_out, float *z_out) {
  q.init = QAT_QINIT_MSE;
  int64_t ss[2];
  qat_qspec_sshape(&q, R, C, ss);
  int64_t ns = ss[0] * ss[1];
  float *s = malloc(sizeof(float) * ns), *z = malloc(sizeof(float) * ns);
  qat_tensor tw = qat_view2((void *)w, QAT_F32, QAT_DEV_CPU, R, C);
  qat_tensor ts = qat_view2(s, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]), tz = ts;
  tz.data = z;
  TU_REQUIRE_OK(QAT_OP(qat_backend_cpu(), fq_init, &q, &tw, &ts, q.sym ? NULL : &tz));
  ref_q rq = ref_make(&q);
  for (int64_t k = 0; k < ns; k++) {
    grp gr = group_of(&q, R, C, k);
    float mn = INFINITY, mx = -INFINITY;
    FOR_GROUP(gr, C, i) {
      mn = fminf(mn, w[i]);
      mx = fmaxf(mx, w[i]);
    }
    int best = 0, got = -1;
    double err[QAT_MSE_STEPS];
    for (int c = 0; c < QAT_MSE_STEPS; c++) {
      float fs, fz;
      flt_mse_cand(&rq, c, mn, mx, &fs, &fz);
      err[c] = ref_group_err24(&rq, w, C, gr, fs, rq.asym ? dclamp(nearbyint(fz), 0, rq.hi) : 0);
      if (err[c] < err[best]) best = c;
      if (got < 0 && fs == s[k] && (q.sym || fz == z[k])) got = c;
    }
    ck_assert_msg(got >= 0, "bits %d group %d sym %d k %lld: s %.9g z %g is no candidate's",
                  q.bits, q.group, q.sym, (long long)k, s[k], q.sym ? 0.0f : z[k]);
    double e_op = err[got], e_mm = err[0], best_err = err[best];
    /* an exact tie (same w_hat everywhere, so the same float sums too) keeps the earlier one */
    ck_assert_msg(e_op != best_err || got == best, "k %lld: tie at err %g: chose %d, not %d",
                  (long long)k, e_op, got, best);
    ck_assert_msg(e_op - best_err <= kMseTol * best_err,
                  "bits %d group %d sym %d k %lld: chosen %d err %.9g, reference %d err %.9g",
                  q.bits, q.group, q.sym, (long long)k, got, e_op, best, best_err);
    ck_assert_msg(e_op <= e_mm * (1 + kMseTol), "k %lld: mse err %.9g above min-max %.9g",
                  (long long)k, e_op, e_mm);
    st->groups++;
    st->same += got == best;
    st->clipped += got > 0;
    if (s_out) s_out[k] = s[k];
    if (z_out) z_out[k] = q.sym ? 0.0f : z[k];
  }
  free(s);
  free(z);
}

START_TEST(test_mse_init_matches_reference) {
  mse_stats st = {0};
  FOR_CASES(q) {
    int64_t R = k_shapes[_si].R, C = k_shapes[_si].C;
    float *w = malloc(sizeof(float) * R * C);
    tu_rng rng = {case_seed(&q, R, C) + 11};
    tu_fill_normal(&rng, w, R * C, 0.05f);
    mse_check(q, w, R, C, &st, NULL, NULL);
    free(w);
  }
  /* long groups (many early-exit chunks), per-channel and per-tensor over many rows */
  static const struct {
    int64_t R, C;
    int group, bits, sym;
  } big[] = {{4, 1000, -1, 2, 0}, {3, 1001, 512, 3, 1}, {64, 100, 0, 2, 0}, {33, 67, 0, 4, 1}};
  for (int bi = 0; bi < 4; bi++) {
    qat_qspec q = {big[bi].bits, big[bi].group, big[bi].sym, QAT_QGRAD_EFFICIENTQAT,
                   QAT_QINIT_MINMAX, 0};
    int64_t R = big[bi].R, C = big[bi].C;
    float *w = malloc(sizeof(float) * R * C);
    tu_rng rng = {case_seed(&q, R, C) + 12};
    tu_fill_normal(&rng, w, R * C, 0.02f);
    mse_check(q, w, R, C, &st, NULL, NULL);
    free(w);
  }
  /* Gaussian groups of 8..300 at 2..8 bits: clipping wins in most (GPTQ's observation), and float
   * vs double near-ties between candidates are rare */
  ck_assert_msg(st.clipped * 2 > st.groups, "%lld of %lld groups clipped", (long long)st.clipped,
                (long long)st.groups);
  ck_assert_msg(st.same * 100 >= st.groups * 97, "%lld of %lld groups pick the reference's index",
                (long long)st.same, (long long)st.groups);
}
END_TEST

/* Special groups: all zero, all equal (positive, negative), one moderate outlier, a partial
 * trailing group, for group 32, per-channel and per-tensor, bits 2, 3, 4, 8, sym and asym. */
START_TEST(test_mse_init_special_groups) {
  enum { R = 6, C = 70 }; /* group 32: 32 + 32 + 6 */
  float w[R * C];
  tu_rng rng = {2024};
  tu_fill_normal(&rng, w, R * C, 0.05f);
  for (int c = 0; c < C; c++) w[1 * C + c] = 0.0f;            /* row 1: all zero */
  for (int c = 0; c < 32; c++) w[2 * C + c] = 0.3f;           /* row 2, group 0: all equal */
  for (int c = 32; c < 64; c++) w[2 * C + c] = -0.2f;         /* row 2, group 1: all equal < 0 */
  for (int c = 0; c < 32; c++) w[3 * C + c] = tu_uniform(&rng, -0.1f, 0.1f);
  w[3 * C + 7] = 0.3f;                                        /* row 3, group 0: one outlier */
  for (int c = 0; c < C; c++) w[5 * C + c] = 0.125f;          /* row 5: all equal, whole row */
  static const int groups[] = {32, -1, 0};
  static const int bits[] = {2, 3, 4, 8};
  for (int gi = 0; gi < 3; gi++)
    for (int bi = 0; bi < 4; bi++)
      for (int sym = 0; sym < 2; sym++) {
        qat_qspec q = {bits[bi], groups[gi], sym, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0};
        mse_stats st = {0};
        float s[R * 3], z[R * 3];
        mse_check(q, w, R, C, &st, s, z);
        if (groups[gi] == 0) continue;
        int64_t G = groups[gi] == 32 ? 3 : 1;
        /* all-zero groups: every candidate is s = 1e-4, z = 0 with error 0: candidate 0 */
        ck_assert_float_eq(s[1 * G], QAT_S_MIN);
        ck_assert(z[1 * G] == 0.0f && !signbit(z[1 * G]));
      }
  /* the outlier group at 2 bits, asym: clipping the outlier clearly beats min-max */
  qat_qspec q = {2, 32, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0};
  mse_stats st = {0};
  float s[R * 3], z[R * 3];
  mse_check(q, w, R, C, &st, s, z);
  ref_q rq = ref_make(&q);
  grp gr = group_of(&q, R, C, 3 * 3);
  float s0, z0, mn = INFINITY, mx = -INFINITY;
  FOR_GROUP(gr, C, i) {
    mn = fminf(mn, w[i]);
    mx = fmaxf(mx, w[i]);
  }
  flt_mse_cand(&rq, 0, mn, mx, &s0, &z0);
  ck_assert_msg(s[9] < 0.9f * s0, "outlier group: s %g vs min-max %g", s[9], s0);
  double e_mse = ref_group_err24(&rq, w, C, gr, s[9], ref_z(&rq, z, 9));
  double e_mm = ref_group_err24(&rq, w, C, gr, s0, dclamp(nearbyint(z0), 0, rq.hi));
  ck_assert_msg(e_mse < 0.9 * e_mm, "outlier group: err %g vs min-max %g", e_mse, e_mm);
}
END_TEST

/* A non-finite weight is the same error as with min-max init (per group and per-tensor); an
 * unknown init mode is rejected. */
START_TEST(test_mse_init_validation) {
  qat_backend *be = qat_backend_cpu();
  qat_qspec q = {3, 16, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MSE, 0};
  fx f;
  fx_init(&f, q, 3, 40, 12);
  float keep = f.w[45];
  f.w[45] = NAN;
  qat_status st = QAT_OP(be, fq_init, &q, &f.tw, &f.ts, &f.tz);
  ck_assert_int_eq(st, QAT_EINVAL);
  ck_assert_msg(strstr(qat_last_error(), "blk0.wq") && strstr(qat_last_error(), "[1, 5]"), "%s",
                qat_last_error());
  f.w[45] = keep;
  f.w[119] = INFINITY;
  ck_assert_int_eq(QAT_OP(be, fq_init, &q, &f.tw, &f.ts, &f.tz), QAT_EINVAL);
  qat_qspec qt = {3, 0, 1, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MSE, 0}; /* per-tensor, sym */
  qat_tensor t1 = qat_view2(f.s, QAT_F32, QAT_DEV_CPU, 1, 1);
  ck_assert_int_eq(QAT_OP(be, fq_init, &qt, &f.tw, &t1, NULL), QAT_EINVAL);
  f.w[119] = 0.0f;
  qat_qspec qb = q;
  qb.init = (qat_qinit)2;
  ck_assert_int_eq(QAT_OP(be, fq_init, &qb, &f.tw, &f.ts, &f.tz), QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "quant.init"));
  ck_assert_int_eq(qat_qspec_check(&qb), QAT_EINVAL);
  fx_free(&f);
}
END_TEST

/* ---- forward -------------------------------------------------------------------------------- */

static void check_forward(fx *f, qat_dtype out_dt, const char *what) {
  const qat_qspec *q = &f->q;
  ref_q rq = ref_make(q);
  int64_t n = f->R * f->C, skipped = 0;
  void *out = malloc(sizeof(float) * n);
  qat_tensor to = qat_view2(out, out_dt, QAT_DEV_CPU, f->R, f->C);
  TU_REQUIRE_OK(QAT_OP(qat_backend_cpu(), fq_forward, q, &f->tw, &f->ts, &f->tz, &to));
  double rel = out_dt == QAT_F32 ? 0x1p-24 : 0x1p-8 * (1 + 0x1p-15);
  for (int64_t k = 0; k < f->ns; k++) {
    grp gr = group_of(q, f->R, f->C, k);
    double s = ref_s(f->s[k]), zt = ref_z(&rq, f->z, k);
    FOR_GROUP(gr, f->C, i) {
      if (tie_dist(f->w[i] / s) < 1e-4) {
        skipped++;
        continue;
      }
      double ref = ref_fwd1(&rq, f->w[i], s, zt);
      double got = out_dt == QAT_F32 ? ((float *)out)[i] : qat_bf16_to_f32(((uint16_t *)out)[i]);
      ck_assert_msg(fabs(got - ref) <= rel * fabs(ref), "%s bits %d group %d sym %d [%lld]: %.9g vs %.9g",
                    what, q->bits, q->group, q->sym, (long long)i, got, ref);
    }
  }
  ck_assert_msg(skipped * 100 <= n, "%lld of %lld elements near ties", (long long)skipped,
                (long long)n);
  free(out);
}

START_TEST(test_forward_matches_reference) {
  FOR_CASES(q) {
    int64_t R = k_shapes[_si].R, C = k_shapes[_si].C;
    fx f;
    fx_init(&f, q, R, C, case_seed(&q, R, C) + 2);
    check_forward(&f, QAT_F32, "init");
    fx_perturb(&f, case_seed(&q, R, C) + 3);
    check_forward(&f, QAT_F32, "perturbed");
    check_forward(&f, QAT_BF16, "perturbed bf16");
    fx_free(&f);
  }
}
END_TEST

START_TEST(test_forward_nan_propagates) {
  /* a NaN weight in the forward (no init check there) must not turn into a finite code */
  qat_qspec q = {4, 16, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0};
  float w[32] = {0}, s[2] = {0.1f, 0.1f}, z[2] = {8, 8}, out[32];
  w[5] = NAN;
  qat_tensor tw = qat_view2(w, QAT_F32, QAT_DEV_CPU, 1, 32), to = tw;
  to.data = out;
  qat_tensor ts = qat_view2(s, QAT_F32, QAT_DEV_CPU, 1, 2), tz = ts;
  tz.data = z;
  TU_REQUIRE_OK(QAT_OP(qat_backend_cpu(), fq_forward, &q, &tw, &ts, &tz, &to));
  ck_assert(isnan(out[5]));
  ck_assert_float_eq(out[4], 0.0f);
}
END_TEST

/* Exact .5 ties (s a power of two, so u = w / s is exact): round half to even, never away from
 * zero, in the forward, the backward's r - u and the init's zero point. */
START_TEST(test_ties_round_half_even) {
  qat_backend *be = qat_backend_cpu();
  for (int sym = 0; sym < 2; sym++) {
    qat_qspec q = {4, -1, sym, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0};
    float w[6] = {0.125f, 0.375f, 0.625f, -0.125f, -0.375f, -0.625f}; /* u = +-0.5, 1.5, 2.5 */
    float want[6] = {0.0f, 0.5f, 0.5f, 0.0f, -0.5f, -0.5f};
    float g[6] = {1, 2, 3, 4, 5, 6}, out[6], dw[6], s = 0.25f, z = 8.0f, ds = 0, dz = 0;
    qat_tensor tw = qat_view2(w, QAT_F32, QAT_DEV_CPU, 1, 6), to = tw, tg = tw, tdw = tw;
    to.data = out;
    tg.data = g;
    tdw.data = dw;
    qat_tensor ts = qat_view2(&s, QAT_F32, QAT_DEV_CPU, 1, 1), tz = ts, tds = ts, tdz = ts;
    tz.data = &z;
    tds.data = &ds;
    tdz.data = &dz;
    TU_REQUIRE_OK(QAT_OP(be, fq_forward, &q, &tw, &ts, &tz, &to));
    for (int i = 0; i < 6; i++) ck_assert_float_eq(out[i], want[i]);
    TU_REQUIRE_OK(QAT_OP(be, fq_backward, &q, &tw, &ts, &tz, &tg, &tdw, &tds, &tdz));
    /* r - u = -0.5, 0.5, -0.5, 0.5, -0.5, 0.5 weighted by g: 1.5 */
    ck_assert_float_eq(ds, 1.5f);
  }
  /* init: s = (3.125 + 0.625) / 15 = 0.25 exactly, z = round(2.5) = 2 */
  qat_qspec q = {4, 0, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0};
  float w[3] = {-0.625f, 1.0f, 3.125f}, s = 0, z = 0;
  qat_tensor tw = qat_view2(w, QAT_F32, QAT_DEV_CPU, 1, 3);
  qat_tensor ts = qat_view2(&s, QAT_F32, QAT_DEV_CPU, 1, 1), tz = ts;
  tz.data = &z;
  TU_REQUIRE_OK(QAT_OP(be, fq_init, &q, &tw, &ts, &tz));
  ck_assert_float_eq(s, 0.25f);
  ck_assert_float_eq(z, 2.0f);
}
END_TEST

/* ---- backward ------------------------------------------------------------------------------- */

typedef struct bw {
  float *dw, *ds, *dz;
  qat_tensor tdw, tds, tdz;
} bw;
static void bw_run(fx *f, const qat_qspec *q, const float *g, bw *b) {
  int64_t n = f->R * f->C;
  b->dw = malloc(sizeof(float) * n);
  b->ds = malloc(sizeof(float) * f->ns);
  b->dz = malloc(sizeof(float) * f->ns);
  for (int64_t k = 0; k < f->ns; k++) b->ds[k] = b->dz[k] = 12345.0f; /* sentinel */
  b->tdw = f->tw;
  b->tdw.data = b->dw;
  b->tds = f->ts;
  b->tds.data = b->ds;
  b->tdz = f->ts;
  b->tdz.data = b->dz;
  qat_tensor tg = f->tg;
  tg.data = (void *)g;
  TU_REQUIRE_OK(QAT_OP(qat_backend_cpu(), fq_backward, q, &f->tw, &f->ts, &f->tz, &tg, &b->tdw,
                       &b->tds, &b->tdz));
}
static void bw_free(bw *b) {
  free(b->dw);
  free(b->ds);
  free(b->dz);
}

/* Reference gradients of group k: ds (LSQ+ form, no scale), dz, and the error bound. */
static void ref_group_grad(const fx *f, const ref_q *rq, int64_t k, const float *g, double *ds,
                           double *dz, double *bound, int64_t *n) {
  grp gr = group_of(&f->q, f->R, f->C, k);
  double s = ref_s(f->s[k]), zt = ref_z(rq, f->z, k);
  *ds = *dz = *bound = 0;
  *n = 0;
  FOR_GROUP(gr, f->C, i) {
    double u = f->w[i] / s, r = nearbyint(u), code = r + zt;
    double d = code < rq->lo ? rq->lo - zt : code > rq->hi ? rq->hi - zt : r - u;
    int in = code >= rq->lo && code <= rq->hi;
    *ds += g[i] * d;
    if (!in) *dz += -s * g[i];
    *bound += fabs(g[i]) * (fabs(u) + rq->hi - rq->lo + 1) + (in ? 0 : s * fabs(g[i]));
    (*n)++;
  }
}

START_TEST(test_backward_matches_reference) {
  FOR_CASES(q) {
    int64_t R = k_shapes[_si].R, C = k_shapes[_si].C;
    fx f;
    fx_init(&f, q, R, C, case_seed(&q, R, C) + 4);
    fx_perturb(&f, case_seed(&q, R, C) + 5);
    ref_q rq = ref_make(&q);
    int64_t nin = 0, nout = 0;
    for (int mode = 0; mode < 3; mode++) {
      qat_qspec qm = q;
      qm.grad = (qat_qgrad)mode;
      bw b;
      bw_run(&f, &qm, f.g, &b);
      for (int64_t k = 0; k < f.ns; k++) {
        grp gr = group_of(&q, R, C, k);
        double s = ref_s(f.s[k]), zt = ref_z(&rq, f.z, k);
        FOR_GROUP(gr, C, i) { /* dw: the STE mask, exactly */
          double code = nearbyint(f.w[i] / s) + zt;
          int in = code >= rq.lo && code <= rq.hi;
          ck_assert_float_eq(b.dw[i], in ? f.g[i] : 0.0f);
          if (mode == 0) in ? nin++ : nout++;
        }
        if (mode == QAT_QGRAD_STE) { /* s, z get nothing: untouched */
          ck_assert_float_eq(b.ds[k], 12345.0f);
          ck_assert_float_eq(b.dz[k], 12345.0f);
          continue;
        }
        double ds, dz, bound;
        int64_t n;
        ref_group_grad(&f, &rq, k, f.g, &ds, &dz, &bound, &n);
        double gs = mode == QAT_QGRAD_LSQ ? 1.0 / sqrt((double)n * rq.qp) : 1.0;
        ck_assert_msg(fabs(b.ds[k] - ds * gs) <= 0x1p-22 * bound * gs,
                      "mode %d bits %d group %d sym %d k %lld: ds %.9g vs %.9g", mode, q.bits,
                      q.group, q.sym, (long long)k, b.ds[k], ds * gs);
        if (rq.asym)
          ck_assert_msg(fabs(b.dz[k] - dz * gs) <= 0x1p-22 * bound * gs, "dz %.9g vs %.9g",
                        b.dz[k], dz * gs);
        else
          ck_assert_float_eq(b.dz[k], 12345.0f); /* sym: no zero point, dz untouched */
      }
      bw_free(&b);
    }
    /* the data must exercise both sides of the clip, or the test proves little */
    ck_assert_int_gt(nin, 0);
    ck_assert_int_gt(nout, 0);
    fx_free(&f);
  }
}
END_TEST

/* LSQ = EfficientQAT times gs = 1 / sqrt(n_group * Qp), n_group the weights sharing s (the
 * partial count for a trailing partial group, R * C per-tensor). */
START_TEST(test_lsq_scale) {
  FOR_CASES(q) {
    int64_t R = k_shapes[_si].R, C = k_shapes[_si].C;
    fx f;
    fx_init(&f, q, R, C, case_seed(&q, R, C) + 6);
    fx_perturb(&f, case_seed(&q, R, C) + 7);
    qat_qspec ql = q;
    ql.grad = QAT_QGRAD_LSQ;
    bw be, bl;
    bw_run(&f, &q, f.g, &be);
    bw_run(&f, &ql, f.g, &bl);
    ref_q rq = ref_make(&q);
    for (int64_t k = 0; k < f.ns; k++) {
      grp gr = group_of(&q, R, C, k);
      int64_t n = (gr.r1 - gr.r0) * (gr.c1 - gr.c0);
      double gs = 1.0 / sqrt((double)n * rq.qp);
      ck_assert_msg(fabs(bl.ds[k] - be.ds[k] * gs) <= 0x1p-22 * fabs(be.ds[k] * gs), "ds lsq");
      if (rq.asym) ck_assert(fabs(bl.dz[k] - be.dz[k] * gs) <= 0x1p-22 * fabs(be.dz[k] * gs));
      ck_assert_float_eq(bl.dw[k], be.dw[k]);
    }
    bw_free(&be);
    bw_free(&bl);
    fx_free(&f);
  }
}
END_TEST

/* Finite differences of the true forward in s. Away from ties the forward is linear in s on the
 * piece that holds s: d/ds sum G w_hat = sum_I G round(u) + sum_out G (bound - z~), which is the
 * LSQ+ ds plus sum_I G u (the STE term round(u) - u drops -u). So FD = ds + sum_i dw_i * u_i,
 * an identity between the op's ds and dw and the reference forward evaluated at s +- h.
 * In z the forward is piecewise constant (round, clamp): dz is checked by its closed form above
 * and here by FD of the STE surrogate (round(z) -> z, exact on the current piece). */
START_TEST(test_backward_finite_differences) {
  FOR_CASES(q) {
    int64_t R = k_shapes[_si].R, C = k_shapes[_si].C;
    fx f;
    fx_init(&f, q, R, C, case_seed(&q, R, C) + 8);
    fx_perturb(&f, case_seed(&q, R, C) + 9);
    ref_q rq = ref_make(&q);
    bw b;
    bw_run(&f, &q, f.g, &b);
    for (int64_t k = 0; k < f.ns; k++) {
      grp gr = group_of(&q, R, C, k);
      double s = ref_s(f.s[k]), zt = ref_z(&rq, f.z, k), h = 1e-6 * s;
      if (f.s[k] < 2 * QAT_S_MIN) continue; /* clamped scale: s~ is flat in s */
      double fp = 0, fm = 0, ste_term = 0, bound = 0, zp = 0, zm = 0, hz = 1e-3;
      FOR_GROUP(gr, C, i) {
        double u = f.w[i] / s;
        fp += f.g[i] * ref_fwd1(&rq, f.w[i], s + h, zt);
        fm += f.g[i] * ref_fwd1(&rq, f.w[i], s - h, zt);
        ste_term += b.dw[i] * u;
        bound += fabs(f.g[i]) * (fabs(u) + rq.hi - rq.lo + 1);
        /* surrogate in z: code decided at z~, value (code - z) s with z continuous */
        double code = dclamp(nearbyint(u) + zt, rq.lo, rq.hi);
        int in = nearbyint(u) + zt >= rq.lo && nearbyint(u) + zt <= rq.hi;
        double vzp = in ? nearbyint(u) * s : (code - (zt + hz)) * s;
        double vzm = in ? nearbyint(u) * s : (code - (zt - hz)) * s;
        zp += f.g[i] * vzp;
        zm += f.g[i] * vzm;
      }
      double fd = (fp - fm) / (2 * h);
      ck_assert_msg(fabs(fd - (b.ds[k] + ste_term)) <= 0x1p-20 * bound,
                    "bits %d group %d sym %d k %lld: FD %.9g vs ds + sum dw u %.9g", q.bits,
                    q.group, q.sym, (long long)k, fd, b.ds[k] + ste_term);
      if (rq.asym) {
        double fdz = (zp - zm) / (2 * hz);
        ck_assert_msg(fabs(fdz - b.dz[k]) <= 0x1p-20 * bound * s, "dz FD %.9g vs %.9g", fdz,
                      b.dz[k]);
      }
    }
    bw_free(&b);
    fx_free(&f);
  }
}
END_TEST

/* The backward is linear in G (REFERENCE.md section 2): back(a G1 + b G2) = a back(G1) + b
 * back(G2). Power-of-two a, b keep the combined G exact up to one rounding, so dw is exact. */
START_TEST(test_backward_linear_in_g) {
  qat_qspec cases[] = {{4, 16, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0},
                       {2, -1, 0, QAT_QGRAD_LSQ, QAT_QINIT_MINMAX, 0},
                       {3, 0, 1, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0}};
  for (int ci = 0; ci < 3; ci++) {
    qat_qspec q = cases[ci];
    int64_t R = 5, C = 45, n = R * C;
    fx f;
    fx_init(&f, q, R, C, 77 + ci);
    fx_perturb(&f, 78 + ci);
    float *g2 = malloc(sizeof(float) * n), *gc = malloc(sizeof(float) * n);
    tu_rng rng = {99};
    tu_fill_normal(&rng, g2, n, 1.0f);
    const float a = 0.5f, bb = -2.0f;
    for (int64_t i = 0; i < n; i++) gc[i] = a * f.g[i] + bb * g2[i];
    bw b1, b2, bc;
    bw_run(&f, &q, f.g, &b1);
    bw_run(&f, &q, g2, &b2);
    bw_run(&f, &q, gc, &bc);
    for (int64_t i = 0; i < n; i++) ck_assert_float_eq(bc.dw[i], a * b1.dw[i] + bb * b2.dw[i]);
    for (int64_t k = 0; k < f.ns; k++) {
      /* each side is a float-rounded sum of <= 225 terms |G d| <= ~10: rounding ~1e-7 */
      double lin = a * (double)b1.ds[k] + bb * (double)b2.ds[k];
      ck_assert_msg(fabs(bc.ds[k] - lin) <= 1e-5 * (fabs(lin) + 1), "ds %g vs %g", bc.ds[k], lin);
      if (!q.sym) {
        double lz = a * (double)b1.dz[k] + bb * (double)b2.dz[k];
        ck_assert_msg(fabs(bc.dz[k] - lz) <= 1e-5 * (fabs(lz) + f.s[k]), "dz %g vs %g", bc.dz[k],
                      lz);
      }
    }
    bw_free(&b1);
    bw_free(&b2);
    bw_free(&bc);
    free(g2);
    free(gc);
    fx_free(&f);
  }
}
END_TEST

START_TEST(test_backward_null_outputs) {
  qat_qspec q = {4, 16, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0};
  fx f;
  fx_init(&f, q, 4, 40, 5);
  fx_perturb(&f, 6);
  bw full;
  bw_run(&f, &q, f.g, &full);
  float ds[12];
  qat_tensor tds = f.ts;
  tds.data = ds;
  TU_REQUIRE_OK(QAT_OP(qat_backend_cpu(), fq_backward, &q, &f.tw, &f.ts, &f.tz, &f.tg, NULL,
                       &tds, NULL));
  for (int k = 0; k < 12; k++) ck_assert_float_eq(ds[k], full.ds[k]);
  bw_free(&full);
  fx_free(&f);
}
END_TEST

/* ---- validation ----------------------------------------------------------------------------- */

START_TEST(test_validation) {
  qat_backend *be = qat_backend_cpu();
  qat_qspec q = {4, 16, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0};
  fx f;
  fx_init(&f, q, 3, 40, 11);
  float out[120];
  qat_tensor to = f.tw;
  to.data = out;
  to.name = NULL;
  qat_status st;
  for (int bits = 0; bits <= 10; bits += 1) {
    if (bits >= 2 && bits <= 8) continue;
    qat_qspec qb = q;
    qb.bits = bits;
    st = QAT_OP(be, fq_forward, &qb, &f.tw, &f.ts, &f.tz, &to);
    ck_assert_int_eq(st, QAT_EINVAL);
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "bits"));
  }
  qat_qspec qg = q;
  qg.group = -2;
  ck_assert_int_eq(QAT_OP(be, fq_init, &qg, &f.tw, &f.ts, &f.tz), QAT_EINVAL);
  /* wrong s shape: [3, 4] where [3, 3] is expected */
  qat_tensor bad = f.ts;
  bad.shape[1] = 4;
  bad.name = "blk0.wq.s";
  st = QAT_OP(be, fq_forward, &q, &f.tw, &bad, &f.tz, &to);
  ck_assert_int_eq(st, QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "blk0.wq.s"));
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "[3, 3]"));
  /* s of a per-tensor spec must be [1, 1] */
  qat_qspec qt = q;
  qt.group = 0;
  ck_assert_int_eq(QAT_OP(be, fq_init, &qt, &f.tw, &f.ts, &f.tz), QAT_EINVAL);
  /* dtypes */
  bad = f.ts;
  bad.dtype = QAT_BF16;
  ck_assert_int_eq(QAT_OP(be, fq_init, &q, &f.tw, &bad, &f.tz), QAT_EINVAL);
  qat_tensor o16 = to;
  o16.dtype = QAT_F16;
  ck_assert_int_eq(QAT_OP(be, fq_forward, &q, &f.tw, &f.ts, &f.tz, &o16), QAT_EINVAL);
  /* asym needs z */
  st = QAT_OP(be, fq_forward, &q, &f.tw, &f.ts, NULL, &to);
  ck_assert_int_eq(st, QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "z"));
  /* sym does not */
  qat_qspec qs = q;
  qs.sym = 1;
  TU_REQUIRE_OK(QAT_OP(be, fq_forward, &qs, &f.tw, &f.ts, NULL, &to));
  /* g of the wrong shape, w on the wrong device */
  qat_tensor gbad = f.tg;
  gbad.shape[1] = 39;
  ck_assert_int_eq(QAT_OP(be, fq_backward, &q, &f.tw, &f.ts, &f.tz, &gbad, NULL, NULL, NULL),
                   QAT_EINVAL);
  qat_tensor wdev = f.tw;
  wdev.device = QAT_DEV_CUDA;
  ck_assert_int_eq(QAT_OP(be, fq_forward, &q, &wdev, &f.ts, &f.tz, &to), QAT_EINVAL);
  /* non-finite weights at init name the tensor and the element */
  float keep = f.w[45];
  f.w[45] = NAN;
  st = QAT_OP(be, fq_init, &q, &f.tw, &f.ts, &f.tz);
  ck_assert_int_eq(st, QAT_EINVAL);
  ck_assert_msg(strstr(qat_last_error(), "blk0.wq") && strstr(qat_last_error(), "[1, 5]"), "%s",
                qat_last_error());
  f.w[45] = keep;
  f.w[119] = -INFINITY;
  ck_assert_int_eq(QAT_OP(be, fq_init, &q, &f.tw, &f.ts, &f.tz), QAT_EINVAL);
  fx_free(&f);
}
END_TEST

/* ---- quant layer ---------------------------------------------------------------------------- */

START_TEST(test_spec_parse_format) {
  static const struct {
    const char *in, *canon;
    int bits, group, sym;
    qat_qgrad grad;
    qat_qinit init;
    int scale_f16;
  } ok[] = {
      {"rtn:4g128", "rtn:4g128", 4, 128, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0},
      {"rtn:2g64:sym", "rtn:2g64:sym", 2, 64, 1, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0},
      {"rtn:3gc", "rtn:3gc", 3, -1, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0},
      {"rtn:8gt", "rtn:8gt", 8, 0, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0},
      {"W4g128", "rtn:4g128", 4, 128, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0},
      {"RTN:2G64:ASYM:LSQ", "rtn:2g64:lsq", 2, 64, 0, QAT_QGRAD_LSQ, QAT_QINIT_MINMAX, 0},
      {"4g32:ste:sym", "rtn:4g32:sym:ste", 4, 32, 1, QAT_QGRAD_STE, QAT_QINIT_MINMAX, 0},
      {"rtn:2g32:mse", "rtn:2g32:mse", 2, 32, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MSE, 0},
      {"rtn:4g128:minmax", "rtn:4g128", 4, 128, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0},
      {"W2G64:LSQ:MSE:SYM", "rtn:2g64:sym:mse:lsq", 2, 64, 1, QAT_QGRAD_LSQ, QAT_QINIT_MSE, 0},
      {"rtn:4g32:f16:sym", "rtn:4g32:sym:f16", 4, 32, 1, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 1},
      {"rtn:4g32:F32", "rtn:4g32", 4, 32, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    qat_qspec q;
    TU_REQUIRE_OK(qat_quant_parse(ok[i].in, &q));
    ck_assert_int_eq(q.bits, ok[i].bits);
    ck_assert_int_eq(q.group, ok[i].group);
    ck_assert_int_eq(q.sym, ok[i].sym);
    ck_assert_int_eq(q.grad, ok[i].grad);
    ck_assert_int_eq(q.init, ok[i].init);
    ck_assert_int_eq(q.scale_f16, ok[i].scale_f16);
    char buf[64];
    ck_assert_str_eq(qat_quant_format(&q, buf, sizeof buf), ok[i].canon);
    qat_qspec q2;
    TU_REQUIRE_OK(qat_quant_parse(buf, &q2));
    ck_assert(memcmp(&q, &q2, sizeof q) == 0);
  }
  const char *bad[] = {"",           "rtn:",        "rtn:9g128",       "rtn:1g128", "rtn:4g",
                       "rtn:4g0",    "rtn:4g-1",    "gptq:4g128",      "rtn:4x128", "rtn:g128",
                       "rtn:4g128:foo", "rtn:4g128:sym:asym", "rtn:4gq", "rtn:4g12x",
                       "rtn:4g128:mse:minmax", "rtn:4g128:msee", "rtn:4g128:f16:f32", "rtn:4g128:f8",
                       NULL};
  for (int i = 0; bad[i]; i++) {
    qat_qspec q;
    qat_status st = qat_quant_parse(bad[i], &q);
    ck_assert_msg(st == QAT_EUSAGE, "\"%s\" -> %s", bad[i], qat_status_name(st));
    ck_assert_ptr_nonnull(strstr(qat_last_error(), "quant spec"));
  }
  ck_assert_int_eq(qat_quant_parse(NULL, &(qat_qspec){0}), QAT_EUSAGE);
}
END_TEST

START_TEST(test_bits_per_weight) {
  qat_qspec q;
  TU_REQUIRE_OK(qat_quant_parse("rtn:2g64", &q));
  ck_assert_double_eq_tol(qat_quant_bpw(&q, 4096, 4096), 2.28125, 1e-12); /* paper: 2.28 */
  TU_REQUIRE_OK(qat_quant_parse("rtn:4g128", &q));
  ck_assert_double_eq_tol(qat_quant_bpw(&q, 4096, 4096), 4.15625, 1e-12);
  TU_REQUIRE_OK(qat_quant_parse("rtn:4g128:sym", &q));
  ck_assert_double_eq_tol(qat_quant_bpw(&q, 4096, 4096), 4.125, 1e-12);
  TU_REQUIRE_OK(qat_quant_parse("rtn:3gc", &q));
  ck_assert_double_eq_tol(qat_quant_bpw(&q, 10, 19), 3 + 19.0 / 19, 1e-12);
  TU_REQUIRE_OK(qat_quant_parse("rtn:8gt", &q));
  ck_assert_double_eq_tol(qat_quant_bpw(&q, 4, 6), 8 + 24.0 / 24, 1e-12);
}
END_TEST

START_TEST(test_rtn_f32_stats) {
  qat_qspec q;
  TU_REQUIRE_OK(qat_quant_parse("rtn:4g16", &q));
  int64_t R = 6, C = 45, n = R * C;
  float *w = malloc(sizeof(float) * n), *o1 = malloc(sizeof(float) * n),
        *o2 = malloc(sizeof(float) * n), s[18], z[18];
  tu_rng rng = {3};
  tu_fill_normal(&rng, w, n, 0.02f);
  qat_quant_stats st;
  TU_REQUIRE_OK(qat_quant_rtn_f32_sz(&q, w, R, C, o1, s, z, &st));
  /* independent statistics from the returned matrix */
  double mx = 0, se = 0, sw = 0, smax = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)o1[i] - w[i];
    mx = fmax(mx, fabs(d));
    se += d * d;
    sw += (double)w[i] * w[i];
  }
  for (int k = 0; k < 18; k++) smax = fmax(smax, s[k]);
  ck_assert_int_eq(st.n, n);
  ck_assert_double_eq_tol(st.max_abs_err, mx, 1e-12);
  ck_assert_double_eq_tol(st.rmse, sqrt(se / n), 1e-12);
  ck_assert_double_eq_tol(st.rel_rmse, sqrt(se / sw), 1e-12);
  ck_assert(st.max_abs_err > 0 && st.max_abs_err <= smax);
  /* 4-bit min-max on Gaussian data: relative RMSE is a few percent, far from 0 and from 1 */
  ck_assert(st.rel_rmse > 0.01 && st.rel_rmse < 0.2);
  /* in place gives the same matrix and the same statistics */
  memcpy(o2, w, sizeof(float) * n);
  qat_quant_stats st2;
  TU_REQUIRE_OK(qat_quant_rtn_f32(&q, o2, R, C, o2, &st2));
  ck_assert(memcmp(o1, o2, sizeof(float) * n) == 0);
  ck_assert_double_eq(st2.rmse, st.rmse);
  /* errors pass up */
  w[7] = NAN;
  ck_assert_int_eq(qat_quant_rtn_f32(&q, w, R, C, o1, NULL), QAT_EINVAL);
  q.bits = 12;
  ck_assert_int_eq(qat_quant_rtn_f32(&q, w, R, C, o1, NULL), QAT_EINVAL);
  free(w);
  free(o1);
  free(o2);
}
END_TEST

int main(void) {
  Suite *s = suite_create("fakequant");
  TCase *tc = tcase_create("fakequant");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_init_matches_reference);
  tcase_add_test(tc, test_init_forward_error_bound);
  tcase_add_test(tc, test_zero_groups);
  tcase_add_test(tc, test_mse_init_matches_reference);
  tcase_add_test(tc, test_mse_init_special_groups);
  tcase_add_test(tc, test_mse_init_validation);
  tcase_add_test(tc, test_forward_matches_reference);
  tcase_add_test(tc, test_forward_nan_propagates);
  tcase_add_test(tc, test_ties_round_half_even);
  tcase_add_test(tc, test_backward_matches_reference);
  tcase_add_test(tc, test_lsq_scale);
  tcase_add_test(tc, test_backward_finite_differences);
  tcase_add_test(tc, test_backward_linear_in_g);
  tcase_add_test(tc, test_backward_null_outputs);
  tcase_add_test(tc, test_validation);
  tcase_add_test(tc, test_spec_parse_format);
  tcase_add_test(tc, test_bits_per_weight);
  tcase_add_test(tc, test_rtn_f32_stats);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
