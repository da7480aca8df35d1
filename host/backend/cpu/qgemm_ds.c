/* CPU qgemm_ds: E2E-QP's step-size gradient through packed frozen codes (layout:
 * quant/packed_layout.h), the reference for a CUDA twin.
 *   dW[N, K] = dy[M, N]^T @ x[M, K]
 *   ds[n, j] = sum_{k in group j} dW[n, k] * (code[n, k] - zp[n, j])
 * dW is never whole: row panels of it (PANEL_BYTES of F32) come from cblas_sgemm, each reduced
 * with the decoded codes before the next panel, so a 7B Linear needs 4 MB instead of 180 MB.
 *
 * Exactness: a panel is the same cblas_sgemm (Trans, NoTrans) as the unpacked path's whole
 * gemm(1, 0, dy, x), restricted to rows n0..n0+r. When the Linear fits one panel (N * K * 4 <=
 * 4 MB) that is the very same call, and with dq_backward's reduction (cpu/codes.c: per group,
 * in column order, in double, of (double)dW * (float)(code - zp), code - zp being the same
 * small integer as dq_backward's (code - off) - z~) ds == dq_backward(unpacked codes, z,
 * gemm(dy^T x)) bit for bit. With several panels OpenBLAS may order a dW element's sum over M
 * differently for the smaller row count (measured: a few elements of a 600 x 4096 Linear differ
 * in the last bit), so ds agrees within the F32 summation bound of dW, 2 M eps sum_k
 * (sum_m |dy x|) |code - zp| (tests/test_qgemm_ds.c checks both). The
 * gradient through the s clamp is straight-through, as dq_backward's. */
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/qgemm_kern.h"

#include <cblas.h>
#include <limits.h>
#include <stdlib.h>

#define PANEL_BYTES (4u << 20)

static qat_status cpu_qgemm_ds(const qat_backend *be, int64_t M, const qat_packed *w,
                               const qat_tensor *dy, const qat_tensor *x, qat_tensor *ds) {
  const char *op = "qgemm_ds";
  (void)be;
  if (!w || !w->codes || !w->scales || (!w->sym && !w->zeros))
    return QAT_FAIL(QAT_EINVAL, "qgemm_ds: packed weight missing or empty");
  if (w->bits < 2 || w->bits > 8 || w->group <= 0 || w->K % w->group != 0 ||
      w->G != w->K / w->group || w->row_bytes != qat_packed_stream_bytes(w->K, w->bits))
    return QAT_FAIL(QAT_EINVAL, "qgemm_ds: inconsistent packed weight (bits %d, group %d, K %lld)",
                    w->bits, w->group, (long long)w->K);
  CPU_F32(op, dy);
  CPU_F32(op, x);
  CPU_F32(op, ds);
  if (M < 0 || M > INT_MAX || w->N > INT_MAX || w->K > INT_MAX)
    return QAT_FAIL(QAT_EINVAL, "qgemm_ds: M=%lld N=%lld K=%lld outside the BLAS int range",
                    (long long)M, (long long)w->N, (long long)w->K);
  int64_t N = w->N, K = w->K, G = w->G, g = w->group;
  CPU_NUMEL(op, dy, M * N);
  CPU_NUMEL(op, x, M * K);
  CPU_NUMEL(op, ds, N * G);
  float *dS = ds->data;
  if (M == 0) {
    for (int64_t i = 0; i < N * G; i++) dS[i] = 0.0f;
    return QAT_OK;
  }
  CPU_COLS(op, dy, N);
  CPU_COLS(op, x, K);
  int64_t nb = (int64_t)(PANEL_BYTES / (4 * (size_t)K));
  if (nb < 1) nb = 1;
  if (nb > N) nb = N;
  float *pan = malloc(sizeof(float) * (size_t)(nb * K));
  if (!pan) return QAT_FAIL(QAT_ENOMEM, "qgemm_ds: panel [%lld, %lld]", (long long)nb, (long long)K);
  const qgemm_kern *kn = qgemm_kern_pick();
  int fail = 0;
  for (int64_t n0 = 0; n0 < N && !fail; n0 += nb) {
    int64_t r = n0 + nb <= N ? nb : N - n0;
    /* pan[r, K] = dy[:, n0 : n0+r]^T @ x */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)K, (int)M, 1.0f,
                (const float *)dy->data + n0, (int)N, (const float *)x->data, (int)K, 0.0f, pan,
                (int)K);
#pragma omp parallel reduction(| : fail)
    {
      float *cb = malloc(sizeof(float) * (size_t)(g + 8));
      if (!cb) fail = 1;
#pragma omp for schedule(static)
      for (int64_t i = 0; i < r; i++) {
        if (!cb) continue;
        int64_t n = n0 + i;
        const uint8_t *row = w->codes + n * w->row_bytes;
        for (int64_t j = 0; j < G; j++) {
          kn->decode(row, w->bits, j * g, g, cb); /* the codes as exact floats */
          float zp = qat_packed_zp(w, n, j);
          const float *gr = pan + i * K + j * g;
          double acc = 0.0;
          for (int64_t k = 0; k < g; k++) acc += (double)gr[k] * (cb[k] - zp);
          dS[n * G + j] = (float)acc;
        }
      }
      free(cb);
    }
  }
  free(pan);
  return fail ? QAT_FAIL(QAT_ENOMEM, "qgemm_ds: per-thread code buffer") : QAT_OK;
}

void qat_cpu_register_qgemm_ds(qat_backend *be) { be->qgemm_ds = cpu_qgemm_ds; }
