/* CUDA decode attention (cuda/decode_attention.cu) against the CPU op (itself tested against a
 * double reference in test_decode_attention.c), and the KV-cache decoder on the CUDA backend
 * against the CPU decoder. Without a GPU every case skips (exit 77).
 *
 * Shapes: T = 1, around the 256-key split (255, 256, 257) and several splits (700, the whole
 * cache of 1030), GQA / MHA / MQA, head dims 64, 80, 128 and an odd 5; B = 2. Tolerances as in
 * test_cuda_ops.c: F32 1e-5 (summation order, exp2f vs expf ulps), BF16 2e-2 (inputs rounded to
 * bf16 on both sides, CUDA rounds its output to bf16). Bad arguments fail with the CPU's status. */
#include "testutil.h"

#include "model/llama_decode.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_F32 1e-5
#define TOL_BF16 2e-2

static qat_backend *g_gpu;

/* A device tensor of dtype dt holding host floats x (converted). */
static qat_tensor dev_tensor(qat_dtype dt, const float *x, int ndim, const int64_t *shape) {
  qat_tensor h = qat_view((void *)x, QAT_F32, QAT_DEV_CPU, ndim, shape);
  qat_tensor d = qat_view(NULL, dt, QAT_DEV_CUDA, ndim, shape);
  TU_REQUIRE_OK(g_gpu->alloc(g_gpu, &d.data, qat_nbytes(&d) + 16));
  qat_tensor hf = qat_view(NULL, QAT_F32, QAT_DEV_CUDA, ndim, shape);
  TU_REQUIRE_OK(g_gpu->alloc(g_gpu, &hf.data, qat_nbytes(&hf)));
  TU_REQUIRE_OK(qat_tensor_upload(g_gpu, &hf, &h));
  TU_REQUIRE_OK(g_gpu->convert(g_gpu, &d, &hf));
  g_gpu->free(g_gpu, hf.data);
  return d;
}

/* Host floats of a device tensor. */
static void dev_read(const qat_tensor *d, float *out) {
  qat_tensor hf = qat_view(NULL, QAT_F32, QAT_DEV_CUDA, d->ndim, d->shape);
  TU_REQUIRE_OK(g_gpu->alloc(g_gpu, &hf.data, qat_nbytes(&hf)));
  TU_REQUIRE_OK(g_gpu->convert(g_gpu, &hf, d));
  qat_tensor h = qat_view(out, QAT_F32, QAT_DEV_CPU, d->ndim, d->shape);
  TU_REQUIRE_OK(qat_tensor_download(g_gpu, &h, &hf));
  g_gpu->free(g_gpu, hf.data);
}

static void check(qat_dtype dt, int B, int S, int Hq, int Hkv, int D, int T) {
  tu_rng r = {(uint64_t)(T * 31 + D * 7 + Hq + dt)};
  size_t nq = (size_t)B * Hq * D, nk = (size_t)B * S * Hkv * D;
  float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4);
  float *want = calloc(nq, 4), *got = calloc(nq, 4);
  tu_fill_normal(&r, q, nq, 1.0f);
  tu_fill_normal(&r, k, nk, 1.0f);
  tu_fill_normal(&r, v, nk, 1.0f);
  if (dt == QAT_BF16)
    for (size_t i = 0; i < nk; i++) {
      k[i] = qat_bf16_to_f32(qat_f32_to_bf16(k[i]));
      v[i] = qat_bf16_to_f32(qat_f32_to_bf16(v[i]));
      if (i < nq) q[i] = qat_bf16_to_f32(qat_f32_to_bf16(q[i]));
    }
  const int64_t qs[3] = {B, Hq, D}, ks[4] = {B, S, Hkv, D};
  const float sc = 1.0f / sqrtf((float)D);
  qat_backend *c = qat_backend_cpu();
  qat_tensor cq = qat_view(q, QAT_F32, QAT_DEV_CPU, 3, qs), co = qat_view(want, QAT_F32, QAT_DEV_CPU, 3, qs);
  qat_tensor ck = qat_view(k, QAT_F32, QAT_DEV_CPU, 4, ks), cv = qat_view(v, QAT_F32, QAT_DEV_CPU, 4, ks);
  TU_REQUIRE_OK(c->attention_decode(c, &cq, &ck, &cv, T, sc, &co));
  qat_tensor gq = dev_tensor(dt, q, 3, qs), gk = dev_tensor(dt, k, 4, ks);
  qat_tensor gv = dev_tensor(dt, v, 4, ks), go = dev_tensor(dt, got, 3, qs);
  TU_REQUIRE_OK(g_gpu->attention_decode(g_gpu, &gq, &gk, &gv, T, sc, &go));
  dev_read(&go, got);
  double e = tu_nerr(got, want, nq), tol = dt == QAT_BF16 ? TOL_BF16 : TOL_F32;
  ck_assert_msg(e < tol, "%s B %d S %d Hq %d Hkv %d D %d T %d: nerr %.3g", qat_dtype_name(dt), B,
                S, Hq, Hkv, D, T, e);
  g_gpu->free(g_gpu, gq.data), g_gpu->free(g_gpu, gk.data), g_gpu->free(g_gpu, gv.data);
  g_gpu->free(g_gpu, go.data);
  free(q), free(k), free(v), free(want), free(got);
}

START_TEST(test_decode_vs_cpu) {
  if (!tu_need_gpu(&g_gpu)) return;
  const int Ts[] = {1, 255, 256, 257, 700, 1030};
  for (int dt = 0; dt < 2; dt++) {
    qat_dtype t = dt ? QAT_BF16 : QAT_F32;
    for (int i = 0; i < 6; i++) {
      check(t, 2, 1030, 9, 3, 64, Ts[i]);  /* SmolLM2's heads */
      check(t, 2, 1030, 4, 4, 80, Ts[i]);  /* MHA */
      check(t, 1, 1030, 8, 1, 128, Ts[i]); /* MQA */
      check(t, 2, 1030, 2, 1, 5, Ts[i]);   /* odd D */
    }
  }
}
END_TEST

START_TEST(test_decode_bad_args) {
  if (!tu_need_gpu(&g_gpu)) return;
  float z[2 * 10 * 2 * 8] = {0};
  qat_tensor q = dev_tensor(QAT_F32, z, 3, (int64_t[]){1, 4, 8});
  qat_tensor o = dev_tensor(QAT_F32, z, 3, (int64_t[]){1, 4, 8});
  qat_tensor k = dev_tensor(QAT_F32, z, 4, (int64_t[]){1, 10, 2, 8});
  qat_tensor k3 = dev_tensor(QAT_F32, z, 4, (int64_t[]){1, 10, 3, 8});
  ck_assert_int_eq(g_gpu->attention_decode(g_gpu, &q, &k, &k, 0, 1.0f, &o), QAT_EINVAL);
  ck_assert_int_eq(g_gpu->attention_decode(g_gpu, &q, &k, &k, 11, 1.0f, &o), QAT_EINVAL);
  ck_assert_int_eq(g_gpu->attention_decode(g_gpu, &q, &k3, &k3, 3, 1.0f, &o), QAT_EINVAL);
  ck_assert_int_eq(g_gpu->attention_decode(g_gpu, &q, &k, &k, 3, NAN, &o), QAT_EINVAL);
  g_gpu->free(g_gpu, q.data), g_gpu->free(g_gpu, o.data), g_gpu->free(g_gpu, k.data);
  g_gpu->free(g_gpu, k3.data);
}
END_TEST

/* The whole decoder on CUDA (F32 activations) against the CPU decoder, same random weights. */
START_TEST(test_decoder_vs_cpu) {
  if (!tu_need_gpu(&g_gpu)) return;
  qat_llama_config c;
  memset(&c, 0, sizeof c);
  snprintf(c.arch, sizeof c.arch, "llama");
  c.dim = 64, c.hidden = 96, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 16;
  c.vocab = 50, c.max_seq = 300, c.norm_eps = 1e-5f, c.rope_theta = 10000.0f;
  c.bos_id = 1, c.eos_id = 2, c.file_dtype = QAT_F32;
  qat_llama *mc, *mg;
  TU_REQUIRE_OK(qat_llama_random(&c, qat_backend_cpu(), 3, &mc));
  TU_REQUIRE_OK(qat_llama_random(&c, g_gpu, 3, &mg));
  mg->act_dtype = QAT_F32;
  qat_llama_decoder *dc, *dg;
  TU_REQUIRE_OK(qat_llama_decoder_new(mc, 300, 20, &dc));
  TU_REQUIRE_OK(qat_llama_decoder_new(mg, 300, 20, &dg));
  int32_t ids[300];
  for (int i = 0; i < 300; i++) ids[i] = (i * 17 + 3) % c.vocab;
  float a[50], b[50];
  TU_REQUIRE_OK(qat_llama_decoder_step(dc, ids, 20, a));
  TU_REQUIRE_OK(qat_llama_decoder_step(dg, ids, 20, b));
  ck_assert_double_lt(tu_nerr(b, a, 50), 1e-4);
  for (int t = 20; t < 300; t++) {
    TU_REQUIRE_OK(qat_llama_decoder_step(dc, ids + t, 1, a));
    TU_REQUIRE_OK(qat_llama_decoder_step(dg, ids + t, 1, b));
    double e = tu_nerr(b, a, 50);
    ck_assert_msg(e < 1e-4, "position %d: nerr %.3g", t, e);
  }
  qat_llama_decoder_free(dc), qat_llama_decoder_free(dg);
  qat_llama_free(mc), qat_llama_free(mg);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cuda_decode");
  TCase *tc = tcase_create("cuda_decode");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_decode_vs_cpu);
  tcase_add_test(tc, test_decode_bad_args);
  tcase_add_test(tc, test_decoder_vs_cpu);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
