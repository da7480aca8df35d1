// Token embedding on the CUDA backend (backend.h "LLaMA blocks"), forward and backward.
// N tokens, V vocab, C channels. Tokens are I32 and checked against [0, V) by a pre-pass
// (nn_check_ids, one stream sync) before anything is written; the kernels still guard every
// index. The backward scatters with F32 atomics (the order of the adds is not deterministic); a
// BF16 dtable is unsupported because bf16 atomics would lose most of the small updates.
#include "cuda/nn_common.cuh"

// out[N, C] = table[tokens[n], :]; one block per row (gridDim.x = N).
template <typename TT, typename TO>
__global__ void embedding_fwd_kernel(const int32_t *tokens, const TT *table, TO *out, int64_t V,
                                     int64_t C) {
  const int64_t n = blockIdx.x;
  const int32_t tok = tokens[n];
  const int ok = tok >= 0 && (int64_t)tok < V;
  const TT *src = table + (ok ? (int64_t)tok * C : 0);
  TO *dst = out + n * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) qat_st(dst, c, ok ? qat_ld(src, c) : 0.0f);
}

// dtable[V, C] += scatter of dout[N, C]; one block per row.
template <typename TD>
__global__ void embedding_bwd_kernel(const int32_t *tokens, const TD *dout, float *dtable,
                                     int64_t V, int64_t C) {
  const int64_t n = blockIdx.x;
  const int32_t tok = tokens[n];
  if (tok < 0 || (int64_t)tok >= V) return;
  const TD *src = dout + n * C;
  float *dst = dtable + (int64_t)tok * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dst + c, qat_ld(src, c));
}

static int emb_threads(int64_t C) { return C >= 1024 ? 256 : C >= 256 ? 128 : 64; }

static qat_status emb_check(const char *op, const qat_tensor *tokens, const qat_tensor *table,
                            const char *trole, const qat_tensor *rows, const char *rrole,
                            int64_t *N, int64_t *V, int64_t *C) {
  QAT_TRY(nn_check_dtype(op, tokens, "tokens", QAT_I32));
  QAT_TRY(nn_check_float(op, table, trole));
  QAT_TRY(nn_check_float(op, rows, rrole));
  if (table->ndim != 2)
    return QAT_FAIL(QAT_EINVAL, "cuda %s: %s must be [V, C] (ndim %d)", op, nn_name(table, trole),
                    table->ndim);
  *V = table->shape[0];
  *C = table->shape[1];
  *N = qat_numel(tokens);
  QAT_TRY(nn_check_numel(op, rows, rrole, *N * *C));
  if (*N > 0x7fffffffll)
    return QAT_FAIL(QAT_EUNSUPPORTED, "cuda %s: %lld tokens in one call", op, (long long)*N);
  return QAT_OK;
}

static qat_status cu_embedding_fwd(const qat_backend *be, const qat_tensor *tokens,
                                   const qat_tensor *table, qat_tensor *out) {
  int64_t N, V, C;
  QAT_TRY(emb_check("embedding_fwd", tokens, table, "table", out, "out", &N, &V, &C));
  QAT_TRY(nn_check_ids(be, "embedding_fwd", tokens, "tokens", 0, V));
  if (N == 0 || C == 0) return QAT_OK;
  cudaStream_t s = qat_cuda(be)->stream;
  NN_DISPATCH(table->dtype, TT,
              NN_DISPATCH(out->dtype, TO,
                          embedding_fwd_kernel<TT, TO><<<(unsigned)N, emb_threads(C), 0, s>>>(
                              (const int32_t *)tokens->data, (const TT *)table->data,
                              (TO *)out->data, V, C)));
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

static qat_status cu_embedding_bwd(const qat_backend *be, const qat_tensor *tokens,
                                   const qat_tensor *dout, qat_tensor *dtable) {
  int64_t N, V, C;
  QAT_TRY(emb_check("embedding_bwd", tokens, dtable, "dtable", dout, "dout", &N, &V, &C));
  if (dtable->dtype != QAT_F32)
    return QAT_FAIL(QAT_EUNSUPPORTED,
                    "cuda embedding_bwd: dtable %s is %s; only F32 accumulates (F32 atomics)",
                    nn_name(dtable, "dtable"), qat_dtype_name(dtable->dtype));
  QAT_TRY(nn_check_ids(be, "embedding_bwd", tokens, "tokens", 0, V));
  if (N == 0 || C == 0) return QAT_OK;
  cudaStream_t s = qat_cuda(be)->stream;
  NN_DISPATCH(dout->dtype, TD,
              embedding_bwd_kernel<TD><<<(unsigned)N, emb_threads(C), 0, s>>>(
                  (const int32_t *)tokens->data, (const TD *)dout->data, (float *)dtable->data, V,
                  C));
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

void qat_cuda_register_embedding(qat_backend *be) {
  be->embedding_fwd = cu_embedding_fwd;
  be->embedding_bwd = cu_embedding_bwd;
}
