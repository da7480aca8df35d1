/* CPU LLaMA-block ops against naive double-precision references written here: RMSNorm, RoPE
 * (Hugging Face rotate-half, pos0 offset, inverse), SwiGLU and softmax cross-entropy (ignored
 * targets, dlogits aliasing logits, extreme logits). Every backward is checked by central
 * differences of the double reference (tight) and of the F32 op itself (loose); "+=" outputs
 * accumulate; bad shapes are refused. Tolerances: see test_cpu_util.h. */
#include "test_cpu_util.h"

static qat_backend *cpu(void) { return qat_backend_cpu(); }

/* ---- RMSNorm ------------------------------------------------------------------------------- */
enum { RN = 7, RC = 13 };
static const float k_eps = 1e-5f;

static void ref_rmsnorm(const double *x, const double *w, double *out, double *rstd) {
  for (int n = 0; n < RN; n++) {
    double ms = 0;
    for (int c = 0; c < RC; c++) ms += x[n * RC + c] * x[n * RC + c] / RC;
    double r = 1.0 / sqrt(ms + k_eps);
    for (int c = 0; c < RC; c++) out[n * RC + c] = x[n * RC + c] * r * w[c];
    if (rstd) rstd[n] = r;
  }
}

typedef struct rn_ctx {
  double *xd, *wd, *R;
  float *xf, *wf, *outf, *rstdf;
} rn_ctx;

static double rn_loss_ref(void *p) {
  rn_ctx *c = p;
  double out[RN * RC];
  ref_rmsnorm(c->xd, c->wd, out, NULL);
  return dot_dd(out, c->R, RN * RC);
}
static double rn_loss_op(void *p) {
  rn_ctx *c = p;
  qat_tensor x = TF(c->xf, RN, RC), w = TF(c->wf, RC), o = TF(c->outf, RN, RC),
             r = TF(c->rstdf, RN);
  TU_REQUIRE_OK(cpu()->rmsnorm_fwd(cpu(), &x, &w, k_eps, &o, &r));
  return dot_fd(c->outf, c->R, RN * RC);
}

START_TEST(test_rmsnorm) {
  rn_ctx c;
  c.xf = tc_randn(1, RN * RC, 1.0f);
  c.xf[3 * RC + 2] = 40.0f; /* one large channel */
  c.wf = tc_randn(2, RC, 1.0f);
  c.outf = tc_nanf(RN * RC);
  c.rstdf = tc_nanf(RN);
  c.xd = tc_tod(c.xf, RN * RC);
  c.wd = tc_tod(c.wf, RC);
  c.R = tc_tod(tc_randn(3, RN * RC, 1.0f), RN * RC);
  double *out = tc_d(RN * RC), *rstd = tc_d(RN);
  ref_rmsnorm(c.xd, c.wd, out, rstd);
  rn_loss_op(&c);
  CK_NERR(c.outf, out, RN * RC, TOL_F32);
  CK_NERR(c.rstdf, rstd, RN, TOL_F32);

  /* backward into prefilled dx, dw (+=) with dout = R */
  float *Rf = tc_f(RN * RC);
  for (int i = 0; i < RN * RC; i++) Rf[i] = (float)c.R[i];
  float *dx = tc_randn(4, RN * RC, 1.0f), *dw = tc_randn(5, RC, 1.0f);
  float *dx0 = tc_copyf(dx, RN * RC), *dw0 = tc_copyf(dw, RC);
  qat_tensor tR = TF(Rf, RN, RC), tx = TF(c.xf, RN, RC), tw = TF(c.wf, RC),
             tr = TF(c.rstdf, RN), tdx = TF(dx, RN, RC), tdw = TF(dw, RC);
  TU_REQUIRE_OK(cpu()->rmsnorm_bwd(cpu(), &tR, &tx, &tw, &tr, &tdx, &tdw));
  for (int i = 0; i < RN * RC; i++) dx[i] -= dx0[i];
  for (int i = 0; i < RC; i++) dw[i] -= dw0[i];
  double *gx = tc_d(RN * RC), *gw = tc_d(RC);
  fd_double(c.xd, RN * RC, 1e-5, rn_loss_ref, &c, gx);
  fd_double(c.wd, RC, 1e-5, rn_loss_ref, &c, gw);
  CK_NERR(dx, gx, RN * RC, TOL_F32);
  CK_NERR(dw, gw, RC, TOL_F32);
  double *fx = tc_d(RN * RC), *fw = tc_d(RC);
  fd_float(c.xf, RN * RC, 1e-3f, rn_loss_op, &c, fx);
  fd_float(c.wf, RC, 1e-3f, rn_loss_op, &c, fw);
  CK_NERR(dx, fx, RN * RC, TOL_FD_F32);
  CK_NERR(dw, fw, RC, TOL_FD_F32);

  /* dw = NULL skips it (frozen norms) and leaves dx the same */
  float *dx2 = tc_f(RN * RC);
  qat_tensor tdx2 = TF(dx2, RN, RC);
  rn_loss_op(&c); /* restore rstd of the unperturbed x */
  TU_REQUIRE_OK(cpu()->rmsnorm_bwd(cpu(), &tR, &tx, &tw, &tr, &tdx2, NULL));
  CK_NERR(dx2, gx, RN * RC, TOL_F32);

  /* bad shapes */
  qat_tensor tw12 = TF(c.wf, RC - 1), to = TF(c.outf, RN, RC - 1), tr6 = TF(c.rstdf, RN - 1);
  qat_tensor tout = TF(c.outf, RN, RC);
  CK_FAILS(cpu()->rmsnorm_fwd(cpu(), &tx, &tw12, k_eps, &tout, &tr), QAT_EINVAL, "rmsnorm_fwd: w");
  CK_FAILS(cpu()->rmsnorm_fwd(cpu(), &tx, &tw, k_eps, &to, &tr), QAT_EINVAL, "rmsnorm_fwd: out");
  CK_FAILS(cpu()->rmsnorm_fwd(cpu(), &tx, &tw, k_eps, &tout, &tr6), QAT_EINVAL, "rstd");
  CK_FAILS(cpu()->rmsnorm_bwd(cpu(), &tR, &tx, &tw, &tr, &to, NULL), QAT_EINVAL, "rmsnorm_bwd: dx");
  qat_tensor tbf = qat_view(c.xf, QAT_BF16, QAT_DEV_CPU, 2, (int64_t[]){RN, RC});
  CK_FAILS(cpu()->rmsnorm_fwd(cpu(), &tbf, &tw, k_eps, &tout, &tr), QAT_EUNSUPPORTED, "BF16");
}
END_TEST

START_TEST(test_rmsnorm_bwd_deterministic) {
  const int64_t N = 3001, C = 197;
  float *x = tc_randn(6, N * C, 1.0f), *w = tc_randn(7, C, 1.0f), *g = tc_randn(8, N * C, 1.0f);
  float *out = tc_f(N * C), *r = tc_f(N);
  float *dx1 = tc_f(N * C), *dx3 = tc_f(N * C), *dw1 = tc_f(C), *dw3 = tc_f(C);
  qat_tensor tx = TF(x, N, C), tw = TF(w, C), tg = TF(g, N, C), to = TF(out, N, C), tr = TF(r, N);
  qat_tensor tdx1 = TF(dx1, N, C), tdx3 = TF(dx3, N, C), tdw1 = TF(dw1, C), tdw3 = TF(dw3, C);
  TU_REQUIRE_OK(cpu()->rmsnorm_fwd(cpu(), &tx, &tw, k_eps, &to, &tr));
  omp_set_num_threads(1);
  TU_REQUIRE_OK(cpu()->rmsnorm_bwd(cpu(), &tg, &tx, &tw, &tr, &tdx1, &tdw1));
  omp_set_num_threads(3);
  TU_REQUIRE_OK(cpu()->rmsnorm_bwd(cpu(), &tg, &tx, &tw, &tr, &tdx3, &tdw3));
  omp_set_num_threads(2);
  CK_SAME_BITS(dx1, dx3, N * C);
  CK_SAME_BITS(dw1, dw3, C);
}
END_TEST

/* ---- RoPE --------------------------------------------------------------------------------- */
enum { PB = 2, PT = 5, PH = 3, PD = 6, PN = PB * PT * PH * PD };

/* Rotate-half written from the Hugging Face formula: out = x * cos + rotate_half(x) * sin with
 * rotate_half(x) = cat(-x2, x1) and cos/sin of cat(freqs, freqs). hf_angle != 0 forms the angle
 * in float32 as Hugging Face does; otherwise in double. */
static void ref_rope(const double *x, const float *inv_freq, int64_t pos0, int hf_angle,
                     double *out) {
  for (int b = 0; b < PB; b++)
    for (int t = 0; t < PT; t++)
      for (int h = 0; h < PH; h++) {
        const double *v = x + ((b * PT + t) * PH + h) * PD;
        double *o = out + ((b * PT + t) * PH + h) * PD;
        for (int d = 0; d < PD; d++) {
          int i = d % (PD / 2);
          double a = hf_angle ? (double)((float)(pos0 + t) * inv_freq[i])
                              : (double)(pos0 + t) * (double)inv_freq[i];
          double rot = d < PD / 2 ? -v[d + PD / 2] : v[d - PD / 2];
          o[d] = v[d] * cos(a) + rot * sin(a);
        }
      }
}

typedef struct rope_ctx {
  double *xd, *R;
  float *xf, *buf, *inv_freq;
  int64_t pos0;
} rope_ctx;

static double rope_loss_ref(void *p) {
  rope_ctx *c = p;
  double out[PN];
  ref_rope(c->xd, c->inv_freq, c->pos0, 0, out);
  return dot_dd(out, c->R, PN);
}
static double rope_loss_op(void *p) {
  rope_ctx *c = p;
  memcpy(c->buf, c->xf, sizeof(float) * PN);
  qat_tensor x = TF(c->buf, PB, PT, PH, PD), f = TF(c->inv_freq, PD / 2);
  TU_REQUIRE_OK(cpu()->rope(cpu(), &x, &f, c->pos0, 0));
  return dot_fd(c->buf, c->R, PN);
}

START_TEST(test_rope) {
  rope_ctx c;
  c.inv_freq = tc_f(PD / 2);
  for (int i = 0; i < PD / 2; i++) c.inv_freq[i] = (float)pow(10000.0, -2.0 * i / PD);
  c.xf = tc_randn(11, PN, 1.0f);
  c.xd = tc_tod(c.xf, PN);
  c.buf = tc_f(PN);
  c.R = tc_tod(tc_randn(12, PN, 1.0f), PN);
  c.pos0 = 7;
  qat_tensor tb = TF(c.buf, PB, PT, PH, PD), tf = TF(c.inv_freq, PD / 2);
  double *ref = tc_d(PN);
  /* small positions: the angle's float32 rounding (~1e-6 rad) is below the tolerance */
  ref_rope(c.xd, c.inv_freq, c.pos0, 0, ref);
  rope_loss_op(&c);
  CK_NERR(c.buf, ref, PN, TOL_F32);
  /* far positions: the angle is formed in float32 as in Hugging Face (its rounding, up to
   * ~2e-4 rad here, would fail a double-angle reference) */
  memcpy(c.buf, c.xf, sizeof(float) * PN);
  TU_REQUIRE_OK(cpu()->rope(cpu(), &tb, &tf, 100003, 0));
  ref_rope(c.xd, c.inv_freq, 100003, 1, ref);
  CK_NERR(c.buf, ref, PN, TOL_F32);
  /* inverse undoes it */
  TU_REQUIRE_OK(cpu()->rope(cpu(), &tb, &tf, 100003, 1));
  CK_NERR(c.buf, c.xd, PN, TOL_F32);

  /* backward = inverse rotation of dout, checked against finite differences */
  for (int i = 0; i < PN; i++) c.buf[i] = (float)c.R[i];
  TU_REQUIRE_OK(cpu()->rope(cpu(), &tb, &tf, c.pos0, 1));
  float *dx = tc_copyf(c.buf, PN);
  double *g = tc_d(PN);
  fd_double(c.xd, PN, 1e-5, rope_loss_ref, &c, g);
  CK_NERR(dx, g, PN, TOL_F32);
  fd_float(c.xf, PN, 1e-3f, rope_loss_op, &c, g);
  CK_NERR(dx, g, PN, TOL_FD_F32);

  /* bad shapes */
  qat_tensor todd = TF(c.buf, PB, PT, PH * 2, PD / 2); /* D = 3 */
  qat_tensor tf1 = TF(c.inv_freq, 1);
  CK_FAILS(cpu()->rope(cpu(), &todd, &tf1, 0, 0), QAT_EINVAL, "odd");
  qat_tensor tf2 = TF(c.inv_freq, 2);
  CK_FAILS(cpu()->rope(cpu(), &tb, &tf2, 0, 0), QAT_EINVAL, "rope: inv_freq");
  qat_tensor t3 = TF(c.buf, PB * PT, PH, PD);
  CK_FAILS(cpu()->rope(cpu(), &t3, &tf, 0, 0), QAT_EINVAL, "[B, T, H, D]");
}
END_TEST

/* ---- SwiGLU ------------------------------------------------------------------------------- */
enum { SN = 7, SF = 13 };

static void ref_swiglu(const double *g, const double *u, double *out) {
  for (int i = 0; i < SN * SF; i++) out[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
}

typedef struct sw_ctx {
  double *gd, *ud, *R;
  float *gf, *uf, *outf;
} sw_ctx;

static double sw_loss_ref(void *p) {
  sw_ctx *c = p;
  double out[SN * SF];
  ref_swiglu(c->gd, c->ud, out);
  return dot_dd(out, c->R, SN * SF);
}
static double sw_loss_op(void *p) {
  sw_ctx *c = p;
  qat_tensor g = TF(c->gf, SN, SF), u = TF(c->uf, SN, SF), o = TF(c->outf, SN, SF);
  TU_REQUIRE_OK(cpu()->swiglu_fwd(cpu(), &g, &u, &o));
  return dot_fd(c->outf, c->R, SN * SF);
}

START_TEST(test_swiglu) {
  sw_ctx c;
  c.gf = tc_randn(21, SN * SF, 3.0f);
  c.gf[0] = 80.0f; /* sigmoid saturates: must not overflow exp */
  c.gf[1] = -80.0f;
  c.uf = tc_randn(22, SN * SF, 1.0f);
  c.outf = tc_nanf(SN * SF);
  c.gd = tc_tod(c.gf, SN * SF);
  c.ud = tc_tod(c.uf, SN * SF);
  c.R = tc_tod(tc_randn(23, SN * SF, 1.0f), SN * SF);
  double *ref = tc_d(SN * SF);
  ref_swiglu(c.gd, c.ud, ref);
  sw_loss_op(&c);
  CK_NERR(c.outf, ref, SN * SF, TOL_F32);

  float *Rf = tc_f(SN * SF), *dg = tc_nanf(SN * SF), *du = tc_nanf(SN * SF); /* overwritten */
  for (int i = 0; i < SN * SF; i++) Rf[i] = (float)c.R[i];
  qat_tensor tR = TF(Rf, SN, SF), tg = TF(c.gf, SN, SF), tu = TF(c.uf, SN, SF),
             tdg = TF(dg, SN, SF), tdu = TF(du, SN, SF);
  TU_REQUIRE_OK(cpu()->swiglu_bwd(cpu(), &tR, &tg, &tu, &tdg, &tdu));
  double *gg = tc_d(SN * SF), *gu = tc_d(SN * SF);
  fd_double(c.gd, SN * SF, 1e-5, sw_loss_ref, &c, gg);
  fd_double(c.ud, SN * SF, 1e-5, sw_loss_ref, &c, gu);
  CK_NERR(dg, gg, SN * SF, TOL_F32);
  CK_NERR(du, gu, SN * SF, TOL_F32);
  fd_float(c.gf, SN * SF, 1e-3f, sw_loss_op, &c, gg);
  fd_float(c.uf, SN * SF, 1e-3f, sw_loss_op, &c, gu);
  CK_NERR(dg, gg, SN * SF, TOL_FD_F32);
  CK_NERR(du, gu, SN * SF, TOL_FD_F32);

  qat_tensor tbad = TF(c.uf, SF, SN);
  CK_FAILS(cpu()->swiglu_fwd(cpu(), &tg, &tbad, &tdg), QAT_EINVAL, "swiglu_fwd: up");
  CK_FAILS(cpu()->swiglu_bwd(cpu(), &tR, &tg, &tu, &tdg, &tbad), QAT_EINVAL, "swiglu_bwd: dup");
}
END_TEST

/* ---- cross-entropy ------------------------------------------------------------------------ */
enum { XN = 7, XV = 11 };
static const int32_t k_targets[XN] = {3, -1, 10, 0, -1, 5, 3};
static const float k_dscale = 0.37f;

static void ref_xent(const double *x, double *loss) {
  for (int n = 0; n < XN; n++) {
    const double *r = x + n * XV;
    if (k_targets[n] < 0) {
      loss[n] = 0;
      continue;
    }
    double m = r[0], s = 0;
    for (int c = 1; c < XV; c++) m = fmax(m, r[c]);
    for (int c = 0; c < XV; c++) s += exp(r[c] - m);
    loss[n] = m + log(s) - r[k_targets[n]];
  }
}

typedef struct xe_ctx {
  double *xd;
  float *xf, *lossf;
} xe_ctx;

/* L = dscale * sum of losses, whose gradient the op's dlogits is. */
static double xe_loss_ref(void *p) {
  xe_ctx *c = p;
  double l[XN], s = 0;
  ref_xent(c->xd, l);
  for (int n = 0; n < XN; n++) s += l[n];
  return k_dscale * s;
}
static double xe_loss_op(void *p) {
  xe_ctx *c = p;
  qat_tensor x = TF(c->xf, XN, XV), t = TI((int32_t *)k_targets, XN), l = TF(c->lossf, XN);
  TU_REQUIRE_OK(cpu()->xent(cpu(), &x, &t, &l, NULL, 1.0f));
  double s = 0;
  for (int n = 0; n < XN; n++) s += c->lossf[n];
  return k_dscale * s;
}

START_TEST(test_xent) {
  xe_ctx c;
  c.xf = tc_randn(31, XN * XV, 3.0f);
  for (int j = 0; j < XV; j++) c.xf[2 * XV + j] += 1000.0f; /* exp would overflow unshifted */
  c.xf[5 * XV + 5] = 60.0f;                                  /* a confident, correct row */
  c.lossf = tc_nanf(XN);
  c.xd = tc_tod(c.xf, XN * XV);
  double *ref = tc_d(XN);
  ref_xent(c.xd, ref);
  xe_loss_op(&c);
  CK_NERR(c.lossf, ref, XN, TOL_F32);
  ck_assert_float_eq(c.lossf[1], 0.0f);
  ck_assert_float_eq(c.lossf[4], 0.0f);

  /* gradient, NaN-prefilled output: ignored rows become exact zeros */
  float *d = tc_nanf(XN * XV), *l2 = tc_nanf(XN);
  int32_t tg[XN];
  memcpy(tg, k_targets, sizeof tg);
  qat_tensor tx = TF(c.xf, XN, XV), tt = TI(tg, XN), tl = TF(l2, XN), td = TF(d, XN, XV);
  TU_REQUIRE_OK(cpu()->xent(cpu(), &tx, &tt, &tl, &td, k_dscale));
  CK_NERR(l2, ref, XN, TOL_F32);
  for (int j = 0; j < XV; j++) {
    ck_assert_float_eq(d[1 * XV + j], 0.0f);
    ck_assert_float_eq(d[4 * XV + j], 0.0f);
  }
  double *g = tc_d(XN * XV);
  fd_double(c.xd, XN * XV, 1e-5, xe_loss_ref, &c, g);
  CK_NERR(d, g, XN * XV, TOL_F32);
  fd_float(c.xf, XN * XV, 1e-3f, xe_loss_op, &c, g);
  CK_NERR(d, g, XN * XV, TOL_FD_F32);

  /* dlogits aliasing logits gives the same bits; losses may be NULL */
  float *buf = tc_copyf(c.xf, XN * XV), *l3 = tc_nanf(XN);
  qat_tensor tbuf = TF(buf, XN, XV), tl3 = TF(l3, XN);
  TU_REQUIRE_OK(cpu()->xent(cpu(), &tbuf, &tt, &tl3, &tbuf, k_dscale));
  CK_SAME_BITS(buf, d, XN * XV);
  CK_SAME_BITS(l3, l2, XN);
  float *buf2 = tc_copyf(c.xf, XN * XV);
  qat_tensor tbuf2 = TF(buf2, XN, XV);
  TU_REQUIRE_OK(cpu()->xent(cpu(), &tbuf2, &tt, NULL, &tbuf2, k_dscale));
  CK_SAME_BITS(buf2, d, XN * XV);

  /* bad targets are refused before anything is written */
  tg[3] = XV;
  float *keep = tc_copyf(d, XN * XV);
  CK_FAILS(cpu()->xent(cpu(), &tx, &tt, &tl, &td, k_dscale), QAT_EINVAL, "target 11");
  ck_assert(memcmp(keep, d, sizeof(float) * XN * XV) == 0);
  tg[3] = -2;
  CK_FAILS(cpu()->xent(cpu(), &tx, &tt, &tl, &td, k_dscale), QAT_EINVAL, "target -2");
  tg[3] = 0;
  qat_tensor tl6 = TF(l2, XN - 1), td2 = TF(d, XV, XN);
  CK_FAILS(cpu()->xent(cpu(), &tx, &tt, &tl6, &td, k_dscale), QAT_EINVAL, "xent: losses");
  CK_FAILS(cpu()->xent(cpu(), &tx, &tt, &tl, &td2, k_dscale), QAT_EINVAL, "xent: dlogits");
}
END_TEST

int main(void) {
  Suite *s = suite_create("cpu_blocks");
  TCase *tc = tcase_create("cpu_blocks");
  tcase_add_checked_fixture(tc, NULL, tc_free_all);
  tcase_add_test(tc, test_rmsnorm);
  tcase_add_test(tc, test_rmsnorm_bwd_deterministic);
  tcase_add_test(tc, test_rope);
  tcase_add_test(tc, test_swiglu);
  tcase_add_test(tc, test_xent);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
