// Segment geometry and per-element quantizer arithmetic shared by the CUDA fake-quant ops
// (fakequant.cu) and the frozen-code ops (codes.cu) - the device twin of
// host/backend/cpu/qgeom.h, so both files round and clamp the same way by construction.
// W[R, C] row-major; quantizer group k is one contiguous run ("segment") of W: group (r, j) is
// W[r, j*glen : min((j+1)*glen, C)], per-channel is row r, per-tensor is all of W.
#pragma once

#include "cuda/common.cuh"

#include <cuda_fp16.h>

namespace qat_qgeom {

struct QShape {
  int64_t R, C, G; // G segments per row (1 per-channel)
  int64_t glen;    // elements per segment (the last of a row may be shorter); R*C per-tensor
  int64_t nseg;
  int pertensor;
};

struct QCode {
  float lo, hi; // code range: asym [0, qmax], sym [Qn, Qp]
  float qp;     // Qp of the LSQ gradient scale
  float off;    // stored U8 code = code + off: 0 asym, 2^(bits-1) sym
  int asym;
  int s16; // qat_qspec.scale_f16: init rounds s to F16 (before z is derived from it)
};

inline QShape make_shape(const qat_qspec *q, int64_t R, int64_t C) {
  QShape p;
  p.R = R;
  p.C = C;
  p.pertensor = q->group == 0;
  p.G = qat_qspec_groups(q, C);
  p.glen = q->group > 0 ? q->group : (p.pertensor ? R * C : C);
  p.nseg = p.pertensor ? 1 : R * p.G;
  return p;
}

inline QCode make_code(const qat_qspec *q) {
  QCode c;
  c.asym = !q->sym;
  c.s16 = q->scale_f16;
  if (c.asym) {
    c.lo = 0.0f;
    c.hi = (float)((1 << q->bits) - 1);
    c.off = 0.0f;
  } else {
    c.lo = -(float)(1 << (q->bits - 1));
    c.hi = (float)((1 << (q->bits - 1)) - 1);
    c.off = (float)(1 << (q->bits - 1));
  }
  c.qp = c.hi;
  return c;
}

__device__ __forceinline__ void seg_range(const QShape &p, int64_t seg, int64_t &start,
                                          int64_t &len) {
  if (p.pertensor) {
    start = 0;
    len = p.R * p.C;
    return;
  }
  int64_t r = seg / p.G, j = seg - r * p.G, c0 = j * p.glen;
  start = r * p.C + c0;
  len = p.C - c0 < p.glen ? p.C - c0 : p.glen;
}

// Comparisons, not fminf/fmaxf: a NaN stays NaN (as on the CPU).
__device__ __forceinline__ float q_clamp(float x, float lo, float hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}
__device__ __forceinline__ float q_scale(const float *s, int64_t k) {
  return q_clamp(s[k], QAT_S_MIN, QAT_S_MAX);
}
// The F16 grid of qat_qspec.scale_f16 (backend.h fq_scale_f16): clamp, then round to the nearest
// F16 (even on ties, as the CPU's qat_f32_to_f16); NaN stays NaN. Clamped values are F16 normals.
__device__ __forceinline__ float q_f16_scale(float s) {
  return __half2float(__float2half_rn(q_clamp(s, QAT_S_MIN, QAT_S_MAX)));
}
__device__ __forceinline__ float q_zero(const float *z, int64_t k, const QCode &c) {
  return c.asym ? q_clamp(rintf(z[k]), 0.0f, c.hi) : 0.0f;
}

} // namespace qat_qgeom
