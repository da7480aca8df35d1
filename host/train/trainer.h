/* `qat train`: runs a job config end to end. Method qat (EfficientQAT's methods come later):
 * fine-tune every decoder Linear and its quantizer parameters through fake-quant, initialized
 * from RTN, with AdamW parameter groups, a schedule with warmup, gradient accumulation, global
 * grad-norm clipping, optional distillation from the full-precision model, validation, atomic
 * checkpoints with exact resume, metrics.jsonl, and a final fp / RTN / trained table. */
#ifndef QAT_TRAIN_TRAINER_H
#define QAT_TRAIN_TRAINER_H

#include "train/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Validates files, loads everything, then creates/resumes checkpoint.dir. Returns
 * QAT_EINTERRUPT after saving a checkpoint when qat_train_request_stop() was called. */
qat_status qat_train_run(const qat_config *cfg);
/* Async-signal-safe: asks the running job to checkpoint and stop after the current step. */
void qat_train_request_stop(void);

#ifdef __cplusplus
}
#endif
#endif
