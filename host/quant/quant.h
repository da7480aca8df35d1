/* The quantizer layer above the fake-quant ops: spec strings ("rtn:4g128", "rtn:2g64:sym",
 * "rtn:2g32:mse", "rtn:3gc", "rtn:8gt") to qat_qspec and back, bits per weight of a format, and
 * RTN of a host float matrix with its error statistics (what `qat quantize` reports per tensor).
 * The ops themselves (fq_init / fq_forward / fq_backward) live behind the backend table. */
#ifndef QAT_QUANT_QUANT_H
#define QAT_QUANT_QUANT_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Spec grammar: [rtn:][w]<bits>g<group>[:opt]...
 *   bits  2..8;  group: a positive integer, "c" (per-channel, -1) or "t" (per-tensor, 0)
 *   opt   sym | asym (default asym),  minmax | mse (init of s, z: qat_qinit, default minmax),
 *         eqat | lsq | ste (gradient convention, default eqat),
 *         f32 | f16 (step sizes kept on the F16 grid, qat_qspec.scale_f16; default f32)
 * Case-insensitive. Errors are QAT_EUSAGE naming the spec and what is wrong. */
qat_status qat_quant_parse(const char *spec, qat_qspec *out);
/* Canonical string ("rtn:4g128", "rtn:2g64:sym:mse", "rtn:3gc:lsq", "rtn:4g32:sym:f16"; options
 * in the order sym, init, grad, scale dtype, defaults left out) into buf; returns buf. */
const char *qat_quant_format(const qat_qspec *q, char *buf, size_t n);
/* "minmax" or "mse": the init's name in specs, flags and records. */
const char *qat_qinit_name(qat_qinit init);
/* The init named name (exactly as qat_qinit_name spells it): 1 and *out set, else 0. */
int qat_qinit_from_name(const char *name, qat_qinit *out);

/* Storage bits per weight for W[rows, cols] (REFERENCE.md section 3): asym N + (N + 16) / g
 * (fp16 scale + N-bit zero point per group), sym N + 16 / g (no zero point); g = cols for
 * per-channel, rows * cols for per-tensor. A trailing partial group counts as a whole group. */
double qat_quant_bpw(const qat_qspec *q, int64_t rows, int64_t cols);

/* Round-trip error of w_hat against w. rel_rmse = rmse / rms(w) (0 when w is all zero). */
typedef struct qat_quant_stats {
  double max_abs_err, rmse, rel_rmse;
  int64_t n;
} qat_quant_stats;

/* RTN (q's init, min-max by default, + fake-quant forward on the CPU backend) of a host matrix
 * w[rows, cols]: out_w_hat[rows, cols] (may equal w: quantized in place); stats may be NULL. A
 * non-finite weight is QAT_EINVAL (callers add the tensor name with qat_context). */
qat_status qat_quant_rtn_f32(const qat_qspec *q, const float *w, int64_t rows, int64_t cols,
                             float *out_w_hat, qat_quant_stats *stats);
/* The same, also returning the scales and zero points: s_out, z_out (each NULL to skip) of
 * shape qat_qspec_sshape(q, rows, cols); z_out is all zeros when sym. */
qat_status qat_quant_rtn_f32_sz(const qat_qspec *q, const float *w, int64_t rows, int64_t cols,
                                float *out_w_hat, float *s_out, float *z_out,
                                qat_quant_stats *stats);

/* Error statistics of a against the reference w (n elements), in double. */
void qat_quant_error(const float *w, const float *w_hat, int64_t n, qat_quant_stats *stats);

#ifdef __cplusplus
}
#endif

#endif
