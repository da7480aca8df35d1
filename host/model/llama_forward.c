/* LLaMA forward (and the cross-entropy head) as a sequence of backend ops. Reads like the paper:
 *   x = embed[tokens]
 *   per layer: h = rmsnorm(x); q, k, v = h Wq^T (+b), ...; rope(q), rope(k);
 *              x = x + attention(q, k, v) Wo^T; h2 = rmsnorm(x); x = x + (silu(h2 Wg^T) * h2 Wu^T) Wd^T
 *   logits = rmsnorm(x) lm_head^T
 * Every Linear multiplies by w_hat, refreshed from the masters at the start of each forward
 * (fake-quant when quantized, (codes - z) * s for Linears frozen to integer codes, a cast when
 * the compute dtype is not F32, else w itself), or, in a packed model (llama_packed.h), runs
 * the backend's qgemm on its packed codes (no w_hat exists).
 * When planned for training each layer keeps its activations (llama_priv.h) for the backward;
 * otherwise one set is reused by every layer. With m->recompute the training plan keeps only
 * each layer's input and one shared set, which the backward refills per layer with the same
 * qat_llama_layer_fwd (llama_backward.c).
 * The block forward (EfficientQAT Block-AP) runs the same layer_fwd on a caller's residual
 * stream with its own one-layer activation set (qat_llama_plan_block, llama_block.c). */
#include "model/llama_priv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* y[N, out] = beta * y + x[N, in] @ w_hat^T (+ b); packed Linears only with beta = 0 (qgemm
 * overwrites y: the residual adds go through linear_res) */
static qat_status linear_fwd(qat_llama *m, qat_linear *li, const qat_tensor *x, qat_tensor *y,
                             float beta) {
  int64_t N = x->shape[0];
  if (li->pk && beta != 0.0f)
    return QAT_FAIL(QAT_EINTERNAL, "model forward: %s: packed Linear with beta %g", li->name,
                    (double)beta);
  if (li->pk)
    QAT_TRY(QAT_OP(m->be, qgemm, 0, N, li->pk, x, y));
  else
    QAT_TRY(QAT_OP(m->be, gemm, 0, 1, N, li->out, li->in, 1.0f, x, &li->w_hat, beta, y));
  if (li->b.data) QAT_TRY(QAT_OP(m->be, bias_fwd, y, &li->b));
  return QAT_OK;
}

/* y[N, out] = res + x[N, in] @ w_hat^T (+ b), y and res F32 [N, out], distinct buffers. Dense:
 * res copied into y and added in the GEMM (beta = 1); packed: qgemm writes y, then res is added
 * (the same sum, rounded once more in another order). */
static qat_status linear_res(qat_llama *m, qat_linear *li, const qat_tensor *x,
                             const qat_tensor *res, qat_tensor *y) {
  if (!li->pk) {
    QAT_TRY(QAT_OP(m->be, copy, y->data, res->data, qat_nbytes(res)));
    return linear_fwd(m, li, x, y, 1.0f);
  }
  QAT_TRY(QAT_OP(m->be, qgemm, 0, x->shape[0], li->pk, x, y));
  QAT_TRY(QAT_OP(m->be, axpy, 1.0f, res, y));
  if (li->b.data) QAT_TRY(QAT_OP(m->be, bias_fwd, y, &li->b));
  return QAT_OK;
}

/* out[N, C] (act dtype) = rmsnorm(x[N, C] F32); through the F32 scratch when act is BF16. */
static qat_status norm_fwd(qat_llama *m, const llama_scratch *S, const qat_tensor *x,
                           const qat_tensor *w, qat_tensor *out, qat_tensor *rstd) {
  if (out->dtype == QAT_F32) return QAT_OP(m->be, rmsnorm_fwd, x, w, m->cfg.norm_eps, out, rstd);
  qat_tensor hn = qat_llama_view(&S->hn, x->ndim, x->shape);
  QAT_TRY(QAT_OP(m->be, rmsnorm_fwd, x, w, m->cfg.norm_eps, &hn, rstd));
  return QAT_OP(m->be, convert, out, &hn);
}

/* w_hat of layer l: dequantized frozen codes (E2E-QP), fake-quant of the master, or a cast. */
qat_status qat_llama_refresh_layer(qat_llama *m, int l) {
  qat_linear *lins[7];
  qat_llama_linears(&m->layers[l], lins);
  const qat_tensor *z = NULL;
  for (int i = 0; i < 7; i++) {
    qat_linear *li = lins[i];
    if (QAT_LLAMA_PKC(m, li)) { /* E2E-QP packed codes: qgemm on them with the current s */
      QAT_TRY(qat_llama_pk_sync(m, li));
      continue;
    }
    if (li->pk) continue; /* packed: qgemm decodes the codes, nothing to refresh */
    if (m->quantized) z = m->qspec.sym ? NULL : &li->z;
    if (m->quantized && li->use_codes)
      QAT_TRY(QAT_OP(m->be, dq_forward, &m->qspec, &li->codes, &li->s, z, &li->w_hat));
    else if (m->quantized)
      QAT_TRY(QAT_OP(m->be, fq_forward, &m->qspec, &li->w, &li->s, z, &li->w_hat));
    else if (li->w_hat.data != li->w.data)
      QAT_TRY(QAT_OP(m->be, convert, &li->w_hat, &li->w));
  }
  return QAT_OK;
}

/* One decoder layer, shared by the whole-model and the block forward:
 *   x_mid = x_in + o(attention(rope(q(h1)), rope(k(h1)), v(h1))),  h1 = attn_norm(x_in)
 *   x_out = x_mid + down(silu(gate(h2)) * up(h2)),                  h2 = ffn_norm(x_mid)
 * x_in is A->x_in [N, C] F32 (filled by the caller); x_out [N, C] F32 may be A->x_in itself (it
 * is last read when x_mid is formed). A keeps everything the backward needs. */
qat_status qat_llama_layer_fwd(qat_llama *m, qat_llama_layer *ly, llama_act *A,
                               const llama_scratch *S, qat_tensor *x_out_buf, int B, int T) {
  const qat_llama_config *c = &m->cfg;
  qat_backend *be = m->be;
  int64_t N = (int64_t)B * T, C = c->dim, F = c->hidden;
  int64_t Hq = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim;
  const float scale = 1.0f / sqrtf((float)D);
  qat_tensor x_in = V2(A->x_in, N, C), rstd1 = V1(A->rstd1, N), h1 = V2(A->h1, N, C);
  qat_tensor q = V2(A->q, N, Hq * D), k = V2(A->k, N, Hkv * D), v = V2(A->v, N, Hkv * D);
  qat_tensor q4 = V4(A->q, B, T, Hq, D), k4 = V4(A->k, B, T, Hkv, D);
  qat_tensor v4 = V4(A->v, B, T, Hkv, D), att4 = V4(A->att, B, T, Hq, D);
  qat_tensor att = V2(A->att, N, Hq * D), lse = V3(A->lse, B, Hq, T);
  qat_tensor x_mid = V2(A->x_mid, N, C), rstd2 = V1(A->rstd2, N), h2 = V2(A->h2, N, C);
  qat_tensor gate = V2(A->gate, N, F), up = V2(A->up, N, F), act = V2(A->act, N, F);
  qat_tensor x_out = V2(*x_out_buf, N, C);

  /* attention block */
  QAT_TRY(norm_fwd(m, S, &x_in, &ly->attn_norm, &h1, &rstd1));
  QAT_TRY(linear_fwd(m, &ly->q, &h1, &q, 0.0f));
  QAT_TRY(linear_fwd(m, &ly->k, &h1, &k, 0.0f));
  QAT_TRY(linear_fwd(m, &ly->v, &h1, &v, 0.0f));
  QAT_TRY(QAT_OP(be, rope, &q4, &m->inv_freq, 0, 0));
  QAT_TRY(QAT_OP(be, rope, &k4, &m->inv_freq, 0, 0));
  QAT_TRY(QAT_OP(be, attention_fwd, &q4, &k4, &v4, scale, &att4, &lse));
  QAT_TRY(linear_res(m, &ly->o, &att, &x_in, &x_mid)); /* x_mid = x_in + o(att) */

  /* MLP block */
  QAT_TRY(norm_fwd(m, S, &x_mid, &ly->ffn_norm, &h2, &rstd2));
  QAT_TRY(linear_fwd(m, &ly->gate, &h2, &gate, 0.0f));
  QAT_TRY(linear_fwd(m, &ly->up, &h2, &up, 0.0f));
  QAT_TRY(QAT_OP(be, swiglu_fwd, &gate, &up, &act));
  return linear_res(m, &ly->down, &act, &x_mid, &x_out); /* x_out = x_mid + down(act) */
}

qat_status qat_llama_forward(qat_llama *m, const int32_t *tokens, int B, int T) {
  const qat_llama_config *c = &m->cfg;
  struct qat_llama_priv *P = m->priv;
  qat_backend *be = m->be;
  if (m->B <= 0 || !P->act)
    return QAT_FAIL(QAT_EINVAL, "model forward: call qat_llama_plan first");
  if (B <= 0 || T <= 0 || B > m->B || T > m->T)
    return QAT_FAIL(QAT_EINVAL, "model forward: batch %d x %d exceeds the planned %d x %d", B, T,
                    m->B, m->T);
  if (m->act_dtype != P->plan_dtype)
    return QAT_FAIL(QAT_EINVAL, "model forward: act_dtype changed to %s after qat_llama_plan (%s)",
                    qat_dtype_name(m->act_dtype), qat_dtype_name(P->plan_dtype));
  if (P->training && (m->recompute != 0) != P->recompute)
    return QAT_FAIL(QAT_EINVAL, "model forward: recompute changed to %d after qat_llama_plan (%d)",
                    m->recompute, P->recompute);
  int64_t N = (int64_t)B * T, C = c->dim, V = c->vocab;
  for (int64_t i = 0; i < N; i++)
    if (tokens[i] < 0 || tokens[i] >= c->vocab)
      return QAT_FAIL(QAT_EINVAL, "model forward: token %d at position %lld is outside [0, %d)",
                      tokens[i], (long long)i, c->vocab);
  P->fwd_B = P->fwd_T = P->fwd_training = 0;
  QAT_TRY(qat_llama_sync_wcomp(m));
  for (int l = 0; l < c->n_layers; l++) QAT_TRY(qat_llama_refresh_layer(m, l));

  qat_tensor tok = V1(P->tokens, N);
  qat_tensor htok = qat_view1((void *)tokens, QAT_I32, QAT_DEV_CPU, N);
  QAT_TRY(qat_tensor_upload(be, &tok, &htok));
  qat_tensor x0 = V2(P->act[0].x_in, N, C);
  QAT_TRY(QAT_OP(be, embedding_fwd, &tok, &m->embed, &x0));

  for (int l = 0; l < c->n_layers; l++) {
    llama_act *A = &P->act[P->nact > 1 ? l : 0];
    /* without training one set serves every layer: its x_in receives the layer's output */
    qat_tensor *next = l + 1 < c->n_layers ? &P->act[P->nact > 1 ? l + 1 : 0].x_in : &P->x_fin;
    QAT_TRY(qat_llama_layer_fwd(m, &m->layers[l], A, &P->scr, next, B, T));
  }

  qat_tensor x_fin = V2(P->x_fin, N, C), rstd = V1(P->rstd_fin, N), h_fin = V2(P->h_fin, N, C);
  m->logits = V2(P->logits_buf, N, V);
  QAT_TRY(QAT_OP(be, rmsnorm_fwd, &x_fin, &m->final_norm, c->norm_eps, &h_fin, &rstd));
  QAT_TRY(QAT_OP(be, gemm, 0, 1, N, V, C, 1.0f, &h_fin, &m->lm_head, 0.0f, &m->logits));
  if (P->training)
    m->dlogits = V2(P->dlogits_buf, N, V);
  else
    memset(&m->dlogits, 0, sizeof m->dlogits);
  P->fwd_B = B;
  P->fwd_T = T;
  P->fwd_training = P->training;
  return QAT_OK;
}

/* ---- block forward (EfficientQAT Block-AP): one layer on a residual stream ------------------ */

qat_status qat_llama_check_stream(const qat_llama *m, const char *what, const char *role,
                                  const qat_tensor *x, int64_t N) {
  if (!x || !x->data) return QAT_FAIL(QAT_EINVAL, "%s: tensor %s is missing", what, role);
  if (x->dtype != QAT_F32 || x->device != m->be->device)
    return QAT_FAIL(QAT_EINVAL, "%s: tensor %s must be F32 on the %s device (got %s)", what, role,
                    m->be->name, qat_dtype_name(x->dtype));
  if (qat_numel(x) != N * m->cfg.dim) {
    char buf[64];
    return QAT_FAIL(QAT_EINVAL, "%s: tensor %s has shape %s, expected [%lld, %d]", what, role,
                    qat_shape_str(x, buf, sizeof buf), (long long)N, m->cfg.dim);
  }
  return QAT_OK;
}

/* Arguments of a block pass: a block plan, layer l, B x T within it, x_in / x_out streams. */
qat_status qat_llama_check_block_call(const qat_llama *m, const char *what, int l,
                                      const qat_tensor *x_in, const qat_tensor *x_out, int B,
                                      int T) {
  const struct qat_llama_priv *P = m->priv;
  if (P->bB <= 0) return QAT_FAIL(QAT_EINVAL, "%s: call qat_llama_plan_block first", what);
  if (l < 0 || l >= m->cfg.n_layers)
    return QAT_FAIL(QAT_EINVAL, "%s: layer %d is outside [0, %d)", what, l, m->cfg.n_layers);
  if (B <= 0 || T <= 0 || B > P->bB || T > P->bT)
    return QAT_FAIL(QAT_EINVAL, "%s: batch %d x %d exceeds the planned %d x %d", what, B, T, P->bB,
                    P->bT);
  if (m->act_dtype != P->bplan_dtype)
    return QAT_FAIL(QAT_EINVAL, "%s: act_dtype changed to %s after qat_llama_plan_block (%s)", what,
                    qat_dtype_name(m->act_dtype), qat_dtype_name(P->bplan_dtype));
  int64_t N = (int64_t)B * T;
  QAT_TRY(qat_llama_check_stream(m, what, "x_in", x_in, N));
  return qat_llama_check_stream(m, what, "x_out", x_out, N);
}

qat_status qat_llama_block_forward(qat_llama *m, int l, const qat_tensor *x_in, qat_tensor *x_out,
                                   int B, int T) {
  struct qat_llama_priv *P = m->priv;
  const char *what = "model block_forward";
  QAT_TRY(qat_llama_check_block_call(m, what, l, x_in, x_out, B, T));
  P->bfwd_layer = -1;
  QAT_TRY(qat_llama_sync_wcomp(m));
  if (P->btraining) QAT_TRY(qat_llama_bind_grads(m, l, what)); /* one-layer gradients */
  QAT_TRY(qat_llama_refresh_layer(m, l));
  /* the layer reads its input from the activation set (the backward needs it there too); the
   * copy also lets x_out alias x_in */
  QAT_TRY(QAT_OP(m->be, copy, P->bact.x_in.data, x_in->data, qat_nbytes(x_in)));
  QAT_TRY(qat_llama_layer_fwd(m, &m->layers[l], &P->bact, &P->bscr, x_out, B, T));
  P->bfwd_layer = l;
  P->bfwd_B = B;
  P->bfwd_T = T;
  P->bfwd_training = P->btraining;
  return QAT_OK;
}

qat_status qat_llama_xent(qat_llama *m, const int32_t *targets, float scale, double *loss,
                          int64_t *count) {
  struct qat_llama_priv *P = m->priv;
  if (!P->fwd_B) return QAT_FAIL(QAT_EINVAL, "model xent: no forward to take the loss of");
  int64_t N = (int64_t)P->fwd_B * P->fwd_T, cnt = 0;
  for (int64_t i = 0; i < N; i++) {
    if (targets[i] == -1) continue;
    if (targets[i] < 0 || targets[i] >= m->cfg.vocab)
      return QAT_FAIL(QAT_EINVAL, "model xent: target %d at position %lld is outside [0, %d)",
                      targets[i], (long long)i, m->cfg.vocab);
    cnt++;
  }
  float *h = malloc((size_t)N * sizeof *h);
  if (!h) return QAT_FAIL(QAT_ENOMEM, "model xent: out of host memory");
  qat_tensor tg = V1(P->targets, N), losses = V1(P->losses, N);
  qat_tensor htg = qat_view1((void *)targets, QAT_I32, QAT_DEV_CPU, N);
  qat_tensor hl = qat_view1(h, QAT_F32, QAT_DEV_CPU, N);
  qat_status st;
  QAT_CHECK(st, qat_tensor_upload(m->be, &tg, &htg), done);
  QAT_CHECK(st, QAT_OP(m->be, xent, &m->logits, &tg, &losses, P->training ? &m->dlogits : NULL,
                       scale),
            done);
  QAT_CHECK(st, qat_tensor_download(m->be, &hl, &losses), done);
  double sum = 0;
  for (int64_t i = 0; i < N; i++) sum += h[i];
  if (loss) *loss = sum * scale;
  if (count) *count = cnt;
done:
  free(h);
  return st;
}
