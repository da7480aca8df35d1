/* Incremental LLaMA forward with a KV cache (llama_decode.h). One chunk of n tokens at positions
 * p0 .. p0 + n - 1 (n = the prompt at p0 = 0, then n = 1 per generated token):
 *   x = embed[tokens]                                          [n, C] F32
 *   per layer l:  h = attn_norm(x)                             [n, C] act
 *                 q = h Wq^T (+b)                              [n, Hq*D]
 *                 K_l[p0 : p0+n] = h Wk^T, V_l[...] = h Wv^T   written into the cache in place
 *                 rope(q), rope(K_l[p0 : p0+n]) at pos0 = p0
 *                 att = p0 == 0 ? attention_fwd(q, K_l[0:n], V_l[0:n])     (causal prefill)
 *                               : attention_decode(q_i, K_l, V_l, T = p0+i+1) per token i
 *                 x += att Wo^T (+b);  h2 = ffn_norm(x);  x += (silu(h2 Wg^T) * h2 Wu^T) Wd^T
 *   logits = final_norm(x[n-1]) lm_head^T                      [V] F32, the last token only
 * The residual stream accumulates in place (the GEMM's beta = 1; a packed Linear's qgemm writes
 * a scratch that is added), so a step copies nothing but the logits back. All buffers live in one arena carved at creation (a size table walked twice:
 * sizing, then carving, as the model's activation specs). */
#include "model/llama_decode.h"

#include "model/llama_priv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct qat_llama_decoder {
  qat_llama *m;
  int S, Nmax; /* cache positions, chunk capacity */
  int len;     /* positions filled */
  qat_arena arena;
  qat_tensor *kc, *vc;        /* [L] each [S, Hkv*D] act */
  qat_tensor tok;             /* [Nmax] I32 */
  qat_tensor x;               /* [Nmax, C] F32 residual stream */
  qat_tensor hn, h;           /* [Nmax, C] F32 norm output; its act-dtype cast (BF16 only) */
  qat_tensor rstd;            /* [Nmax] F32 */
  qat_tensor q, att;          /* [Nmax, Hq*D] act */
  qat_tensor lse;             /* [Hq * Nmax] F32 (prefill attention_fwd) */
  qat_tensor gate, up, act;   /* [Nmax, F] act */
  qat_tensor hfin;            /* [1, C] F32 */
  qat_tensor logits;          /* [1, V] F32 */
};

static void *at_row(const qat_tensor *t, int64_t row, int64_t cols) {
  return (char *)t->data + (size_t)(row * cols) * qat_dtype_size(t->dtype);
}

/* Size table: every buffer of the arena, walked for sizing (pass 0) and carving (pass 1). */
static int decoder_specs(qat_llama_decoder *d, llama_buf_spec *list) {
  const qat_llama_config *c = &d->m->cfg;
  const qat_dtype act = d->m->act_dtype;
  const int64_t N = d->Nmax, C = c->dim, F = c->hidden, QD = (int64_t)c->n_heads * c->head_dim;
  const int64_t KD = (int64_t)c->n_kv_heads * c->head_dim;
  int k = 0;
  for (int l = 0; l < c->n_layers; l++) {
    list[k++] = (llama_buf_spec){&d->kc[l], act, (int64_t)d->S * KD, "kv cache k"};
    list[k++] = (llama_buf_spec){&d->vc[l], act, (int64_t)d->S * KD, "kv cache v"};
  }
  list[k++] = (llama_buf_spec){&d->tok, QAT_I32, N, "decode tokens"};
  list[k++] = (llama_buf_spec){&d->x, QAT_F32, N * C, "decode x"};
  list[k++] = (llama_buf_spec){&d->hn, QAT_F32, N * C, "decode hn"};
  if (act != QAT_F32) list[k++] = (llama_buf_spec){&d->h, act, N * C, "decode h"};
  list[k++] = (llama_buf_spec){&d->rstd, QAT_F32, N, "decode rstd"};
  list[k++] = (llama_buf_spec){&d->q, act, N * QD, "decode q"};
  list[k++] = (llama_buf_spec){&d->att, act, N * QD, "decode att"};
  list[k++] = (llama_buf_spec){&d->lse, QAT_F32, N * c->n_heads, "decode lse"};
  list[k++] = (llama_buf_spec){&d->gate, act, N * F, "decode gate"};
  list[k++] = (llama_buf_spec){&d->up, act, N * F, "decode up"};
  list[k++] = (llama_buf_spec){&d->act, act, N * F, "decode act"};
  list[k++] = (llama_buf_spec){&d->hfin, QAT_F32, C, "decode hfin"};
  list[k++] = (llama_buf_spec){&d->logits, QAT_F32, c->vocab, "decode logits"};
  return k;
}

qat_status qat_llama_decoder_new(qat_llama *m, int max_ctx, int max_chunk,
                                 qat_llama_decoder **out) {
  *out = NULL;
  const qat_llama_config *c = &m->cfg;
  if (max_ctx < 1 || max_ctx > c->max_seq)
    return QAT_FAIL(QAT_EINVAL, "decoder: context %d outside [1, max_seq %d]", max_ctx,
                    c->max_seq);
  if (c->sliding_window > 0 && max_ctx > c->sliding_window)
    return QAT_FAIL(QAT_EUNSUPPORTED, "decoder: context %d exceeds the sliding window %d",
                    max_ctx, c->sliding_window);
  if (max_chunk < 1 || max_chunk > max_ctx)
    return QAT_FAIL(QAT_EINVAL, "decoder: chunk %d outside [1, context %d]", max_chunk, max_ctx);
  qat_llama_decoder *d = calloc(1, sizeof *d);
  llama_buf_spec *list = NULL;
  if (!d) return QAT_FAIL(QAT_ENOMEM, "decoder: out of host memory");
  d->m = m;
  d->S = max_ctx;
  d->Nmax = max_chunk;
  d->kc = calloc((size_t)c->n_layers, sizeof *d->kc);
  d->vc = calloc((size_t)c->n_layers, sizeof *d->vc);
  list = malloc(sizeof *list * (size_t)(2 * c->n_layers + 16));
  qat_status st = QAT_OK;
  if (!d->kc || !d->vc || !list) {
    st = QAT_FAIL(QAT_ENOMEM, "decoder: out of host memory");
    goto fail;
  }
  /* compute weights once: fake-quant (or codes, or a cast) of the masters, as a forward does */
  QAT_CHECK(st, qat_llama_sync_wcomp(m), fail);
  for (int l = 0; l < c->n_layers; l++) QAT_CHECK(st, qat_llama_refresh_layer(m, l), fail);
  int k = decoder_specs(d, list);
  size_t need = 0;
  QAT_CHECK(st, qat_llama_carve(&d->arena, list, k, 0, &need), fail);
  QAT_CHECK(st, qat_arena_init(&d->arena, m->be, "kv cache", need), fail);
  QAT_CHECK(st, qat_llama_carve(&d->arena, list, k, 1, &need), fail);
  if (m->act_dtype == QAT_F32) d->h = d->hn; /* the norm writes the GEMM input directly */
  free(list);
  *out = d;
  return QAT_OK;
fail:
  free(list);
  qat_llama_decoder_free(d);
  return st;
}

void qat_llama_decoder_free(qat_llama_decoder *d) {
  if (!d) return;
  qat_arena_free(&d->arena);
  free(d->kc);
  free(d->vc);
  free(d);
}

int qat_llama_decoder_len(const qat_llama_decoder *d) { return d->len; }
int qat_llama_decoder_max_ctx(const qat_llama_decoder *d) { return d->S; }
void qat_llama_decoder_reset(qat_llama_decoder *d) { d->len = 0; }
size_t qat_llama_decoder_bytes(const qat_llama_decoder *d) { return d->arena.cap; }

/* y[n, out] = beta * y + x[n, in] @ w_hat^T (+ b). A packed Linear's qgemm overwrites its
 * output: with beta != 0 (the residual adds, out = C) it writes d->hn, which is free then (the
 * norm output it held was read by q, k, v or gate, up already), and hn is added to y. */
static qat_status linear(qat_llama_decoder *d, qat_linear *li, const qat_tensor *x, qat_tensor *y,
                         float beta) {
  qat_llama *m = d->m;
  const int64_t n = x->shape[0];
  if (!li->pk) {
    QAT_TRY(QAT_OP(m->be, gemm, 0, 1, n, li->out, li->in, 1.0f, x, &li->w_hat, beta, y));
  } else if (beta == 0.0f) {
    QAT_TRY(QAT_OP(m->be, qgemm, 0, n, li->pk, x, y));
  } else {
    if (beta != 1.0f || li->out != m->cfg.dim || x->data == d->hn.data)
      return QAT_FAIL(QAT_EINTERNAL, "decoder: %s: packed accumulate needs beta 1 into [n, C]",
                      li->name);
    qat_tensor t = V2(d->hn, n, li->out);
    QAT_TRY(QAT_OP(m->be, qgemm, 0, n, li->pk, x, &t));
    if (li->b.data) QAT_TRY(QAT_OP(m->be, bias_fwd, &t, &li->b));
    return QAT_OP(m->be, axpy, 1.0f, &t, y);
  }
  if (li->b.data) QAT_TRY(QAT_OP(m->be, bias_fwd, y, &li->b));
  return QAT_OK;
}

/* h[n, C] (act) = rmsnorm(x[n, C]); through hn and a cast when act is not F32. */
static qat_status norm(qat_llama_decoder *d, const qat_tensor *x, const qat_tensor *w, int64_t n) {
  qat_llama *m = d->m;
  const int64_t C = m->cfg.dim;
  qat_tensor hn = V2(d->hn, n, C), rstd = V1(d->rstd, n);
  QAT_TRY(QAT_OP(m->be, rmsnorm_fwd, x, w, m->cfg.norm_eps, &hn, &rstd));
  if (m->act_dtype == QAT_F32) return QAT_OK;
  qat_tensor h = V2(d->h, n, C);
  return QAT_OP(m->be, convert, &h, &hn);
}

static qat_status layer_step(qat_llama_decoder *d, int l, int64_t p0, int64_t n) {
  qat_llama *m = d->m;
  const qat_llama_config *c = &m->cfg;
  qat_backend *be = m->be;
  qat_llama_layer *ly = &m->layers[l];
  const int64_t C = c->dim, F = c->hidden, Hq = c->n_heads, Hkv = c->n_kv_heads,
                D = c->head_dim;
  const float scale = 1.0f / sqrtf((float)D);
  const qat_dtype act = m->act_dtype;
  const qat_device dev = be->device;
  qat_tensor x = V2(d->x, n, C), h = V2(d->h, n, C);
  qat_tensor q = V2(d->q, n, Hq * D), att = V2(d->att, n, Hq * D);
  /* this chunk's rows of the cache: [n, Hkv*D] for the GEMMs, [1, n, Hkv, D] for RoPE */
  void *kp = at_row(&d->kc[l], p0, Hkv * D), *vp = at_row(&d->vc[l], p0, Hkv * D);
  qat_tensor k = qat_view2(kp, act, dev, n, Hkv * D), v = qat_view2(vp, act, dev, n, Hkv * D);
  qat_tensor k4 = qat_view(kp, act, dev, 4, (int64_t[]){1, n, Hkv, D});
  qat_tensor q4 = V4(d->q, 1, n, Hq, D);

  QAT_TRY(norm(d, &x, &ly->attn_norm, n));
  QAT_TRY(linear(d, &ly->q, &h, &q, 0.0f));
  QAT_TRY(linear(d, &ly->k, &h, &k, 0.0f));
  QAT_TRY(linear(d, &ly->v, &h, &v, 0.0f));
  QAT_TRY(QAT_OP(be, rope, &q4, &m->inv_freq, p0, 0));
  QAT_TRY(QAT_OP(be, rope, &k4, &m->inv_freq, p0, 0));
  if (p0 == 0) { /* prefill: causal attention within the chunk, as the whole-context forward */
    qat_tensor kk = qat_view(d->kc[l].data, act, dev, 4, (int64_t[]){1, n, Hkv, D});
    qat_tensor vv = qat_view(d->vc[l].data, act, dev, 4, (int64_t[]){1, n, Hkv, D});
    qat_tensor att4 = V4(d->att, 1, n, Hq, D), lse = V3(d->lse, 1, Hq, n);
    QAT_TRY(QAT_OP(be, attention_fwd, &q4, &kk, &vv, scale, &att4, &lse));
  } else { /* one query per token against the cache up to and including itself */
    qat_tensor kc = qat_view(d->kc[l].data, act, dev, 4, (int64_t[]){1, d->S, Hkv, D});
    qat_tensor vc = qat_view(d->vc[l].data, act, dev, 4, (int64_t[]){1, d->S, Hkv, D});
    for (int64_t i = 0; i < n; i++) {
      qat_tensor qi = qat_view(at_row(&d->q, i, Hq * D), act, dev, 3, (int64_t[]){1, Hq, D});
      qat_tensor oi = qat_view(at_row(&d->att, i, Hq * D), act, dev, 3, (int64_t[]){1, Hq, D});
      QAT_TRY(QAT_OP(be, attention_decode, &qi, &kc, &vc, p0 + i + 1, scale, &oi));
    }
  }
  QAT_TRY(linear(d, &ly->o, &att, &x, 1.0f)); /* x += att Wo^T */

  qat_tensor gate = V2(d->gate, n, F), up = V2(d->up, n, F), a = V2(d->act, n, F);
  QAT_TRY(norm(d, &x, &ly->ffn_norm, n));
  QAT_TRY(linear(d, &ly->gate, &h, &gate, 0.0f));
  QAT_TRY(linear(d, &ly->up, &h, &up, 0.0f));
  QAT_TRY(QAT_OP(be, swiglu_fwd, &gate, &up, &a));
  return linear(d, &ly->down, &a, &x, 1.0f); /* x += act Wd^T */
}

qat_status qat_llama_decoder_step(qat_llama_decoder *d, const int32_t *tokens, int n,
                                  float *logits) {
  qat_llama *m = d->m;
  const qat_llama_config *c = &m->cfg;
  qat_backend *be = m->be;
  if (n < 1 || n > d->Nmax)
    return QAT_FAIL(QAT_EINVAL, "decoder: %d tokens outside the chunk capacity [1, %d]", n,
                    d->Nmax);
  if ((int64_t)d->len + n > d->S)
    return QAT_FAIL(QAT_EINVAL, "decoder: the KV cache is full (%d + %d positions > %d)", d->len,
                    n, d->S);
  for (int i = 0; i < n; i++)
    if (tokens[i] < 0 || tokens[i] >= c->vocab)
      return QAT_FAIL(QAT_EINVAL, "decoder: token %d at %d is outside [0, %d)", tokens[i], i,
                      c->vocab);
  const int64_t C = c->dim, V = c->vocab, p0 = d->len;
  qat_tensor tok = V1(d->tok, n), x = V2(d->x, n, C);
  qat_tensor htok = qat_view1((void *)tokens, QAT_I32, QAT_DEV_CPU, n);
  QAT_TRY(qat_tensor_upload(be, &tok, &htok));
  QAT_TRY(QAT_OP(be, embedding_fwd, &tok, &m->embed, &x));
  for (int l = 0; l < c->n_layers; l++) {
    qat_status st = layer_step(d, l, p0, n);
    if (st != QAT_OK) {
      d->len = (int)p0; /* the cache rows past p0 are garbage now; they are overwritten next */
      return st;
    }
  }
  d->len = (int)(p0 + n);
  if (!logits) return QAT_OK;
  qat_tensor xl = qat_view2(at_row(&d->x, n - 1, C), QAT_F32, be->device, 1, C);
  qat_tensor hfin = V2(d->hfin, 1, C), rstd = V1(d->rstd, 1), lg = V2(d->logits, 1, V);
  QAT_TRY(QAT_OP(be, rmsnorm_fwd, &xl, &m->final_norm, c->norm_eps, &hfin, &rstd));
  QAT_TRY(QAT_OP(be, gemm, 0, 1, 1, V, C, 1.0f, &hfin, &m->lm_head, 0.0f, &lg));
  return be->download(be, logits, lg.data, (size_t)V * sizeof *logits);
}
