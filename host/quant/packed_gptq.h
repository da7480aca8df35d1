/* qat's packed weights (quant/packed.h) in the GPTQ checkpoint layout, gptq_v2
 * (REFERENCE.md section 10), for GPTQModel / vLLM: K = in, N = out, G = K / g, b = bits,
 *   qweight I32 [K * b / 32, N]  codes along K, LSB first (b = 3: the 96-bit stream): word r
 *                                of column n is word r of qat's row-n stream, so a transpose;
 *   qzeros  I32 [G, N * b / 32]  z as is (gptq_v2; sym: 2^(b-1)), packed along N the same way;
 *   scales  F16 [G, N];  g_idx I32 [K] = k / g.
 * w = s * (q - z) in both layouts, so the export changes no weight when qat's scales are F16;
 * F32 scales are rounded to F16 here (the largest weight change is reported). */
#ifndef QAT_QUANT_PACKED_GPTQ_H
#define QAT_QUANT_PACKED_GPTQ_H

#include "quant/packed.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_gptq_tensors {
  int64_t K, N, G;
  uint32_t *qweight; /* [K * b / 32, N] */
  uint32_t *qzeros;  /* [G, N * b / 32] */
  uint16_t *scales;  /* [G, N] F16 */
  int32_t *g_idx;    /* [K] */
  double max_err;    /* max |w_gptq - w_qat| over every weight (both in float32) from the F16
                      * rounding of the scales: 0 when they are F16 numbers */
} qat_gptq_tensors;

/* QAT_EUNSUPPORTED (naming the tensor) unless K * b and N * b are multiples of 32. */
qat_status qat_packed_to_gptq(const qat_packed *p, const char *name, qat_gptq_tensors *out);
void qat_gptq_tensors_free(qat_gptq_tensors *t);

#ifdef __cplusplus
}
#endif

#endif
