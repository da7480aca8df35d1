// SwiGLU on the CUDA backend (backend.h "LLaMA blocks"), forward and backward side by side.
// gate, up, out, dout, dgate, dup [N, F] share one dtype (F32 or BF16); math in F32 with the
// accurate expf.
//   forward:  out = silu(g) * u,  silu(g) = g * sigmoid(g)
//   backward: dgate = dout * u * sigmoid(g) * (1 + g * (1 - sigmoid(g)));  dup = dout * silu(g)
#include "cuda/nn_common.cuh"

__device__ __forceinline__ float swiglu_sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

template <typename T>
__global__ void swiglu_fwd_kernel(const T *gate, const T *up, T *out, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const float g = qat_ld(gate, i);
    qat_st(out, i, g * swiglu_sigmoid(g) * qat_ld(up, i));
  }
}

template <typename T>
__global__ void swiglu_bwd_kernel(const T *dout, const T *gate, const T *up, T *dgate, T *dup,
                                  int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const float g = qat_ld(gate, i), u = qat_ld(up, i), d = qat_ld(dout, i);
    const float sg = swiglu_sigmoid(g);
    qat_st(dgate, i, d * u * sg * (1.0f + g * (1.0f - sg)));
    qat_st(dup, i, d * g * sg);
  }
}

static qat_status sw_check(const char *op, const qat_tensor *ref, const char *rref,
                           const qat_tensor *t, const char *role) {
  QAT_TRY(nn_check_float(op, t, role));
  QAT_TRY(nn_check_same_dtype(op, ref, rref, t, role));
  return nn_check_numel(op, t, role, qat_numel(ref));
}

static qat_status cu_swiglu_fwd(const qat_backend *be, const qat_tensor *gate,
                                const qat_tensor *up, qat_tensor *out) {
  QAT_TRY(nn_check_float("swiglu_fwd", gate, "gate"));
  QAT_TRY(sw_check("swiglu_fwd", gate, "gate", up, "up"));
  QAT_TRY(sw_check("swiglu_fwd", gate, "gate", out, "out"));
  const int64_t n = qat_numel(gate);
  if (n == 0) return QAT_OK;
  cudaStream_t s = qat_cuda(be)->stream;
  unsigned blocks = nn_blocks(n, 256, 4, 8 * 65535);
  NN_DISPATCH(gate->dtype, T,
              swiglu_fwd_kernel<T><<<blocks, 256, 0, s>>>((const T *)gate->data,
                                                          (const T *)up->data, (T *)out->data, n));
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

static qat_status cu_swiglu_bwd(const qat_backend *be, const qat_tensor *dout,
                                const qat_tensor *gate, const qat_tensor *up, qat_tensor *dgate,
                                qat_tensor *dup) {
  QAT_TRY(nn_check_float("swiglu_bwd", gate, "gate"));
  QAT_TRY(sw_check("swiglu_bwd", gate, "gate", up, "up"));
  QAT_TRY(sw_check("swiglu_bwd", gate, "gate", dout, "dout"));
  QAT_TRY(sw_check("swiglu_bwd", gate, "gate", dgate, "dgate"));
  QAT_TRY(sw_check("swiglu_bwd", gate, "gate", dup, "dup"));
  const int64_t n = qat_numel(gate);
  if (n == 0) return QAT_OK;
  cudaStream_t s = qat_cuda(be)->stream;
  unsigned blocks = nn_blocks(n, 256, 4, 8 * 65535);
  NN_DISPATCH(gate->dtype, T,
              swiglu_bwd_kernel<T><<<blocks, 256, 0, s>>>(
                  (const T *)dout->data, (const T *)gate->data, (const T *)up->data,
                  (T *)dgate->data, (T *)dup->data, n));
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

void qat_cuda_register_swiglu(qat_backend *be) {
  be->swiglu_fwd = cu_swiglu_fwd;
  be->swiglu_bwd = cu_swiglu_bwd;
}
