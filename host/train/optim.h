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
} qat_optim;

/* Tracks the params whose group is enabled. */
qat_status qat_optim_init(qat_optim *o, const qat_backend *be, qat_param *params, int nparams,
                          const qat_optim_group groups[3]);
void qat_optim_free(qat_optim *o);
/* Global L2 norm of the tracked gradients (NaN/Inf propagate). */
qat_status qat_optim_grad_norm(const qat_optim *o, double *norm);
/* Scales every tracked gradient by alpha (clipping). */
qat_status qat_optim_scale_grads(const qat_optim *o, float alpha);
/* One AdamW step with per-group learning rates lr_scale[group] * group.lr. */
qat_status qat_optim_step(qat_optim *o, const double lr[3]);

#ifdef __cplusplus
}
#endif
#endif
