// gemm on the CUDA backend through cuBLASLt: C[M, N] = alpha * op(A) @ op(B) + beta * C with
// row-major tensors (backend.h "dense").
//
// cuBLASLt is column-major. A row-major X[r, c] is the column-major X^T, so the row-major product
// C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T: the first cuBLASLt operand
// is our B, the second our A, m = N, n = M, and each operand's transpose flag carries over as is.
//
// Types: A and B share a dtype (F32 or BF16); C is F32 or A's dtype (BF16 x BF16 -> F32 is the
// weight-gradient accumulation case). Compute is always CUBLAS_COMPUTE_32F: pure FP32 for F32
// inputs (never TF32, so F32 matches the CPU reference), FP32 accumulation for BF16 inputs.
// Heuristic results are cached per shape/type/alignment, since the heuristic query costs far more
// than a small matmul.
#include "cuda/nn_common.cuh"

#include <string.h>

// Largest power of two (<= 256) dividing the address: cuBLASLt's heuristics otherwise assume
// 256-byte aligned operands and may pick kernels that fault on views into arenas.
static uint32_t ptr_align(const void *p) {
  uintptr_t a = (uintptr_t)p;
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

struct gemm_key {
  int ta, tb;
  int64_t M, N, K;
  int dab, dc;
  uint32_t al_a, al_b, al_c;
};

struct gemm_cache_entry {
  int used;
  gemm_key key;
  cublasLtMatmulAlgo_t algo;
};

// Small direct-mapped cache; the backend runs on one host thread per stream (as the CPU backend
// does), so no lock. A miss only costs a heuristic query.
#define GEMM_CACHE_SIZE 128
static gemm_cache_entry g_gemm_cache[GEMM_CACHE_SIZE];

static int key_eq(const gemm_key *a, const gemm_key *b) { return memcmp(a, b, sizeof *a) == 0; }

static unsigned key_hash(const gemm_key *k) {
  uint64_t h = 1469598103934665603ull;
  const unsigned char *p = (const unsigned char *)k;
  for (size_t i = 0; i < sizeof *k; i++) h = (h ^ p[i]) * 1099511628211ull;
  return (unsigned)(h % GEMM_CACHE_SIZE);
}

// Scales C by beta when K == 0 (cuBLASLt needs k >= 1); beta == 0 overwrites, as in BLAS.
template <typename T> __global__ void gemm_beta_kernel(T *c, float beta, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    qat_st(c, i, beta == 0.0f ? 0.0f : beta * qat_ld(c, i));
}

static qat_status launch_gemm_beta(const qat_backend *be, qat_tensor *C, float beta) {
  int64_t n = qat_numel(C);
  if (n == 0) return QAT_OK;
  unsigned blocks = nn_blocks(n, 256, 4, 65535);
  cudaStream_t s = qat_cuda(be)->stream;
  NN_DISPATCH(C->dtype, T, gemm_beta_kernel<T><<<blocks, 256, 0, s>>>((T *)C->data, beta, n));
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

// Descriptors are created per call (cheap host calls) and destroyed on every path.
struct lt_descs {
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatmulPreference_t pref;
};

static void lt_destroy(lt_descs *d) {
  if (d->pref) cublasLtMatmulPreferenceDestroy(d->pref);
  if (d->lc) cublasLtMatrixLayoutDestroy(d->lc);
  if (d->lb) cublasLtMatrixLayoutDestroy(d->lb);
  if (d->la) cublasLtMatrixLayoutDestroy(d->la);
  if (d->op) cublasLtMatmulDescDestroy(d->op);
}

static qat_status lt_run(const qat_backend *be, lt_descs *d, const gemm_key *key, float alpha,
                         const void *A, const void *B, float beta, void *C) {
  qat_cuda_ctx *ctx = qat_cuda(be);
  cudaDataType_t tab = key->dab == QAT_F32 ? CUDA_R_32F : CUDA_R_16BF;
  cudaDataType_t tc = key->dc == QAT_F32 ? CUDA_R_32F : CUDA_R_16BF;
  // Column-major view: first operand "a" = our B, second "b" = our A, output [N, M] (ld N).
  cublasOperation_t opa = key->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t opb = key->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  uint64_t M = (uint64_t)key->M, N = (uint64_t)key->N, K = (uint64_t)key->K;
  // Stored (pre-transpose) column-major shapes: rows = leading dimension.
  uint64_t a_rows = key->tb ? K : N, a_cols = key->tb ? N : K;
  uint64_t b_rows = key->ta ? M : K, b_cols = key->ta ? K : M;

  QAT_CUBLAS_TRY(cublasLtMatmulDescCreate(&d->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  QAT_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa,
                                                sizeof opa));
  QAT_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb,
                                                sizeof opb));
  QAT_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&d->la, tab, a_rows, a_cols, (int64_t)a_rows));
  QAT_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&d->lb, tab, b_rows, b_cols, (int64_t)b_rows));
  QAT_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&d->lc, tc, N, M, (int64_t)N));

  gemm_cache_entry *e = &g_gemm_cache[key_hash(key)];
  if (!(e->used && key_eq(&e->key, key))) {
    QAT_CUBLAS_TRY(cublasLtMatmulPreferenceCreate(&d->pref));
    uint64_t ws = ctx->workspace_bytes;
    QAT_CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(
        d->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    // Lt's A is our B and Lt's B is our A.
    uint32_t al_a = key->al_b, al_b = key->al_a, al_c = key->al_c;
    QAT_CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(
        d->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
    QAT_CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(
        d->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
    QAT_CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(
        d->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c));
    QAT_CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(
        d->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));
    cublasLtMatmulHeuristicResult_t res;
    memset(&res, 0, sizeof res);
    int nres = 0;
    QAT_CUBLAS_TRY(cublasLtMatmulAlgoGetHeuristic(ctx->lt, d->op, d->la, d->lb, d->lc, d->lc,
                                                  d->pref, 1, &res, &nres));
    if (nres < 1 || res.state != CUBLAS_STATUS_SUCCESS)
      return QAT_FAIL(QAT_EUNSUPPORTED,
                      "cuda gemm: cuBLASLt has no algorithm for M=%lld N=%lld K=%lld ta=%d tb=%d "
                      "(%s x %s -> %s)",
                      (long long)key->M, (long long)key->N, (long long)key->K, key->ta, key->tb,
                      qat_dtype_name((qat_dtype)key->dab), qat_dtype_name((qat_dtype)key->dab),
                      qat_dtype_name((qat_dtype)key->dc));
    e->used = 1;
    memcpy(&e->key, key, sizeof *key);
    e->algo = res.algo;
  }
  QAT_CUBLAS_TRY(cublasLtMatmul(ctx->lt, d->op, &alpha, B, d->la, A, d->lb, &beta, C, d->lc, C,
                                d->lc, &e->algo, ctx->workspace, ctx->workspace_bytes,
                                ctx->stream));
  return QAT_OK;
}

static qat_status cu_gemm(const qat_backend *be, int ta, int tb, int64_t M, int64_t N, int64_t K,
                          float alpha, const qat_tensor *A, const qat_tensor *B, float beta,
                          qat_tensor *C) {
  QAT_TRY(nn_check_float("gemm", A, "A"));
  QAT_TRY(nn_check_float("gemm", B, "B"));
  QAT_TRY(nn_check_float("gemm", C, "C"));
  QAT_TRY(nn_check_same_dtype("gemm", A, "A", B, "B"));
  if (C->dtype != QAT_F32 && C->dtype != A->dtype)
    return QAT_FAIL(QAT_EUNSUPPORTED, "cuda gemm: C %s is %s but A, B are %s (C must be F32 or %s)",
                    nn_name(C, "C"), qat_dtype_name(C->dtype), qat_dtype_name(A->dtype),
                    qat_dtype_name(A->dtype));
  if (M < 0 || N < 0 || K < 0)
    return QAT_FAIL(QAT_EINVAL, "cuda gemm: negative size M=%lld N=%lld K=%lld", (long long)M,
                    (long long)N, (long long)K);
  QAT_TRY(nn_check_numel("gemm", A, "A", M * K));
  QAT_TRY(nn_check_numel("gemm", B, "B", K * N));
  QAT_TRY(nn_check_numel("gemm", C, "C", M * N));
  // Each operand's last dim is its stored row length (the CPU backend's rules): A [M, K]
  // ([K, M] when ta), B [K, N] ([N, K] when tb), C [M, N]; an empty operand has no rows to check.
  if (M * K > 0) QAT_TRY(nn_check_cols("gemm", A, "A", ta ? M : K));
  if (K * N > 0) QAT_TRY(nn_check_cols("gemm", B, "B", tb ? K : N));
  if (M * N > 0) QAT_TRY(nn_check_cols("gemm", C, "C", N));
  if (M == 0 || N == 0) return QAT_OK;
  if (K > 0 && (nn_overlaps(C, A) || nn_overlaps(C, B)))
    return QAT_FAIL(QAT_EINVAL, "cuda gemm: output %s overlaps an input", nn_name(C, "C"));
  if (K == 0) return launch_gemm_beta(be, C, beta);

  gemm_key key;
  memset(&key, 0, sizeof key);  // padding bytes take part in the hash and compare
  key.ta = ta ? 1 : 0;
  key.tb = tb ? 1 : 0;
  key.M = M;
  key.N = N;
  key.K = K;
  key.dab = A->dtype;
  key.dc = C->dtype;
  key.al_a = ptr_align(A->data);
  key.al_b = ptr_align(B->data);
  key.al_c = ptr_align(C->data);
  lt_descs d;
  memset(&d, 0, sizeof d);
  qat_status st = lt_run(be, &d, &key, alpha, A->data, B->data, beta, C->data);
  lt_destroy(&d);
  return st;
}

void qat_cuda_register_gemm(qat_backend *be) { be->gemm = cu_gemm; }
