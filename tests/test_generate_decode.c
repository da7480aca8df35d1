/* The KV-cache decoder (host/model/llama_decode.c) against the whole-context forward
 * (qat_llama_forward, itself tested against the numpy reference in test_stories260k.sh), on the
 * CPU backend with tiny random models (GQA, qkv bias, llama3 rope scaling, fake-quant):
 * - logits of every position, prefill then one token per step, equal the forward's row of that
 *   position within 1e-5 normalized error (F32; the two differ only in GEMV vs GEMM summation
 *   order and in the attention's, a few 1e-7);
 * - a prompt fed as a prefill, then chunks of several tokens, gives the same logits;
 * - a full cache refuses the next step (QAT_EINVAL, the message says why) and keeps its state;
 * - qat_generate_ids: greedy and seeded sampling give the same ids with and without the cache,
 *   and generation past max_seq stops at max_seq.
 * Bad arguments (context past max_seq, chunk past the context, ids outside the vocab) fail. */
#include "testutil.h"

#include "model/generate.h"
#include "model/llama_decode.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

static qat_llama_config tiny(int llama3) {
  qat_llama_config c;
  memset(&c, 0, sizeof c);
  snprintf(c.arch, sizeof c.arch, llama3 ? "llama" : "qwen2");
  c.dim = 24;
  c.hidden = 40;
  c.n_layers = 3;
  c.n_heads = 6;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.vocab = 37;
  c.max_seq = 80; /* > 64: decode attention crosses its 64-key chunk */
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.qkv_bias = !llama3;
  if (llama3) {
    snprintf(c.rope_type, sizeof c.rope_type, "llama3");
    c.rope_factor = 8.0f;
    c.rope_low_freq_factor = 1.0f;
    c.rope_high_freq_factor = 4.0f;
    c.rope_original_max_pos = 16;
  }
  c.tie_embeddings = llama3;
  c.bos_id = 1;
  c.eos_id = 2;
  c.file_dtype = QAT_F32;
  return c;
}

/* Random weights with a std large enough that logits are far from uniform (0.02 would make every
 * position's distribution nearly flat and greedy ties likely). */
static qat_llama *make_model(int llama3, int quant, uint64_t seed) {
  qat_llama_config c = tiny(llama3);
  qat_llama *m;
  TU_REQUIRE_OK(qat_llama_random(&c, qat_backend_cpu(), seed, &m));
  tu_rng r = {seed * 7 + 3};
  for (int l = 0; l < c.n_layers; l++) {
    qat_linear *lins[7] = {&m->layers[l].q,    &m->layers[l].k,  &m->layers[l].v,
                           &m->layers[l].o,    &m->layers[l].gate, &m->layers[l].up,
                           &m->layers[l].down};
    for (int i = 0; i < 7; i++) {
      tu_fill_normal(&r, (float *)lins[i]->w.data, (size_t)qat_numel(&lins[i]->w),
                     1.0f / sqrtf((float)lins[i]->in));
      if (lins[i]->b.data) tu_fill_normal(&r, (float *)lins[i]->b.data, (size_t)lins[i]->out, 0.1f);
    }
  }
  tu_fill_normal(&r, (float *)m->embed.data, (size_t)qat_numel(&m->embed), 1.0f);
  if (!llama3) tu_fill_normal(&r, (float *)m->lm_head.data, (size_t)qat_numel(&m->lm_head), 0.3f);
  if (quant) { /* RTN 4-bit, groups of 8 columns: decode runs on the fake-quant weights */
    qat_qspec q = {.bits = 4, .group = 8};
    TU_REQUIRE_OK(qat_llama_set_quant(m, &q));
  }
  return m;
}

static void random_ids(uint64_t seed, int32_t *ids, int n, int V) {
  tu_rng r = {seed};
  for (int i = 0; i < n; i++) ids[i] = (int32_t)(tu_next(&r) % (uint64_t)V);
}

/* Whole-context logits [T, V] of ids (host copy). */
static float *full_logits(qat_llama *m, const int32_t *ids, int T) {
  const int V = m->cfg.vocab;
  TU_REQUIRE_OK(qat_llama_plan(m, 1, T, 0));
  TU_REQUIRE_OK(qat_llama_forward(m, ids, 1, T));
  float *h = malloc((size_t)T * V * sizeof *h);
  ck_assert_ptr_nonnull(h);
  memcpy(h, m->logits.data, (size_t)T * V * sizeof *h);
  return h;
}

/* Prompt of P tokens, then chunks of `chunk` tokens up to T: logits of each chunk's last token
 * against the full forward's row. */
static void check_positions(int llama3, int quant, int P, int chunk, int T) {
  qat_llama *m = make_model(llama3, quant, 11 + llama3);
  const int V = m->cfg.vocab;
  int32_t ids[128];
  random_ids(5, ids, T, V);
  float *ref = full_logits(m, ids, T);
  qat_llama_decoder *d;
  TU_REQUIRE_OK(qat_llama_decoder_new(m, T, P > chunk ? P : chunk, &d));
  float row[64];
  TU_REQUIRE_OK(qat_llama_decoder_step(d, ids, P, row));
  double e = tu_nerr(row, ref + (size_t)(P - 1) * V, V);
  ck_assert_msg(e < TOL, "prefill of %d: nerr %.3g", P, e);
  for (int t = P; t < T; t += chunk) {
    int n = T - t < chunk ? T - t : chunk;
    TU_REQUIRE_OK(qat_llama_decoder_step(d, ids + t, n, row));
    ck_assert_int_eq(qat_llama_decoder_len(d), t + n);
    e = tu_nerr(row, ref + (size_t)(t + n - 1) * V, V);
    ck_assert_msg(e < TOL, "%s%s position %d (chunk %d): nerr %.3g", llama3 ? "llama3" : "qwen2",
                  quant ? " quant" : "", t + n - 1, n, e);
  }
  qat_llama_decoder_free(d);
  free(ref);
  qat_llama_free(m);
}

START_TEST(test_steps_match_forward) { check_positions(0, 0, 5, 1, 80); }
END_TEST
START_TEST(test_steps_match_forward_llama3_tied) { check_positions(1, 0, 1, 1, 70); }
END_TEST
START_TEST(test_steps_match_forward_quant) { check_positions(0, 1, 9, 1, 40); }
END_TEST
START_TEST(test_chunks_match_forward) { check_positions(1, 0, 7, 5, 67); }
END_TEST

START_TEST(test_full_cache_refused) {
  qat_llama *m = make_model(0, 0, 3);
  const int V = m->cfg.vocab;
  int32_t ids[12];
  random_ids(9, ids, 12, V);
  float *ref = full_logits(m, ids, 10);
  qat_llama_decoder *d;
  TU_REQUIRE_OK(qat_llama_decoder_new(m, 10, 4, &d));
  ck_assert_int_eq(qat_llama_decoder_max_ctx(d), 10);
  float row[64];
  TU_REQUIRE_OK(qat_llama_decoder_step(d, ids, 4, row));
  ck_assert_int_eq(qat_llama_decoder_step(d, ids + 4, 5, row), QAT_EINVAL); /* chunk > 4 */
  TU_REQUIRE_OK(qat_llama_decoder_step(d, ids + 4, 4, row));
  TU_REQUIRE_OK(qat_llama_decoder_step(d, ids + 8, 2, row));
  ck_assert_double_lt(tu_nerr(row, ref + 9 * V, V), TOL);
  ck_assert_int_eq(qat_llama_decoder_step(d, ids + 10, 1, row), QAT_EINVAL);
  ck_assert_msg(strstr(qat_last_error(), "KV cache is full"), "%s", qat_last_error());
  ck_assert_int_eq(qat_llama_decoder_len(d), 10);
  int32_t bad = V;
  qat_llama_decoder_reset(d);
  ck_assert_int_eq(qat_llama_decoder_step(d, &bad, 1, row), QAT_EINVAL);
  ck_assert_int_eq(qat_llama_decoder_len(d), 0);
  /* after a reset the cache is reused from position 0 */
  TU_REQUIRE_OK(qat_llama_decoder_step(d, ids, 3, row));
  ck_assert_double_lt(tu_nerr(row, ref + 2 * V, V), TOL);
  qat_llama_decoder_free(d);
  ck_assert_int_eq(qat_llama_decoder_new(m, 81, 1, &d), QAT_EINVAL); /* max_seq 80 */
  ck_assert_int_eq(qat_llama_decoder_new(m, 8, 9, &d), QAT_EINVAL);
  ck_assert_int_eq(qat_llama_decoder_new(m, 0, 1, &d), QAT_EINVAL);
  free(ref);
  qat_llama_free(m);
}
END_TEST

/* Greedy and sampled ids through the cache equal the no-cache path's. */
static void check_generate(int llama3, int quant, float temp) {
  qat_llama *m = make_model(llama3, quant, 21);
  int32_t prompt[6], a[80], b[80];
  random_ids(4, prompt, 6, m->cfg.vocab);
  qat_generate_opts o = {50, 0};
  qat_generate_stats sa, sb;
  qat_sampler s;
  qat_sampler_init(&s, temp, 0.9f, 77);
  TU_REQUIRE_OK(qat_generate_ids(m, prompt, 6, &o, -1, &s, a, &sa));
  o.no_cache = 1;
  qat_sampler_init(&s, temp, 0.9f, 77);
  TU_REQUIRE_OK(qat_generate_ids(m, prompt, 6, &o, -1, &s, b, &sb));
  ck_assert_int_eq(sa.new_tokens, 50);
  ck_assert_int_eq(sb.new_tokens, 50);
  ck_assert_int_eq(sa.decode_steps, 49);
  for (int i = 0; i < 50; i++)
    ck_assert_msg(a[i] == b[i], "token %d: cache %d, no cache %d", i, a[i], b[i]);
  /* past max_seq (80): stops there, both ways */
  o.steps = 1000;
  o.no_cache = 0;
  qat_sampler_init(&s, temp, 0.9f, 77);
  TU_REQUIRE_OK(qat_generate_ids(m, prompt, 6, &o, -1, &s, a, &sa));
  ck_assert_int_eq(sa.new_tokens, 80 - 6);
  for (int i = 0; i < 50; i++) ck_assert_int_eq(a[i], b[i]);
  qat_llama_free(m);
}

START_TEST(test_generate_greedy) { check_generate(0, 0, 0.0f); }
END_TEST
START_TEST(test_generate_greedy_quant_llama3) { check_generate(1, 1, 0.0f); }
END_TEST
START_TEST(test_generate_sampled) { check_generate(0, 0, 1.0f); }
END_TEST

int main(void) {
  Suite *s = suite_create("generate_decode");
  TCase *tc = tcase_create("generate_decode");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_steps_match_forward);
  tcase_add_test(tc, test_steps_match_forward_llama3_tied);
  tcase_add_test(tc, test_steps_match_forward_quant);
  tcase_add_test(tc, test_chunks_match_forward);
  tcase_add_test(tc, test_full_cache_refused);
  tcase_add_test(tc, test_generate_greedy);
  tcase_add_test(tc, test_generate_greedy_quant_llama3);
  tcase_add_test(tc, test_generate_sampled);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
