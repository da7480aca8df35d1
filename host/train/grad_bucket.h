/* The bucketed gradient all-reduce of the data-parallel trainer (qat and e2e_qp without ZeRO-1;
 * REFERENCE.md section 11), started while the backward still runs.
 *
 * Layout: the buffers of qat_dist_grad_buffers in reverse layer order (layer L-1's first, ...,
 * layer 0's, then the final norm, lm_head and embeddings) form one virtual concatenation of N
 * elements, cut into buckets of `cap` elements (dist.bucket_mb; the last one short). A bucket
 * may end inside a tensor and the next one go on with it, so every bucket but the last is full.
 * Bucket b is ready once the backward has finished the lowest layer it touches (the head
 * tensors: the end of the backward, after the embedding gradient).
 *
 * The collective needs contiguous memory, so each bucket is copied into a staging slot (F32, or
 * BF16 for dist.grad_dtype bf16: rounded to nearest even there), all-reduced in the slot and
 * copied (converted) back. The cost: 2 x the gradient bytes of device copies per step and
 * QAT_GB_SLOTS x the bucket of staging memory; slot i % QAT_GB_SLOTS is reused by bucket i once
 * bucket i - QAT_GB_SLOTS is back (the compute stream waits for that one there).
 *
 * Streams: the copies run on the backend's compute stream; on NCCL the all-reduce runs on the
 * communicator's own stream after an event of the compute stream (dist.h allreduce_start) and
 * the copy back waits for it on the device (cudaStreamWaitEvent), so the later layers' backward
 * overlaps it. The MPI and single communicators reduce synchronously at start (the CPU backend
 * computes in the same thread: there is nothing to overlap with).
 *
 * Results: the sum of each element is the same collective over the same ranks as one
 * all-reduce per tensor, so F32 buckets give the unbucketed weights bit for bit on 2 ranks
 * (tests/test_dist_train.sh, several buckets). */
#ifndef QAT_TRAIN_GRAD_BUCKET_H
#define QAT_TRAIN_GRAD_BUCKET_H

#include "backend/backend.h"
#include "dist/dist.h"
#include "model/llama.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QAT_GB_SLOTS 4

typedef struct qat_grad_seg {
  void *data;       /* the gradient tensor's F32 buffer (device) */
  int64_t off, n;   /* elements [off, off + n) of it */
  int64_t at;       /* where they sit in the bucket */
} qat_grad_seg;

typedef struct qat_grad_bucket {
  int seg0, nseg;   /* its segments */
  int64_t n;        /* elements */
  int ready_layer;  /* ready once the backward finished this layer (-1: the whole backward) */
} qat_grad_bucket;

typedef struct qat_grad_buckets {
  qat_dist *d;
  qat_backend *be;
  void *stream;     /* the compute stream (CUDA), NULL on the host */
  qat_dtype wire;   /* F32 or BF16 */
  int64_t cap;      /* elements per bucket */
  void *slot[QAT_GB_SLOTS];
  void *req[QAT_GB_SLOTS];
  qat_grad_seg *seg;
  int nseg, segcap;
  qat_grad_bucket *bk;
  int nb, bkcap;
  int64_t total;    /* elements of all gradients */
  int next;         /* the next bucket to start */
  int back;         /* buckets copied back */
  int64_t wire_bytes; /* bytes handed to the collective so far (statistics, tests) */
  int64_t started;    /* buckets started so far, */
  int64_t early;      /* of which before the backward ended (hook with a layer >= 0) */
} qat_grad_buckets;

/* Staging for buckets of bucket_bytes (as F32 elements, at least 1) on be, wire dtype F32 or
 * BF16. Nothing is laid out until qat_grad_buckets_begin. */
qat_status qat_grad_buckets_init(qat_grad_buckets *g, qat_dist *d, qat_backend *be,
                                 qat_dtype wire, double bucket_bytes);
/* Lays the step's buckets out over m's gradient buffers (after qat_llama_zero_grad) and arms
 * m->bwd_hook, so the next qat_llama_backward starts each bucket when it is ready. */
qat_status qat_grad_buckets_begin(qat_grad_buckets *g, qat_llama *m);
/* The hook: layer l's gradients are final (-1: all of them). */
qat_status qat_grad_buckets_layer_done(void *g, int l);
/* Starts what is left, waits for every bucket (the last on the host too: dist.timeout_s) and
 * copies it back; disarms the hook. After it m's gradient buffers hold the sums. */
qat_status qat_grad_buckets_finish(qat_grad_buckets *g, qat_llama *m);
void qat_grad_buckets_free(qat_grad_buckets *g);

#ifdef __cplusplus
}
#endif
#endif
