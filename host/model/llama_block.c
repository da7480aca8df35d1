/* EfficientQAT support in the model (REFERENCE.md section 3): the block activation set for the
 * Block-AP passes (qat_llama_block_forward in llama_forward.c, qat_llama_block_backward in
 * llama_backward.c), a layer's trainable tensors, and freezing Linears to integer codes.
 *
 * The block set is one layer's activations plus its backward scratch in an arena of its own
 * (bacts), so a Block-AP job holds one block's activations whatever the model depth, and
 * planning it leaves the whole-model plan (acts, m->B, m->T, logits) alone. Planning it with
 * training also keeps the gradient arenas laid out (built once if nothing built them yet;
 * never rebuilt when they already match). Built here (no whole-model training plan), they hold
 * one layer's gradients, carved as layer 0's and bound to a layer by qat_llama_bind_grads
 * (from qat_llama_block_params and the block forward): all layers have equal shapes, and
 * Block-AP trains one block at a time, so a 7B job holds 1/32 of the gradients.
 *
 * Frozen codes: one U8 arena for every decoder Linear, carved at the first freeze. After
 * qat_llama_freeze_codes a Linear computes w_hat = dq_forward(codes, s, z); its backward turns
 * dL/dw_hat into ds alone (dq_backward); dw and dz are never written again, so they keep what
 * the last zero_grad left (zeros). The master w holds the dequantized weights at the freeze. */
#include "core/log.h"
#include "model/llama_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int qat_llama_block_specs(qat_llama *m, int64_t N, int training, llama_buf_spec *list) {
  struct qat_llama_priv *P = m->priv;
  int k = qat_llama_act_specs(m, &P->bact, N, list, 0);
  return qat_llama_scratch_specs(m, &P->bscr, N, training, list, k);
}

qat_status qat_llama_plan_block(qat_llama *m, int B, int T, int training) {
  struct qat_llama_priv *P = m->priv;
  QAT_TRY(qat_llama_plan_check(m, "model plan_block", B, T));
  if (training && m->masters_dropped)
    return QAT_FAIL(QAT_EINVAL, "model plan_block: the masters were dropped (inference only)");
  if (training && m->packed)
    return QAT_FAIL(QAT_EUNSUPPORTED, "model plan_block: training on packed weights is not "
                                      "supported (a packed model is inference only)");
  qat_arena_free(&P->bacts);
  memset(&P->bact, 0, sizeof P->bact);
  memset(&P->bscr, 0, sizeof P->bscr);
  P->bB = P->bT = 0;
  P->bfwd_layer = -1;
  P->bfwd_B = P->bfwd_T = P->bfwd_training = 0;
  P->btraining = training != 0;
  QAT_TRY(qat_llama_sync_layout(m)); /* gradients when training, compute weights, params */

  int64_t N = (int64_t)B * T;
  llama_buf_spec list[32];
  int k = qat_llama_block_specs(m, N, P->btraining, list);
  size_t need = 0;
  qat_status st;
  QAT_CHECK(st, qat_llama_carve(&P->bacts, list, k, 0, &need), fail);
  QAT_CHECK(st, qat_arena_init(&P->bacts, m->be, "block activations", need), fail);
  QAT_CHECK(st, qat_llama_carve(&P->bacts, list, k, 1, &need), fail);
  P->bplan_dtype = m->act_dtype;
  P->bB = B;
  P->bT = T;
  return QAT_OK;
fail:
  qat_arena_free(&P->bacts);
  memset(&P->bact, 0, sizeof P->bact);
  memset(&P->bscr, 0, sizeof P->bscr);
  return st;
}

/* Block-AP's teacherless targets: the layer with w_hat = convert(w) (the masters, no fake-quant),
 * run in the block activation set without binding gradients. */
qat_status qat_llama_block_forward_fp(qat_llama *m, int l, const qat_tensor *x_in,
                                      qat_tensor *x_out, int B, int T) {
  struct qat_llama_priv *P = m->priv;
  const char *what = "model block_forward_fp";
  if (m->packed)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: a packed model has no unquantized masters", what);
  QAT_TRY(qat_llama_check_block_call(m, what, l, x_in, x_out, B, T));
  P->bfwd_layer = -1; /* the block set now holds a pass that cannot be back-propagated */
  P->fwd_training = 0; /* layer l's w_hat no longer matches the last whole-model forward */
  QAT_TRY(qat_llama_sync_wcomp(m));
  qat_linear *lins[7];
  qat_llama_linears(&m->layers[l], lins);
  for (int i = 0; i < 7; i++) /* unquantized: w_hat aliases w (F32) or is its cast */
    if (lins[i]->w_hat.data != lins[i]->w.data)
      QAT_TRY(QAT_OP(m->be, convert, &lins[i]->w_hat, &lins[i]->w));
  QAT_TRY(QAT_OP(m->be, copy, P->bact.x_in.data, x_in->data, qat_nbytes(x_in)));
  return qat_llama_layer_fwd(m, &m->layers[l], &P->bact, &P->bscr, x_out, B, T);
}

qat_status qat_llama_block_linear_inputs(qat_llama *m, int B, int T, qat_tensor in[4]) {
  struct qat_llama_priv *P = m->priv;
  if (P->bB <= 0 || B <= 0 || T <= 0 || B > P->bB || T > P->bT)
    return QAT_FAIL(QAT_EINVAL, "model block_linear_inputs: batch %d x %d outside the plan %d x %d",
                    B, T, P->bB, P->bT);
  const qat_llama_config *c = &m->cfg;
  int64_t N = (int64_t)B * T, QD = (int64_t)c->n_heads * c->head_dim;
  in[0] = V2(P->bact.h1, N, c->dim);
  in[1] = V2(P->bact.att, N, QD);
  in[2] = V2(P->bact.h2, N, c->dim);
  in[3] = V2(P->bact.act, N, c->hidden);
  return QAT_OK;
}

qat_status qat_llama_block_params(qat_llama *m, int l, qat_param **out, int *n) {
  *out = NULL;
  *n = 0;
  if (l < 0 || l >= m->cfg.n_layers)
    return QAT_FAIL(QAT_EINVAL, "model block_params: layer %d is outside [0, %d)", l,
                    m->cfg.n_layers);
  QAT_TRY(qat_llama_sync_layout(m));
  QAT_TRY(qat_llama_bind_grads(m, l, "model block_params"));
  char prefix[32];
  int plen = snprintf(prefix, sizeof prefix, "model.layers.%d.", l); /* the dot: 1 is not 10 */
  qat_param *ps = malloc(sizeof *ps * (size_t)(m->nparams > 0 ? m->nparams : 1));
  if (!ps) return QAT_FAIL(QAT_ENOMEM, "model block_params: out of host memory");
  int k = 0;
  for (int i = 0; i < m->nparams; i++)
    if (strncmp(m->params[i].name, prefix, (size_t)plen) == 0) ps[k++] = m->params[i];
  *out = ps;
  *n = k;
  return QAT_OK;
}

size_t qat_llama_codes_need(const qat_llama *m) {
  size_t need = 0;
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) need += qat_arena_need(QAT_U8, lins[i]->out * lins[i]->in);
  }
  return need;
}

/* The codes arena: every Linear's [out, in] U8, carved once. */
static qat_status ensure_codes(qat_llama *m) {
  struct qat_llama_priv *P = m->priv;
  if (P->codes.base) return QAT_OK;
  QAT_TRY(qat_arena_init(&P->codes, m->be, "frozen codes", qat_llama_codes_need(m)));
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      qat_linear *li = lins[i];
      qat_status st = qat_arena_tensor(&P->codes, &li->codes, QAT_U8, 2,
                                       (int64_t[]){li->out, li->in}, li->w.name);
      if (st != QAT_OK) {
        qat_arena_free(&P->codes);
        return st;
      }
    }
  }
  return QAT_OK;
}

/* Layer l: codes from the current w, s, z (unless already frozen), then w <- the dequantized
 * weights with the current s (for a frozen layer that is its current w_hat). */
static qat_status freeze_layer(qat_llama *m, int l) {
  qat_linear *lins[7];
  qat_llama_linears(&m->layers[l], lins);
  const qat_qspec *q = &m->qspec;
  for (int i = 0; i < 7; i++) {
    qat_linear *li = lins[i];
    const qat_tensor *z = q->sym ? NULL : &li->z;
    if (!li->use_codes)
      QAT_TRY(qat_context(QAT_OP(m->be, fq_codes, q, &li->w, &li->s, z, &li->codes),
                          "freezing %s", li->name));
    QAT_TRY(QAT_OP(m->be, dq_forward, q, &li->codes, &li->s, z, &li->w));
    li->use_codes = 1;
    li->frozen = 1;
  }
  return QAT_OK;
}

qat_status qat_llama_freeze_codes(qat_llama *m, int l) {
  if (!m->quantized)
    return QAT_FAIL(QAT_EINVAL, "model freeze_codes: fake-quant is off (qat_llama_set_quant first)");
  if (l >= m->cfg.n_layers)
    return QAT_FAIL(QAT_EINVAL, "model freeze_codes: layer %d is outside [0, %d)", l,
                    m->cfg.n_layers);
  if (m->priv->ecodes)
    return QAT_FAIL(QAT_EINVAL, "model freeze_codes: the codes are packed already "
                                "(qat_llama_pack_frozen); set_quant starts over");
  QAT_TRY(ensure_codes(m));
  for (int k = l < 0 ? 0 : l; k < (l < 0 ? m->cfg.n_layers : l + 1); k++) QAT_TRY(freeze_layer(m, k));
  return QAT_OK;
}
