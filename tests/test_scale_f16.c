/* quant.scale_dtype f16 (qat_qspec.scale_f16): step sizes kept on the F16 grid.
 * - fq_scale_f16 (the projection) against a double-precision reference written here from the
 *   definition, not from qat's bit conversions: clamp to [QAT_S_MIN, QAT_S_MAX], then k = x / u
 *   with u = 2^(floor(log2 x) - 10) the F16 spacing of x's binade (exact in double), rounded half
 *   to even, times u. Inputs: log-uniform values over 1e-7 .. 1e6 (inside and beyond both clamp
 *   bounds and beyond F16's range 6.1e-5 .. 65504), exact F16 ties, both bounds, 0, -0,
 *   negatives, +-inf and NaN (NaN must stay NaN, as every quantizer clamp keeps it). Every
 *   finite output is an F16 normal number (checked on its F32 bits: low 13 mantissa bits zero,
 *   exponent in F16's normal range) inside [QAT_S_MIN, QAT_S_MAX], and a second projection
 *   changes nothing.
 * - fq_init under scale_f16: min-max s is exactly the projection of the F32 init's s, and the
 *   asymmetric z is derived from the rounded s (round(-min / s16), checked against the group's
 *   min computed here); the MSE search's s are on the grid too.
 * - one projected AdamW step (qat_optim with scale_f16) equals the adamw op followed by the
 *   reference projection, bit for bit, over 3 steps; the moments equal those of an unprojected
 *   optimizer fed the same gradients (the projection touches s only); a ".zeros" tensor of the
 *   quant group and a weight are not projected.
 * - the CUDA twin (cuda/fakequant.cu) equals the CPU on the same inputs, when a GPU exists. */
#include "testutil.h"
#include "train/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The projection from its definition, in double. */
static float ref_project(float x) {
  if (isnan(x)) return x;
  double v = x < QAT_S_MIN ? QAT_S_MIN : (x > QAT_S_MAX ? QAT_S_MAX : x);
  int e = (int)floor(log2(v));
  if (ldexp(1.0, e) > v) e--; /* log2 rounding near a power of two */
  if (ldexp(1.0, e + 1) <= v) e++;
  double u = ldexp(1.0, e - 10), k = v / u; /* exact: v has 24 significant bits */
  return (float)(nearbyint(k) * u);           /* the default mode: half to even */
}

/* x is an F16 normal number (read off its F32 bits). */
static int is_f16_normal(float x) {
  uint32_t b;
  memcpy(&b, &x, 4);
  int e = (int)((b >> 23) & 0xff) - 127;
  return (b & 0x1fffu) == 0 && e >= -14 && e <= 15;
}

static float *make_inputs(int64_t *n_out) {
  tu_rng r = {20261203};
  const int64_t nrand = 20000;
  static const float special[] = {0.0f, -0.0f, -1.0f, -1e-3f, 1e-4f, 9.99e-5f, 1.0001e-4f, 1e4f,
                                  1.0001e4f, 9999.0f, 65504.0f, 65520.0f, 1e5f, 3e38f, 1e-7f,
                                  6.1035e-5f, 1.0f, 0.5f, 0.01f, 0.1234567f};
  const int nsp = (int)(sizeof special / sizeof special[0]);
  const int nties = 64, nnonfin = 3;
  int64_t n = nrand + nsp + nties + nnonfin;
  float *x = malloc((size_t)n * sizeof *x);
  int64_t k = 0;
  for (int64_t i = 0; i < nrand; i++) x[k++] = powf(10.0f, tu_uniform(&r, -7.0f, 6.0f));
  for (int i = 0; i < nsp; i++) x[k++] = special[i];
  for (int i = 0; i < nties; i++) { /* halfway between two F16 numbers: m + 1/2 spacings */
    int e = -13 + (int)(tu_next(&r) % 26);
    double m = 1024 + (double)(tu_next(&r) % 1024);
    x[k++] = (float)ldexp(m + 0.5, e - 10);
  }
  x[k++] = INFINITY;
  x[k++] = -INFINITY;
  x[k++] = NAN;
  *n_out = n;
  return x;
}

START_TEST(test_projection_reference) {
  qat_backend *be = qat_backend_cpu();
  int64_t n;
  float *x = make_inputs(&n), *y = malloc((size_t)n * sizeof *y);
  memcpy(y, x, (size_t)n * sizeof *y);
  qat_tensor t = qat_view1(y, QAT_F32, QAT_DEV_CPU, n);
  TU_REQUIRE_OK(QAT_OP(be, fq_scale_f16, &t));
  int64_t ties = 0, moved = 0;
  for (int64_t i = 0; i < n; i++) {
    if (isnan(x[i])) {
      ck_assert_msg(isnan(y[i]), "NaN -> %g", (double)y[i]);
      continue;
    }
    float want = ref_project(x[i]);
    ck_assert_msg(memcmp(&y[i], &want, 4) == 0, "x = %.9g: got %.9g, want %.9g", (double)x[i],
                  (double)y[i], (double)want);
    ck_assert_msg(is_f16_normal(y[i]), "%.9g is not an F16 normal", (double)y[i]);
    ck_assert(y[i] >= QAT_S_MIN && y[i] <= QAT_S_MAX);
    if (y[i] != x[i]) moved++;
    double u = ldexp(1.0, (int)floor(log2(fabs((double)want))) - 10);
    if (x[i] > QAT_S_MIN && x[i] < QAT_S_MAX && fabs(fabs((double)x[i] - want) - u / 2) == 0) ties++;
  }
  ck_assert_int_ge(ties, 32); /* the tie inputs really were ties */
  ck_assert_int_gt(moved, n / 2);
  ck_assert(y[n - 3] == QAT_S_MAX);         /* +inf */
  ck_assert(y[n - 2] == ref_project(1e-4f)); /* -inf */
  /* idempotent */
  float *y2 = malloc((size_t)n * sizeof *y2);
  memcpy(y2, y, (size_t)n * sizeof *y2);
  qat_tensor t2 = qat_view1(y2, QAT_F32, QAT_DEV_CPU, n);
  TU_REQUIRE_OK(QAT_OP(be, fq_scale_f16, &t2));
  ck_assert(memcmp(y, y2, (size_t)n * sizeof *y) == 0);
  /* validation: wrong dtype names the tensor */
  uint16_t h[2] = {0};
  qat_tensor bad = qat_view1(h, QAT_F16, QAT_DEV_CPU, 2);
  bad.name = "x.scales";
  ck_assert_int_eq(be->fq_scale_f16(be, &bad), QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "x.scales"));
  free(x);
  free(y);
  free(y2);
}
END_TEST

START_TEST(test_init_on_grid) {
  qat_backend *be = qat_backend_cpu();
  const int64_t R = 13, C = 100;
  tu_rng r = {7};
  float *w = malloc(R * C * sizeof *w);
  tu_fill_normal(&r, w, (size_t)(R * C), 0.05f);
  for (int64_t c = 0; c < C; c++) w[3 * C + c] *= 1e-4f; /* a row whose s clamps to 1e-4 */
  static const int groups[] = {32, 7, -1, 0};
  for (int gi = 0; gi < 4; gi++)
    for (int sym = 0; sym < 2; sym++)
      for (int mse = 0; mse < 2; mse++) {
        qat_qspec q32 = {.bits = 3, .group = groups[gi], .sym = sym,
                         .init = mse ? QAT_QINIT_MSE : QAT_QINIT_MINMAX};
        qat_qspec q16 = q32;
        q16.scale_f16 = 1;
        int64_t ss[2];
        qat_qspec_sshape(&q32, R, C, ss);
        int64_t ns = ss[0] * ss[1];
        float s32[R * 15], z32[R * 15], s16[R * 15], z16[R * 15];
        qat_tensor tw = qat_view2(w, QAT_F32, QAT_DEV_CPU, R, C);
        qat_tensor a = qat_view2(s32, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
        qat_tensor az = qat_view2(z32, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
        qat_tensor b = qat_view2(s16, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
        qat_tensor bz = qat_view2(z16, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
        TU_REQUIRE_OK(QAT_OP(be, fq_init, &q32, &tw, &a, sym ? NULL : &az));
        TU_REQUIRE_OK(QAT_OP(be, fq_init, &q16, &tw, &b, sym ? NULL : &bz));
        int64_t G = qat_qspec_groups(&q32, C), glen = groups[gi] > 0 ? groups[gi] : C;
        for (int64_t k = 0; k < ns; k++) {
          ck_assert_msg(is_f16_normal(s16[k]), "g%d sym %d mse %d: s %.9g off the grid",
                        groups[gi], sym, mse, (double)s16[k]);
          if (mse) continue; /* the search may pick another candidate once s is rounded */
          float want = ref_project(s32[k]);
          ck_assert_msg(memcmp(&s16[k], &want, 4) == 0, "g%d sym %d: s %.9g, want %.9g",
                        groups[gi], sym, (double)s16[k], (double)want);
          if (sym) continue;
          /* z from the rounded s: the group's min, as REFERENCE.md section 1 */
          int64_t r0 = groups[gi] == 0 ? 0 : k / G, r1 = groups[gi] == 0 ? R : r0 + 1;
          int64_t c0 = groups[gi] == 0 ? 0 : (k % G) * glen;
          int64_t c1 = groups[gi] == 0 ? C : (c0 + glen < C ? c0 + glen : C);
          float mn = INFINITY;
          for (int64_t rr = r0; rr < r1; rr++)
            for (int64_t c = c0; c < c1; c++) mn = fminf(mn, w[rr * C + c]);
          float zr = -(mn / s16[k]);
          zr = zr < -1e4f ? -1e4f : (zr > 1e4f ? 1e4f : zr);
          ck_assert_msg(z16[k] == rintf(zr) + 0.0f, "g%d: z %g, want %g", groups[gi],
                        (double)z16[k], (double)rintf(zr));
        }
      }
  free(w);
}
END_TEST

START_TEST(test_projected_adamw) {
  qat_backend *be = qat_backend_cpu();
  enum { NS = 301, NW = 50 };
  tu_rng r = {11};
  static float s[NS], ds[NS], z[NS], dz[NS], w[NW], dw[NW];
  static float s_ref[NS], m_ref[NS], v_ref[NS], s_raw[NS], z0[NS], w0[NW];
  for (int i = 0; i < NS; i++) {
    s[i] = ref_project(powf(10.0f, tu_uniform(&r, -3.5f, -0.5f)));
    z[i] = z0[i] = tu_uniform(&r, 0.0f, 15.0f);
  }
  s[0] = 1.0002e-4f; /* pushed below QAT_S_MIN by the step: clamped to f16(1e-4) */
  s[1] = QAT_S_MAX; /* pushed above 1e4: clamped */
  for (int i = 0; i < NW; i++) w[i] = w0[i] = tu_normal(&r);
  memcpy(s_ref, s, sizeof s);
  memcpy(s_raw, s, sizeof s);
  qat_tensor ts = qat_view1(s, QAT_F32, QAT_DEV_CPU, NS), tds = qat_view1(ds, QAT_F32, QAT_DEV_CPU, NS);
  qat_tensor tz = qat_view1(z, QAT_F32, QAT_DEV_CPU, NS), tdz = qat_view1(dz, QAT_F32, QAT_DEV_CPU, NS);
  qat_tensor tw = qat_view1(w, QAT_F32, QAT_DEV_CPU, NW), tdw = qat_view1(dw, QAT_F32, QAT_DEV_CPU, NW);
  qat_param ps[3] = {{"model.layers.0.self_attn.q_proj.scales", &ts, &tds, QAT_PG_QUANT},
                     {"model.layers.0.self_attn.q_proj.zeros", &tz, &tdz, QAT_PG_QUANT},
                     {"model.layers.0.self_attn.q_proj.weight", &tw, &tdw, QAT_PG_WEIGHT}};
  qat_optim_group groups[3] = {{1e-3, 0.0, 1}, {1e-3, 0.0, 1}, {0, 0, 0}};
  qat_optim o;
  TU_REQUIRE_OK(qat_optim_init(&o, be, ps, 3, groups));
  o.scale_f16 = 1;
  float raw_m[NS] = {0}, raw_v[NS] = {0};
  memset(m_ref, 0, sizeof m_ref);
  memset(v_ref, 0, sizeof v_ref);
  qat_tensor tr = qat_view1(s_ref, QAT_F32, QAT_DEV_CPU, NS);
  qat_tensor tm = qat_view1(m_ref, QAT_F32, QAT_DEV_CPU, NS), tv = qat_view1(v_ref, QAT_F32, QAT_DEV_CPU, NS);
  qat_tensor traw = qat_view1(s_raw, QAT_F32, QAT_DEV_CPU, NS);
  qat_tensor trm = qat_view1(raw_m, QAT_F32, QAT_DEV_CPU, NS), trv = qat_view1(raw_v, QAT_F32, QAT_DEV_CPU, NS);
  int64_t changed = 0;
  for (int64_t t = 1; t <= 3; t++) {
    for (int i = 0; i < NS; i++) ds[i] = tu_normal(&r);
    ds[0] = 1.0f;  /* s[0] decreases */
    ds[1] = -1.0f; /* s[1] increases */
    for (int i = 0; i < NS; i++) dz[i] = tu_normal(&r);
    for (int i = 0; i < NW; i++) dw[i] = tu_normal(&r);
    float before[NS];
    memcpy(before, s, sizeof before);
    const double lr[3] = {1e-3, 1e-3, 0};
    TU_REQUIRE_OK(qat_optim_step(&o, lr));
    /* reference: the same AdamW op, then the projection of this file */
    TU_REQUIRE_OK(be->adamw(be, &tr, &tds, &tm, &tv, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, t));
    for (int i = 0; i < NS; i++) s_ref[i] = ref_project(s_ref[i]);
    TU_REQUIRE_OK(be->adamw(be, &traw, &tds, &trm, &trv, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, t));
    for (int i = 0; i < NS; i++) {
      ck_assert_msg(memcmp(&s[i], &s_ref[i], 4) == 0, "step %lld s[%d] = %.9g, want %.9g",
                    (long long)t, i, (double)s[i], (double)s_ref[i]);
      ck_assert(is_f16_normal(s[i]));
      changed += s[i] != before[i];
    }
    ck_assert(memcmp(o.m[0].data, raw_m, sizeof raw_m) == 0); /* moments: unrounded F32 */
    ck_assert(memcmp(o.v[0].data, raw_v, sizeof raw_v) == 0);
  }
  ck_assert(s[0] == ref_project(1e-4f));
  ck_assert(s[1] == QAT_S_MAX);
  ck_assert_int_gt(changed, NS); /* the steps moved s by whole F16 spacings */
  /* zero points and weights were updated but not rounded to F16 */
  int zoff = 0, woff = 0;
  for (int i = 0; i < NS; i++) zoff += z[i] != z0[i] && !is_f16_normal(z[i]);
  for (int i = 0; i < NW; i++) woff += w[i] != w0[i] && !is_f16_normal(w[i]);
  ck_assert_int_gt(zoff, NS / 2);
  ck_assert_int_gt(woff, NW / 2);
  qat_optim_free(&o);
}
END_TEST

START_TEST(test_cuda_twin) {
  qat_backend *gpu;
  if (!tu_need_gpu(&gpu)) return;
  qat_backend *cpu = qat_backend_cpu();
  int64_t n;
  float *x = make_inputs(&n), *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
  memcpy(a, x, (size_t)n * 4);
  qat_tensor ta = qat_view1(a, QAT_F32, QAT_DEV_CPU, n);
  TU_REQUIRE_OK(cpu->fq_scale_f16(cpu, &ta));
  void *d = NULL;
  TU_REQUIRE_OK(gpu->alloc(gpu, &d, (size_t)n * 4));
  TU_REQUIRE_OK(gpu->upload(gpu, d, x, (size_t)n * 4));
  qat_tensor td = qat_view1(d, QAT_F32, QAT_DEV_CUDA, n);
  TU_REQUIRE_OK(QAT_OP(gpu, fq_scale_f16, &td));
  TU_REQUIRE_OK(gpu->download(gpu, b, d, (size_t)n * 4));
  TU_REQUIRE_OK(gpu->sync(gpu));
  for (int64_t i = 0; i < n; i++)
    ck_assert_msg(memcmp(&a[i], &b[i], 4) == 0 || (isnan(a[i]) && isnan(b[i])),
                  "x = %.9g: cpu %.9g cuda %.9g", (double)x[i], (double)a[i], (double)b[i]);
  /* fq_init under scale_f16: the CUDA init's s on the grid and equal to the CPU's */
  const int64_t R = 64, C = 256;
  float *w = malloc(R * C * 4), s1[64 * 8], z1[64 * 8], s2[64 * 8], z2[64 * 8];
  tu_rng r = {5};
  tu_fill_normal(&r, w, (size_t)(R * C), 0.05f);
  for (int mse = 0; mse < 2; mse++) {
    qat_qspec q = {.bits = 4, .group = 32, .sym = 0, .init = mse ? QAT_QINIT_MSE : QAT_QINIT_MINMAX,
                   .scale_f16 = 1};
    qat_tensor tw = qat_view2(w, QAT_F32, QAT_DEV_CPU, R, C);
    qat_tensor cs = qat_view2(s1, QAT_F32, QAT_DEV_CPU, R, 8), cz = qat_view2(z1, QAT_F32, QAT_DEV_CPU, R, 8);
    TU_REQUIRE_OK(cpu->fq_init(cpu, &q, &tw, &cs, &cz));
    void *dw = NULL, *dsz = NULL;
    TU_REQUIRE_OK(gpu->alloc(gpu, &dw, (size_t)(R * C) * 4));
    TU_REQUIRE_OK(gpu->alloc(gpu, &dsz, 2 * (size_t)(R * 8) * 4));
    TU_REQUIRE_OK(gpu->upload(gpu, dw, w, (size_t)(R * C) * 4));
    qat_tensor gw = qat_view2(dw, QAT_F32, QAT_DEV_CUDA, R, C);
    qat_tensor gs = qat_view2(dsz, QAT_F32, QAT_DEV_CUDA, R, 8);
    qat_tensor gz = qat_view2((float *)dsz + R * 8, QAT_F32, QAT_DEV_CUDA, R, 8);
    TU_REQUIRE_OK(gpu->fq_init(gpu, &q, &gw, &gs, &gz));
    TU_REQUIRE_OK(gpu->download(gpu, s2, gs.data, sizeof s2));
    TU_REQUIRE_OK(gpu->download(gpu, z2, gz.data, sizeof z2));
    TU_REQUIRE_OK(gpu->sync(gpu));
    for (int k = 0; k < R * 8; k++) {
      ck_assert_msg(s1[k] == s2[k] && z1[k] == z2[k], "mse %d group %d: cpu (%.9g, %g) cuda (%.9g, %g)",
                    mse, k, (double)s1[k], (double)z1[k], (double)s2[k], (double)z2[k]);
      ck_assert(is_f16_normal(s2[k]));
    }
    gpu->free(gpu, dw);
    gpu->free(gpu, dsz);
  }
  gpu->free(gpu, d);
  free(w);
  free(x);
  free(a);
  free(b);
}
END_TEST

int main(void) {
  Suite *s = suite_create("scale_f16");
  TCase *tc = tcase_create("cpu");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_projection_reference);
  tcase_add_test(tc, test_init_on_grid);
  tcase_add_test(tc, test_projected_adamw);
  tcase_add_test(tc, test_cuda_twin);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
