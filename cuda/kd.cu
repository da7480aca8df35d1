// Knowledge-distillation loss on the CUDA backend (backend.h kd_xent): student and teacher logits
// [N, V] (F32 or BF16, same dtype) stay on the device; only the per-row losses [N] F32 are small
// enough to download. Same formulation as the CPU reference op (host/backend/cpu/kd.c):
//   ms = max s, mt = max t, s' = (s - ms) / T, t' = (t - mt) / T
//   Z1 = sum exp(s - ms), ZsT = sum exp(s'), ZtT = sum exp(t'), A = sum exp(t') (t' - s')
//   loss = (1 - alpha) (ms + log Z1 - s[y]) + alpha T^2 (A / ZtT - log ZtT + log ZsT)
//   d = dscale [(1 - alpha) (softmax(s) - onehot) + alpha T (softmax(s') - softmax(t'))]
// One block per row (V up to 2^31; 1024 threads for 128K-256K vocabularies), threads strided over
// V. Elementwise math is F32 (expf, not the fast intrinsic), the four row sums are double (per
// thread, then a fixed-order block reduction: deterministic), matching the CPU op so parity is
// limited by libm-vs-CUDA expf ulps and summation order.
//   pass 1a: row maxima of s and t (block max)
//   pass 1b: the four sums; every thread also reads s[y] here
//   __syncthreads()
//   pass 2: dlogits, each thread rewriting only the elements it read itself
// So dlogits may alias the student: every read of the row (including the cross-thread s[y])
// happens before the barrier that precedes the first write. dlogits may be F32 or BF16
// independently of the inputs (F32 gradients from BF16 logits), except when aliased.
// Targets are checked against [-1, V) by a pre-pass (nn_check_ids, one stream sync) before
// anything is written, as on the CPU.
#include "cuda/nn_common.cuh"

void qat_cuda_register_kd(qat_backend *be);

// Sum of 4 doubles over the block, returned to every thread (blockDim.x a multiple of 32).
__device__ __forceinline__ void kd_block_sum4(double v[4], double (*sh)[32]) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
  for (int k = 0; k < 4; k++) v[k] = nn_warp_sum(v[k]);
  if (lane == 0)
#pragma unroll
    for (int k = 0; k < 4; k++) sh[k][w] = v[k];
  __syncthreads();
#pragma unroll
  for (int k = 0; k < 4; k++) v[k] = nn_warp_sum(lane < nw ? sh[k][lane] : 0.0);
}

template <typename TS, typename TD>
__global__ void __launch_bounds__(1024)
    kd_xent_kernel(const TS *student, const TS *teacher, const int32_t *targets, float invT,
                   double T, double alpha, double dscale, float *losses, TD *dlogits, int64_t V) {
  __shared__ float shm[2][32];
  __shared__ double shs[4][32];
  const int64_t n = blockIdx.x;
  const TS *s = student + n * V, *t = teacher + n * V;
  TD *d = dlogits ? dlogits + n * V : (TD *)nullptr;
  const int32_t y = targets[n];
  if (y < 0 || (int64_t)y >= V) {  // ignored (-1; others were rejected): uniform per block
    if (losses && threadIdx.x == 0) losses[n] = 0.0f;
    if (d)
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x) qat_st(d, i, 0.0f);
    return;
  }
  // pass 1a: maxima (NaN never compares greater: it is skipped here and reaches the sums)
  float ms = -INFINITY, mt = -INFINITY;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float sv = qat_ld(s, i), tv = qat_ld(t, i);
    if (sv > ms) ms = sv;
    if (tv > mt) mt = tv;
  }
  ms = nn_warp_max(ms);
  mt = nn_warp_max(mt);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) {
    shm[0][w] = ms;
    shm[1][w] = mt;
  }
  __syncthreads();
  ms = nn_warp_max(lane < nw ? shm[0][lane] : -INFINITY);
  mt = nn_warp_max(lane < nw ? shm[1][lane] : -INFINITY);
  // pass 1b: Z1, ZsT, ZtT, A
  double acc[4] = {0.0, 0.0, 0.0, 0.0};
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float sv = qat_ld(s, i), tv = qat_ld(t, i);
    const float sj = (sv - ms) * invT, tj = (tv - mt) * invT, et = expf(tj);
    acc[0] += expf(sv - ms);
    acc[1] += expf(sj);
    acc[2] += et;
    if (et != 0.0f) acc[3] += (double)et * (double)(tj - sj);  // 0 log 0 = 0 (masked teacher)
  }
  const float sy = qat_ld(s, y), ty = qat_ld(t, y);  // before the barrier: s may be overwritten
  kd_block_sum4(acc, shs);
  const double z1 = acc[0], zs = acc[1], zt = acc[2], A = acc[3];
  if (losses && threadIdx.x == 0) {
    const double ce = (double)ms + log(z1) - (double)sy;
    const double kl = A / zt - log(zt) + log(zs);
    losses[n] = (float)((1.0 - alpha) * ce + alpha * T * T * kl);
  }
  if (!d) return;  // uniform per block
  // every read of the row above is done before any thread writes to it (d may alias s)
  __syncthreads();
  const double k1 = (1.0 - alpha) * dscale / z1, ks = alpha * T * dscale / zs,
               kt = alpha * T * dscale / zt;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float sv = i == y ? sy : qat_ld(s, i), tv = i == y ? ty : qat_ld(t, i);
    const float e1 = expf(sv - ms), es = expf((sv - ms) * invT), et = expf((tv - mt) * invT);
    double g = ks * es - kt * et;
    // softmax_y - 1 = -(sum of the others) / Z1: no cancellation when p_y is near 1
    g += i == y ? -(1.0 - alpha) * dscale * (z1 - (double)e1) / z1 : k1 * e1;
    qat_st(d, i, (float)g);
  }
}

static qat_status cu_kd_xent(const qat_backend *be, const qat_tensor *student,
                             const qat_tensor *teacher, const qat_tensor *targets,
                             float temperature, float alpha, float dscale, qat_tensor *losses,
                             qat_tensor *dlogits) {
  const char *op = "kd_xent";
  QAT_TRY(nn_check_float(op, student, "student"));
  QAT_TRY(nn_check_float(op, teacher, "teacher"));
  QAT_TRY(nn_check_same_dtype(op, student, "student", teacher, "teacher"));
  QAT_TRY(nn_check_dtype(op, targets, "targets", QAT_I32));
  const int64_t V = nn_last_dim(student);
  if (student->ndim < 1 || V <= 0)
    return QAT_FAIL(QAT_EINVAL, "cuda kd_xent: student %s has no vocabulary dimension",
                    nn_name(student, "student"));
  const int64_t N = qat_numel(student) / V;
  if (nn_last_dim(teacher) != V)
    return QAT_FAIL(QAT_EINVAL, "cuda kd_xent: teacher %s has a last dim of %lld, student %lld",
                    nn_name(teacher, "teacher"), (long long)nn_last_dim(teacher), (long long)V);
  QAT_TRY(nn_check_numel(op, teacher, "teacher", N * V));
  QAT_TRY(nn_check_numel(op, targets, "targets", N));
  if (losses) {
    QAT_TRY(nn_check_dtype(op, losses, "losses", QAT_F32));
    QAT_TRY(nn_check_numel(op, losses, "losses", N));
  }
  if (dlogits) {
    QAT_TRY(nn_check_float(op, dlogits, "dlogits"));
    QAT_TRY(nn_check_numel(op, dlogits, "dlogits", N * V));
    if (dlogits->data == teacher->data && N > 0)
      return QAT_FAIL(QAT_EINVAL, "cuda kd_xent: dlogits may alias student, not teacher");
    if (dlogits->data == student->data)
      QAT_TRY(nn_check_same_dtype(op, student, "student", dlogits, "dlogits"));
  }
  if (!(temperature > 0.0f) || isinf(temperature))
    return QAT_FAIL(QAT_EINVAL, "cuda kd_xent: temperature %g must be finite and > 0",
                    (double)temperature);
  if (!(alpha >= 0.0f && alpha <= 1.0f))
    return QAT_FAIL(QAT_EINVAL, "cuda kd_xent: alpha %g must be in [0, 1]", (double)alpha);
  if (N > 0x7fffffffll)
    return QAT_FAIL(QAT_EUNSUPPORTED, "cuda kd_xent: %lld rows in one call", (long long)N);
  if (N == 0) return QAT_OK;
  QAT_TRY(nn_check_ids(be, op, targets, "targets", -1, V));
  cudaStream_t st = qat_cuda(be)->stream;
  const int threads = V >= 16384 ? 1024 : V >= 2048 ? 512 : 128;
  const float invT = 1.0f / temperature;
  const qat_dtype dd = dlogits ? dlogits->dtype : student->dtype;
  NN_DISPATCH(student->dtype, TS,
              NN_DISPATCH(dd, TD,
                          kd_xent_kernel<TS, TD><<<(unsigned)N, threads, 0, st>>>(
                              (const TS *)student->data, (const TS *)teacher->data,
                              (const int32_t *)targets->data, invT, (double)temperature,
                              (double)alpha, (double)dscale,
                              losses ? (float *)losses->data : (float *)nullptr,
                              dlogits ? (TD *)dlogits->data : (TD *)nullptr, V)));
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

void qat_cuda_register_kd(qat_backend *be) { be->kd_xent = cu_kd_xent; }
