/* CPU SwiGLU (the LLaMA MLP's gate): out[N, F] = silu(gate) * up with silu(g) = g * sigmoid(g).
 * Backward, with sg = sigmoid(g): dup = dout * silu(g), dgate = dout * up * sg * (1 + g (1 - sg)).
 * F32 with a vectorizable exp (qat_fast_expf, within 2 ulp) of -|g| only, so it never
 * overflows. */
#include "backend/cpu/cpu_ops.h"

#include <math.h>

static inline float sigmoidf(float g) {
  float e = qat_fast_expf(-fabsf(g)); /* in (0, 1] */
  float r = 1.0f / (1.0f + e);
  return g >= 0 ? r : e * r;
}

qat_status qat_cpu_swiglu_fwd(const qat_backend *be, const qat_tensor *gate, const qat_tensor *up,
                              qat_tensor *out) {
  const char *op = "swiglu_fwd";
  CPU_F32(op, gate);
  CPU_F32(op, up);
  CPU_F32(op, out);
  CPU_SAME(op, gate, up);
  CPU_SAME(op, gate, out);
  int64_t n = qat_numel(gate);
  const float *g = (const float *)gate->data, *u = (const float *)up->data;
  float *o = (float *)out->data;
#pragma omp parallel for schedule(static) if (n > QAT_CPU_PAR_MIN)
  for (int64_t i = 0; i < n; i++) o[i] = g[i] * sigmoidf(g[i]) * u[i];
  return QAT_OK;
}

qat_status qat_cpu_swiglu_bwd(const qat_backend *be, const qat_tensor *dout,
                              const qat_tensor *gate, const qat_tensor *up, qat_tensor *dgate,
                              qat_tensor *dup) {
  const char *op = "swiglu_bwd";
  CPU_F32(op, dout);
  CPU_F32(op, gate);
  CPU_F32(op, up);
  CPU_F32(op, dgate);
  CPU_F32(op, dup);
  CPU_SAME(op, gate, up);
  CPU_SAME(op, gate, dout);
  CPU_SAME(op, gate, dgate);
  CPU_SAME(op, gate, dup);
  int64_t n = qat_numel(gate);
  const float *d = (const float *)dout->data, *g = (const float *)gate->data;
  const float *u = (const float *)up->data;
  float *dg = (float *)dgate->data, *du = (float *)dup->data;
#pragma omp parallel for schedule(static) if (n > QAT_CPU_PAR_MIN)
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i], sg = sigmoidf(gi), di = d[i], ui = u[i]; /* read all before writing: */
    dg[i] = di * ui * sg * (1.0f + gi * (1.0f - sg));          /* dgate may alias gate */
    du[i] = di * gi * sg;
  }
  return QAT_OK;
}
