// The fused small-M qgemm kernel: y[M, N] = x[M, K] @ dequant(W)^T, W read once as packed codes
// (NEVER RUN ON A GPU yet: written and compiled on a machine without one).
//
// Why this shape (Marlin's ideas, not its layout): at M <= 64 the product is bound by the bytes
// of W, so the codes stream through shared memory in a cp.async pipeline (QG_STAGES k-tiles in
// flight per block) and are turned into BF16 in registers right before the tensor-core mma.
// Unlike Marlin the codes are read in the packed format as stored (LSB-first bit stream per row,
// quant/packed_layout.h), with no load-time shuffle: each lane pulls its own code pairs out of the
// staged tile with shifts (the bit position is a compile-time function of the lane for a given
// bit width), so the same weights serve the CPU op, the dequantize path and this kernel.
//
// Tiling: a block of 4 warps owns QG_NTILE = 64 rows of W (16 per warp: two n8 mma tiles) and a
// range of k-tiles (split-K over blockIdx.y when N alone gives too few blocks; the partials are
// summed in a fixed order by qg_reduce_kernel, so results do not depend on timing). A k-tile is
// QG_KT = 128 codes: per row 16 * b bytes of codes (b chunks of 16 bytes) and the matching
// 128 BF16 columns of x for all MT * 16 rows.
//
// mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32: A = x rows (M, zero rows past M), B = W rows as
// the "col" operand (B[k][n] = W[n][k], exactly W's row-major storage), FP32 accumulation. Lane
// (g = lane / 4, t = lane % 4) holds B elements k = 2t, 2t+1 (reg 0) and 2t+8, 2t+9 (reg 1) of
// row n = g, A rows g and g+8 at the same k pairs, and D rows g, g+8 at columns 2t, 2t+1.
//
// Dequant in registers: for b <= 7 a code pair (q0, q1) becomes the BF16x2 (128 + q0, 128 + q1)
// by one shift-or and one lop3 that masks the codes into the mantissas of 0x4300 (BF16 128.0,
// whose 7 mantissa bits count units: the magic-number conversion); subtracting the BF16x2
// (128 + zp) leaves q - zp exactly (integers below 256 are exact in BF16). b = 8 codes reach 255,
// past that trick, and go through float (also exact). The weights entering the mma are therefore
// the exact integers q - zp; the group scale multiplies the FP32 partial sum of each group
// (acc += s_j * sum_{k in group j} x_k (q_k - zp_j)), so the only rounding beyond FP32
// accumulation is x's rounding to BF16.
#include "cuda/qgemm.cuh"

#include <cuda_fp16.h>
#include <string.h>

#define QG_WARPS 4
#define QG_THREADS (QG_WARPS * 32)
#define QG_STAGES 4
#define QG_XS (QG_KT / 2 + 4) // x row stride in smem (32-bit words): +4 spreads rows over banks

// Codes row stride in smem, 32-bit words: 4b words of codes plus 4 or 8 of padding (the extra
// word a straddling 64-bit window may touch), a whole number of 16-byte units for cp.async and
// an odd one, so the 8 rows a warp's lanes read (g = 0..7) start in 8 different bank quads.
template <int B> struct qg_geom {
  static constexpr int RS = 4 * B + (B % 2 ? 8 : 4);
  static constexpr int CODE_WORDS = QG_NTILE * RS;
};

template <int B, int MT> static constexpr size_t qg_smem_bytes() {
  return (size_t)QG_STAGES * 4 * (qg_geom<B>::CODE_WORDS + MT * 16 * QG_XS);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define QG_HAVE_SM80 1
#endif

__device__ __forceinline__ void qg_cp16(void *smem, const void *gmem, bool valid) {
#ifdef QG_HAVE_SM80
  unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  int n = valid ? 16 : 0; // src-size 0: the 16 bytes are zero-filled, nothing is read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
#endif
}
__device__ __forceinline__ void qg_cp4(void *smem, const void *gmem, bool valid) {
#ifdef QG_HAVE_SM80
  unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  int n = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
#endif
}
__device__ __forceinline__ void qg_commit() {
#ifdef QG_HAVE_SM80
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N> __device__ __forceinline__ void qg_wait() {
#ifdef QG_HAVE_SM80
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

__device__ __forceinline__ uint32_t qg_lop3_and_or(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t r;
  // LUT 0xEA = (a & b) | c  (0xF0 & 0xCC | 0xAA)
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}

__device__ __forceinline__ void qg_mma(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
#ifdef QG_HAVE_SM80
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
               "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Codes c, c+1 of a staged row (c even) as the bits q0 | q1 << B.
template <int B> __device__ __forceinline__ uint32_t qg_pair(const uint32_t *row, int c) {
  const int bit = c * B, w = bit >> 5, sh = bit & 31;
  const uint32_t mask = (1u << (2 * B)) - 1u;
  if constexpr (32 % (2 * B) == 0) { // pairs never straddle a word (b = 2, 4, 8)
    return (row[w] >> sh) & mask;
  } else {
    const uint64_t win = (uint64_t)row[w] | ((uint64_t)row[w + 1] << 32);
    return (uint32_t)(win >> sh) & mask;
  }
}

// BF16x2 (q0 - zp, q1 - zp) from v = q0 | q1 << B; zz = BF16x2 (128 + zp) (b <= 7) and zpf = zp.
template <int B>
__device__ __forceinline__ uint32_t qg_dequant_pair(uint32_t v, uint32_t zz, float zpf) {
  if constexpr (B <= 7) {
    const uint32_t m = (1u << B) - 1u;
    // q0 stays at bits [0, B); q1 moves to [16, 16 + B); the lop3 keeps those and ORs in 128.0
    const uint32_t sp = v | (v << (16 - B));
    const uint32_t h = qg_lop3_and_or(sp, m | (m << 16), 0x43004300u);
    __nv_bfloat162 r = __hsub2(*(const __nv_bfloat162 *)&h, *(const __nv_bfloat162 *)&zz);
    return *(const uint32_t *)&r;
  } else {
    (void)zz;
    __nv_bfloat162 r =
        __floats2bfloat162_rn((float)(v & 0xffu) - zpf, (float)(v >> 8) - zpf); // exact
    return *(const uint32_t *)&r;
  }
}

__device__ __forceinline__ float qg_scale(const void *scales, int sf16, int64_t i) {
  return sf16 ? __half2float(((const __half *)scales)[i]) : ((const float *)scales)[i];
}

struct qg_args {
  const uint8_t *codes, *zeros;
  const void *scales;
  int64_t row_bytes, zrow_bytes;
  int sf16, sym, group, G;
  const __nv_bfloat16 *xb; // [M, Kp]
  int64_t Kp;
  int M, N, K;
  int ktiles_per_split, ktiles;
  float *out; // [splits, M, N] partials, or y when one split
};

template <int B, int MT> __global__ void __launch_bounds__(QG_THREADS) qg_mma_kernel(qg_args a) {
#ifdef QG_HAVE_SM80
  extern __shared__ __align__(16) uint32_t qg_smem[];
  typedef qg_geom<B> geo;
  uint32_t *s_codes = qg_smem;                                   // [STAGES][NTILE][RS]
  uint32_t *s_x = qg_smem + QG_STAGES * geo::CODE_WORDS;          // [STAGES][MT*16][XS]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int n0 = blockIdx.x * QG_NTILE;
  const int kt0 = blockIdx.y * a.ktiles_per_split;
  const int kt1 = min(a.ktiles, kt0 + a.ktiles_per_split);
  const int nt_tiles = kt1 - kt0;
  const bool vec16 = a.row_bytes % 16 == 0;
  const int tile_bytes = 16 * B; // bytes of one row's codes per k-tile

  // One stage: the codes of rows n0 .. n0+63 and x columns of k-tile kt.
  auto load_stage = [&](int stage, int kt) {
    uint8_t *dc = (uint8_t *)(s_codes + stage * geo::CODE_WORDS);
    const int64_t off = (int64_t)kt * tile_bytes;
    if (vec16) {
      for (int i = tid; i < QG_NTILE * B; i += QG_THREADS) {
        const int r = i / B, c = i % B;
        const int64_t n = n0 + r, o = off + 16 * c;
        const bool ok = n < a.N && o < a.row_bytes;
        qg_cp16(dc + r * geo::RS * 4 + 16 * c, ok ? a.codes + n * a.row_bytes + o : a.codes, ok);
      }
    } else {
      for (int i = tid; i < QG_NTILE * 4 * B; i += QG_THREADS) {
        const int r = i / (4 * B), c = i % (4 * B);
        const int64_t n = n0 + r, o = off + 4 * c;
        const bool ok = n < a.N && o < a.row_bytes;
        qg_cp4(dc + r * geo::RS * 4 + 4 * c, ok ? a.codes + n * a.row_bytes + o : a.codes, ok);
      }
    }
    uint8_t *dx = (uint8_t *)(s_x + stage * MT * 16 * QG_XS);
    for (int i = tid; i < MT * 16 * (QG_KT * 2 / 16); i += QG_THREADS) {
      const int m = i / (QG_KT * 2 / 16), c = i % (QG_KT * 2 / 16);
      const bool ok = m < a.M;
      const __nv_bfloat16 *src = ok ? a.xb + (int64_t)m * a.Kp + (int64_t)kt * QG_KT + 8 * c : a.xb;
      qg_cp16(dx + m * QG_XS * 4 + 16 * c, src, ok);
    }
  };

  float acc[MT][2][4], tmp[MT][2][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
#pragma unroll
      for (int r = 0; r < 4; r++) acc[mt][nt][r] = tmp[mt][nt][r] = 0.0f;

  // rows of W this lane touches: B operand row (zero points) and D columns (scales)
  int64_t brow[2], dcol[2][2];
#pragma unroll
  for (int nt = 0; nt < 2; nt++) {
    brow[nt] = min(n0 + warp * 16 + nt * 8 + g, a.N - 1); // clamped: rows past N are discarded
    dcol[nt][0] = min(n0 + warp * 16 + nt * 8 + 2 * t, a.N - 1);
    dcol[nt][1] = min(n0 + warp * 16 + nt * 8 + 2 * t + 1, a.N - 1);
  }
  int cur_j = -1;
  uint32_t zz[2] = {0, 0};
  float zpf[2] = {0.0f, 0.0f};

  // acc += s_j * tmp for the group just finished; tmp = 0
  auto flush = [&](int j) {
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
      const float s0 = qg_scale(a.scales, a.sf16, dcol[nt][0] * a.G + j);
      const float s1 = qg_scale(a.scales, a.sf16, dcol[nt][1] * a.G + j);
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        acc[mt][nt][0] += s0 * tmp[mt][nt][0];
        acc[mt][nt][1] += s1 * tmp[mt][nt][1];
        acc[mt][nt][2] += s0 * tmp[mt][nt][2];
        acc[mt][nt][3] += s1 * tmp[mt][nt][3];
#pragma unroll
        for (int r = 0; r < 4; r++) tmp[mt][nt][r] = 0.0f;
      }
    }
  };
  auto set_group = [&](int j) {
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
      unsigned zp;
      if (a.sym) {
        zp = 1u << (B - 1);
      } else {
        const uint8_t *zr = a.zeros + brow[nt] * a.zrow_bytes;
        const int bit = j * B; // b + 7 <= 15 bits: two bytes (the stream has slack after it)
        const unsigned v = (unsigned)zr[bit >> 3] | ((unsigned)zr[(bit >> 3) + 1] << 8);
        zp = (v >> (bit & 7)) & ((1u << B) - 1u);
      }
      zz[nt] = (0x4300u | zp) * 0x10001u; // BF16x2 (128 + zp): exact for zp < 128
      zpf[nt] = (float)zp;
    }
  };

  // prologue: STAGES - 1 tiles in flight (empty groups keep the wait count uniform)
#pragma unroll
  for (int s = 0; s < QG_STAGES - 1; s++) {
    if (s < nt_tiles) load_stage(s, kt0 + s);
    qg_commit();
  }
  for (int it = 0; it < nt_tiles; it++) {
    qg_wait<QG_STAGES - 2>(); // tile it has landed (for this thread's copies)
    __syncthreads();          // ... for everyone's, and stage (it - 1) % STAGES is free
    {
      const int nx = it + QG_STAGES - 1;
      if (nx < nt_tiles) load_stage(nx % QG_STAGES, kt0 + nx);
      qg_commit();
    }
    const int st = it % QG_STAGES;
    const uint32_t *cs = s_codes + st * geo::CODE_WORDS;
    const uint32_t *xs = s_x + st * MT * 16 * QG_XS;
    const int kbase = (kt0 + it) * QG_KT;
#pragma unroll
    for (int kk = 0; kk < QG_KT; kk += 16) {
      const int j = min((kbase + kk) / a.group, a.G - 1); // warp-uniform
      if (j != cur_j) {
        if (cur_j >= 0) flush(cur_j);
        cur_j = j;
        set_group(j);
      }
      uint32_t b[2][2];
#pragma unroll
      for (int nt = 0; nt < 2; nt++) {
        const uint32_t *row = cs + (warp * 16 + nt * 8 + g) * geo::RS;
        b[nt][0] = qg_dequant_pair<B>(qg_pair<B>(row, kk + 2 * t), zz[nt], zpf[nt]);
        b[nt][1] = qg_dequant_pair<B>(qg_pair<B>(row, kk + 8 + 2 * t), zz[nt], zpf[nt]);
      }
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        const uint32_t *x0 = xs + (mt * 16 + g) * QG_XS + kk / 2 + t;
        const uint32_t *x8 = x0 + 8 * QG_XS;
        const uint32_t af[4] = {x0[0], x8[0], x0[4], x8[4]};
        qg_mma(tmp[mt][0], af, b[0][0], b[0][1]);
        qg_mma(tmp[mt][1], af, b[1][0], b[1][1]);
      }
    }
  }
  qg_wait<0>();
  if (cur_j >= 0) flush(cur_j);

  float *out = a.out + (int64_t)blockIdx.y * a.M * a.N;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
      const int64_t n = n0 + warp * 16 + nt * 8 + 2 * t;
      const int m = mt * 16 + g;
      if (m < a.M) {
        if (n < a.N) out[(int64_t)m * a.N + n] = acc[mt][nt][0];
        if (n + 1 < a.N) out[(int64_t)m * a.N + n + 1] = acc[mt][nt][1];
      }
      if (m + 8 < a.M) {
        if (n < a.N) out[(int64_t)(m + 8) * a.N + n] = acc[mt][nt][2];
        if (n + 1 < a.N) out[(int64_t)(m + 8) * a.N + n + 1] = acc[mt][nt][3];
      }
    }
#endif
}

// y[i] = sum over splits s = 0 .. ks-1 of part[s][i], in that order.
__global__ void qg_reduce_kernel(const float *part, int ks, int64_t n, float *y) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < ks; s++) v += part[(int64_t)s * n + i];
    y[i] = v;
  }
}

int qg_mma_splits(const qat_backend *be, int64_t N, int64_t K) {
  const int64_t nbx = (N + QG_NTILE - 1) / QG_NTILE;
  const int64_t ktiles = (K + QG_KT - 1) / QG_KT;
  const int64_t want = 4 * (int64_t)qat_cuda(be)->sm_count; // blocks to keep every SM busy
  int64_t ks = (want + nbx - 1) / nbx;
  if (ks > ktiles) ks = ktiles;
  if (ks > 64) ks = 64;
  if (ks < 1) ks = 1;
  const int64_t per = (ktiles + ks - 1) / ks;
  return (int)((ktiles + per - 1) / per); // no empty split
}

template <int B, int MT> static qat_status qg_launch(const qat_backend *be, const qg_args &a) {
  constexpr size_t smem = qg_smem_bytes<B, MT>();
  static int attr_set = 0; // one per instantiation; one host thread per backend (as gemm.cu)
  if (!attr_set) {
    QAT_CUDA_TRY(cudaFuncSetAttribute(qg_mma_kernel<B, MT>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    attr_set = 1;
  }
  const int ks = (a.ktiles + a.ktiles_per_split - 1) / a.ktiles_per_split;
  dim3 grid((unsigned)((a.N + QG_NTILE - 1) / QG_NTILE), (unsigned)ks);
  qg_mma_kernel<B, MT><<<grid, QG_THREADS, smem, qat_cuda(be)->stream>>>(a);
  QAT_CUDA_LAUNCHED();
  return QAT_OK;
}

template <int MT> static qat_status qg_launch_bits(const qat_backend *be, int bits,
                                                   const qg_args &a) {
  switch (bits) {
  case 2: return qg_launch<2, MT>(be, a);
  case 3: return qg_launch<3, MT>(be, a);
  case 4: return qg_launch<4, MT>(be, a);
  case 5: return qg_launch<5, MT>(be, a);
  case 6: return qg_launch<6, MT>(be, a);
  case 7: return qg_launch<7, MT>(be, a);
  case 8: return qg_launch<8, MT>(be, a);
  }
  return QAT_FAIL(QAT_EINTERNAL, "cuda qgemm: no kernel for %d bits", bits);
}

qat_status qg_mma_forward(const qat_backend *be, const qat_packed *w, int64_t M,
                          const __nv_bfloat16 *xb, int64_t Kp, float *y, float *part) {
  if (M < 1 || M > QG_MMA_MAX_ROWS || !qg_mma_fits(w) || Kp % QG_KT != 0 || Kp < w->K)
    return QAT_FAIL(QAT_EINTERNAL, "cuda qgemm: fused kernel called outside its range (M %lld)",
                    (long long)M);
  qg_args a;
  memset(&a, 0, sizeof a);
  a.codes = w->codes;
  a.zeros = w->zeros;
  a.scales = w->scales;
  a.row_bytes = w->row_bytes;
  a.zrow_bytes = w->zrow_bytes;
  a.sf16 = w->sdtype == QAT_F16;
  a.sym = w->sym;
  a.group = w->group;
  a.G = (int)w->G;
  a.xb = xb;
  a.Kp = Kp;
  a.M = (int)M;
  a.N = (int)w->N;
  a.K = (int)w->K;
  a.ktiles = (int)(Kp / QG_KT);
  const int ks0 = qg_mma_splits(be, w->N, w->K); // what the caller sized part for
  a.ktiles_per_split = (a.ktiles + ks0 - 1) / ks0;
  const int ks = (a.ktiles + a.ktiles_per_split - 1) / a.ktiles_per_split; // <= ks0
  if (ks > 1 && !part) return QAT_FAIL(QAT_EINTERNAL, "cuda qgemm: split-K without a buffer");
  a.out = ks > 1 ? part : y;
  QAT_TRY(M <= 16 ? qg_launch_bits<1>(be, w->bits, a) : qg_launch_bits<4>(be, w->bits, a));
  if (ks > 1) {
    const int64_t n = M * w->N;
    qg_reduce_kernel<<<nn_blocks(n, 256, 4, 4096), 256, 0, qat_cuda(be)->stream>>>(part, ks, n,
                                                                                    y);
    QAT_CUDA_LAUNCHED();
  }
  return QAT_OK;
}
