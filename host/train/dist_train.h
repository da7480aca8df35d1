/* The trainer's side of data parallelism (REFERENCE.md section 11): how a rank's share of each
 * global batch is chosen, which gradient buffers are summed across ranks, and the checks every
 * rank must pass together at start. The communicator itself is host/dist/dist.h.
 *
 * World W, per-rank micro-batch B, accumulation A: a step's global batch is W * A micro-batches
 * of B windows, micro-batch j = a * W + r going to rank r as its a-th; window b of micro-batch j
 * is window number base + j * B + b of the sampler's stream (base = the windows of earlier
 * steps). With W = 1 this is the one-process order, so W ranks with accumulation A see the same
 * windows as one process with accumulation W * A. */
#ifndef QAT_TRAIN_DIST_TRAIN_H
#define QAT_TRAIN_DIST_TRAIN_H

#include "dist/dist.h"
#include "model/llama.h"
#include "train/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Per-rank accumulation A for world W: train.grad_accum, or train.global_batch / (W * batch)
 * when global_batch is set (QAT_EUSAGE with the numbers when it does not divide). */
qat_status qat_dist_train_accum(const qat_config *cfg, int world, int *accum);

/* Sampler window index of window b of this rank's a-th micro-batch (see above). */
static inline uint64_t qat_dist_window(uint64_t base, int a, int world, int rank, int B, int b) {
  return base + ((uint64_t)a * (uint64_t)world + (uint64_t)rank) * (uint64_t)B + (uint64_t)b;
}

/* The buffers the whole-model backward accumulates into (llama_backward.c): per decoder Linear
 * dL/dw_hat when quantized (ds in code mode, where dw_hat is never laid out), dw when
 * unquantized and not frozen; biases, norm gains and embeddings / lm_head only with
 * train_embeddings. Summing these across ranks BEFORE qat_llama_finish_backward makes the
 * fake-quant backward see the global dL/dw_hat, as one process accumulating all micro-batches
 * would. *out: malloc'd array of n views (caller frees); each distinct buffer once. */
qat_status qat_dist_grad_buffers(qat_llama *m, qat_tensor **out, int *n);

/* The buffers of qat_dist_grad_buffers that belong to layer l (l = -1: the final norm,
 * lm_head and embeddings, with train_embeddings; a tied lm_head once) into list; returns how
 * many. The whole-model gradients are summed in buckets (train/grad_bucket.h). */
int qat_dist_grad_buffers_of(qat_llama *m, int l, qat_tensor list[16]);

/* The same for layer l's buffers only (Block-AP's one-layer gradients). */
qat_status qat_dist_allreduce_block_grads(qat_dist *d, qat_llama *m, int l);

/* Start-up checks a distributed job passes on every rank or on none (after qat_dist_agree);
 * today every config passes (the effective-config hash is compared in the trainer). */
qat_status qat_dist_train_check(qat_dist *d, const qat_config *cfg);

#ifdef __cplusplus
}
#endif
#endif
