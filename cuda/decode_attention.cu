// Decode attention on the CUDA backend (backend.h attention_decode; CPU reference
// host/backend/cpu/decode_attention.c): one query per sequence against the first T positions of
// a KV cache, split-K ("flash-decoding") so that a long cache fills the GPU even at B = 1.
//   q[B, Hq, D], k_cache, v_cache [B, S, Hkv, D] (positions [0, T) read), out[B, Hq, D]
// Query head h reads kv head h / (Hq / Hkv). F32 or BF16 (one dtype for all four); all math F32.
//
// 1. da_partial_kernel, grid (splits, Hq, B), DA_THREADS threads: split c takes keys
//    [c * DA_SPLIT, min(T, (c + 1) * DA_SPLIT)). Each warp scores keys j = warp, warp + nwarps, ...
//    (lanes over d: coalesced reads of a key row, warp-shuffle sum), scores in base 2
//    (q pre-multiplied by scale * log2 e) into shared memory; block max m_c, p_j = 2^(s_j - m_c),
//    l_c = sum p_j; thread d accumulates acc_c[d] = sum_j p_j v_j[d] (coalesced over d).
//    Partials go to F32 scratch: acc [B, Hq, splits, D], (m, l) [B, Hq, splits, 2].
// 2. da_combine_kernel, grid (Hq, B): M = max_c m_c, w_c = 2^(m_c - M), out[d] =
//    sum_c w_c acc_c[d] / sum_c w_c l_c, splits summed in order (deterministic).
// Every split has at least one key (splits = ceil(T / DA_SPLIT)), so each m_c is finite.
// The launcher owns the grid. Never run on a GPU yet (written on a machine without one).
#include "cuda/nn_common.cuh"

#define DA_SPLIT 256   // keys per split
#define DA_THREADS 128 // 4 warps
#define DA_MAXD 256    // head dims (shared q)
#define DA_LOG2E 1.4426950408889634f

template <typename T>
__global__ void __launch_bounds__(DA_THREADS)
    da_partial_kernel(const T *q, const T *k, const T *v, int64_t S, int64_t T_, int Hq, int Hkv,
                      int D, float qscale, int splits, float *part_acc, float *part_ml) {
  __shared__ float qs[DA_MAXD];
  __shared__ float p[DA_SPLIT];
  __shared__ float red[32];
  const int c = blockIdx.x, h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int kh = h / (Hq / Hkv);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = DA_THREADS / 32;
  const int64_t j0 = (int64_t)c * DA_SPLIT;
  const int n = (int)(T_ - j0 < DA_SPLIT ? T_ - j0 : DA_SPLIT);
  for (int d = tid; d < D; d += DA_THREADS) qs[d] = qat_ld(q, (b * Hq + h) * D + d) * qscale;
  __syncthreads();
  // scores, one warp per key
  for (int j = warp; j < n; j += nwarps) {
    const int64_t row = ((b * S + j0 + j) * Hkv + kh) * (int64_t)D;
    float s = 0.0f;
    for (int d = lane; d < D; d += 32) s += qs[d] * qat_ld(k, row + d);
    s = nn_warp_sum(s);
    if (lane == 0) p[j] = s;
  }
  __syncthreads();
  // block max of the scores
  float m = -INFINITY;
  for (int j = tid; j < n; j += DA_THREADS) m = fmaxf(m, p[j]);
  m = nn_warp_max(m);
  if (lane == 0) red[warp] = m;
  __syncthreads();
  m = lane < nwarps ? red[lane] : -INFINITY;
  m = nn_warp_max(m);
  // probabilities (unnormalized) and their sum
  float l = 0.0f;
  for (int j = tid; j < n; j += DA_THREADS) {
    const float e = exp2f(p[j] - m);
    p[j] = e;
    l += e;
  }
  l = nn_block_sum(l, red); // leading barrier: every p[j] is written before anyone reads below
  const int64_t slot = (b * Hq + h) * splits + c;
  for (int d = tid; d < D; d += DA_THREADS) {
    float a = 0.0f;
    for (int j = 0; j < n; j++) a += p[j] * qat_ld(v, ((b * S + j0 + j) * Hkv + kh) * (int64_t)D + d);
    part_acc[slot * D + d] = a;
  }
  if (tid == 0) {
    part_ml[slot * 2] = m;
    part_ml[slot * 2 + 1] = l;
  }
}

template <typename T>
__global__ void __launch_bounds__(DA_THREADS)
    da_combine_kernel(const float *part_acc, const float *part_ml, int Hq, int D, int splits,
                      T *out) {
  const int h = blockIdx.x;
  const int64_t b = blockIdx.y, base = (b * Hq + h) * splits;
  float M = -INFINITY;
  for (int c = 0; c < splits; c++) M = fmaxf(M, part_ml[(base + c) * 2]);
  float L = 0.0f;
  for (int c = 0; c < splits; c++) L += exp2f(part_ml[(base + c) * 2] - M) * part_ml[(base + c) * 2 + 1];
  const float inv = 1.0f / L;
  for (int d = threadIdx.x; d < D; d += DA_THREADS) {
    float a = 0.0f;
    for (int c = 0; c < splits; c++) a += exp2f(part_ml[(base + c) * 2] - M) * part_acc[(base + c) * D + d];
    qat_st(out, (b * Hq + h) * D + d, a * inv);
  }
}

template <typename T>
static qat_status da_launch(const qat_backend *be, const qat_tensor *q, const qat_tensor *kc,
                            const qat_tensor *vc, int64_t T_, float scale, qat_tensor *out) {
  const int64_t B = q->shape[0], Hq = q->shape[1], D = q->shape[2];
  const int64_t S = kc->shape[1], Hkv = kc->shape[2];
  const int64_t splits = (T_ + DA_SPLIT - 1) / DA_SPLIT;
  if (splits > 0x7fffffffll || Hq > 65535 || B > 65535)
    return QAT_FAIL(QAT_EUNSUPPORTED, "cuda attention_decode: grid (%lld, %lld, %lld) too large",
                    (long long)splits, (long long)Hq, (long long)B);
  cudaStream_t s = qat_cuda(be)->stream;
  nn_scratch sc;
  const size_t slots = (size_t)(B * Hq * splits);
  QAT_TRY(nn_scratch_get(be, slots * (size_t)(D + 2) * sizeof(float), &sc));
  float *acc = (float *)sc.p, *ml = acc + slots * (size_t)D;
  da_partial_kernel<T><<<dim3((unsigned)splits, (unsigned)Hq, (unsigned)B), DA_THREADS, 0, s>>>(
      (const T *)q->data, (const T *)kc->data, (const T *)vc->data, S, T_, (int)Hq, (int)Hkv,
      (int)D, scale * DA_LOG2E, (int)splits, acc, ml);
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) {
    da_combine_kernel<T><<<dim3((unsigned)Hq, (unsigned)B), DA_THREADS, 0, s>>>(
        acc, ml, (int)Hq, (int)D, (int)splits, (T *)out->data);
    e = cudaGetLastError();
  }
  QAT_TRY(nn_scratch_put(be, &sc));
  if (e != cudaSuccess)
    return QAT_FAIL(QAT_EDEVICE, "CUDA: %s (attention_decode launch)", cudaGetErrorString(e));
  return QAT_OK;
}

static qat_status cu_attention_decode(const qat_backend *be, const qat_tensor *q,
                                      const qat_tensor *k_cache, const qat_tensor *v_cache,
                                      int64_t T, float scale, qat_tensor *out) {
  const char *op = "attention_decode";
  QAT_TRY(nn_check_float(op, q, "q"));
  QAT_TRY(nn_check_float(op, k_cache, "k_cache"));
  QAT_TRY(nn_check_float(op, v_cache, "v_cache"));
  QAT_TRY(nn_check_float(op, out, "out"));
  QAT_TRY(nn_check_same_dtype(op, q, "q", k_cache, "k_cache"));
  QAT_TRY(nn_check_same_dtype(op, q, "q", v_cache, "v_cache"));
  QAT_TRY(nn_check_same_dtype(op, q, "q", out, "out"));
  char a[64], c[64];
  if (q->ndim != 3 || k_cache->ndim != 4)
    return QAT_FAIL(QAT_EINVAL, "cuda %s: q %s should be [B, Hq, D] and k_cache %s [B, S, Hkv, D]",
                    op, qat_shape_str(q, a, sizeof a), qat_shape_str(k_cache, c, sizeof c));
  QAT_TRY(nn_check_same(op, k_cache, "k_cache", v_cache, "v_cache"));
  QAT_TRY(nn_check_same(op, q, "q", out, "out"));
  const int64_t B = q->shape[0], Hq = q->shape[1], D = q->shape[2];
  const int64_t S = k_cache->shape[1], Hkv = k_cache->shape[2];
  if (k_cache->shape[0] != B || k_cache->shape[3] != D)
    return QAT_FAIL(QAT_EINVAL, "cuda %s: q %s and k_cache %s disagree on B or D", op,
                    qat_shape_str(q, a, sizeof a), qat_shape_str(k_cache, c, sizeof c));
  if (Hkv <= 0 || Hq % Hkv != 0)
    return QAT_FAIL(QAT_EINVAL, "cuda %s: %lld query heads are not a multiple of %lld kv heads",
                    op, (long long)Hq, (long long)Hkv);
  if (T < 1 || T > S)
    return QAT_FAIL(QAT_EINVAL, "cuda %s: T = %lld keys outside the cache's [1, %lld]", op,
                    (long long)T, (long long)S);
  if (D > DA_MAXD)
    return QAT_FAIL(QAT_EUNSUPPORTED, "cuda %s: head dim %lld exceeds %d", op, (long long)D,
                    DA_MAXD);
  if (!isfinite(scale)) return QAT_FAIL(QAT_EINVAL, "cuda %s: scale is not finite", op);
  if (B * Hq * D == 0) return QAT_OK;
  if (q->dtype == QAT_F32) return da_launch<float>(be, q, k_cache, v_cache, T, scale, out);
  return da_launch<__nv_bfloat16>(be, q, k_cache, v_cache, T, scale, out);
}

void qat_cuda_register_decode(qat_backend *be) { be->attention_decode = cu_attention_decode; }
