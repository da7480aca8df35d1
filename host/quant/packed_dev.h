/* A packed weight (quant/packed_layout.h) on a backend's device: the same descriptor, its three
 * buffers allocated with be->alloc and filled with be->upload, each followed by the layout's
 * QAT_PACKED_SLACK zero bytes. The CUDA qgemm reads this form as is (no reshuffle at load:
 * cuda/qgemm_mma.cu decodes the LSB-first streams in registers); on the CPU backend it is a plain
 * copy. A device descriptor must be released with qat_packed_free_on, never qat_packed_free. */
#ifndef QAT_QUANT_PACKED_DEV_H
#define QAT_QUANT_PACKED_DEV_H

#include "backend/backend.h"
#include "quant/packed_layout.h"

#ifdef __cplusplus
extern "C" {
#endif

/* *dst = src with its codes, scales and zeros copied into be's memory (name goes into the
 * messages). On failure nothing stays allocated and *dst is zeroed. */
qat_status qat_packed_upload(const qat_backend *be, const qat_packed *src, qat_packed *dst,
                             const char *name);
/* Frees what qat_packed_upload allocated on be and zeroes *p (a zeroed *p is a no-op). */
void qat_packed_free_on(const qat_backend *be, qat_packed *p);

#ifdef __cplusplus
}
#endif

#endif
