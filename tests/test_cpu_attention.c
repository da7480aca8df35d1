/* CPU causal attention with grouped-query heads against a naive double-precision reference written
 * here (scores matrix, mask, softmax): out and lse, then dq, dk, dv against central differences
 * of the reference (tight) and of the F32 op (loose), on GQA, MHA, MQA and T = 1 shapes; large
 * scores; bitwise-equal results on 1 and 3 threads; bad shapes refused. Tolerances: see
 * test_cpu_util.h. */
#include "test_cpu_util.h"

static qat_backend *cpu(void) { return qat_backend_cpu(); }

typedef struct cfg {
  int64_t B, T, Hq, Hkv, D;
} cfg;

typedef struct at_ctx {
  cfg g;
  float scale;
  double *qd, *kd, *vd, *R;
  float *qf, *kf, *vf, *outf, *lsef;
} at_ctx;

static size_t nq(const cfg *g) { return (size_t)(g->B * g->T * g->Hq * g->D); }
static size_t nk(const cfg *g) { return (size_t)(g->B * g->T * g->Hkv * g->D); }

/* out[b, i, h, :] = softmax over j of (scale q_i . k_j, j <= i) @ v, lse[b, h, i]. */
static void ref_attention(const cfg *g, double scale, const double *q, const double *k,
                          const double *v, double *out, double *lse) {
  int64_t T = g->T, Hq = g->Hq, Hkv = g->Hkv, D = g->D;
  double *s = malloc(sizeof(double) * (size_t)T);
  ck_assert_ptr_nonnull(s);
  for (int64_t b = 0; b < g->B; b++)
    for (int64_t h = 0; h < Hq; h++) {
      int64_t kh = h / (Hq / Hkv);
      for (int64_t i = 0; i < T; i++) {
        const double *qi = q + ((b * T + i) * Hq + h) * D;
        double m = -INFINITY, z = 0;
        for (int64_t j = 0; j < T; j++) {
          if (j > i) {
            s[j] = -INFINITY; /* causal mask */
            continue;
          }
          double d = 0;
          for (int64_t c = 0; c < D; c++) d += qi[c] * k[((b * T + j) * Hkv + kh) * D + c];
          s[j] = scale * d;
          m = fmax(m, s[j]);
        }
        for (int64_t j = 0; j < T; j++) z += exp(s[j] - m);
        double *oi = out + ((b * T + i) * Hq + h) * D;
        for (int64_t c = 0; c < D; c++) {
          double a = 0;
          for (int64_t j = 0; j < T; j++)
            a += exp(s[j] - m) / z * v[((b * T + j) * Hkv + kh) * D + c];
          oi[c] = a;
        }
        if (lse) lse[(b * Hq + h) * T + i] = m + log(z);
      }
    }
  free(s);
}

static double at_loss_ref(void *p) {
  at_ctx *c = p;
  size_t n = nq(&c->g);
  double *out = malloc(sizeof(double) * n);
  ck_assert_ptr_nonnull(out);
  ref_attention(&c->g, c->scale, c->qd, c->kd, c->vd, out, NULL);
  double L = dot_dd(out, c->R, n);
  free(out);
  return L;
}

/* Views of query-shaped [B, T, Hq, D] and kv-shaped [B, T, Hkv, D] buffers. */
static qat_tensor qv(const cfg *g, float *p) { return TF(p, g->B, g->T, g->Hq, g->D); }
static qat_tensor kv(const cfg *g, float *p) { return TF(p, g->B, g->T, g->Hkv, g->D); }

static double at_loss_op(void *p) {
  at_ctx *c = p;
  cfg *g = &c->g;
  qat_tensor tq = qv(g, c->qf), tk = kv(g, c->kf), tv = kv(g, c->vf), to = qv(g, c->outf);
  qat_tensor tl = TF(c->lsef, g->B, g->Hq, g->T);
  TU_REQUIRE_OK(cpu()->attention_fwd(cpu(), &tq, &tk, &tv, c->scale, &to, &tl));
  return dot_fd(c->outf, c->R, nq(g));
}

static void check_cfg(cfg g, uint64_t seed, float qscale) {
  at_ctx c;
  c.g = g;
  c.scale = 1.0f / sqrtf((float)g.D);
  size_t n_q = nq(&g), n_k = nk(&g), n_l = (size_t)(g.B * g.Hq * g.T);
  c.qf = tc_randn(seed, n_q, qscale);
  c.kf = tc_randn(seed + 1, n_k, 1.0f);
  c.vf = tc_randn(seed + 2, n_k, 1.0f);
  c.outf = tc_nanf(n_q);
  c.lsef = tc_nanf(n_l);
  c.qd = tc_tod(c.qf, n_q);
  c.kd = tc_tod(c.kf, n_k);
  c.vd = tc_tod(c.vf, n_k);
  c.R = tc_tod(tc_randn(seed + 3, n_q, 1.0f), n_q);
  double *out = tc_d(n_q), *lse = tc_d(n_l);
  ref_attention(&g, c.scale, c.qd, c.kd, c.vd, out, lse);
  at_loss_op(&c);
  CK_NERR(c.outf, out, n_q, TOL_F32);
  CK_NERR(c.lsef, lse, n_l, TOL_F32);
  if (qscale > 1.0f) return; /* stability case: forward only */

  /* backward with dout = R into NaN-prefilled dq, dk, dv (overwritten) */
  float *Rf = tc_f(n_q), *dq = tc_nanf(n_q), *dk = tc_nanf(n_k), *dv = tc_nanf(n_k);
  for (size_t i = 0; i < n_q; i++) Rf[i] = (float)c.R[i];
  qat_tensor tq = qv(&g, c.qf), tk = kv(&g, c.kf), tv = kv(&g, c.vf), to = qv(&g, c.outf);
  qat_tensor tR = qv(&g, Rf), tdq = qv(&g, dq), tdk = kv(&g, dk), tdv = kv(&g, dv);
  qat_tensor tl = TF(c.lsef, g.B, g.Hq, g.T);
  TU_REQUIRE_OK(
      cpu()->attention_bwd(cpu(), &tR, &tq, &tk, &tv, &to, &tl, c.scale, &tdq, &tdk, &tdv));
  double *gq = tc_d(n_q), *gk = tc_d(n_k), *gv = tc_d(n_k);
  fd_double(c.qd, n_q, 1e-5, at_loss_ref, &c, gq);
  fd_double(c.kd, n_k, 1e-5, at_loss_ref, &c, gk);
  fd_double(c.vd, n_k, 1e-5, at_loss_ref, &c, gv);
  CK_NERR(dq, gq, n_q, TOL_F32);
  CK_NERR(dk, gk, n_k, TOL_F32);
  CK_NERR(dv, gv, n_k, TOL_F32);
  if (g.T > 1) { /* T = 1: dq, dk are exactly 0 (one key: softmax is 1) */
    fd_float(c.qf, n_q, 1e-3f, at_loss_op, &c, gq);
    CK_NERR(dq, gq, n_q, TOL_FD_F32);
  } else {
    for (size_t i = 0; i < n_q; i++) ck_assert(dq[i] == 0.0f);
    for (size_t i = 0; i < n_k; i++) ck_assert(dk[i] == 0.0f);
  }
  fd_float(c.kf, n_k, 1e-3f, at_loss_op, &c, gk);
  fd_float(c.vf, n_k, 1e-3f, at_loss_op, &c, gv);
  if (g.T > 1) CK_NERR(dk, gk, n_k, TOL_FD_F32);
  CK_NERR(dv, gv, n_k, TOL_FD_F32);
}

START_TEST(test_attention_gqa) { check_cfg((cfg){2, 5, 4, 2, 6}, 100, 1.0f); }
END_TEST
START_TEST(test_attention_mha_mqa) {
  check_cfg((cfg){1, 4, 3, 3, 4}, 200, 1.0f);
  check_cfg((cfg){2, 3, 4, 1, 2}, 300, 1.0f);
}
END_TEST
START_TEST(test_attention_t1) { check_cfg((cfg){2, 1, 4, 2, 6}, 400, 1.0f); }
END_TEST
START_TEST(test_attention_large_scores) { check_cfg((cfg){1, 7, 2, 1, 8}, 500, 60.0f); }
END_TEST

START_TEST(test_attention_deterministic) {
  const int64_t B = 2, T = 64, Hq = 8, Hkv = 2, D = 16;
  size_t n_q = (size_t)(B * T * Hq * D), n_k = (size_t)(B * T * Hkv * D);
  float *q = tc_randn(1, n_q, 1), *k = tc_randn(2, n_k, 1), *v = tc_randn(3, n_k, 1);
  float *g = tc_randn(4, n_q, 1), *o1 = tc_f(n_q), *o3 = tc_f(n_q), *l1 = tc_f(B * Hq * T),
        *l3 = tc_f(B * Hq * T);
  float *dq1 = tc_f(n_q), *dq3 = tc_f(n_q), *dk1 = tc_f(n_k), *dk3 = tc_f(n_k),
        *dv1 = tc_f(n_k), *dv3 = tc_f(n_k);
  qat_tensor tq = TF(q, B, T, Hq, D), tk = TF(k, B, T, Hkv, D), tv = TF(v, B, T, Hkv, D),
             tg = TF(g, B, T, Hq, D);
  qat_tensor to1 = TF(o1, B, T, Hq, D), to3 = TF(o3, B, T, Hq, D), tl1 = TF(l1, B, Hq, T),
             tl3 = TF(l3, B, Hq, T);
  qat_tensor tdq1 = TF(dq1, B, T, Hq, D), tdq3 = TF(dq3, B, T, Hq, D), tdk1 = TF(dk1, B, T, Hkv, D),
             tdk3 = TF(dk3, B, T, Hkv, D), tdv1 = TF(dv1, B, T, Hkv, D),
             tdv3 = TF(dv3, B, T, Hkv, D);
  float sc = 0.25f;
  omp_set_num_threads(1);
  TU_REQUIRE_OK(cpu()->attention_fwd(cpu(), &tq, &tk, &tv, sc, &to1, &tl1));
  TU_REQUIRE_OK(
      cpu()->attention_bwd(cpu(), &tg, &tq, &tk, &tv, &to1, &tl1, sc, &tdq1, &tdk1, &tdv1));
  omp_set_num_threads(3);
  TU_REQUIRE_OK(cpu()->attention_fwd(cpu(), &tq, &tk, &tv, sc, &to3, &tl3));
  TU_REQUIRE_OK(
      cpu()->attention_bwd(cpu(), &tg, &tq, &tk, &tv, &to3, &tl3, sc, &tdq3, &tdk3, &tdv3));
  omp_set_num_threads(2);
  CK_SAME_BITS(o1, o3, n_q);
  CK_SAME_BITS(l1, l3, (size_t)(B * Hq * T));
  CK_SAME_BITS(dq1, dq3, n_q);
  CK_SAME_BITS(dk1, dk3, n_k);
  CK_SAME_BITS(dv1, dv3, n_k);
}
END_TEST

START_TEST(test_attention_bad_shapes) {
  float *buf = tc_f(4096), *lse = tc_f(256);
  const float sc = 0.5f;
  qat_tensor q = TF(buf, 2, 5, 4, 6), k3 = TF(buf, 2, 5, 3, 6), k = TF(buf, 2, 5, 2, 6);
  qat_tensor o = TF(buf, 2, 5, 4, 6), l = TF(lse, 2, 4, 5);
  CK_FAILS(cpu()->attention_fwd(cpu(), &q, &k3, &k3, sc, &o, &l), QAT_EINVAL, "not a multiple");
  qat_tensor v6 = TF(buf, 2, 6, 2, 6);
  CK_FAILS(cpu()->attention_fwd(cpu(), &q, &k, &v6, sc, &o, &l), QAT_EINVAL,
           "attention_fwd: v [2, 6, 2, 6] does not match k [2, 5, 2, 6]");
  qat_tensor kT = TF(buf, 2, 6, 2, 6);
  CK_FAILS(cpu()->attention_fwd(cpu(), &q, &kT, &kT, sc, &o, &l), QAT_EINVAL, "B, T or D");
  qat_tensor l2 = TF(lse, 2, 4, 4);
  CK_FAILS(cpu()->attention_fwd(cpu(), &q, &k, &k, sc, &o, &l2), QAT_EINVAL, "attention_fwd: lse");
  qat_tensor o2 = TF(buf, 2, 5, 2, 6);
  CK_FAILS(cpu()->attention_fwd(cpu(), &q, &k, &k, sc, &o2, &l), QAT_EINVAL, "attention_fwd: out");
  qat_tensor q3 = TF(buf, 10, 4, 6);
  CK_FAILS(cpu()->attention_fwd(cpu(), &q3, &k, &k, sc, &o, &l), QAT_EINVAL, "[B, T, H, D]");
  CK_FAILS(cpu()->attention_bwd(cpu(), &o, &q, &k, &k, &o, &l, sc, &q, &q, &k), QAT_EINVAL,
           "attention_bwd: dk");
  CK_FAILS(cpu()->attention_fwd(cpu(), &q, &k, &k, NAN, &o, &l), QAT_EINVAL, "scale");
}
END_TEST

int main(void) {
  Suite *s = suite_create("cpu_attention");
  TCase *tc = tcase_create("cpu_attention");
  tcase_add_checked_fixture(tc, NULL, tc_free_all);
  tcase_add_test(tc, test_attention_gqa);
  tcase_add_test(tc, test_attention_mha_mqa);
  tcase_add_test(tc, test_attention_t1);
  tcase_add_test(tc, test_attention_large_scores);
  tcase_add_test(tc, test_attention_deterministic);
  tcase_add_test(tc, test_attention_bad_shapes);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
