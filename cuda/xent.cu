// Softmax cross-entropy on the CUDA backend (backend.h "LLaMA blocks"): logits[N, V] (F32 or
// BF16), targets I32 [N] (-1 ignored), losses[N] F32 (NULL when only the gradient is wanted),
// optional dlogits[N, V] (logits' dtype, may alias logits). One block per row; V up to 2^31 (256K vocabularies use 1024 threads).
//   pass 1: online (max, sum of exp) per thread, merged across the block -> lse
//   loss = (max - logit[target]) + log(sum), read before the barrier that precedes any dlogits
//   write, so an in-place dlogits is safe (each element is read then written by the same thread
//   in pass 2)
//   pass 2: dlogits = dscale * (exp(logit - lse) - onehot(target)), the target as expm1
// Targets are checked against [-1, V) by a pre-pass (nn_check_ids, one stream sync) before
// anything is written, as on the CPU; the kernel still guards the index.
#include "cuda/nn_common.cuh"

struct ms_pair {
  float m, s;  // running max and sum of exp(x - m)
};

__device__ __forceinline__ ms_pair ms_merge(ms_pair a, ms_pair b) {
  const float m = fmaxf(a.m, b.m);
  ms_pair r;
  if (m == -INFINITY) {  // both empty: sums are 0 (or NaN, which must survive)
    r.m = m;
    r.s = a.s + b.s;
    return r;
  }
  r.m = m;
  r.s = a.s * expf(a.m - m) + b.s * expf(b.m - m);
  return r;
}

template <typename T>
__global__ void __launch_bounds__(1024)
    xent_kernel(const T *logits, const int32_t *targets, float *losses, T *dlogits, float dscale,
                int64_t V) {
  __shared__ ms_pair sh[32];
  __shared__ float sh_m, sh_logs;
  const int64_t n = blockIdx.x;
  const T *x = logits + n * V;
  const int32_t tgt = targets[n];
  if (tgt < 0 || (int64_t)tgt >= V) {  // ignored (-1; others were rejected): uniform per block
    if (losses && threadIdx.x == 0) losses[n] = 0.0f;
    if (dlogits) {
      T *d = dlogits + n * V;
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x) qat_st(d, i, 0.0f);
    }
    return;
  }
  ms_pair acc = {-INFINITY, 0.0f};
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float xv = qat_ld(x, i);
    if (xv != xv) {
      acc.s = NAN;  // a NaN logit makes the loss NaN (fmaxf alone would drop it)
    } else if (xv > -INFINITY) {
      ms_pair e = {xv, 1.0f};
      acc = ms_merge(acc, e);
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    ms_pair other;
    other.m = __shfl_xor_sync(0xffffffffu, acc.m, o);
    other.s = __shfl_xor_sync(0xffffffffu, acc.s, o);
    acc = ms_merge(acc, other);
  }
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) sh[w] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    ms_pair t = sh[0];
    for (int i = 1; i < nw; i++) t = ms_merge(t, sh[i]);
    const float logs = logf(t.s);
    sh_m = t.m;
    sh_logs = logs;
    // (m - x_t) + log s, not (m + log s) - x_t: no cancellation when the target dominates (the
    // CPU sums in double). Read before the barrier: dlogits may alias x.
    if (losses) losses[n] = (t.m - qat_ld(x, tgt)) + logs;
  }
  __syncthreads();
  if (!dlogits) return;
  const float m = sh_m, logs = sh_logs;
  T *d = dlogits + n * V;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float z = (qat_ld(x, i) - m) - logs;  // log softmax
    // softmax_t - 1 as expm1: exact near p_t = 1, where expf(z) - 1 would cancel
    qat_st(d, i, dscale * (i == tgt ? expm1f(z) : expf(z)));
  }
}

static qat_status cu_xent(const qat_backend *be, const qat_tensor *logits,
                          const qat_tensor *targets, qat_tensor *losses, qat_tensor *dlogits,
                          float dscale) {
  QAT_TRY(nn_check_float("xent", logits, "logits"));
  QAT_TRY(nn_check_dtype("xent", targets, "targets", QAT_I32));
  const int64_t V = nn_last_dim(logits);
  if (V <= 0)
    return QAT_FAIL(QAT_EINVAL, "cuda xent: logits %s has no vocabulary dimension",
                    nn_name(logits, "logits"));
  const int64_t N = qat_numel(logits) / V;
  QAT_TRY(nn_check_numel("xent", targets, "targets", N));
  if (losses) {
    QAT_TRY(nn_check_dtype("xent", losses, "losses", QAT_F32));
    QAT_TRY(nn_check_numel("xent", losses, "losses", N));
  }
  if (dlogits) {
    QAT_TRY(nn_check_float("xent", dlogits, "dlogits"));
    QAT_TRY(nn_check_same_dtype("xent", logits, "logits", dlogits, "dlogits"));
    QAT_TRY(nn_check_numel("xent", dlogits, "dlogits", N * V));
  }
  if (N > 0x7fffffffll)
    return QAT_FAIL(QAT_EUNSUPPORTED, "cuda xent: %lld rows in one call", (long long)N);
  if (N == 0) return QAT_OK;
  QAT_TRY(nn_check_ids(be, "xent", targets, "targets", -1, V));
  cudaStream_t s = qat_cuda(be)->stream;
  const int threads = V >= 16384 ? 1024 : V >= 2048 ? 512 : 128;
  NN_DISPATCH(logits->dtype, T,
              xent_kernel<T><<<(unsigned)N, threads, 0, s>>>(
                  (const T *)logits->data, (const int32_t *)targets->data,
                  losses ? (float *)losses->data : (float *)NULL,
                  dlogits ? (T *)dlogits->data : (T *)NULL, dscale, V));
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

void qat_cuda_register_xent(qat_backend *be) { be->xent = cu_xent; }
