/* EfficientQAT (REFERENCE.md section 3) inside the trainer: Block-AP (block_ap.c), E2E-QP
 * (e2e_qp.c) and the job state they share with the QAT loop (trainer.c), which orchestrates
 * method block_ap / e2e_qp / pipeline in one run directory.
 *
 * Checkpoints of EfficientQAT runs (host/train/checkpoint.h) carry a field "phase":
 *   "block_ap": after block b; fields "blocks_done" = b + 1; tensors of the finished layers
 *               (".weight" = the dequantized weight, ".scales", ".zeros", ".codes" U8);
 *               directory step = blocks_done * Block-AP steps per block.
 *   "e2e_qp":   every Linear's ".weight" (dequantized with the current s, so `qat export`
 *               reproduces the model), ".zeros", ".codes", plus the trainer's usual state (s and
 *               its AdamW moments, step, sampler); directory step = L * Block-AP steps per block
 *               (0 for method e2e_qp) + E2E-QP step.
 * Dimension letters: T = data.seq_len, C = dim, Bb = block_ap.batch, L layers. */
#ifndef QAT_TRAIN_EQAT_H
#define QAT_TRAIN_EQAT_H

#include "dist/dist.h"
#include "model/eval.h"
#include "model/llama.h"
#include "train/actcache.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/optim.h"
#include "train/sampler.h"
#include "train/zero.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the trainer's job (trainer.c owns it; the EfficientQAT phases borrow it) */
typedef struct qat_train_hyper {
  int64_t steps; /* optimizer steps of the loop */
  int batch, accum;
  double lr, lr_quant; /* base rates of the WEIGHT and QUANT groups */
  int64_t warmup;
  double clip; /* 0 = off */
} qat_train_hyper;

typedef struct qat_train_job {
  const qat_config *cfg;
  qat_dist *dist; /* the job's communicator (single in one process; train/dist_train.h) */
  int agreed;     /* the job's error was reached by every rank alike (an agreement) */
  qat_backend *be;
  qat_llama *m;       /* student: fake-quant on */
  qat_llama *teacher; /* full precision (distillation, the fp / RTN rows, Block-AP targets) */
  qat_qspec q;
  int32_t *train, *val;
  int64_t ntrain, nval;
  qat_optim opt;
  qat_zero zero; /* dist.zero = 1: the moments are sharded (train/zero.h) */
  qat_window_sampler sampler;
  int64_t step; /* optimizer steps done in the current loop */
  int bad_steps;
  int32_t *tok, *tgt; /* [B*T] host */
  /* distillation: targets I32 [B*T] and per-token losses F32 [B*T] on the device, losses on
   * the host */
  qat_arena kd_arena;
  qat_tensor kd_targets, kd_losses;
  float *kd_host;
  FILE *metrics;
  qat_train_hyper hp;
  /* EfficientQAT */
  int64_t step_base;     /* checkpoint directory step = step_base + step */
  int codes_frozen;      /* E2E-QP: checkpoints carry every Linear's codes and zeros */
  qat_param *e2e_params; /* the scales-only list the optimizer borrows (malloc'd) */
  int e2e_nparams;
  /* the final table's fp and RTN rows, evaluated on the student before it trains (EfficientQAT
   * methods hold no full-precision model for them) */
  int have_ref;
  qat_eval_result ref_fp, ref_rtn;
} qat_train_job;

/* The device memory a job needs, per phase (trainer.c): the student's arenas
 * (qat_llama_memory_estimate), the distillation teacher when one is loaded, Block-AP's activation
 * cache device tier and buffers, and the optimizer's moments (2 x F32 per trainable value); the
 * phase needing most is checked against the backend's free memory (mem_info). Logs the estimate
 * as one line; QAT_ENOMEM with the numbers, per component, when it does not fit. Runs before
 * any model is loaded and before the run directory exists. world: the job's ranks (Block-AP's and
 * GPTQ's activation caches hold ceil(samples / world) per rank). */
qat_status qat_train_check_memory(const qat_config *cfg, const qat_backend *be,
                                  const qat_qspec *q, int world);

/* Set by qat_train_request_stop (a signal handler). */
int qat_train_stop_requested(void);

/* ---- Block-AP as a library call (the trainer, tests, benchmarks) */
typedef struct qat_block_ap_stats {
  int block;
  double mse_rtn, mse; /* validation MSE before (RTN init) and after training; NaN: no val */
  double train_first, train_last; /* mean training MSE of the first and the last epoch */
  int64_t steps;
  double seconds;
} qat_block_ap_stats;

typedef struct qat_block_ap_opts {
  int T;      /* tokens per sample */
  int batch;  /* samples per step */
  int epochs; /* passes over the training samples per block */
  double lr_w, lr_quant, min_lr_ratio;
  int train_norms; /* also train the block's RMSNorm gains at lr_w (group OTHER) */
  qat_actcache_budget budget;
  qat_dtype cache_dtype; /* activation cache slots: QAT_F32 (0, the zero-initialized default:
                          * exact) or QAT_BF16 (half the bytes; rounded on put, compute F32) */
  int first_block; /* blocks < first_block are finished: resume. They must still hold their
                    * full-precision masters at the call (targets are computed from them); once
                    * the full-precision stream has passed them, restore(ctx, first_block) must
                    * bring them to their finished state (frozen codes, e.g. from a checkpoint) */
  qat_status (*restore)(void *ctx, int first_block);
  /* Data parallelism (0 / NULL: one process, accumulation 1): each rank passes its own share of
   * the samples (qat_block_ap_phase: calibration micro-batch j and validation sample i go to
   * rank j mod W and i mod W); a step is grad_accum local micro-batches on every rank, the
   * block's gradients summed across ranks before its fake-quant backward, losses and the
   * validation MSE reduced (val_total: validation samples over all ranks). */
  int grad_accum;
  qat_dist *dist;
  int64_t val_total;
  /* Called after block b is trained, frozen and its outputs propagated (checkpoint, metrics);
   * a non-OK status stops the run and is returned. May be NULL. */
  qat_status (*on_block)(void *ctx, const qat_block_ap_stats *st);
  void *ctx;
} qat_block_ap_opts;

/* Steps per block: epochs * ceil(samples / batch). */
int64_t qat_block_ap_steps_per_block(int64_t samples, int batch, int epochs);

/* One Block-AP optimizer step of layer l on n samples: x, y [n*T, C] F32 (quantized-model input,
 * full-precision target), out, d [n*T, C] F32 scratch; *loss = MSE(block_l(x), y). Zeroes the
 * layer's gradients, forward, dL/dout = 2 (out - y) / numel, backward, AdamW with lr[group]. */
qat_status qat_block_ap_step(qat_llama *m, int l, qat_optim *opt, const double lr[3],
                             const qat_tensor *x, const qat_tensor *y, qat_tensor *out,
                             qat_tensor *d, int n, int T, double *loss);

/* Block-AP on m (quantized: s, z RTN-initialized; no layer frozen yet), its targets computed
 * from m's own full-precision masters (qat_llama_block_forward_fp). calib: host tokens [ncalib * T] (training samples), val: [nval * T]
 * (validation samples, nval may be 0). Uses the activation cache with o->budget and
 * o->cache_dtype (a slot round-trips bit-exactly, and BF16 rounding happens before placement, so
 * results are bit-identical whichever tier a slot lives on). On return every layer
 * of m is frozen (qat_llama_freeze_codes) and the block plan is freed (qat_llama_unplan). */
qat_status qat_block_ap_run(qat_llama *m, const int32_t *calib, int64_t ncalib,
                            const int32_t *val, int64_t nval, const qat_block_ap_opts *o);

/* The trainer's Block-AP phase: calibration windows from J->train (train.seed), validation
 * windows from J->val, budgets and hyperparameters from cfg->block_ap, a checkpoint and a
 * metrics.jsonl line after every block, stop on request after a block's checkpoint. */
/* first_block > 0 resumes: the finished blocks are loaded from the checkpoint directory ck (a
 * "block_ap" one) once the full-precision stream has passed them (qat_block_ap_opts.restore). */
qat_status qat_block_ap_phase(qat_train_job *J, int first_block, const char *ck);

/* ---- E2E-QP */
/* Freezes the integer codes of every layer not frozen yet and returns the step sizes only
 * (m->params entries named "*.scales", group QUANT) as a malloc'd list for qat_optim_init:
 * zero points, codes and weights never change. */
qat_status qat_e2e_qp_prepare(qat_llama *m, qat_param **params, int *n);

/* ---- method gptq (gptq_phase.c): GPTQ of J->m (quantized, fp / RTN rows already evaluated)
 * on gptq.samples windows of data.seq_len from J->train (train.seed), the layers frozen to their
 * codes, one checkpoint of phase "gptq" in the run directory (already open). ck: a checkpoint of
 * that phase to load instead (a finished run), or NULL. */
qat_status qat_gptq_phase(qat_train_job *J, const char *ck);

/* ---- checkpoint tensors of frozen layers */
typedef struct qat_eqat_bufs {
  void **p;
  int n, cap;
} qat_eqat_bufs;
void qat_eqat_bufs_free(qat_eqat_bufs *b);
/* A host copy of device tensor t (its own dtype), kept in bufs, added to w as `name`. */
qat_status qat_eqat_ckpt_add_device(const qat_backend *be, const qat_tensor *t,
                                    const char *name, qat_ckpt_writer *w, qat_eqat_bufs *bufs);

/* Adds layers [l0, l1) to w: "<linear>.weight" (F32: dequantized codes with the current s for
 * frozen layers, else the master), ".scales" when with_scales, ".zeros" (asym), ".codes" (U8,
 * frozen layers), and the layer's two RMSNorm gains. Host copies are kept in bufs until the
 * save. */
qat_status qat_eqat_ckpt_add_layers(qat_llama *m, int l0, int l1, int with_scales,
                                    qat_ckpt_writer *w, qat_eqat_bufs *bufs);
/* Inverse: loads weight, scales, zeros and norm gains of layers [l0, l1), freezes each layer not
 * frozen yet and restores the stored codes (a model packed by qat_llama_pack_frozen gets them
 * packed, one Linear's U8 codes at a time). */
qat_status qat_eqat_ckpt_load_layers(qat_llama *m, int l0, int l1, const qat_ckpt *ck);

#ifdef __cplusplus
}
#endif
#endif
