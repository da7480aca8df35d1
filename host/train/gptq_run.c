/* GPTQ of a whole model (gptq_run.h). Dimension letters: T tokens per sample, C = dim,
 * Bb samples per pass, N = Bb * T rows, K a Linear's input width (C, Hq*D or F). */
#include "train/gptq_run.h"

#include "core/log.h"
#include "quant/quant.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Which H each of the 7 Linears (q, k, v, o, gate, up, down) reads. */
static const int k_input_of[7] = {0, 0, 0, 1, 2, 2, 3};

typedef struct grun {
  qat_llama *m;
  const qat_backend *be;
  const qat_gptq_run_opts *o;
  int T, C, Bb;
  int64_t ns, ns_total; /* this rank's samples, all ranks' */
  qat_dist *dist;
  qat_actcache *cache; /* one set: X_q */
  qat_arena arena;
  qat_tensor x, y;  /* [N, C] F32 */
  qat_tensor tok;   /* [N] I32 */
  qat_tensor stage; /* [N, C] BF16 (BF16 caches only) */
  qat_tensor H[4];  /* [K, K] F32: sum of x x^T / rows of each input */
  int64_t K[4];
} grun;

static int batch_n(const grun *G, int64_t i0) {
  return (int)(G->ns - i0 < G->Bb ? G->ns - i0 : G->Bb);
}

static qat_status embed_all(grun *G, const int32_t *calib) {
  for (int64_t i0 = 0; i0 < G->ns; i0 += G->Bb) {
    int n = batch_n(G, i0);
    int64_t N = (int64_t)n * G->T;
    qat_tensor tok = qat_rows(&G->tok, 0, N), x = qat_rows(&G->x, 0, N);
    QAT_TRY(G->be->upload(G->be, tok.data, calib + i0 * G->T, (size_t)N * 4));
    QAT_TRY(QAT_OP(G->be, embedding_fwd, &tok, &G->m->embed, &x));
    QAT_TRY(qat_actcache_put_batch(G->cache, 0, i0, n, G->T, &G->stage, &x));
  }
  return QAT_OK;
}

/* One pass of block l over every sample: fp (the masters, accumulating the H[k] whose bit k is
 * in mask) or quantized (the samples move on to the next block). */
static qat_status pass(grun *G, int l, int fp, unsigned mask) {
  if (fp)
    for (int k = 0; k < 4; k++)
      if (mask >> k & 1) QAT_TRY(G->be->memset0(G->be, G->H[k].data, qat_nbytes(&G->H[k])));
  const int skip = G->o->skip_first;
  /* position 0's weight in H (0 in the options means the reference's 1) */
  const double w0 = skip == 0 && G->o->first_weight > 0 ? G->o->first_weight : 1.0;
  const float alpha = (float)(1.0 / ((double)G->ns_total * (G->T - skip - 1 + w0)));
  for (int64_t i0 = 0; i0 < G->ns; i0 += G->Bb) {
    int n = batch_n(G, i0);
    int64_t N = (int64_t)n * G->T;
    qat_tensor x = qat_rows(&G->x, 0, N), y = qat_rows(&G->y, 0, N);
    QAT_TRY(qat_actcache_get_batch(G->cache, 0, i0, n, G->T, &G->stage, &x));
    QAT_TRY(qat_actcache_prefetch_range(G->cache, 0, i0 + G->Bb, G->Bb, 0, G->ns));
    if (!fp) {
      QAT_TRY(qat_llama_block_forward(G->m, l, &x, &y, n, G->T));
      QAT_TRY(qat_actcache_put_batch(G->cache, 0, i0, n, G->T, &G->stage, &y));
      continue;
    }
    QAT_TRY(qat_llama_block_forward_fp(G->m, l, &x, &y, n, G->T));
    qat_tensor in[4];
    QAT_TRY(qat_llama_block_linear_inputs(G->m, n, G->T, in));
    /* each window's leading rows (read by nothing else): left out (zeroed) or position 0 weighted;
     * w0 != 1 only when skip == 0 */
    for (int k = 0; k < 4 && (skip > 0 || w0 != 1.0); k++)
      if (mask >> k & 1)
        for (int i = 0; i < n; i++) {
          qat_tensor r = qat_rows(&in[k], (int64_t)i * G->T, skip > 0 ? skip : 1);
          if (skip > 0)
            QAT_TRY(G->be->memset0(G->be, r.data, qat_nbytes(&r)));
          else
            QAT_TRY(QAT_OP(G->be, scale, (float)sqrt(w0), &r));
        }
    for (int k = 0; k < 4; k++) /* H[K, K] += alpha * in^T in, in [N, K] */
      if (mask >> k & 1)
        QAT_TRY(G->be->gemm(G->be, 1, 0, G->K[k], G->K[k], N, alpha, &in[k], &in[k], 1.0f,
                            &G->H[k]));
  }
  /* every rank's share of H: the sum is the whole calibration set's */
  for (int k = 0; fp && G->dist->world > 1 && k < 4; k++)
    if (mask >> k & 1)
      QAT_TRY(G->dist->allreduce(G->dist, G->H[k].data, qat_numel(&G->H[k]), QAT_F32,
                                 QAT_RED_SUM));
  return QAT_OK;
}

/* sum of (A @ H) .* A for A [out, in], H [in, in] (host F32; scratch [out, in]). */
static double quad_form(const float *A, const float *H, int64_t out, int64_t in, float *scratch) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)out, (int)in, (int)in, 1.0f, A,
              (int)in, H, (int)in, 0.0f, scratch, (int)in);
  double s = 0;
  for (int64_t i = 0; i < out * in; i++) s += (double)scratch[i] * A[i];
  return s;
}

/* GPTQ of Linear li reading input Hf [in, in] (host F32): masters, s, z updated; the relative
 * output errors of RTN and GPTQ into rel[2]. */
static qat_status quantize_linear(grun *G, qat_linear *li, const float *Hf, double rel[2],
                                  int64_t *dead) {
  const qat_backend *be = G->be;
  const qat_qspec *q = &G->m->qspec;
  const int64_t out = li->out, in = li->in, nw = out * in;
  int64_t ss[2];
  qat_qspec_sshape(q, out, in, ss);
  const int64_t nsz = ss[0] * ss[1];
  float *W = malloc((size_t)nw * 4), *Wq = malloc((size_t)nw * 4), *D = malloc((size_t)nw * 4);
  float *scr = malloc((size_t)nw * 4), *s = malloc((size_t)nsz * 4), *z = malloc((size_t)nsz * 4);
  double *Hd = malloc((size_t)(in * in) * 8);
  qat_status st = W && Wq && D && scr && s && z && Hd
                      ? QAT_OK
                      : QAT_FAIL(QAT_ENOMEM, "gptq %s: out of host memory", li->name);
  QAT_CHECK(st, be->download(be, W, li->w.data, (size_t)nw * 4), done);
  double ref = quad_form(W, Hf, out, in, scr);
  /* RTN with the spec's init, for the comparison */
  QAT_CHECK(st, qat_quant_rtn_f32(q, W, out, in, Wq, NULL), done);
  for (int64_t i = 0; i < nw; i++) D[i] = Wq[i] - W[i];
  rel[0] = ref > 0 ? quad_form(D, Hf, out, in, scr) / ref : 0;
  memcpy(Wq, W, (size_t)nw * 4);
  for (int64_t i = 0; i < in * in; i++) Hd[i] = Hf[i];
  qat_gptq_stats gs;
  st = qat_gptq_linear(q, &G->o->gptq, Wq, out, in, Hd, s, z, &gs);
  if (st != QAT_OK) {
    qat_context(st, "%s", li->name);
    goto done;
  }
  for (int64_t i = 0; i < nw; i++) D[i] = Wq[i] - W[i];
  rel[1] = ref > 0 ? quad_form(D, Hf, out, in, scr) / ref : 0;
  *dead += gs.dead;
  QAT_CHECK(st, be->upload(be, li->w.data, Wq, (size_t)nw * 4), done);
  QAT_CHECK(st, be->upload(be, li->s.data, s, (size_t)nsz * 4), done);
  if (!q->sym) QAT_CHECK(st, be->upload(be, li->z.data, z, (size_t)nsz * 4), done);
  qat_debug("gptq %s: rel. output error RTN %.5g -> GPTQ %.5g", li->name, rel[0], rel[1]);
done:
  free(W);
  free(Wq);
  free(D);
  free(scr);
  free(s);
  free(z);
  free(Hd);
  return st;
}

/* GPTQ of the Linears of block l whose input bit is in mask (from the H accumulated for them);
 * their relative output errors are added to rel_blk[2] (RTN, GPTQ) as a share of the 7. */
static qat_status quantize_block(grun *G, int l, unsigned mask, qat_gptq_run_stats *acc,
                                 double rel_blk[2]) {
  float *Hf[4] = {NULL, NULL, NULL, NULL};
  qat_status st = QAT_OK;
  for (int k = 0; st == QAT_OK && k < 4; k++) {
    if (!(mask >> k & 1)) continue;
    Hf[k] = malloc((size_t)qat_nbytes(&G->H[k]));
    st = Hf[k] ? G->be->download(G->be, Hf[k], G->H[k].data, qat_nbytes(&G->H[k]))
               : QAT_FAIL(QAT_ENOMEM, "gptq: out of host memory");
  }
  qat_llama_layer *L = &G->m->layers[l];
  qat_linear *lins[7] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
  for (int i = 0; st == QAT_OK && i < 7; i++) {
    if (!(mask >> k_input_of[i] & 1)) continue;
    double rel[2];
    st = quantize_linear(G, lins[i], Hf[k_input_of[i]], rel, &acc->dead);
    if (st != QAT_OK) break;
    rel_blk[0] += rel[0] / 7;
    rel_blk[1] += rel[1] / 7;
    acc->rel_err_rtn += rel[0];
    acc->rel_err_gptq += rel[1];
    acc->linears++;
  }
  for (int k = 0; k < 4; k++) free(Hf[k]);
  return st;
}

/* Block l: all 7 Linears from one pass of the unquantized block, or (true_sequential) the
 * attention inputs first, then o, then gate/up, then down, each from a pass in which the
 * Linears before it are already quantized (their masters hold w^, which the fp pass reads). */
static qat_status do_block(grun *G, int l, qat_gptq_run_stats *acc, double rel[2]) {
  rel[0] = rel[1] = 0;
  if (!G->o->true_sequential) {
    QAT_TRY(pass(G, l, 1, 0xF));
    return quantize_block(G, l, 0xF, acc, rel);
  }
  for (int k = 0; k < 4; k++) {
    QAT_TRY(pass(G, l, 1, 1u << k));
    QAT_TRY(quantize_block(G, l, 1u << k, acc, rel));
  }
  return QAT_OK;
}

static qat_status run_blocks(grun *G, const int32_t *calib, qat_gptq_run_stats *acc) {
  const int L = G->m->cfg.n_layers;
  QAT_TRY(qat_llama_plan_block(G->m, G->Bb, G->T, 0));
  QAT_TRY(embed_all(G, calib));
  qat_progress pr;
  qat_progress_start(&pr, "gptq", L);
  qat_status st = QAT_OK;
  for (int l = 0; st == QAT_OK && l < L; l++) {
    double t0 = qat_now(), rel[2];
    st = do_block(G, l, acc, rel);
    if (st == QAT_OK && l + 1 < L) st = pass(G, l, 0, 0);
    if (st != QAT_OK) {
      qat_context(st, "gptq block %d", l);
      break;
    }
    char extra[96];
    snprintf(extra, sizeof extra, "block rel. err RTN %.4g -> %.4g", rel[0], rel[1]);
    qat_progress_update(&pr, l + 1, extra);
    qat_log("gptq block %d/%d: rel. output error (calibration, mean of 7 Linears) RTN %.5g -> "
            "GPTQ %.5g, %.1f s",
            l + 1, L, rel[0], rel[1], qat_now() - t0);
  }
  qat_progress_end(&pr, st == QAT_OK ? NULL : "failed");
  return st;
}

qat_status qat_gptq_run(qat_llama *m, const int32_t *calib, int64_t ncalib,
                        const qat_gptq_run_opts *o, qat_gptq_run_stats *stats) {
  if (!m->quantized) return QAT_FAIL(QAT_EINVAL, "gptq: the model is not quantized");
  if (ncalib < 1 || o->batch < 1 || o->T < 1 || o->skip_first < 0 || o->skip_first >= o->T ||
      !(o->first_weight >= 0 && o->first_weight <= 1e6))
    return QAT_FAIL(QAT_EINVAL,
                    "gptq: samples %lld, batch %d, T %d, skip_first %d (in [0, T)), first_weight "
                    "%g (in [0, 1e6])",
                    (long long)ncalib, o->batch, o->T, o->skip_first, o->first_weight);
  if (o->cache_dtype != QAT_F32 && o->cache_dtype != QAT_BF16)
    return QAT_FAIL(QAT_EINVAL, "gptq: cache dtype %s (F32 or BF16)",
                    qat_dtype_name(o->cache_dtype));
  for (int l = 0; l < m->cfg.n_layers; l++)
    if (m->layers[l].q.use_codes)
      return QAT_FAIL(QAT_EINVAL, "gptq: block %d is frozen to codes", l);
  const qat_llama_config *c = &m->cfg;
  grun G = {.m = m, .be = m->be, .o = o, .T = o->T, .C = c->dim,
            .Bb = (int)(o->batch < ncalib ? o->batch : ncalib), .ns = ncalib,
            .ns_total = o->dist ? o->samples_total : ncalib,
            .dist = o->dist ? o->dist : qat_dist_single(),
            .K = {c->dim, (int64_t)c->n_heads * c->head_dim, c->dim, c->hidden}};
  const int64_t N = (int64_t)G.Bb * G.T;
  const int bf = o->cache_dtype == QAT_BF16;
  size_t need = 2 * qat_arena_need(QAT_F32, N * G.C) + qat_arena_need(QAT_I32, N) +
                (bf ? qat_arena_need(QAT_BF16, N * G.C) : 0);
  for (int k = 0; k < 4; k++) need += qat_arena_need(QAT_F32, G.K[k] * G.K[k]);
  qat_gptq_run_stats acc = {0};
  double t0 = qat_now();
  qat_status st = qat_arena_init(&G.arena, G.be, "gptq buffers", need);
  const int64_t sh[2] = {N, G.C};
  if (st == QAT_OK) st = qat_arena_tensor(&G.arena, &G.x, QAT_F32, 2, sh, "gptq x");
  if (st == QAT_OK) st = qat_arena_tensor(&G.arena, &G.y, QAT_F32, 2, sh, "gptq y");
  if (st == QAT_OK) st = qat_arena_tensor(&G.arena, &G.tok, QAT_I32, 1, &N, "gptq tokens");
  if (st == QAT_OK && bf)
    st = qat_arena_tensor(&G.arena, &G.stage, QAT_BF16, 2, sh, "gptq cache staging");
  static const char *hn[4] = {"gptq H attn_in", "gptq H o_in", "gptq H mlp_in", "gptq H down_in"};
  for (int k = 0; st == QAT_OK && k < 4; k++) {
    const int64_t hs[2] = {G.K[k], G.K[k]};
    st = qat_arena_tensor(&G.arena, &G.H[k], QAT_F32, 2, hs, hn[k]);
  }
  if (st == QAT_OK)
    st = qat_actcache_create(G.be, 1, G.ns, (int64_t)G.T * G.C, o->cache_dtype, &o->budget,
                             &G.cache);
  if (st == QAT_OK) st = run_blocks(&G, calib, &acc);
  if (G.cache) qat_actcache_free(G.cache);
  qat_arena_free(&G.arena);
  qat_llama_unplan(m, 0, 1);
  acc.seconds = qat_now() - t0;
  if (acc.linears > 0) {
    acc.rel_err_rtn /= (double)acc.linears;
    acc.rel_err_gptq /= (double)acc.linears;
  }
  if (stats) *stats = acc;
  return st;
}
