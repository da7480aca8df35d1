/* CUDA fake-quant (cuda/fakequant.cu) against the CPU reference ops on odd shapes: scalar and
 * vector paths, sub-warp / block / split-block reductions, partial groups, per-channel,
 * per-tensor, and a 4096 x 4096 case. Skips without a GPU.
 *
 * Tolerances (why):
 * - init s, z: exact. Both sides take the same min / max and do the same IEEE float operations.
 * - forward F32: both do the same float operations (IEEE division, rintf): allow 1 ulp
 *   (2^-23 relative) as "exact-ish"; BF16 output: one bf16 rounding, 2^-8 relative.
 * - backward dw: exact (a mask times G). ds, dz: normalized error (max |a - b| / max |b|)
 *   < 1e-5: the GPU sums in float in a different order than the CPU's double sums; the
 *   expected error is ~1e-7 (float epsilon times log of the group length).
 * - MSE init: both evaluate the same candidates (s, z bit for bit), but the GPU sums |e|^2.4 in
 *   float (double per-tensor) in another order than the CPU's double sums, with FMA-contracted
 *   arithmetic inside the power: a near-tie between two candidates (errors within ~1e-6) may go
 *   either way. So (s, z) must be equal in most groups (>= 97%), and in every group the error
 *   sum |w_hat - w|^2.4 (double, host) of the GPU's choice within 1e-5 relative of the CPU's.
 *   Exact ties (constant groups: candidates with the same s, z~ have bit-identical errors on
 *   each side) must resolve to the same (s, z) exactly: the earliest candidate. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


static qat_backend *g_cuda;

static qat_tensor dev_new(qat_dtype dt, int64_t r, int64_t c, const char *name) {
  void *p = NULL;
  size_t bytes = (size_t)(r * c) * qat_dtype_size(dt);
  TU_REQUIRE_OK(g_cuda->alloc(g_cuda, &p, bytes));
  qat_tensor t = qat_view2(p, dt, QAT_DEV_CUDA, r, c);
  t.name = name;
  return t;
}
static void dev_up(qat_tensor *t, const void *host) {
  TU_REQUIRE_OK(g_cuda->upload(g_cuda, t->data, host, qat_nbytes(t)));
}
static void dev_down(void *host, const qat_tensor *t) {
  TU_REQUIRE_OK(g_cuda->sync(g_cuda));
  TU_REQUIRE_OK(g_cuda->download(g_cuda, host, t->data, qat_nbytes(t)));
}
static void dev_free(qat_tensor *t) { g_cuda->free(g_cuda, t->data); }

static int need_gpu(void) { return tu_need_gpu(&g_cuda); }

typedef struct pcase {
  int64_t R, C;
  int group;
} pcase;
static const pcase k_cases[] = {
    {7, 45, 16},     /* scalar, partial group, sub-warp lanes 16 */
    {5, 33, -1},     /* per-channel scalar, small */
    {3, 10, 0},      /* per-tensor, tiny (split into one piece) */
    {6, 50, 7},      /* odd group */
    {8, 96, 32},     /* vector, lanes 8 */
    {33, 1000, 128}, /* vector, partial trailing group (104) */
    {64, 256, 128},  /* vector, full warps */
    {4, 3000, 2048}, /* long groups: block path, partial */
    {17, 4100, -1},  /* per-channel, vector, block path */
    {9, 2051, -1},   /* per-channel, scalar, block path */
    {300, 301, 0},   /* per-tensor, scalar, split blocks + finish */
    {512, 512, 0},   /* per-tensor, vector, split blocks + finish */
};
#define NCASES (int)(sizeof k_cases / sizeof k_cases[0])

static double max_rel_diff(const float *a, const float *b, int64_t n, int64_t *where) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    double r = d == 0 ? 0 : d / fmax(fabs((double)b[i]), 1e-30);
    if (r > m || isnan(d)) {
      m = isnan(d) ? INFINITY : r;
      *where = i;
    }
  }
  return m;
}

/* One parity case: init, forward (F32 and BF16), backward (F32 and BF16 g, all modes). */
static void parity_case(qat_qspec q, int64_t R, int64_t C, uint64_t seed) {
  qat_backend *cpu = qat_backend_cpu();
  int64_t n = R * C, ss[2];
  qat_qspec_sshape(&q, R, C, ss);
  int64_t ns = ss[0] * ss[1];
  float *w = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n);
  float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
  uint16_t *g16 = malloc(2 * n), *o16a = malloc(2 * n), *o16b = malloc(2 * n);
  float *s = malloc(sizeof(float) * ns), *z = malloc(sizeof(float) * ns);
  float *s2 = malloc(sizeof(float) * ns), *z2 = malloc(sizeof(float) * ns);
  float *dsa = malloc(sizeof(float) * ns), *dsb = malloc(sizeof(float) * ns);
  float *dza = malloc(sizeof(float) * ns), *dzb = malloc(sizeof(float) * ns);
  ck_assert(w && g && a && b && g16 && o16a && o16b && s && z && s2 && z2 && dsa && dsb && dza && dzb);
  tu_rng rng = {seed};
  tu_fill_normal(&rng, w, n, 0.05f);
  tu_fill_normal(&rng, g, n, 1.0f);
  /* G as the GPU sees it in BF16, and as the CPU gets it (exactly representable in F32) */
  qat_convert_from_f32(g, g16, QAT_BF16, n);
  memset(z, 0, sizeof(float) * ns);
  memset(z2, 0, sizeof(float) * ns);

  qat_tensor hw = qat_view2(w, QAT_F32, QAT_DEV_CPU, R, C), hs = qat_view2(s, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
  qat_tensor hz = hs, ha = hw, hg = hw, hds = hs, hdz = hs, ho16 = qat_view2(o16a, QAT_BF16, QAT_DEV_CPU, R, C);
  hz.data = z;
  ha.data = a;
  hg.data = g;
  hds.data = dsa;
  hdz.data = dza;
  qat_tensor dw_ = dev_new(QAT_F32, R, C, "blk.w"), ds_ = dev_new(QAT_F32, ss[0], ss[1], "blk.s");
  qat_tensor dz_ = dev_new(QAT_F32, ss[0], ss[1], "blk.z"), dout = dev_new(QAT_F32, R, C, "w_hat");
  qat_tensor dout16 = dev_new(QAT_BF16, R, C, "w_hat16"), dg = dev_new(QAT_F32, R, C, "g");
  qat_tensor dg16 = dev_new(QAT_BF16, R, C, "g16"), ddw = dev_new(QAT_F32, R, C, "dw");
  qat_tensor dds = dev_new(QAT_F32, ss[0], ss[1], "ds"), ddz = dev_new(QAT_F32, ss[0], ss[1], "dz");
  dev_up(&dw_, w);
  dev_up(&dg, g);
  dev_up(&dg16, g16);
  dev_up(&dz_, z2);

  /* init */
  TU_REQUIRE_OK(QAT_OP(cpu, fq_init, &q, &hw, &hs, &hz));
  TU_REQUIRE_OK(QAT_OP(g_cuda, fq_init, &q, &dw_, &ds_, &dz_));
  dev_down(s2, &ds_);
  dev_down(z2, &dz_);
  for (int64_t k = 0; k < ns; k++) {
    ck_assert_msg(s[k] == s2[k], "init s[%lld] cpu %.9g cuda %.9g (bits %d group %d sym %d [%lld, %lld])",
                  (long long)k, s[k], s2[k], q.bits, q.group, q.sym, (long long)R, (long long)C);
    if (!q.sym) ck_assert_msg(z[k] == z2[k], "init z[%lld] cpu %g cuda %g", (long long)k, z[k], z2[k]);
  }

  /* training-like state: scaled s (some groups clip), fractional and out-of-range z */
  for (int64_t k = 0; k < ns; k++) {
    s[k] *= k % 3 == 0 ? 0.5f : tu_uniform(&rng, 0.6f, 1.4f);
    if (!q.sym) z[k] += k % 5 == 4 ? 300.0f : tu_uniform(&rng, -1.45f, 1.45f);
  }
  dev_up(&ds_, s);
  dev_up(&dz_, z);

  /* forward */
  int64_t at = 0;
  TU_REQUIRE_OK(QAT_OP(cpu, fq_forward, &q, &hw, &hs, &hz, &ha));
  TU_REQUIRE_OK(QAT_OP(g_cuda, fq_forward, &q, &dw_, &ds_, &dz_, &dout));
  dev_down(b, &dout);
  double e = max_rel_diff(b, a, n, &at);
  ck_assert_msg(e <= 0x1p-23, "forward F32: rel diff %g at %lld (cpu %.9g cuda %.9g)", e,
                (long long)at, a[at], b[at]);
  TU_REQUIRE_OK(QAT_OP(cpu, fq_forward, &q, &hw, &hs, &hz, &ho16));
  TU_REQUIRE_OK(QAT_OP(g_cuda, fq_forward, &q, &dw_, &ds_, &dz_, &dout16));
  dev_down(o16b, &dout16);
  for (int64_t i = 0; i < n; i++) {
    double x = qat_bf16_to_f32(o16a[i]), y = qat_bf16_to_f32(o16b[i]);
    ck_assert_msg(fabs(x - y) <= 0x1p-8 * fabs(x), "forward BF16 [%lld]: cpu %g cuda %g",
                  (long long)i, x, y);
  }

  /* backward: F32 g and BF16 g, every gradient mode */
  float *gq = malloc(sizeof(float) * n); /* the BF16 g in F32 for the CPU */
  qat_convert_to_f32(g16, QAT_BF16, gq, n);
  for (int gt = 0; gt < 2; gt++)
    for (int mode = 0; mode < 3; mode++) {
      qat_qspec qm = q;
      qm.grad = (qat_qgrad)mode;
      hg.data = gt ? gq : g;
      for (int64_t k = 0; k < ns; k++) dsa[k] = dza[k] = dsb[k] = dzb[k] = 12345.0f;
      dev_up(&dds, dsb);
      dev_up(&ddz, dzb);
      TU_REQUIRE_OK(QAT_OP(cpu, fq_backward, &qm, &hw, &hs, &hz, &hg, &ha, &hds, &hdz));
      TU_REQUIRE_OK(QAT_OP(g_cuda, fq_backward, &qm, &dw_, &ds_, &dz_, gt ? &dg16 : &dg, &ddw,
                           &dds, &ddz));
      dev_down(b, &ddw);
      dev_down(dsb, &dds);
      dev_down(dzb, &ddz);
      for (int64_t i = 0; i < n; i++)
        ck_assert_msg(a[i] == b[i], "dw[%lld] cpu %g cuda %g (g %s mode %d)", (long long)i, a[i],
                      b[i], gt ? "BF16" : "F32", mode);
      if (mode == QAT_QGRAD_STE) {
        for (int64_t k = 0; k < ns; k++) ck_assert(dsb[k] == 12345.0f && dzb[k] == 12345.0f);
        continue;
      }
      double eds = tu_nerr(dsb, dsa, ns);
      ck_assert_msg(eds < 1e-5, "ds nerr %g (g %s mode %d bits %d group %d sym %d [%lld, %lld])",
                    eds, gt ? "BF16" : "F32", mode, q.bits, q.group, q.sym, (long long)R,
                    (long long)C);
      if (!q.sym) {
        double edz = tu_nerr(dzb, dza, ns);
        ck_assert_msg(edz < 1e-5, "dz nerr %g (mode %d)", edz, mode);
      } else {
        for (int64_t k = 0; k < ns; k++) ck_assert(dzb[k] == 12345.0f);
      }
    }
  free(gq);

  qat_tensor *ts[] = {&dw_, &ds_, &dz_, &dout, &dout16, &dg, &dg16, &ddw, &dds, &ddz};
  for (int i = 0; i < 10; i++) dev_free(ts[i]);
  free(w), free(g), free(a), free(b), free(g16), free(o16a), free(o16b);
  free(s), free(z), free(s2), free(z2), free(dsa), free(dsb), free(dza), free(dzb);
}

START_TEST(test_parity_odd_shapes) {
  if (!need_gpu()) return;
  static const int bits[] = {2, 3, 4, 8};
  for (int ci = 0; ci < NCASES; ci++)
    for (int bi = 0; bi < 4; bi++)
      for (int sym = 0; sym < 2; sym++) {
        qat_qspec q = {bits[bi], k_cases[ci].group, sym, QAT_QGRAD_EFFICIENTQAT,
                       QAT_QINIT_MINMAX, 0};
        parity_case(q, k_cases[ci].R, k_cases[ci].C, 1000 + 31 * ci + 7 * bi + sym);
      }
}
END_TEST

START_TEST(test_parity_large) {
  if (!need_gpu()) return;
  qat_qspec q4 = {4, 128, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0};
  qat_qspec qt = {2, 0, 0, QAT_QGRAD_LSQ, QAT_QINIT_MINMAX, 0};
  parity_case(q4, 4096, 4096, 7);
  parity_case(qt, 4096, 4096, 8); /* per-tensor: 16M weights in one group */
}
END_TEST

/* ---- MSE init parity ------------------------------------------------------------------------ */

/* sum over group k of |w_hat - w|^2.4 in double, w_hat the REFERENCE forward at (s, z) */
static double group_err24(const qat_qspec *q, const float *w, int64_t R, int64_t C, int64_t k,
                          double s, double z) {
  int64_t r0 = 0, r1 = R, c0 = 0, c1 = C;
  if (q->group < 0) {
    r0 = k, r1 = k + 1;
  } else if (q->group > 0) {
    int64_t G = (C + q->group - 1) / q->group;
    r0 = k / G, r1 = r0 + 1, c0 = (k % G) * q->group;
    c1 = c0 + q->group < C ? c0 + q->group : C;
  }
  double lo = q->sym ? -ldexp(1, q->bits - 1) : 0, hi = q->sym ? ldexp(1, q->bits - 1) - 1
                                                               : ldexp(1, q->bits) - 1;
  s = fmin(fmax(s, 1e-4), 1e4);
  double zt = q->sym ? 0 : fmin(fmax(nearbyint(z), 0), hi), e = 0;
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = c0; c < c1; c++) {
      double x = w[r * C + c], code = fmin(fmax(nearbyint(x / s) + zt, lo), hi);
      e += pow(fabs((code - zt) * s - x), 2.4);
    }
  return e;
}

typedef struct mse_tally {
  int64_t groups, same;
} mse_tally;

/* MSE init of w[R, C] on both backends; exact: every group's (s, z) must be the CPU's (groups
 * whose best candidate is an exact tie: the earliest must win on both sides). */
static void mse_parity_w(qat_qspec q, int64_t R, int64_t C, float *w, int exact, mse_tally *t) {
  q.init = QAT_QINIT_MSE;
  int64_t ss[2];
  qat_qspec_sshape(&q, R, C, ss);
  int64_t ns = ss[0] * ss[1];
  float *s = malloc(sizeof(float) * ns);
  float *z = calloc((size_t)ns, sizeof(float)), *s2 = malloc(sizeof(float) * ns);
  float *z2 = calloc((size_t)ns, sizeof(float));
  ck_assert(s && z && s2 && z2);
  qat_tensor hw = qat_view2(w, QAT_F32, QAT_DEV_CPU, R, C);
  qat_tensor hs = qat_view2(s, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]), hz = hs;
  hz.data = z;
  qat_tensor dw_ = dev_new(QAT_F32, R, C, "blk.w"), ds_ = dev_new(QAT_F32, ss[0], ss[1], "blk.s");
  qat_tensor dz_ = dev_new(QAT_F32, ss[0], ss[1], "blk.z");
  dev_up(&dw_, w);
  TU_REQUIRE_OK(QAT_OP(qat_backend_cpu(), fq_init, &q, &hw, &hs, q.sym ? NULL : &hz));
  TU_REQUIRE_OK(QAT_OP(g_cuda, fq_init, &q, &dw_, &ds_, q.sym ? NULL : &dz_));
  dev_down(s2, &ds_);
  if (!q.sym) dev_down(z2, &dz_);
  for (int64_t k = 0; k < ns; k++) {
    t->groups++;
    if (exact)
      ck_assert_msg(s[k] == s2[k] && z[k] == z2[k],
                    "mse tie k %lld (bits %d group %d sym %d [%lld, %lld]): cpu s %.9g z %g, "
                    "cuda s %.9g z %g",
                    (long long)k, q.bits, q.group, q.sym, (long long)R, (long long)C, s[k], z[k],
                    s2[k], z2[k]);
    if (s[k] == s2[k] && z[k] == z2[k]) {
      t->same++;
      continue;
    }
    double ec = group_err24(&q, w, R, C, k, s[k], z[k]);
    double eg = group_err24(&q, w, R, C, k, s2[k], z2[k]);
    ck_assert_msg(fabs(eg - ec) <= 1e-5 * ec,
                  "mse k %lld (bits %d group %d sym %d [%lld, %lld]): cpu s %.9g z %g err %.9g, "
                  "cuda s %.9g z %g err %.9g",
                  (long long)k, q.bits, q.group, q.sym, (long long)R, (long long)C, s[k], z[k], ec,
                  s2[k], z2[k], eg);
  }
  dev_free(&dw_), dev_free(&ds_), dev_free(&dz_);
  free(s), free(z), free(s2), free(z2);
}

static void mse_parity_case(qat_qspec q, int64_t R, int64_t C, uint64_t seed, mse_tally *t) {
  int64_t n = R * C;
  float *w = malloc(sizeof(float) * n);
  ck_assert(w);
  tu_rng rng = {seed};
  tu_fill_normal(&rng, w, n, 0.05f);
  for (int64_t i = 0; i < n; i += 37) w[i] *= 4.0f; /* heavier tails: clipping has work to do */
  /* an outlier opens every row: a trailing partial group that read on into the next row would
   * take it into its range and pick another (s, z) */
  for (int64_t r = 0; r < R; r++) w[r * C] = (r % 2 ? -0.6f : 0.6f) + 0.01f * (float)(r % 7);
  mse_parity_w(q, R, C, w, 0, t);
  free(w);
}

/* Constant groups (zero, positive, negative): asym candidates share s = QAT_S_MIN and many share
 * z~, so their errors tie exactly and the first (min-max) must win on both backends. */
static void mse_tie_case(qat_qspec q, int64_t R, int64_t C, mse_tally *t) {
  float *w = malloc(sizeof(float) * R * C);
  ck_assert(w);
  for (int64_t r = 0; r < R; r++)
    for (int64_t c = 0; c < C; c++) {
      int64_t j = q.group > 0 ? c / q.group : 0;
      w[r * C + c] = q.group == 0 ? 0.03f : 0.01f * (float)((r * 7 + j * 3) % 9 - 4);
    }
  mse_parity_w(q, R, C, w, 1, t);
  free(w);
}

START_TEST(test_mse_parity) {
  if (!need_gpu()) return;
  static const int bits[] = {2, 3, 4, 8};
  mse_tally t = {0};
  for (int ci = 0; ci < NCASES; ci++)
    for (int bi = 0; bi < 4; bi++)
      for (int sym = 0; sym < 2; sym++) {
        qat_qspec q = {bits[bi], k_cases[ci].group, sym, QAT_QGRAD_EFFICIENTQAT,
                       QAT_QINIT_MSE, 0};
        mse_parity_case(q, k_cases[ci].R, k_cases[ci].C, 5000 + 31 * ci + 7 * bi + sym, &t);
      }
  /* large: many warps of groups, long per-channel rows, a split per-tensor search */
  mse_parity_case((qat_qspec){2, 128, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MSE, 0}, 4096, 4096, 9, &t);
  mse_parity_case((qat_qspec){2, 32, 1, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MSE, 0}, 1024, 4096, 10, &t);
  mse_parity_case((qat_qspec){3, -1, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MSE, 0}, 512, 11008, 11, &t);
  mse_parity_case((qat_qspec){2, 0, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MSE, 0}, 2048, 2048, 12, &t);
  /* short groups (lanes 1, 2, 4, each with a 1-element trailing group), a group longer than the
   * row, a per-channel row under 32 */
  static const pcase k_short[] = {{3, 5, 1}, {4, 9, 2}, {5, 13, 3}, {6, 40, 64}, {9, 12, -1}};
  for (int ci = 0; ci < 5; ci++)
    for (int sym = 0; sym < 2; sym++)
      for (int bits = 2; bits <= 4; bits += 2)
        mse_parity_case((qat_qspec){bits, k_short[ci].group, sym, QAT_QGRAD_EFFICIENTQAT,
                                    QAT_QINIT_MSE, 0},
                        k_short[ci].R, k_short[ci].C, 7000 + 13 * ci + 3 * bits + sym, &t);
  /* exact ties: grouped (lanes 16), per-channel, per-tensor */
  static const pcase k_tie[] = {{7, 45, 16}, {5, 33, -1}, {3, 10, 0}, {300, 301, 0}};
  for (int ci = 0; ci < 4; ci++)
    for (int sym = 0; sym < 2; sym++)
      for (int bits = 2; bits <= 8; bits += 3)
        mse_tie_case((qat_qspec){bits, k_tie[ci].group, sym, QAT_QGRAD_EFFICIENTQAT,
                                 QAT_QINIT_MSE, 0},
                     k_tie[ci].R, k_tie[ci].C, &t);
  ck_assert_msg(t.same * 100 >= t.groups * 97, "mse: %lld of %lld groups with the CPU's (s, z)",
                (long long)t.same, (long long)t.groups);
}
END_TEST

START_TEST(test_cuda_validation) {
  if (!need_gpu()) return;
  qat_qspec q = {4, 16, 0, QAT_QGRAD_EFFICIENTQAT, QAT_QINIT_MINMAX, 0};
  float w[3 * 40];
  tu_rng rng = {5};
  tu_fill_normal(&rng, w, 120, 1.0f);
  w[77] = NAN;
  qat_tensor dw_ = dev_new(QAT_F32, 3, 40, "blk3.wo"), ds_ = dev_new(QAT_F32, 3, 3, "s");
  qat_tensor dz_ = dev_new(QAT_F32, 3, 3, "z"), bad = dev_new(QAT_F32, 3, 4, "s_bad");
  dev_up(&dw_, w);
  qat_status st = QAT_OP(g_cuda, fq_init, &q, &dw_, &ds_, &dz_);
  ck_assert_int_eq(st, QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "blk3.wo"));
  /* the CPU's wording: the first bad element and its value */
  ck_assert_msg(strstr(qat_last_error(), "non-finite weight (nan) at [1, 37]"), "%s",
                qat_last_error());
  w[77] = 0.5f;
  dev_up(&dw_, w);
  TU_REQUIRE_OK(QAT_OP(g_cuda, fq_init, &q, &dw_, &ds_, &dz_)); /* the flag was reset */
  ck_assert_int_eq(QAT_OP(g_cuda, fq_forward, &q, &dw_, &bad, &dz_, &dw_), QAT_EINVAL);
  qat_qspec qb = q;
  qb.bits = 9;
  ck_assert_int_eq(QAT_OP(g_cuda, fq_init, &qb, &dw_, &ds_, &dz_), QAT_EINVAL);
  /* MSE init: the same non-finite error, per group and per-tensor; the flag is reset */
  qat_qspec qm = q, qmt = q;
  qm.init = qmt.init = QAT_QINIT_MSE;
  qmt.group = 0;
  qat_tensor s1 = dev_new(QAT_F32, 1, 1, "s1"), z1 = dev_new(QAT_F32, 1, 1, "z1");
  w[77] = INFINITY;
  w[100] = -INFINITY; /* a later one: the first is named */
  dev_up(&dw_, w);
  st = QAT_OP(g_cuda, fq_init, &qm, &dw_, &ds_, &dz_);
  ck_assert_int_eq(st, QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "blk3.wo"));
  ck_assert_msg(strstr(qat_last_error(), "(inf) at [1, 37]"), "%s", qat_last_error());
  ck_assert_int_eq(QAT_OP(g_cuda, fq_init, &qmt, &dw_, &s1, &z1), QAT_EINVAL);
  ck_assert_msg(strstr(qat_last_error(), "(inf) at [1, 37]"), "%s", qat_last_error());
  w[100] = 0.25f;
  w[77] = 0.5f;
  dev_up(&dw_, w);
  TU_REQUIRE_OK(QAT_OP(g_cuda, fq_init, &qm, &dw_, &ds_, &dz_));
  TU_REQUIRE_OK(QAT_OP(g_cuda, fq_init, &qmt, &dw_, &s1, &z1));
  dev_free(&s1), dev_free(&z1);
  /* a host tensor passed to the CUDA backend */
  qat_tensor host = qat_view2(w, QAT_F32, QAT_DEV_CPU, 3, 40);
  ck_assert_int_eq(QAT_OP(g_cuda, fq_forward, &q, &host, &ds_, &dz_, &dw_), QAT_EINVAL);
  dev_free(&dw_), dev_free(&ds_), dev_free(&dz_), dev_free(&bad);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cuda_fakequant");
  TCase *tc = tcase_create("cuda_fakequant");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_parity_odd_shapes);
  tcase_add_test(tc, test_parity_large);
  tcase_add_test(tc, test_mse_parity);
  tcase_add_test(tc, test_cuda_validation);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
