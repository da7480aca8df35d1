/* CUDA ops on frozen codes (cuda/codes.cu) against the CPU reference (host/backend/cpu/codes.c)
 * on odd shapes: scalar and 4-wide paths of dq_forward, sub-warp and whole-block reductions of
 * dq_backward, partial groups, per-channel, per-tensor, sym / asym, 2..8 bits, F32 and BF16.
 * Skips without a GPU.
 *
 * Tolerances (why):
 * - fq_codes: exact (the same IEEE float operations per element).
 * - dq_forward F32 and BF16: exact (the same operations; one RNE rounding to BF16 on both sides),
 *   and on the GPU alone fq_forward(w) == dq_forward(fq_codes(w)) bit for bit.
 * - dq_backward: both sides sum the same double products, in a different order, and round once
 *   to float: |gpu - cpu| <= 1e-6 * sum |g * (q - z)| of the group (a float rounding is 6e-8). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static qat_backend *g_cuda;

static int need_gpu(void) { return tu_need_gpu(&g_cuda); }

static qat_tensor dev_new(qat_dtype dt, int64_t r, int64_t c, const char *name) {
  void *p = NULL;
  TU_REQUIRE_OK(g_cuda->alloc(g_cuda, &p, (size_t)(r * c) * qat_dtype_size(dt)));
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

typedef struct pcase {
  int64_t R, C;
  int group, bits, sym;
} pcase;
static const pcase k_cases[] = {
    {7, 45, 16, 4, 0},     /* scalar, partial group, sub-warp lanes */
    {5, 33, -1, 3, 1},     /* per-channel scalar, small */
    {3, 10, 0, 2, 0},      /* per-tensor, tiny */
    {6, 50, 7, 2, 1},      /* odd group */
    {8, 96, 32, 4, 0},     /* 4-wide forward */
    {33, 1000, 128, 3, 0}, /* 4-wide, partial trailing group (104) */
    {64, 256, 128, 8, 1},  /* 8-bit sym */
    {4, 3000, 2048, 4, 0}, /* long groups: whole-block reduction, partial */
    {17, 4100, -1, 2, 0},  /* per-channel, whole-block reduction */
    {9, 2051, -1, 4, 1},   /* per-channel, scalar */
    {300, 301, 0, 4, 0},   /* per-tensor, scalar, one block */
    {512, 512, 0, 3, 1},   /* per-tensor, 4-wide */
    {256, 4096, 64, 2, 0}, /* a realistic W2g64 slice */
};
#define NCASES (int)(sizeof k_cases / sizeof k_cases[0])

static void run_case(const pcase *pc, uint64_t seed) {
  qat_backend *cpu = qat_backend_cpu();
  qat_qspec q = {.bits = pc->bits, .group = pc->group, .sym = pc->sym,
                 .grad = QAT_QGRAD_EFFICIENTQAT};
  int64_t R = pc->R, C = pc->C, n = R * C, ss[2];
  qat_qspec_sshape(&q, R, C, ss);
  int64_t ns = ss[0] * ss[1];
  tu_rng r = {seed};
  float *w = malloc(sizeof(float) * (size_t)n), *s = malloc(sizeof(float) * (size_t)ns);
  float *z = malloc(sizeof(float) * (size_t)ns), *g = malloc(sizeof(float) * (size_t)n);
  uint16_t *g16 = malloc(sizeof(uint16_t) * (size_t)n);
  int qmax = (1 << pc->bits) - 1;
  for (int64_t k = 0; k < ns; k++) {
    s[k] = tu_next(&r) % 7 == 0 ? 5e-5f : tu_uniform(&r, 0.01f, 0.2f);
    z[k] = tu_uniform(&r, -2.0f, (float)qmax + 2.0f);
  }
  for (int64_t i = 0; i < n; i++) {
    w[i] = tu_normal(&r) * 0.04f * (float)(1 << (pc->bits - 1)) * (tu_next(&r) % 11 ? 1.0f : 50.0f);
    g16[i] = qat_f32_to_bf16(tu_normal(&r));
    g[i] = qat_bf16_to_f32(g16[i]);
  }
  /* CPU reference */
  uint8_t *qc = malloc((size_t)n), *qg = malloc((size_t)n);
  float *whc = malloc(sizeof(float) * (size_t)n), *whg = malloc(sizeof(float) * (size_t)n);
  float *dsc = malloc(sizeof(float) * (size_t)ns), *dsg = malloc(sizeof(float) * (size_t)ns);
  uint16_t *bc = malloc(2 * (size_t)n), *bg = malloc(2 * (size_t)n);
  qat_tensor hw = qat_view2(w, QAT_F32, QAT_DEV_CPU, R, C), hs = qat_view2(s, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
  qat_tensor hz = qat_view2(z, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
  qat_tensor hq = qat_view2(qc, QAT_U8, QAT_DEV_CPU, R, C), hwh = qat_view2(whc, QAT_F32, QAT_DEV_CPU, R, C);
  qat_tensor hb = qat_view2(bc, QAT_BF16, QAT_DEV_CPU, R, C), hg = qat_view2(g, QAT_F32, QAT_DEV_CPU, R, C);
  qat_tensor hds = qat_view2(dsc, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
  const qat_tensor *hzp = q.sym ? NULL : &hz;
  TU_REQUIRE_OK(QAT_OP(cpu, fq_codes, &q, &hw, &hs, hzp, &hq));
  TU_REQUIRE_OK(QAT_OP(cpu, dq_forward, &q, &hq, &hs, hzp, &hwh));
  TU_REQUIRE_OK(QAT_OP(cpu, dq_forward, &q, &hq, &hs, hzp, &hb));
  TU_REQUIRE_OK(QAT_OP(cpu, dq_backward, &q, &hq, hzp, &hg, &hds));

  /* GPU */
  qat_tensor dw = dev_new(QAT_F32, R, C, "w"), ds_ = dev_new(QAT_F32, ss[0], ss[1], "s");
  qat_tensor dz = dev_new(QAT_F32, ss[0], ss[1], "z"), dq = dev_new(QAT_U8, R, C, "codes");
  qat_tensor dwh = dev_new(QAT_F32, R, C, "w_hat"), dfq = dev_new(QAT_F32, R, C, "fq");
  qat_tensor db = dev_new(QAT_BF16, R, C, "w_hat16"), dg = dev_new(QAT_F32, R, C, "g");
  qat_tensor dg16 = dev_new(QAT_BF16, R, C, "g16"), dds = dev_new(QAT_F32, ss[0], ss[1], "ds");
  dev_up(&dw, w);
  dev_up(&ds_, s);
  dev_up(&dz, z);
  dev_up(&dg, g);
  dev_up(&dg16, g16);
  const qat_tensor *dzp = q.sym ? NULL : &dz;
  TU_REQUIRE_OK(QAT_OP(g_cuda, fq_codes, &q, &dw, &ds_, dzp, &dq));
  dev_down(qg, &dq);
  for (int64_t i = 0; i < n; i++)
    ck_assert_msg(qg[i] == qc[i], "%lldx%lld g%d: code[%lld] gpu %u cpu %u", (long long)R,
                  (long long)C, pc->group, (long long)i, qg[i], qc[i]);
  TU_REQUIRE_OK(QAT_OP(g_cuda, dq_forward, &q, &dq, &ds_, dzp, &dwh));
  TU_REQUIRE_OK(QAT_OP(g_cuda, fq_forward, &q, &dw, &ds_, dzp, &dfq));
  dev_down(whg, &dwh);
  ck_assert_msg(memcmp(whg, whc, sizeof(float) * (size_t)n) == 0, "dq_forward F32 gpu != cpu");
  dev_down(whc, &dfq); /* reuse: the GPU's own fake-quant */
  ck_assert_msg(memcmp(whg, whc, sizeof(float) * (size_t)n) == 0,
                "gpu dq_forward(fq_codes(w)) != gpu fq_forward(w)");
  TU_REQUIRE_OK(QAT_OP(g_cuda, dq_forward, &q, &dq, &ds_, dzp, &db));
  dev_down(bg, &db);
  ck_assert_msg(memcmp(bg, bc, 2 * (size_t)n) == 0, "dq_forward BF16 gpu != cpu");

  /* group magnitudes for the tolerance */
  double *mag = calloc((size_t)ns, sizeof *mag);
  int64_t G = q.group > 0 ? (C + q.group - 1) / q.group : 1;
  for (int64_t i = 0; i < n; i++) {
    int64_t rr = i / C, c = i % C, k = q.group == 0 ? 0 : q.group < 0 ? rr : rr * G + c / q.group;
    float off = q.sym ? (float)(1 << (q.bits - 1)) : 0.0f;
    float zt = q.sym ? 0.0f : fminf(fmaxf(rintf(z[k]), 0.0f), (float)qmax);
    mag[k] += fabs((double)g[i] * ((double)qc[i] - off - zt));
  }
  for (int bf = 0; bf < 2; bf++) {
    TU_REQUIRE_OK(QAT_OP(g_cuda, dq_backward, &q, &dq, dzp, bf ? &dg16 : &dg, &dds));
    dev_down(dsg, &dds);
    for (int64_t k = 0; k < ns; k++)
      ck_assert_msg(fabs((double)dsg[k] - dsc[k]) <= 1e-6 * mag[k] + 1e-30,
                    "%lldx%lld g%d %s: ds[%lld] gpu %.9g cpu %.9g", (long long)R, (long long)C,
                    pc->group, bf ? "bf16" : "f32", (long long)k, dsg[k], dsc[k]);
  }
  free(mag);
  dev_free(&dw);
  dev_free(&ds_);
  dev_free(&dz);
  dev_free(&dq);
  dev_free(&dwh);
  dev_free(&dfq);
  dev_free(&db);
  dev_free(&dg);
  dev_free(&dg16);
  dev_free(&dds);
  free(w);
  free(s);
  free(z);
  free(g);
  free(g16);
  free(qc);
  free(qg);
  free(whc);
  free(whg);
  free(dsc);
  free(dsg);
  free(bc);
  free(bg);
}

START_TEST(test_parity) {
  if (!need_gpu()) return;
  for (int i = 0; i < NCASES; i++) run_case(&k_cases[i], 1000 + (uint64_t)i);
}
END_TEST

START_TEST(test_nan_refused) {
  if (!need_gpu()) return;
  qat_qspec q = {.bits = 4, .group = 8, .sym = 0};
  float w[16], s[2] = {0.1f, 0.1f}, z[2] = {7, 7};
  for (int i = 0; i < 16; i++) w[i] = 0.01f * (float)i;
  w[11] = NAN;
  qat_tensor dw = dev_new(QAT_F32, 1, 16, "nan.w"), ds_ = dev_new(QAT_F32, 1, 2, "s");
  qat_tensor dz = dev_new(QAT_F32, 1, 2, "z"), dq = dev_new(QAT_U8, 1, 16, "codes");
  dev_up(&dw, w);
  dev_up(&ds_, s);
  dev_up(&dz, z);
  ck_assert_int_eq(QAT_OP(g_cuda, fq_codes, &q, &dw, &ds_, &dz, &dq), QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "nan.w"));
  w[11] = 0.5f;
  dev_up(&dw, w);
  TU_REQUIRE_OK(QAT_OP(g_cuda, fq_codes, &q, &dw, &ds_, &dz, &dq)); /* the flag was reset */
  /* a host tensor is refused */
  uint8_t hq[16];
  qat_tensor hqt = qat_view2(hq, QAT_U8, QAT_DEV_CPU, 1, 16);
  ck_assert_int_eq(QAT_OP(g_cuda, fq_codes, &q, &dw, &ds_, &dz, &hqt), QAT_EINVAL);
  dev_free(&dw);
  dev_free(&ds_);
  dev_free(&dz);
  dev_free(&dq);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cuda_codes");
  TCase *tc = tcase_create("parity");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_parity);
  tcase_add_test(tc, test_nan_refused);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
