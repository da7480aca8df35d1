// Causal grouped-query attention on the CUDA backend (backend.h "LLaMA blocks"): a fused
// flash-attention style forward and a flash-attention-2 style backward, written for F32 CUDA
// cores so that F32 matches the CPU reference to ~1e-6 and BF16 shares the same code (BF16 is
// converted to F32 on its way into shared memory; all math and accumulation are F32).
//
// Letters: B batch, T time, Hq query heads, Hkv kv heads (query head h reads kv head
// h / (Hq / Hkv)), D head dim (a multiple of 16, <= 128: 32, 48, 64, 80, 96, 128 are
// instantiated; others are QAT_EUNSUPPORTED). q, out, dout, dq [B, T, Hq, D]; k, v, dk, dv
// [B, T, Hkv, D]; lse [B, Hq, T] F32 (natural log of the sum of exp of the scaled scores).
//
// Tiles: 64 query rows x 64 keys per tile (equal sizes: with causal masking every tile on or
// below the diagonal then has at least one visible key per row, so the running max is always
// finite). 256 threads as a 16 x 16 grid; thread (ty, tx) owns rows ty + 16 i (i < 4), tile
// columns tx + 16 j (j < 4) and head dims tx + 16 j (j < D / 16). Shared tiles are F32 with an
// odd row stride (D + 1 or 65) so both row-wise and column-wise reads are bank-conflict free.
// Softmax runs in base 2 (scores pre-multiplied by scale * log2 e).
//
// Forward (attn_fwd_kernel): one block per (b, h, query tile); K/V tiles 0..diagonal stream
// through shared memory; online softmax (running max m, running sum l, rescaled accumulator);
// out = acc / l, lse = (m + log2 l) * ln 2.
//
// Backward, recomputing P = exp(scale * q.k - lse) from the saved lse:
//   1. attn_bwd_dot_kernel: Di = rowsum(dout * out) per (b, h, t) into F32 scratch [B, Hq, T];
//   2. attn_bwd_dkdv_kernel: one block per (b, kv head, key tile) loops over the query heads of
//      its group and the query tiles at or below the diagonal: dV += P^T dO, dK += dS^T Q with
//      dS = P * (dO V^T - Di); GQA sums stay in registers, so no atomics;
//   3. attn_bwd_dq_kernel: one block per (b, h, query tile) recomputes S and dP for its row
//      block and accumulates dQ = dS K.
// dQ in a separate pass (instead of F32 atomics into a workspace) costs one more recomputation of
// Q K^T and dO V^T but is deterministic and needs no [B, T, Hq, D] F32 scratch.
#include "cuda/nn_common.cuh"

#define AT_B 64
#define AT_THREADS 256
#define AT_S (AT_B + 1) /* stride of [.][AT_B] tiles */
#define AT_LOG2E 1.4426950408889634f
#define AT_LN2 0.6931471805599453f

// Rows [t0, t0 + AT_B) of head h of x[B, T, H, D] into dst[r * (D + 1) + d] (zeros past T).
template <typename T, int D>
__device__ __forceinline__ void at_load_rows(float *dst, const T *x, int64_t b, int64_t t0,
                                             int64_t h, int64_t Tn, int64_t H) {
  for (int idx = threadIdx.x; idx < AT_B * D; idx += AT_THREADS) {
    const int r = idx / D, d = idx - r * D;
    const int64_t t = t0 + r;
    dst[r * (D + 1) + d] = t < Tn ? qat_ld(x, ((b * Tn + t) * H + h) * D + d) : 0.0f;
  }
}

// The same rows transposed: dst[d * AT_S + r].
template <typename T, int D>
__device__ __forceinline__ void at_load_cols(float *dst, const T *x, int64_t b, int64_t t0,
                                             int64_t h, int64_t Tn, int64_t H) {
  for (int idx = threadIdx.x; idx < AT_B * D; idx += AT_THREADS) {
    const int r = idx / D, d = idx - r * D;
    const int64_t t = t0 + r;
    dst[d * AT_S + r] = t < Tn ? qat_ld(x, ((b * Tn + t) * H + h) * D + d) : 0.0f;
  }
}

// Sum / max over the 16 threads sharing a row (one half warp).
__device__ __forceinline__ float at_row_sum(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float at_row_max(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

template <int D> constexpr size_t at_fwd_smem() {
  return sizeof(float) * (2 * AT_B * (D + 1) + D * AT_S + AT_B * AT_S);
}
template <int D> constexpr size_t at_dkdv_smem() {
  return sizeof(float) * (2 * AT_B * (D + 1) + 2 * D * AT_S + 2 * AT_B * AT_S + 2 * AT_B);
}
template <int D> constexpr size_t at_dq_smem() {
  return sizeof(float) * (2 * AT_B * (D + 1) + 2 * D * AT_S + AT_B * AT_S);
}

// ---- forward -------------------------------------------------------------------------------------
template <typename T, int D>
__global__ void __launch_bounds__(AT_THREADS)
    attn_fwd_kernel(const T *q, const T *k, const T *v, T *out, float *lse, int64_t Tn,
                    int64_t Hq, int64_t Hkv, int nqt, float sl2) {
  constexpr int DJ = D / 16;
  extern __shared__ float sm[];
  float *Qs = sm;                   // [AT_B][D + 1]
  float *Vs = Qs + AT_B * (D + 1);  // [AT_B][D + 1]
  float *Kt = Vs + AT_B * (D + 1);  // [D][AT_S]
  float *Ps = Kt + D * AT_S;        // [AT_B][AT_S]
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int64_t blk = blockIdx.x;
  const int qt = nqt - 1 - (int)(blk % nqt);  // longest rows first
  const int64_t bh = blk / nqt, h = bh % Hq, b = bh / Hq, hk = h / (Hq / Hkv);
  const int64_t q0 = (int64_t)qt * AT_B;

  at_load_rows<T, D>(Qs, q, b, q0, h, Tn, Hq);
  float o[4][DJ], m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int j = 0; j < DJ; j++) o[i][j] = 0.0f;
  }

  for (int kt = 0; kt <= qt; kt++) {
    const int64_t k0 = (int64_t)kt * AT_B;
    __syncthreads();  // the previous tile's readers are done
    at_load_cols<T, D>(Kt, k, b, k0, hk, Tn, Hkv);
    at_load_rows<T, D>(Vs, v, b, k0, hk, Tn, Hkv);
    __syncthreads();

    float s[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) s[i][j] = 0.0f;
#pragma unroll 4
    for (int d = 0; d < D; d++) {
      float a[4], kk[4];
#pragma unroll
      for (int i = 0; i < 4; i++) a[i] = Qs[(ty + 16 * i) * (D + 1) + d];
#pragma unroll
      for (int j = 0; j < 4; j++) kk[j] = Kt[d * AT_S + tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) s[i][j] = fmaf(a[i], kk[j], s[i][j]);
    }

#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int64_t row = q0 + ty + 16 * i;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const int64_t col = k0 + tx + 16 * j;
        const float x = (col <= row && col < Tn) ? s[i][j] * sl2 : -INFINITY;
        s[i][j] = x;
        mx = fmaxf(mx, x);
      }
      mx = at_row_max(mx);
      const float mn = fmaxf(m[i], mx);  // finite: key k0 is visible to every row of the tile
      const float alpha = exp2f(m[i] - mn);
      float rs = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const float p = exp2f(s[i][j] - mn);
        s[i][j] = p;
        rs += p;
      }
      rs = at_row_sum(rs);
      l[i] = l[i] * alpha + rs;
      m[i] = mn;
#pragma unroll
      for (int j = 0; j < DJ; j++) o[i][j] *= alpha;
#pragma unroll
      for (int j = 0; j < 4; j++) Ps[(ty + 16 * i) * AT_S + tx + 16 * j] = s[i][j];
    }
    __syncthreads();

#pragma unroll 4
    for (int c = 0; c < AT_B; c++) {
      float vv[DJ];
#pragma unroll
      for (int j = 0; j < DJ; j++) vv[j] = Vs[c * (D + 1) + tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const float p = Ps[(ty + 16 * i) * AT_S + c];
#pragma unroll
        for (int j = 0; j < DJ; j++) o[i][j] = fmaf(p, vv[j], o[i][j]);
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t row = q0 + ty + 16 * i;
    if (row >= Tn) continue;
    const float inv = 1.0f / l[i];
    T *dst = out + ((b * Tn + row) * Hq + h) * D;
#pragma unroll
    for (int j = 0; j < DJ; j++) qat_st(dst, tx + 16 * j, o[i][j] * inv);
    if (tx == 0) lse[(b * Hq + h) * Tn + row] = (m[i] + log2f(l[i])) * AT_LN2;
  }
}

// ---- backward 1: Di = rowsum(dout * out), one warp per (b, t, h) row ----------------------------
template <typename T>
__global__ void attn_bwd_dot_kernel(const T *dout, const T *out, float *Di, int64_t rows,
                                    int64_t Tn, int64_t Hq, int D) {
  const int64_t row = blockIdx.x * (int64_t)(blockDim.x / 32) + (threadIdx.x >> 5);
  if (row >= rows) return;  // whole warp
  const int lane = threadIdx.x & 31;
  const T *g = dout + row * D, *o = out + row * D;
  float acc = 0.0f;
  for (int d = lane; d < D; d += 32) acc += qat_ld(g, d) * qat_ld(o, d);
  acc = nn_warp_sum(acc);
  if (lane == 0) {
    const int64_t h = row % Hq, bt = row / Hq, t = bt % Tn, b = bt / Tn;
    Di[(b * Hq + h) * Tn + t] = acc;
  }
}

// ---- backward 2: dK, dV per key tile ---------------------------------------------------------
template <typename T, int D>
__global__ void __launch_bounds__(AT_THREADS)
    attn_bwd_dkdv_kernel(const T *q, const T *k, const T *v, const T *dout, const float *lse,
                         const float *Di, T *dk, T *dv, int64_t Tn, int64_t Hq, int64_t Hkv,
                         int nkt, float sl2, float scale) {
  constexpr int DJ = D / 16;
  extern __shared__ float sm[];
  float *Ks = sm;                    // [AT_B][D + 1]  keys
  float *Vs = Ks + AT_B * (D + 1);   // [AT_B][D + 1]
  float *Qt = Vs + AT_B * (D + 1);   // [D][AT_S]      queries, transposed
  float *dOt = Qt + D * AT_S;        // [D][AT_S]
  float *Pt = dOt + D * AT_S;        // [AT_B keys][AT_S queries]  P^T
  float *dSt = Pt + AT_B * AT_S;     // [AT_B][AT_S]                dS^T
  float *Ls = dSt + AT_B * AT_S;     // [AT_B] lse * log2 e
  float *Ds = Ls + AT_B;             // [AT_B] Di
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int64_t blk = blockIdx.x;
  const int kt = (int)(blk % nkt);  // small kt has the most query tiles: launched first
  const int64_t bh = blk / nkt, hk = bh % Hkv, b = bh / Hkv;
  const int64_t k0 = (int64_t)kt * AT_B;
  const int64_t G = Hq / Hkv;
  const int nqt = nkt;  // same tile size, same T

  at_load_rows<T, D>(Ks, k, b, k0, hk, Tn, Hkv);
  at_load_rows<T, D>(Vs, v, b, k0, hk, Tn, Hkv);
  float dka[4][DJ], dva[4][DJ];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < DJ; j++) dka[i][j] = dva[i][j] = 0.0f;

  for (int64_t g = 0; g < G; g++) {
    const int64_t h = hk * G + g;
    for (int qt = kt; qt < nqt; qt++) {
      const int64_t q0 = (int64_t)qt * AT_B;
      __syncthreads();  // previous readers of Qt, dOt, Pt, dSt, Ls, Ds are done
      at_load_cols<T, D>(Qt, q, b, q0, h, Tn, Hq);
      at_load_cols<T, D>(dOt, dout, b, q0, h, Tn, Hq);
      for (int r = threadIdx.x; r < AT_B; r += AT_THREADS) {
        const int64_t t = q0 + r;
        Ls[r] = t < Tn ? lse[(b * Hq + h) * Tn + t] * AT_LOG2E : 0.0f;
        Ds[r] = t < Tn ? Di[(b * Hq + h) * Tn + t] : 0.0f;
      }
      __syncthreads();

      // S^T[c][r] = k_c . q_r and dP^T[c][r] = v_c . do_r for keys c = ty + 16 i, rows r = tx + 16 j
      float st[4][4], dpt[4][4];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) st[i][j] = dpt[i][j] = 0.0f;
#pragma unroll 2
      for (int d = 0; d < D; d++) {
        float kk[4], vv[4], qq[4], gg[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
          kk[i] = Ks[(ty + 16 * i) * (D + 1) + d];
          vv[i] = Vs[(ty + 16 * i) * (D + 1) + d];
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
          qq[j] = Qt[d * AT_S + tx + 16 * j];
          gg[j] = dOt[d * AT_S + tx + 16 * j];
        }
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
          for (int j = 0; j < 4; j++) {
            st[i][j] = fmaf(kk[i], qq[j], st[i][j]);
            dpt[i][j] = fmaf(vv[i], gg[j], dpt[i][j]);
          }
      }
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
          const int c = ty + 16 * i, r = tx + 16 * j;
          const int64_t col = k0 + c, row = q0 + r;
          const float p = (col <= row && row < Tn) ? exp2f(st[i][j] * sl2 - Ls[r]) : 0.0f;
          Pt[c * AT_S + r] = p;
          dSt[c * AT_S + r] = p * (dpt[i][j] - Ds[r]);
        }
      __syncthreads();

      // dV[c][d] += sum_r P^T[c][r] dO[r][d];  dK[c][d] += sum_r dS^T[c][r] Q[r][d]
#pragma unroll 2
      for (int r = 0; r < AT_B; r++) {
        float gq[DJ], qv[DJ];
#pragma unroll
        for (int j = 0; j < DJ; j++) {
          gq[j] = dOt[(tx + 16 * j) * AT_S + r];
          qv[j] = Qt[(tx + 16 * j) * AT_S + r];
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
          const float p = Pt[(ty + 16 * i) * AT_S + r];
          const float ds = dSt[(ty + 16 * i) * AT_S + r];
#pragma unroll
          for (int j = 0; j < DJ; j++) {
            dva[i][j] = fmaf(p, gq[j], dva[i][j]);
            dka[i][j] = fmaf(ds, qv[j], dka[i][j]);
          }
        }
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t key = k0 + ty + 16 * i;
    if (key >= Tn) continue;
    const int64_t base = ((b * Tn + key) * Hkv + hk) * D;
#pragma unroll
    for (int j = 0; j < DJ; j++) {
      qat_st(dk, base + tx + 16 * j, dka[i][j] * scale);
      qat_st(dv, base + tx + 16 * j, dva[i][j]);
    }
  }
}

// ---- backward 3: dQ per query tile -------------------------------------------------------------
template <typename T, int D>
__global__ void __launch_bounds__(AT_THREADS)
    attn_bwd_dq_kernel(const T *q, const T *k, const T *v, const T *dout, const float *lse,
                       const float *Di, T *dq, int64_t Tn, int64_t Hq, int64_t Hkv, int nqt,
                       float sl2, float scale) {
  constexpr int DJ = D / 16;
  extern __shared__ float sm[];
  float *Qs = sm;                    // [AT_B][D + 1]
  float *dOs = Qs + AT_B * (D + 1);  // [AT_B][D + 1]
  float *Kt = dOs + AT_B * (D + 1);  // [D][AT_S]
  float *Vt = Kt + D * AT_S;         // [D][AT_S]
  float *dSs = Vt + D * AT_S;        // [AT_B rows][AT_S keys]
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int64_t blk = blockIdx.x;
  const int qt = nqt - 1 - (int)(blk % nqt);
  const int64_t bh = blk / nqt, h = bh % Hq, b = bh / Hq, hk = h / (Hq / Hkv);
  const int64_t q0 = (int64_t)qt * AT_B;

  at_load_rows<T, D>(Qs, q, b, q0, h, Tn, Hq);
  at_load_rows<T, D>(dOs, dout, b, q0, h, Tn, Hq);
  float L[4], Dd[4], dqa[4][DJ];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t t = q0 + ty + 16 * i;
    L[i] = t < Tn ? lse[(b * Hq + h) * Tn + t] * AT_LOG2E : 0.0f;
    Dd[i] = t < Tn ? Di[(b * Hq + h) * Tn + t] : 0.0f;
#pragma unroll
    for (int j = 0; j < DJ; j++) dqa[i][j] = 0.0f;
  }

  for (int kt = 0; kt <= qt; kt++) {
    const int64_t k0 = (int64_t)kt * AT_B;
    __syncthreads();
    at_load_cols<T, D>(Kt, k, b, k0, hk, Tn, Hkv);
    at_load_cols<T, D>(Vt, v, b, k0, hk, Tn, Hkv);
    __syncthreads();

    float s[4][4], dp[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) s[i][j] = dp[i][j] = 0.0f;
#pragma unroll 2
    for (int d = 0; d < D; d++) {
      float a[4], g[4], kk[4], vv[4];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        a[i] = Qs[(ty + 16 * i) * (D + 1) + d];
        g[i] = dOs[(ty + 16 * i) * (D + 1) + d];
      }
#pragma unroll
      for (int j = 0; j < 4; j++) {
        kk[j] = Kt[d * AT_S + tx + 16 * j];
        vv[j] = Vt[d * AT_S + tx + 16 * j];
      }
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
          s[i][j] = fmaf(a[i], kk[j], s[i][j]);
          dp[i][j] = fmaf(g[i], vv[j], dp[i][j]);
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const int r = ty + 16 * i, c = tx + 16 * j;
        const int64_t row = q0 + r, col = k0 + c;
        const float p = (col <= row && row < Tn) ? exp2f(s[i][j] * sl2 - L[i]) : 0.0f;
        dSs[r * AT_S + c] = p * (dp[i][j] - Dd[i]);
      }
    __syncthreads();

    // dQ[r][d] += sum_c dS[r][c] K[c][d]
#pragma unroll 2
    for (int c = 0; c < AT_B; c++) {
      float kk[DJ];
#pragma unroll
      for (int j = 0; j < DJ; j++) kk[j] = Kt[(tx + 16 * j) * AT_S + c];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const float ds = dSs[(ty + 16 * i) * AT_S + c];
#pragma unroll
        for (int j = 0; j < DJ; j++) dqa[i][j] = fmaf(ds, kk[j], dqa[i][j]);
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t row = q0 + ty + 16 * i;
    if (row >= Tn) continue;
    T *dst = dq + ((b * Tn + row) * Hq + h) * D;
#pragma unroll
    for (int j = 0; j < DJ; j++) qat_st(dst, tx + 16 * j, dqa[i][j] * scale);
  }
}

// ---- launchers -----------------------------------------------------------------------------------
struct at_dims {
  int64_t B, T, Hq, Hkv, D;
  int ntiles;  // ceil(T / AT_B)
};

// Grid of ntiles * H * B blocks in x (int64 checked against the 2^31 - 1 limit).
static qat_status at_grid(const at_dims *dm, int64_t H, unsigned *grid) {
  const int64_t n = (int64_t)dm->ntiles * H * dm->B;
  if (n > 0x7fffffffll)
    return QAT_FAIL(QAT_EUNSUPPORTED, "cuda attention: %lld blocks exceed the grid limit",
                    (long long)n);
  *grid = (unsigned)n;
  return QAT_OK;
}

template <typename T, int D>
static qat_status at_fwd_launch(const qat_backend *be, const at_dims *dm, const void *q,
                                const void *k, const void *v, void *out, float *lse,
                                float scale) {
  unsigned grid;
  QAT_TRY(at_grid(dm, dm->Hq, &grid));
  const size_t smem = at_fwd_smem<D>();
  QAT_CUDA_TRY(cudaFuncSetAttribute(attn_fwd_kernel<T, D>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  attn_fwd_kernel<T, D><<<grid, AT_THREADS, smem, qat_cuda(be)->stream>>>(
      (const T *)q, (const T *)k, (const T *)v, (T *)out, lse, dm->T, dm->Hq, dm->Hkv,
      dm->ntiles, scale * AT_LOG2E);
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

template <typename T>
static qat_status at_dot_launch(const qat_backend *be, const at_dims *dm, const void *dout,
                                const void *out, float *Di) {
  const int64_t rows = dm->B * dm->T * dm->Hq;
  const int64_t blocks = (rows + 7) / 8;  // 8 warps per block, one row each
  if (blocks > 0x7fffffffll)
    return QAT_FAIL(QAT_EUNSUPPORTED, "cuda attention_bwd: %lld rows", (long long)rows);
  attn_bwd_dot_kernel<T><<<(unsigned)blocks, 256, 0, qat_cuda(be)->stream>>>(
      (const T *)dout, (const T *)out, Di, rows, dm->T, dm->Hq, (int)dm->D);
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

template <typename T, int D>
static qat_status at_bwd_launch(const qat_backend *be, const at_dims *dm, const void *dout,
                                const void *q, const void *k, const void *v, const float *lse,
                                const float *Di, float scale, void *dq, void *dk, void *dv) {
  cudaStream_t s = qat_cuda(be)->stream;
  unsigned grid_kv, grid_q;
  QAT_TRY(at_grid(dm, dm->Hkv, &grid_kv));
  QAT_TRY(at_grid(dm, dm->Hq, &grid_q));
  const size_t smem_kv = at_dkdv_smem<D>(), smem_q = at_dq_smem<D>();
  QAT_CUDA_TRY(cudaFuncSetAttribute(attn_bwd_dkdv_kernel<T, D>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_kv));
  QAT_CUDA_TRY(cudaFuncSetAttribute(attn_bwd_dq_kernel<T, D>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_q));
  attn_bwd_dkdv_kernel<T, D><<<grid_kv, AT_THREADS, smem_kv, s>>>(
      (const T *)q, (const T *)k, (const T *)v, (const T *)dout, lse, Di, (T *)dk, (T *)dv,
      dm->T, dm->Hq, dm->Hkv, dm->ntiles, scale * AT_LOG2E, scale);
  QAT_CUDA_LAUNCHED();
  attn_bwd_dq_kernel<T, D><<<grid_q, AT_THREADS, smem_q, s>>>(
      (const T *)q, (const T *)k, (const T *)v, (const T *)dout, lse, Di, (T *)dq, dm->T,
      dm->Hq, dm->Hkv, dm->ntiles, scale * AT_LOG2E, scale);
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

// Calls FN<T, D>(args) for the runtime head dim, or fails for an uninstantiated one.
#define AT_SWITCH_D(D_, FN, T, ...)                                                                \
  switch (D_) {                                                                                    \
    case 32: return FN<T, 32>(__VA_ARGS__);                                                        \
    case 48: return FN<T, 48>(__VA_ARGS__);                                                        \
    case 64: return FN<T, 64>(__VA_ARGS__);                                                        \
    case 80: return FN<T, 80>(__VA_ARGS__);                                                        \
    case 96: return FN<T, 96>(__VA_ARGS__);                                                        \
    case 128: return FN<T, 128>(__VA_ARGS__);                                                      \
    default:                                                                                       \
      return QAT_FAIL(QAT_EUNSUPPORTED,                                                            \
                      "cuda attention: head dim %lld (supported: 32, 48, 64, 80, 96, 128)",       \
                      (long long)(D_));                                                            \
  }

template <typename T>
static qat_status at_fwd_dispatch(const qat_backend *be, const at_dims *dm, const void *q,
                                  const void *k, const void *v, void *out, float *lse,
                                  float scale) {
  AT_SWITCH_D(dm->D, at_fwd_launch, T, be, dm, q, k, v, out, lse, scale);
}

template <typename T>
static qat_status at_bwd_dispatch(const qat_backend *be, const at_dims *dm, const void *dout,
                                  const void *q, const void *k, const void *v, const float *lse,
                                  const float *Di, float scale, void *dq, void *dk, void *dv) {
  AT_SWITCH_D(dm->D, at_bwd_launch, T, be, dm, dout, q, k, v, lse, Di, scale, dq, dk, dv);
}

static int at_supported_d(int64_t D) {
  return D == 32 || D == 48 || D == 64 || D == 80 || D == 96 || D == 128;
}

// Checks q[B, T, Hq, D], k, v[B, T, Hkv, D] (one dtype) and fills dm.
static qat_status at_check_qkv(const char *op, const qat_tensor *q, const qat_tensor *k,
                               const qat_tensor *v, at_dims *dm) {
  QAT_TRY(nn_check_float(op, q, "q"));
  QAT_TRY(nn_check_float(op, k, "k"));
  QAT_TRY(nn_check_float(op, v, "v"));
  QAT_TRY(nn_check_same_dtype(op, q, "q", k, "k"));
  QAT_TRY(nn_check_same_dtype(op, q, "q", v, "v"));
  if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4)
    return QAT_FAIL(QAT_EINVAL, "cuda %s: q, k, v must be [B, T, H, D] (ndims %d, %d, %d)", op,
                    q->ndim, k->ndim, v->ndim);
  dm->B = q->shape[0];
  dm->T = q->shape[1];
  dm->Hq = q->shape[2];
  dm->D = q->shape[3];
  dm->Hkv = k->shape[2];
  for (int i = 0; i < 4; i++)
    if (k->shape[i] != v->shape[i] || (i != 2 && k->shape[i] != q->shape[i])) {
      char a[64], c[64], e[64];
      return QAT_FAIL(QAT_EINVAL, "cuda %s: shapes q %s, k %s, v %s do not agree", op,
                      qat_shape_str(q, a, sizeof a), qat_shape_str(k, c, sizeof c),
                      qat_shape_str(v, e, sizeof e));
    }
  if (dm->Hkv <= 0 || dm->Hq % dm->Hkv != 0)
    return QAT_FAIL(QAT_EINVAL, "cuda %s: %lld query heads are not a multiple of %lld kv heads",
                    op, (long long)dm->Hq, (long long)dm->Hkv);
  if (!at_supported_d(dm->D))
    return QAT_FAIL(QAT_EUNSUPPORTED,
                    "cuda %s: head dim %lld (supported: 32, 48, 64, 80, 96, 128)", op,
                    (long long)dm->D);
  if (dm->T > (int64_t)AT_B * 0x7fffffff)
    return QAT_FAIL(QAT_EUNSUPPORTED, "cuda %s: T = %lld", op, (long long)dm->T);
  dm->ntiles = (int)((dm->T + AT_B - 1) / AT_B);
  return QAT_OK;
}

static qat_status at_check_like(const char *op, const qat_tensor *ref, const char *rref,
                                const qat_tensor *t, const char *role) {
  QAT_TRY(nn_check_float(op, t, role));
  QAT_TRY(nn_check_same_dtype(op, ref, rref, t, role));
  for (int i = 0; i < 4; i++)
    if (t->ndim != 4 || t->shape[i] != ref->shape[i]) {
      char a[64], c[64];
      return QAT_FAIL(QAT_EINVAL, "cuda %s: %s has shape %s, expected %s like %s", op,
                      nn_name(t, role), qat_shape_str(t, a, sizeof a),
                      qat_shape_str(ref, c, sizeof c), rref);
    }
  return QAT_OK;
}

static qat_status cu_attention_fwd(const qat_backend *be, const qat_tensor *q,
                                   const qat_tensor *k, const qat_tensor *v, float scale,
                                   qat_tensor *out, qat_tensor *lse) {
  at_dims dm;
  QAT_TRY(at_check_qkv("attention_fwd", q, k, v, &dm));
  if (!isfinite(scale)) return QAT_FAIL(QAT_EINVAL, "cuda attention_fwd: scale is not finite");
  QAT_TRY(at_check_like("attention_fwd", q, "q", out, "out"));
  QAT_TRY(nn_check_dtype("attention_fwd", lse, "lse", QAT_F32));
  QAT_TRY(nn_check_numel("attention_fwd", lse, "lse", dm.B * dm.Hq * dm.T));
  if (dm.B == 0 || dm.T == 0 || dm.Hq == 0) return QAT_OK;
  if (q->dtype == QAT_F32)
    return at_fwd_dispatch<float>(be, &dm, q->data, k->data, v->data, out->data,
                                  (float *)lse->data, scale);
  return at_fwd_dispatch<__nv_bfloat16>(be, &dm, q->data, k->data, v->data, out->data,
                                        (float *)lse->data, scale);
}

static qat_status cu_attention_bwd(const qat_backend *be, const qat_tensor *dout,
                                   const qat_tensor *q, const qat_tensor *k, const qat_tensor *v,
                                   const qat_tensor *out, const qat_tensor *lse, float scale,
                                   qat_tensor *dq, qat_tensor *dk, qat_tensor *dv) {
  at_dims dm;
  QAT_TRY(at_check_qkv("attention_bwd", q, k, v, &dm));
  if (!isfinite(scale)) return QAT_FAIL(QAT_EINVAL, "cuda attention_bwd: scale is not finite");
  QAT_TRY(at_check_like("attention_bwd", q, "q", dout, "dout"));
  QAT_TRY(at_check_like("attention_bwd", q, "q", out, "out"));
  QAT_TRY(at_check_like("attention_bwd", q, "q", dq, "dq"));
  QAT_TRY(at_check_like("attention_bwd", k, "k", dk, "dk"));
  QAT_TRY(at_check_like("attention_bwd", k, "k", dv, "dv"));
  QAT_TRY(nn_check_dtype("attention_bwd", lse, "lse", QAT_F32));
  QAT_TRY(nn_check_numel("attention_bwd", lse, "lse", dm.B * dm.Hq * dm.T));
  if (dm.B == 0 || dm.T == 0 || dm.Hq == 0) return QAT_OK;
  nn_scratch sc;
  QAT_TRY(nn_scratch_get(be, (size_t)(dm.B * dm.Hq * dm.T) * sizeof(float), &sc));
  float *Di = (float *)sc.p;
  qat_status st;
  if (q->dtype == QAT_F32) {
    st = at_dot_launch<float>(be, &dm, dout->data, out->data, Di);
    if (st == QAT_OK)
      st = at_bwd_dispatch<float>(be, &dm, dout->data, q->data, k->data, v->data,
                                  (const float *)lse->data, Di, scale, dq->data, dk->data,
                                  dv->data);
  } else {
    st = at_dot_launch<__nv_bfloat16>(be, &dm, dout->data, out->data, Di);
    if (st == QAT_OK)
      st = at_bwd_dispatch<__nv_bfloat16>(be, &dm, dout->data, q->data, k->data, v->data,
                                          (const float *)lse->data, Di, scale, dq->data,
                                          dk->data, dv->data);
  }
  qat_status st2 = nn_scratch_put(be, &sc);
  return st != QAT_OK ? st : st2;
}

void qat_cuda_register_attention(qat_backend *be) {
  be->attention_fwd = cu_attention_fwd;
  be->attention_bwd = cu_attention_bwd;
}
