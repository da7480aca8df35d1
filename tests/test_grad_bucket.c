/* The bucketed gradient all-reduce (train/grad_bucket.h) on the CPU backend, on tiny random
 * LLaMA models (C=16, F=24, L=3, V=19; fake-quant W4 g8, train_embeddings on, tied and untied):
 * a stand-in communicator of world 2 whose all-reduce doubles the buffer (what summing two
 * identical ranks gives, exact in F32 and BF16) is driven by the backward's per-layer hook on the
 * second of two micro-batches. Then every gradient buffer of qat_dist_grad_buffers must equal
 * exactly 2 x the same two micro-batches accumulated without buckets: a bucket started before
 * its layers were final, a segment missed or copied back to the wrong place, the first
 * micro-batch communicating, or a gradient reduced twice all break the equality. Bucket sizes:
 * 1 element, 37 (buckets end inside tensors), one bucket for everything. BF16 on the wire:
 * exactly 2 x bf16(g), with bf16 rounding (to nearest even) computed here from the bits. Also
 * checked: how many buckets, bytes on the wire, buckets started during the backward, and the
 * collective calls. */
#include "testutil.h"

#include "model/llama.h"
#include "train/dist_train.h"
#include "train/grad_bucket.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BB 2
#define TT 5
#define NTOK (BB * TT)

static int64_t g_calls, g_elems;

static uint16_t bf16_of(float f) { /* round to nearest even (finite inputs) */
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
static float f32_of_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* two identical ranks: the sum is the buffer doubled */
static qat_status x2_allreduce(qat_dist *d, void *buf, int64_t n, qat_dtype dt, qat_dist_op op) {
  (void)d;
  ck_assert_int_eq(op, QAT_RED_SUM);
  g_calls++;
  g_elems += n;
  if (dt == QAT_F32) {
    float *x = buf;
    for (int64_t i = 0; i < n; i++) x[i] *= 2.0f;
  } else {
    ck_assert_int_eq(dt, QAT_BF16);
    uint16_t *x = buf;
    for (int64_t i = 0; i < n; i++) x[i] = bf16_of(2.0f * f32_of_bf16(x[i]));
  }
  return QAT_OK;
}

static qat_llama *make_model(int tied, uint64_t seed) {
  qat_llama_config c;
  memset(&c, 0, sizeof c);
  snprintf(c.arch, sizeof c.arch, "llama");
  c.dim = 16;
  c.hidden = 24;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.vocab = 19;
  c.max_seq = 64;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.tie_embeddings = tied;
  c.bos_id = 1;
  c.eos_id = 2;
  c.file_dtype = QAT_F32;
  qat_llama *m = NULL;
  TU_REQUIRE_OK(qat_llama_random(&c, qat_backend_cpu(), seed, &m));
  TU_REQUIRE_OK(qat_llama_set_quant(m, &(qat_qspec){.bits = 4, .group = 8, .sym = 0,
                                                     .grad = QAT_QGRAD_EFFICIENTQAT}));
  m->train_embeddings = 1;
  TU_REQUIRE_OK(qat_llama_plan(m, BB, TT, 1));
  return m;
}

static void micro(qat_llama *m, uint64_t seed) {
  tu_rng r = {seed};
  int32_t tok[NTOK], tgt[NTOK];
  for (int i = 0; i < NTOK; i++) {
    tok[i] = (int32_t)(tu_next(&r) % (uint64_t)m->cfg.vocab);
    tgt[i] = (int32_t)(tu_next(&r) % (uint64_t)m->cfg.vocab);
  }
  double loss;
  int64_t cnt;
  TU_REQUIRE_OK(qat_llama_forward(m, tok, BB, TT));
  TU_REQUIRE_OK(qat_llama_xent(m, tgt, 1.0f / NTOK, &loss, &cnt));
  TU_REQUIRE_OK(qat_llama_backward(m));
}

/* Every gradient buffer, concatenated (host copy; CPU backend). */
static float *snapshot(qat_llama *m, int64_t *total) {
  qat_tensor *g = NULL;
  int n = 0;
  TU_REQUIRE_OK(qat_dist_grad_buffers(m, &g, &n));
  int64_t N = 0;
  for (int i = 0; i < n; i++) N += qat_numel(&g[i]);
  float *out = malloc((size_t)N * 4), *p = out;
  ck_assert_ptr_nonnull(out);
  for (int i = 0; i < n; i++) {
    memcpy(p, g[i].data, (size_t)qat_numel(&g[i]) * 4);
    p += qat_numel(&g[i]);
  }
  free(g);
  *total = N;
  return out;
}

static void run(int tied, qat_dtype wire, double bucket_elems) {
  qat_llama *m = make_model(tied, 11 + (uint64_t)tied);
  /* reference: the two micro-batches accumulated, no hook */
  TU_REQUIRE_OK(qat_llama_zero_grad(m));
  micro(m, 101);
  micro(m, 202);
  int64_t n_ref, n_got;
  float *ref = snapshot(m, &n_ref);
  for (int64_t i = 0; i < n_ref; i++) ref[i] = 2.0f * (wire == QAT_F32 ? ref[i]
                                                         : f32_of_bf16(bf16_of(ref[i])));

  qat_dist d = {.name = "x2", .rank = 0, .world = 2, .device = QAT_DEV_CPU,
                .allreduce = x2_allreduce};
  qat_grad_buckets gb;
  TU_REQUIRE_OK(qat_grad_buckets_init(&gb, &d, m->be, wire, bucket_elems * 4.0));
  for (int step = 0; step < 2; step++) { /* the layout is rebuilt and the slots reused */
    g_calls = g_elems = 0;
    TU_REQUIRE_OK(qat_llama_zero_grad(m));
    micro(m, 101);
    ck_assert_int_eq(g_calls, 0);
    TU_REQUIRE_OK(qat_grad_buckets_begin(&gb, m));
    micro(m, 202);
    int64_t during = g_calls;
    TU_REQUIRE_OK(qat_grad_buckets_finish(&gb, m));
    ck_assert_ptr_null(m->bwd_hook);
    ck_assert_int_eq(gb.total, n_ref);
    int64_t cap = (int64_t)bucket_elems;
    int64_t nb = cap >= n_ref ? 1 : (n_ref + cap - 1) / cap;
    ck_assert_int_eq(gb.nb, nb);
    ck_assert_int_eq(g_calls, nb);
    ck_assert_int_eq(g_elems, n_ref);
    ck_assert_int_eq(during, nb); /* the last hook (-1) is still inside the backward */
    ck_assert_int_eq(gb.started, nb * (step + 1));
    ck_assert_int_eq(gb.wire_bytes, n_ref * (int64_t)qat_dtype_size(wire) * (step + 1));
    if (nb > 1) ck_assert_int_gt(gb.early, 0); /* some started before the last layer */
    float *got = snapshot(m, &n_got);
    ck_assert_int_eq(n_got, n_ref);
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n_ref; i++)
      if (memcmp(&got[i], &ref[i], 4) != 0 && bad++ == 0) first = i;
    ck_assert_msg(bad == 0, "tied %d %s cap %g step %d: %lld of %lld differ (first %lld: %g vs %g)",
                  tied, qat_dtype_name(wire), bucket_elems, step, (long long)bad,
                  (long long)n_ref, (long long)first, first >= 0 ? got[first] : 0.0,
                  first >= 0 ? ref[first] : 0.0);
    free(got);
  }
  qat_grad_buckets_free(&gb);
  free(ref);
  qat_llama_free(m);
}

START_TEST(test_f32_one_element) { run(0, QAT_F32, 1); }
END_TEST
START_TEST(test_f32_split_tensors) {
  run(0, QAT_F32, 37);
  run(1, QAT_F32, 37);
}
END_TEST
START_TEST(test_f32_one_bucket) { run(1, QAT_F32, 1e9); }
END_TEST
START_TEST(test_bf16_wire) {
  run(0, QAT_BF16, 37);
  run(1, QAT_BF16, 1e9);
}
END_TEST

START_TEST(test_bad_wire) {
  qat_grad_buckets gb;
  qat_status st = qat_grad_buckets_init(&gb, qat_dist_single(), qat_backend_cpu(), QAT_F16, 1e6);
  ck_assert_int_eq(st, QAT_EINVAL);
}
END_TEST

int main(void) {
  Suite *s = suite_create("grad_bucket");
  TCase *tc = tcase_create("grad_bucket");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_f32_one_element);
  tcase_add_test(tc, test_f32_split_tensors);
  tcase_add_test(tc, test_f32_one_bucket);
  tcase_add_test(tc, test_bf16_wire);
  tcase_add_test(tc, test_bad_wire);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
