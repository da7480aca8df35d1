/* GPTQ (Frantar et al. 2022, arXiv 2210.17323; the reference code IST-DASLab/gptq) of one Linear
 * on the host: the PTQ baseline that uses calibration inputs, where RTN uses none.
 *
 * Given W[out, in] and H = sum over calibration rows x of x x^T ([in, in], the Linear's input
 * second moments), the columns are quantized left to right and each column's rounding error is
 * pushed onto the columns not yet quantized, weighted by the inverse Hessian, which minimizes
 * ||X W^T - X W^_T||^2 greedily column by column:
 *   dead columns (H[i,i] == 0): H[i,i] = 1 and W[:, i] = 0;
 *   H += damp * mean(diag H) * I;  U = upper Cholesky factor of H^-1 (H^-1 = U^T U; LAPACK);
 *   in blocks of `block` columns: for column i, w = W[:, i], w^ = quant(w), e = (w - w^) / U[i,i],
 *     W[:, j] -= e * U[i, j] for the block's later columns j; after the block, the same update of
 *     all later columns at once (one GEMM: W[:, i2:] -= E @ U[i1:i2, i2:]).
 * quant() is REFERENCE.md section 1's grid with s, z from q->init (min-max, or the MSE search)
 * over a group's columns, taken when the loop reaches the group's first column, from the values
 * those columns had when the current block began (later blocks' updates included, the current
 * block's not: the reference code reads W, not the block's working copy, there); per-channel /
 * per-tensor: over all of W before the loop. With act_order the columns go by decreasing H[i,i]
 * (H and W permuted, W permuted back at the end) and every grid is static: taken from W (after
 * the dead columns are zeroed) before the loop, so a group's scale still covers its natural
 * columns and the stored layout does not change.
 * The result is on the grid: fake-quant of W^ with s, z returns W^ exactly. */
#ifndef QAT_QUANT_GPTQ_H
#define QAT_QUANT_GPTQ_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_gptq_opts {
  double damp; /* fraction of mean(diag H) added to the diagonal (reference: 0.01) */
  int act_order; /* columns by decreasing H[i,i], with static groups: every group's grid taken
                  * from W before the loop (the reference's --act-order --static-groups) */
  int block;   /* columns per lazy-update block (reference: 128) */
} qat_gptq_opts;

typedef struct qat_gptq_stats {
  double loss;  /* sum over rows and columns of ((w - w^) / U[i,i])^2 / 2: the reference's
                 * "error" (the proxy of the output error the greedy step minimizes) */
  int64_t dead; /* columns with H[i,i] == 0 (zeroed) */
} qat_gptq_stats;

/* GPTQ of W[out, in] (host F32, row-major) in place: on return W holds w^, and s, z (host F32,
 * shape qat_qspec_sshape(q, out, in); z all zeros when sym; z may be NULL when sym) the grid.
 * H[in, in] (host F64, symmetric, row-major) is consumed (overwritten; with act_order only its
 * dead diagonal entries change).
 * QAT_EINVAL for non-finite W or H, a negative diagonal, bad options, or an H that is not
 * positive definite even with the damping (the message names the damp value). stats may be
 * NULL. */
qat_status qat_gptq_linear(const qat_qspec *q, const qat_gptq_opts *o, float *W, int64_t out,
                           int64_t in, double *H, float *s, float *z, qat_gptq_stats *stats);

#ifdef __cplusplus
}
#endif

#endif
