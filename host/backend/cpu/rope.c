/* CPU rotary position embedding, Hugging Face rotate-half convention, in place on x[B, T, H, D]:
 * for i < D/2 the pair (x[i], x[i + D/2]) rotates by a = (pos0 + t) * inv_freq[i]. As in
 * Hugging Face, the angle is formed in float32 (position times inv_freq, both float32) and its
 * cos / sin are taken of that float; the rotation itself is done in double. inverse != 0 rotates
 * by -a: the exact backward (a rotation's transpose is its inverse). */
#include "backend/cpu/cpu_ops.h"

#include <math.h>

qat_status qat_cpu_rope(const qat_backend *be, qat_tensor *x, const qat_tensor *inv_freq,
                        int64_t pos0, int inverse) {
  const char *op = "rope";
  CPU_F32(op, x);
  CPU_F32(op, inv_freq);
  char s[96];
  if (x->ndim != 4)
    return QAT_FAIL(QAT_EINVAL, "rope: x %s should be [B, T, H, D]", qat_shape_str(x, s, sizeof s));
  int64_t B = x->shape[0], T = x->shape[1], H = x->shape[2], D = x->shape[3];
  if (D % 2 != 0) return QAT_FAIL(QAT_EINVAL, "rope: head dim D = %lld is odd", (long long)D);
  CPU_NUMEL(op, inv_freq, D / 2);
  if (pos0 < 0) return QAT_FAIL(QAT_EINVAL, "rope: pos0 = %lld is negative", (long long)pos0);
  int64_t D2 = D / 2;
  float *xp = (float *)x->data;
  const float *f = (const float *)inv_freq->data;
  double sign = inverse ? -1.0 : 1.0;
#pragma omp parallel for schedule(static) if (B * T * H * D > QAT_CPU_PAR_MIN)
  for (int64_t bt = 0; bt < B * T; bt++) {
    float pos = (float)(pos0 + bt % T);
    for (int64_t i = 0; i < D2; i++) {
      float a = pos * f[i];
      double c = cos((double)a), sn = sign * sin((double)a);
      for (int64_t h = 0; h < H; h++) {
        float *v = xp + (bt * H + h) * D;
        double x1 = v[i], x2 = v[i + D2];
        v[i] = (float)(x1 * c - x2 * sn);
        v[i + D2] = (float)(x2 * c + x1 * sn);
      }
    }
  }
  return QAT_OK;
}
