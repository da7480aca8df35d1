/* Memory savers of the LLaMA model (llama.h "Memory savers") on the CPU backend, tiny random
 * configs (C=16, F=24, L=3, Hq=4, Hkv=2 (GQA), D=4, V=19, B=2, T=5), each against the layout it
 * replaces in the same model code:
 * - recompute: gradients (every parameter gradient and dw_hat) and losses bit-identical to the
 *   kept-activations plan over 2 micro-batches of different sizes (the CPU ops are deterministic
 *   and the recomputation runs the same ops on the same inputs), unquantized / fake-quant /
 *   frozen codes; and the activation arena shrinks;
 * - code-mode layers (frozen before the gradient layout): no dw, dz, dw_hat; ds equal to the
 *   dw_hat path bit for bit with one micro-batch, and within normalized error 1e-6 with two
 *   (sum of dq_backward per micro-batch vs dq_backward of the sum: F32 reassociation, ~1e-7 of
 *   the group sums here; a wrong path is an O(1) error); mixed (one layer frozen) as well;
 * - one-layer Block-AP gradients: a Block-AP sequence over layers 0, 1, 2 (and back to 0) gives
 *   bytewise the gradients of the all-layer layout, with a one-layer-sized arena (computed here
 *   from the shapes), unbound layers' tensors NULL; then E2E-QP lays out every layer again;
 * - qat_llama_memory_estimate == qat_llama_memory for several configs and jobs, and the
 *   estimates for Llama-2-7B shapes (printed). */
#include "testutil.h"

#include "model/llama.h"
#include "model/llama_priv.h" /* qat_llama_sync_wcomp, qat_llama_linears */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BB 2
#define TT 5
#define NTOK (BB * TT)
#define CC 16
#define VV 19

static qat_llama_config tiny_config(const char *arch, int tied, int layers) {
  qat_llama_config c;
  memset(&c, 0, sizeof c);
  snprintf(c.arch, sizeof c.arch, "%s", arch);
  c.dim = CC;
  c.hidden = 24;
  c.n_layers = layers;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.vocab = VV;
  c.max_seq = 64;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.tie_embeddings = tied;
  c.qkv_bias = strcmp(arch, "qwen2") == 0;
  c.bos_id = 1;
  c.eos_id = 2;
  c.file_dtype = QAT_F32;
  return c;
}

static void lins_of(qat_llama_layer *ly, qat_linear *out[7]) {
  qat_linear *l[7] = {&ly->q, &ly->k, &ly->v, &ly->o, &ly->gate, &ly->up, &ly->down};
  memcpy(out, l, sizeof l);
}

/* O(1) activations so every gradient is well away from zero: embeddings N(0, 1), Linears
 * N(0, 1/in), norms 1 + N(0, 0.2^2), biases N(0, 0.2^2). */
static void randomize(qat_llama *m, uint64_t seed) {
  tu_rng r = {seed};
  float *e = m->embed.data;
  for (int64_t i = 0; i < qat_numel(&m->embed); i++) e[i] = tu_normal(&r);
  if (!m->cfg.tie_embeddings) {
    float *h = m->lm_head.data;
    for (int64_t i = 0; i < qat_numel(&m->lm_head); i++) h[i] = 0.25f * tu_normal(&r);
  }
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_llama_layer *ly = &m->layers[l];
    float *n1 = ly->attn_norm.data, *n2 = ly->ffn_norm.data;
    for (int i = 0; i < CC; i++) {
      n1[i] = 1.0f + 0.2f * tu_normal(&r);
      n2[i] = 1.0f + 0.2f * tu_normal(&r);
    }
    qat_linear *lins[7];
    lins_of(ly, lins);
    for (int k = 0; k < 7; k++) {
      float *w = lins[k]->w.data, sd = 1.0f / sqrtf((float)lins[k]->in);
      for (int64_t i = 0; i < qat_numel(&lins[k]->w); i++) w[i] = sd * tu_normal(&r);
      if (lins[k]->b.data)
        for (int64_t i = 0; i < lins[k]->out; i++) ((float *)lins[k]->b.data)[i] = 0.2f * tu_normal(&r);
    }
  }
}

static const qat_qspec k_w4g8 = {.bits = 4, .group = 8, .sym = 0, .grad = QAT_QGRAD_EFFICIENTQAT};
static const qat_qspec k_w3pc = {.bits = 3, .group = -1, .sym = 1, .grad = QAT_QGRAD_EFFICIENTQAT};

/* A model with train_embeddings and fake-quant (q) set, nothing planned. */
static qat_llama *make_model(qat_llama_config c, uint64_t seed, const qat_qspec *q, int temb) {
  qat_llama *m = NULL;
  TU_REQUIRE_OK(qat_llama_random(&c, qat_backend_cpu(), seed, &m));
  randomize(m, seed + 1);
  m->train_embeddings = temb;
  if (q) TU_REQUIRE_OK(qat_llama_set_quant(m, q));
  return m;
}

static void make_tokens(uint64_t seed, int32_t *tok, int32_t *tgt) {
  tu_rng r = {seed};
  for (int i = 0; i < NTOK; i++) {
    tok[i] = (int32_t)(tu_next(&r) % VV);
    tgt[i] = (int32_t)(tu_next(&r) % VV);
  }
}

/* One step over 2 micro-batches (B=2, then B=1 with other tokens); losses into loss[2]. With
 * one_mb only the first. */
static void step(qat_llama *m, double loss[2], int one_mb) {
  int32_t tok[NTOK], tgt[NTOK];
  int64_t cnt;
  TU_REQUIRE_OK(qat_llama_zero_grad(m));
  for (int mb = 0; mb < (one_mb ? 1 : 2); mb++) {
    int b = mb == 0 ? BB : 1;
    make_tokens(100 + (uint64_t)mb, tok, tgt);
    TU_REQUIRE_OK(qat_llama_forward(m, tok, b, TT));
    TU_REQUIRE_OK(qat_llama_xent(m, tgt, 1.0f / NTOK, &loss[mb], &cnt));
    TU_REQUIRE_OK(qat_llama_backward(m));
  }
  TU_REQUIRE_OK(qat_llama_finish_backward(m));
}

static int all_zero(const qat_tensor *t) {
  const float *p = t->data;
  for (int64_t i = 0; i < qat_numel(t); i++)
    if (p[i] != 0.0f) return 0;
  return 1;
}

/* Every gradient of a and b (params list, dw_hat) bytewise equal; returns how many tensors were
 * compared with a nonzero gradient (so a test sees the comparison was not vacuous). */
static int same_grads(qat_llama *a, qat_llama *b, const char *what) {
  ck_assert_int_eq(a->nparams, b->nparams);
  int nonzero = 0;
  for (int k = 0; k < a->nparams; k++) {
    const qat_tensor *ga = a->params[k].g, *gb = b->params[k].g;
    ck_assert_msg(!ga->data == !gb->data, "%s: %s laid out differently", what, a->params[k].name);
    if (!ga->data) continue;
    ck_assert_msg(memcmp(ga->data, gb->data, qat_nbytes(ga)) == 0, "%s: gradient of %s differs",
                  what, a->params[k].name);
    nonzero += !all_zero(ga);
  }
  for (int l = 0; l < a->cfg.n_layers; l++) {
    qat_linear *la[7], *lb[7];
    lins_of(&a->layers[l], la);
    lins_of(&b->layers[l], lb);
    for (int i = 0; i < 7; i++) {
      ck_assert(!la[i]->dw_hat.data == !lb[i]->dw_hat.data);
      if (la[i]->dw_hat.data)
        ck_assert_msg(memcmp(la[i]->dw_hat.data, lb[i]->dw_hat.data, qat_nbytes(&la[i]->dw_hat)) == 0,
                      "%s: dw_hat of %s differs", what, la[i]->name);
    }
  }
  return nonzero;
}

/* ---- 1. recompute ---------------------------------------------------------------------------- */

typedef struct {
  const char *arch;
  int tied, temb;
  const qat_qspec *q;
  int freeze; /* -2 none; -1 every layer before planning (code mode); l: layer l after */
} rc_case;

static void run_recompute(const rc_case *rc) {
  qat_llama_config c = tiny_config(rc->arch, rc->tied, 3);
  qat_llama *m[2];
  double loss[2][2];
  qat_llama_mem mem[2];
  for (int r = 0; r < 2; r++) {
    m[r] = make_model(c, 7, rc->q, rc->temb);
    m[r]->recompute = r;
    if (rc->freeze == -1) TU_REQUIRE_OK(qat_llama_freeze_codes(m[r], -1));
    TU_REQUIRE_OK(qat_llama_plan(m[r], BB, TT, 1));
    if (rc->freeze >= 0) TU_REQUIRE_OK(qat_llama_freeze_codes(m[r], rc->freeze));
    step(m[r], loss[r], 0);
    TU_REQUIRE_OK(qat_llama_memory(m[r], &mem[r]));
  }
  ck_assert_msg(loss[0][0] == loss[1][0] && loss[0][1] == loss[1][1], "losses differ");
  ck_assert(memcmp(m[0]->logits.data, m[1]->logits.data, qat_nbytes(&m[0]->logits)) == 0);
  int nz = same_grads(m[0], m[1], rc->arch);
  ck_assert_int_ge(nz, 3 * 7); /* at least one gradient per Linear compared non-trivially */
  /* one layer's set less: (L - 1) sets minus their x_in */
  ck_assert_msg(mem[1].acts < mem[0].acts, "recompute did not shrink the activations (%zu vs %zu)",
                mem[1].acts, mem[0].acts);
  printf("recompute %s%s%s: %d nonzero gradient tensors bit-identical; activations %zu -> %zu "
         "bytes\n",
         rc->arch, rc->q ? " quantized" : "", rc->freeze == -1 ? " codes" : "", nz, mem[0].acts,
         mem[1].acts);
  /* recompute toggled after the plan is refused (the activations were planned for the other) */
  m[1]->recompute = 0;
  int32_t tok[NTOK] = {0};
  ck_assert_int_eq(qat_llama_forward(m[1], tok, BB, TT), QAT_EINVAL);
  for (int r = 0; r < 2; r++) qat_llama_free(m[r]);
}

START_TEST(test_recompute_plain) {
  rc_case rc = {"llama", 0, 1, NULL, -2};
  run_recompute(&rc);
}
END_TEST

START_TEST(test_recompute_quant_bias_tied) {
  rc_case rc = {"qwen2", 1, 1, &k_w4g8, -2};
  run_recompute(&rc);
}
END_TEST

START_TEST(test_recompute_sym_frozen) {
  rc_case a = {"llama", 0, 0, &k_w3pc, 1}; /* layer 1 frozen after the layout: dw_hat path */
  run_recompute(&a);
  rc_case b = {"qwen2", 0, 0, &k_w4g8, -1}; /* E2E-QP: every layer in code mode */
  run_recompute(&b);
}
END_TEST

/* ---- 2. code-mode layers ----------------------------------------------------------------------- */

static double nerr_t(const qat_tensor *a, const qat_tensor *b) {
  return tu_nerr(a->data, b->data, (size_t)qat_numel(a));
}

/* ref: frozen after its gradient layout (dw_hat path); cm: frozen before (code mode). freeze:
 * the layer frozen, -1 all. */
static void run_code_mode(const qat_qspec *q, int freeze) {
  qat_llama_config c = tiny_config("qwen2", 0, 3);
  qat_llama *ref = make_model(c, 21, q, 0), *cm = make_model(c, 21, q, 0);
  TU_REQUIRE_OK(qat_llama_plan(ref, BB, TT, 1));
  TU_REQUIRE_OK(qat_llama_freeze_codes(ref, freeze));
  TU_REQUIRE_OK(qat_llama_plan(cm, BB, TT, 1));
  qat_llama_mem m0, m1;
  TU_REQUIRE_OK(qat_llama_memory(cm, &m0));
  TU_REQUIRE_OK(qat_llama_freeze_codes(cm, freeze));
  TU_REQUIRE_OK(qat_llama_plan(cm, BB, TT, 1)); /* re-lays out the gradients: layers froze */
  TU_REQUIRE_OK(qat_llama_memory(cm, &m1));
  for (int l = 0; l < c.n_layers; l++) {
    int code = freeze < 0 || l == freeze;
    qat_linear *lins[7];
    lins_of(&cm->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      ck_assert_ptr_nonnull(lins[i]->ds.data);
      ck_assert_msg((!lins[i]->dw.data) == code && (!lins[i]->dw_hat.data) == code, "%s", lins[i]->name);
      if (!q->sym) ck_assert((!lins[i]->dz.data) == code);
    }
  }
  ck_assert(m1.qgrads < m0.qgrads);
  ck_assert(m1.grads < m0.grads);
  if (freeze < 0) ck_assert_uint_eq(m1.grads, 0); /* no dw at all (embeddings not trained) */

  double lr[2], lc[2];
  int worst_set = 0;
  double worst = 0;
  for (int one = 1; one >= 0; one--) {
    step(ref, lr, one);
    step(cm, lc, one);
    ck_assert(lr[0] == lc[0] && (one || lr[1] == lc[1]));
    for (int l = 0; l < c.n_layers; l++) {
      qat_linear *a[7], *b[7];
      lins_of(&ref->layers[l], a);
      lins_of(&cm->layers[l], b);
      int code = freeze < 0 || l == freeze;
      for (int i = 0; i < 7; i++) {
        ck_assert_msg(!all_zero(&a[i]->ds), "%s: ds is zero", a[i]->name);
        if (!code) { /* untouched layers: the same path, bit for bit */
          ck_assert(memcmp(a[i]->dw.data, b[i]->dw.data, qat_nbytes(&a[i]->dw)) == 0);
          ck_assert(memcmp(a[i]->ds.data, b[i]->ds.data, qat_nbytes(&a[i]->ds)) == 0);
          continue;
        }
        ck_assert(all_zero(&a[i]->dw)); /* frozen: the reference leaves dw at zero */
        if (one) {
          ck_assert_msg(memcmp(a[i]->ds.data, b[i]->ds.data, qat_nbytes(&a[i]->ds)) == 0,
                        "%s: ds differs with one micro-batch", a[i]->name);
        } else {
          double e = nerr_t(&b[i]->ds, &a[i]->ds);
          if (e > worst) worst = e;
          worst_set = 1;
          ck_assert_msg(e < 1e-6, "%s: ds normalized error %g", a[i]->name, e);
        }
      }
    }
  }
  ck_assert(worst_set);
  printf("code mode (%s, frozen %d): qgrads %zu -> %zu bytes, grads %zu -> %zu; ds over 2 "
         "micro-batches: worst normalized error %.2e\n",
         q->sym ? "W3 sym" : "W4 g8", freeze, m0.qgrads, m1.qgrads, m0.grads, m1.grads, worst);
  qat_llama_free(ref);
  qat_llama_free(cm);
}

START_TEST(test_code_mode_all) {
  run_code_mode(&k_w4g8, -1);
  run_code_mode(&k_w3pc, -1);
}
END_TEST

START_TEST(test_code_mode_one_layer) { run_code_mode(&k_w4g8, 1); }
END_TEST

/* ---- 3. one-layer Block-AP gradients ---------------------------------------------------------- */

/* Bytes of one layer's gradients (norms, dw, q/k/v biases; ds, dz, dw_hat) from the shapes. */
static void layer_grad_bytes(qat_llama *m, size_t *g, size_t *qg) {
  *g = 2 * qat_arena_need(QAT_F32, CC);
  *qg = 0;
  qat_linear *lins[7];
  lins_of(&m->layers[0], lins);
  for (int i = 0; i < 7; i++) {
    int64_t R = lins[i]->out, K = lins[i]->in, G = (K + 7) / 8;
    *g += qat_arena_need(QAT_F32, R * K) + (i < 3 ? qat_arena_need(QAT_F32, R) : 0);
    *qg += 2 * qat_arena_need(QAT_F32, R * G) + qat_arena_need(QAT_F32, R * K);
  }
}

typedef struct {
  float x[NTOK * CC], y[NTOK * CC], dy[NTOK * CC];
  qat_tensor tx, ty, tdy;
} bio;

static void bio_init(bio *b, uint64_t seed) {
  tu_rng r = {seed};
  for (int i = 0; i < NTOK * CC; i++) {
    b->x[i] = tu_normal(&r);
    b->dy[i] = tu_normal(&r);
  }
  b->tx = qat_view2(b->x, QAT_F32, QAT_DEV_CPU, NTOK, CC);
  b->ty = qat_view2(b->y, QAT_F32, QAT_DEV_CPU, NTOK, CC);
  b->tdy = qat_view2(b->dy, QAT_F32, QAT_DEV_CPU, NTOK, CC);
}

/* Block-AP on layer l: its params, 2 micro-batches (forward, backward), finish. */
static void block_pass(qat_llama *m, int l, qat_param **ps, int *np) {
  TU_REQUIRE_OK(qat_llama_block_params(m, l, ps, np));
  for (int mb = 0; mb < 2; mb++) {
    bio b;
    bio_init(&b, 1000 + 10 * (uint64_t)l + (uint64_t)mb);
    TU_REQUIRE_OK(qat_llama_block_forward(m, l, &b.tx, &b.ty, BB, TT));
    TU_REQUIRE_OK(qat_llama_block_backward(m, l, &b.tdy, NULL));
  }
  TU_REQUIRE_OK(qat_llama_block_finish_backward(m, l));
}

/* Zeroes layer l's gradients in the all-layer model (what binding does in the one-layer one). */
static void zero_layer(qat_llama *m, int l) {
  qat_llama_layer *ly = &m->layers[l];
  qat_tensor *t[2] = {&ly->d_attn_norm, &ly->d_ffn_norm};
  for (int i = 0; i < 2; i++) memset(t[i]->data, 0, qat_nbytes(t[i]));
  qat_linear *lins[7];
  lins_of(ly, lins);
  for (int i = 0; i < 7; i++) {
    qat_tensor *g[5] = {&lins[i]->dw, &lins[i]->db, &lins[i]->ds, &lins[i]->dz, &lins[i]->dw_hat};
    for (int k = 0; k < 5; k++)
      if (g[k]->data) memset(g[k]->data, 0, qat_nbytes(g[k]));
  }
}

START_TEST(test_block_one_layer) {
  qat_llama_config c = tiny_config("qwen2", 0, 3);
  qat_llama *all = make_model(c, 31, &k_w4g8, 1), *one = make_model(c, 31, &k_w4g8, 1);
  TU_REQUIRE_OK(qat_llama_plan(all, BB, TT, 1));
  TU_REQUIRE_OK(qat_llama_plan_block(all, BB, TT, 1));
  TU_REQUIRE_OK(qat_llama_plan_block(one, BB, TT, 1));
  size_t g1, qg1;
  layer_grad_bytes(one, &g1, &qg1);
  qat_llama_mem ma, mo;
  TU_REQUIRE_OK(qat_llama_memory(all, &ma));
  TU_REQUIRE_OK(qat_llama_memory(one, &mo));
  ck_assert_uint_eq(mo.grads, g1);
  ck_assert_uint_eq(mo.qgrads, qg1);
  size_t emb = 2 * qat_arena_need(QAT_F32, (int64_t)VV * CC) + qat_arena_need(QAT_F32, CC);
  ck_assert_uint_eq(ma.grads, 3 * g1 + emb);
  ck_assert_uint_eq(ma.qgrads, 3 * qg1);
  printf("Block-AP gradients: %zu + %zu bytes for one layer vs %zu + %zu for all\n", mo.grads,
         mo.qgrads, ma.grads, ma.qgrads);

  TU_REQUIRE_OK(qat_llama_zero_grad(all));
  TU_REQUIRE_OK(qat_llama_zero_grad(one));
  int order[4] = {0, 1, 2, 0};
  for (int s = 0; s < 4; s++) {
    int l = order[s];
    if (s == 3) zero_layer(all, l); /* back to layer 0: the one-layer buffers start over */
    qat_param *pa, *po;
    int na, no;
    block_pass(all, l, &pa, &na);
    block_pass(one, l, &po, &no);
    ck_assert_int_eq(na, no);
    ck_assert_int_eq(na, 7 + 7 + 7 + 2 + 3); /* weights, scales, zeros, norms, biases */
    int nonzero = 0;
    for (int k = 0; k < na; k++) {
      ck_assert_ptr_nonnull(po[k].g->data);
      ck_assert_msg(memcmp(pa[k].g->data, po[k].g->data, qat_nbytes(pa[k].g)) == 0,
                    "step %d: gradient of %s differs", s, pa[k].name);
      nonzero += !all_zero(pa[k].g);
    }
    /* all but dz (zero unless a weight clips: none do at the RTN init) */
    ck_assert_int_ge(nonzero, na - 7);
    for (int k = 0; k < c.n_layers; k++) { /* other layers: nothing laid out */
      int bound = k == l;
      ck_assert(!one->layers[k].down.dw.data == !bound && !one->layers[k].q.ds.data == !bound);
      ck_assert(!one->layers[k].up.dw_hat.data == !bound && !one->layers[k].d_ffn_norm.data == !bound);
    }
    free(pa);
    free(po);
  }
  ck_assert_ptr_null(one->d_embed.data);
  /* the buffers are one layer's: binding another layer between forward and backward is refused */
  bio b;
  bio_init(&b, 5);
  qat_param *ps;
  int np;
  TU_REQUIRE_OK(qat_llama_block_forward(one, 2, &b.tx, &b.ty, BB, TT));
  TU_REQUIRE_OK(qat_llama_block_params(one, 1, &ps, &np));
  free(ps);
  ck_assert_int_eq(qat_llama_block_backward(one, 2, &b.tdy, NULL), QAT_EINVAL);
  ck_assert_int_eq(qat_llama_block_finish_backward(one, 2), QAT_EINVAL);

  /* E2E-QP after Block-AP: every layer frozen, a whole-model training plan lays out every
   * layer's gradients in code mode (embeddings and norms too: train_embeddings is on here) */
  TU_REQUIRE_OK(qat_llama_freeze_codes(one, -1));
  TU_REQUIRE_OK(qat_llama_freeze_codes(all, -1));
  one->recompute = 1;
  TU_REQUIRE_OK(qat_llama_plan(one, BB, TT, 1));
  TU_REQUIRE_OK(qat_llama_plan(all, BB, TT, 1));
  TU_REQUIRE_OK(qat_llama_memory(one, &mo));
  for (int l = 0; l < c.n_layers; l++) {
    ck_assert_ptr_nonnull(one->layers[l].down.ds.data);
    ck_assert_ptr_null(one->layers[l].down.dw.data);
    ck_assert_ptr_null(one->layers[l].down.dw_hat.data);
  }
  ck_assert_ptr_nonnull(one->d_embed.data);
  double l0[2], l1[2];
  step(one, l0, 0);
  step(all, l1, 0);
  ck_assert(l0[0] == l1[0] && l0[1] == l1[1]);
  int nz = same_grads(all, one, "E2E-QP after Block-AP");
  ck_assert_int_ge(nz, 21);
  qat_llama_free(all);
  qat_llama_free(one);
}
END_TEST

/* ---- 4. memory estimate ------------------------------------------------------------------------ */

/* Bytes of E2E-QP's packed codes (quant/packed_layout.h): per Linear [N, K], b bits, G groups,
 * rows of ceil(K b / 32) 32-bit words of codes and (asym) ceil(G b / 32) words of zero points,
 * each buffer followed by 8 slack bytes; the scales are s itself (qstate, not counted here). */
static size_t packed_codes_bytes(const qat_llama_config *c, const qat_qspec *q) {
  int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
  int64_t shapes[7][2] = {{qd, c->dim},     {kvd, c->dim},    {kvd, c->dim}, {c->dim, qd},
                          {c->hidden, c->dim}, {c->hidden, c->dim}, {c->dim, c->hidden}};
  size_t per_layer = 0;
  for (int i = 0; i < 7; i++) {
    int64_t N = shapes[i][0], K = shapes[i][1], G = q->group < 0 ? 1 : K / q->group;
    per_layer += (size_t)(N * ((K * q->bits + 31) / 32) * 4) + 8;
    if (!q->sym) per_layer += (size_t)(N * ((G * q->bits + 31) / 32) * 4) + 8;
  }
  return per_layer * (size_t)c->n_layers;
}

static void check_estimate(qat_llama_config c, const qat_llama_mem_job *job, const char *what) {
  qat_llama *m = make_model(c, 41, NULL, job->train_embeddings);
  m->act_dtype = job->act_dtype;
  m->recompute = job->recompute;
  if (job->qspec) TU_REQUIRE_OK(qat_llama_set_quant(m, job->qspec));
  int e2e = job->frozen_codes && job->training && job->B > 0;
  if (e2e) TU_REQUIRE_OK(qat_llama_freeze_codes(m, -1));
  if (e2e && job->packed_codes) TU_REQUIRE_OK(qat_llama_pack_frozen(m));
  if (job->block_B > 0)
    TU_REQUIRE_OK(qat_llama_plan_block(m, job->block_B, job->block_T, job->block_training));
  if (job->B > 0) TU_REQUIRE_OK(qat_llama_plan(m, job->B, job->T, job->training));
  if (job->frozen_codes && !e2e) TU_REQUIRE_OK(qat_llama_freeze_codes(m, 0));
  if (job->drop_masters) TU_REQUIRE_OK(qat_llama_drop_masters(m, NULL));
  qat_llama_mem got, want;
  TU_REQUIRE_OK(qat_llama_memory(m, &got));
  TU_REQUIRE_OK(qat_llama_memory_estimate(&c, job, &want));
  const size_t g[9] = {got.params, got.grads, got.qstate, got.qgrads, got.wcomp,
                       got.acts,   got.bacts, got.codes,  got.total};
  const size_t w[9] = {want.params, want.grads, want.qstate, want.qgrads, want.wcomp,
                       want.acts,   want.bacts, want.codes,  want.total};
  const char *fields[] = {"params", "grads", "qstate", "qgrads", "wcomp", "acts", "bacts", "codes", "total"};
  for (int i = 0; i < 9; i++)
    ck_assert_msg(g[i] == w[i], "%s: %s actual %zu bytes, estimate %zu", what, fields[i], g[i], w[i]);
  ck_assert(got.params > 0 && got.total >= got.params);
  if (job->packed_codes) /* the packed layout's bytes, from the format's definition */
    ck_assert_uint_eq(got.codes, packed_codes_bytes(&c, job->qspec));
  qat_llama_free(m);
}

START_TEST(test_estimate_matches) {
  const qat_llama_mem_job jobs[] = {
      {.act_dtype = QAT_F32, .B = 2, .T = 5},                               /* inference */
      {.act_dtype = QAT_F32, .qspec = &k_w4g8, .train_embeddings = 1, .B = 2, .T = 5,
       .training = 1},                                                       /* QAT */
      {.act_dtype = QAT_F32, .qspec = &k_w3pc, .B = 3, .T = 4, .training = 1,
       .recompute = 1},                                                      /* QAT recompute */
      {.act_dtype = QAT_F32, .qspec = &k_w4g8, .block_B = 2, .block_T = 5, .block_training = 1,
       .frozen_codes = 1},                                                   /* Block-AP */
      {.act_dtype = QAT_F32, .qspec = &k_w4g8, .B = 2, .T = 5, .training = 1, .recompute = 1,
       .block_B = 2, .block_T = 5, .frozen_codes = 1},                      /* E2E-QP */
      {.act_dtype = QAT_F32, .qspec = &k_w4g8, .B = 2, .T = 5, .training = 1,
       .frozen_codes = 1, .packed_codes = 1},                                /* E2E-QP packed */
      {.act_dtype = QAT_F32, .qspec = &k_w3pc, .B = 2, .T = 5, .training = 1, .recompute = 1,
       .frozen_codes = 1, .packed_codes = 1},                          /* E2E-QP packed, sym */
      {.act_dtype = QAT_F32, .train_embeddings = 1, .B = 1, .T = 5, .training = 1, .block_B = 2,
       .block_T = 3, .block_training = 1},                                   /* both planned */
      {.act_dtype = QAT_BF16, .qspec = &k_w4g8},                             /* weights only */
      {.act_dtype = QAT_BF16, .drop_masters = 1},                            /* BF16 teacher */
      {.act_dtype = QAT_F32, .B = 2, .T = 5, .drop_masters = 1},             /* F32 teacher */
  };
  const char *names[] = {"inference", "QAT",    "QAT recompute", "Block-AP",     "E2E-QP",
                         "E2E-QP packed", "E2E-QP packed sym", "both", "BF16", "BF16 teacher",
                         "F32 teacher"};
  for (int tied = 0; tied < 2; tied++)
    for (size_t j = 0; j < sizeof jobs / sizeof jobs[0]; j++) {
      char what[96];
      snprintf(what, sizeof what, "%s %s", names[j], tied ? "qwen2 tied" : "llama");
      check_estimate(tiny_config(tied ? "qwen2" : "llama", tied, 3), &jobs[j], what);
    }
  qat_llama_config c = tiny_config("llama", 0, 3);
  qat_llama_mem mm;
  qat_llama_mem_job bad = {.act_dtype = QAT_F16};
  ck_assert_int_eq(qat_llama_memory_estimate(&c, &bad, &mm), QAT_EINVAL);
  c.n_heads = 0;
  qat_llama_mem_job ok = {.act_dtype = QAT_F32};
  ck_assert_int_ne(qat_llama_memory_estimate(&c, &ok, &mm), QAT_OK);
}
END_TEST

/* qat_llama_drop_masters: with BF16 compute weights the Linear masters go (params shrink by
 * exactly their bytes), w points at w_hat = bf16(original w) (host conversion as reference),
 * embeddings and norms keep their values, and training / re-quantizing is refused; with F32
 * compute nothing is dropped and the forward is bit-identical. */
START_TEST(test_drop_masters) {
  for (int tied = 0; tied < 2; tied++) {
    qat_llama_config c = tiny_config(tied ? "qwen2" : "llama", tied, 2);
    /* F32: nothing to drop, same logits */
    qat_llama *m = make_model(c, 5, NULL, 0);
    const int B = 2, T = 5;
    int32_t tok[B * T];
    for (int i = 0; i < B * T; i++) tok[i] = (i * 7 + 3) % c.vocab;
    size_t nl = (size_t)B * T * c.vocab;
    float *l0 = malloc(nl * 4);
    TU_REQUIRE_OK(qat_llama_plan(m, B, T, 0));
    TU_REQUIRE_OK(qat_llama_forward(m, tok, B, T));
    memcpy(l0, m->logits.data, nl * 4);
    size_t dropped = 1;
    TU_REQUIRE_OK(qat_llama_drop_masters(m, &dropped));
    ck_assert_uint_eq(dropped, 0);
    TU_REQUIRE_OK(qat_llama_forward(m, tok, B, T));
    ck_assert(memcmp(l0, m->logits.data, nl * 4) == 0);
    free(l0);
    qat_llama_free(m);

    /* BF16 compute weights (no forward on the CPU: the weights are what is checked) */
    m = make_model(c, 6, NULL, 0);
    m->act_dtype = QAT_BF16;
    qat_llama_mem before, after;
    TU_REQUIRE_OK(qat_llama_sync_wcomp(m));
    TU_REQUIRE_OK(qat_llama_memory(m, &before));
    size_t lin_bytes = 0, nw = 0;
    for (int l = 0; l < c.n_layers; l++) {
      qat_linear *lins[7];
      qat_llama_linears(&m->layers[l], lins);
      for (int i = 0; i < 7; i++) {
        lin_bytes += qat_arena_need(QAT_F32, qat_numel(&lins[i]->w));
        nw += (size_t)qat_numel(&lins[i]->w);
      }
    }
    float *w0 = malloc(nw * 4), *emb = malloc(qat_nbytes(&m->embed)), *nrm = malloc(c.dim * 4);
    memcpy(emb, m->embed.data, qat_nbytes(&m->embed));
    memcpy(nrm, m->layers[1].ffn_norm.data, c.dim * 4);
    size_t off = 0;
    for (int l = 0; l < c.n_layers; l++) {
      qat_linear *lins[7];
      qat_llama_linears(&m->layers[l], lins);
      for (int i = 0; i < 7; i++) {
        memcpy(w0 + off, lins[i]->w.data, qat_nbytes(&lins[i]->w));
        off += (size_t)qat_numel(&lins[i]->w);
      }
    }
    TU_REQUIRE_OK(qat_llama_drop_masters(m, &dropped));
    TU_REQUIRE_OK(qat_llama_memory(m, &after));
    ck_assert_uint_eq(dropped, lin_bytes);
    ck_assert_uint_eq(before.params - after.params, lin_bytes);
    off = 0;
    for (int l = 0; l < c.n_layers; l++) {
      qat_linear *lins[7];
      qat_llama_linears(&m->layers[l], lins);
      for (int i = 0; i < 7; i++) {
        ck_assert_ptr_eq(lins[i]->w.data, lins[i]->w_hat.data);
        const uint16_t *h = lins[i]->w_hat.data;
        for (int64_t j = 0; j < qat_numel(&lins[i]->w_hat); j++)
          ck_assert_uint_eq(h[j], qat_f32_to_bf16(w0[off + (size_t)j]));
        off += (size_t)qat_numel(&lins[i]->w);
      }
    }
    ck_assert(memcmp(emb, m->embed.data, qat_nbytes(&m->embed)) == 0);
    ck_assert(memcmp(nrm, m->layers[1].ffn_norm.data, c.dim * 4) == 0);
    if (tied) ck_assert_ptr_eq(m->lm_head.data, m->embed.data);
    ck_assert_int_ne(qat_llama_set_quant(m, &k_w4g8), QAT_OK);
    ck_assert_int_ne(qat_llama_plan_block(m, 1, 4, 1), QAT_OK);
    m->act_dtype = QAT_F32; /* the compute weights cannot be rebuilt */
    ck_assert_int_ne(qat_llama_sync_wcomp(m), QAT_OK);
    free(w0);
    free(emb);
    free(nrm);
    qat_llama_free(m);
  }
}
END_TEST

/* Llama-2-7B shapes, BF16 compute: what Block-AP and E2E-QP jobs hold (printed for the notes). */
START_TEST(test_estimate_llama2_7b) {
  qat_llama_config c = tiny_config("llama", 0, 32);
  c.dim = 4096;
  c.hidden = 11008;
  c.n_heads = 32;
  c.n_kv_heads = 32;
  c.head_dim = 128;
  c.vocab = 32000;
  c.max_seq = 4096;
  const qat_qspec qs[2] = {{.bits = 2, .group = 64, .grad = QAT_QGRAD_EFFICIENTQAT},
                           {.bits = 4, .group = 128, .grad = QAT_QGRAD_EFFICIENTQAT}};
  const double GB = 1e9;
  char buf[512];
  for (int i = 0; i < 2; i++) {
    const qat_qspec *q = &qs[i];
    qat_llama_mem bap, fp, e2e, e2e_keep, e2e_old;
    qat_llama_mem_job jb = {.act_dtype = QAT_BF16, .qspec = q, .block_B = 2, .block_T = 2048,
                            .block_training = 1, .frozen_codes = 1};
    qat_llama_mem_job jfp = {.act_dtype = QAT_BF16, .block_B = 2, .block_T = 2048};
    qat_llama_mem_job je = {.act_dtype = QAT_BF16, .qspec = q, .B = 4, .T = 4096, .training = 1,
                            .recompute = 1, .frozen_codes = 1};
    TU_REQUIRE_OK(qat_llama_memory_estimate(&c, &jb, &bap));
    TU_REQUIRE_OK(qat_llama_memory_estimate(&c, &jfp, &fp));
    TU_REQUIRE_OK(qat_llama_memory_estimate(&c, &je, &e2e));
    je.recompute = 0;
    TU_REQUIRE_OK(qat_llama_memory_estimate(&c, &je, &e2e_keep));
    je.frozen_codes = 0; /* the layout before the memory work: dw, dw_hat for every layer */
    TU_REQUIRE_OK(qat_llama_memory_estimate(&c, &je, &e2e_old));
    printf("Llama-2-7B W%dg%d, BF16:\n", q->bits, q->group);
    printf("  (a) Block-AP B=2 T=2048, quantized model: %s (%.1f GB)\n",
           qat_llama_memory_str(&bap, buf, sizeof buf), bap.total / GB);
    printf("      (a separate fp target model, no longer held: Block-AP's targets come from the "
           "model's own masters, qat_llama_block_forward_fp: %.1f GB; both were %.1f GB)\n",
           fp.total / GB, (bap.total + fp.total) / GB);
    printf("  (b) E2E-QP B=4 T=4096, recompute: %s (%.1f GB)\n",
           qat_llama_memory_str(&e2e, buf, sizeof buf), e2e.total / GB);
    qat_llama_mem_job jt = {.act_dtype = QAT_BF16, .B = 4, .T = 4096, .drop_masters = 1};
    qat_llama_mem teach;
    TU_REQUIRE_OK(qat_llama_memory_estimate(&c, &jt, &teach));
    printf("      + distillation teacher without F32 masters (qat_llama_drop_masters): %s (%.1f GB); "
           "E2E-QP with distillation %.1f GB\n",
           qat_llama_memory_str(&teach, buf, sizeof buf), teach.total / GB,
           (e2e.total + teach.total) / GB);
    printf("      without recompute %.1f GB (activations %.1f GB); without the code-mode layout "
           "and recompute %.1f GB\n",
           e2e_keep.total / GB, e2e_keep.acts / GB, e2e_old.total / GB);
    /* one layer's gradients: 202.4M weights of a 7B layer in F32 */
    ck_assert_uint_eq(bap.grads, 4 * (size_t)(4 * 4096 * 4096 + 3 * 4096 * 11008) + 0);
    ck_assert(e2e.grads == 0 && e2e.acts < e2e_keep.acts / 3 && e2e.qgrads < e2e_old.qgrads / 10);
    /* E2E-QP with packed codes (e2e_qp.packed, F32 compute as on the cpu backend it runs on):
     * the codes arena becomes b/8 bytes per weight + packed zero points, the compute weights
     * (w_hat: qgemm reads the codes) and the dL/dw_hat scratch go, a [B*T, C] F32 dx buffer
     * comes */
    qat_llama_mem u8, pk;
    qat_llama_mem_job jc = {.act_dtype = QAT_F32, .qspec = q, .B = 4, .T = 4096, .training = 1,
                            .recompute = 1, .frozen_codes = 1};
    TU_REQUIRE_OK(qat_llama_memory_estimate(&c, &jc, &u8));
    jc.packed_codes = 1;
    TU_REQUIRE_OK(qat_llama_memory_estimate(&c, &jc, &pk));
    size_t nw = 32 * (size_t)(4 * 4096 * 4096 + 3 * 4096 * 11008);
    ck_assert_uint_eq(u8.codes, nw);
    ck_assert_uint_eq(pk.codes, packed_codes_bytes(&c, q));
    ck_assert_uint_eq(u8.qgrads - pk.qgrads, 4 * (size_t)4096 * 11008); /* the scratch */
    ck_assert_uint_eq(pk.acts - u8.acts, 4 * (size_t)4 * 4096 * 4096);  /* packed dx */
    ck_assert_uint_eq(u8.wcomp, 4 * nw);
    ck_assert_uint_eq(pk.wcomp, 0);
    printf("  (c) E2E-QP B=4 T=4096 recompute, F32 (cpu), frozen codes U8: codes %.2f GB, total "
           "%.1f GB (compute weights %.1f GB); packed (e2e_qp.packed): codes %.3f GB (%.3f bytes "
           "per weight), no compute weights, total %.1f GB\n",
           u8.codes / GB, u8.total / GB, u8.wcomp / GB, pk.codes / GB,
           (double)pk.codes / (double)nw, pk.total / GB);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("model_mem");
  TCase *tc = tcase_create("cpu");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_recompute_plain);
  tcase_add_test(tc, test_recompute_quant_bias_tied);
  tcase_add_test(tc, test_recompute_sym_frozen);
  tcase_add_test(tc, test_code_mode_all);
  tcase_add_test(tc, test_code_mode_one_layer);
  tcase_add_test(tc, test_block_one_layer);
  tcase_add_test(tc, test_estimate_matches);
  tcase_add_test(tc, test_drop_masters);
  tcase_add_test(tc, test_estimate_llama2_7b);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
