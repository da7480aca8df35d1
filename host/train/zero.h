/* ZeRO-1 (dist.zero = 1): the communication around a sharded optimizer (train/optim.h's
 * qat_optim_init_shard holds this rank's AdamW moments only). Per optimizer step:
 *   1. each rank's gradients (its own micro-batches, not yet summed) are packed into one flat
 *      [world * shard] buffer in the optimizer's flat order (zero padding at the end) and
 *      reduce-scattered (sum: the loss is already a mean over the global batch), so rank r holds
 *      the global gradient of flat [r * shard, (r + 1) * shard) and writes it back into the
 *      owned parts of the parameters' gradient tensors;
 *   2. the caller takes the global norm from the owned sums of squares (summed across ranks),
 *      clips and steps the owned elements (qat_optim_step);
 *   3. the updated owned parameter elements are all-gathered into every rank's parameters.
 * Both run in buckets: each collective moves `bucket` elements of every rank's shard (the last
 * bucket fewer), staged through a [world * bucket] and a [bucket] buffer on the optimizer's
 * backend (device memory on NCCL), so the extra memory is (world + 1) * bucket floats, not a
 * second copy of the gradients;
 * in a world of one nothing is allocated and every call returns at once. The sum moves from
 * dL/dw_hat (dist_train.h, before the fake-quant backward) to the parameters' gradients (after
 * it): the same sum, rounded differently for the quantizer parameters of method qat. */
#ifndef QAT_TRAIN_ZERO_H
#define QAT_TRAIN_ZERO_H

#include "dist/dist.h"
#include "train/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_zero {
  qat_arena arena;
  int64_t bucket;          /* elements of each rank's shard per collective */
  qat_tensor send, recv;   /* [world * bucket], [bucket] */
} qat_zero;

/* o from qat_optim_init_shard with d's rank and world; bucket_bytes: the bytes of each rank's
 * slice per collective (dist.zero_bucket_mb; at least one element, at most the shard). */
qat_status qat_zero_init(qat_zero *z, const qat_optim *o, const qat_dist *d, double bucket_bytes);
void qat_zero_free(qat_zero *z);
/* Bytes of the buffers for flat_n parameters (0 in a world of one). */
size_t qat_zero_buffer_bytes(int64_t flat_n, int world, double bucket_bytes);
/* Step 1: the gradients summed across ranks into this rank's owned parts. */
qat_status qat_zero_reduce_grads(qat_zero *z, qat_dist *d, const qat_optim *o);
/* Step 3: every rank's owned parameters into all ranks' parameters. */
qat_status qat_zero_gather_params(qat_zero *z, qat_dist *d, const qat_optim *o);

#ifdef __cplusplus
}
#endif
#endif
