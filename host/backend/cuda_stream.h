/* The CUDA backend's compute stream, for host code that orders another stream after it (the
 * NCCL communicator's asynchronous gradient all-reduce, train/grad_bucket.c). */
#ifndef QAT_BACKEND_CUDA_STREAM_H
#define QAT_BACKEND_CUDA_STREAM_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* be's cudaStream_t; NULL for a host backend or a build without CUDA. */
#ifdef QAT_HAVE_CUDA
void *qat_cuda_compute_stream(const qat_backend *be); /* cuda/stream.cu */
#else
static inline void *qat_cuda_compute_stream(const qat_backend *be) {
  (void)be;
  return 0;
}
#endif

#ifdef __cplusplus
}
#endif
#endif
