/* Data-parallel pieces of the trainer (see dist_train.h). */
#include "train/dist_train.h"

#include <stdlib.h>

qat_status qat_dist_train_accum(const qat_config *cfg, int world, int *accum) {
  int B = cfg->train.batch, G = cfg->train.global_batch;
  *accum = cfg->train.grad_accum;
  if (G == 0) return QAT_OK;
  int64_t per = (int64_t)world * B;
  if (G % per != 0)
    return QAT_FAIL(QAT_EUSAGE,
                    "train.global_batch = %d is not divisible by world %d x train.batch %d "
                    "(= %lld windows per micro-batch round)",
                    G, world, B, (long long)per);
  *accum = (int)(G / per);
  return QAT_OK;
}

static void push(qat_tensor *list, int *n, const qat_tensor *t) {
  if (!t->data) return;
  for (int i = 0; i < *n; i++)
    if (list[i].data == t->data) return; /* tied lm_head: one buffer */
  list[(*n)++] = *t;
}

/* Layer l's accumulation buffers (see qat_dist_grad_buffers). */
static void push_layer(const qat_llama *m, int l, qat_tensor *list, int *n) {
  qat_llama_layer *ly = &m->layers[l];
  qat_linear *lins[7] = {&ly->q, &ly->k, &ly->v, &ly->o, &ly->gate, &ly->up, &ly->down};
  for (int i = 0; i < 7; i++) {
    qat_linear *li = lins[i];
    if (m->quantized) /* code mode lays out no dw_hat: ds accumulates directly */
      push(list, n, li->dw_hat.data ? &li->dw_hat : &li->ds);
    else if (!li->frozen)
      push(list, n, &li->dw);
    if (m->train_embeddings && li->b.data) push(list, n, &li->db);
  }
  if (m->train_embeddings) {
    push(list, n, &ly->d_attn_norm);
    push(list, n, &ly->d_ffn_norm);
  }
}

int qat_dist_grad_buffers_of(qat_llama *m, int l, qat_tensor list[16]) {
  int n = 0;
  if (l >= 0) {
    push_layer(m, l, list, &n);
  } else if (m->train_embeddings) {
    push(list, &n, &m->d_final_norm);
    push(list, &n, &m->d_lm_head);
    push(list, &n, &m->d_embed);
  }
  return n;
}

qat_status qat_dist_grad_buffers(qat_llama *m, qat_tensor **out, int *n_out) {
  int L = m->cfg.n_layers, temb = m->train_embeddings, n = 0;
  qat_tensor *list = calloc((size_t)L * 16 + 4, sizeof *list);
  if (!list) return QAT_FAIL(QAT_ENOMEM, "dist: out of memory");
  for (int l = 0; l < L; l++) push_layer(m, l, list, &n);
  if (temb) {
    push(list, &n, &m->d_embed);
    push(list, &n, &m->d_final_norm);
    push(list, &n, &m->d_lm_head);
  }
  *out = list;
  *n_out = n;
  return QAT_OK;
}

static qat_status sum_list(qat_dist *d, qat_tensor *g, int n);

qat_status qat_dist_allreduce_block_grads(qat_dist *d, qat_llama *m, int l) {
  if (d->world == 1) return QAT_OK;
  qat_tensor *g = calloc(16, sizeof *g);
  if (!g) return QAT_FAIL(QAT_ENOMEM, "dist: out of memory");
  int n = 0;
  push_layer(m, l, g, &n);
  return sum_list(d, g, n);
}

/* Sums g[0..n) across ranks and frees g. */
static qat_status sum_list(qat_dist *d, qat_tensor *g, int n) {
  qat_status st = QAT_OK;
  for (int i = 0; st == QAT_OK && i < n; i++) {
    if (g[i].dtype != QAT_F32)
      st = QAT_FAIL(QAT_EINTERNAL, "dist: gradient %s is %s, F32 expected",
                    g[i].name ? g[i].name : "?",
                    qat_dtype_name(g[i].dtype));
    else
      st = d->allreduce(d, g[i].data, qat_numel(&g[i]), QAT_F32, QAT_RED_SUM);
  }
  free(g);
  return st;
}

qat_status qat_dist_train_check(qat_dist *d, const qat_config *cfg) {
  (void)d;
  (void)cfg;
  /* dist.zero = 1 shards the whole-model AdamW moments of qat and e2e_qp (train/zero.h);
   * Block-AP's one-block moments stay whole on every rank. Every method is data parallel: qat and e2e_qp (trainer.c), Block-AP's samples and
   * activation cache sharded (block_ap.c), GPTQ's Hessians summed (gptq_run.c) */
  return QAT_OK;
}
