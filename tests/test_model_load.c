/* Loading Hugging Face folders into the LLaMA model: tiny folders written here (config.json +
 * safetensors through the writer, single and sharded, F32 / F16 / BF16), logits compared with a
 * naive double-precision forward written in this file (HF semantics: rotate-half RoPE with
 * Llama-3 scaling, GQA, causal softmax attention, SwiGLU, RMSNorm); saving a fake-quantized
 * model and loading it back; and the errors (config keys, tensor shapes, NaN weights).
 *
 * Tolerance for logits: normalized error (max |diff| / max |ref|) < 1e-5. Both sides use the same
 * stored weights (the reference reads back the values after rounding to the file dtype), so the
 * difference is F32 arithmetic in the model: ~1e-7 relative per op, a few dozen ops deep. */
#include "testutil.h"

#include "io/fsutil.h"
#include "io/safetensors.h"
#include "model/llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXL 3
#define TSEQ 7

typedef struct {
  const char *arch;
  int C, F, L, Hq, Hkv, D, V;
  int tied, bias, llama3;
  double eps, theta;
  qat_dtype dtype;
  /* host weights (after rounding to the file dtype) */
  float *embed, *lm_head, *fnorm;
  struct {
    float *an, *fn, *wq, *wk, *wv, *wo, *bq, *bk, *bv, *bo, *wg, *wu, *wd;
  } ly[MAXL];
  /* the tensor list as written */
  int n;
  char names[64][96];
  float *data[64];
  int ndim[64];
  int64_t shape[64][2];
} ref_model;

static float *tensor(ref_model *r, tu_rng *g, const char *name, int64_t d0, int64_t d1, float mean,
                     float sd) {
  int i = r->n++;
  snprintf(r->names[i], sizeof r->names[i], "%s", name);
  int64_t n = d0 * (d1 ? d1 : 1);
  float *p = malloc((size_t)n * sizeof *p);
  for (int64_t j = 0; j < n; j++) p[j] = mean + sd * tu_normal(g);
  /* round to the file dtype so the reference sees what the model loads */
  void *tmp = malloc((size_t)n * 4);
  TU_REQUIRE_OK(qat_convert_from_f32(p, tmp, r->dtype, (size_t)n));
  TU_REQUIRE_OK(qat_convert_to_f32(tmp, r->dtype, p, (size_t)n));
  free(tmp);
  r->data[i] = p;
  r->ndim[i] = d1 ? 2 : 1;
  r->shape[i][0] = d0;
  r->shape[i][1] = d1;
  return p;
}

static void ref_init(ref_model *r, uint64_t seed) {
  tu_rng g = {seed};
  char nm[96];
  int C = r->C, F = r->F, QD = r->Hq * r->D, KVD = r->Hkv * r->D;
  r->embed = tensor(r, &g, "model.embed_tokens.weight", r->V, C, 0, 1.0f);
  for (int l = 0; l < r->L; l++) {
#define T2(field, what, a, b, mean, sd)                                                           \
  snprintf(nm, sizeof nm, "model.layers.%d.%s", l, what);                                         \
  r->ly[l].field = tensor(r, &g, nm, a, b, mean, sd)
    T2(an, "input_layernorm.weight", C, 0, 1.0f, 0.2f);
    T2(wq, "self_attn.q_proj.weight", QD, C, 0, 0.3f);
    T2(wk, "self_attn.k_proj.weight", KVD, C, 0, 0.3f);
    T2(wv, "self_attn.v_proj.weight", KVD, C, 0, 0.3f);
    if (r->bias) {
      T2(bq, "self_attn.q_proj.bias", QD, 0, 0, 0.2f);
      T2(bk, "self_attn.k_proj.bias", KVD, 0, 0, 0.2f);
      T2(bv, "self_attn.v_proj.bias", KVD, 0, 0, 0.2f);
    }
    T2(wo, "self_attn.o_proj.weight", C, QD, 0, 0.3f);
    if (r->bias && strcmp(r->arch, "qwen2") != 0) { /* Llama attention_bias: o_proj too */
      T2(bo, "self_attn.o_proj.bias", C, 0, 0, 0.2f);
    }
    T2(fn, "post_attention_layernorm.weight", C, 0, 1.0f, 0.2f);
    T2(wg, "mlp.gate_proj.weight", F, C, 0, 0.3f);
    T2(wu, "mlp.up_proj.weight", F, C, 0, 0.3f);
    T2(wd, "mlp.down_proj.weight", C, F, 0, 0.3f);
#undef T2
  }
  r->fnorm = tensor(r, &g, "model.norm.weight", C, 0, 1.0f, 0.2f);
  r->lm_head = r->tied ? r->embed : tensor(r, &g, "lm_head.weight", r->V, C, 0, 0.3f);
}

static void ref_free(ref_model *r) {
  for (int i = 0; i < r->n; i++) free(r->data[i]);
}

static const char *torch_dtype(qat_dtype t) {
  return t == QAT_F16 ? "float16" : t == QAT_BF16 ? "bfloat16" : "float32";
}

static void write_text(const char *dir, const char *name, const char *text) {
  char p[4096];
  TU_REQUIRE_OK(qat_path_join(p, sizeof p, dir, name));
  TU_REQUIRE_OK(qat_write_file_atomic(p, text, strlen(text)));
}

static void write_config(const ref_model *r, const char *dir) {
  char buf[2048], rs[512] = "null", bias[64] = "";
  if (r->llama3)
    snprintf(rs, sizeof rs,
             "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
             "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 64}");
  if (r->bias && strcmp(r->arch, "qwen2") != 0) snprintf(bias, sizeof bias, "\"attention_bias\": true,");
  snprintf(buf, sizeof buf,
           "{\"architectures\": [\"X\"], \"model_type\": \"%s\", \"hidden_act\": \"silu\", "
           "\"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d, "
           "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, "
           "\"vocab_size\": %d, \"max_position_embeddings\": 128, \"rms_norm_eps\": %.17g, "
           "\"rope_theta\": %.17g, \"rope_scaling\": %s, \"tie_word_embeddings\": %s, %s "
           "\"bos_token_id\": 1, \"eos_token_id\": [2, 5], \"torch_dtype\": \"%s\"}",
           r->arch, r->C, r->F, r->L, r->Hq, r->Hkv, r->D, r->V, r->eps, r->theta, rs,
           r->tied ? "true" : "false", bias, torch_dtype(r->dtype));
  write_text(dir, "config.json", buf);
}

/* model.safetensors, or nshards files + model.safetensors.index.json. */
static void write_weights(const ref_model *r, const char *dir, int nshards) {
  void *conv[64];
  char path[4096], idx[8192];
  int k = snprintf(idx, sizeof idx, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
  for (int s = 0; s < nshards; s++) {
    qat_st_writer w;
    qat_st_writer_init(&w);
    char fname[128];
    if (nshards == 1)
      snprintf(fname, sizeof fname, "model.safetensors");
    else
      snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, nshards);
    for (int i = 0; i < r->n; i++) {
      conv[i] = NULL;
      if (i % nshards != s) continue;
      int64_t n = r->shape[i][0] * (r->ndim[i] == 2 ? r->shape[i][1] : 1);
      conv[i] = malloc((size_t)n * 4);
      TU_REQUIRE_OK(qat_convert_from_f32(r->data[i], conv[i], r->dtype, (size_t)n));
      TU_REQUIRE_OK(qat_st_writer_add(&w, r->names[i], r->dtype, r->ndim[i], r->shape[i], conv[i]));
      k += snprintf(idx + k, sizeof idx - k, "%s\"%s\": \"%s\"", k > 60 ? ", " : "", r->names[i],
                    fname);
    }
    TU_REQUIRE_OK(qat_path_join(path, sizeof path, dir, fname));
    TU_REQUIRE_OK(qat_st_write(&w, path));
    qat_st_writer_free(&w);
    for (int i = 0; i < r->n; i++) free(conv[i]);
  }
  snprintf(idx + k, sizeof idx - k, "}}");
  if (nshards > 1) write_text(dir, "model.safetensors.index.json", idx);
}

/* ---- the reference forward (double) ------------------------------------------------------- */

static void rmsnorm(const double *x, const float *w, int C, double eps, double *out) {
  double ss = 0;
  for (int i = 0; i < C; i++) ss += x[i] * x[i];
  double r = 1.0 / sqrt(ss / C + eps);
  for (int i = 0; i < C; i++) out[i] = x[i] * r * w[i];
}

/* y[out] = W[out, in] x + b */
static void matvec(const float *W, const float *b, const double *x, int out, int in, double *y) {
  for (int o = 0; o < out; o++) {
    double s = b ? b[o] : 0;
    for (int i = 0; i < in; i++) s += (double)W[(int64_t)o * in + i] * x[i];
    y[o] = s;
  }
}

/* HF _compute_default_rope_parameters + _compute_llama3_parameters, in double. */
static void ref_inv_freq(const ref_model *r, double *f) {
  for (int i = 0; i < r->D / 2; i++) {
    double inv = 1.0 / pow(r->theta, (2.0 * i) / r->D);
    if (r->llama3) {
      double factor = 8, lo = 1, hi = 4, orig = 64;
      double wl = 2 * M_PI / inv, low_wl = orig / lo, high_wl = orig / hi;
      if (wl > low_wl)
        inv = inv / factor;
      else if (wl >= high_wl) {
        double sm = (orig / wl - lo) / (hi - lo);
        inv = (1 - sm) * inv / factor + sm * inv;
      }
    }
    f[i] = inv;
  }
}

static void rope(double *x, int H, int D, int pos, const double *inv) {
  for (int h = 0; h < H; h++) {
    double *v = x + h * D;
    for (int i = 0; i < D / 2; i++) {
      double a = pos * inv[i], c = cos(a), s = sin(a);
      double x0 = v[i], x1 = v[i + D / 2];
      v[i] = x0 * c - x1 * s;
      v[i + D / 2] = x1 * c + x0 * s;
    }
  }
}

static void ref_forward(const ref_model *r, const int32_t *tok, int T, double *logits) {
  int C = r->C, F = r->F, Hq = r->Hq, Hkv = r->Hkv, D = r->D, QD = Hq * D, KVD = Hkv * D;
  double *x = calloc((size_t)T * C, sizeof *x), *h = malloc(sizeof(double) * C);
  double *q = malloc(sizeof(double) * T * QD), *k = malloc(sizeof(double) * T * KVD);
  double *v = malloc(sizeof(double) * T * KVD), *att = malloc(sizeof(double) * QD);
  double *o = malloc(sizeof(double) * C), *g = malloc(sizeof(double) * F);
  double *u = malloc(sizeof(double) * F), *p = malloc(sizeof(double) * T);
  double inv[64];
  ref_inv_freq(r, inv);
  for (int t = 0; t < T; t++)
    for (int i = 0; i < C; i++) x[t * C + i] = r->embed[(int64_t)tok[t] * C + i];
  for (int l = 0; l < r->L; l++) {
    for (int t = 0; t < T; t++) {
      rmsnorm(x + t * C, r->ly[l].an, C, r->eps, h);
      matvec(r->ly[l].wq, r->bias ? r->ly[l].bq : NULL, h, QD, C, q + t * QD);
      matvec(r->ly[l].wk, r->bias ? r->ly[l].bk : NULL, h, KVD, C, k + t * KVD);
      matvec(r->ly[l].wv, r->bias ? r->ly[l].bv : NULL, h, KVD, C, v + t * KVD);
      rope(q + t * QD, Hq, D, t, inv);
      rope(k + t * KVD, Hkv, D, t, inv);
    }
    double *xn = malloc(sizeof(double) * T * C);
    for (int t = 0; t < T; t++) {
      for (int hh = 0; hh < Hq; hh++) {
        int kh = hh / (Hq / Hkv);
        double mx = -INFINITY, sum = 0;
        for (int s = 0; s <= t; s++) {
          double d = 0;
          for (int i = 0; i < D; i++) d += q[t * QD + hh * D + i] * k[s * KVD + kh * D + i];
          p[s] = d / sqrt((double)D);
          if (p[s] > mx) mx = p[s];
        }
        for (int s = 0; s <= t; s++) sum += (p[s] = exp(p[s] - mx));
        for (int i = 0; i < D; i++) {
          double a = 0;
          for (int s = 0; s <= t; s++) a += p[s] / sum * v[s * KVD + kh * D + i];
          att[hh * D + i] = a;
        }
      }
      matvec(r->ly[l].wo, r->ly[l].bo, att, C, QD, o);
      for (int i = 0; i < C; i++) xn[t * C + i] = x[t * C + i] + o[i];
    }
    for (int t = 0; t < T; t++) {
      double *xt = xn + t * C;
      rmsnorm(xt, r->ly[l].fn, C, r->eps, h);
      matvec(r->ly[l].wg, NULL, h, F, C, g);
      matvec(r->ly[l].wu, NULL, h, F, C, u);
      for (int i = 0; i < F; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
      matvec(r->ly[l].wd, NULL, g, C, F, o);
      for (int i = 0; i < C; i++) x[t * C + i] = xt[i] + o[i];
    }
    free(xn);
  }
  for (int t = 0; t < T; t++) {
    rmsnorm(x + t * C, r->fnorm, C, r->eps, h);
    matvec(r->lm_head, NULL, h, r->V, C, logits + (int64_t)t * r->V);
  }
  free(x), free(h), free(q), free(k), free(v), free(att), free(o), free(g), free(u), free(p);
}

/* ---- helpers -------------------------------------------------------------------------------- */

static const int32_t k_tok[TSEQ] = {3, 17, 0, 9, 9, 21, 4};

static double logits_nerr(qat_llama *m, const ref_model *r) {
  TU_REQUIRE_OK(qat_llama_plan(m, 1, TSEQ, 0));
  TU_REQUIRE_OK(qat_llama_forward(m, k_tok, 1, TSEQ));
  size_t n = (size_t)TSEQ * r->V;
  double *ref = malloc(n * sizeof *ref);
  ref_forward(r, k_tok, TSEQ, ref);
  const float *got = m->logits.data;
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    num = fmax(num, fabs(got[i] - ref[i]));
    den = fmax(den, fabs(ref[i]));
  }
  free(ref);
  return num / den;
}

static ref_model base_model(const char *arch, qat_dtype dt) {
  ref_model r;
  memset(&r, 0, sizeof r);
  r.arch = arch;
  r.C = 16;
  r.F = 20;
  r.L = 2;
  r.Hq = 4;
  r.Hkv = 2;
  r.D = 6; /* Hq * D = 24 != C: o_proj is [C, 24] */
  r.V = 23;
  r.eps = 1e-5;
  r.theta = 10000;
  r.dtype = dt;
  r.bias = strcmp(arch, "qwen2") == 0;
  return r;
}

static void check_folder(ref_model *r, int nshards, const char *what) {
  char *dir = tu_tmpdir();
  ref_init(r, 99);
  write_config(r, dir);
  write_weights(r, dir, nshards);
  qat_llama *m = NULL;
  TU_REQUIRE_OK(qat_llama_load(dir, qat_backend_cpu(), &m));
  ck_assert_int_eq(m->cfg.file_dtype, r->dtype);
  ck_assert_int_eq(m->cfg.eos_id, 2); /* first of the list */
  ck_assert_int_eq(m->cfg.qkv_bias, r->bias);
  double e = logits_nerr(m, r);
  printf("%s: logits normalized error %.3g\n", what, e);
  ck_assert_msg(e < 1e-5, "%s: logits nerr %g", what, e);
  qat_llama_free(m);
  tu_rmrf(dir);
  free(dir);
  ref_free(r);
}

START_TEST(test_load_llama3_f32) {
  ref_model r = base_model("llama", QAT_F32);
  r.llama3 = 1;
  r.theta = 500000;
  check_folder(&r, 1, "llama F32 llama3-rope untied");
}
END_TEST

START_TEST(test_load_qwen2_f16_tied) {
  ref_model r = base_model("qwen2", QAT_F16);
  r.tied = 1;
  check_folder(&r, 1, "qwen2 F16 tied, q/k/v bias");
}
END_TEST

START_TEST(test_load_mistral_bf16) {
  ref_model r = base_model("mistral", QAT_BF16);
  check_folder(&r, 1, "mistral BF16");
}
END_TEST

START_TEST(test_load_sharded) {
  ref_model r = base_model("llama", QAT_F32);
  r.L = 3;
  r.bias = 1; /* attention_bias: q, k, v and o biased */
  check_folder(&r, 3, "llama F32 attention_bias, 3 shards");
}
END_TEST

START_TEST(test_inv_freq) {
  qat_llama_config c;
  memset(&c, 0, sizeof c);
  c.head_dim = 64;
  c.rope_theta = 500000;
  snprintf(c.rope_type, sizeof c.rope_type, "llama3");
  c.rope_factor = 8;
  c.rope_low_freq_factor = 1;
  c.rope_high_freq_factor = 4;
  c.rope_original_max_pos = 64;
  ref_model r = {.D = 64, .theta = 500000, .llama3 = 1};
  double want[32];
  float got[32];
  ref_inv_freq(&r, want);
  qat_llama_inv_freq(&c, got);
  int scaled = 0, smooth = 0;
  for (int i = 0; i < 32; i++) {
    ck_assert_msg(fabs(got[i] - want[i]) <= 1e-6 * want[i], "inv_freq[%d] %g vs %g", i, got[i],
                  want[i]);
    double plain = pow(500000.0, -2.0 * i / 64);
    if (fabs(want[i] - plain / 8) < 1e-12 * plain) scaled++;
    else if (fabs(want[i] - plain) > 1e-12 * plain) smooth++;
  }
  ck_assert_int_gt(scaled, 0); /* the case exercises all three branches */
  ck_assert_int_gt(smooth, 0);
}
END_TEST

/* ---- save a fake-quantized model and load it back ------------------------------------------- */

START_TEST(test_save_roundtrip_quantized) {
  ref_model r = base_model("qwen2", QAT_F32);
  char *dir = tu_tmpdir(), out[4200], p[4300];
  ref_init(&r, 5);
  write_config(&r, dir);
  write_weights(&r, dir, 2);
  write_text(dir, "tokenizer.json", "{\"fake\": true}");
  qat_llama *m = NULL, *m2 = NULL;
  TU_REQUIRE_OK(qat_llama_load(dir, qat_backend_cpu(), &m));
  qat_qspec q = {.bits = 4, .group = 8, .sym = 0, .grad = QAT_QGRAD_EFFICIENTQAT};
  TU_REQUIRE_OK(qat_llama_set_quant(m, &q));
  TU_REQUIRE_OK(qat_llama_plan(m, 1, TSEQ, 0));
  TU_REQUIRE_OK(qat_llama_forward(m, k_tok, 1, TSEQ));
  size_t n = (size_t)TSEQ * r.V;
  float *l1 = malloc(n * 4);
  memcpy(l1, m->logits.data, n * 4);
  snprintf(out, sizeof out, "%s/out", dir);
  TU_REQUIRE_OK(qat_llama_save_hf(m, dir, out));
  snprintf(p, sizeof p, "%s/tokenizer.json", out);
  ck_assert(qat_path_exists(p));
  snprintf(p, sizeof p, "%s/model.safetensors.index.json", out);
  ck_assert(!qat_path_exists(p)); /* one file written; the source's index is not copied */
  /* Linear weights in the file are w_hat, exactly (F32 file) */
  qat_st_file f;
  snprintf(p, sizeof p, "%s/model.safetensors", out);
  TU_REQUIRE_OK(qat_st_open(p, &f));
  const qat_st_tensor *t = qat_st_find(&f, "model.layers.1.mlp.down_proj.weight");
  ck_assert_ptr_nonnull(t);
  ck_assert_int_eq(memcmp(t->data, m->layers[1].down.w_hat.data, qat_nbytes(&m->layers[1].down.w_hat)), 0);
  t = qat_st_find(&f, "model.layers.0.self_attn.k_proj.bias");
  ck_assert_ptr_nonnull(t);
  ck_assert_int_eq(memcmp(t->data, m->layers[0].k.b.data, qat_nbytes(&m->layers[0].k.b)), 0);
  qat_st_close(&f);
  /* reloaded unquantized, it computes the same logits */
  TU_REQUIRE_OK(qat_llama_load(out, qat_backend_cpu(), &m2));
  TU_REQUIRE_OK(qat_llama_plan(m2, 1, TSEQ, 0));
  TU_REQUIRE_OK(qat_llama_forward(m2, k_tok, 1, TSEQ));
  ck_assert_msg(tu_nerr(m2->logits.data, l1, n) == 0.0, "reloaded logits differ");
  /* saving again replaces the folder; BF16 output converts */
  m2->cfg.file_dtype = QAT_BF16;
  TU_REQUIRE_OK(qat_llama_save_hf(m2, out, out));
  qat_llama *m3 = NULL;
  TU_REQUIRE_OK(qat_llama_load(out, qat_backend_cpu(), &m3));
  ck_assert_int_eq(m3->cfg.file_dtype, QAT_BF16);
  TU_REQUIRE_OK(qat_llama_plan(m3, 1, TSEQ, 0));
  TU_REQUIRE_OK(qat_llama_forward(m3, k_tok, 1, TSEQ));
  /* bf16 weights: 2^-9 relative per weight, a few layers deep */
  double e = tu_nerr(m3->logits.data, l1, n);
  ck_assert_msg(e < 3e-2 && e > 0, "bf16 reload nerr %g", e);
  snprintf(p, sizeof p, "%s/tokenizer.json", out);
  ck_assert(qat_path_exists(p));
  free(l1);
  qat_llama_free(m);
  qat_llama_free(m2);
  qat_llama_free(m3);
  tu_rmrf(dir);
  free(dir);
  ref_free(&r);
}
END_TEST

START_TEST(test_random_save_load) {
  /* a random model has no source folder: config.json is generated */
  qat_llama_config c = {.dim = 8, .hidden = 12, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1,
                        .head_dim = 4, .vocab = 11, .max_seq = 32, .norm_eps = 1e-6f,
                        .rope_theta = 10000, .tie_embeddings = 1, .bos_id = 1, .eos_id = 2,
                        .file_dtype = QAT_F32};
  snprintf(c.arch, sizeof c.arch, "llama");
  qat_llama *m = NULL, *m2 = NULL;
  TU_REQUIRE_OK(qat_llama_random(&c, qat_backend_cpu(), 3, &m));
  char *dir = tu_tmpdir(), out[4200];
  snprintf(out, sizeof out, "%s/rand", dir);
  TU_REQUIRE_OK(qat_llama_save_hf(m, NULL, out));
  TU_REQUIRE_OK(qat_llama_load(out, qat_backend_cpu(), &m2));
  ck_assert_int_eq(m2->cfg.tie_embeddings, 1);
  ck_assert_int_eq(m2->cfg.n_kv_heads, 1);
  ck_assert_int_eq(memcmp(m->layers[0].v.w.data, m2->layers[0].v.w.data, qat_nbytes(&m->layers[0].v.w)), 0);
  qat_llama_free(m);
  qat_llama_free(m2);
  tu_rmrf(dir);
  free(dir);
}
END_TEST

/* ---- errors ----------------------------------------------------------------------------------- */

static const char *k_good_cfg =
    "{\"model_type\": \"llama\", \"hidden_act\": \"silu\", \"hidden_size\": 16, "
    "\"intermediate_size\": 20, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, "
    "\"num_key_value_heads\": 2, \"vocab_size\": 23, \"rms_norm_eps\": 1e-5, "
    "\"rope_scaling\": null, \"torch_dtype\": \"float32\"}";

/* config.json with `from` replaced by `to`; returns the status of config_load. */
static qat_status cfg_variant(const char *from, const char *to) {
  char buf[2048], *dir = tu_tmpdir();
  const char *at = strstr(k_good_cfg, from);
  ck_assert_ptr_nonnull(at);
  snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - k_good_cfg), k_good_cfg, to, at + strlen(from));
  write_text(dir, "config.json", buf);
  qat_llama_config c;
  qat_status st = qat_llama_config_load(dir, &c);
  tu_rmrf(dir);
  free(dir);
  return st;
}

static void expect(qat_status got, qat_status want, const char *needle) {
  ck_assert_msg(got == want, "status %s, expected %s (%s)", qat_status_name(got),
                qat_status_name(want), qat_last_error());
  ck_assert_msg(strstr(qat_last_error(), needle), "message \"%s\" does not name \"%s\"",
                qat_last_error(), needle);
}

START_TEST(test_config_errors) {
  qat_llama_config c;
  char *dir = tu_tmpdir();
  write_text(dir, "config.json", k_good_cfg);
  TU_REQUIRE_OK(qat_llama_config_load(dir, &c));
  ck_assert_int_eq(c.head_dim, 4);
  ck_assert_float_eq(c.rope_theta, 10000.0f);
  ck_assert_int_eq(c.tie_embeddings, 0);
  tu_rmrf(dir);
  free(dir);
  expect(cfg_variant("\"llama\"", "\"gpt2\""), QAT_EUNSUPPORTED, "model_type");
  expect(cfg_variant("\"silu\"", "\"gelu\""), QAT_EUNSUPPORTED, "hidden_act");
  expect(cfg_variant("null", "{\"rope_type\": \"yarn\", \"factor\": 4.0}"), QAT_EUNSUPPORTED,
         "rope_scaling");
  expect(cfg_variant("null", "{\"type\": \"linear\", \"factor\": 4.0}"), QAT_EUNSUPPORTED,
         "rope_scaling");
  expect(cfg_variant("null", "{\"rope_type\": \"llama3\", \"factor\": 8.0}"), QAT_EFORMAT,
         "low_freq_factor");
  expect(cfg_variant("\"hidden_size\": 16, ", ""), QAT_EFORMAT, "hidden_size");
  expect(cfg_variant("\"vocab_size\": 23", "\"vocab_size\": \"23\""), QAT_EFORMAT, "vocab_size");
  expect(cfg_variant("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"), QAT_EFORMAT,
         "num_key_value_heads");
  expect(cfg_variant("\"float32\"", "\"float64\""), QAT_EUNSUPPORTED, "torch_dtype");
  expect(cfg_variant("{", "["), QAT_EFORMAT, "config.json");
}
END_TEST

static qat_status load_with(ref_model *r, void (*mutate)(ref_model *), char **dir_out) {
  char *dir = tu_tmpdir();
  ref_init(r, 1);
  mutate(r);
  write_config(r, dir);
  write_weights(r, dir, 1);
  qat_llama *m = NULL;
  qat_status st = qat_llama_load(dir, qat_backend_cpu(), &m);
  ck_assert_ptr_null(m);
  *dir_out = dir;
  return st;
}

static void mut_shape(ref_model *r) {
  for (int i = 0; i < r->n; i++)
    if (strcmp(r->names[i], "model.layers.1.self_attn.k_proj.weight") == 0) r->shape[i][0] = 4, r->shape[i][1] = 16;
}
static void mut_nan(ref_model *r) { r->ly[0].wu[7] = NAN; }
static void mut_missing(ref_model *r) {
  for (int i = 0; i < r->n; i++)
    if (strcmp(r->names[i], "model.norm.weight") == 0) snprintf(r->names[i], sizeof r->names[i], "model.normx.weight");
}

START_TEST(test_tensor_errors) {
  struct {
    void (*mut)(ref_model *);
    qat_status want;
    const char *n1, *n2;
  } cases[] = {
      {mut_shape, QAT_EFORMAT, "model.layers.1.self_attn.k_proj.weight", "[4, 16]"},
      {mut_nan, QAT_EINVAL, "model.layers.0.mlp.up_proj.weight", "non-finite"},
      {mut_missing, QAT_EFORMAT, "model.norm.weight", "missing"},
  };
  for (int i = 0; i < 3; i++) {
    ref_model r = base_model("llama", QAT_F16);
    char *dir = NULL;
    qat_status st = load_with(&r, cases[i].mut, &dir);
    expect(st, cases[i].want, cases[i].n1);
    expect(st, cases[i].want, cases[i].n2);
    if (i == 0) expect(st, cases[i].want, "[12, 16]"); /* and the shape config.json implies */
    tu_rmrf(dir);
    free(dir);
    ref_free(&r);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("model_load");
  TCase *tc = tcase_create("model_load");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_load_llama3_f32);
  tcase_add_test(tc, test_load_qwen2_f16_tied);
  tcase_add_test(tc, test_load_mistral_bf16);
  tcase_add_test(tc, test_load_sharded);
  tcase_add_test(tc, test_inv_freq);
  tcase_add_test(tc, test_save_roundtrip_quantized);
  tcase_add_test(tc, test_random_save_load);
  tcase_add_test(tc, test_config_errors);
  tcase_add_test(tc, test_tensor_errors);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
