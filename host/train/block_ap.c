/* EfficientQAT Block-AP (REFERENCE.md section 3): decoder blocks are reconstructed one at a time.
 * For block b: Y = fp_block_b(X_fp) (targets from the model's own full-precision masters,
 * qat_llama_block_forward_fp: block b's masters are untouched until block b trains, so no
 * separate full-precision model is held), train block b's Linear
 * weights and s, z with MSE(q_block_b(X_q), Y), then freeze its integer codes and propagate
 * X_q <- q_block_b(X_q), X_fp <- Y. The three activation sets live in the activation cache
 * (device, then host, then disk) in o->cache_dtype: BF16 (the trainer's default, as the paper's
 * fp16 cache; half the bytes of F32, which is what makes the 7B budget practical) or F32. With
 * BF16 a batch is rounded to BF16 (be->convert into one staging buffer) on its way into the cache
 * and widened back to F32 on its way out; compute stays F32. The rounding happens before a slot
 * is placed, so results still never depend on where a slot lives. X_fp and Y swap roles after
 * each block instead of being copied.
 * Dimension letters: T tokens per sample, C = dim, Bb samples per step, N = Bb * T. */
#include "train/eqat.h"

#include "core/log.h"
#include "io/fsutil.h"
#include "train/dist_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int64_t qat_block_ap_steps_per_block(int64_t samples, int batch, int epochs) {
  return (int64_t)epochs * ((samples + batch - 1) / batch);
}

typedef struct bap {
  qat_llama *m;
  const qat_backend *be;
  const qat_block_ap_opts *o;
  int T, C, Bb;
  int64_t ns, nv, ntot; /* this rank's training samples, validation samples, all slots per set */
  qat_dist *dist;       /* world W; every rank holds its own samples' activations */
  int A;                /* local micro-batches per step */
  int64_t nv_total;     /* validation samples over all ranks */
  qat_actcache *cache;
  int set_fp, set_y, set_q; /* X_fp and Y swap after every block */
  qat_arena arena;
  qat_tensor xin, y, xout, d; /* [N, C] F32 */
  qat_tensor tok;             /* [N] I32 */
  qat_tensor stage;           /* [N, C] cache dtype, BF16 caches only (else no data) */
} bap;

static qat_tensor rows(const qat_tensor *t, int64_t r0, int64_t n) { return qat_rows(t, r0, n); }

static qat_status get_batch(bap *B, int set, int64_t i0, int n, qat_tensor *x) {
  return qat_actcache_get_batch(B->cache, set, i0, n, B->T, &B->stage, x);
}
static qat_status prefetch(bap *B, int set, int64_t i0, int n, int64_t lo, int64_t hi) {
  return qat_actcache_prefetch_range(B->cache, set, i0, n, lo, hi);
}
static qat_status put_batch(bap *B, int set, int64_t i0, int n, const qat_tensor *x) {
  return qat_actcache_put_batch(B->cache, set, i0, n, B->T, &B->stage, x);
}
static int batch_n(const bap *B, int64_t i0, int64_t end) {
  return (int)(end - i0 < B->Bb ? end - i0 : B->Bb);
}

/* X_fp = X_q = embeddings of every sample (block 0's input). */
static qat_status embed_all(bap *B, const int32_t *calib, const int32_t *val) {
  for (int64_t i0 = 0; i0 < B->ntot; i0 += B->Bb) {
    int n = batch_n(B, i0, B->ntot);
    int64_t N = (int64_t)n * B->T;
    for (int k = 0; k < n; k++) {
      int64_t i = i0 + k;
      const int32_t *src = i < B->ns ? calib + i * B->T : val + (i - B->ns) * B->T;
      qat_tensor tv = rows(&B->tok, (int64_t)k * B->T, B->T);
      QAT_TRY(B->be->upload(B->be, tv.data, src, (size_t)B->T * 4));
    }
    qat_tensor tok = rows(&B->tok, 0, N), x = rows(&B->xin, 0, N);
    QAT_TRY(QAT_OP(B->be, embedding_fwd, &tok, &B->m->embed, &x));
    QAT_TRY(put_batch(B, B->set_fp, i0, n, &x));
    QAT_TRY(put_batch(B, B->set_q, i0, n, &x));
  }
  return QAT_OK;
}

/* dst[i] = layer l of the model (fp: with its full-precision masters; else as quantized) of
 * src[i] for every slot (src == dst allowed: each batch is read before it is written). */
static qat_status forward_set(bap *B, int fp, int l, int src, int dst) {
  for (int64_t i0 = 0; i0 < B->ntot; i0 += B->Bb) {
    int n = batch_n(B, i0, B->ntot);
    int64_t N = (int64_t)n * B->T;
    qat_tensor x = rows(&B->xin, 0, N), y = rows(&B->xout, 0, N);
    QAT_TRY(get_batch(B, src, i0, n, &x));
    QAT_TRY(prefetch(B, src, i0 + B->Bb, B->Bb, 0, B->ntot));
    if (fp)
      QAT_TRY(qat_llama_block_forward_fp(B->m, l, &x, &y, n, B->T));
    else
      QAT_TRY(qat_llama_block_forward(B->m, l, &x, &y, n, B->T));
    QAT_TRY(put_batch(B, dst, i0, n, &y));
  }
  return QAT_OK;
}

/* d = out - y and its sum of squares (d [N, C] becomes the residual). */
static qat_status residual(const qat_backend *be, const qat_tensor *out, const qat_tensor *y,
                           qat_tensor *d, double *ss) {
  QAT_TRY(be->copy(be, d->data, out->data, qat_nbytes(out)));
  QAT_TRY(QAT_OP(be, axpy, -1.0f, y, d));
  return QAT_OP(be, sumsq, d, ss);
}

/* Validation MSE of block l of the student on the validation slots; NaN when there are none. */
static qat_status val_mse(bap *B, int l, double *mse) {
  if (B->nv_total == 0) {
    *mse = NAN;
    return QAT_OK;
  }
  double total = 0;
  for (int64_t i0 = B->ns; i0 < B->ntot; i0 += B->Bb) {
    int n = batch_n(B, i0, B->ntot);
    int64_t N = (int64_t)n * B->T;
    qat_tensor x = rows(&B->xin, 0, N), y = rows(&B->y, 0, N), out = rows(&B->xout, 0, N),
               d = rows(&B->d, 0, N);
    QAT_TRY(get_batch(B, B->set_q, i0, n, &x));
    QAT_TRY(get_batch(B, B->set_y, i0, n, &y));
    QAT_TRY(qat_llama_block_forward(B->m, l, &x, &out, n, B->T));
    double ss = 0;
    QAT_TRY(residual(B->be, &out, &y, &d, &ss));
    total += ss;
  }
  QAT_TRY(B->dist->allreduce_f64(B->dist, &total, 1, QAT_RED_SUM));
  *mse = total / ((double)B->nv_total * B->T * B->C);
  return QAT_OK;
}

/* Gradients of layer l's Linears accumulate (+=): cleared before each step. */
static qat_status zero_block_grads(qat_llama *m, int l) {
  qat_llama_layer *L = &m->layers[l];
  qat_linear *lins[7] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
  for (int i = 0; i < 7; i++) {
    qat_tensor *g[5] = {&lins[i]->dw_hat, &lins[i]->dw, &lins[i]->ds, &lins[i]->dz, &lins[i]->db};
    for (int k = 0; k < 5; k++)
      if (g[k]->data) QAT_TRY(m->be->memset0(m->be, g[k]->data, qat_nbytes(g[k])));
  }
  qat_tensor *gn[2] = {&L->d_attn_norm, &L->d_ffn_norm}; /* laid out with train_embeddings */
  for (int k = 0; k < 2; k++)
    if (gn[k]->data) QAT_TRY(m->be->memset0(m->be, gn[k]->data, qat_nbytes(gn[k])));
  return QAT_OK;
}

qat_status qat_block_ap_step(qat_llama *m, int l, qat_optim *opt, const double lr[3],
                             const qat_tensor *x, const qat_tensor *y, qat_tensor *out,
                             qat_tensor *d, int n, int T, double *loss) {
  const qat_backend *be = m->be;
  double ss = 0, numel = (double)n * T * m->cfg.dim;
  QAT_TRY(zero_block_grads(m, l));
  QAT_TRY(qat_llama_block_forward(m, l, x, out, n, T));
  QAT_TRY(residual(be, out, y, d, &ss));
  *loss = ss / numel;
  if (!isfinite(*loss))
    return QAT_FAIL(QAT_EINVAL, "Block-AP block %d: non-finite loss %g", l, *loss);
  /* dL/dout = 2 (out - Y) / numel */
  QAT_TRY(QAT_OP(be, scale, (float)(2.0 / numel), d));
  QAT_TRY(qat_llama_block_backward(m, l, d, NULL));
  QAT_TRY(qat_llama_block_finish_backward(m, l));
  return qat_optim_step(opt, lr);
}

/* One step of layer l over this rank's micro-batches [mb, mb + A) of the epoch (the last one
 * may be short; slots never wrap): zero, forward / residual / backward of each, the block's
 * gradients and the squared error summed across ranks, then the fake-quant backward and AdamW.
 * The loss is a mean over the step's samples on all ranks (ns is a multiple of W * A * Bb when
 * W * A > 1, so every rank's micro-batches are full). With A = W = 1 these are exactly
 * qat_block_ap_step's ops. *prefetch_next: the first micro-batch of the next step. */
static qat_status accum_step(bap *B, int l, qat_optim *opt, const double lr[3], int64_t mb,
                             int64_t next, double *loss) {
  qat_llama *m = B->m;
  int64_t nb = (B->ns + B->Bb - 1) / B->Bb, ns_step = 0;
  for (int a = 0; a < B->A && mb + a < nb; a++) ns_step += batch_n(B, (mb + a) * B->Bb, B->ns);
  double numel = (double)ns_step * B->dist->world * B->T * B->C, ss = 0;
  QAT_TRY(zero_block_grads(m, l));
  for (int a = 0; a < B->A && mb + a < nb; a++) {
    int64_t i0 = (mb + a) * B->Bb, nx = mb + a + 1 < nb && a + 1 < B->A ? i0 + B->Bb
                                                                        : next * B->Bb;
    int n = batch_n(B, i0, B->ns);
    int64_t N = (int64_t)n * B->T;
    qat_tensor x = rows(&B->xin, 0, N), y = rows(&B->y, 0, N), out = rows(&B->xout, 0, N),
               d = rows(&B->d, 0, N);
    QAT_TRY(get_batch(B, B->set_q, i0, n, &x));
    QAT_TRY(get_batch(B, B->set_y, i0, n, &y));
    if (nx >= 0) {
      QAT_TRY(prefetch(B, B->set_q, nx, B->Bb, 0, B->ns));
      QAT_TRY(prefetch(B, B->set_y, nx, B->Bb, 0, B->ns));
    }
    double s1 = 0;
    QAT_TRY(qat_llama_block_forward(m, l, &x, &out, n, B->T));
    QAT_TRY(residual(B->be, &out, &y, &d, &s1));
    ss += s1;
    /* dL/dout = 2 (out - Y) / numel */
    QAT_TRY(QAT_OP(B->be, scale, (float)(2.0 / numel), &d));
    QAT_TRY(qat_llama_block_backward(m, l, &d, NULL));
  }
  /* every rank decides on the summed loss, so all stop (or go on) together */
  QAT_TRY(B->dist->allreduce_f64(B->dist, &ss, 1, QAT_RED_SUM));
  *loss = ss / numel;
  if (!isfinite(*loss))
    return QAT_FAIL(QAT_EINVAL, "Block-AP block %d: non-finite loss %g", l, *loss);
  QAT_TRY(qat_dist_allreduce_block_grads(B->dist, m, l));
  QAT_TRY(qat_llama_block_finish_backward(m, l));
  return qat_optim_step(opt, lr);
}

static qat_status train_block(bap *B, int l, qat_block_ap_stats *stats) {
  const qat_block_ap_opts *o = B->o;
  qat_param *ps = NULL;
  int np = 0;
  QAT_TRY(qat_llama_block_params(B->m, l, &ps, &np));
  qat_optim opt;
  qat_optim_group groups[3] = {
      [QAT_PG_WEIGHT] = {o->lr_w, 0.0, 1},
      [QAT_PG_QUANT] = {o->lr_quant, 0.0, 1},
      [QAT_PG_OTHER] = {o->lr_w, 0.0, o->train_norms},
  };
  /* group OTHER of a block holds its norm gains and biases: the gains train with
   * train_norms (the reference code's weight group matches every "*weight"), biases never */
  int k = 0;
  for (int i = 0; i < np; i++)
    if (ps[i].group != QAT_PG_OTHER || strstr(ps[i].name, "norm.weight")) ps[k++] = ps[i];
  np = k;
  qat_status st = qat_optim_init(&opt, B->be, ps, np, groups);
  opt.scale_f16 = B->m->qspec.scale_f16; /* quant.scale_dtype f16: s projected after each step */
  /* this rank's micro-batches per epoch, A per step */
  int64_t nmb = (B->ns + B->Bb - 1) / B->Bb, nb = (nmb + B->A - 1) / B->A, total = nb * o->epochs;
  char what[64];
  snprintf(what, sizeof what, "block %d/%d", l + 1, B->m->cfg.n_layers);
  qat_progress pr;
  qat_progress_start(&pr, what, total);
  double ep_sum = 0;
  for (int64_t k = 0; st == QAT_OK && k < total; k++) {
    int64_t mb = (k % nb) * B->A, next = k + 1 < total ? ((k + 1) % nb) * B->A : -1;
    double lr[3];
    lr[QAT_PG_WEIGHT] = qat_lr_at(QAT_SCHED_COSINE, o->lr_w, k, total, 0, o->min_lr_ratio);
    lr[QAT_PG_QUANT] = qat_lr_at(QAT_SCHED_COSINE, o->lr_quant, k, total, 0, o->min_lr_ratio);
    lr[QAT_PG_OTHER] = lr[QAT_PG_WEIGHT];
    double loss = 0;
    st = accum_step(B, l, &opt, lr, mb, next, &loss);
    if (st != QAT_OK) {
      qat_context(st, "step %lld", (long long)k + 1);
      goto done;
    }
    ep_sum += loss;
    if ((k + 1) % nb == 0) { /* end of an epoch */
      if (k + 1 == nb) stats->train_first = ep_sum / nb;
      stats->train_last = ep_sum / nb;
      ep_sum = 0;
    }
    char extra[96];
    snprintf(extra, sizeof extra, "mse %.4g  lr %.2e", loss, lr[QAT_PG_WEIGHT]);
    qat_progress_update(&pr, k + 1, extra);
  }
done:
  qat_progress_end(&pr, st == QAT_OK ? NULL : "failed");
  stats->steps = total;
  qat_optim_free(&opt);
  free(ps);
  return st;
}

static qat_status run_blocks(bap *B, const int32_t *calib, const int32_t *val) {
  const qat_block_ap_opts *o = B->o;
  int L = B->m->cfg.n_layers;
  QAT_TRY(qat_llama_plan_block(B->m, B->Bb, B->T, 1));
  QAT_TRY(embed_all(B, calib, val));
  /* resume: bring the cache to block first_block through the finished blocks, with the same
   * ops as the run that trained them (so bit-identical): first the full-precision stream
   * through their untouched masters, then o->restore brings them to their finished (frozen)
   * state, then the quantized stream through them (the two streams are independent) */
  for (int l = 0; l < o->first_block; l++) {
    QAT_TRY(forward_set(B, 1, l, B->set_fp, B->set_y));
    int t = B->set_fp;
    B->set_fp = B->set_y, B->set_y = t;
  }
  if (o->first_block > 0) QAT_TRY(o->restore(o->ctx, o->first_block));
  for (int l = 0; l < o->first_block; l++) {
    if (!B->m->layers[l].q.use_codes)
      return QAT_FAIL(QAT_EINVAL, "block_ap: resume: block %d is not frozen after restore", l);
    QAT_TRY(forward_set(B, 0, l, B->set_q, B->set_q));
  }
  for (int l = o->first_block; l < L; l++) {
    double t0 = qat_now();
    qat_block_ap_stats stats = {.block = l, .train_first = NAN, .train_last = NAN};
    QAT_TRY(forward_set(B, 1, l, B->set_fp, B->set_y)); /* targets */
    QAT_TRY(val_mse(B, l, &stats.mse_rtn));
    QAT_TRY(train_block(B, l, &stats));
    QAT_TRY(val_mse(B, l, &stats.mse));
    QAT_TRY(qat_llama_freeze_codes(B->m, l));
    QAT_TRY(forward_set(B, 0, l, B->set_q, B->set_q)); /* X_q <- q_block(X_q) */
    int t = B->set_fp; /* X_fp <- Y */
    B->set_fp = B->set_y, B->set_y = t;
    stats.seconds = qat_now() - t0;
    qat_log("block %d/%d: val mse %.5g (RTN) -> %.5g, train mse %.5g -> %.5g, %lld steps, %.1f s",
            l + 1, L, stats.mse_rtn, stats.mse, stats.train_first, stats.train_last,
            (long long)stats.steps, stats.seconds);
    if (o->on_block) QAT_TRY(o->on_block(o->ctx, &stats));
  }
  return QAT_OK;
}

qat_status qat_block_ap_run(qat_llama *m, const int32_t *calib, int64_t ncalib,
                            const int32_t *val, int64_t nval, const qat_block_ap_opts *o) {
  if (!m->quantized) return QAT_FAIL(QAT_EINVAL, "block_ap: the model is not quantized");
  if (ncalib < 1 || o->batch < 1 || o->epochs < 1 || o->T < 1 || nval < 0)
    return QAT_FAIL(QAT_EINVAL, "block_ap: samples %lld, batch %d, epochs %d, T %d",
                    (long long)ncalib, o->batch, o->epochs, o->T);
  if (o->first_block < 0 || o->first_block > m->cfg.n_layers)
    return QAT_FAIL(QAT_EINVAL, "block_ap: first block %d of %d", o->first_block,
                    m->cfg.n_layers);
  if (o->cache_dtype != QAT_F32 && o->cache_dtype != QAT_BF16)
    return QAT_FAIL(QAT_EINVAL, "block_ap: cache dtype %s (F32 or BF16)",
                    qat_dtype_name(o->cache_dtype));
  if (o->first_block > 0 && !o->restore)
    return QAT_FAIL(QAT_EINVAL, "block_ap: resuming at block %d needs opts.restore",
                    o->first_block);
  /* targets come from the masters: a frozen block's full-precision weights are gone */
  for (int l = 0; l < m->cfg.n_layers; l++)
    if (m->layers[l].q.use_codes)
      return QAT_FAIL(QAT_EINVAL,
                      "block_ap: block %d is already frozen (its full-precision masters are gone; "
                      "a resume restores finished blocks through opts.restore)",
                      l);
  bap B = {.m = m, .be = m->be, .o = o, .T = o->T, .C = m->cfg.dim, .Bb = o->batch,
           .ns = ncalib, .nv = nval, .ntot = ncalib + nval, .set_fp = 0, .set_y = 1, .set_q = 2,
           .dist = o->dist ? o->dist : qat_dist_single(),
           .A = o->grad_accum > 0 ? o->grad_accum : 1,
           .nv_total = o->dist ? o->val_total : nval};
  int64_t N = (int64_t)B.Bb * B.T;
  int bf = o->cache_dtype == QAT_BF16;
  size_t need = 4 * qat_arena_need(QAT_F32, N * B.C) + qat_arena_need(QAT_I32, N) +
                (bf ? qat_arena_need(QAT_BF16, N * B.C) : 0);
  qat_status st = qat_arena_init(&B.arena, B.be, "block_ap buffers", need);
  const int64_t sh[2] = {N, B.C};
  qat_tensor *bufs[4] = {&B.xin, &B.y, &B.xout, &B.d};
  const char *names[4] = {"block_ap x_in", "block_ap target", "block_ap x_out", "block_ap dx"};
  for (int i = 0; st == QAT_OK && i < 4; i++)
    st = qat_arena_tensor(&B.arena, bufs[i], QAT_F32, 2, sh, names[i]);
  if (st == QAT_OK) st = qat_arena_tensor(&B.arena, &B.tok, QAT_I32, 1, &N, "block_ap tokens");
  if (st == QAT_OK && bf)
    st = qat_arena_tensor(&B.arena, &B.stage, QAT_BF16, 2, sh, "block_ap cache staging");
  if (st == QAT_OK)
    st = qat_actcache_create(B.be, 3, B.ntot, (int64_t)B.T * B.C, o->cache_dtype, &o->budget,
                             &B.cache);
  int temb = m->train_embeddings; /* in block mode: the block's norm (and bias) gradients */
  if (o->train_norms) m->train_embeddings = 1;
  if (st == QAT_OK) /* the cache prints its placement plan */
    st = run_blocks(&B, calib, val);
  m->train_embeddings = temb;
  if (B.cache) qat_actcache_free(B.cache);
  qat_arena_free(&B.arena);
  qat_llama_unplan(m, 0, 1); /* the block set is Block-AP's only */
  return st;
}

/* ---- the trainer's phase */

typedef struct phase_ctx {
  qat_train_job *J;
  int64_t spb;    /* steps per block */
  const char *ck; /* checkpoint to resume from (first_block > 0) */
} phase_ctx;

/* opts.restore: the finished blocks from the checkpoint, after the fp stream passed them */
static qat_status restore_blocks(void *ctx, int first_block) {
  phase_ctx *P = ctx;
  qat_ckpt c;
  QAT_TRY(qat_ckpt_open(P->ck, &c));
  qat_status st = qat_eqat_ckpt_load_layers(P->J->m, 0, first_block, &c);
  qat_ckpt_close(&c);
  return st;
}

static qat_status save_block_ckpt(phase_ctx *P, int blocks_done) {
  qat_train_job *J = P->J;
  const qat_config *cfg = J->cfg;
  qat_ckpt_writer w;
  qat_ckpt_writer_init(&w);
  qat_eqat_bufs bufs = {0};
  qat_status st = qat_eqat_ckpt_add_layers(J->m, 0, blocks_done, 1, &w, &bufs);
  if (st == QAT_OK) st = qat_ckpt_set_str(&w, "phase", "block_ap");
  if (st == QAT_OK) st = qat_ckpt_set_int(&w, "blocks_done", blocks_done);
  if (st == QAT_OK) st = qat_ckpt_set_int(&w, "world", J->dist->world);
  if (st == QAT_OK) st = qat_ckpt_set_int(&w, "config_hash", (int64_t)qat_config_hash(cfg));
  if (st == QAT_OK) st = qat_ckpt_set_str(&w, "method", qat_cfg_method_name(cfg->method));
  char path[4096];
  if (st == QAT_OK)
    st = qat_ckpt_save(cfg->checkpoint.dir, P->spb * blocks_done, &w, cfg->checkpoint.keep, path,
                       sizeof path);
  if (st == QAT_OK) qat_log("checkpoint: %s", path);
  qat_eqat_bufs_free(&bufs);
  qat_ckpt_writer_free(&w);
  return st;
}

static void json_num(char *buf, size_t n, double v) {
  if (isfinite(v))
    snprintf(buf, n, "%.6g", v);
  else
    snprintf(buf, n, "null");
}

static qat_status on_block(void *ctx, const qat_block_ap_stats *s) {
  phase_ctx *P = ctx;
  qat_train_job *J = P->J;
  int L = J->m->cfg.n_layers;
  /* rank 0 writes (every rank holds the same block); a failed save stops every rank */
  qat_status sv = J->dist->rank == 0 ? save_block_ckpt(P, s->block + 1) : QAT_OK;
  sv = qat_dist_agree(J->dist, sv);
  if (sv != QAT_OK) J->agreed = 1;
  QAT_TRY(sv);
  double stop = qat_train_stop_requested() ? 1 : 0; /* any rank's request stops all */
  QAT_TRY(J->dist->allreduce_f64(J->dist, &stop, 1, QAT_RED_SUM));
  if (J->metrics) {
    char a[32], b[32], c[32], d[32];
    json_num(a, sizeof a, s->mse_rtn);
    json_num(b, sizeof b, s->mse);
    json_num(c, sizeof c, s->train_first);
    json_num(d, sizeof d, s->train_last);
    fprintf(J->metrics,
            "{\"block\": %d, \"val_mse_rtn\": %s, \"val_mse\": %s, \"train_mse_first_epoch\": %s, "
            "\"train_mse_last_epoch\": %s, \"steps\": %lld, \"seconds\": %.3f}\n",
            s->block, a, b, c, d, (long long)s->steps, s->seconds);
    fflush(J->metrics);
  }
  if (stop > 0 && s->block + 1 < L)
    return QAT_FAIL(QAT_EINTERRUPT, "interrupted after Block-AP block %d: checkpoint saved in %s",
                    s->block, J->cfg->checkpoint.dir);
  return QAT_OK;
}

qat_status qat_block_ap_phase(qat_train_job *J, int first_block, const char *ck) {
  if (first_block > 0 && !ck)
    return QAT_FAIL(QAT_EINVAL, "block_ap: resuming at block %d needs a checkpoint", first_block);
  const qat_config *cfg = J->cfg;
  int T = cfg->data.seq_len;
  int64_t ns = cfg->block_ap.samples;
  int64_t nv = qat_val_window_count(J->nval, T, cfg->block_ap.val_samples);
  if (cfg->block_ap.val_samples == 0) nv = 0;
  if (nv < cfg->block_ap.val_samples)
    qat_log("block_ap: %s holds %lld validation windows of %d tokens (block_ap.val_samples = %d)",
            cfg->data.val, (long long)nv, T, cfg->block_ap.val_samples);
  int32_t *calib = malloc((size_t)ns * T * 4 + 4), *val = malloc((size_t)(nv > 0 ? nv : 1) * T * 4);
  qat_status st = calib && val ? QAT_OK : QAT_FAIL(QAT_ENOMEM, "block_ap: out of memory");
  if (st == QAT_OK && cfg->block_ap.cache_dir) st = qat_mkdir_p(cfg->block_ap.cache_dir);
  /* the same windows on every run with this seed (and on a resumed one) */
  if (st == QAT_OK)
    st = qat_windows_gather((uint64_t)cfg->train.seed, J->train, J->ntrain, T, ns, calib);
  for (int64_t i = 0; st == QAT_OK && i < nv; i++)
    memcpy(val + i * T, J->val + qat_val_window_start(i, T), (size_t)T * 4);
  /* data parallelism: calibration micro-batch j and validation sample i belong to rank j mod W
   * and i mod W; the checks fail alike on every rank */
  int W = J->dist->world, R = J->dist->rank, Bb = cfg->block_ap.batch,
      A = cfg->block_ap.grad_accum;
  int64_t per = (int64_t)W * A * Bb, ns_r = 0, nv_r = 0;
  if (st == QAT_OK && per > Bb && ns % per != 0) {
    st = QAT_FAIL(QAT_EUSAGE,
                  "block_ap.samples = %lld is not a multiple of world %d x block_ap.grad_accum %d "
                  "x block_ap.batch %d = %lld",
                  (long long)ns, W, A, Bb, (long long)per);
    J->agreed = 1;
  }
  for (int64_t j = R; st == QAT_OK && j * Bb < ns; j += W, ns_r += Bb)
    memmove(calib + ns_r * T, calib + j * Bb * T, (size_t)Bb * T * 4); /* j >= ns_r / Bb */
  for (int64_t i = R; st == QAT_OK && i < nv; i += W, nv_r++)
    memmove(val + nv_r * T, val + i * T, (size_t)T * 4);
  if (W == 1) ns_r = ns; /* one process: the last micro-batch may be short */
  phase_ctx P = {.J = J, .ck = ck, .spb = qat_block_ap_steps_per_block(ns, (int)per,
                                                             cfg->block_ap.epochs)};
  qat_block_ap_opts o = {
      .T = T, .batch = cfg->block_ap.batch, .epochs = cfg->block_ap.epochs,
      .lr_w = cfg->block_ap.lr_w, .lr_quant = cfg->block_ap.lr_quant,
      .train_norms = cfg->block_ap.train_norms, .min_lr_ratio = cfg->train.min_lr_ratio,
      .budget = {.device_bytes = (size_t)cfg->block_ap.cache_device_mb << 20,
                 .host_bytes = (size_t)cfg->block_ap.cache_host_mb << 20,
                 .disk_dir = cfg->block_ap.cache_dir},
      .cache_dtype = cfg->block_ap.cache_dtype,
      .first_block = first_block, .restore = restore_blocks, .on_block = on_block, .ctx = &P,
      .grad_accum = A, .dist = J->dist, .val_total = nv};
  if (st == QAT_OK) {
    qat_log("block_ap: %lld samples x %d tokens (+%lld validation), batch %d, %d epochs: %lld "
            "steps per block, lr_w %g, lr_quant %g, %s activation cache",
            (long long)ns, T, (long long)nv, o.batch, o.epochs, (long long)P.spb, o.lr_w,
            o.lr_quant, qat_dtype_name(o.cache_dtype));
    if (first_block > 0)
      qat_log("block_ap: resuming at block %d (recomputing the cache through %d finished blocks)",
              first_block + 1, first_block);
    if (W > 1)
      qat_log("block_ap: %d ranks x %d x %d samples per step; %lld samples and %lld validation "
              "windows in this rank's activation cache", W, A, Bb, (long long)ns_r, (long long)nv_r);
    st = qat_block_ap_run(J->m, calib, ns_r, val, nv_r, &o);
  }
  free(calib);
  free(val);
  return st;
}
