// Shared pieces of the CUDA backend: error checks that return qat_status (never exit), the
// backend context (stream, cuBLASLt handle and workspace), and registration hooks per op family.
#pragma once

#include "backend/backend.h"

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

struct qat_cuda_ctx {
  cudaStream_t stream;
  cublasLtHandle_t lt;
  void *workspace;
  size_t workspace_bytes;
  int sm_count;
};

static inline qat_cuda_ctx *qat_cuda(const qat_backend *be) { return (qat_cuda_ctx *)be->ctx; }

#define QAT_CUDA_TRY(call)                                                                         \
  do {                                                                                             \
    cudaError_t _e = (call);                                                                       \
    if (_e != cudaSuccess)                                                                         \
      return QAT_FAIL(QAT_EDEVICE, "CUDA: %s (%s)", cudaGetErrorString(_e), #call);              \
  } while (0)

// After a kernel launch: launch-configuration errors come back at once.
#define QAT_CUDA_LAUNCHED() QAT_CUDA_TRY(cudaGetLastError())

#define QAT_CUBLAS_TRY(call)                                                                       \
  do {                                                                                             \
    cublasStatus_t _e = (call);                                                                    \
    if (_e != CUBLAS_STATUS_SUCCESS)                                                               \
      return QAT_FAIL(QAT_EDEVICE, "cuBLASLt: status %d (%s)", (int)_e, #call);                   \
  } while (0)

// Loads/stores of one element of a float-family tensor as float.
__device__ __forceinline__ float qat_ld(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float qat_ld(const __nv_bfloat16 *p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void qat_st(float *p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void qat_st(__nv_bfloat16 *p, int64_t i, float v) {
  p[i] = __float2bfloat16_rn(v);
}

static inline int qat_is_float(const qat_tensor *t) {
  return t->dtype == QAT_F32 || t->dtype == QAT_BF16;
}

// Registration hooks (one per op family file).
void qat_cuda_register_quant(qat_backend *be);
void qat_cuda_register_nn(qat_backend *be);
void qat_cuda_register_codes(qat_backend *be); // codes.cu: dq_forward, dq_backward, fq_codes
void qat_cuda_register_qgemm(qat_backend *be); // qgemm.cu: qgemm on packed weights
