/* Group geometry and per-element quantizer arithmetic shared by the CPU fake-quant ops
 * (fakequant.c) and the frozen-code ops (codes.c), so fq_forward and dq_forward(fq_codes) are
 * the same arithmetic by construction.
 * W[R, C]; group (r, j) is columns [j*glen, min((j+1)*glen, C)) of row r; per-channel is row r;
 * per-tensor is all of W (s, z [1, 1]). */
#ifndef QAT_CPU_QGEOM_H
#define QAT_CPU_QGEOM_H

#include "backend/backend.h"

#include <math.h>

typedef struct qgeom {
  int64_t R, C, G; /* G groups per row (1 per-channel and per-tensor) */
  int64_t glen;    /* columns per group (C when per-channel; unused per-tensor) */
  int pertensor, asym;
  float lo, hi; /* code range: asym [0, qmax], sym [Qn, Qp] */
  float qp;     /* Qp of the LSQ gradient scale: qmax (asym) or 2^(N-1) - 1 (sym) */
  float off;    /* stored U8 code = code + off: 0 asym, 2^(bits-1) sym */
  int s16;      /* qat_qspec.scale_f16: init rounds s to F16 */
} qgeom;

static inline qgeom qgeom_make(const qat_qspec *q, int64_t R, int64_t C) {
  qgeom p = {.R = R, .C = C, .pertensor = q->group == 0, .asym = !q->sym, .s16 = q->scale_f16};
  p.G = qat_qspec_groups(q, C);
  p.glen = q->group > 0 ? q->group : C;
  if (p.asym) {
    p.lo = 0.0f;
    p.hi = (float)((1 << q->bits) - 1);
    p.off = 0.0f;
  } else {
    p.lo = -(float)(1 << (q->bits - 1));
    p.hi = (float)((1 << (q->bits - 1)) - 1);
    p.off = (float)(1 << (q->bits - 1));
  }
  p.qp = p.hi;
  return p;
}

/* Comparisons, not fminf/fmaxf: a NaN stays NaN. */
static inline float clampf(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }
static inline float eff_scale(float s) { return clampf(s, QAT_S_MIN, QAT_S_MAX); }
/* The F16 grid of qat_qspec.scale_f16 (backend.h fq_scale_f16): clamp, then round to the
 * nearest F16 (even on ties); NaN stays NaN. */
static inline float f16_scale(float s) { return qat_f16_to_f32(qat_f32_to_f16(eff_scale(s))); }
static inline float eff_zero(const qgeom *p, const float *z, int64_t i) {
  return p->asym ? clampf(rintf(z[i]), 0.0f, p->hi) : 0.0f;
}
/* Index into s / z of group j of row r. */
static inline int64_t sidx(const qgeom *p, int64_t r, int64_t j) {
  return p->pertensor ? 0 : r * p->G + j;
}
/* Columns [*c0, *c1) of group j. */
static inline void group_cols(const qgeom *p, int64_t j, int64_t *c0, int64_t *c1) {
  if (p->pertensor) {
    *c0 = 0;
    *c1 = p->C;
    return;
  }
  *c0 = j * p->glen;
  *c1 = *c0 + p->glen < p->C ? *c0 + p->glen : p->C;
}

#endif
