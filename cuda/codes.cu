// CUDA ops on frozen integer codes (EfficientQAT E2E-QP), matching the CPU reference
// host/backend/cpu/codes.c (see there for the formulas). Tests: tests/test_cuda_codes.c.
//   fq_codes:    codes U8 [R, C] from w, s, z (sym: code + 2^(bits-1)); once per Linear at freeze
//   dq_forward:  w_hat [R, C] F32 / BF16 = (code - z~) * s~; every forward in E2E-QP
//   dq_backward: ds [R, G] = sum over the group of g * (code - z~); once per optimizer step
// One kernel per op, each reached through its launcher. Per element the arithmetic is the CPU's
// and cuda/fakequant.cu's, operation for operation (IEEE division, rintf, the same clamps), so
// codes and w_hat agree with the CPU bit for bit. dq_backward reduces each group inside one
// block (sub-warp lanes with shuffles for short groups, the whole block through shared memory
// for long ones), accumulating in double; no global atomics, so results are deterministic and
// differ from the CPU's double sums only by the summation order.
#include "cuda/common.cuh"
#include "cuda/qgeom.cuh"

#include <stdint.h>


namespace {

using namespace qat_qgeom;

constexpr int kThreads = 256;      // every kernel here; a multiple of 32
constexpr int64_t kSmallSeg = 1024; // dq_backward: groups up to this long use sub-warp lanes
constexpr unsigned kFloats = (1u << QAT_F32) | (1u << QAT_BF16);

// Layout and arithmetic: cuda/qgeom.cuh (shared with cuda/fakequant.cu); a codes op needs both.
struct CqShape : QShape, QCode {};

CqShape make_cq(const qat_qspec *q, int64_t R, int64_t C) {
  CqShape p;
  static_cast<QShape &>(p) = make_shape(q, R, C);
  static_cast<QCode &>(p) = make_code(q);
  return p;
}

// Group index of flat element i (per-tensor: 0).
template <typename IT>
__device__ __forceinline__ IT cq_group(IT i, const CqShape &p) {
  if (p.pertensor) return 0;
  IT C = (IT)p.C, r = i / C;
  return r * (IT)p.G + (i - r * C) / (IT)p.glen;
}

// ---- fq_codes ------------------------------------------------------------------------------------

// A NaN code (NaN weight or scale) stores 0 and sets *bad (a plain store of 1 by every writer).
__global__ void __launch_bounds__(kThreads)
    fq_codes_kernel(const float *__restrict__ w, const float *__restrict__ s,
                    const float *__restrict__ z, uint8_t *__restrict__ codes, CqShape p, int *bad) {
  int64_t n = p.R * p.C;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t k = cq_group<int64_t>(i, p);
    float sv = q_scale(s, k), zt = q_zero(z, k, p);
    float code = q_clamp(rintf(w[i] / sv) + zt, p.lo, p.hi); // exactly fq_forward's code
    if (code != code) {
      *bad = 1;
      codes[i] = 0;
    } else {
      codes[i] = (uint8_t)(code + p.off);
    }
  }
}

unsigned grid_for(const qat_backend *be, int64_t units) {
  int64_t blocks = (units + kThreads - 1) / kThreads;
  int64_t cap = 32 * (int64_t)(qat_cuda(be)->sm_count > 0 ? qat_cuda(be)->sm_count : 100);
  if (blocks > cap) blocks = cap; // grid-stride beyond
  return (unsigned)(blocks < 1 ? 1 : blocks);
}

qat_status launch_fq_codes(const qat_backend *be, const CqShape &p, const float *w,
                           const float *s, const float *z, uint8_t *codes, int *bad) {
  fq_codes_kernel<<<grid_for(be, p.R * p.C), kThreads, 0, qat_cuda(be)->stream>>>(w, s, z, codes,
                                                                                 p, bad);
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

// ---- dq_forward ----------------------------------------------------------------------------------

__device__ __forceinline__ float dq1(uint8_t q, float sv, float zt, float off) {
  float code = (float)q - off; // exact
  return (code - zt) * sv;     // as fq_forward: (code - z~) * s~
}

// VEC: 4 codes per thread (one 4-byte load, one 16- or 8-byte store); needs every group to start
// and end on a multiple of 4 elements. IT: 32-bit indices below 2^31 elements.
template <typename TO, bool VEC, typename IT>
__global__ void __launch_bounds__(kThreads)
    dq_forward_kernel(const uint8_t *__restrict__ codes, const float *__restrict__ s,
                      const float *__restrict__ z, TO *__restrict__ out, CqShape p) {
  IT n = (IT)(p.R * p.C), units = VEC ? n / 4 : n;
  for (IT u = (IT)blockIdx.x * blockDim.x + threadIdx.x; u < units;
       u += (IT)gridDim.x * blockDim.x) {
    IT i = VEC ? 4 * u : u, k = cq_group<IT>(i, p);
    float sv = q_scale(s, k), zt = q_zero(z, k, p);
    if (VEC) {
      uchar4 q = *reinterpret_cast<const uchar4 *>(codes + i);
      float4 v = make_float4(dq1(q.x, sv, zt, p.off), dq1(q.y, sv, zt, p.off),
                             dq1(q.z, sv, zt, p.off), dq1(q.w, sv, zt, p.off));
      if constexpr (sizeof(TO) == 4) {
        *reinterpret_cast<float4 *>(out + i) = v;
      } else {
        __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
        uint2 raw;
        memcpy(&raw.x, &a, 4);
        memcpy(&raw.y, &b, 4);
        *reinterpret_cast<uint2 *>(out + i) = raw;
      }
    } else {
      qat_st(out, i, dq1(codes[i], sv, zt, p.off));
    }
  }
}

bool aligned(const void *ptr, unsigned bytes) { return ((uintptr_t)ptr % bytes) == 0; }

template <typename TO>
qat_status launch_dq_forward(const qat_backend *be, const CqShape &p, const uint8_t *codes,
                             const float *s, const float *z, TO *out) {
  int64_t n = p.R * p.C;
  bool vec = (p.pertensor ? n % 4 == 0 : (p.C % 4 == 0 && p.glen % 4 == 0)) &&
             aligned(codes, 4) && aligned(out, 4 * sizeof(TO));
  bool small = n < ((int64_t)1 << 31);
  unsigned blocks = grid_for(be, vec ? n / 4 : n);
  cudaStream_t st = qat_cuda(be)->stream;
  if (vec && small)
    dq_forward_kernel<TO, true, uint32_t><<<blocks, kThreads, 0, st>>>(codes, s, z, out, p);
  else if (vec)
    dq_forward_kernel<TO, true, int64_t><<<blocks, kThreads, 0, st>>>(codes, s, z, out, p);
  else if (small)
    dq_forward_kernel<TO, false, uint32_t><<<blocks, kThreads, 0, st>>>(codes, s, z, out, p);
  else
    dq_forward_kernel<TO, false, int64_t><<<blocks, kThreads, 0, st>>>(codes, s, z, out, p);
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

// ---- dq_backward ---------------------------------------------------------------------------------

// Reduce over aligned groups of `width` lanes (a power of two <= 32); all 32 lanes must call.
__device__ __forceinline__ double warp_sum(double v, int width) {
  for (int o = width >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Each group is reduced by `lanes` threads: lanes <= 32 are consecutive lanes of one warp (a
// block holds kThreads / lanes groups); lanes == kThreads is the whole block (one group per
// block, through shared memory). The branch is uniform per block.
template <typename TG>
__global__ void __launch_bounds__(kThreads)
    dq_backward_kernel(const uint8_t *__restrict__ codes, const float *__restrict__ z,
                       const TG *__restrict__ g, float *__restrict__ ds, CqShape p, int lanes) {
  int64_t seg;
  int lane;
  if (lanes == kThreads) {
    seg = blockIdx.x;
    lane = threadIdx.x;
  } else {
    int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    seg = tid / lanes;
    lane = (int)(tid % lanes);
  }
  bool active = seg < p.nseg;
  double acc = 0.0;
  if (active) {
    int64_t start, len;
    seg_range(p, seg, start, len);
    float zt = q_zero(z, seg, p);
    for (int64_t i = start + lane; i < start + len; i += lanes)
      acc += (double)qat_ld(g, i) * (double)(((float)codes[i] - p.off) - zt); // as the CPU
  }
  if (lanes < kThreads) {
    acc = warp_sum(acc, lanes); // every lane of the warp takes part, active or not
    if (active && lane == 0) ds[seg] = (float)acc;
    return;
  }
  __shared__ double part[kThreads / 32];
  int wl = threadIdx.x & 31, warp = threadIdx.x >> 5;
  acc = warp_sum(acc, 32);
  if (wl == 0) part[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = wl < kThreads / 32 ? part[wl] : 0.0;
    acc = warp_sum(acc, 32);
    if (wl == 0 && active) ds[seg] = (float)acc;
  }
}

template <typename TG>
qat_status launch_dq_backward(const qat_backend *be, const CqShape &p, const uint8_t *codes,
                              const float *z, const TG *g, float *ds) {
  int64_t maxlen = p.pertensor ? p.R * p.C : (p.glen < p.C ? p.glen : p.C);
  int lanes = kThreads;
  int64_t blocks = p.nseg; // one group per block
  if (maxlen <= kSmallSeg) {
    // about 8 elements per lane, at most a warp per group
    lanes = 1;
    while (lanes < 32 && (int64_t)lanes * 8 < maxlen) lanes <<= 1;
    blocks = (p.nseg * lanes + kThreads - 1) / kThreads;
  }
  // Per-tensor is a single group, so a single block: fine for the rare per-tensor spec, slow for
  // a large tensor (one SM); a split into partials would need a second kernel.
  if (blocks > INT32_MAX)
    return QAT_FAIL(QAT_EUNSUPPORTED, "dq_backward: %lld groups", (long long)p.nseg);
  dq_backward_kernel<TG><<<(unsigned)blocks, kThreads, 0, qat_cuda(be)->stream>>>(codes, z, g, ds,
                                                                                  p, lanes);
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

} // namespace

// ---- ops -------------------------------------------------------------------------------------------

static qat_status cu_fq_codes(const qat_backend *be, const qat_qspec *q, const qat_tensor *w,
                              const qat_tensor *s, const qat_tensor *z, qat_tensor *codes) {
  QAT_TRY(qat_fq_check_args(be, "fq_codes", q, w, s, z));
  QAT_TRY(qat_fq_check_tensor(be, "fq_codes", "codes", codes, 1u << QAT_U8, w->shape[0],
                              w->shape[1]));
  CqShape p = make_cq(q, w->shape[0], w->shape[1]);
  qat_cuda_ctx *cx = qat_cuda(be);
  int *bad = (int *)cx->workspace; // stream-ordered use of the shared workspace
  QAT_CUDA_TRY(cudaMemsetAsync(bad, 0, sizeof(int), cx->stream));
  QAT_TRY(launch_fq_codes(be, p, (const float *)w->data, (const float *)s->data,
                          p.asym ? (const float *)z->data : nullptr, (uint8_t *)codes->data, bad));
  int hbad = 0;
  QAT_CUDA_TRY(cudaMemcpyAsync(&hbad, bad, sizeof(int), cudaMemcpyDeviceToHost, cx->stream));
  QAT_CUDA_TRY(cudaStreamSynchronize(cx->stream));
  if (hbad)
    return QAT_FAIL(QAT_EINVAL, "fq_codes: tensor %s has no integer code somewhere (NaN weight or "
                                "scale)", w->name ? w->name : "w");
  return QAT_OK;
}

static qat_status cu_dq_forward(const qat_backend *be, const qat_qspec *q, const qat_tensor *codes,
                                const qat_tensor *s, const qat_tensor *z, qat_tensor *w_hat) {
  if (!s) return QAT_FAIL(QAT_EINVAL, "dq_forward: tensor s is missing");
  QAT_TRY(qat_codes_check_args(be, "dq_forward", q, codes, s, z));
  QAT_TRY(qat_fq_check_tensor(be, "dq_forward", "w_hat", w_hat, kFloats, codes->shape[0],
                              codes->shape[1]));
  CqShape p = make_cq(q, codes->shape[0], codes->shape[1]);
  const uint8_t *Q = (const uint8_t *)codes->data;
  const float *S = (const float *)s->data, *Z = p.asym ? (const float *)z->data : nullptr;
  if (w_hat->dtype == QAT_BF16)
    return launch_dq_forward(be, p, Q, S, Z, (__nv_bfloat16 *)w_hat->data);
  return launch_dq_forward(be, p, Q, S, Z, (float *)w_hat->data);
}

static qat_status cu_dq_backward(const qat_backend *be, const qat_qspec *q,
                                 const qat_tensor *codes, const qat_tensor *z, const qat_tensor *g,
                                 qat_tensor *ds) {
  const char *op = "dq_backward";
  QAT_TRY(qat_codes_check_args(be, op, q, codes, nullptr, z));
  int64_t R = codes->shape[0], C = codes->shape[1], ss[2];
  qat_qspec_sshape(q, R, C, ss);
  QAT_TRY(qat_fq_check_tensor(be, op, "g", g, kFloats, R, C));
  QAT_TRY(qat_fq_check_tensor(be, op, "ds", ds, 1u << QAT_F32, ss[0], ss[1]));
  CqShape p = make_cq(q, R, C);
  const uint8_t *Q = (const uint8_t *)codes->data;
  const float *Z = p.asym ? (const float *)z->data : nullptr;
  if (g->dtype == QAT_BF16)
    return launch_dq_backward(be, p, Q, Z, (const __nv_bfloat16 *)g->data, (float *)ds->data);
  return launch_dq_backward(be, p, Q, Z, (const float *)g->data, (float *)ds->data);
}

void qat_cuda_register_codes(qat_backend *be) {
  be->fq_codes = cu_fq_codes;
  be->dq_forward = cu_dq_forward;
  be->dq_backward = cu_dq_backward;
}
