/* CPU SwiGLU (the LLaMA MLP's gate): out[N, F] = silu(gate) * up with silu(g) = g * sigmoid(g).
 * Backward, with sg = sigmoid(g): dup = dout * silu(g), dgate = dout * up * sg * (1 + g (1 - sg)).
 * Evaluated in double with a sigmoid that never overflows exp. */
#include "backend/cpu/cpu_ops.h"

#include <math.h>

static inline double sigmoid(double g) {
  if (g >= 0) return 1.0 / (1.0 + exp(-g));
  double e = exp(g);
  return e / (1.0 + e);
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
  for (int64_t i = 0; i < n; i++) o[i] = (float)((double)g[i] * sigmoid(g[i]) * u[i]);
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
    double gi = g[i], sg = sigmoid(gi), di = d[i], ui = u[i]; /* read all before writing: */
    dg[i] = (float)(di * ui * sg * (1.0 + gi * (1.0 - sg)));  /* dgate may alias gate */
    du[i] = (float)(di * gi * sg);
  }
  return QAT_OK;
}
