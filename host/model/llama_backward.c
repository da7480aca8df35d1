/* LLaMA backward from m->dlogits through the last forward, in reverse op order, using the
 * activations the forward kept; with recompute (llama.h) each layer's forward is re-run into the
 * one shared activation set first. Gradients accumulate (+=), so several micro-batches sum into
 * one step:
 * - a quantized Linear accumulates dL/dw_hat into dw_hat; qat_llama_finish_backward turns the
 *   sum into dw, ds, dz with one fake-quant backward per step (linear in dL/dw_hat, so exact);
 *   a Linear frozen to integer codes (use_codes) turns it into ds only (dq_backward: dz and dw
 *   are left untouched, so they stay as zero_grad left them); a layer laid out in code mode
 *   (qat_llama_code_layer) has no dw_hat: each micro-batch's dL/dw_hat goes through one shared
 *   scratch into ds += dq_backward(...) at once (exact: dq_backward is linear in dL/dw_hat);
 * - an unquantized Linear accumulates straight into dw (nothing when frozen);
 * - embeddings, lm_head, norms and biases only when m->train_embeddings (the activation
 *   gradient flows through them either way); tied embeddings sum both paths into d_embed.
 * The block backward (EfficientQAT Block-AP) runs the same layer_bwd from a caller's dL/dx_out
 * with the block activation set and scratch (qat_llama_plan_block). */
#include "model/llama_priv.h"

#include <math.h>

/* linear_bwd of an E2E-QP packed Linear (qat_llama_pack_frozen; always code mode): dx =
 * qgemm trans 1 (dy @ dequant(W)), added to beta_dx * dx through scr.pkdx when beta_dx
 * != 0 (qgemm overwrites); ds += qgemm_ds(dy, x) through code_ds, as the U8 path adds
 * dq_backward's. */
static qat_status linear_bwd_packed(qat_llama *m, qat_linear *li, const qat_tensor *x,
                                    const qat_tensor *dy, qat_tensor *dx, float beta_dx) {
  qat_backend *be = m->be;
  struct qat_llama_priv *P = m->priv;
  int64_t N = x->shape[0];
  if (!li->ds.data || !P->code_ds.data || (dx && beta_dx != 0.0f && !P->scr.pkdx.data))
    return QAT_FAIL(QAT_EINTERNAL, "model backward: %s: packed codes, but the gradients or the "
                                   "activations were laid out before qat_llama_pack_frozen",
                    li->name);
  if (dx && beta_dx == 0.0f) QAT_TRY(QAT_OP(be, qgemm, 1, N, li->pk, dy, dx));
  if (dx && beta_dx != 0.0f) {
    if (beta_dx != 1.0f) QAT_TRY(QAT_OP(be, scale, beta_dx, dx));
    qat_tensor t = qat_llama_view(&P->scr.pkdx, dx->ndim, dx->shape);
    QAT_TRY(QAT_OP(be, qgemm, 1, N, li->pk, dy, &t));
    QAT_TRY(QAT_OP(be, axpy, 1.0f, &t, dx));
  }
  qat_tensor dst = V2(P->code_ds, li->ds.shape[0], li->ds.shape[1]);
  QAT_TRY(QAT_OP(be, qgemm_ds, N, li->pk, dy, x, &dst));
  QAT_TRY(QAT_OP(be, axpy, 1.0f, &dst, &li->ds));
  if (li->b.data && m->train_embeddings) QAT_TRY(QAT_OP(be, bias_bwd, dy, &li->db));
  return QAT_OK;
}

/* From dy[N, out] (input x[N, in] of the forward): dx (= beta_dx * dx) + dy @ w_hat,
 * dW += dy^T @ x, db += colsum(dy). dx NULL: no input gradient. */
static qat_status linear_bwd(qat_llama *m, qat_linear *li, const qat_tensor *x,
                             const qat_tensor *dy, qat_tensor *dx, float beta_dx, int codes) {
  qat_backend *be = m->be;
  struct qat_llama_priv *P = m->priv;
  int64_t N = x->shape[0];
  if (QAT_LLAMA_PKC(m, li)) {
    if (!codes)
      return QAT_FAIL(QAT_EINTERNAL, "model backward: %s: packed codes outside code mode",
                      li->name);
    return linear_bwd_packed(m, li, x, dy, dx, beta_dx);
  }
  if (dx) QAT_TRY(QAT_OP(be, gemm, 0, 0, N, li->in, li->out, 1.0f, dy, &li->w_hat, beta_dx, dx));
  if (codes) { /* code mode: G [out, in] in the scratch, ds [out, G] += dq_backward(G) */
    qat_tensor g = V2(P->code_g, li->out, li->in);
    qat_tensor dst = V2(P->code_ds, li->ds.shape[0], li->ds.shape[1]);
    QAT_TRY(QAT_OP(be, gemm, 1, 0, li->out, li->in, N, 1.0f, dy, x, 0.0f, &g));
    QAT_TRY(QAT_OP(be, dq_backward, &m->qspec, &li->codes, m->qspec.sym ? NULL : &li->z, &g, &dst));
    QAT_TRY(QAT_OP(be, axpy, 1.0f, &dst, &li->ds));
    if (li->b.data && m->train_embeddings) QAT_TRY(QAT_OP(be, bias_bwd, dy, &li->db));
    return QAT_OK;
  }
  qat_tensor *dw = m->quantized ? &li->dw_hat : li->frozen ? NULL : &li->dw;
  if (dw) QAT_TRY(QAT_OP(be, gemm, 1, 0, li->out, li->in, N, 1.0f, dy, x, 1.0f, dw));
  if (li->b.data && m->train_embeddings) QAT_TRY(QAT_OP(be, bias_bwd, dy, &li->db));
  return QAT_OK;
}

/* dx as the Linears' input dtype: dx itself in F32 mode, else a converted copy. */
static qat_status dx_act(qat_llama *m, const llama_scratch *S, const qat_tensor *dx,
                         qat_tensor *out) {
  if (m->act_dtype == QAT_F32) {
    *out = *dx;
    return QAT_OK;
  }
  *out = qat_llama_view(&S->dxa, dx->ndim, dx->shape);
  return QAT_OP(m->be, convert, out, dx);
}

/* One decoder layer backward, shared by the whole-model and the block backward: S->dx [N, C] F32
 * holds dL/dx_out on entry and dL/dx_in on return; A holds the layer's forward activations. */
static qat_status layer_bwd(qat_llama *m, qat_llama_layer *ly, const llama_act *A,
                            llama_scratch *S, int B, int T) {
  const qat_llama_config *c = &m->cfg;
  qat_backend *be = m->be;
  const int cm = qat_llama_code_layer(m, (int)(ly - m->layers));
  int64_t N = (int64_t)B * T, C = c->dim, F = c->hidden;
  int64_t Hq = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim;
  int temb = m->train_embeddings;
  const float scale = 1.0f / sqrtf((float)D);
  qat_tensor x_in = V2(A->x_in, N, C), rstd1 = V1(A->rstd1, N), h1 = V2(A->h1, N, C);
  qat_tensor q4 = V4(A->q, B, T, Hq, D), k4 = V4(A->k, B, T, Hkv, D);
  qat_tensor v4 = V4(A->v, B, T, Hkv, D), att4 = V4(A->att, B, T, Hq, D);
  qat_tensor att = V2(A->att, N, Hq * D), lse = V3(A->lse, B, Hq, T);
  qat_tensor x_mid = V2(A->x_mid, N, C), rstd2 = V1(A->rstd2, N), h2 = V2(A->h2, N, C);
  qat_tensor gate = V2(A->gate, N, F), up = V2(A->up, N, F), act = V2(A->act, N, F);
  qat_tensor dx = V2(S->dx, N, C), dh = V2(S->dh, N, C);
  qat_tensor dq = V2(S->dq, N, Hq * D), datt = V2(S->datt, N, Hq * D);
  qat_tensor dk = V2(S->dk, N, Hkv * D), dv = V2(S->dv, N, Hkv * D);
  qat_tensor dq4 = V4(S->dq, B, T, Hq, D), datt4 = V4(S->datt, B, T, Hq, D);
  qat_tensor dk4 = V4(S->dk, B, T, Hkv, D), dv4 = V4(S->dv, B, T, Hkv, D);
  qat_tensor dgate = V2(S->dgate, N, F), dup = V2(S->dup, N, F), dact = V2(S->dact, N, F);
  qat_tensor dxa;

  /* MLP block: x_out = x_mid + down(silu(gate(h2)) * up(h2)), dx = dL/dx_out */
  QAT_TRY(dx_act(m, S, &dx, &dxa));
  QAT_TRY(linear_bwd(m, &ly->down, &act, &dxa, &dact, 0.0f, cm));
  QAT_TRY(QAT_OP(be, swiglu_bwd, &dact, &gate, &up, &dgate, &dup));
  QAT_TRY(linear_bwd(m, &ly->gate, &h2, &dgate, &dh, 0.0f, cm));
  QAT_TRY(linear_bwd(m, &ly->up, &h2, &dup, &dh, 1.0f, cm));
  QAT_TRY(QAT_OP(be, rmsnorm_bwd, &dh, &x_mid, &ly->ffn_norm, &rstd2, &dx,
                 temb ? &ly->d_ffn_norm : &S->dnorm_scratch));

  /* attention block: x_mid = x_in + o(attention(rope(q(h1)), rope(k(h1)), v(h1))) */
  QAT_TRY(dx_act(m, S, &dx, &dxa));
  QAT_TRY(linear_bwd(m, &ly->o, &att, &dxa, &datt, 0.0f, cm));
  QAT_TRY(QAT_OP(be, attention_bwd, &datt4, &q4, &k4, &v4, &att4, &lse, scale, &dq4, &dk4, &dv4));
  QAT_TRY(QAT_OP(be, rope, &dq4, &m->inv_freq, 0, 1)); /* rotation^T = rotation by -angle */
  QAT_TRY(QAT_OP(be, rope, &dk4, &m->inv_freq, 0, 1));
  QAT_TRY(linear_bwd(m, &ly->q, &h1, &dq, &dh, 0.0f, cm));
  QAT_TRY(linear_bwd(m, &ly->k, &h1, &dk, &dh, 1.0f, cm));
  QAT_TRY(linear_bwd(m, &ly->v, &h1, &dv, &dh, 1.0f, cm));
  return QAT_OP(be, rmsnorm_bwd, &dh, &x_in, &ly->attn_norm, &rstd1, &dx,
                temb ? &ly->d_attn_norm : &S->dnorm_scratch);
}

static qat_status check_grads(qat_llama *m, const char *what) {
  struct qat_llama_priv *P = m->priv;
  if (!P->grads_built || P->grads_train_emb != m->train_embeddings ||
      P->grads_quant != m->quantized)
    return QAT_FAIL(QAT_EINVAL, "%s: train_embeddings or quantization changed since the "
                                "gradients were laid out; call qat_llama_zero_grad first", what);
  return QAT_OK;
}

qat_status qat_llama_backward(qat_llama *m) {
  const qat_llama_config *c = &m->cfg;
  struct qat_llama_priv *P = m->priv;
  qat_backend *be = m->be;
  if (!P->fwd_B || !P->fwd_training)
    return QAT_FAIL(QAT_EINVAL, "model backward: needs a forward planned with training = 1");
  QAT_TRY(check_grads(m, "model backward"));
  int B = P->fwd_B, T = P->fwd_T;
  int64_t N = (int64_t)B * T, C = c->dim, V = c->vocab;
  int temb = m->train_embeddings;

  /* head: logits = h_fin @ lm_head^T */
  qat_tensor h_fin = V2(P->h_fin, N, C), dh_fin = V2(P->dh_fin, N, C);
  qat_tensor x_fin = V2(P->x_fin, N, C), rstd = V1(P->rstd_fin, N), dx = V2(P->scr.dx, N, C);
  if (temb)
    QAT_TRY(QAT_OP(be, gemm, 1, 0, V, C, N, 1.0f, &m->dlogits, &h_fin, 1.0f, &m->d_lm_head));
  QAT_TRY(QAT_OP(be, gemm, 0, 0, N, C, V, 1.0f, &m->dlogits, &m->lm_head, 0.0f, &dh_fin));
  QAT_TRY(QAT_OP(be, memset0, dx.data, qat_nbytes(&dx)));
  QAT_TRY(QAT_OP(be, rmsnorm_bwd, &dh_fin, &x_fin, &m->final_norm, &rstd, &dx,
                 temb ? &m->d_final_norm : &P->scr.dnorm_scratch));

  for (int l = c->n_layers - 1; l >= 0; l--) {
    /* recompute: the shared set still holds the last layer's forward; refill it for the others
     * (x_out into dh, which layer_bwd overwrites before reading) */
    if (P->recompute && l < c->n_layers - 1)
      QAT_TRY(qat_llama_layer_fwd(m, &m->layers[l], &P->act[l], &P->scr, &P->scr.dh, B, T));
    QAT_TRY(layer_bwd(m, &m->layers[l], &P->act[l], &P->scr, B, T));
    if (m->bwd_hook) QAT_TRY(m->bwd_hook(m->bwd_hook_ctx, l)); /* layer l's gradients are final */
  }

  if (temb) {
    qat_tensor tok = V1(P->tokens, N);
    QAT_TRY(QAT_OP(be, embedding_bwd, &tok, &dx, &m->d_embed));
  }
  if (m->bwd_hook) QAT_TRY(m->bwd_hook(m->bwd_hook_ctx, -1));
  return QAT_OK;
}

qat_status qat_llama_block_backward(qat_llama *m, int l, const qat_tensor *dx_out,
                                    qat_tensor *dx_in) {
  struct qat_llama_priv *P = m->priv;
  const char *what = "model block_backward";
  if (P->bfwd_layer < 0 || !P->bfwd_training)
    return QAT_FAIL(QAT_EINVAL, "%s: needs a block forward planned with training = 1", what);
  if (l != P->bfwd_layer)
    return QAT_FAIL(QAT_EINVAL, "%s: layer %d, but the last block forward was layer %d", what, l,
                    P->bfwd_layer);
  QAT_TRY(check_grads(m, what));
  if (P->grads_one && P->grads_bound != l)
    return QAT_FAIL(QAT_EINVAL, "%s: the one-layer gradients are bound to layer %d since the "
                                "forward of layer %d", what, P->grads_bound, l);
  int B = P->bfwd_B, T = P->bfwd_T;
  int64_t N = (int64_t)B * T;
  size_t bytes = (size_t)N * m->cfg.dim * sizeof(float);
  QAT_TRY(qat_llama_check_stream(m, what, "dx_out", dx_out, N));
  if (dx_in) QAT_TRY(qat_llama_check_stream(m, what, "dx_in", dx_in, N));
  QAT_TRY(QAT_OP(m->be, copy, P->bscr.dx.data, dx_out->data, bytes));
  QAT_TRY(layer_bwd(m, &m->layers[l], &P->bact, &P->bscr, B, T));
  if (dx_in) QAT_TRY(QAT_OP(m->be, copy, dx_in->data, P->bscr.dx.data, bytes));
  return QAT_OK;
}

/* ---- per step: dL/dw_hat -> dw, ds, dz ------------------------------------------------------ */

/* Layer l's Linears: fake-quant backward (dw unless frozen, ds, dz, all overwritten), or for
 * frozen codes dq_backward into ds only (dz, dw untouched: E2E-QP trains s alone). */
static qat_status finish_layer(qat_llama *m, int l) {
  qat_linear *lins[7];
  qat_llama_linears(&m->layers[l], lins);
  int sym = m->qspec.sym;
  if (qat_llama_code_layer(m, l)) return QAT_OK; /* ds accumulated in the backward */
  for (int i = 0; i < 7; i++) {
    qat_linear *li = lins[i];
    if (li->use_codes)
      QAT_TRY(QAT_OP(m->be, dq_backward, &m->qspec, &li->codes, sym ? NULL : &li->z, &li->dw_hat,
                     &li->ds));
    else
      QAT_TRY(QAT_OP(m->be, fq_backward, &m->qspec, &li->w, &li->s, sym ? NULL : &li->z,
                     &li->dw_hat, li->frozen ? NULL : &li->dw, &li->ds, sym ? NULL : &li->dz));
  }
  return QAT_OK;
}

static qat_status check_finish(qat_llama *m, const char *what) {
  struct qat_llama_priv *P = m->priv;
  if (!P->grads_built || !P->grads_quant)
    return QAT_FAIL(QAT_EINVAL, "%s: no quantizer gradients laid out (plan with training = 1 "
                                "and call qat_llama_zero_grad)", what);
  return QAT_OK;
}

qat_status qat_llama_finish_backward(qat_llama *m) {
  if (!m->quantized) return QAT_OK;
  QAT_TRY(check_finish(m, "model finish_backward"));
  struct qat_llama_priv *P = m->priv;
  if (P->grads_one) /* block passes only: the one layer that has gradients */
    return P->grads_bound >= 0 ? finish_layer(m, P->grads_bound) : QAT_OK;
  for (int l = 0; l < m->cfg.n_layers; l++) QAT_TRY(finish_layer(m, l));
  return QAT_OK;
}

qat_status qat_llama_block_finish_backward(qat_llama *m, int l) {
  if (l < 0 || l >= m->cfg.n_layers)
    return QAT_FAIL(QAT_EINVAL, "model block_finish_backward: layer %d is outside [0, %d)", l,
                    m->cfg.n_layers);
  if (!m->quantized) return QAT_OK;
  QAT_TRY(check_finish(m, "model block_finish_backward"));
  struct qat_llama_priv *P = m->priv;
  if (P->grads_one && P->grads_bound != l)
    return QAT_FAIL(QAT_EINVAL, "model block_finish_backward: layer %d, but the one-layer "
                                "gradients are bound to layer %d", l, P->grads_bound);
  return finish_layer(m, l);
}
