/* Packed-weight inference (host/model/llama_packed.c) against the fake-quant model of the same
 * codes, on the CPU with tiny random Llama models with attention_bias (q, k, v and o biases: a
 * bias after qgemm and one after the residual add), GQA and an untied lm_head. The packed folder is
 * written here from the fake-quant model (fq_codes -> qat_packed_pack -> qat_packed_st_add,
 * config.json from the config), so the two hold the same grid; F16-scale specs round the
 * model's s to F16 first. Specs: W4 g8 asym F32 scales, W3 g16 sym F16, W2 per-channel asym F16.
 * - forward logits at B x T = 2 x 12 (M = 24: qgemm's dequantized panels) and 1 x 7 (M = 7:
 *   decode-and-dot) equal the fake-quant model's within 1e-5 normalized error;
 * - the KV-cache decoder (prefill of 5, then single steps: the residual adds through the
 *   decoder's scratch) equals the fake-quant forward's rows within 1e-5;
 * - an inference block forward of layer 1 equals the fake-quant one;
 * - no Linear master exists (w.data NULL, the params arena smaller by at least their F32
 *   bytes) and qat_llama_weight_bytes counts the packed bytes;
 * - refused: training plans (whole and block), set_quant, save_hf and the block forward on fp
 *   masters (QAT_EUNSUPPORTED); loading the folder with qat_llama_load (QAT_EUNSUPPORTED,
 *   "packed"); a non-CPU backend; a config.json whose intermediate_size disagrees with the
 *   packed headers (QAT_EFORMAT, one line naming config.json and the key). */
#include "testutil.h"

#include "io/fsutil.h"
#include "io/safetensors.h"
#include "model/llama_decode.h"
#include "model/llama_packed.h"
#include "model/llama_priv.h"
#include "quant/packed.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

static qat_llama_config tiny(void) {
  qat_llama_config c;
  memset(&c, 0, sizeof c);
  snprintf(c.arch, sizeof c.arch, "llama");
  c.dim = 32;
  c.hidden = 48;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.vocab = 41;
  c.max_seq = 64;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.qkv_bias = 1;
  c.o_bias = 1;
  c.bos_id = 1;
  c.eos_id = 2;
  c.file_dtype = QAT_F32;
  return c;
}

/* The fake-quant reference: random weights large enough for peaked logits, RTN spec q, s on the
 * F16 grid when sdt is F16 (what the packed F16 scales hold). */
static qat_llama *make_fq(const qat_qspec *q, qat_dtype sdt, uint64_t seed) {
  qat_llama_config c = tiny();
  qat_llama *m;
  TU_REQUIRE_OK(qat_llama_random(&c, qat_backend_cpu(), seed, &m));
  tu_rng r = {seed * 7 + 3};
  for (int l = 0; l < c.n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      tu_fill_normal(&r, (float *)lins[i]->w.data, (size_t)qat_numel(&lins[i]->w),
                     1.0f / sqrtf((float)lins[i]->in));
      if (lins[i]->b.data) tu_fill_normal(&r, (float *)lins[i]->b.data, (size_t)lins[i]->out, 0.1f);
    }
  }
  tu_fill_normal(&r, (float *)m->embed.data, (size_t)qat_numel(&m->embed), 1.0f);
  tu_fill_normal(&r, (float *)m->lm_head.data, (size_t)qat_numel(&m->lm_head), 0.3f);
  TU_REQUIRE_OK(qat_llama_set_quant(m, q));
  if (sdt == QAT_F16)
    for (int l = 0; l < c.n_layers; l++) {
      qat_linear *lins[7];
      qat_llama_linears(&m->layers[l], lins);
      for (int i = 0; i < 7; i++) {
        float *s = (float *)lins[i]->s.data;
        for (int64_t j = 0; j < qat_numel(&lins[i]->s); j++) {
          float v = s[j] < QAT_S_MIN ? QAT_S_MIN : s[j] > QAT_S_MAX ? QAT_S_MAX : s[j];
          s[j] = qat_f16_to_f32(qat_f32_to_f16(v));
        }
      }
    }
  return m;
}

/* dir/config.json + dir/model.safetensors: m's non-Linear tensors and its Linears packed. */
static void write_packed(qat_llama *m, const qat_qspec *q, qat_dtype sdt, const char *dir) {
  const qat_llama_config *c = &m->cfg;
  char path[4096];
  char *json = qat_llama_config_json(c);
  ck_assert_ptr_nonnull(json);
  snprintf(path, sizeof path, "%s/config.json", dir);
  tu_write_file(path, json, strlen(json));
  free(json);
  lt_entry *t = NULL;
  int n = 0;
  TU_REQUIRE_OK(qat_llama_table(m, &t, &n));
  qat_st_writer w;
  qat_st_writer_init(&w);
  for (int i = 0; i < n; i++)
    if (t[i].kind != LT_LINEAR_W)
      TU_REQUIRE_OK(qat_st_writer_add(&w, t[i].name, QAT_F32, t[i].ndim, t[i].shape, t[i].p->data));
  int nl = 7 * c->n_layers;
  qat_packed *pk = calloc((size_t)nl, sizeof *pk);
  ck_assert_ptr_nonnull(pk);
  for (int l = 0; l < c->n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      qat_linear *li = lins[i];
      uint8_t *codes = malloc((size_t)(li->out * li->in));
      ck_assert_ptr_nonnull(codes);
      qat_tensor ct = qat_view2(codes, QAT_U8, QAT_DEV_CPU, li->out, li->in);
      const qat_tensor *z = q->sym ? NULL : &li->z;
      TU_REQUIRE_OK(QAT_OP(m->be, fq_codes, q, &li->w, &li->s, z, &ct));
      qat_packed *p = &pk[7 * l + i];
      TU_REQUIRE_OK(qat_packed_alloc(p, q, li->out, li->in, sdt, li->name));
      TU_REQUIRE_OK(qat_packed_pack(p, codes, (const float *)li->s.data,
                                    q->sym ? NULL : (const float *)li->z.data, li->name));
      TU_REQUIRE_OK(qat_packed_st_add(&w, li->name, p));
      free(codes);
    }
  }
  char meta[256];
  TU_REQUIRE_OK(qat_st_writer_meta(&w, "qat_packed", qat_packed_meta(q, sdt, meta, sizeof meta)));
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  TU_REQUIRE_OK(qat_st_write(&w, path));
  qat_st_writer_free(&w);
  for (int i = 0; i < nl; i++) qat_packed_free(&pk[i]);
  free(pk);
  free(t);
}

static float *logits_of(qat_llama *m, const int32_t *ids, int B, int T) {
  const size_t n = (size_t)B * T * m->cfg.vocab;
  TU_REQUIRE_OK(qat_llama_plan(m, B, T, 0));
  TU_REQUIRE_OK(qat_llama_forward(m, ids, B, T));
  float *h = malloc(n * sizeof *h);
  ck_assert_ptr_nonnull(h);
  memcpy(h, m->logits.data, n * sizeof *h);
  return h;
}

static void check_spec(int bits, int group, int sym, qat_dtype sdt) {
  qat_qspec q = {.bits = bits, .group = group, .sym = sym};
  qat_llama *fq = make_fq(&q, sdt, 100 + (uint64_t)bits);
  const char *dir = tu_dir();
  write_packed(fq, &q, sdt, dir);
  qat_llama *pm = NULL;
  TU_REQUIRE_OK(qat_llama_load_packed(dir, qat_backend_cpu(), &pm));
  ck_assert_int_eq(pm->packed, 1);
  ck_assert_int_eq(qat_llama_dir_is_packed(dir), 1);
  const int V = pm->cfg.vocab, C = pm->cfg.dim;
  const char *tag = sdt == QAT_F16 ? "F16" : "F32";

  /* forward: both qgemm regimes */
  int32_t ids[24];
  tu_rng r = {9};
  for (int i = 0; i < 24; i++) ids[i] = (int32_t)(tu_next(&r) % (uint64_t)V);
  int shapes[2][2] = {{2, 12}, {1, 7}};
  for (int k = 0; k < 2; k++) {
    int B = shapes[k][0], T = shapes[k][1];
    float *a = logits_of(fq, ids, B, T), *b = logits_of(pm, ids, B, T);
    double e = tu_nerr(b, a, (size_t)B * T * V);
    ck_assert_msg(e < TOL, "W%d g%d %s %s forward %dx%d: nerr %.3g", bits, group,
                  sym ? "sym" : "asym", tag, B, T, e);
    free(a);
    free(b);
  }

  /* decoder: prefill 5, then one token per step, against the fake-quant forward's rows */
  const int T = 16, P = 5;
  float *ref = logits_of(fq, ids, 1, T);
  qat_llama_decoder *d;
  TU_REQUIRE_OK(qat_llama_decoder_new(pm, T, P, &d));
  float row[64];
  TU_REQUIRE_OK(qat_llama_decoder_step(d, ids, P, row));
  double e = tu_nerr(row, ref + (size_t)(P - 1) * V, V);
  ck_assert_msg(e < TOL, "W%d %s prefill: nerr %.3g", bits, tag, e);
  for (int t = P; t < T; t++) {
    TU_REQUIRE_OK(qat_llama_decoder_step(d, ids + t, 1, row));
    e = tu_nerr(row, ref + (size_t)t * V, V);
    ck_assert_msg(e < TOL, "W%d %s decode position %d: nerr %.3g", bits, tag, t, e);
  }
  qat_llama_decoder_free(d);
  free(ref);

  /* inference block forward of layer 1 */
  const int BT = 6;
  float *x = malloc((size_t)BT * C * sizeof *x), *ya = malloc((size_t)BT * C * sizeof *ya),
        *yb = malloc((size_t)BT * C * sizeof *yb);
  ck_assert(x && ya && yb);
  tu_fill_normal(&r, x, (size_t)BT * C, 1.0f);
  qat_tensor xt = qat_view2(x, QAT_F32, QAT_DEV_CPU, BT, C);
  qat_tensor yat = qat_view2(ya, QAT_F32, QAT_DEV_CPU, BT, C);
  qat_tensor ybt = qat_view2(yb, QAT_F32, QAT_DEV_CPU, BT, C);
  TU_REQUIRE_OK(qat_llama_plan_block(fq, 1, BT, 0));
  TU_REQUIRE_OK(qat_llama_plan_block(pm, 1, BT, 0));
  TU_REQUIRE_OK(qat_llama_block_forward(fq, 1, &xt, &yat, 1, BT));
  TU_REQUIRE_OK(qat_llama_block_forward(pm, 1, &xt, &ybt, 1, BT));
  e = tu_nerr(yb, ya, (size_t)BT * C);
  ck_assert_msg(e < TOL, "W%d %s block forward: nerr %.3g", bits, tag, e);

  /* no Linear masters; the packed bytes are what the report counts */
  qat_llama_mem mf, mp;
  TU_REQUIRE_OK(qat_llama_memory(fq, &mf));
  TU_REQUIRE_OK(qat_llama_memory(pm, &mp));
  int64_t f32_bytes = 0, pk_bytes = 0, nw = 0;
  for (int l = 0; l < pm->cfg.n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&pm->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      ck_assert_ptr_null(lins[i]->w.data);
      ck_assert_ptr_null(lins[i]->w_hat.data);
      ck_assert_ptr_nonnull(lins[i]->pk);
      f32_bytes += 4 * lins[i]->out * lins[i]->in;
      pk_bytes += qat_packed_bytes(lins[i]->pk);
      nw += lins[i]->out * lins[i]->in;
    }
  }
  ck_assert_msg((int64_t)mp.params + f32_bytes <= (int64_t)mf.params,
                "packed params arena %zu + F32 Linears %lld > fake-quant params %zu", mp.params,
                (long long)f32_bytes, mf.params);
  ck_assert_uint_eq(mp.wcomp, 0);
  ck_assert_uint_eq(mp.qstate, 0);
  qat_llama_wbytes wb;
  qat_llama_weight_bytes(pm, &wb);
  ck_assert_int_eq(wb.linear_weights, nw);
  ck_assert_int_eq(wb.linear_bytes, pk_bytes);
  ck_assert_int_eq(wb.resident, (int64_t)mp.params + pk_bytes);
  ck_assert_double_eq_tol(wb.bpw, 8.0 * (double)pk_bytes / (double)nw, 1e-12);
  ck_assert_double_lt(wb.bpw, bits + 8.0 * (sdt == QAT_F16 ? 2 : 4) / (group < 0 ? 32 : group) + 2);

  /* inference only */
  ck_assert_int_eq(qat_llama_plan(pm, 1, 8, 1), QAT_EUNSUPPORTED);
  ck_assert_msg(strstr(qat_last_error(), "training on packed weights"), "%s", qat_last_error());
  ck_assert_int_eq(qat_llama_plan_block(pm, 1, 8, 1), QAT_EUNSUPPORTED);
  ck_assert_int_eq(qat_llama_set_quant(pm, &q), QAT_EUNSUPPORTED);
  ck_assert_int_eq(qat_llama_block_forward_fp(pm, 1, &xt, &ybt, 1, BT), QAT_EUNSUPPORTED);
  ck_assert_int_eq(qat_llama_save_hf(pm, dir, tu_dir_path("saved")), QAT_EUNSUPPORTED);
  ck_assert_int_eq(qat_path_exists(tu_dir_path("saved")), 0);
  /* still runs after the refusals */
  float *again = logits_of(pm, ids, 1, 7);
  free(again);
  free(x);
  free(ya);
  free(yb);
  qat_llama_free(pm);
  qat_llama_free(fq);
}

START_TEST(test_w4g8_asym_f32) { check_spec(4, 8, 0, QAT_F32); }
END_TEST
START_TEST(test_w3g16_sym_f16) { check_spec(3, 16, 1, QAT_F16); }
END_TEST
START_TEST(test_w2_per_channel_asym_f16) { check_spec(2, -1, 0, QAT_F16); }
END_TEST

START_TEST(test_refusals) {
  qat_qspec q = {.bits = 4, .group = 8};
  qat_llama *fq = make_fq(&q, QAT_F32, 5);
  const char *dir = tu_dir();
  write_packed(fq, &q, QAT_F32, dir);
  qat_llama *m = NULL;
  /* the F32 loader: a packed folder is inference only */
  ck_assert_int_eq(qat_llama_load(dir, qat_backend_cpu(), &m), QAT_EUNSUPPORTED);
  ck_assert_msg(strstr(qat_last_error(), "holds packed weights"), "%s", qat_last_error());
  ck_assert_ptr_null(m);
  /* another device */
  qat_backend fake = *qat_backend_cpu();
  fake.device = QAT_DEV_CUDA;
  fake.name = "cuda";
  ck_assert_int_eq(qat_llama_load_packed(dir, &fake, &m), QAT_EUNSUPPORTED);
  ck_assert_msg(strstr(qat_last_error(), "cpu backend only"), "%s", qat_last_error());
  /* config.json against the packed headers */
  qat_llama_config c = fq->cfg;
  c.hidden = 56;
  char *json = qat_llama_config_json(&c);
  tu_write_file(tu_dir_path("config.json"), json, strlen(json));
  free(json);
  ck_assert_int_eq(qat_llama_load_packed(dir, qat_backend_cpu(), &m), QAT_EFORMAT);
  const char *msg = qat_last_error();
  ck_assert_msg(strstr(msg, "config.json: intermediate_size = 56 disagrees with the packed "
                            "weights: tensor model.layers.0.mlp.gate_proj.qcodes has 48 rows"),
                "%s", msg);
  ck_assert_ptr_null(strchr(msg, '\n'));
  ck_assert_ptr_null(m);
  /* an F32 folder is not packed */
  ck_assert_int_eq(qat_llama_dir_is_packed(tu_dir_path("nothing-here")), 0);
  qat_llama_free(fq);
}
END_TEST

int main(void) {
  Suite *s = suite_create("model_packed");
  TCase *tc = tcase_create("model_packed");
  tcase_set_timeout(tc, 120);
  tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
  tcase_add_test(tc, test_w4g8_asym_f32);
  tcase_add_test(tc, test_w3g16_sym_f16);
  tcase_add_test(tc, test_w2_per_channel_asym_f16);
  tcase_add_test(tc, test_refusals);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
