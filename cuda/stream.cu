// The backend's compute stream for host code that orders other streams after it (the NCCL
// communicator's asynchronous gradient all-reduce, train/grad_bucket.c).
#include "cuda/common.cuh"
#include "backend/cuda_stream.h"

extern "C" void *qat_cuda_compute_stream(const qat_backend *be) {
  return be && be->device == QAT_DEV_CUDA ? (void *)qat_cuda(be)->stream : nullptr;
}
