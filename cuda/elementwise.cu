// Elementwise dense ops on the CUDA backend (backend.h "dense"): axpy, scale, sumsq and the bias
// forward/backward. Each tensor may be F32 or BF16 on its own (e.g. a BF16 gradient added into an
// F32 accumulator); arithmetic is F32, except sumsq which accumulates in double.
#include "cuda/nn_common.cuh"

// ---- axpy: y += alpha * x; scale: x *= alpha ----------------------------------------------------
template <typename TX, typename TY>
__global__ void axpy_kernel(float alpha, const TX *x, TY *y, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    qat_st(y, i, qat_ld(y, i) + alpha * qat_ld(x, i));
}

template <typename T> __global__ void scale_kernel(float alpha, T *x, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    qat_st(x, i, alpha * qat_ld(x, i));
}

static qat_status cu_axpy(const qat_backend *be, float alpha, const qat_tensor *x, qat_tensor *y) {
  QAT_TRY(nn_check_float("axpy", x, "x"));
  QAT_TRY(nn_check_float("axpy", y, "y"));
  const int64_t n = qat_numel(y);
  QAT_TRY(nn_check_numel("axpy", x, "x", n));
  if (n == 0) return QAT_OK;
  unsigned blocks = nn_blocks(n, 256, 4, 8 * 65535);
  cudaStream_t s = qat_cuda(be)->stream;
  NN_DISPATCH(x->dtype, TX, NN_DISPATCH(y->dtype, TY, axpy_kernel<TX, TY><<<blocks, 256, 0, s>>>(
                                                          alpha, (const TX *)x->data,
                                                          (TY *)y->data, n)));
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

static qat_status cu_scale(const qat_backend *be, float alpha, qat_tensor *x) {
  QAT_TRY(nn_check_float("scale", x, "x"));
  const int64_t n = qat_numel(x);
  if (n == 0) return QAT_OK;
  unsigned blocks = nn_blocks(n, 256, 4, 8 * 65535);
  cudaStream_t s = qat_cuda(be)->stream;
  NN_DISPATCH(x->dtype, T, scale_kernel<T><<<blocks, 256, 0, s>>>(alpha, (T *)x->data, n));
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

// ---- sumsq: deterministic two-stage reduction into a double -------------------------------------
// Stage 1: a fixed number of blocks (a function of n only) each sum a grid-strided slice in double
// into part[block]; stage 2: one block adds the partials in a fixed order. NaN/Inf propagate
// through the sums.
#define SUMSQ_THREADS 256
#define SUMSQ_MAX_BLOCKS 1024

template <typename T>
__global__ void __launch_bounds__(SUMSQ_THREADS)
    sumsq_partial_kernel(const T *x, int64_t n, double *part) {
  __shared__ double sh[32];
  double acc = 0.0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    double v = (double)qat_ld(x, i);
    acc += v * v;
  }
  acc = nn_block_sum(acc, sh);
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

__global__ void __launch_bounds__(1024) sumsq_final_kernel(double *part, int nparts) {
  __shared__ double sh[32];
  double acc = 0.0;
  for (int i = threadIdx.x; i < nparts; i += blockDim.x) acc += part[i];
  acc = nn_block_sum(acc, sh);
  if (threadIdx.x == 0) part[nparts] = acc;
}

static qat_status cu_sumsq(const qat_backend *be, const qat_tensor *x, double *out) {
  QAT_TRY(nn_check_float("sumsq", x, "x"));
  if (!out) return QAT_FAIL(QAT_EINVAL, "cuda sumsq: out is NULL");
  const int64_t n = qat_numel(x);
  *out = 0.0;
  if (n == 0) return QAT_OK;
  const unsigned blocks = nn_blocks(n, SUMSQ_THREADS, 8, SUMSQ_MAX_BLOCKS);
  cudaStream_t s = qat_cuda(be)->stream;
  nn_scratch sc;
  QAT_TRY(nn_scratch_get(be, (blocks + 1) * sizeof(double), &sc));
  double *part = (double *)sc.p;
  NN_DISPATCH(x->dtype, T,
              sumsq_partial_kernel<T><<<blocks, SUMSQ_THREADS, 0, s>>>((const T *)x->data, n,
                                                                         part));
  QAT_CUDA_LAUNCHED();
  sumsq_final_kernel<<<1, 1024, 0, s>>>(part, (int)blocks);
  QAT_CUDA_LAUNCHED();
  QAT_CUDA_TRY(cudaMemcpyAsync(out, part + blocks, sizeof(double), cudaMemcpyDeviceToHost, s));
  QAT_CUDA_TRY(cudaStreamSynchronize(s));
  return nn_scratch_put(be, &sc);  // workspace-sized here: never owned, nothing leaks on errors
}

// ---- bias: y[N, C] += b[C]; db[C] += sum over rows of dy[N, C] -----------------------------------
template <typename TY, typename TB>
__global__ void bias_fwd_kernel(TY *y, const TB *b, int64_t n, int64_t C) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    qat_st(y, i, qat_ld(y, i) + qat_ld(b, i % C));
}

template <typename T> struct bias_rows {
  const T *dy;
  int64_t C;
  __device__ float operator()(int64_t n, int64_t c) const { return qat_ld(dy, n * C + c); }
};

static qat_status cu_bias_fwd(const qat_backend *be, qat_tensor *y, const qat_tensor *b) {
  QAT_TRY(nn_check_float("bias_fwd", y, "y"));
  QAT_TRY(nn_check_float("bias_fwd", b, "b"));
  // y is [N, C] with C its last dim, as on the CPU; C = 0 (or N = 0) is a no-op
  if (y->ndim < 1) return QAT_FAIL(QAT_EINVAL, "cuda bias_fwd: y %s has ndim 0", nn_name(y, "y"));
  const int64_t C = nn_last_dim(y), n = qat_numel(y);
  QAT_TRY(nn_check_numel("bias_fwd", b, "b", C));
  if (n == 0) return QAT_OK;
  unsigned blocks = nn_blocks(n, 256, 4, 8 * 65535);
  cudaStream_t s = qat_cuda(be)->stream;
  NN_DISPATCH(y->dtype, TY, NN_DISPATCH(b->dtype, TB, bias_fwd_kernel<TY, TB><<<blocks, 256, 0, s>>>(
                                                          (TY *)y->data, (const TB *)b->data, n,
                                                          C)));
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

static qat_status cu_bias_bwd(const qat_backend *be, const qat_tensor *dy, qat_tensor *db) {
  QAT_TRY(nn_check_float("bias_bwd", dy, "dy"));
  QAT_TRY(nn_check_float("bias_bwd", db, "db"));
  // dy is [N, C] with C its last dim, as on the CPU; C = 0 (or N = 0) is a no-op
  if (dy->ndim < 1)
    return QAT_FAIL(QAT_EINVAL, "cuda bias_bwd: dy %s has ndim 0", nn_name(dy, "dy"));
  const int64_t C = nn_last_dim(dy), n = qat_numel(dy);
  QAT_TRY(nn_check_numel("bias_bwd", db, "db", C));
  if (n == 0) return QAT_OK;
  const int64_t N = n / C;
  NN_DISPATCH(dy->dtype, TY, NN_DISPATCH(db->dtype, TB, {
                bias_rows<TY> f = {(const TY *)dy->data, C};
                QAT_TRY(nn_colsum(be, f, N, C, (TB *)db->data));
              }));
  return QAT_OK;
}

void qat_cuda_register_elementwise(qat_backend *be) {
  be->axpy = cu_axpy;
  be->scale = cu_scale;
  be->sumsq = cu_sumsq;
  be->bias_fwd = cu_bias_fwd;
  be->bias_bwd = cu_bias_bwd;
}
