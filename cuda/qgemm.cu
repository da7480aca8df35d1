// qgemm on the CUDA backend (backend.h "dense"; the CPU twin is host/backend/cpu/qgemm.c):
//   trans 0: y[M, N] = x[M, K] @ dequant(W)^T      trans 1: y[M, K] = x[M, N] @ dequant(W)
// x, y F32 device tensors; W a qat_packed descriptor (host struct) whose codes, scales and zeros
// are device buffers in the packed layout as stored (quant/packed_dev.h uploads one; no
// load-time reshuffle: the fused kernel reads the LSB-first streams directly).
// NEVER RUN ON A GPU yet: written and compiled on a machine without one.
//
// Paths:
// - trans 0, M <= QAT_CUDA_QGEMM_FUSED_M (default 64) and every 16-column step inside one group
//   (group % 16 == 0 or per-channel): the fused tensor-core kernel (qgemm_mma.cu), x rounded to
//   BF16, W read once as codes (per 64-row chunk of x).
// - otherwise (trans 1, larger M, odd groups): W dequantized to BF16 [N, K] with the CPU's
//   arithmetic ((q - zp) * s in float, then one RNE rounding), x rounded to BF16, and the
//   backend's cuBLASLt gemm (BF16 x BF16 -> F32, FP32 accumulation). At large M the product is
//   compute bound and cuBLASLt's kernels win; trans 1 is the training backward only.
// Scratch (the BF16 x, split-K partials, the BF16 weight) lives in one buffer that grows to the
// largest call and is kept for the process (the op runs on one stream, so reuse is ordered):
// 2 N K bytes for the dequantize path (90 MB for Llama-2-7B's 11008 x 4096 Linear).
#include "cuda/qgemm.cuh"

#include <cuda_fp16.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

// x[M, in] F32 -> xb[M, ld] BF16 (round to nearest even), columns in .. ld-1 zero.
__global__ void qg_x_to_bf16_kernel(const float *x, int64_t M, int64_t in, int64_t ld,
                                    __nv_bfloat16 *xb) {
  const int64_t n = M * ld;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t m = i / ld, k = i % ld;
    xb[i] = k < in ? __float2bfloat16_rn(x[m * in + k]) : __float2bfloat16_rn(0.0f);
  }
}

// wb[N, K] BF16 = RNE((q - zp) * s), the CPU's float arithmetic (qgemm.c dequant_cols).
__global__ void qg_dequant_kernel(const uint8_t *codes, int64_t row_bytes, const uint8_t *zeros,
                                  int64_t zrow_bytes, const void *scales, int sf16, int sym,
                                  int bits, int64_t group, int64_t G, int64_t N, int64_t K,
                                  __nv_bfloat16 *wb) {
  const unsigned mask = (1u << bits) - 1u;
  for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
    const uint8_t *row = codes + n * row_bytes;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < K;
         k += (int64_t)gridDim.x * blockDim.x) {
      // b + 7 <= 15 bits: two bytes (the streams have QAT_PACKED_SLACK bytes after them)
      const int64_t bit = k * bits;
      const unsigned v = (unsigned)row[bit >> 3] | ((unsigned)row[(bit >> 3) + 1] << 8);
      const unsigned q = (v >> (bit & 7)) & mask;
      const int64_t j = k / group;
      const float s = sf16 ? __half2float(((const __half *)scales)[n * G + j])
                           : ((const float *)scales)[n * G + j];
      float zp;
      if (sym) {
        zp = (float)(1 << (bits - 1));
      } else {
        const uint8_t *zr = zeros + n * zrow_bytes;
        const int64_t zb = j * bits;
        const unsigned zv = (unsigned)zr[zb >> 3] | ((unsigned)zr[(zb >> 3) + 1] << 8);
        zp = (float)((zv >> (zb & 7)) & mask);
      }
      wb[n * K + k] = __float2bfloat16_rn(((float)q - zp) * s);
    }
  }
}

// ---- scratch -----------------------------------------------------------------------------------
static void *g_ws;
static size_t g_ws_bytes;

static qat_status qg_scratch(size_t bytes, void **p) {
  if (bytes > g_ws_bytes) {
    if (g_ws) cudaFree(g_ws); // synchronizes: earlier calls are done with it
    g_ws = NULL;
    g_ws_bytes = 0;
    cudaError_t e = cudaMalloc(&g_ws, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      g_ws = NULL;
      return QAT_FAIL(QAT_ENOMEM, "cuda qgemm: cannot allocate %.1f MiB of scratch",
                      bytes / 1048576.0);
    }
    g_ws_bytes = bytes;
  }
  *p = g_ws;
  return QAT_OK;
}

static size_t qg_round256(size_t b) { return (b + 255) / 256 * 256; }

static int qg_on_device(const void *p) {
  cudaPointerAttributes at;
  if (cudaPointerGetAttributes(&at, p) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return at.type == cudaMemoryTypeDevice || at.type == cudaMemoryTypeManaged;
}

// Largest M the fused kernel takes (read per call, so a test or benchmark can move the crossover
// and measure both sides; 0 sends every call to the dequantize path).
static int64_t qg_fused_max(void) {
  const char *e = getenv("QAT_CUDA_QGEMM_FUSED_M");
  const int64_t v = e && *e ? atoll(e) : QG_MMA_MAX_ROWS;
  return v < 0 ? 0 : v;
}

static qat_status qg_launch_x(const qat_backend *be, const float *x, int64_t M, int64_t in,
                              int64_t ld, __nv_bfloat16 *xb) {
  qg_x_to_bf16_kernel<<<nn_blocks(M * ld, 256, 4, 65535), 256, 0, qat_cuda(be)->stream>>>(
      x, M, in, ld, xb);
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

// ---- the two paths -------------------------------------------------------------------------------
static qat_status qg_fused(const qat_backend *be, const qat_packed *w, int64_t M, const float *x,
                           float *y) {
  const int64_t K = w->K, N = w->N, Kp = (K + QG_KT - 1) / QG_KT * QG_KT;
  const int64_t mc = M < QG_MMA_MAX_ROWS ? M : QG_MMA_MAX_ROWS;
  const size_t xb_bytes = qg_round256((size_t)(M * Kp) * 2);
  const size_t part_bytes = (size_t)qg_mma_part_floats(be, mc, N, K) * 4;
  void *ws = NULL;
  QAT_TRY(qg_scratch(xb_bytes + part_bytes, &ws));
  __nv_bfloat16 *xb = (__nv_bfloat16 *)ws;
  float *part = part_bytes ? (float *)((char *)ws + xb_bytes) : NULL;
  QAT_TRY(qg_launch_x(be, x, M, K, Kp, xb));
  for (int64_t m0 = 0; m0 < M; m0 += QG_MMA_MAX_ROWS) {
    const int64_t r = M - m0 < QG_MMA_MAX_ROWS ? M - m0 : QG_MMA_MAX_ROWS;
    QAT_TRY(qg_mma_forward(be, w, r, xb + m0 * Kp, Kp, y + m0 * N, part));
  }
  return QAT_OK;
}

static qat_status qg_dequant_gemm(const qat_backend *be, int trans, const qat_packed *w,
                                  int64_t M, const qat_tensor *x, qat_tensor *y) {
  const int64_t N = w->N, K = w->K, in = trans ? N : K;
  const size_t wb_bytes = qg_round256((size_t)(N * K) * 2), xb_bytes = (size_t)(M * in) * 2;
  void *ws = NULL;
  QAT_TRY(qg_scratch(wb_bytes + xb_bytes, &ws));
  __nv_bfloat16 *wb = (__nv_bfloat16 *)ws, *xb = (__nv_bfloat16 *)((char *)ws + wb_bytes);
  cudaStream_t s = qat_cuda(be)->stream;
  const unsigned gx = (unsigned)((K + 255) / 256 < 64 ? (K + 255) / 256 : 64);
  const unsigned gy = (unsigned)(N < 65535 ? N : 65535);
  qg_dequant_kernel<<<dim3(gx, gy), 256, 0, s>>>(w->codes, w->row_bytes, w->zeros, w->zrow_bytes,
                                                 w->scales, w->sdtype == QAT_F16, w->sym, w->bits,
                                                 w->group, w->G, N, K, wb);
  QAT_CUDA_LAUNCHED();
  QAT_TRY(qg_launch_x(be, (const float *)x->data, M, in, in, xb));
  qat_tensor txb = qat_view2(xb, QAT_BF16, QAT_DEV_CUDA, M, in);
  qat_tensor twb = qat_view2(wb, QAT_BF16, QAT_DEV_CUDA, N, K);
  txb.name = "qgemm x (BF16)";
  twb.name = "qgemm dequantized W (BF16)";
  if (!trans) return QAT_OP(be, gemm, 0, 1, M, N, K, 1.0f, &txb, &twb, 0.0f, y);
  return QAT_OP(be, gemm, 0, 0, M, K, N, 1.0f, &txb, &twb, 0.0f, y);
}

// ---- the op ------------------------------------------------------------------------------------
static qat_status qg_check_f32(const char *op, const qat_tensor *t, const char *role) {
  QAT_TRY(nn_check_float(op, t, role));
  if (t->dtype != QAT_F32)
    return QAT_FAIL(QAT_EUNSUPPORTED, "cuda %s: tensor %s is %s; qgemm takes F32 here", op,
                    nn_name(t, role), qat_dtype_name(t->dtype));
  if (!t->data && qat_numel(t) > 0)
    return QAT_FAIL(QAT_EINVAL, "cuda %s: tensor %s has no data", op, nn_name(t, role));
  return QAT_OK;
}

static qat_status cu_qgemm(const qat_backend *be, int trans, int64_t M, const qat_packed *w,
                           const qat_tensor *x, qat_tensor *y) {
  const char *op = "qgemm";
  // the CPU op's checks and messages (host/backend/cpu/qgemm.c), then the device's own
  if (!w || !w->codes || !w->scales || (!w->sym && !w->zeros))
    return QAT_FAIL(QAT_EINVAL, "qgemm: packed weight missing or empty");
  if (w->bits < 2 || w->bits > 8 || w->group <= 0 || w->K % w->group != 0 ||
      w->G != w->K / w->group || w->row_bytes != qat_packed_stream_bytes(w->K, w->bits) ||
      (!w->sym && w->zrow_bytes != qat_packed_stream_bytes(w->G, w->bits)) ||
      (w->sdtype != QAT_F32 && w->sdtype != QAT_F16))
    return QAT_FAIL(QAT_EINVAL, "qgemm: inconsistent packed weight (bits %d, group %d, K %lld)",
                    w->bits, w->group, (long long)w->K);
  QAT_TRY(qg_check_f32(op, x, "x"));
  QAT_TRY(qg_check_f32(op, y, "y"));
  if (M < 0 || M > INT_MAX || w->N > INT_MAX || w->K > INT_MAX)
    return QAT_FAIL(QAT_EINVAL, "qgemm: M=%lld N=%lld K=%lld outside the BLAS int range",
                    (long long)M, (long long)w->N, (long long)w->K);
  const int64_t in = trans ? w->N : w->K, out = trans ? w->K : w->N;
  QAT_TRY(nn_check_numel(op, x, "x", M * in));
  QAT_TRY(nn_check_numel(op, y, "y", M * out));
  if (M == 0) return QAT_OK;
  QAT_TRY(nn_check_cols(op, x, "x", in));
  QAT_TRY(nn_check_cols(op, y, "y", out));
  if (nn_overlaps(x, y)) return QAT_FAIL(QAT_EINVAL, "qgemm: y aliases x");
  if (!qg_on_device(w->codes) || !qg_on_device(w->scales) || (!w->sym && !qg_on_device(w->zeros)))
    return QAT_FAIL(QAT_EINVAL,
                    "cuda qgemm: the packed weight's buffers are not CUDA device memory "
                    "(upload it with qat_packed_upload)");
  if (w->N == 0 || w->K == 0) {
    if (M * out > 0) QAT_CUDA_TRY(cudaMemsetAsync(y->data, 0, qat_nbytes(y), qat_cuda(be)->stream));
    return QAT_OK;
  }
  if (!trans && M <= qg_fused_max() && qg_mma_fits(w))
    return qg_fused(be, w, M, (const float *)x->data, (float *)y->data);
  return qg_dequant_gemm(be, trans, w, M, x, y);
}

void qat_cuda_register_qgemm(qat_backend *be) { be->qgemm = cu_qgemm; }
