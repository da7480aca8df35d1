/* CPU token embedding: out[N, C] = table[tokens[n], :] and its backward, a scatter-add into
 * dtable[V, C]. Token ids are all checked before anything is written. The backward splits the
 * columns between threads and walks the tokens in order, so repeated ids add up in a fixed order
 * without atomics. */
#include "backend/cpu/cpu_ops.h"

#include <string.h>

#define COLBLK 16 /* one 64-byte cache line of F32 per block: no false sharing */

/* tokens I32 [N] (any shape), table [V, C], x [N, C] (any leading dims): check and size. */
static qat_status check_ids(const char *op, const qat_tensor *tokens, const qat_tensor *table,
                            const qat_tensor *x, int64_t *N_, int64_t *V_, int64_t *C_) {
  CPU_ARG(op, tokens, QAT_I32);
  CPU_F32(op, table);
  CPU_F32(op, x);
  if (table->ndim != 2) {
    char s[96];
    return QAT_FAIL(QAT_EINVAL, "%s: table %s should be [V, C]", op,
                    qat_shape_str(table, s, sizeof s));
  }
  int64_t V = table->shape[0], C = table->shape[1], N = qat_numel(tokens);
  CPU_COLS(op, x, C);
  CPU_NUMEL(op, x, N * C);
  const int32_t *ids = (const int32_t *)tokens->data;
  for (int64_t n = 0; n < N; n++)
    if (ids[n] < 0 || ids[n] >= V)
      return QAT_FAIL(QAT_EINVAL, "%s: token id %d at position %lld is outside [0, %lld)", op,
                      (int)ids[n], (long long)n, (long long)V);
  *N_ = N;
  *V_ = V;
  *C_ = C;
  return QAT_OK;
}

qat_status qat_cpu_embedding_fwd(const qat_backend *be, const qat_tensor *tokens,
                                 const qat_tensor *table, qat_tensor *out) {
  int64_t N, V, C;
  QAT_TRY(check_ids("embedding_fwd", tokens, table, out, &N, &V, &C));
  const int32_t *ids = (const int32_t *)tokens->data;
  const float *tab = (const float *)table->data;
  float *o = (float *)out->data;
#pragma omp parallel for schedule(static) if (N * C > QAT_CPU_PAR_MIN)
  for (int64_t n = 0; n < N; n++) memcpy(o + n * C, tab + (int64_t)ids[n] * C, (size_t)C * 4);
  return QAT_OK;
}

qat_status qat_cpu_embedding_bwd(const qat_backend *be, const qat_tensor *tokens,
                                 const qat_tensor *dout, qat_tensor *dtable) {
  int64_t N, V, C;
  QAT_TRY(check_ids("embedding_bwd", tokens, dtable, dout, &N, &V, &C));
  const int32_t *ids = (const int32_t *)tokens->data;
  const float *g = (const float *)dout->data;
  float *d = (float *)dtable->data;
  int64_t nblk = (C + COLBLK - 1) / COLBLK;
#pragma omp parallel for schedule(static) if (N * C > QAT_CPU_PAR_MIN)
  for (int64_t blk = 0; blk < nblk; blk++) {
    int64_t c0 = blk * COLBLK, c1 = c0 + COLBLK < C ? c0 + COLBLK : C;
    for (int64_t n = 0; n < N; n++) {
      float *row = d + (int64_t)ids[n] * C;
      const float *gr = g + n * C;
      for (int64_t c = c0; c < c1; c++) row[c] += gr[c];
    }
  }
  return QAT_OK;
}
