/* ZeRO-1 (dist.zero = 1) checkpoints, within checkpoint.h's atomic directory scheme:
 *   RUN/ckpt-N/state.safetensors           rank 0: the parameters (no moments)
 *   RUN/ckpt-N/optim-rank<r, 5 digits>.safetensors
 *                                          rank r: "optim.m", "optim.v" F32 [shard], its slice
 *                                          of the flat moments (optim.h: the tracked parameters
 *                                          flattened in order, zero-padded to world * shard)
 *   RUN/ckpt-N/state.json                  rank 0, last: fields world, zero = 1, zero_flat (N),
 *                                          zero_shard and zero_params (the flat order: the
 *                                          parameters' names, comma-separated)
 * Rank 0 makes the temporary directory, writes state.safetensors and, from the save's hook,
 * shares the directory's path with every rank (a host all-gather); each rank writes its shard
 * there and all agree; only then does rank 0 write state.json and rename the directory: one
 * commit point, so a checkpoint either holds every shard or does not exist. The ranks share
 * one file system (one node, or a shared checkpoint.dir). */
#ifndef QAT_TRAIN_ZERO_CKPT_H
#define QAT_TRAIN_ZERO_CKPT_H

#include "train/eqat.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_zero_ckpt_ctx {
  qat_train_job *J;
  int shared; /* the hook ran (rank 0) */
} qat_zero_ckpt_ctx;

/* Every rank once per save: learns rank 0's temporary directory (tmp on rank 0, NULL on the
 * others and on a rank 0 that failed before making it: then "" is shared and nothing written),
 * writes its shard there when st is QAT_OK, and agrees (qat_dist_agree). */
qat_status qat_zero_ckpt_share(qat_train_job *J, const char *tmp, qat_status st);
/* The qat_ckpt_hook rank 0 passes (ctx: qat_zero_ckpt_ctx). */
qat_status qat_zero_ckpt_hook(void *ctx, const char *tmp);
/* Rank 0's state.json fields of the layout. */
qat_status qat_zero_ckpt_fields(const qat_train_job *J, qat_ckpt_writer *w);
/* The checkpoint's dist.zero (absent: 0) and flat layout (the parameter count; its shard must
 * be ceil(N / saved world)) must be this job's: QAT_EUSAGE naming both values of dist.zero,
 * QAT_EFORMAT naming both layouts. The world may differ (qat_zero_ckpt_read reshards). */
qat_status qat_zero_ckpt_check(const qat_train_job *J, const qat_ckpt *ck, const char *dir);
/* This rank's moments: flat elements [rank * shard, (rank + 1) * shard) of the job's layout,
 * read from the DIR/optim-rank<q>.safetensors that hold them in the saved layout (ck's world
 * and zero_shard): its own file when the world is the same, else every file its
 * range overlaps (resharding: W' ranks resume a run saved by W; the trainer checks that a step
 * still takes the same windows). */
qat_status qat_zero_ckpt_read(qat_train_job *J, const qat_ckpt *ck, const char *dir);

#ifdef __cplusplus
}
#endif
#endif
