/* LLaMA model gradients on the CPU backend, against double-precision central differences of the
 * F32 model's loss, on tiny random configs (C=16, F=24, L=2, Hq=4, Hkv=2 (GQA), D=4, V=19,
 * B=2, T=5): untied and tied embeddings, Qwen2 q/k/v biases, and fake-quant W4 g8 asym and
 * W3 per-channel sym. With fake-quant on, the loss is piecewise constant in w, so
 * - dw_hat is checked by differences of an unquantized twin whose weights are w_hat,
 * - dw against the clipped straight-through rule computed here from dw_hat,
 * - ds by differences in s (codes held: entries next to a rounding tie are skipped) plus the
 *   LSQ+ straight-through term -sum(G * u) the differences cannot see, and against the
 *   REFERENCE.md formula computed here; dz against that formula.
 * Plus gradient accumulation (2 micro-batches of B=1 == one batch of B=2), frozen Linears and
 * train_embeddings = 0.
 *
 * Tolerances: each difference uses eps = 1e-2 (weights are O(0.3..1)). The loss is a mean of F32
 * token losses (about 3), so each evaluation carries ~1e-6 of rounding; divided by 2 eps that is
 * ~5e-5 of noise, hence the absolute term 2e-4. The O(eps^2) truncation of central differences
 * on these smooth functions is ~1e-4 relative, far inside the relative term 1e-2, which still
 * catches any wrong factor, transposition or missing path (they show up as O(1) errors).
 * Differences in s take a smaller step (1e-2 * s, so codes rarely move), and their noise term is
 * scaled up by the same ratio. Mutation check done while writing: un-inverting the RoPE of dk
 * or overwriting instead of accumulating the tied lm_head gradient fails these cases. */
#include "testutil.h"

#include "model/llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BB 2
#define TT 5
#define NTOK (BB * TT)
#define EPS 1e-2
#define RTOL 1e-2
#define ATOL 2e-4

static qat_llama_config tiny_config(const char *arch, int tied) {
  qat_llama_config c;
  memset(&c, 0, sizeof c);
  snprintf(c.arch, sizeof c.arch, "%s", arch);
  c.dim = 16;
  c.hidden = 24;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.vocab = 19;
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

/* Every stored tensor of a model in a fixed order (for copies between twins). */
static int all_tensors(qat_llama *m, qat_tensor **out) {
  int n = 0;
  out[n++] = &m->embed;
  if (!m->cfg.tie_embeddings) out[n++] = &m->lm_head;
  out[n++] = &m->final_norm;
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_llama_layer *ly = &m->layers[l];
    out[n++] = &ly->attn_norm;
    out[n++] = &ly->ffn_norm;
    qat_linear *lins[7] = {&ly->q, &ly->k, &ly->v, &ly->o, &ly->gate, &ly->up, &ly->down};
    for (int i = 0; i < 7; i++) {
      out[n++] = &lins[i]->w;
      if (lins[i]->b.data) out[n++] = &lins[i]->b;
    }
  }
  return n;
}

/* Weights large enough that every path carries a gradient well above the noise: embeddings
 * N(0, 1), Linears and lm_head N(0, 1/in), norms 1 + N(0, 0.2^2), biases N(0, 0.2^2). */
static void randomize(qat_llama *m, uint64_t seed) {
  tu_rng r = {seed};
  qat_tensor *t[64];
  int n = all_tensors(m, t);
  for (int i = 0; i < n; i++) {
    float *d = t[i]->data;
    int64_t k = qat_numel(t[i]);
    int is_norm = t[i] == &m->final_norm;
    for (int l = 0; l < m->cfg.n_layers; l++)
      is_norm |= t[i] == &m->layers[l].attn_norm || t[i] == &m->layers[l].ffn_norm;
    float sd = t[i]->ndim == 1 ? 0.2f
               : t[i] == &m->embed ? 1.0f
                                   : 1.0f / sqrtf((float)t[i]->shape[1]);
    for (int64_t j = 0; j < k; j++) d[j] = (is_norm ? 1.0f : 0.0f) + sd * tu_normal(&r);
  }
}

static qat_llama *make_model(qat_llama_config c, uint64_t seed) {
  qat_llama *m = NULL;
  TU_REQUIRE_OK(qat_llama_random(&c, qat_backend_cpu(), seed, &m));
  randomize(m, seed + 1);
  m->train_embeddings = 1;
  TU_REQUIRE_OK(qat_llama_plan(m, BB, TT, 1));
  return m;
}

static void make_batch(uint64_t seed, int V, int32_t *tok, int32_t *tgt) {
  tu_rng r = {seed};
  for (int i = 0; i < NTOK; i++) {
    tok[i] = (int32_t)(tu_next(&r) % (uint64_t)V);
    tgt[i] = (int32_t)(tu_next(&r) % (uint64_t)V);
  }
  tgt[3] = -1; /* an ignored target */
}

static double loss_of(qat_llama *m, const int32_t *tok, const int32_t *tgt) {
  double loss;
  int64_t cnt;
  TU_REQUIRE_OK(qat_llama_forward(m, tok, BB, TT));
  TU_REQUIRE_OK(qat_llama_xent(m, tgt, 1.0f / (NTOK - 1), &loss, &cnt));
  ck_assert_int_eq(cnt, NTOK - 1);
  return loss;
}

static void grads_of(qat_llama *m, const int32_t *tok, const int32_t *tgt) {
  TU_REQUIRE_OK(qat_llama_zero_grad(m));
  loss_of(m, tok, tgt);
  TU_REQUIRE_OK(qat_llama_backward(m));
  TU_REQUIRE_OK(qat_llama_finish_backward(m));
}

/* Central difference of the loss in p[i]; the denominator is the exact F32 step taken. */
static double fd(qat_llama *m, float *p, int64_t i, double eps, const int32_t *tok,
                 const int32_t *tgt) {
  float v = p[i], hi = (float)(v + eps), lo = (float)(v - eps);
  p[i] = hi;
  double lp = loss_of(m, tok, tgt);
  p[i] = lo;
  double lm = loss_of(m, tok, tgt);
  p[i] = v;
  return (lp - lm) / ((double)hi - lo);
}

typedef struct {
  int checked, big; /* entries compared; entries with |g| > 10 ATOL (the test is not vacuous) */
  double worst;     /* max |fd - g| / (RTOL |g| + ATOL) */
} fd_stats;

/* atol_scale: the rounding noise term grows as 1/eps when a smaller step is taken. */
static void compare_at(fd_stats *s, const char *name, int64_t i, double want, double got,
                       double atol_scale) {
  double err = fabs(want - got) / (RTOL * fabs(want) + ATOL * atol_scale);
  if (err > s->worst) s->worst = err;
  s->checked++;
  if (fabs(want) > 10 * ATOL) s->big++;
  ck_assert_msg(err <= 1.0, "%s[%lld]: finite difference %.6g vs gradient %.6g", name,
                (long long)i, want, got);
}
static void compare(fd_stats *s, const char *name, int64_t i, double want, double got) {
  compare_at(s, name, i, want, got, 1.0);
}

/* Samples of one tensor: up to k entries spread over it (rows of used tokens for embeddings). */
static void check_tensor(qat_llama *m, const char *name, float *p, const float *g, int64_t n,
                         int64_t row, const int32_t *tok, const int32_t *tgt, fd_stats *s,
                         uint64_t seed) {
  tu_rng r = {seed};
  for (int j = 0; j < 6; j++) {
    int64_t i;
    if (row > 0 && j < 4)
      i = (int64_t)tok[tu_next(&r) % NTOK] * row + (int64_t)(tu_next(&r) % (uint64_t)row);
    else
      i = (int64_t)(tu_next(&r) % (uint64_t)n);
    compare(s, name, i, fd(m, p, i, EPS, tok, tgt), g[i]);
  }
}

/* Every parameter of m->params by differences in the parameter itself (quant off), or, with
 * quant on, every non-Linear parameter (embeddings, norms, biases, lm_head). */
static void check_params(qat_llama *m, const int32_t *tok, const int32_t *tgt, fd_stats *s) {
  grads_of(m, tok, tgt);
  /* snapshot the gradients: the differences below run forwards that do not touch them, but
   * keep the comparison independent of that */
  for (int k = 0; k < m->nparams; k++) {
    qat_param *p = &m->params[k];
    if (p->group == QAT_PG_QUANT || (p->group == QAT_PG_WEIGHT && m->quantized)) continue;
    int64_t n = qat_numel(p->p);
    float *g = malloc((size_t)n * sizeof *g);
    memcpy(g, p->g->data, (size_t)n * sizeof *g);
    int64_t row = p->p == &m->embed ? m->cfg.dim : 0;
    check_tensor(m, p->name, p->p->data, g, n, row, tok, tgt, s, 1000 + (uint64_t)k);
    free(g);
  }
}

/* ---- quant off ---------------------------------------------------------------------------- */

static void run_plain(const char *arch, int tied, int expect_params) {
  qat_llama *m = make_model(tiny_config(arch, tied), 7 + tied);
  int32_t tok[NTOK], tgt[NTOK];
  make_batch(11, m->cfg.vocab, tok, tgt);
  ck_assert_int_eq(m->nparams, expect_params);
  fd_stats s = {0};
  check_params(m, tok, tgt, &s);
  printf("%s tied=%d: %d entries checked (%d with |g| > %.0e), worst error / tolerance %.3f\n",
         arch, tied, s.checked, s.big, 10 * ATOL, s.worst);
  ck_assert_int_ge(s.big, s.checked * 3 / 4);
  qat_llama_free(m);
}

/* untied: 14 Linear weights + embed, lm_head, final norm, 4 layer norms */
START_TEST(test_grad_llama_untied) { run_plain("llama", 0, 14 + 7); }
END_TEST
START_TEST(test_grad_llama_tied) { run_plain("llama", 1, 14 + 6); }
END_TEST
/* qwen2: + 6 biases */
START_TEST(test_grad_qwen2_bias) { run_plain("qwen2", 0, 14 + 7 + 6); }
END_TEST

/* ---- quant on ----------------------------------------------------------------------------- */

typedef struct {
  float st, zt; /* clamped step and rounded, clamped zero point */
  int lo, hi;   /* code range */
} qgroup;

static qgroup qg(const qat_qspec *q, float s, float z) {
  qgroup g;
  g.st = fminf(fmaxf(s, QAT_S_MIN), QAT_S_MAX);
  if (q->sym) {
    g.lo = -(1 << (q->bits - 1));
    g.hi = (1 << (q->bits - 1)) - 1;
    g.zt = 0;
  } else {
    g.lo = 0;
    g.hi = (1 << q->bits) - 1;
    g.zt = fminf(fmaxf(rintf(z), 0.0f), (float)g.hi);
  }
  return g;
}

/* Group index (into s, z) of W[r, c]. */
static int64_t gidx(const qat_qspec *q, int64_t r, int64_t c, int64_t cols) {
  if (q->group == 0) return 0;
  int64_t G = q->group > 0 ? (cols + q->group - 1) / q->group : 1;
  return r * G + (q->group > 0 ? c / q->group : 0);
}

/* Unclamped integer code (before the zero point for sym). */
static float code_of(const qgroup *g, float w, float st) { return rintf(w / st) + g->zt; }

static void check_linear_quant(qat_llama *A, qat_llama *Bm, qat_linear *la, qat_linear *lb,
                               const int32_t *tok, const int32_t *tgt, fd_stats *s,
                               fd_stats *sq, int *n_ds_checked) {
  const qat_qspec *q = &A->qspec;
  int64_t R = la->out, C = la->in, ns = qat_numel(&la->s);
  const float *w = la->w.data, *G = la->dw_hat.data, *dw = la->dw.data;
  const float *sv = la->s.data, *zv = q->sym ? NULL : la->z.data;
  /* dw_hat == d loss / d w at w = w_hat: differences on the unquantized twin */
  check_tensor(Bm, la->name, lb->w.data, G, R * C, 0, tok, tgt, s, 77 + (uint64_t)R * 3 + C);

  /* dw: clipped straight-through; ds, dz: REFERENCE.md section 2 (EfficientQAT convention) */
  double *ds_ref = calloc((size_t)ns, sizeof *ds_ref), *dz_ref = calloc((size_t)ns, sizeof *dz_ref);
  double *u_in = calloc((size_t)ns, sizeof *u_in);
  for (int64_t r = 0; r < R; r++)
    for (int64_t c = 0; c < C; c++) {
      int64_t gi = gidx(q, r, c, C), i = r * C + c;
      qgroup g = qg(q, sv[gi], zv ? zv[gi] : 0);
      float u = w[i] / g.st, code = code_of(&g, w[i], g.st);
      int inside = code >= g.lo && code <= g.hi;
      float want = inside ? G[i] : 0.0f;
      ck_assert_msg(dw[i] == want, "%s dw[%lld] = %g, straight-through says %g", la->name,
                    (long long)i, dw[i], want);
      double dwh_ds = inside ? rintf(u) - u : (code < g.lo ? g.lo - g.zt : g.hi - g.zt);
      ds_ref[gi] += (double)G[i] * dwh_ds;
      if (!inside) dz_ref[gi] += (double)G[i] * -g.st;
      if (inside) u_in[gi] += (double)G[i] * u;
    }
  const float *ds = la->ds.data, *dz = q->sym ? NULL : la->dz.data;
  double dsmax = 1e-30;
  for (int64_t k = 0; k < ns; k++) dsmax = fmax(dsmax, fabs(ds_ref[k]));
  for (int64_t k = 0; k < ns; k++) {
    /* per-group sums of ~10 F32 products: 1e-5 of the largest group sum */
    ck_assert_msg(fabs(ds[k] - ds_ref[k]) <= 1e-5 * dsmax, "%s ds[%lld] = %g, formula %g",
                  la->name, (long long)k, ds[k], ds_ref[k]);
    if (dz)
      ck_assert_msg(fabs(dz[k] - dz_ref[k]) <= 1e-5 * dsmax + 1e-7, "%s dz[%lld] = %g, formula %g",
                    la->name, (long long)k, dz[k], dz_ref[k]);
  }

  /* ds by differences in s: only groups whose codes do not move within s (1 +- 1e-2) */
  float *sm = la->s.data;
  int done = 0;
  for (int64_t k = 0; k < ns && done < 3; k++) {
    double eps = 1e-2 * sm[k];
    int stable = 1;
    for (int64_t r = 0; r < R && stable; r++)
      for (int64_t c = 0; c < C && stable; c++) {
        if (gidx(q, r, c, C) != k) continue;
        qgroup g = qg(q, sm[k], zv ? zv[k] : 0);
        float w0 = w[r * C + c];
        float c0 = code_of(&g, w0, g.st), c1 = code_of(&g, w0, (float)(sm[k] + eps)),
              c2 = code_of(&g, w0, (float)(sm[k] - eps));
        float clo = (float)g.lo, chi = (float)g.hi;
        stable = fminf(fmaxf(c1, clo), chi) == fminf(fmaxf(c0, clo), chi) &&
                 fminf(fmaxf(c2, clo), chi) == fminf(fmaxf(c0, clo), chi);
      }
    if (!stable) continue;
    double d = fd(A, sm, k, eps, tok, tgt) - u_in[k];
    compare_at(sq, la->name, k, d, ds[k], EPS / eps);
    done++;
  }
  *n_ds_checked += done;
  free(ds_ref);
  free(dz_ref);
  free(u_in);
}

static void run_quant(const char *arch, int tied, qat_qspec q) {
  qat_llama_config c = tiny_config(arch, tied);
  qat_llama *A = make_model(c, 21);
  TU_REQUIRE_OK(qat_llama_set_quant(A, &q));
  int32_t tok[NTOK], tgt[NTOK];
  make_batch(13, c.vocab, tok, tgt);
  fd_stats s = {0}, sq = {0};
  /* non-Linear parameters by direct differences (w_hat does not depend on them) */
  check_params(A, tok, tgt, &s);
  grads_of(A, tok, tgt);

  /* the unquantized twin with w = w_hat */
  qat_llama *B = make_model(c, 21);
  qat_tensor *ta[64], *tb[64];
  int n = all_tensors(A, ta);
  ck_assert_int_eq(all_tensors(B, tb), n);
  for (int i = 0; i < n; i++) memcpy(tb[i]->data, ta[i]->data, qat_nbytes(ta[i]));
  int ds_checked = 0;
  for (int l = 0; l < c.n_layers; l++) {
    qat_llama_layer *la = &A->layers[l], *lb = &B->layers[l];
    qat_linear *lina[7] = {&la->q, &la->k, &la->v, &la->o, &la->gate, &la->up, &la->down};
    qat_linear *linb[7] = {&lb->q, &lb->k, &lb->v, &lb->o, &lb->gate, &lb->up, &lb->down};
    for (int i = 0; i < 7; i++)
      memcpy(linb[i]->w.data, lina[i]->w_hat.data, qat_nbytes(&lina[i]->w));
  }
  /* the twin's analytic dw must equal A's dw_hat (same arithmetic) */
  grads_of(B, tok, tgt);
  for (int l = 0; l < c.n_layers; l++) {
    qat_llama_layer *la = &A->layers[l], *lb = &B->layers[l];
    qat_linear *lina[7] = {&la->q, &la->k, &la->v, &la->o, &la->gate, &la->up, &la->down};
    qat_linear *linb[7] = {&lb->q, &lb->k, &lb->v, &lb->o, &lb->gate, &lb->up, &lb->down};
    for (int i = 0; i < 7; i++) {
      size_t k = (size_t)qat_numel(&lina[i]->w);
      double e = tu_nerr(lina[i]->dw_hat.data, linb[i]->dw.data, k);
      ck_assert_msg(e < 1e-6, "%s: dw_hat vs twin dw nerr %g", lina[i]->name, e);
      check_linear_quant(A, B, lina[i], linb[i], tok, tgt, &s, &sq, &ds_checked);
    }
  }
  printf("%s W%d g%d %s: %d entries checked (%d big), worst %.3f; ds by differences: %d groups, "
         "worst %.3f\n",
         arch, q.bits, q.group, q.sym ? "sym" : "asym", s.checked, s.big, s.worst, sq.checked,
         sq.worst);
  ck_assert_int_ge(s.big, s.checked * 3 / 4);
  ck_assert_int_ge(ds_checked, 7 * c.n_layers); /* at least one group of every Linear */
  qat_llama_free(A);
  qat_llama_free(B);
}

START_TEST(test_grad_quant_w4g8_asym) {
  run_quant("qwen2", 0, (qat_qspec){.bits = 4, .group = 8, .sym = 0, .grad = QAT_QGRAD_EFFICIENTQAT});
}
END_TEST
START_TEST(test_grad_quant_w3_perchannel_sym) {
  run_quant("llama", 1, (qat_qspec){.bits = 3, .group = -1, .sym = 1, .grad = QAT_QGRAD_EFFICIENTQAT});
}
END_TEST

/* ---- accumulation, frozen, train_embeddings = 0 ------------------------------------------- */

static float *snapshot_grads(qat_llama *m, int64_t *total) {
  int64_t n = 0;
  for (int k = 0; k < m->nparams; k++) n += qat_numel(m->params[k].g);
  float *out = malloc((size_t)n * sizeof *out), *p = out;
  for (int k = 0; k < m->nparams; k++) {
    size_t b = qat_nbytes(m->params[k].g);
    memcpy(p, m->params[k].g->data, b);
    p += b / sizeof *p;
  }
  *total = n;
  return out;
}

START_TEST(test_grad_accumulation) {
  qat_llama *m = make_model(tiny_config("qwen2", 0), 31);
  TU_REQUIRE_OK(qat_llama_set_quant(m, &(qat_qspec){.bits = 4, .group = 8, .sym = 0,
                                                     .grad = QAT_QGRAD_EFFICIENTQAT}));
  int32_t tok[NTOK], tgt[NTOK];
  make_batch(17, m->cfg.vocab, tok, tgt);
  double l2, l1a, l1b;
  int64_t cnt;
  TU_REQUIRE_OK(qat_llama_zero_grad(m));
  TU_REQUIRE_OK(qat_llama_forward(m, tok, BB, TT));
  TU_REQUIRE_OK(qat_llama_xent(m, tgt, 0.5f, &l2, &cnt));
  TU_REQUIRE_OK(qat_llama_backward(m));
  TU_REQUIRE_OK(qat_llama_finish_backward(m));
  int64_t n1, n2;
  float *g2 = snapshot_grads(m, &n2);

  TU_REQUIRE_OK(qat_llama_zero_grad(m));
  TU_REQUIRE_OK(qat_llama_forward(m, tok, 1, TT));
  TU_REQUIRE_OK(qat_llama_xent(m, tgt, 0.5f, &l1a, &cnt));
  TU_REQUIRE_OK(qat_llama_backward(m));
  TU_REQUIRE_OK(qat_llama_forward(m, tok + TT, 1, TT));
  TU_REQUIRE_OK(qat_llama_xent(m, tgt + TT, 0.5f, &l1b, &cnt));
  TU_REQUIRE_OK(qat_llama_backward(m));
  TU_REQUIRE_OK(qat_llama_finish_backward(m));
  float *g1 = snapshot_grads(m, &n1);
  ck_assert_int_eq(n1, n2);
  /* same sums in another order: F32 rounding only */
  ck_assert_msg(fabs(l1a + l1b - l2) < 1e-5 * fabs(l2), "loss %g + %g vs %g", l1a, l1b, l2);
  int64_t off = 0;
  for (int k = 0; k < m->nparams; k++) {
    int64_t n = qat_numel(m->params[k].g);
    double e = tu_nerr(g1 + off, g2 + off, (size_t)n);
    ck_assert_msg(e < 1e-5, "%s: accumulated vs batched gradient nerr %g", m->params[k].name, e);
    off += n;
  }
  free(g1);
  free(g2);
  qat_llama_free(m);
}
END_TEST

START_TEST(test_frozen_and_no_embeddings) {
  qat_llama *m = make_model(tiny_config("qwen2", 0), 41);
  int32_t tok[NTOK], tgt[NTOK];
  make_batch(19, m->cfg.vocab, tok, tgt);
  grads_of(m, tok, tgt);
  int64_t nall;
  float *gall = snapshot_grads(m, &nall); /* weights first, then the rest */
  int64_t nw = 0;
  for (int k = 0; k < m->nparams && m->params[k].group == QAT_PG_WEIGHT; k++)
    nw += qat_numel(m->params[k].g);

  m->train_embeddings = 0;
  m->layers[1].up.frozen = 1;
  grads_of(m, tok, tgt); /* zero_grad lays the gradients out again */
  ck_assert_ptr_null(m->d_embed.data);
  ck_assert_ptr_null(m->layers[0].q.db.data);
  ck_assert_int_eq(m->nparams, 14);
  int64_t off = 0;
  for (int k = 0; k < m->nparams; k++) {
    qat_param *p = &m->params[k];
    int64_t n = qat_numel(p->g);
    const float *g = p->g->data;
    if (p->g == &m->layers[1].up.dw) {
      for (int64_t i = 0; i < n; i++) ck_assert_float_eq(g[i], 0.0f);
    } else {
      /* activation gradients still flow through embeddings, norms and biases: identical */
      ck_assert_msg(tu_nerr(g, gall + off, (size_t)n) == 0.0, "%s changed", p->name);
    }
    off += n;
  }
  ck_assert_int_eq(off, nw);
  free(gall);
  qat_llama_free(m);
}
END_TEST

START_TEST(test_plan_errors) {
  qat_llama_config c = tiny_config("mistral", 0);
  c.sliding_window = 4;
  qat_llama *m = NULL;
  TU_REQUIRE_OK(qat_llama_random(&c, qat_backend_cpu(), 1, &m));
  ck_assert_int_ne(qat_llama_plan(m, 1, 5, 0), QAT_OK);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "sliding_window"));
  TU_REQUIRE_OK(qat_llama_plan(m, 1, 4, 0));
  int32_t tok[5] = {1, 2, 3, 4, 19};
  ck_assert_int_eq(qat_llama_forward(m, tok, 1, 5), QAT_EINVAL); /* longer than planned */
  ck_assert_int_eq(qat_llama_forward(m, tok + 1, 1, 4), QAT_EINVAL); /* token 19 >= V */
  TU_REQUIRE_OK(qat_llama_forward(m, tok, 1, 4));
  ck_assert_int_eq(qat_llama_backward(m), QAT_EINVAL); /* planned without training */
  qat_llama_free(m);
}
END_TEST

int main(void) {
  Suite *s = suite_create("model_grad");
  TCase *tc = tcase_create("model_grad");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_grad_llama_untied);
  tcase_add_test(tc, test_grad_llama_tied);
  tcase_add_test(tc, test_grad_qwen2_bias);
  tcase_add_test(tc, test_grad_quant_w4g8_asym);
  tcase_add_test(tc, test_grad_quant_w3_perchannel_sym);
  tcase_add_test(tc, test_grad_accumulation);
  tcase_add_test(tc, test_frozen_and_no_embeddings);
  tcase_add_test(tc, test_plan_errors);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
