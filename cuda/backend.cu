// The CUDA backend: memory ops and context; op families register themselves
// (fakequant.cu, nn*.cu). One stream per backend; every op is asynchronous on it and `sync`
// waits for it.
#include "cuda/common.cuh"

#include <cuda_fp16.h>
#include <string.h>

extern "C" int qat_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

static qat_status cu_alloc(const qat_backend *be, void **p, size_t bytes) {
  cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
  if (e != cudaSuccess) {
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    return QAT_FAIL(QAT_ENOMEM, "cuda: cannot allocate %.1f MiB (%.1f MiB free of %.1f MiB)",
                    bytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0);
  }
  return QAT_OK;
}
static void cu_free(const qat_backend *be, void *p) { cudaFree(p); }
static qat_status cu_memset0(const qat_backend *be, void *p, size_t bytes) {
  QAT_CUDA_TRY(cudaMemsetAsync(p, 0, bytes, qat_cuda(be)->stream));
  return QAT_OK;
}
static qat_status cu_upload(const qat_backend *be, void *dst, const void *src, size_t bytes) {
  QAT_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, qat_cuda(be)->stream));
  QAT_CUDA_TRY(cudaStreamSynchronize(qat_cuda(be)->stream));
  return QAT_OK;
}
static qat_status cu_download(const qat_backend *be, void *dst, const void *src, size_t bytes) {
  QAT_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, qat_cuda(be)->stream));
  QAT_CUDA_TRY(cudaStreamSynchronize(qat_cuda(be)->stream));
  return QAT_OK;
}
static qat_status cu_copy(const qat_backend *be, void *dst, const void *src, size_t bytes) {
  QAT_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, qat_cuda(be)->stream));
  return QAT_OK;
}
static qat_status cu_host_alloc(const qat_backend *be, void **p, size_t bytes) {
  cudaError_t e = cudaMallocHost(p, bytes ? bytes : 1);
  if (e != cudaSuccess)
    return QAT_FAIL(QAT_ENOMEM, "cuda: cannot allocate %.1f MiB of pinned host memory (%s)",
                    bytes / 1048576.0, cudaGetErrorString(e));
  return QAT_OK;
}
static void cu_host_free(const qat_backend *be, void *p) { cudaFreeHost(p); }
static qat_status cu_mem_info(const qat_backend *be, size_t *free_bytes, size_t *total_bytes) {
  QAT_CUDA_TRY(cudaMemGetInfo(free_bytes, total_bytes));
  return QAT_OK;
}
static qat_status cu_sync(const qat_backend *be) {
  QAT_CUDA_TRY(cudaStreamSynchronize(qat_cuda(be)->stream));
  return QAT_OK;
}

// ---- convert: dst = src between F32, BF16 and F16 ------------------------------------------------
// Bit for bit the CPU's conversions (host/core/tensor.c): widening is exact (a NaN keeps its sign
// and payload), narrowing rounds to nearest even and overflows to Inf, and a NaN narrows to its
// sign with the quiet bit set (BF16 keeps the payload's top bits, F16 becomes 0x7e00). The hardware
// conversions do the rest; NaN is handled apart because they return a canonical NaN instead.
// F16 <-> BF16 (which the CPU convert does in two steps through F32) goes through F32 here too:
// F32 holds every F16 and BF16 value exactly, so there is one rounding.
__device__ __forceinline__ float cv_ld(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float cv_ld(const __nv_bfloat16 *p, int64_t i) {
  return __uint_as_float((uint32_t)__bfloat16_as_ushort(p[i]) << 16);
}
__device__ __forceinline__ float cv_ld(const __half *p, int64_t i) {
  const uint32_t h = __half_as_ushort(p[i]);
  if ((h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0)
    return __uint_as_float(((h & 0x8000u) << 16) | 0x7f800000u | ((h & 0x03ffu) << 13));
  return __half2float(p[i]);
}
__device__ __forceinline__ void cv_st(float *p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void cv_st(__nv_bfloat16 *p, int64_t i, float v) {
  const uint32_t x = __float_as_uint(v);
  p[i] = isnan(v) ? __ushort_as_bfloat16((unsigned short)((x >> 16) | 0x40u))
                  : __float2bfloat16_rn(v);
}
__device__ __forceinline__ void cv_st(__half *p, int64_t i, float v) {
  const uint32_t x = __float_as_uint(v);
  p[i] = isnan(v) ? __ushort_as_half((unsigned short)(((x >> 16) & 0x8000u) | 0x7e00u))
                  : __float2half_rn(v);
}

template <typename TO, typename TI>
__global__ void convert_kernel(TO *dst, const TI *src, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    cv_st(dst, i, cv_ld(src, i));
}

static int cv_dtype_ok(qat_dtype t) { return t == QAT_F32 || t == QAT_BF16 || t == QAT_F16; }

// CV_DISPATCH(dt, T, body): body with T the element type of float dtype dt (F32, BF16 or F16).
#define CV_DISPATCH(dt, T, ...)                                                                    \
  do {                                                                                             \
    if ((dt) == QAT_F32) {                                                                         \
      typedef float T;                                                                             \
      __VA_ARGS__;                                                                                 \
    } else if ((dt) == QAT_BF16) {                                                                 \
      typedef __nv_bfloat16 T;                                                                     \
      __VA_ARGS__;                                                                                 \
    } else {                                                                                       \
      typedef __half T;                                                                            \
      __VA_ARGS__;                                                                                 \
    }                                                                                              \
  } while (0)

static qat_status cu_convert(const qat_backend *be, qat_tensor *dst, const qat_tensor *src) {
  int64_t n = qat_numel(src);
  if (qat_numel(dst) != n) return QAT_FAIL(QAT_EINVAL, "convert: numel mismatch");
  if (!cv_dtype_ok(dst->dtype) || !cv_dtype_ok(src->dtype))
    return QAT_FAIL(QAT_EUNSUPPORTED, "cuda convert %s -> %s", qat_dtype_name(src->dtype),
                    qat_dtype_name(dst->dtype));
  if (dst->dtype == src->dtype) return cu_copy(be, dst->data, src->data, qat_nbytes(src));
  if (n == 0) return QAT_OK;
  const int threads = 256;
  int64_t nb = (n + threads - 1) / threads;  // capped in 64 bits: the grid-stride loop does the rest
  if (nb > 65535 * 8) nb = 65535 * 8;
  const unsigned blocks = (unsigned)nb;
  cudaStream_t s = qat_cuda(be)->stream;
  CV_DISPATCH(dst->dtype, TO,
              CV_DISPATCH(src->dtype, TI,
                          convert_kernel<TO, TI><<<blocks, threads, 0, s>>>(
                              (TO *)dst->data, (const TI *)src->data, n)));
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

// Releases what qat_cuda_create made before one of its steps failed (a later call starts over).
static void ctx_release(qat_cuda_ctx *c) {
  if (c->workspace) cudaFree(c->workspace);
  if (c->lt) cublasLtDestroy(c->lt);
  if (c->stream) cudaStreamDestroy(c->stream);
  memset(c, 0, sizeof *c);
}

static qat_status ctx_init(qat_cuda_ctx *ctx) {
  // the current device (0 unless host/dist chose GPU local_rank before the backend was created)
  int cur = 0;
  QAT_CUDA_TRY(cudaGetDevice(&cur));
  QAT_CUDA_TRY(cudaSetDevice(cur));
  QAT_CUDA_TRY(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
  QAT_CUBLAS_TRY(cublasLtCreate(&ctx->lt));
  ctx->workspace_bytes = 32u << 20;
  QAT_CUDA_TRY(cudaMalloc(&ctx->workspace, ctx->workspace_bytes));
  int dev = 0;
  QAT_CUDA_TRY(cudaGetDevice(&dev));
  QAT_CUDA_TRY(cudaDeviceGetAttribute(&ctx->sm_count, cudaDevAttrMultiProcessorCount, dev));
  return QAT_OK;
}

extern "C" qat_status qat_cuda_create(qat_backend *be) {
  memset(be, 0, sizeof *be);
  static qat_cuda_ctx ctx;
  memset(&ctx, 0, sizeof ctx);
  qat_status st = ctx_init(&ctx);
  if (st != QAT_OK) {
    ctx_release(&ctx);
    return st;
  }
  be->name = "cuda";
  be->device = QAT_DEV_CUDA;
  be->ctx = &ctx;
  be->alloc = cu_alloc;
  be->free = cu_free;
  be->memset0 = cu_memset0;
  be->upload = cu_upload;
  be->download = cu_download;
  be->copy = cu_copy;
  be->sync = cu_sync;
  be->convert = cu_convert;
  be->host_alloc = cu_host_alloc;
  be->host_free = cu_host_free;
  be->mem_info = cu_mem_info;
  qat_cuda_register_quant(be);
  qat_cuda_register_nn(be);
  qat_cuda_register_codes(be);
  qat_cuda_register_qgemm(be);
  return QAT_OK;
}
