/* E2E-QP on packed frozen codes (qat_llama_pack_frozen, host/model/llama_pkcodes.c) against the
 * U8 path on the CPU: two copies of one random model (qwen2 shapes: q/k/v biases, untied),
 * both quantized and frozen to codes, one of them packed; the same tokens through both.
 * Reference: the U8 path (dq_forward -> w_hat -> gemm; gemm(dy^T x) -> dq_backward), which
 * never reads the packed form.
 * - M = B*T = 24 > 16 tokens (qgemm's panel path; every Linear fits one panel): logits, loss and
 *   every Linear's ds over two micro-batches are BIT-IDENTICAL (the same sgemm calls on the
 *   same dequantized values; qgemm_ds.c), for W4 g8 asym, W3 per-channel sym and W2 g4 asym,
 *   with and without recompute; also with step sizes outside [1e-4, 1e4] (the clamped copy of
 *   qat_llama_pk_sync), and after an s update (the packed scales ARE s);
 * - M = 8 (the decode-and-dot kernels, another summation order): logits within 1e-5
 *   normalized, ds within 1e-4 normalized (F32 sums of <= 24 terms, then through 2 layers);
 * - memory: no U8 codes, no compute weights, codes = the packed bytes; the checkpoint helpers
 *   (qat_llama_linear_dequant, qat_llama_linear_codes) give the U8 path's weights and codes;
 * - packing a model not frozen yet freezes it on the way (same masters, codes, results);
 * - qat_llama_set_quant undoes the packing; freezing after packing and a group that does not
 *   divide a Linear's width are refused. */
#include "testutil.h"

#include "model/llama.h"
#include "quant/packed_layout.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VV 19
#define TT 8

static qat_llama_config tiny(void) {
  qat_llama_config c;
  memset(&c, 0, sizeof c);
  snprintf(c.arch, sizeof c.arch, "qwen2");
  c.dim = 16;
  c.hidden = 24;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.vocab = VV;
  c.max_seq = 64;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.qkv_bias = 1;
  c.bos_id = 1;
  c.eos_id = 2;
  c.file_dtype = QAT_F32;
  return c;
}

static void lins_of(qat_llama_layer *ly, qat_linear *out[7]) {
  qat_linear *l[7] = {&ly->q, &ly->k, &ly->v, &ly->o, &ly->gate, &ly->up, &ly->down};
  memcpy(out, l, sizeof l);
}

/* Linears N(0, 1/in) so activations are O(1); quantized and frozen */
static qat_llama *make(const qat_qspec *q, int recompute) {
  qat_llama_config c = tiny();
  qat_llama *m = NULL;
  TU_REQUIRE_OK(qat_llama_random(&c, qat_backend_cpu(), 7, &m));
  tu_rng r = {8};
  for (int l = 0; l < c.n_layers; l++) {
    qat_linear *lins[7];
    lins_of(&m->layers[l], lins);
    for (int k = 0; k < 7; k++) {
      float *w = lins[k]->w.data, sd = 1.0f / sqrtf((float)lins[k]->in);
      for (int64_t i = 0; i < qat_numel(&lins[k]->w); i++) w[i] = sd * tu_normal(&r);
    }
  }
  float *e = m->embed.data;
  for (int64_t i = 0; i < qat_numel(&m->embed); i++) e[i] = tu_normal(&r);
  m->recompute = recompute;
  TU_REQUIRE_OK(qat_llama_set_quant(m, q));
  TU_REQUIRE_OK(qat_llama_freeze_codes(m, -1));
  return m;
}

/* zero_grad, micro-batches of B x TT tokens (seeded), finish; loss summed */
static double step(qat_llama *m, int B, int nmb) {
  int32_t tok[64], tgt[64];
  double tot = 0, loss;
  int64_t cnt;
  TU_REQUIRE_OK(qat_llama_zero_grad(m));
  for (int mb = 0; mb < nmb; mb++) {
    tu_rng r = {100 + (uint64_t)mb};
    for (int i = 0; i < B * TT; i++) {
      tok[i] = (int32_t)(tu_next(&r) % VV);
      tgt[i] = (int32_t)(tu_next(&r) % VV);
    }
    TU_REQUIRE_OK(qat_llama_forward(m, tok, B, TT));
    TU_REQUIRE_OK(qat_llama_xent(m, tgt, 1.0f / (float)(B * TT), &loss, &cnt));
    TU_REQUIRE_OK(qat_llama_backward(m));
    tot += loss;
  }
  TU_REQUIRE_OK(qat_llama_finish_backward(m));
  return tot;
}

/* worst normalized ds error over every Linear (0: all bit-identical) */
static double ds_err(qat_llama *a, qat_llama *b, int exact) {
  double worst = 0;
  for (int l = 0; l < a->cfg.n_layers; l++) {
    qat_linear *la[7], *lb[7];
    lins_of(&a->layers[l], la);
    lins_of(&b->layers[l], lb);
    for (int i = 0; i < 7; i++) {
      ck_assert_ptr_nonnull(lb[i]->ds.data);
      size_t n = (size_t)qat_numel(&la[i]->ds);
      if (exact)
        ck_assert_msg(memcmp(la[i]->ds.data, lb[i]->ds.data, 4 * n) == 0, "%s: ds differs",
                      la[i]->name);
      double e = tu_nerr(lb[i]->ds.data, la[i]->ds.data, n);
      if (e > worst) worst = e;
    }
  }
  return worst;
}

static void pair(const qat_qspec *q, int recompute, const char *what) {
  qat_llama *u8 = make(q, recompute), *pk = make(q, recompute);
  qat_llama_mem m0, m1;
  TU_REQUIRE_OK(qat_llama_memory(pk, &m0));
  TU_REQUIRE_OK(qat_llama_pack_frozen(pk));
  TU_REQUIRE_OK(qat_llama_memory(pk, &m1));
  ck_assert(m0.codes > 0 && m1.codes < m0.codes && m0.wcomp > 0 && m1.wcomp == 0);
  TU_REQUIRE_OK(qat_llama_plan(u8, 3, TT, 1));
  TU_REQUIRE_OK(qat_llama_plan(pk, 3, TT, 1));
  ck_assert_ptr_nonnull(pk->layers[0].q.pk);
  ck_assert_ptr_null(pk->layers[0].q.codes.data);
  ck_assert_ptr_null(pk->layers[0].q.w_hat.data);

  /* 1. M = 24: bit-identical */
  double lu = step(u8, 3, 2), lp = step(pk, 3, 2);
  ck_assert_msg(lu == lp, "%s: loss %.17g vs %.17g", what, lu, lp);
  ck_assert(memcmp(u8->logits.data, pk->logits.data, qat_nbytes(&u8->logits)) == 0);
  ds_err(u8, pk, 1);

  /* 2. step sizes outside the clamp range (the clamped copy) and an s update in between */
  for (int k = 0; k < 2; k++) {
    qat_llama *m = k ? pk : u8;
    float *s = m->layers[0].q.s.data, *s2 = m->layers[1].down.s.data;
    s[0] = 1e-6f;  /* clamped up to 1e-4 */
    s[1] = 3e4f;   /* clamped down to 1e4 */
    s2[0] *= 1.5f; /* an optimizer step: the packed scales follow s */
  }
  lu = step(u8, 3, 1);
  lp = step(pk, 3, 1);
  ck_assert_msg(lu == lp, "%s: clamped: loss %.17g vs %.17g", what, lu, lp);
  ds_err(u8, pk, 1);
  for (int k = 0; k < 2; k++) { /* back inside the range: s itself again, still exact */
    qat_llama *m = k ? pk : u8;
    float *s = m->layers[0].q.s.data;
    s[0] = 0.05f;
    s[1] = 0.07f;
  }
  lu = step(u8, 3, 1);
  lp = step(pk, 3, 1);
  ck_assert(lu == lp);
  ds_err(u8, pk, 1);

  /* 3. the checkpoint helpers: the U8 path's dequantized weights and codes */
  for (int l = 0; l < 2; l++) {
    qat_linear *la[7], *lb[7];
    lins_of(&u8->layers[l], la);
    lins_of(&pk->layers[l], lb);
    for (int i = 0; i < 7; i++) {
      size_t n = (size_t)(la[i]->out * la[i]->in);
      float *wa = malloc(4 * n), *wb = malloc(4 * n);
      uint8_t *ca = malloc(n), *cb = malloc(n);
      qat_tensor ta = qat_view2(wa, QAT_F32, QAT_DEV_CPU, la[i]->out, la[i]->in);
      qat_tensor tb = qat_view2(wb, QAT_F32, QAT_DEV_CPU, la[i]->out, la[i]->in);
      TU_REQUIRE_OK(qat_llama_linear_dequant(u8, la[i], &ta));
      TU_REQUIRE_OK(qat_llama_linear_dequant(pk, lb[i], &tb));
      ck_assert_msg(memcmp(wa, wb, 4 * n) == 0, "%s: dequantized weight differs", la[i]->name);
      TU_REQUIRE_OK(qat_llama_linear_codes(u8, la[i], ca));
      TU_REQUIRE_OK(qat_llama_linear_codes(pk, lb[i], cb));
      ck_assert_msg(memcmp(ca, cb, n) == 0, "%s: codes differ", la[i]->name);
      free(wa), free(wb), free(ca), free(cb);
    }
  }

  /* 4. M = 8: the decode-and-dot kernels, another summation order */
  TU_REQUIRE_OK(qat_llama_plan(u8, 1, TT, 1));
  TU_REQUIRE_OK(qat_llama_plan(pk, 1, TT, 1));
  lu = step(u8, 1, 2);
  lp = step(pk, 1, 2);
  double el = tu_nerr(pk->logits.data, u8->logits.data, (size_t)qat_numel(&u8->logits));
  double es = ds_err(u8, pk, 0);
  ck_assert_msg(fabs(lu - lp) <= 1e-5 * fabs(lu) && el < 1e-5 && es < 1e-4,
                "%s, M = 8: loss %.9g vs %.9g, logits %g, ds %g", what, lu, lp, el, es);
  printf("%s%s: codes %zu -> %zu bytes, compute weights %zu -> 0; M = 24 bit-identical; M = 8: "
         "logits %.1e, ds %.1e normalized\n",
         what, recompute ? " recompute" : "", m0.codes, m1.codes, m0.wcomp, el, es);

  /* 5. set_quant undoes it: fake-quant of the masters again */
  TU_REQUIRE_OK(qat_llama_set_quant(pk, q));
  ck_assert_ptr_null(pk->layers[0].q.pk);
  TU_REQUIRE_OK(qat_llama_plan(pk, 1, TT, 0));
  int32_t tok[TT] = {1, 2, 3, 4, 5, 6, 7, 8};
  TU_REQUIRE_OK(qat_llama_forward(pk, tok, 1, TT));
  qat_llama_free(u8);
  qat_llama_free(pk);
}

START_TEST(packed_equals_u8) {
  const qat_qspec w4g8 = {.bits = 4, .group = 8, .grad = QAT_QGRAD_EFFICIENTQAT};
  const qat_qspec w3pc = {.bits = 3, .group = -1, .sym = 1, .grad = QAT_QGRAD_EFFICIENTQAT};
  const qat_qspec w2g4 = {.bits = 2, .group = 4, .grad = QAT_QGRAD_EFFICIENTQAT};
  pair(&w4g8, 0, "W4 g8");
  pair(&w4g8, 1, "W4 g8");
  pair(&w3pc, 0, "W3 per-channel sym");
  pair(&w2g4, 1, "W2 g4");
}
END_TEST

/* Packing a model not frozen yet freezes it on the way (no U8 arena): the same masters, codes
 * and forward as freeze_codes then pack. */
START_TEST(pack_unfrozen) {
  const qat_qspec q = {.bits = 3, .group = 4, .grad = QAT_QGRAD_EFFICIENTQAT};
  qat_llama *a = make(&q, 0), *b = NULL;
  qat_llama_config c = tiny();
  TU_REQUIRE_OK(qat_llama_random(&c, qat_backend_cpu(), 7, &b));
  tu_rng r = {8}; /* make()'s weights, without its freeze */
  for (int l = 0; l < c.n_layers; l++) {
    qat_linear *lins[7];
    lins_of(&b->layers[l], lins);
    for (int k = 0; k < 7; k++) {
      float *w = lins[k]->w.data, sd = 1.0f / sqrtf((float)lins[k]->in);
      for (int64_t i = 0; i < qat_numel(&lins[k]->w); i++) w[i] = sd * tu_normal(&r);
    }
  }
  float *e = b->embed.data;
  for (int64_t i = 0; i < qat_numel(&b->embed); i++) e[i] = tu_normal(&r);
  TU_REQUIRE_OK(qat_llama_set_quant(b, &q));
  TU_REQUIRE_OK(qat_llama_pack_frozen(a));
  TU_REQUIRE_OK(qat_llama_pack_frozen(b)); /* freezes while packing */
  qat_llama_mem mb;
  TU_REQUIRE_OK(qat_llama_memory(b, &mb));
  ck_assert(mb.codes > 0 && mb.wcomp == 0);
  for (int l = 0; l < c.n_layers; l++) {
    qat_linear *la[7], *lb[7];
    lins_of(&a->layers[l], la);
    lins_of(&b->layers[l], lb);
    for (int i = 0; i < 7; i++) {
      ck_assert(lb[i]->use_codes && lb[i]->frozen && lb[i]->pk);
      ck_assert(memcmp(la[i]->w.data, lb[i]->w.data, qat_nbytes(&la[i]->w)) == 0);
      ck_assert(memcmp(la[i]->pk->codes, lb[i]->pk->codes, (size_t)(la[i]->pk->N * la[i]->pk->row_bytes)) == 0);
      ck_assert(memcmp(la[i]->pk->zeros, lb[i]->pk->zeros, (size_t)(la[i]->pk->N * la[i]->pk->zrow_bytes)) == 0);
    }
  }
  TU_REQUIRE_OK(qat_llama_plan(a, 3, TT, 1));
  TU_REQUIRE_OK(qat_llama_plan(b, 3, TT, 1));
  ck_assert(step(a, 3, 1) == step(b, 3, 1));
  ds_err(a, b, 1);
  qat_llama_free(a);
  qat_llama_free(b);
}
END_TEST

START_TEST(refusals) {
  const qat_qspec w4g8 = {.bits = 4, .group = 8, .grad = QAT_QGRAD_EFFICIENTQAT};
  qat_llama_config c = tiny();
  qat_llama *m = NULL;
  TU_REQUIRE_OK(qat_llama_random(&c, qat_backend_cpu(), 7, &m));
  ck_assert_int_ne(qat_llama_pack_frozen(m), QAT_OK); /* not quantized */
  TU_REQUIRE_OK(qat_llama_set_quant(m, &w4g8));
  TU_REQUIRE_OK(qat_llama_freeze_codes(m, -1));
  TU_REQUIRE_OK(qat_llama_pack_frozen(m));
  ck_assert_int_ne(qat_llama_freeze_codes(m, -1), QAT_OK); /* the U8 codes are gone */
  qat_llama_free(m);
  const qat_qspec g6 = {.bits = 4, .group = 6, .grad = QAT_QGRAD_EFFICIENTQAT}; /* 16 % 6 */
  TU_REQUIRE_OK(qat_llama_random(&c, qat_backend_cpu(), 7, &m));
  TU_REQUIRE_OK(qat_llama_set_quant(m, &g6));
  TU_REQUIRE_OK(qat_llama_freeze_codes(m, -1));
  ck_assert_int_eq(qat_llama_pack_frozen(m), QAT_EUNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "does not divide"));
  qat_llama_free(m);
}
END_TEST

int main(void) {
  Suite *s = suite_create("model_pkcodes");
  TCase *tc = tcase_create("cpu");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, packed_equals_u8);
  tcase_add_test(tc, pack_unfrozen);
  tcase_add_test(tc, refusals);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
