/* LLaMA forward (and the cross-entropy head) as a sequence of backend ops. Reads like the paper:
 *   x = embed[tokens]
 *   per layer: h = rmsnorm(x); q, k, v = h Wq^T (+b), ...; rope(q), rope(k);
 *              x = x + attention(q, k, v) Wo^T; h2 = rmsnorm(x); x = x + (silu(h2 Wg^T) * h2 Wu^T) Wd^T
 *   logits = rmsnorm(x) lm_head^T
 * Every Linear multiplies by w_hat, refreshed from the masters at the start of each forward
 * (fake-quant when quantized, a cast when the compute dtype is not F32, else w itself).
 * When planned for training each layer keeps its activations (llama_priv.h) for the backward;
 * otherwise one set is reused by every layer. Nothing is recomputed in the backward. */
#include "model/llama_priv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* y[N, out] = beta * y + x[N, in] @ w_hat^T (+ b) */
static qat_status linear_fwd(qat_llama *m, qat_linear *li, const qat_tensor *x, qat_tensor *y,
                             float beta) {
  int64_t N = x->shape[0];
  QAT_TRY(QAT_OP(m->be, gemm, 0, 1, N, li->out, li->in, 1.0f, x, &li->w_hat, beta, y));
  if (li->b.data) QAT_TRY(QAT_OP(m->be, bias_fwd, y, &li->b));
  return QAT_OK;
}

/* out[N, C] (act dtype) = rmsnorm(x[N, C] F32); through the F32 scratch when act is BF16. */
static qat_status norm_fwd(qat_llama *m, const qat_tensor *x, const qat_tensor *w, qat_tensor *out,
                           qat_tensor *rstd) {
  if (out->dtype == QAT_F32) return QAT_OP(m->be, rmsnorm_fwd, x, w, m->cfg.norm_eps, out, rstd);
  qat_tensor hn = qat_llama_view(&m->priv->hn, x->ndim, x->shape);
  QAT_TRY(QAT_OP(m->be, rmsnorm_fwd, x, w, m->cfg.norm_eps, &hn, rstd));
  return QAT_OP(m->be, convert, out, &hn);
}

static qat_status refresh_w_hat(qat_llama *m) {
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      qat_linear *li = lins[i];
      if (m->quantized)
        QAT_TRY(QAT_OP(m->be, fq_forward, &m->qspec, &li->w, &li->s,
                       m->qspec.sym ? NULL : &li->z, &li->w_hat));
      else if (li->w_hat.data != li->w.data)
        QAT_TRY(QAT_OP(m->be, convert, &li->w_hat, &li->w));
    }
  }
  return QAT_OK;
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
  int64_t N = (int64_t)B * T, C = c->dim, F = c->hidden, V = c->vocab;
  int64_t Hq = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim;
  for (int64_t i = 0; i < N; i++)
    if (tokens[i] < 0 || tokens[i] >= c->vocab)
      return QAT_FAIL(QAT_EINVAL, "model forward: token %d at position %lld is outside [0, %d)",
                      tokens[i], (long long)i, c->vocab);
  P->fwd_B = P->fwd_T = P->fwd_training = 0;
  QAT_TRY(qat_llama_sync_wcomp(m));
  QAT_TRY(refresh_w_hat(m));

  qat_tensor tok = V1(P->tokens, N);
  qat_tensor htok = qat_view1((void *)tokens, QAT_I32, QAT_DEV_CPU, N);
  QAT_TRY(qat_tensor_upload(be, &tok, &htok));
  qat_tensor x0 = V2(P->act[0].x_in, N, C);
  QAT_TRY(QAT_OP(be, embedding_fwd, &tok, &m->embed, &x0));

  const float scale = 1.0f / sqrtf((float)D);
  const size_t res_bytes = (size_t)(N * C) * sizeof(float);
  for (int l = 0; l < c->n_layers; l++) {
    qat_llama_layer *ly = &m->layers[l];
    llama_act *A = &P->act[P->nact > 1 ? l : 0];
    qat_tensor *next = l + 1 < c->n_layers ? &P->act[P->nact > 1 ? l + 1 : 0].x_in : &P->x_fin;
    qat_tensor x_in = V2(A->x_in, N, C), rstd1 = V1(A->rstd1, N), h1 = V2(A->h1, N, C);
    qat_tensor q = V2(A->q, N, Hq * D), k = V2(A->k, N, Hkv * D), v = V2(A->v, N, Hkv * D);
    qat_tensor q4 = V4(A->q, B, T, Hq, D), k4 = V4(A->k, B, T, Hkv, D);
    qat_tensor v4 = V4(A->v, B, T, Hkv, D), att4 = V4(A->att, B, T, Hq, D);
    qat_tensor att = V2(A->att, N, Hq * D), lse = V3(A->lse, B, Hq, T);
    qat_tensor x_mid = V2(A->x_mid, N, C), rstd2 = V1(A->rstd2, N), h2 = V2(A->h2, N, C);
    qat_tensor gate = V2(A->gate, N, F), up = V2(A->up, N, F), act = V2(A->act, N, F);
    qat_tensor x_out = V2(*next, N, C);

    /* attention block */
    QAT_TRY(norm_fwd(m, &x_in, &ly->attn_norm, &h1, &rstd1));
    QAT_TRY(linear_fwd(m, &ly->q, &h1, &q, 0.0f));
    QAT_TRY(linear_fwd(m, &ly->k, &h1, &k, 0.0f));
    QAT_TRY(linear_fwd(m, &ly->v, &h1, &v, 0.0f));
    QAT_TRY(QAT_OP(be, rope, &q4, &m->inv_freq, 0, 0));
    QAT_TRY(QAT_OP(be, rope, &k4, &m->inv_freq, 0, 0));
    QAT_TRY(QAT_OP(be, attention_fwd, &q4, &k4, &v4, scale, &att4, &lse));
    QAT_TRY(QAT_OP(be, copy, x_mid.data, x_in.data, res_bytes));
    QAT_TRY(linear_fwd(m, &ly->o, &att, &x_mid, 1.0f)); /* residual add inside the GEMM */

    /* MLP block */
    QAT_TRY(norm_fwd(m, &x_mid, &ly->ffn_norm, &h2, &rstd2));
    QAT_TRY(linear_fwd(m, &ly->gate, &h2, &gate, 0.0f));
    QAT_TRY(linear_fwd(m, &ly->up, &h2, &up, 0.0f));
    QAT_TRY(QAT_OP(be, swiglu_fwd, &gate, &up, &act));
    QAT_TRY(QAT_OP(be, copy, x_out.data, x_mid.data, res_bytes));
    QAT_TRY(linear_fwd(m, &ly->down, &act, &x_out, 1.0f));
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
