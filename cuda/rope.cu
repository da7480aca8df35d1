// Rotary position embedding on the CUDA backend (backend.h "LLaMA blocks"), in place on
// x[B, T, H, D] (F32 or BF16; exactly 4 dims, as on the CPU), Hugging Face rotate-half pairs
// (x[i], x[i + D/2]) for i < D/2. The angle is computed in F32 as (float)(pos0 + t) * inv_freq[i],
// as Hugging Face does, with the accurate sincosf. The backward is the same kernel rotating by -a
// (inverse != 0): a rotation's transpose is its inverse.
#include "cuda/nn_common.cuh"

template <typename T>
__global__ void rope_kernel(T *x, const float *inv_freq, int64_t npairs, int64_t T_, int64_t H,
                            int64_t half, int64_t pos0, float sign) {
  for (int64_t p = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; p < npairs;
       p += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = p % half;
    const int64_t row = p / half;  // (b * T + t) * H + h
    const int64_t t = (row / H) % T_;
    const float a = (float)(pos0 + t) * inv_freq[i];
    float sn, cs;
    sincosf(a, &sn, &cs);
    sn *= sign;
    T *xr = x + row * 2 * half;
    const float x1 = qat_ld(xr, i), x2 = qat_ld(xr, i + half);
    qat_st(xr, i, x1 * cs - x2 * sn);
    qat_st(xr, i + half, x2 * cs + x1 * sn);
  }
}

static qat_status cu_rope(const qat_backend *be, qat_tensor *x, const qat_tensor *inv_freq,
                          int64_t pos0, int inverse) {
  QAT_TRY(nn_check_float("rope", x, "x"));
  QAT_TRY(nn_check_dtype("rope", inv_freq, "inv_freq", QAT_F32));
  if (x->ndim != 4)
    return QAT_FAIL(QAT_EINVAL, "cuda rope: x %s must be [B, T, H, D] (ndim %d)", nn_name(x, "x"),
                    x->ndim);
  const int64_t T_ = x->shape[1], H = x->shape[2], D = x->shape[3];
  if (D % 2 != 0)
    return QAT_FAIL(QAT_EINVAL, "cuda rope: x %s head dim %lld is odd", nn_name(x, "x"),
                    (long long)D);
  QAT_TRY(nn_check_numel("rope", inv_freq, "inv_freq", D / 2));
  if (pos0 < 0)
    return QAT_FAIL(QAT_EINVAL, "cuda rope: pos0 = %lld is negative", (long long)pos0);
  const int64_t npairs = qat_numel(x) / 2;
  if (npairs == 0) return QAT_OK;
  cudaStream_t s = qat_cuda(be)->stream;
  unsigned blocks = nn_blocks(npairs, 256, 2, 8 * 65535);
  NN_DISPATCH(x->dtype, T,
              rope_kernel<T><<<blocks, 256, 0, s>>>((T *)x->data,
                                                    (const float *)inv_freq->data, npairs, T_, H,
                                                    D / 2, pos0, inverse ? -1.0f : 1.0f));
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

void qat_cuda_register_rope(qat_backend *be) { be->rope = cu_rope; }
