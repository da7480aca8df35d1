// CUDA fused fake-quant: fq_init (min/max per group, or the MSE clipping search), fq_forward (one
// elementwise pass) and
// fq_backward (dw, ds, dz in one pass), matching the CPU reference host/backend/cpu/fakequant.c
// (REFERENCE.md sections 1-2). Tests: tests/test_cuda_fakequant.c; timing:
// benchmarks/bench_fakequant.c.
//
// W[R, C] row-major; every quantizer group is one contiguous run ("segment") of W: group (r, j)
// covers W[r, j*g : min((j+1)*g, C)], per-channel covers row r, per-tensor covers all of W.
// Segment k owns s[k], z[k] (s, z [R, G] row-major, or [1, 1]).
//
// Reductions (init, backward) never use global atomics: a segment is reduced by a group of
// lanes inside one warp (short segments: `lanes` = a power of two <= 32, warp shuffles) or by
// whole blocks (long segments: a block reduces through shared memory; when there are few
// segments each is split over `nsplit` blocks that write partials to the backend workspace, and
// a small finish kernel combines them in a fixed order, so results are deterministic).
// Vector path: 16-byte loads/stores (float4; 8 bytes for 4 BF16) when every segment starts and
// ends on a multiple of 4 elements and the pointers are aligned; otherwise the scalar path.
// Arithmetic per element is the CPU's, operation for operation (IEEE division, rintf), so the
// forward and dw agree with the CPU bit for bit; only the order of the ds, dz sums differs.
// MSE init (q->init == QAT_QINIT_MSE, backend.h qat_qinit): candidates' s, z are the CPU's bit for
// bit (products written as __fmul_rn so nothing is contracted into an FMA); their errors are
// summed in float per lane (double per-tensor) in another order than the CPU's double sums, so a
// near-tie between two candidates may go the other way.
#include "cuda/common.cuh"
#include "cuda/qgeom.cuh"

#include <stdint.h>

namespace {

using namespace qat_qgeom;
using FqShape = QShape;
using FqCode = QCode;

constexpr int kThreads = 256;        // every kernel here; a multiple of 32
constexpr int64_t kSmallSeg = 1024;  // segments up to this long go to sub-warp workers
constexpr int64_t kMinPart = 8192;   // elements per block when a segment is split

__device__ __forceinline__ float fq_fwd1(float w, float sv, float zt, const FqCode &c) {
  float code = q_clamp(rintf(w / sv) + zt, c.lo, c.hi);
  return (code - zt) * sv;
}
// One element of the backward: returns dw; adds G * dw^/ds to ds and G (outside I) to out.
__device__ __forceinline__ float fq_bwd1(float w, float g, float sv, float zt, const FqCode &c,
                                         float &ds, float &out) {
  float u = w / sv, r = rintf(u), code = r + zt;
  if (code < c.lo) {
    ds += g * (c.lo - zt);
    out += g;
    return 0.0f;
  }
  if (code > c.hi) {
    ds += g * (c.hi - zt);
    out += g;
    return 0.0f;
  }
  ds += g * (r - u);
  return g;
}

// ---- vector loads / stores -----------------------------------------------------------------------

__device__ __forceinline__ float4 ld4(const float *p, int64_t i) {
  return *reinterpret_cast<const float4 *>(p + i);
}
__device__ __forceinline__ float4 ld4(const __nv_bfloat16 *p, int64_t i) {
  uint2 raw = *reinterpret_cast<const uint2 *>(p + i);
  __nv_bfloat162 a, b;
  memcpy(&a, &raw.x, 4);
  memcpy(&b, &raw.y, 4);
  float2 fa = __bfloat1622float2(a), fb = __bfloat1622float2(b);
  return make_float4(fa.x, fa.y, fb.x, fb.y);
}
__device__ __forceinline__ void st4(float *p, int64_t i, float4 v) {
  *reinterpret_cast<float4 *>(p + i) = v;
}
__device__ __forceinline__ void st4(__nv_bfloat16 *p, int64_t i, float4 v) {
  __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
  uint2 raw;
  memcpy(&raw.x, &a, 4);
  memcpy(&raw.y, &b, 4);
  *reinterpret_cast<uint2 *>(p + i) = raw;
}

// ---- reductions of a pair of floats ----------------------------------------------------------------

// Work policies (below) define combine(a, b) on float2 and ident().
__device__ __forceinline__ float2 shfl_xor2(float2 v, int o) {
  v.x = __shfl_xor_sync(0xffffffffu, v.x, o);
  v.y = __shfl_xor_sync(0xffffffffu, v.y, o);
  return v;
}
// Reduce over aligned groups of `width` lanes (a power of two <= 32); every lane gets the result.
// All 32 lanes of the warp must call it.
template <class W>
__device__ __forceinline__ float2 warp_reduce(float2 v, int width) {
  for (int o = width >> 1; o > 0; o >>= 1) v = W::combine(v, shfl_xor2(v, o));
  return v;
}
// Whole-block reduction; the result is valid in thread 0.
template <class W>
__device__ float2 block_reduce(float2 v) {
  __shared__ float2 warp_part[kThreads / 32];
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_reduce<W>(v, 32);
  if (lane == 0) warp_part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < (int)(blockDim.x >> 5) ? warp_part[lane] : W::ident();
    v = warp_reduce<W>(v, 32);
  }
  return v;
}

// ---- work policies: what a segment worker does ----------------------------------------------------
// range(st, a, b, t, nt): elements [a, b) of W (absolute flat indices), thread t of nt; under VEC
// a and b are multiples of 4 and each thread takes 4 elements at a time.
// finish(seg, len, st, total): writes the segment's results from the reduced pair.
// parts(p, n): combines n partials of one segment in a fixed order.

template <typename TG, bool VEC>
struct BwdWork {
  const float *w;
  const TG *g;
  const float *s, *z;
  float *dw, *ds, *dz; // any may be NULL
  FqCode c;
  int lsq;
  struct State {
    float sv, zt;
  };
  __device__ static float2 ident() { return make_float2(0.0f, 0.0f); }
  __device__ static float2 combine(float2 a, float2 b) { return make_float2(a.x + b.x, a.y + b.y); }
  __device__ State begin(int64_t seg) const {
    State st;
    st.sv = q_scale(s, seg);
    st.zt = q_zero(z, seg, c);
    return st;
  }
  __device__ float2 range(const State &st, int64_t a, int64_t b, int t, int nt) const {
    float acc_ds = 0.0f, acc_out = 0.0f;
    if (VEC) {
      for (int64_t i = a + 4 * (int64_t)t; i < b; i += 4 * (int64_t)nt) {
        float4 wv = ld4(w, i), gv = ld4(g, i), d;
        d.x = fq_bwd1(wv.x, gv.x, st.sv, st.zt, c, acc_ds, acc_out);
        d.y = fq_bwd1(wv.y, gv.y, st.sv, st.zt, c, acc_ds, acc_out);
        d.z = fq_bwd1(wv.z, gv.z, st.sv, st.zt, c, acc_ds, acc_out);
        d.w = fq_bwd1(wv.w, gv.w, st.sv, st.zt, c, acc_ds, acc_out);
        if (dw) st4(dw, i, d);
      }
    } else {
      for (int64_t i = a + t; i < b; i += nt) {
        float d = fq_bwd1(w[i], qat_ld(g, i), st.sv, st.zt, c, acc_ds, acc_out);
        if (dw) dw[i] = d;
      }
    }
    return make_float2(acc_ds, acc_out);
  }
  __device__ float2 parts(const float2 *p, int n) const {
    double a = 0.0, o = 0.0; // fixed order, double: per-tensor sums span millions of weights
    for (int i = 0; i < n; i++) {
      a += p[i].x;
      o += p[i].y;
    }
    return make_float2((float)a, (float)o);
  }
  __device__ void finish(int64_t seg, int64_t len, const State &st, float2 tot) const {
    double gs = lsq ? 1.0 / sqrt((double)len * (double)c.qp) : 1.0;
    if (ds) ds[seg] = (float)((double)tot.x * gs);
    if (dz) dz[seg] = (float)(-(double)st.sv * (double)tot.y * gs);
  }
};

// Init: (min, max) per segment; s and z from them exactly as the CPU; any non-finite weight
// sets *bad (a plain store of 1: every writer writes the same value, no atomics needed).
template <bool VEC>
struct InitWork {
  const float *w;
  float *s, *z; // z NULL when sym
  int *bad;
  FqCode c;
  float2 *mm; // non-NULL: write (min, max) of the segment to mm[seg] instead of s, z
  struct State {};
  __device__ static float2 ident() { return make_float2(INFINITY, -INFINITY); }
  __device__ static float2 combine(float2 a, float2 b) {
    return make_float2(fminf(a.x, b.x), fmaxf(a.y, b.y));
  }
  __device__ State begin(int64_t) const { return State(); }
  __device__ float2 range(const State &, int64_t a, int64_t b, int t, int nt) const {
    float mn = INFINITY, mx = -INFINITY;
    bool finite = true;
    if (VEC) {
      for (int64_t i = a + 4 * (int64_t)t; i < b; i += 4 * (int64_t)nt) {
        float4 v = ld4(w, i);
        mn = fminf(fminf(mn, v.x), fminf(v.y, fminf(v.z, v.w)));
        mx = fmaxf(fmaxf(mx, v.x), fmaxf(v.y, fmaxf(v.z, v.w)));
        finite &= isfinite(v.x) && isfinite(v.y) && isfinite(v.z) && isfinite(v.w);
      }
    } else {
      for (int64_t i = a + t; i < b; i += nt) {
        float v = w[i];
        mn = fminf(mn, v);
        mx = fmaxf(mx, v);
        finite &= isfinite(v);
      }
    }
    if (!finite) *bad = 1;
    return make_float2(mn, mx);
  }
  __device__ float2 parts(const float2 *p, int n) const {
    float2 v = ident();
    for (int i = 0; i < n; i++) v = combine(v, p[i]);
    return v;
  }
  __device__ void finish(int64_t seg, int64_t, const State &, float2 mm) const {
    if (this->mm) {
      this->mm[seg] = mm;
      return;
    }
    if (c.asym) {
      float sv = q_clamp((mm.y - mm.x) / c.hi, QAT_S_MIN, QAT_S_MAX);
      if (c.s16) sv = q_f16_scale(sv);
      s[seg] = sv;
      z[seg] = rintf(-q_clamp(mm.x / sv, -1e4f, 1e4f)) + 0.0f; // + 0: no -0 zero points
    } else {
      float amax = fmaxf(fabsf(mm.x), fabsf(mm.y));
      float sv = q_clamp(amax / c.hi, QAT_S_MIN, QAT_S_MAX);
      s[seg] = c.s16 ? q_f16_scale(sv) : sv;
    }
  }
};

// ---- segment kernels -----------------------------------------------------------------------------

// Short segments: `lanes` consecutive lanes (a power of two <= 32) per segment.
template <class W>
__global__ void __launch_bounds__(kThreads) seg_small_kernel(W wk, FqShape p, int lanes) {
  int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  int64_t seg = tid / lanes;
  int lane = (int)(tid % lanes);
  bool active = seg < p.nseg;
  float2 v = W::ident();
  typename W::State st{};
  int64_t start = 0, len = 0;
  if (active) {
    seg_range(p, seg, start, len);
    st = wk.begin(seg);
    v = wk.range(st, start, start + len, lane, lanes);
  }
  v = warp_reduce<W>(v, lanes); // every lane of the warp takes part, active or not
  if (active && lane == 0) wk.finish(seg, len, st, v);
}

// Long segments: nsplit blocks per segment. nsplit == 1: the block finishes its segment;
// otherwise it writes its partial to part[blockIdx.x] for seg_finish_kernel.
template <class W, bool VEC>
__global__ void __launch_bounds__(kThreads)
    seg_large_kernel(W wk, FqShape p, int nsplit, float2 *part) {
  int64_t seg = blockIdx.x / nsplit;
  int piece = (int)(blockIdx.x % nsplit);
  int64_t start, len;
  seg_range(p, seg, start, len);
  int64_t chunk = (len + nsplit - 1) / nsplit;
  if (VEC) chunk = (chunk + 3) & ~(int64_t)3; // pieces start on 16-byte boundaries
  int64_t a = (int64_t)piece * chunk, b = a + chunk < len ? a + chunk : len;
  typename W::State st = wk.begin(seg);
  float2 v = a < b ? wk.range(st, start + a, start + b, threadIdx.x, blockDim.x) : W::ident();
  v = block_reduce<W>(v);
  if (threadIdx.x == 0) {
    if (nsplit == 1)
      wk.finish(seg, len, st, v);
    else
      part[blockIdx.x] = v;
  }
}

template <class W>
__global__ void seg_finish_kernel(W wk, FqShape p, int nsplit, const float2 *part) {
  int64_t seg = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (seg >= p.nseg) return;
  int64_t start, len;
  seg_range(p, seg, start, len);
  wk.finish(seg, len, wk.begin(seg), wk.parts(part + seg * nsplit, nsplit));
}

// ---- MSE init: the clipping search (backend.h qat_qinit) -----------------------------------

// Candidate i of a range [mn, mx]: s, z exactly as the min-max init (InitWork::finish and the
// CPU's init_from_range) makes them from (p mn, p mx), and z~.
__device__ __forceinline__ void mse_cand(const FqCode &c, int i, float mn, float mx, float &s,
                                         float &z, float &zt) {
  float p = (float)(1.0 - (double)i / QAT_MSE_GRID);
  float a = __fmul_rn(p, mn), b = __fmul_rn(p, mx);
  if (c.asym) {
    s = q_clamp((b - a) / c.hi, QAT_S_MIN, QAT_S_MAX);
    if (c.s16) s = q_f16_scale(s);
    z = rintf(-q_clamp(a / s, -1e4f, 1e4f)) + 0.0f;
    zt = q_clamp(rintf(z), 0.0f, c.hi);
  } else {
    s = q_clamp(fmaxf(fabsf(a), fabsf(b)) / c.hi, QAT_S_MIN, QAT_S_MAX);
    if (c.s16) s = q_f16_scale(s);
    z = zt = 0.0f;
  }
}

// x^2.4 for finite x >= 0: the twin of the CPU's pow24f (host/backend/cpu/fakequant.c, same
// reduction and polynomials, within 4e-7 relative of the exact power; FMA contraction moves the
// last bits). Terms below 2^-52 count as 0; above 2^53 +inf.
__device__ __forceinline__ float mse_pow24(float x) {
  uint32_t b = __float_as_uint(x);
  float m = __uint_as_float((b & 0x7fffffu) | 0x3f800000u);
  int big = m > 1.41421356f;
  m = big ? 0.5f * m : m;
  float k12 = 12.0f * (float)((int)(b >> 23) - 127 + big), q = floorf(0.2f * k12);
  float r = k12 - 5.0f * q; // 2.4 k = q + r / 5
  float t = (m - 1.0f) / (m + 1.0f), t2 = t * t, t4 = t2 * t2;
  float lnm = t * ((2.0f + 0.6666667f * t2) + t4 * (0.4f + 0.2857143f * t2));
  float y = 2.4f * lnm + r * 0.13862944f;
  float n = rintf(y * 1.44269504f), f = y - n * 0.69314718f, f2 = f * f, f4 = f2 * f2;
  float e = ((1.0f + f) + f2 * (0.5f + 0.16666667f * f)) +
            f4 * ((0.041666668f + 0.0083333338f * f) + f2 * (0.0013888889f + 1.984127e-4f * f));
  float res = __uint_as_float(__float_as_uint(e) + ((uint32_t)(int)(q + n) << 23));
  res = x > 0x1p53f ? INFINITY : res;
  return x < 0x1p-52f ? 0.0f : res;
}

// |w_hat - w|^2.4 of one weight, w_hat exactly the forward's (fq_fwd1).
__device__ __forceinline__ float mse_err1(float w, float sv, float zt, const FqCode &c) {
  float code = q_clamp(rintf(w / sv) + zt, c.lo, c.hi);
  return mse_pow24(fabsf(__fsub_rn(__fmul_rn(code - zt, sv), w)));
}

__device__ __forceinline__ float lanes_sum(float v, int width) {
  for (int o = width >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ int lanes_and(int v, int width) {
  for (int o = width >> 1; o > 0; o >>= 1) v &= __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Groups and per-channel rows: `lanes` consecutive lanes (a power of two <= 32) per segment take
// its min and max, then every candidate: lane-partial float error sums, reduced across the lanes
// by xor shuffles (every lane gets the same total, so all agree on the best). Every lane of a
// warp runs the same shuffles whether its segment exists and is finite or not.
__global__ void __launch_bounds__(kThreads)
    mse_seg_kernel(const float *__restrict__ w, float *s, float *z, int *bad, FqShape p, FqCode c,
                   int lanes) {
  int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  int64_t seg = tid / lanes;
  int lane = (int)(tid % lanes);
  bool active = seg < p.nseg;
  int64_t start = 0, len = 0;
  float mn = INFINITY, mx = -INFINITY;
  int finite = 1;
  if (active) {
    seg_range(p, seg, start, len);
    for (int64_t i = start + lane; i < start + len; i += lanes) {
      float v = w[i];
      mn = fminf(mn, v);
      mx = fmaxf(mx, v);
      finite &= isfinite(v);
    }
  }
  for (int o = lanes >> 1; o > 0; o >>= 1) {
    mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, o));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  }
  finite = lanes_and(finite, lanes);
  if (active && !finite && lane == 0) *bad = 1;
  bool run = active && finite;
  float best = INFINITY, bs = 0.0f, bz = 0.0f;
  for (int k = 0; k < QAT_MSE_STEPS; k++) {
    float sc, zc, zt, e = 0.0f;
    mse_cand(c, k, mn, mx, sc, zc, zt);
    if (run)
      for (int64_t i = start + lane; i < start + len; i += lanes) e += mse_err1(w[i], sc, zt, c);
    e = lanes_sum(e, lanes);
    if (k == 0 || e < best) { // k = 0 (min-max) always stands; ties keep the earlier
      best = e;
      bs = sc;
      bz = zc;
    }
  }
  if (run && lane == 0) {
    s[seg] = bs;
    if (c.asym) z[seg] = bz;
  }
}

// Per-tensor (one segment of R*C weights): block (k, piece) of QAT_MSE_STEPS x nsplit sums
// candidate k's error over one piece in double into part[k * nsplit + piece]; mm (min, max) was
// reduced before.
__global__ void __launch_bounds__(kThreads)
    mse_tensor_err_kernel(const float *__restrict__ w, int64_t n, const float2 *mm, FqCode c,
                          int nsplit, double *part) {
  __shared__ double warp_part[kThreads / 32];
  int k = blockIdx.x / nsplit, piece = blockIdx.x % nsplit;
  float sc, zc, zt;
  mse_cand(c, k, mm->x, mm->y, sc, zc, zt);
  int64_t chunk = (n + nsplit - 1) / nsplit, a = (int64_t)piece * chunk;
  int64_t b = a + chunk < n ? a + chunk : n;
  double e = 0.0;
  for (int64_t i = a + threadIdx.x; i < b; i += blockDim.x) e += mse_err1(w[i], sc, zt, c);
  for (int o = 16; o > 0; o >>= 1) e += __shfl_xor_sync(0xffffffffu, e, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_part[warp] = e;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0.0; // fixed order
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) t += warp_part[i];
    part[blockIdx.x] = t;
  }
}

// Per-tensor: candidate errors = fixed-order sums of the pieces; the first smallest wins.
__global__ void mse_tensor_pick_kernel(const float2 *mm, FqCode c, int nsplit, const double *part,
                                       float *s, float *z) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double best = INFINITY;
  for (int k = 0; k < QAT_MSE_STEPS; k++) {
    double e = 0.0;
    for (int i = 0; i < nsplit; i++) e += part[k * nsplit + i];
    if (k == 0 || e < best) {
      float sc, zc, zt;
      mse_cand(c, k, mm->x, mm->y, sc, zc, zt);
      best = e;
      s[0] = sc;
      if (c.asym) z[0] = zc;
    }
  }
}

// ---- launch planning -----------------------------------------------------------------------------

bool aligned(const void *ptr, unsigned bytes) { return ((uintptr_t)ptr % bytes) == 0; }

// Every segment starts and ends on a multiple of 4 elements.
bool vec_layout(const FqShape &p) {
  if (p.pertensor) return (p.R * p.C) % 4 == 0;
  return p.C % 4 == 0 && p.glen % 4 == 0;
}

int pow2_at_least(int64_t n) {
  int l = 1;
  while (l < 32 && l < n) l <<= 1;
  return l;
}

// Runs a work policy over all segments: small or large kernels, plus the finish kernel when
// segments are split. W<VEC> instances are built by the caller.
template <class W, bool VEC>
qat_status run_segments(const qat_backend *be, const W &wk, const FqShape &p, float2 *ws,
                        size_t ws_count) {
  qat_cuda_ctx *cx = qat_cuda(be);
  cudaStream_t stream = cx->stream;
  int64_t maxlen = p.pertensor ? p.R * p.C : (p.glen < p.C ? p.glen : p.C);
  if (!p.pertensor && maxlen <= kSmallSeg) {
    int lanes = pow2_at_least(VEC ? (maxlen + 3) / 4 : maxlen);
    int64_t threads = p.nseg * lanes;
    int64_t blocks = (threads + kThreads - 1) / kThreads;
    if (blocks > INT32_MAX) return QAT_FAIL(QAT_EUNSUPPORTED, "fake-quant: %lld segments", (long long)p.nseg);
    seg_small_kernel<W><<<(unsigned)blocks, kThreads, 0, stream>>>(wk, p, lanes);
    QAT_CUDA_LAUNCHED();
    return QAT_OK;
  }
  // enough blocks to fill the GPU a few times over, each with at least kMinPart elements
  int64_t target = 4 * (int64_t)(cx->sm_count > 0 ? cx->sm_count : 100);
  int64_t nsplit = (target + p.nseg - 1) / p.nseg;
  int64_t maxsplit = (maxlen + kMinPart - 1) / kMinPart;
  if (nsplit > maxsplit) nsplit = maxsplit;
  if (nsplit < 1) nsplit = 1;
  if (nsplit > 1 && (size_t)(p.nseg * nsplit) > ws_count) nsplit = (int64_t)ws_count / p.nseg;
  if (nsplit < 1) nsplit = 1;
  int64_t blocks = p.nseg * nsplit;
  if (blocks > INT32_MAX) return QAT_FAIL(QAT_EUNSUPPORTED, "fake-quant: %lld segments", (long long)p.nseg);
  seg_large_kernel<W, VEC><<<(unsigned)blocks, kThreads, 0, stream>>>(wk, p, (int)nsplit, ws);
  QAT_CUDA_LAUNCHED();
  if (nsplit > 1) {
    unsigned fb = (unsigned)((p.nseg + kThreads - 1) / kThreads);
    seg_finish_kernel<W><<<fb, kThreads, 0, stream>>>(wk, p, (int)nsplit, ws);
    QAT_CUDA_LAUNCHED();
  }
  return QAT_OK;
}

// Workspace layout: [0, 256) an int flag (init) at 0, the per-tensor MSE (min, max) at 8, the
// first non-finite index at 16; then float2 partials.
constexpr size_t kWsFlagBytes = 256;
float2 *ws_parts(const qat_backend *be, size_t *count) {
  qat_cuda_ctx *cx = qat_cuda(be);
  *count = (cx->workspace_bytes - kWsFlagBytes) / sizeof(float2);
  return (float2 *)((char *)cx->workspace + kWsFlagBytes);
}

// MSE init of all segments; *bad (workspace flag, zeroed by the caller) marks non-finite weights.
template <bool VEC>
qat_status launch_mse_tensor(const qat_backend *be, const FqShape &p, const FqCode &c,
                             const float *w, float *s, float *z, int *bad, float2 *mm) {
  size_t nws;
  float2 *ws = ws_parts(be, &nws);
  InitWork<VEC> wk{w, s, z, bad, c, mm};
  QAT_TRY((run_segments<InitWork<VEC>, VEC>(be, wk, p, ws, nws))); // (min, max) -> *mm
  qat_cuda_ctx *cx = qat_cuda(be);
  int64_t n = p.R * p.C, target = 8 * (int64_t)(cx->sm_count > 0 ? cx->sm_count : 100);
  int64_t nsplit = (target + QAT_MSE_STEPS - 1) / QAT_MSE_STEPS;
  int64_t maxsplit = (n + kMinPart - 1) / kMinPart, fit = (int64_t)nws / QAT_MSE_STEPS;
  if (nsplit > maxsplit) nsplit = maxsplit;
  if (nsplit > fit) nsplit = fit;
  if (nsplit < 1) nsplit = 1;
  double *part = (double *)ws; // float2 and double are both 8 bytes
  mse_tensor_err_kernel<<<(unsigned)(QAT_MSE_STEPS * nsplit), kThreads, 0, cx->stream>>>(
      w, n, mm, c, (int)nsplit, part);
  QAT_CUDA_LAUNCHED();
  mse_tensor_pick_kernel<<<1, 32, 0, cx->stream>>>(mm, c, (int)nsplit, part, s, z);
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

qat_status launch_mse_init(const qat_backend *be, const FqShape &p, const FqCode &c,
                           const float *w, float *s, float *z, int *bad) {
  qat_cuda_ctx *cx = qat_cuda(be);
  if (p.pertensor) {
    float2 *mm = (float2 *)((char *)cx->workspace + 8); // after the flag, inside kWsFlagBytes
    if (vec_layout(p) && aligned(w, 16)) return launch_mse_tensor<true>(be, p, c, w, s, z, bad, mm);
    return launch_mse_tensor<false>(be, p, c, w, s, z, bad, mm);
  }
  int lanes = pow2_at_least(p.glen < p.C ? p.glen : p.C);
  int64_t blocks = (p.nseg * lanes + kThreads - 1) / kThreads;
  if (blocks > INT32_MAX)
    return QAT_FAIL(QAT_EUNSUPPORTED, "fq_init: %lld segments", (long long)p.nseg);
  mse_seg_kernel<<<(unsigned)blocks, kThreads, 0, cx->stream>>>(w, s, z, bad, p, c, lanes);
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

// First non-finite weight of w[n] (error path only): each thread stops at its own first one, so
// the smallest index reported (atomicMin: order-independent) is the tensor's first.
__global__ void first_bad_kernel(const float *__restrict__ w, int64_t n,
                                 unsigned long long *first) {
  int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step)
    if (!isfinite(w[i])) {
      atomicMin(first, (unsigned long long)i);
      return;
    }
}

// fq_init's error for a non-finite weight, worded as the CPU's: which element, which value.
qat_status bad_weight_error(const qat_backend *be, const qat_tensor *w) {
  qat_cuda_ctx *cx = qat_cuda(be);
  int64_t C = w->shape[1], n = w->shape[0] * C;
  unsigned long long *first = (unsigned long long *)((char *)cx->workspace + 16), at = ~0ull;
  QAT_CUDA_TRY(cudaMemsetAsync(first, 0xff, sizeof at, cx->stream));
  int64_t blocks = (n + kThreads - 1) / kThreads;
  int64_t cap = 8 * (int64_t)(cx->sm_count > 0 ? cx->sm_count : 100); // grid-stride beyond
  first_bad_kernel<<<(unsigned)(blocks < cap ? blocks : cap), kThreads, 0, cx->stream>>>(
      (const float *)w->data, n, first);
  QAT_CUDA_LAUNCHED();
  QAT_CUDA_TRY(cudaMemcpyAsync(&at, first, sizeof at, cudaMemcpyDeviceToHost, cx->stream));
  QAT_CUDA_TRY(cudaStreamSynchronize(cx->stream));
  const char *name = w->name ? w->name : "w";
  if (at >= (unsigned long long)n) // not found again: the weights changed under us
    return QAT_FAIL(QAT_EINVAL, "fq_init: tensor %s has a non-finite weight (NaN or Inf)", name);
  float v = 0.0f;
  QAT_CUDA_TRY(cudaMemcpyAsync(&v, (const float *)w->data + at, sizeof v, cudaMemcpyDeviceToHost,
                               cx->stream));
  QAT_CUDA_TRY(cudaStreamSynchronize(cx->stream));
  int64_t i = (int64_t)at;
  return QAT_FAIL(QAT_EINVAL, "fq_init: tensor %s has a non-finite weight (%g) at [%lld, %lld]",
                  name, (double)v, (long long)(i / C), (long long)(i % C));
}

// ---- forward -------------------------------------------------------------------------------------

// IT: the index type; 32-bit when the tensor has < 2^31 elements (64-bit division is slow).
template <typename TO, bool VEC, typename IT>
__global__ void __launch_bounds__(kThreads)
    fq_forward_kernel(const float *__restrict__ w, const float *__restrict__ s,
                      const float *__restrict__ z, TO *__restrict__ out, FqShape p, FqCode c) {
  IT n = (IT)(p.R * p.C), units = VEC ? n / 4 : n, C = (IT)p.C, G = (IT)p.G, glen = (IT)p.glen;
  for (IT u = (IT)blockIdx.x * blockDim.x + threadIdx.x; u < units; u += (IT)gridDim.x * blockDim.x) {
    IT i = VEC ? 4 * u : u, k = 0;
    if (!p.pertensor) {
      IT r = i / C;
      k = r * G + (i - r * C) / glen; // under VEC the 4 elements share the group
    }
    float sv = q_scale(s, k), zt = q_zero(z, k, c);
    if (VEC) {
      float4 v = ld4(w, i);
      v.x = fq_fwd1(v.x, sv, zt, c);
      v.y = fq_fwd1(v.y, sv, zt, c);
      v.z = fq_fwd1(v.z, sv, zt, c);
      v.w = fq_fwd1(v.w, sv, zt, c);
      st4(out, i, v);
    } else {
      qat_st(out, i, fq_fwd1(w[i], sv, zt, c));
    }
  }
}

template <typename TO, bool VEC>
void forward_kernel_launch(unsigned blocks, cudaStream_t st, int64_t n, const float *w,
                           const float *s, const float *z, TO *out, const FqShape &p,
                           const FqCode &c) {
  if (n < ((int64_t)1 << 31))
    fq_forward_kernel<TO, VEC, uint32_t><<<blocks, kThreads, 0, st>>>(w, s, z, out, p, c);
  else
    fq_forward_kernel<TO, VEC, int64_t><<<blocks, kThreads, 0, st>>>(w, s, z, out, p, c);
}

template <typename TO>
qat_status launch_forward(const qat_backend *be, const FqShape &p, const FqCode &c,
                          const float *w, const float *s, const float *z, TO *out) {
  qat_cuda_ctx *cx = qat_cuda(be);
  bool vec = vec_layout(p) && aligned(w, 16) && aligned(out, 4 * sizeof(TO));
  int64_t n = p.R * p.C, units = vec ? n / 4 : n;
  int64_t blocks = (units + kThreads - 1) / kThreads;
  int64_t cap = 32 * (int64_t)(cx->sm_count > 0 ? cx->sm_count : 100); // grid-stride beyond
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  if (vec)
    forward_kernel_launch<TO, true>((unsigned)blocks, cx->stream, n, w, s, z, out, p, c);
  else
    forward_kernel_launch<TO, false>((unsigned)blocks, cx->stream, n, w, s, z, out, p, c);
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

} // namespace

// ---- ops -------------------------------------------------------------------------------------------

static qat_status cu_fq_init(const qat_backend *be, const qat_qspec *q, const qat_tensor *w,
                             qat_tensor *s, qat_tensor *z) {
  QAT_TRY(qat_fq_check_args(be, "fq_init", q, w, s, z));
  FqShape p = make_shape(q, w->shape[0], w->shape[1]);
  FqCode c = make_code(q);
  qat_cuda_ctx *cx = qat_cuda(be);
  size_t nws;
  float2 *ws = ws_parts(be, &nws);
  int *bad = (int *)cx->workspace;
  QAT_CUDA_TRY(cudaMemsetAsync(bad, 0, sizeof(int), cx->stream));
  bool vec = vec_layout(p) && aligned(w->data, 16);
  const float *W = (const float *)w->data;
  float *S = (float *)s->data, *Z = c.asym ? (float *)z->data : nullptr;
  if (q->init == QAT_QINIT_MSE) {
    QAT_TRY(launch_mse_init(be, p, c, W, S, Z, bad));
  } else if (vec) {
    InitWork<true> wk{W, S, Z, bad, c, nullptr};
    QAT_TRY((run_segments<InitWork<true>, true>(be, wk, p, ws, nws)));
  } else {
    InitWork<false> wk{W, S, Z, bad, c, nullptr};
    QAT_TRY((run_segments<InitWork<false>, false>(be, wk, p, ws, nws)));
  }
  int hbad = 0;
  QAT_CUDA_TRY(cudaMemcpyAsync(&hbad, bad, sizeof(int), cudaMemcpyDeviceToHost, cx->stream));
  QAT_CUDA_TRY(cudaStreamSynchronize(cx->stream));
  if (hbad) return bad_weight_error(be, w);
  return QAT_OK;
}

static qat_status cu_fq_forward(const qat_backend *be, const qat_qspec *q, const qat_tensor *w,
                                const qat_tensor *s, const qat_tensor *z, qat_tensor *w_hat) {
  QAT_TRY(qat_fq_check_args(be, "fq_forward", q, w, s, z));
  QAT_TRY(qat_fq_check_tensor(be, "fq_forward", "w_hat", w_hat,
                              (1u << QAT_F32) | (1u << QAT_BF16), w->shape[0], w->shape[1]));
  FqShape p = make_shape(q, w->shape[0], w->shape[1]);
  FqCode c = make_code(q);
  const float *W = (const float *)w->data, *S = (const float *)s->data;
  const float *Z = c.asym ? (const float *)z->data : nullptr;
  if (w_hat->dtype == QAT_BF16)
    return launch_forward(be, p, c, W, S, Z, (__nv_bfloat16 *)w_hat->data);
  return launch_forward(be, p, c, W, S, Z, (float *)w_hat->data);
}

template <typename TG>
static qat_status launch_backward(const qat_backend *be, const qat_qspec *q, const FqShape &p,
                                  const qat_tensor *w, const qat_tensor *s, const qat_tensor *z,
                                  const qat_tensor *g, qat_tensor *dw, qat_tensor *ds,
                                  qat_tensor *dz) {
  FqCode c = make_code(q);
  size_t nws;
  float2 *ws = ws_parts(be, &nws);
  const float *W = (const float *)w->data, *S = (const float *)s->data;
  const float *Z = c.asym ? (const float *)z->data : nullptr;
  float *DW = dw ? (float *)dw->data : nullptr, *DS = ds ? (float *)ds->data : nullptr;
  float *DZ = dz ? (float *)dz->data : nullptr;
  int lsq = q->grad == QAT_QGRAD_LSQ;
  bool vec = vec_layout(p) && aligned(W, 16) && aligned(g->data, 4 * sizeof(TG)) &&
             (!DW || aligned(DW, 16));
  if (vec) {
    BwdWork<TG, true> wk{W, (const TG *)g->data, S, Z, DW, DS, DZ, c, lsq};
    return run_segments<BwdWork<TG, true>, true>(be, wk, p, ws, nws);
  }
  BwdWork<TG, false> wk{W, (const TG *)g->data, S, Z, DW, DS, DZ, c, lsq};
  return run_segments<BwdWork<TG, false>, false>(be, wk, p, ws, nws);
}

static qat_status cu_fq_backward(const qat_backend *be, const qat_qspec *q, const qat_tensor *w,
                                 const qat_tensor *s, const qat_tensor *z, const qat_tensor *g,
                                 qat_tensor *dw, qat_tensor *ds, qat_tensor *dz) {
  const char *op = "fq_backward";
  QAT_TRY(qat_fq_check_args(be, op, q, w, s, z));
  int64_t R = w->shape[0], C = w->shape[1], ss[2];
  qat_qspec_sshape(q, R, C, ss);
  QAT_TRY(qat_fq_check_tensor(be, op, "g", g, (1u << QAT_F32) | (1u << QAT_BF16), R, C));
  if (dw) QAT_TRY(qat_fq_check_tensor(be, op, "dw", dw, 1u << QAT_F32, R, C));
  if (q->grad == QAT_QGRAD_STE) ds = dz = nullptr; // s, z get no gradient: nothing written
  if (q->sym) dz = nullptr;                        // no zero point
  if (ds) QAT_TRY(qat_fq_check_tensor(be, op, "ds", ds, 1u << QAT_F32, ss[0], ss[1]));
  if (dz) QAT_TRY(qat_fq_check_tensor(be, op, "dz", dz, 1u << QAT_F32, ss[0], ss[1]));
  if (!dw && !ds && !dz) return QAT_OK;
  FqShape p = make_shape(q, R, C);
  if (g->dtype == QAT_BF16) return launch_backward<__nv_bfloat16>(be, q, p, w, s, z, g, dw, ds, dz);
  return launch_backward<float>(be, q, p, w, s, z, g, dw, ds, dz);
}

// The backend's stream, for benchmarks that time ops with CUDA events (see bench_fakequant.c).
// Belongs in backend.cu / backend.h as a general accessor.
extern "C" void *qat_fq_cuda_stream(const qat_backend *be) {
  return be && be->ctx ? (void *)qat_cuda(be)->stream : nullptr;
}

// ---- F16 grid of the step sizes (backend.h fq_scale_f16; twin of the CPU's cpu_fq_scale_f16) ---

__global__ void fq_scale_f16_kernel(float *s, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    s[i] = q_f16_scale(s[i]);
}

static qat_status cu_fq_scale_f16(const qat_backend *be, qat_tensor *s) {
  if (!s || (!s->data && qat_numel(s) > 0))
    return QAT_FAIL(QAT_EINVAL, "fq_scale_f16: tensor s is missing");
  if (s->dtype != QAT_F32 || s->device != be->device)
    return QAT_FAIL(QAT_EINVAL, "fq_scale_f16: tensor %s must be F32 on the %s backend",
                    s->name ? s->name : "s", be->name);
  const int64_t n = qat_numel(s);
  if (n == 0) return QAT_OK;
  int64_t want = (n + 255) / 256;
  unsigned blocks = (unsigned)(want < 8 * 65535 ? want : 8 * 65535);
  fq_scale_f16_kernel<<<blocks, 256, 0, qat_cuda(be)->stream>>>((float *)s->data, n);
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

void qat_cuda_register_quant(qat_backend *be) {
  be->fq_scale_f16 = cu_fq_scale_f16;
  be->fq_init = cu_fq_init;
  be->fq_forward = cu_fq_forward;
  be->fq_backward = cu_fq_backward;
}
