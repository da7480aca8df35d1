// Private helpers of the CUDA NN op families (gemm.cu, elementwise.cu, embedding.cu, rmsnorm.cu,
// rope.cu, attention.cu, swiglu.cu, xent.cu, adamw.cu): argument checks that name the op and the
// tensor, dtype dispatch, grid sizing, deterministic block reductions and scratch memory.
// Everything here is static inline / templates so each .cu stays its own translation unit.
#pragma once

#include "cuda/common.cuh"

#include <math.h>
#include <stdint.h>

// Registration hooks, one per family file; cuda/nn.cu calls them all.
void qat_cuda_register_gemm(qat_backend *be);
void qat_cuda_register_elementwise(qat_backend *be);
void qat_cuda_register_embedding(qat_backend *be);
void qat_cuda_register_rmsnorm(qat_backend *be);
void qat_cuda_register_rope(qat_backend *be);
void qat_cuda_register_attention(qat_backend *be);
void qat_cuda_register_swiglu(qat_backend *be);
void qat_cuda_register_xent(qat_backend *be);
void qat_cuda_register_adamw(qat_backend *be);

// ---- argument checks (each returns a QAT_FAIL naming the op and the tensor) ----------------------

static inline const char *nn_name(const qat_tensor *t, const char *role) {
  return t && t->name ? t->name : role;
}

// t's ndim is in [0, QAT_MAX_DIMS] and no dim is negative, as the CPU backend's qat_cpu_check_arg
// checks (after the device, before the dtype, in the same order). Every op reaches it through
// nn_check_float / nn_check_dtype, so qat_numel and the shape checks below see a sane shape.
static inline qat_status nn_check_dims(const char *op, const qat_tensor *t, const char *role) {
  if (t->ndim < 0 || t->ndim > QAT_MAX_DIMS)
    return QAT_FAIL(QAT_EINVAL, "cuda %s: tensor %s has ndim %d", op, nn_name(t, role), t->ndim);
  for (int i = 0; i < t->ndim; i++)
    if (t->shape[i] < 0)
      return QAT_FAIL(QAT_EINVAL, "cuda %s: tensor %s has a negative dim", op, nn_name(t, role));
  return QAT_OK;
}

// t is non-NULL, lives on the CUDA device and is F32 or BF16.
static inline qat_status nn_check_float(const char *op, const qat_tensor *t, const char *role) {
  if (!t) return QAT_FAIL(QAT_EINVAL, "cuda %s: tensor %s is NULL", op, role);
  if (t->device != QAT_DEV_CUDA)
    return QAT_FAIL(QAT_EINVAL, "cuda %s: tensor %s is not on the CUDA device", op,
                    nn_name(t, role));
  QAT_TRY(nn_check_dims(op, t, role));
  if (!qat_is_float(t))
    return QAT_FAIL(QAT_EUNSUPPORTED, "cuda %s: tensor %s has dtype %s (expected F32 or BF16)", op,
                    nn_name(t, role), qat_dtype_name(t->dtype));
  if (!t->data && qat_numel(t) > 0)
    return QAT_FAIL(QAT_EINVAL, "cuda %s: tensor %s has no data", op, nn_name(t, role));
  return QAT_OK;
}

// t is non-NULL, on the device and of exactly dtype dt.
static inline qat_status nn_check_dtype(const char *op, const qat_tensor *t, const char *role,
                                        qat_dtype dt) {
  if (!t) return QAT_FAIL(QAT_EINVAL, "cuda %s: tensor %s is NULL", op, role);
  if (t->device != QAT_DEV_CUDA)
    return QAT_FAIL(QAT_EINVAL, "cuda %s: tensor %s is not on the CUDA device", op,
                    nn_name(t, role));
  QAT_TRY(nn_check_dims(op, t, role));
  if (t->dtype != dt)
    return QAT_FAIL(QAT_EUNSUPPORTED, "cuda %s: tensor %s has dtype %s (expected %s)", op,
                    nn_name(t, role), qat_dtype_name(t->dtype), qat_dtype_name(dt));
  if (!t->data && qat_numel(t) > 0)
    return QAT_FAIL(QAT_EINVAL, "cuda %s: tensor %s has no data", op, nn_name(t, role));
  return QAT_OK;
}

static inline qat_status nn_check_numel(const char *op, const qat_tensor *t, const char *role,
                                        int64_t want) {
  if (qat_numel(t) != want) {
    char buf[64];
    return QAT_FAIL(QAT_EINVAL, "cuda %s: tensor %s has shape %s (%lld elements, expected %lld)",
                    op, nn_name(t, role), qat_shape_str(t, buf, sizeof buf),
                    (long long)qat_numel(t), (long long)want);
  }
  return QAT_OK;
}

static inline qat_status nn_check_same_dtype(const char *op, const qat_tensor *a, const char *ra,
                                             const qat_tensor *b, const char *rb) {
  if (a->dtype != b->dtype)
    return QAT_FAIL(QAT_EUNSUPPORTED, "cuda %s: tensors %s (%s) and %s (%s) must share a dtype",
                    op, nn_name(a, ra), qat_dtype_name(a->dtype), nn_name(b, rb),
                    qat_dtype_name(b->dtype));
  return QAT_OK;
}

// a and b have the same ndim and dims (the CPU backend's CPU_SAME).
static inline qat_status nn_check_same(const char *op, const qat_tensor *a, const char *ra,
                                       const qat_tensor *b, const char *rb) {
  int same = a->ndim == b->ndim;
  for (int i = 0; same && i < a->ndim; i++) same = a->shape[i] == b->shape[i];
  if (same) return QAT_OK;
  char sa[64], sb[64];
  return QAT_FAIL(QAT_EINVAL, "cuda %s: tensor %s has shape %s (expected %s's shape %s)", op,
                  nn_name(b, rb), qat_shape_str(b, sb, sizeof sb), nn_name(a, ra),
                  qat_shape_str(a, sa, sizeof sa));
}

// t has ndim >= 1 and its last dim is `cols` (t is then [rows, cols], rows = the product of the
// leading dims), as the CPU backend's CPU_COLS checks.
static inline qat_status nn_check_cols(const char *op, const qat_tensor *t, const char *role,
                                       int64_t cols) {
  if (t->ndim >= 1 && t->shape[t->ndim - 1] == cols) return QAT_OK;
  char buf[64];
  return QAT_FAIL(QAT_EINVAL, "cuda %s: tensor %s has shape %s (expected a last dim of %lld)", op,
                  nn_name(t, role), qat_shape_str(t, buf, sizeof buf), (long long)cols);
}

// The byte ranges of a and b intersect (device pointers share one address space).
static inline int nn_overlaps(const qat_tensor *a, const qat_tensor *b) {
  const uintptr_t a0 = (uintptr_t)a->data, a1 = a0 + qat_nbytes(a);
  const uintptr_t b0 = (uintptr_t)b->data, b1 = b0 + qat_nbytes(b);
  return a0 < b1 && b0 < a1;
}

// Last dimension of a tensor (its row length C); 1 for a scalar-like 0-dim tensor.
static inline int64_t nn_last_dim(const qat_tensor *t) {
  return t->ndim > 0 ? t->shape[t->ndim - 1] : 1;
}

// ---- dtype dispatch ----------------------------------------------------------------------------
// NN_DISPATCH(dt, T, body): body is compiled once with T = float and once with T = __nv_bfloat16
// and the one matching dt runs (dt already checked to be F32 or BF16).
#define NN_DISPATCH(dt, T, ...)                                                                    \
  do {                                                                                             \
    if ((dt) == QAT_F32) {                                                                         \
      typedef float T;                                                                             \
      __VA_ARGS__;                                                                                 \
    } else {                                                                                       \
      typedef __nv_bfloat16 T;                                                                     \
      __VA_ARGS__;                                                                                 \
    }                                                                                              \
  } while (0)

// ---- grid sizing ---------------------------------------------------------------------------------
// Blocks for a grid-stride loop over n items with `threads` threads each handling `per_thread`
// items: at least 1, at most `cap` (the loop covers the rest), always within gridDim.x limits.
static inline unsigned nn_blocks(int64_t n, int threads, int per_thread, int64_t cap) {
  int64_t per_block = (int64_t)threads * per_thread;
  int64_t b = (n + per_block - 1) / per_block;
  if (b > cap) b = cap;
  if (b < 1) b = 1;
  return (unsigned)b;
}

// ---- reductions (fixed order: deterministic run to run) ------------------------------------------
template <typename F> __device__ __forceinline__ F nn_warp_sum(F v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename F> __device__ __forceinline__ F nn_warp_max(F v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum, returned to every thread. blockDim.x must be a multiple of 32 (<= 1024); sh is
// __shared__ F[32]. Safe to call repeatedly with the same sh (leading barrier).
template <typename F> __device__ __forceinline__ F nn_block_sum(F v, F *sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = nn_warp_sum(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : (F)0;
  return nn_warp_sum(v);
}

// ---- scratch memory ------------------------------------------------------------------------------
// Ops run in order on the backend's one stream, so between kernels an op may borrow the context
// workspace (cuBLASLt uses it only inside gemm). Larger requests fall back to the stream-ordered
// allocator (pooled by the driver after the first call).
struct nn_scratch {
  void *p;
  int owned;
};

static inline qat_status nn_scratch_get(const qat_backend *be, size_t bytes, nn_scratch *s) {
  qat_cuda_ctx *c = qat_cuda(be);
  s->p = NULL;
  s->owned = 0;
  if (bytes <= c->workspace_bytes) {
    s->p = c->workspace;
    return QAT_OK;
  }
  cudaError_t e = cudaMallocAsync(&s->p, bytes, c->stream);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return QAT_FAIL(QAT_ENOMEM, "cuda: cannot allocate %.1f MiB of scratch", bytes / 1048576.0);
  }
  s->owned = 1;
  return QAT_OK;
}

static inline qat_status nn_scratch_put(const qat_backend *be, nn_scratch *s) {
  if (s->owned) QAT_CUDA_TRY(cudaFreeAsync(s->p, qat_cuda(be)->stream));
  s->p = NULL;
  s->owned = 0;
  return QAT_OK;
}

// Copies a device int (written by an earlier kernel on the stream) to the host and waits: used by
// ops whose contract says an index is checked (tokens, targets).
static inline qat_status nn_read_flag(const qat_backend *be, const int *dflag, int *out) {
  cudaStream_t s = qat_cuda(be)->stream;
  QAT_CUDA_TRY(cudaMemcpyAsync(out, dflag, sizeof(int), cudaMemcpyDeviceToHost, s));
  QAT_CUDA_TRY(cudaStreamSynchronize(s));
  return QAT_OK;
}

// ---- column sums (bias and norm-weight gradients) ------------------------------------------------
// dst[c] += sum over n < N of f(n, c), for a row-major [N, C] source read through the functor f.
// Two stages so that few columns still fill the GPU, with a fixed summation order (deterministic):
// stage 1: block (32, 8) sums a chunk of rows for 32 columns into part[R, C]; stage 2 adds the R
// partials in order. R depends only on N and C.
#define NN_COLSUM_ROWS_MIN 64

template <typename F>
__global__ void __launch_bounds__(256)
    nn_colsum_partial_kernel(F f, int64_t N, int64_t C, int64_t rows_per, float *part) {
  __shared__ float sh[8][33];
  const int64_t c = blockIdx.x * 32ll + threadIdx.x;
  const int64_t r0 = blockIdx.y * rows_per;
  const int64_t r1 = r0 + rows_per < N ? r0 + rows_per : N;
  float acc = 0.0f;
  if (c < C)
    for (int64_t n = r0 + threadIdx.y; n < r1; n += 8) acc += f(n, c);
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; i++) s += sh[i][threadIdx.x];
    part[blockIdx.y * C + c] = s;
  }
}

template <typename TD>
__global__ void nn_colsum_final_kernel(const float *part, int64_t R, int64_t C, TD *dst) {
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < C;
       c += (int64_t)gridDim.x * blockDim.x) {
    float s = 0.0f;
    for (int64_t r = 0; r < R; r++) s += part[r * C + c];
    qat_st(dst, c, qat_ld(dst, c) + s);
  }
}

template <typename F, typename TD>
static qat_status nn_colsum(const qat_backend *be, F f, int64_t N, int64_t C, TD *dst) {
  if (C == 0) return QAT_OK;
  qat_cuda_ctx *ctx = qat_cuda(be);
  const int64_t gx = (C + 31) / 32;
  int64_t R = (N + NN_COLSUM_ROWS_MIN - 1) / NN_COLSUM_ROWS_MIN;
  int64_t want = 1024 / gx;  // aim at ~1024 blocks in all
  if (want < 1) want = 1;
  if (R > want) R = want;
  int64_t fit = (int64_t)(ctx->workspace_bytes / ((size_t)C * sizeof(float)));
  if (fit >= 1 && R > fit) R = fit;  // stay in the workspace when it can hold one row of partials
  if (R < 1) R = 1;
  const int64_t rows_per = (N + R - 1) / R > 0 ? (N + R - 1) / R : 1;
  if (gx > 0x7fffffffll) return QAT_FAIL(QAT_EUNSUPPORTED, "cuda colsum: C = %lld too large", (long long)C);
  nn_scratch sc;
  QAT_TRY(nn_scratch_get(be, (size_t)R * C * sizeof(float), &sc));
  nn_colsum_partial_kernel<<<dim3((unsigned)gx, (unsigned)R), dim3(32, 8), 0, ctx->stream>>>(
      f, N, C, rows_per, (float *)sc.p);
  cudaError_t e1 = cudaGetLastError();
  if (e1 == cudaSuccess) {
    nn_colsum_final_kernel<<<nn_blocks(C, 256, 1, 65535), 256, 0, ctx->stream>>>(
        (const float *)sc.p, R, C, dst);
    e1 = cudaGetLastError();
  }
  QAT_TRY(nn_scratch_put(be, &sc));
  if (e1 != cudaSuccess)
    return QAT_FAIL(QAT_EDEVICE, "CUDA: %s (column-sum launch)", cudaGetErrorString(e1));
  return QAT_OK;
}

// ---- index validation before anything is written ------------------------------------------------
// Ops whose contract checks indices (embedding tokens, xent targets) validate them in a pre-pass
// and fail before touching any output, as the CPU backend does. Costs one stream sync per call.
static __global__ void nn_ids_check_kernel(const int32_t *ids, int64_t n, int32_t lo, int64_t hi,
                                           int *bad) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int32_t v = ids[i];
    if (v < lo || (int64_t)v >= hi) *bad = 1;  // benign race: every writer stores 1
  }
}

// QAT_EINVAL naming op and tensor when some id of ids (I32, on the device) is outside [lo, hi).
static inline qat_status nn_check_ids(const qat_backend *be, const char *op, const qat_tensor *ids,
                                      const char *role, int32_t lo, int64_t hi) {
  const int64_t n = qat_numel(ids);
  if (n == 0) return QAT_OK;
  cudaStream_t s = qat_cuda(be)->stream;
  nn_scratch sc;
  QAT_TRY(nn_scratch_get(be, sizeof(int), &sc));  // fits the workspace: never owned
  int *bad = (int *)sc.p;
  QAT_CUDA_TRY(cudaMemsetAsync(bad, 0, sizeof(int), s));
  nn_ids_check_kernel<<<nn_blocks(n, 256, 4, 4096), 256, 0, s>>>((const int32_t *)ids->data, n,
                                                                 lo, hi, bad);
  QAT_CUDA_LAUNCHED();
  int h_bad = 0;
  QAT_TRY(nn_read_flag(be, bad, &h_bad));
  if (h_bad)
    return QAT_FAIL(QAT_EINVAL, "cuda %s: %s holds an id outside [%d, %lld)", op,
                    nn_name(ids, role), (int)lo, (long long)hi);
  return QAT_OK;
}
