/* EfficientQAT support in the LLaMA model (host/model/llama_block.c and the block passes in
 * llama_forward.c / llama_backward.c) on the CPU backend, tiny random configs (C=16, F=24, L=3,
 * Hq=4, Hkv=2, D=4, V=19, B=2, T=5; Qwen2 biases):
 * - chaining qat_llama_block_forward over all layers from the embeddings (looked up here with the
 *   backend op), then the final norm and lm_head applied here with backend ops, reproduces
 *   qat_llama_forward's logits bit for bit (the same ops in the same order on the CPU), also
 *   in place (x_out == x_in), with fake-quant on; the whole-model plan and gradients are not
 *   disturbed by planning / running blocks (bit-identical gradients before and after);
 * - qat_llama_block_backward against central differences of the block MSE loss
 *   L = sum (block(x) - Y)^2 / numel: Linear weights, biases and norms (quant off), dx_in, and s
 *   with fake-quant on (groups whose codes do not move; the LSQ+ straight-through term
 *   -sum G u that differences cannot see is added, as in test_model_grad.c);
 * - qat_llama_freeze_codes: logits bit-identical before / after (CPU), w == the old w_hat, then
 *   ds against differences in s (the output is now exactly linear in each s: codes are fixed)
 *   and against sum G (q - z~) computed here; dw and dz stay zero; whole-model passes with some
 *   layers frozen (ds by differences of the cross-entropy); save_hf writes (q - z~) * s with the
 *   changed s;
 * - qat_llama_block_params and argument errors.
 * Tolerances as test_model_grad.c: eps 1e-2, |fd - g| <= 1e-2 |fd| + 2e-4 (F32 evaluation noise
 * of an O(1) loss divided by 2 eps is ~5e-5; a wrong factor or path is an O(1) error), the noise
 * term scaled by eps_w / eps_s for differences in s. */
#include "testutil.h"

#include "model/llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BB 2
#define TT 5
#define NTOK (BB * TT)
#define CC 16
#define EPS 1e-2
#define RTOL 1e-2
#define ATOL 2e-4

static qat_llama_config tiny_config(void) {
  qat_llama_config c;
  memset(&c, 0, sizeof c);
  snprintf(c.arch, sizeof c.arch, "qwen2");
  c.dim = CC;
  c.hidden = 24;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.vocab = 19;
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

/* Weights large enough that every path carries a gradient (as test_model_grad.c). */
static void randomize(qat_llama *m, uint64_t seed) {
  tu_rng r = {seed};
  float *e = m->embed.data;
  for (int64_t i = 0; i < qat_numel(&m->embed); i++) e[i] = tu_normal(&r);
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

static qat_llama *make_model(uint64_t seed, const qat_qspec *q) {
  qat_llama_config c = tiny_config();
  qat_llama *m = NULL;
  TU_REQUIRE_OK(qat_llama_random(&c, qat_backend_cpu(), seed, &m));
  randomize(m, seed + 1);
  if (q) TU_REQUIRE_OK(qat_llama_set_quant(m, q));
  return m;
}

static const qat_qspec k_w4g8 = {.bits = 4, .group = 8, .sym = 0, .grad = QAT_QGRAD_EFFICIENTQAT};

static void make_tokens(uint64_t seed, int32_t *tok, int32_t *tgt) {
  tu_rng r = {seed};
  for (int i = 0; i < NTOK; i++) {
    tok[i] = (int32_t)(tu_next(&r) % 19);
    tgt[i] = (int32_t)(tu_next(&r) % 19);
  }
}

/* logits[N, V] from the block chain: embedding, L block forwards, final norm, lm_head. */
static void chain_logits(qat_llama *m, const int32_t *tok, float *logits, int in_place) {
  qat_backend *be = m->be;
  int64_t V = m->cfg.vocab;
  float *x = malloc(sizeof(float) * NTOK * CC), *y = malloc(sizeof(float) * NTOK * CC);
  float *h = malloc(sizeof(float) * NTOK * CC), rstd[NTOK];
  qat_tensor tt = qat_view1((void *)tok, QAT_I32, QAT_DEV_CPU, NTOK);
  qat_tensor tx = qat_view2(x, QAT_F32, QAT_DEV_CPU, NTOK, CC), ty = qat_view2(y, QAT_F32, QAT_DEV_CPU, NTOK, CC);
  qat_tensor th = qat_view2(h, QAT_F32, QAT_DEV_CPU, NTOK, CC), tr = qat_view1(rstd, QAT_F32, QAT_DEV_CPU, NTOK);
  qat_tensor tl = qat_view2(logits, QAT_F32, QAT_DEV_CPU, NTOK, V);
  TU_REQUIRE_OK(QAT_OP(be, embedding_fwd, &tt, &m->embed, &tx));
  for (int l = 0; l < m->cfg.n_layers; l++) {
    if (in_place) {
      TU_REQUIRE_OK(qat_llama_block_forward(m, l, &tx, &tx, BB, TT));
    } else {
      TU_REQUIRE_OK(qat_llama_block_forward(m, l, &tx, &ty, BB, TT));
      memcpy(x, y, sizeof(float) * NTOK * CC);
    }
  }
  TU_REQUIRE_OK(QAT_OP(be, rmsnorm_fwd, &tx, &m->final_norm, m->cfg.norm_eps, &th, &tr));
  TU_REQUIRE_OK(QAT_OP(be, gemm, 0, 1, NTOK, V, CC, 1.0f, &th, &m->lm_head, 0.0f, &tl));
  free(x);
  free(y);
  free(h);
}

/* Every gradient of m->params, concatenated. */
static float *snapshot_grads(qat_llama *m, size_t *n) {
  size_t tot = 0;
  for (int k = 0; k < m->nparams; k++) tot += (size_t)qat_numel(m->params[k].g);
  float *out = malloc(tot * sizeof *out + 1), *p = out;
  for (int k = 0; k < m->nparams; k++) {
    size_t b = qat_nbytes(m->params[k].g);
    if (m->params[k].g->data) memcpy(p, m->params[k].g->data, b);
    p += b / sizeof *p;
  }
  *n = tot;
  return out;
}

static void whole_grads(qat_llama *m, const int32_t *tok, const int32_t *tgt, double *loss) {
  int64_t cnt;
  TU_REQUIRE_OK(qat_llama_zero_grad(m));
  TU_REQUIRE_OK(qat_llama_forward(m, tok, BB, TT));
  TU_REQUIRE_OK(qat_llama_xent(m, tgt, 1.0f / NTOK, loss, &cnt));
  TU_REQUIRE_OK(qat_llama_backward(m));
  TU_REQUIRE_OK(qat_llama_finish_backward(m));
}

START_TEST(test_chain_matches_whole_model) {
  qat_llama *m = make_model(5, &k_w4g8);
  int32_t tok[NTOK], tgt[NTOK];
  make_tokens(6, tok, tgt);
  int64_t V = m->cfg.vocab;
  TU_REQUIRE_OK(qat_llama_plan(m, BB, TT, 1));
  double loss0;
  whole_grads(m, tok, tgt, &loss0);
  size_t ng;
  float *g0 = snapshot_grads(m, &ng);
  float *l0 = malloc(sizeof(float) * NTOK * V), *l1 = malloc(sizeof(float) * NTOK * V);
  memcpy(l0, m->logits.data, sizeof(float) * NTOK * V);
  void *gdata = m->params[0].g->data, *logits = m->logits.data;

  TU_REQUIRE_OK(qat_llama_plan_block(m, BB, TT, 1));
  ck_assert_ptr_eq(m->params[0].g->data, gdata); /* gradients not re-laid out */
  ck_assert_int_eq(m->B, BB);
  for (int in_place = 0; in_place < 2; in_place++) {
    chain_logits(m, tok, l1, in_place);
    ck_assert_msg(memcmp(l0, l1, sizeof(float) * NTOK * V) == 0,
                  "block chain (in place %d) differs from the whole-model logits", in_place);
  }
  /* the whole-model passes still work and give the same gradients */
  double loss1;
  whole_grads(m, tok, tgt, &loss1);
  ck_assert(loss1 == loss0);
  ck_assert_ptr_eq(m->logits.data, logits);
  size_t ng1;
  float *g1 = snapshot_grads(m, &ng1);
  ck_assert_uint_eq(ng1, ng);
  ck_assert_msg(memcmp(g0, g1, ng * sizeof *g0) == 0, "whole-model gradients changed");
  /* a smaller batch through a larger block plan */
  TU_REQUIRE_OK(qat_llama_plan_block(m, BB + 1, TT + 2, 0));
  chain_logits(m, tok, l1, 0);
  ck_assert(memcmp(l0, l1, sizeof(float) * NTOK * V) == 0);
  free(g0);
  free(g1);
  free(l0);
  free(l1);
  qat_llama_free(m);
}
END_TEST

/* ---- block backward by finite differences ------------------------------------------------ */

typedef struct blk {
  qat_llama *m;
  int l;
  float x[NTOK * CC], y[NTOK * CC], Y[NTOK * CC], dy[NTOK * CC], dx[NTOK * CC];
  qat_tensor tx, ty, tdy, tdx;
} blk;

static void blk_init(blk *b, qat_llama *m, int l, uint64_t seed) {
  b->m = m;
  b->l = l;
  tu_rng r = {seed};
  for (int i = 0; i < NTOK * CC; i++) {
    b->x[i] = tu_normal(&r);
    b->Y[i] = tu_normal(&r);
  }
  b->tx = qat_view2(b->x, QAT_F32, QAT_DEV_CPU, NTOK, CC);
  b->ty = qat_view2(b->y, QAT_F32, QAT_DEV_CPU, NTOK, CC);
  b->tdy = qat_view2(b->dy, QAT_F32, QAT_DEV_CPU, NTOK, CC);
  b->tdx = qat_view2(b->dx, QAT_F32, QAT_DEV_CPU, NTOK, CC);
}

static double blk_loss(blk *b) {
  TU_REQUIRE_OK(qat_llama_block_forward(b->m, b->l, &b->tx, &b->ty, BB, TT));
  double L = 0;
  for (int i = 0; i < NTOK * CC; i++) L += ((double)b->y[i] - b->Y[i]) * ((double)b->y[i] - b->Y[i]);
  return L / (NTOK * CC);
}

/* Gradients of the block loss: zeroed, forward, dL/dy, backward (dx_in into b->dx), finish. */
static void blk_grads(blk *b) {
  TU_REQUIRE_OK(qat_llama_zero_grad(b->m));
  blk_loss(b);
  for (int i = 0; i < NTOK * CC; i++) b->dy[i] = (float)(2.0 * ((double)b->y[i] - b->Y[i]) / (NTOK * CC));
  TU_REQUIRE_OK(qat_llama_block_backward(b->m, b->l, &b->tdy, &b->tdx));
  TU_REQUIRE_OK(qat_llama_block_finish_backward(b->m, b->l));
}

static double blk_fd(blk *b, float *p, double eps) {
  float v = *p, hi = (float)(v + eps), lo = (float)(v - eps);
  *p = hi;
  double lp = blk_loss(b);
  *p = lo;
  double lm = blk_loss(b);
  *p = v;
  return (lp - lm) / ((double)hi - lo);
}

typedef struct {
  int checked, big;
  double worst;
} fd_stats;

static void compare(fd_stats *s, const char *what, int64_t i, double want, double got,
                    double atol_scale) {
  double err = fabs(want - got) / (RTOL * fabs(want) + ATOL * atol_scale);
  if (err > s->worst) s->worst = err;
  s->checked++;
  if (fabs(want) > 10 * ATOL * atol_scale) s->big++;
  ck_assert_msg(err <= 1.0, "%s[%lld]: finite difference %.6g vs gradient %.6g", what,
                (long long)i, want, got);
}

static void check_entries(blk *b, fd_stats *s, const char *what, float *p, const float *g,
                          int64_t n, int k, uint64_t seed) {
  tu_rng r = {seed};
  for (int j = 0; j < k; j++) {
    int64_t i = (int64_t)(tu_next(&r) % (uint64_t)n);
    compare(s, what, i, blk_fd(b, &p[i], EPS), g[i], 1.0);
  }
}

START_TEST(test_block_backward_plain) {
  qat_llama *m = make_model(11, NULL);
  m->train_embeddings = 1; /* norms and biases get gradients too */
  TU_REQUIRE_OK(qat_llama_plan_block(m, BB, TT, 1));
  fd_stats s = {0};
  for (int l = 0; l < m->cfg.n_layers; l += 2) {
    blk b;
    blk_init(&b, m, l, 100 + (uint64_t)l);
    blk_grads(&b);
    /* snapshot: the differences below re-run the forward (not the gradients), but stay safe */
    qat_param *ps;
    int np;
    TU_REQUIRE_OK(qat_llama_block_params(m, l, &ps, &np));
    ck_assert_int_eq(np, 7 + 2 + 3); /* 7 weights, 2 norms, q/k/v biases */
    for (int k = 0; k < np; k++) {
      int64_t n = qat_numel(ps[k].p);
      float *g = malloc(sizeof(float) * (size_t)n);
      memcpy(g, ps[k].g->data, sizeof(float) * (size_t)n);
      check_entries(&b, &s, ps[k].name, ps[k].p->data, g, n, 3, 7 * (uint64_t)k + (uint64_t)l);
      free(g);
    }
    free(ps);
    float dx[NTOK * CC];
    memcpy(dx, b.dx, sizeof dx);
    check_entries(&b, &s, "dx_in", b.x, dx, NTOK * CC, 8, 999);
  }
  printf("block backward (quant off): %d entries, %d with |g| > %.0e, worst error / tol %.3f\n",
         s.checked, s.big, 10 * ATOL, s.worst);
  ck_assert_int_ge(s.big, s.checked * 3 / 4);
  qat_llama_free(m);
}
END_TEST

/* Group index (into s, z) of W[r, c] for group size 8. */
static int64_t gidx8(int64_t r, int64_t c, int64_t cols) { return r * ((cols + 7) / 8) + c / 8; }

START_TEST(test_block_backward_quant_s) {
  qat_llama *m = make_model(21, &k_w4g8);
  TU_REQUIRE_OK(qat_llama_plan_block(m, BB, TT, 1));
  int l = 1;
  blk b;
  blk_init(&b, m, l, 31);
  blk_grads(&b);
  fd_stats s = {0}, sx = {0};
  qat_linear *lins[7];
  lins_of(&m->layers[l], lins);
  for (int k = 0; k < 7; k++) {
    qat_linear *li = lins[k];
    int64_t R = li->out, C = li->in, ns = qat_numel(&li->s);
    const float *w = li->w.data, *G = li->dw_hat.data, *zv = li->z.data;
    float *sv = li->s.data;
    float *ds = malloc(sizeof(float) * (size_t)ns);
    memcpy(ds, li->ds.data, sizeof(float) * (size_t)ns);
    int done = 0;
    for (int64_t g = 0; g < ns && done < 3; g++) {
      double eps = 1e-2 * sv[g], u_in = 0;
      float zt = fminf(fmaxf(rintf(zv[g]), 0.0f), 15.0f);
      int stable = 1;
      for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < C; c++) {
          if (gidx8(r, c, C) != g) continue;
          float w0 = w[r * C + c];
          float c0 = fminf(fmaxf(rintf(w0 / sv[g]) + zt, 0), 15);
          float c1 = fminf(fmaxf(rintf(w0 / (float)(sv[g] + eps)) + zt, 0), 15);
          float c2 = fminf(fmaxf(rintf(w0 / (float)(sv[g] - eps)) + zt, 0), 15);
          stable &= c0 == c1 && c0 == c2;
          float code = rintf(w0 / sv[g]) + zt;
          if (code >= 0 && code <= 15) u_in += (double)G[r * C + c] * (w0 / sv[g]);
        }
      if (!stable) continue;
      compare(&s, li->name, g, blk_fd(&b, &sv[g], eps) - u_in, ds[g], EPS / eps);
      done++;
    }
    ck_assert_int_ge(done, 1);
    free(ds);
  }
  float dx[NTOK * CC];
  memcpy(dx, b.dx, sizeof dx);
  check_entries(&b, &sx, "dx_in", b.x, dx, NTOK * CC, 8, 77);
  printf("block backward (W4 g8): ds of %d groups, worst %.3f; dx_in %d entries, worst %.3f\n",
         s.checked, s.worst, sx.checked, sx.worst);
  qat_llama_free(m);
}
END_TEST

/* ---- frozen codes ------------------------------------------------------------------------ */

static int all_zero(const qat_tensor *t) {
  const float *p = t->data;
  for (int64_t i = 0; i < qat_numel(t); i++)
    if (p[i] != 0.0f) return 0;
  return 1;
}

START_TEST(test_freeze_codes) {
  qat_llama *m = make_model(41, &k_w4g8);
  int32_t tok[NTOK], tgt[NTOK];
  make_tokens(42, tok, tgt);
  int64_t V = m->cfg.vocab;
  TU_REQUIRE_OK(qat_llama_plan(m, BB, TT, 1));
  TU_REQUIRE_OK(qat_llama_plan_block(m, BB, TT, 1));
  TU_REQUIRE_OK(qat_llama_forward(m, tok, BB, TT));
  float *l0 = malloc(sizeof(float) * NTOK * V);
  memcpy(l0, m->logits.data, sizeof(float) * NTOK * V);
  /* the old w_hat of layer 0 */
  qat_linear *lins[7];
  lins_of(&m->layers[0], lins);
  float *wh0[7];
  for (int k = 0; k < 7; k++) {
    wh0[k] = malloc(qat_nbytes(&lins[k]->w_hat));
    memcpy(wh0[k], lins[k]->w_hat.data, qat_nbytes(&lins[k]->w_hat));
  }
  /* freeze layer 0 alone first, then all (layer 0 again: idempotent) */
  TU_REQUIRE_OK(qat_llama_freeze_codes(m, 0));
  ck_assert(lins[0]->use_codes && lins[0]->frozen && !m->layers[1].q.use_codes);
  for (int k = 0; k < 7; k++)
    ck_assert_msg(memcmp(lins[k]->w.data, wh0[k], qat_nbytes(&lins[k]->w)) == 0,
                  "%s: w is not the old w_hat", lins[k]->name);
  TU_REQUIRE_OK(qat_llama_forward(m, tok, BB, TT));
  ck_assert(memcmp(l0, m->logits.data, sizeof(float) * NTOK * V) == 0);
  TU_REQUIRE_OK(qat_llama_freeze_codes(m, -1));
  ck_assert(m->layers[2].down.use_codes && m->layers[2].down.frozen);
  TU_REQUIRE_OK(qat_llama_forward(m, tok, BB, TT));
  ck_assert_msg(memcmp(l0, m->logits.data, sizeof(float) * NTOK * V) == 0,
                "logits changed by freezing");
  for (int k = 0; k < 7; k++) free(wh0[k]);

  /* block: ds by differences in s (exactly linear now) and by the formula; dw, dz untouched */
  int l = 2;
  blk b;
  blk_init(&b, m, l, 43);
  blk_grads(&b);
  lins_of(&m->layers[l], lins);
  fd_stats s = {0};
  for (int k = 0; k < 7; k++) {
    qat_linear *li = lins[k];
    int64_t R = li->out, C = li->in, ns = qat_numel(&li->s);
    ck_assert_msg(all_zero(&li->dw) && all_zero(&li->dz), "%s: dw or dz written", li->name);
    const uint8_t *q = li->codes.data;
    const float *G = li->dw_hat.data, *zv = li->z.data;
    double *ref = calloc((size_t)ns, sizeof *ref), *mag = calloc((size_t)ns, sizeof *mag);
    for (int64_t r = 0; r < R; r++)
      for (int64_t c = 0; c < C; c++) {
        int64_t g = gidx8(r, c, C);
        double d = (double)G[r * C + c] * (q[r * C + c] - fmin(fmax(rint(zv[g]), 0), 15));
        ref[g] += d;
        mag[g] += fabs(d);
      }
    float *ds = malloc(sizeof(float) * (size_t)ns), *sv = li->s.data;
    memcpy(ds, li->ds.data, sizeof(float) * (size_t)ns);
    for (int64_t g = 0; g < ns; g++) {
      ck_assert_msg(fabs(ds[g] - ref[g]) <= 1e-6 * mag[g] + 1e-30, "%s ds[%lld] %g vs %g",
                    li->name, (long long)g, ds[g], ref[g]);
      if (g % 3 == 0) {
        double eps = 1e-2 * sv[g];
        compare(&s, li->name, g, blk_fd(&b, &sv[g], eps), ds[g], EPS / eps);
      }
    }
    free(ds);
    free(ref);
    free(mag);
  }
  printf("frozen codes, block: ds of %d groups by differences, worst %.3f\n", s.checked, s.worst);
  ck_assert_int_ge(s.big, s.checked / 2);

  /* after a large move of s (as E2E-QP makes over a run) w_hat is still (q - z~) * s: the codes
   * hold, where fake-quant of the master would re-round (the small steps above cannot tell) */
  int moved = 0;
  for (int k = 0; k < 7; k++) {
    float *sv = lins[k]->s.data;
    for (int64_t g = 0; g < qat_numel(&lins[k]->s); g++) sv[g] *= 0.6f;
  }
  blk_loss(&b);
  for (int k = 0; k < 7; k++) {
    qat_linear *li = lins[k];
    int64_t n = qat_numel(&li->w);
    float *dq = malloc(sizeof(float) * (size_t)n), *fq = malloc(sizeof(float) * (size_t)n);
    qat_tensor tdq = qat_view2(dq, QAT_F32, QAT_DEV_CPU, li->out, li->in);
    qat_tensor tfq = qat_view2(fq, QAT_F32, QAT_DEV_CPU, li->out, li->in);
    TU_REQUIRE_OK(QAT_OP(m->be, dq_forward, &m->qspec, &li->codes, &li->s, &li->z, &tdq));
    TU_REQUIRE_OK(QAT_OP(m->be, fq_forward, &m->qspec, &li->w, &li->s, &li->z, &tfq));
    ck_assert_msg(memcmp(dq, li->w_hat.data, sizeof(float) * (size_t)n) == 0,
                  "%s: w_hat is not (q - z) * s after s moved", li->name);
    moved += memcmp(fq, dq, sizeof(float) * (size_t)n) != 0;
    free(dq);
    free(fq);
  }
  ck_assert_int_eq(moved, 7); /* the check above could fail */
  free(l0);
  qat_llama_free(m);
}
END_TEST

/* Whole-model passes with layer 1 frozen to codes; save_hf writes (q - z~) * s after s moved. */
START_TEST(test_freeze_whole_model_and_save) {
  qat_llama *m = make_model(51, &k_w4g8);
  int32_t tok[NTOK], tgt[NTOK];
  make_tokens(52, tok, tgt);
  TU_REQUIRE_OK(qat_llama_plan(m, BB, TT, 1));
  TU_REQUIRE_OK(qat_llama_freeze_codes(m, 1));
  double loss;
  whole_grads(m, tok, tgt, &loss);
  qat_linear *lf[7], *lt[7];
  lins_of(&m->layers[1], lf);
  lins_of(&m->layers[0], lt);
  fd_stats s = {0};
  for (int k = 0; k < 7; k++) {
    ck_assert(all_zero(&lf[k]->dw) && all_zero(&lf[k]->dz));
    ck_assert(!all_zero(&lt[k]->dw)); /* a trained layer still gets dw */
    float *sv = lf[k]->s.data, ds = ((float *)lf[k]->ds.data)[k];
    double eps = 1e-2 * sv[k], lp, lm;
    int64_t cnt;
    float v = sv[k], hi = (float)(v + eps), lo = (float)(v - eps);
    sv[k] = hi;
    TU_REQUIRE_OK(qat_llama_forward(m, tok, BB, TT));
    TU_REQUIRE_OK(qat_llama_xent(m, tgt, 1.0f / NTOK, &lp, &cnt));
    sv[k] = lo;
    TU_REQUIRE_OK(qat_llama_forward(m, tok, BB, TT));
    TU_REQUIRE_OK(qat_llama_xent(m, tgt, 1.0f / NTOK, &lm, &cnt));
    sv[k] = v;
    compare(&s, lf[k]->name, k, (lp - lm) / ((double)hi - lo), ds, EPS / eps);
  }
  printf("frozen layer in the whole model: ds of %d groups by differences, worst %.3f\n",
         s.checked, s.worst);

  /* move s of the frozen layer; the saved weights follow the codes, not the stale master */
  for (int k = 0; k < 7; k++) {
    float *sv = lf[k]->s.data;
    for (int64_t g = 0; g < qat_numel(&lf[k]->s); g++) sv[g] *= 1.25f;
  }
  char *dir = tu_tmpdir(), out[4200];
  snprintf(out, sizeof out, "%s/saved", dir);
  TU_REQUIRE_OK(qat_llama_save_hf(m, NULL, out));
  qat_llama *r = NULL;
  TU_REQUIRE_OK(qat_llama_load(out, qat_backend_cpu(), &r));
  qat_linear *lr[7];
  lins_of(&r->layers[1], lr);
  for (int k = 0; k < 7; k++) {
    int64_t n = qat_numel(&lf[k]->w);
    float *want = malloc(sizeof(float) * (size_t)n);
    qat_tensor tw = qat_view2(want, QAT_F32, QAT_DEV_CPU, lf[k]->out, lf[k]->in);
    TU_REQUIRE_OK(QAT_OP(qat_backend_cpu(), dq_forward, &m->qspec, &lf[k]->codes, &lf[k]->s,
                         &lf[k]->z, &tw));
    ck_assert_msg(memcmp(want, lr[k]->w.data, sizeof(float) * (size_t)n) == 0,
                  "%s: saved weights are not (q - z) * s", lf[k]->name);
    ck_assert(memcmp(want, lf[k]->w.data, sizeof(float) * (size_t)n) != 0); /* master is stale */
    free(want);
  }
  qat_llama_free(r);
  tu_rmrf(dir);
  free(dir);
  qat_llama_free(m);
}
END_TEST

START_TEST(test_block_params_and_errors) {
  qat_llama *m = make_model(61, &k_w4g8);
  qat_param *ps = NULL;
  int np = 0;
  for (int l = 0; l < 3; l++) {
    TU_REQUIRE_OK(qat_llama_block_params(m, l, &ps, &np));
    ck_assert_int_eq(np, 21); /* 7 weights, 7 scales, 7 zeros */
    char pre[32];
    snprintf(pre, sizeof pre, "model.layers.%d.", l);
    int j = 0;
    for (int k = 0; k < m->nparams; k++) /* an order-preserving subset of m->params */
      if (j < np && m->params[k].p == ps[j].p) {
        ck_assert_ptr_eq(m->params[k].g, ps[j].g);
        j++;
      }
    ck_assert_int_eq(j, np);
    for (int k = 0; k < np; k++) ck_assert(strncmp(ps[k].name, pre, strlen(pre)) == 0);
    free(ps);
  }
  ck_assert_int_eq(qat_llama_block_params(m, 3, &ps, &np), QAT_EINVAL);

  float x[NTOK * CC] = {0}, y[NTOK * CC];
  qat_tensor tx = qat_view2(x, QAT_F32, QAT_DEV_CPU, NTOK, CC), ty = qat_view2(y, QAT_F32, QAT_DEV_CPU, NTOK, CC);
  ck_assert_int_eq(qat_llama_block_forward(m, 0, &tx, &ty, BB, TT), QAT_EINVAL); /* no plan */
  TU_REQUIRE_OK(qat_llama_plan_block(m, BB, TT, 0));
  ck_assert_int_eq(qat_llama_block_forward(m, 3, &tx, &ty, BB, TT), QAT_EINVAL);
  ck_assert_int_eq(qat_llama_block_forward(m, 0, &tx, &ty, BB + 1, TT), QAT_EINVAL);
  qat_tensor tb = qat_view2(x, QAT_BF16, QAT_DEV_CPU, NTOK, CC);
  ck_assert_int_eq(qat_llama_block_forward(m, 0, &tb, &ty, BB, TT), QAT_EINVAL);
  qat_tensor ts = qat_view2(x, QAT_F32, QAT_DEV_CPU, NTOK - 1, CC);
  ck_assert_int_eq(qat_llama_block_forward(m, 0, &ts, &ty, BB, TT), QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "x_in"));
  TU_REQUIRE_OK(qat_llama_block_forward(m, 0, &tx, &ty, BB, TT));
  /* planned without training: no backward */
  ck_assert_int_eq(qat_llama_block_backward(m, 0, &ty, &tx), QAT_EINVAL);
  TU_REQUIRE_OK(qat_llama_plan_block(m, BB, TT, 1));
  ck_assert_int_eq(qat_llama_block_backward(m, 0, &ty, &tx), QAT_EINVAL); /* plan reset it */
  TU_REQUIRE_OK(qat_llama_block_forward(m, 0, &tx, &ty, BB, TT));
  ck_assert_int_eq(qat_llama_block_backward(m, 1, &ty, &tx), QAT_EINVAL); /* other layer */
  TU_REQUIRE_OK(qat_llama_block_backward(m, 0, &ty, NULL));
  ck_assert_int_eq(qat_llama_block_finish_backward(m, -1), QAT_EINVAL);
  /* freeze needs fake-quant */
  TU_REQUIRE_OK(qat_llama_set_quant(m, NULL));
  ck_assert_int_eq(qat_llama_freeze_codes(m, 0), QAT_EINVAL);
  ck_assert_int_eq(qat_llama_freeze_codes(m, 7), QAT_EINVAL);
  qat_llama_free(m);
}
END_TEST

int main(void) {
  Suite *s = suite_create("model_block");
  TCase *tc = tcase_create("cpu");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_chain_matches_whole_model);
  tcase_add_test(tc, test_block_backward_plain);
  tcase_add_test(tc, test_block_backward_quant_s);
  tcase_add_test(tc, test_freeze_codes);
  tcase_add_test(tc, test_freeze_whole_model_and_save);
  tcase_add_test(tc, test_block_params_and_errors);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
