/* The Block-AP activation cache: per calibration sample, tensors of [T, C] (the full-precision
 * inputs of the current block, its full-precision targets, and the quantized inputs), kept in
 * named sets of nsamples slots each. Slots are placed by size across three tiers - device memory,
 * host memory (pinned on CUDA) and disk files - filling the faster tiers first within the
 * budget; the placement plan (bytes per tier) is printed at creation. Reads of a slot on a slower
 * tier can be prefetched asynchronously (a background thread reads disk slots into host staging
 * buffers) so that streaming overlaps compute. Results never depend on the tier: a slot
 * round-trips bit-exactly wherever it lives. */
#ifndef QAT_TRAIN_ACTCACHE_H
#define QAT_TRAIN_ACTCACHE_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_actcache qat_actcache;

typedef struct qat_actcache_budget {
  size_t device_bytes; /* at most this much on the backend's device (CPU backend: its memory) */
  size_t host_bytes;   /* then at most this much in host memory */
  const char *disk_dir; /* then files here (NULL: no disk tier; creation fails if it won't fit) */
} qat_actcache_budget;

typedef struct qat_actcache_plan {
  int64_t slots_device, slots_host, slots_disk;
  size_t bytes_device, bytes_host, bytes_disk;
} qat_actcache_plan;

/* nsets sets x nsamples slots, each slot_elems elements of dtype (F32 or BF16). Placement is
 * per slot index across all sets (set-major within a tier). */
qat_status qat_actcache_create(const qat_backend *be, int nsets, int64_t nsamples,
                               int64_t slot_elems, qat_dtype dtype,
                               const qat_actcache_budget *budget, qat_actcache **out);
void qat_actcache_free(qat_actcache *c);
void qat_actcache_get_plan(const qat_actcache *c, qat_actcache_plan *p);
/* Copies src (on the backend's device, slot_elems elements of the cache dtype) into slot i of
 * set. */
qat_status qat_actcache_put(qat_actcache *c, int set, int64_t i, const qat_tensor *src);
/* Copies slot i of set into dst (on the backend's device). Waits for a pending prefetch. */
qat_status qat_actcache_get(qat_actcache *c, int set, int64_t i, qat_tensor *dst);
/* Counters for tests and logs: disk gets served by a prefetch, disk gets read synchronously,
 * prefetch hints dropped because the staging ring was full. */
void qat_actcache_stats(const qat_actcache *c, int64_t *hits, int64_t *sync_reads,
                        int64_t *dropped);
/* Hint: slot i of set will be read soon (starts the disk read in the background). */
qat_status qat_actcache_prefetch(qat_actcache *c, int set, int64_t i);

/* Batches of samples as rows of an F32 tensor (Block-AP, GPTQ): x = F32 [n*T, C] on the device,
 * slot i holding sample i's [T, C]. A BF16 cache goes through stage (the cache dtype, at least
 * [n*T, C]) with one convert per batch: rounding to nearest even on put, exact widening on get.
 * An F32 cache ignores stage (may be NULL then). */
qat_status qat_actcache_get_batch(qat_actcache *c, int set, int64_t i0, int n, int T,
                                  const qat_tensor *stage, qat_tensor *x);
qat_status qat_actcache_put_batch(qat_actcache *c, int set, int64_t i0, int n, int T,
                                  const qat_tensor *stage, const qat_tensor *x);
/* Hints slots [i0, i0 + n) clipped to [lo, hi). */
qat_status qat_actcache_prefetch_range(qat_actcache *c, int set, int64_t i0, int n, int64_t lo,
                                       int64_t hi);

#ifdef __cplusplus
}
#endif
#endif
