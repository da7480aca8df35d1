/* AdamW over a model's trainable tensors with parameter groups (decoder Linear weights vs
 * quantizer step sizes / zero points vs the rest), each with its own learning rate and weight
 * decay; global grad-norm clipping; moments in one arena on the model's backend. The update is
 * the backend's fused adamw op. */
#ifndef QAT_TRAIN_OPTIM_H
#define QAT_TRAIN_OPTIM_H

#include "model/llama.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_optim_group {
  double lr, weight_decay;
  int enabled; /* 0: the group is frozen (no update, no moments) */
} qat_optim_group;

typedef struct qat_optim {
  const qat_backend *be;
  qat_arena arena;         /* m and v of every enabled parameter */
  int n;                   /* parameters tracked */
  qat_param *params;       /* borrowed from the model */
  qat_tensor *m, *v;       /* [n] */
  qat_optim_group groups[3]; /* indexed by qat_param_group */
  double beta1, beta2, eps;
  int64_t t;               /* optimizer steps taken (bias correction) */
  /* ZeRO-1 (dist.zero = 1, qat_optim_init_shard): the tracked parameters flattened in order
   * (parameter i = flat [flat_off[i], flat_off[i] + numel)) into flat_n elements, padded with
   * zeros to world * shard (shard = ceil(flat_n / world)); this rank owns flat
   * [rank * shard, (rank + 1) * shard). Parameter i's owned part is its flattened elements
   * [own_lo[i], own_lo[i] + own_n[i]) (own_n 0: none here); m[i], v[i] are 1-D views of that
   * length into one [shard] pair of moments. Unsharded: world 1, m[i] / v[i] shaped like p. */
  int world, rank;
  int64_t flat_n, shard;
  int64_t *flat_off, *own_lo, *own_n; /* [n] */
  qat_tensor shard_m, shard_v;        /* [shard]: this rank's moments, padding included */
  int sharded;
  /* quant.scale_dtype f16 (qat_qspec.scale_f16; set by the caller after init): every step ends
   * with the projection fq_scale_f16 of the step sizes (the "<linear>.scales" parameters; ZeRO-1:
   * their owned elements, before the all-gather), so s is on the F16 grid after each update.
   * Projected AdamW: the moments stay F32 and unrounded, and the next gradient is taken at the
   * projected s (the forward sees exactly the s that is exported; no straight-through term for
   * the rounding is needed because it happens between steps, not inside the forward). An update
   * smaller than half an F16 spacing of s (2^-11 s .. 2^-12 s) is rounded away: with AdamW's
   * ~lr-sized steps, lr below ~s / 4096 cannot move s. */
  int scale_f16;
} qat_optim;

/* Tracks the params whose group is enabled. */
qat_status qat_optim_init(qat_optim *o, const qat_backend *be, qat_param *params, int nparams,
                          const qat_optim_group groups[3]);
/* The same with the moments sharded over world ranks (see sharded above); the caller reduces
 * the owned gradients across ranks before each step and gathers the parameters after it
 * (train/zero.h). world 1 holds everything, updated as qat_optim_init's. */
qat_status qat_optim_init_shard(qat_optim *o, const qat_backend *be, qat_param *params,
                                int nparams, const qat_optim_group groups[3], int rank,
                                int world);
void qat_optim_free(qat_optim *o);
/* Bytes of moments this rank holds. */
size_t qat_optim_moment_bytes(const qat_optim *o);
/* Global L2 norm of the tracked gradients (NaN/Inf propagate). */
qat_status qat_optim_grad_norm(const qat_optim *o, double *norm);
/* Sum of squares of this rank's owned gradients (all of them unsharded); the global norm of a
 * sharded optimizer is the square root of its sum over ranks. */
qat_status qat_optim_grad_sumsq(const qat_optim *o, double *sumsq);
/* 1-D view of elements [lo, lo + n) of an F32 tensor's flattened data. */
qat_tensor qat_optim_view(const qat_tensor *t, int64_t lo, int64_t n);
/* Scales every tracked (sharded: owned) gradient by alpha (clipping). */
qat_status qat_optim_scale_grads(const qat_optim *o, float alpha);
/* One AdamW step with per-group learning rates lr_scale[group] * group.lr (sharded: of the
 * owned elements only), then the F16 projection of the step sizes under scale_f16. */
qat_status qat_optim_step(qat_optim *o, const double lr[3]);

#ifdef __cplusplus
}
#endif
#endif
