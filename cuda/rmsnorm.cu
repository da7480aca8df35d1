// RMSNorm on the CUDA backend (backend.h "LLaMA blocks"), forward and backward side by side.
// N rows, C channels. x, out, dout, dx share the activation dtype (F32 or BF16); the weight w and
// its gradient dw may be F32 or BF16 each; rstd[N] is F32. Sums are F32.
//   forward:  r = 1 / sqrt(mean(x^2) + eps);  out = x * r * w
//   backward: dx += dout * w * r - x * r^3 / C * sum_c(dout * w * x);  dw += sum_n dout * x * r
// dx is one block per row; dw is a deterministic column sum (nn_colsum) instead of atomics.
#include "cuda/nn_common.cuh"

static int rms_threads(int64_t C) { return C >= 2048 ? 256 : C >= 512 ? 128 : 64; }

template <typename TX, typename TW>
__global__ void rmsnorm_fwd_kernel(const TX *x, const TW *w, float eps, TX *out, float *rstd,
                                   int64_t C) {
  __shared__ float sh[32];
  const int64_t n = blockIdx.x;
  const TX *xr = x + n * C;
  TX *yr = out + n * C;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float v = qat_ld(xr, c);
    ss += v * v;
  }
  ss = nn_block_sum(ss, sh);
  const float r = 1.0f / sqrtf(ss / (float)C + eps);
  if (rstd && threadIdx.x == 0) rstd[n] = r;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    qat_st(yr, c, qat_ld(xr, c) * r * qat_ld(w, c));
}

template <typename TX, typename TW>
__global__ void rmsnorm_bwd_dx_kernel(const TX *dout, const TX *x, const TW *w, const float *rstd,
                                      TX *dx, int64_t C) {
  __shared__ float sh[32];
  const int64_t n = blockIdx.x;
  const TX *gr = dout + n * C, *xr = x + n * C;
  TX *dr = dx + n * C;
  const float r = rstd[n];
  float dot = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    dot += qat_ld(gr, c) * qat_ld(w, c) * qat_ld(xr, c);
  dot = nn_block_sum(dot, sh);
  const float coef = r * r * r * dot / (float)C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    // the increment is formed first, then added (as the CPU does): a large dx does not swallow
    // the difference of the two terms
    qat_st(dr, c, qat_ld(dr, c) + (qat_ld(gr, c) * qat_ld(w, c) * r - qat_ld(xr, c) * coef));
}

// dw's per-element term for nn_colsum: dout[n, c] * x[n, c] * rstd[n].
template <typename TX> struct rms_dw_rows {
  const TX *dout, *x;
  const float *rstd;
  int64_t C;
  __device__ float operator()(int64_t n, int64_t c) const {
    return qat_ld(dout, n * C + c) * qat_ld(x, n * C + c) * rstd[n];
  }
};

// N = the product of x's leading dims and C = its last dim (no division: C may be 0), as the CPU
// backend's qat_cpu_rows / qat_cpu_cols.
static qat_status rms_shape(const char *op, const qat_tensor *x, int64_t *N, int64_t *C) {
  if (x->ndim < 1) return QAT_FAIL(QAT_EINVAL, "cuda %s: x %s has ndim 0", op, nn_name(x, "x"));
  *C = nn_last_dim(x);
  *N = 1;
  for (int i = 0; i + 1 < x->ndim; i++) *N *= x->shape[i];
  return QAT_OK;
}

// One block per row: the row count must fit gridDim.x.
static qat_status rms_rows_fit(const char *op, int64_t N) {
  if (N > 0x7fffffffll)
    return QAT_FAIL(QAT_EUNSUPPORTED, "cuda %s: %lld rows in one call", op, (long long)N);
  return QAT_OK;
}

// Checks in the CPU twin's order (rmsnorm.c), so a bad call gets the same status on both.
static qat_status cu_rmsnorm_fwd(const qat_backend *be, const qat_tensor *x, const qat_tensor *w,
                                 float eps, qat_tensor *out, qat_tensor *rstd) {
  QAT_TRY(nn_check_float("rmsnorm_fwd", x, "x"));
  QAT_TRY(nn_check_float("rmsnorm_fwd", w, "w"));
  QAT_TRY(nn_check_float("rmsnorm_fwd", out, "out"));
  // rstd is required, as on the CPU: the backward reads it
  QAT_TRY(nn_check_dtype("rmsnorm_fwd", rstd, "rstd", QAT_F32));
  QAT_TRY(nn_check_same_dtype("rmsnorm_fwd", x, "x", out, "out"));
  int64_t N, C;
  QAT_TRY(rms_shape("rmsnorm_fwd", x, &N, &C));
  QAT_TRY(nn_check_same("rmsnorm_fwd", x, "x", out, "out"));
  QAT_TRY(nn_check_numel("rmsnorm_fwd", w, "w", C));
  QAT_TRY(nn_check_numel("rmsnorm_fwd", rstd, "rstd", N));
  if (!(eps >= 0.0f))
    return QAT_FAIL(QAT_EINVAL, "cuda rmsnorm_fwd: eps %g is not >= 0", (double)eps);
  if (C == 0)
    return QAT_FAIL(QAT_EINVAL, "cuda rmsnorm_fwd: x %s has no channels", nn_name(x, "x"));
  QAT_TRY(rms_rows_fit("rmsnorm_fwd", N));
  if (N == 0) return QAT_OK;
  cudaStream_t s = qat_cuda(be)->stream;
  float *rp = (float *)rstd->data;
  NN_DISPATCH(x->dtype, TX,
              NN_DISPATCH(w->dtype, TW,
                          rmsnorm_fwd_kernel<TX, TW><<<(unsigned)N, rms_threads(C), 0, s>>>(
                              (const TX *)x->data, (const TW *)w->data, eps, (TX *)out->data, rp,
                              C)));
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

static qat_status cu_rmsnorm_bwd(const qat_backend *be, const qat_tensor *dout,
                                 const qat_tensor *x, const qat_tensor *w, const qat_tensor *rstd,
                                 qat_tensor *dx, qat_tensor *dw) {
  QAT_TRY(nn_check_float("rmsnorm_bwd", dout, "dout"));
  QAT_TRY(nn_check_float("rmsnorm_bwd", x, "x"));
  QAT_TRY(nn_check_float("rmsnorm_bwd", w, "w"));
  QAT_TRY(nn_check_dtype("rmsnorm_bwd", rstd, "rstd", QAT_F32));
  QAT_TRY(nn_check_same_dtype("rmsnorm_bwd", x, "x", dout, "dout"));
  int64_t N, C;
  QAT_TRY(rms_shape("rmsnorm_bwd", x, &N, &C));
  QAT_TRY(nn_check_same("rmsnorm_bwd", x, "x", dout, "dout"));
  QAT_TRY(nn_check_numel("rmsnorm_bwd", w, "w", C));
  QAT_TRY(nn_check_numel("rmsnorm_bwd", rstd, "rstd", N));
  if (dx) {
    QAT_TRY(nn_check_float("rmsnorm_bwd", dx, "dx"));
    QAT_TRY(nn_check_same_dtype("rmsnorm_bwd", x, "x", dx, "dx"));
    QAT_TRY(nn_check_same("rmsnorm_bwd", x, "x", dx, "dx"));
  }
  if (dw) {
    QAT_TRY(nn_check_float("rmsnorm_bwd", dw, "dw"));
    QAT_TRY(nn_check_numel("rmsnorm_bwd", dw, "dw", C));
  }
  // C = 0 is a no-op, as on the CPU: dx and dw are empty (no zero-size launch)
  if (N == 0 || C == 0) return QAT_OK;
  QAT_TRY(rms_rows_fit("rmsnorm_bwd", N));
  cudaStream_t s = qat_cuda(be)->stream;
  const float *rp = (const float *)rstd->data;
  if (dx) {
    NN_DISPATCH(x->dtype, TX,
                NN_DISPATCH(w->dtype, TW,
                            rmsnorm_bwd_dx_kernel<TX, TW><<<(unsigned)N, rms_threads(C), 0, s>>>(
                                (const TX *)dout->data, (const TX *)x->data, (const TW *)w->data,
                                rp, (TX *)dx->data, C)));
    QAT_CUDA_LAUNCHED();
  }
  if (dw) {
    NN_DISPATCH(x->dtype, TX, NN_DISPATCH(dw->dtype, TW, {
                  rms_dw_rows<TX> f = {(const TX *)dout->data, (const TX *)x->data, rp, C};
                  QAT_TRY(nn_colsum(be, f, N, C, (TW *)dw->data));
                }));
  }
  return QAT_OK;
}

void qat_cuda_register_rmsnorm(qat_backend *be) {
  be->rmsnorm_fwd = cu_rmsnorm_fwd;
  be->rmsnorm_bwd = cu_rmsnorm_bwd;
}
