// Private to the CUDA qgemm (qgemm.cu: the op, argument checks, dequantize + cuBLASLt path;
// qgemm_mma.cu: the fused small-M tensor-core kernel). Layout: quant/packed_layout.h; the
// descriptor is a host struct whose codes / scales / zeros point at device memory
// (quant/packed_dev.h uploads one).
#pragma once

#include "cuda/nn_common.cuh"

// packed_layout.h is C11 (its size check is _Static_assert); C++ spells it static_assert.
#define _Static_assert static_assert
#include "quant/packed_layout.h"
#undef _Static_assert

// The fused kernel's tiling (qgemm_mma.cu), shared with the host code that sizes its buffers:
// codes per k-tile (one pipeline stage) and rows of W per thread block.
#define QG_KT 128
#define QG_NTILE 64

// Rows of x one fused launch takes (4 m16 tiles); larger M runs it once per 64-row chunk.
#define QG_MMA_MAX_ROWS 64

// True when the fused kernel handles w's group layout: every 16-column step of K must lie in
// one group (group a multiple of 16, or one group per row).
static inline int qg_mma_fits(const qat_packed *w) { return w->group % 16 == 0 || w->G == 1; }

// y[M, N] (F32, overwritten) = x[M, K] @ dequant(W)^T for M <= QG_MMA_MAX_ROWS, x given as
// BF16 [M, Kp] with Kp = K rounded up to QG_KT and zero columns past K (qg_x_to_bf16).
// part: F32 scratch for split-K partials, at least qg_mma_part_floats(...) floats (may be NULL
// when that is 0).
qat_status qg_mma_forward(const qat_backend *be, const qat_packed *w, int64_t M,
                          const __nv_bfloat16 *xb, int64_t Kp, float *y, float *part);
// Split-K factor the launcher will use for N, K on this device, and the partial buffer it needs.
int qg_mma_splits(const qat_backend *be, int64_t N, int64_t K);
static inline int64_t qg_mma_part_floats(const qat_backend *be, int64_t M, int64_t N,
                                         int64_t K) {
  int ks = qg_mma_splits(be, N, K);
  return ks > 1 ? (int64_t)ks * M * N : 0;
}
