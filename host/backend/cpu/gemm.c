/* CPU GEMM: C[M, N] = alpha * op(A) @ op(B) + beta * C through OpenBLAS (row-major cblas_sgemm;
 * M = 1 with B stored [N, K], the decode step, through gemv.c instead;
 * OpenBLAS runs its own threads). A is stored [M, K] ([K, M] when ta), B [K, N] ([N, K] when tb):
 * each operand may have any ndim as long as its numel matches and its last dim is the stored
 * row length, so activations [B, T, C] pass as [B*T, C]. */
#include "backend/cpu/cpu_ops.h"

#include <cblas.h>
#include <limits.h>
#include <stdint.h>

static int overlaps(const qat_tensor *a, const qat_tensor *b) {
  uintptr_t a0 = (uintptr_t)a->data, a1 = a0 + qat_nbytes(a);
  uintptr_t b0 = (uintptr_t)b->data, b1 = b0 + qat_nbytes(b);
  return a0 < b1 && b0 < a1;
}

qat_status qat_cpu_gemm(const qat_backend *be, int ta, int tb, int64_t M, int64_t N, int64_t K,
                        float alpha, const qat_tensor *A, const qat_tensor *B, float beta,
                        qat_tensor *C) {
  const char *op = "gemm";
  CPU_F32(op, A);
  CPU_F32(op, B);
  CPU_F32(op, C);
  if (M < 0 || N < 0 || K < 0)
    return QAT_FAIL(QAT_EINVAL, "gemm: negative size M=%lld N=%lld K=%lld", (long long)M,
                    (long long)N, (long long)K);
  if (M > INT_MAX || N > INT_MAX || K > INT_MAX)
    return QAT_FAIL(QAT_EUNSUPPORTED, "gemm: M=%lld N=%lld K=%lld exceed the BLAS int range",
                    (long long)M, (long long)N, (long long)K);
  CPU_NUMEL(op, A, M * K);
  CPU_NUMEL(op, B, K * N);
  CPU_NUMEL(op, C, M * N);
  int64_t lda = ta ? M : K, ldb = tb ? K : N;
  if (M * K > 0) CPU_COLS(op, A, lda);
  if (K * N > 0) CPU_COLS(op, B, ldb);
  if (M * N > 0) CPU_COLS(op, C, N);
  if (M == 0 || N == 0) return QAT_OK;
  if ((K > 0 && (overlaps(C, A) || overlaps(C, B))))
    return QAT_FAIL(QAT_EINVAL, "gemm: output C overlaps an input");
  float *c = (float *)C->data;
  if (K == 0) {
    /* op(A) @ op(B) is all zeros; BLAS semantics: beta == 0 overwrites without reading C. */
    int64_t n = M * N;
    for (int64_t i = 0; i < n; i++) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
    return QAT_OK;
  }
  if (M == 1) {
    /* One row (generation's decode step): a GEMV. OpenBLAS's sgemm packs all of B for M = 1,
     * which reads and writes the weights once more; sgemv streams them once. op(A) is a
     * contiguous K-vector either way (lda is K, or M = 1). beta == 0 must not read C (BLAS
     * semantics; NaN garbage in C stays out), so C is zeroed first. */
    if (tb) { /* B stored [N, K]: c = alpha * B a + beta * c, row dots (gemv.c) */
      qat_cpu_gemv_rows(N, K, alpha, (const float *)B->data, ldb, (const float *)A->data, beta, c);
      return QAT_OK;
    }
    if (beta == 0.0f)
      for (int64_t i = 0; i < N; i++) c[i] = 0.0f;
    { /* B stored [K, N]: c = alpha * B^T a + beta * c */
        cblas_sgemv(CblasRowMajor, CblasTrans, (int)K, (int)N, alpha, (const float *)B->data,
                  (int)ldb, (const float *)A->data, 1, beta, c, 1);
    }
    return QAT_OK;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              (int)M, (int)N, (int)K, alpha, (const float *)A->data, (int)lda,
              (const float *)B->data, (int)ldb, beta, c, (int)N);
  return QAT_OK;
}
