/* The packed low-bit weight format (issue 11), as a plain data descriptor: the struct, its
 * geometry and the per-code accessors. A leaf header (stdint + the dtype enum only), so the
 * backend's qgemm (host/backend/cpu/qgemm*.c, a lower layer) can read the format without
 * including the quantizer layer; building, checking and file I/O live in quant/packed.h.
 *
 * Linear W[N, K] (N out features, K in features), groups of g columns along K with g | K
 * (per-channel: g = K), G = K / g, b = bits in 2..8:
 *   codes  U8 [N, row_bytes], row_bytes = ceil(K * b / 32) * 4: row n is one little-endian bit
 *          stream, code k at bits [b*k, b*k + b) (LSB first; the same as GPTQ's 32-bit words
 *          read as bytes, and for b = 3 its 96-bit stream), zero padded to whole 32-bit words.
 *          A code is the U8 value fq_codes / dq_forward use: q in [0, 2^b) (asym) or
 *          q + 2^(b-1) (sym).
 *   scales F32 or F16 [N, G]: s~ = clamp(s, 1e-4, 1e4) (REFERENCE.md section 1), > 0.
 *   zeros  U8 [N, zrow_bytes] (asym only), zrow_bytes = ceil(G * b / 32) * 4: the integer zero
 *          points z~ = clamp(round(z), 0, 2^b - 1) packed along G the same way.
 *   w[n, k] = (code - zp) * s~, zp = z~ (asym) or 2^(b-1) (sym): with F32 scales exactly
 *          dq_forward's (code - z~) * s~, hence exactly the fake-quant weight.
 * Every buffer is followed by QAT_PACKED_SLACK zero bytes so a decoder may load 8 bytes at any
 * code position of the stream. */
#ifndef QAT_QUANT_PACKED_LAYOUT_H
#define QAT_QUANT_PACKED_LAYOUT_H

#include "core/tensor.h"

#include <stdint.h>
#include <string.h>

#define QAT_PACKED_VERSION 1
#define QAT_PACKED_SLACK 8

typedef struct qat_packed {
  int32_t bits;       /* 2..8 */
  int32_t group;      /* columns per group, divides K (K when per-channel) */
  int32_t sym;        /* 1 symmetric (no zeros stored), 0 asymmetric */
  int32_t sdtype;     /* qat_dtype of scales: QAT_F32 or QAT_F16 */
  int64_t N, K, G;    /* out features, in features, groups per row */
  int64_t row_bytes;  /* bytes of codes per row */
  int64_t zrow_bytes; /* bytes of zero points per row (0 when sym) */
  uint8_t *codes;     /* [N, row_bytes] (+ slack) */
  uint8_t *zeros;     /* [N, zrow_bytes] (+ slack), NULL when sym */
  void *scales;       /* [N, G] of sdtype (+ slack) */
} qat_packed;
_Static_assert(sizeof(qat_packed) == 4 * sizeof(int32_t) + 5 * sizeof(int64_t) + 3 * sizeof(void *),
               "qat_packed: the descriptor has no padding; update the size table with the fields");

/* Bytes of a b-bit stream of n codes, in whole 32-bit words. */
static inline int64_t qat_packed_stream_bytes(int64_t n, int bits) {
  return (n * bits + 31) / 32 * 4;
}

/* Code k of a b-bit stream (needs QAT_PACKED_SLACK bytes past the stream's end). */
static inline unsigned qat_packed_get(const uint8_t *stream, int bits, int64_t k) {
  int64_t bit = k * bits;
  uint32_t v;
  memcpy(&v, stream + (bit >> 3), 4); /* b + 7 <= 15 bits needed: within 4 bytes */
  return (v >> (bit & 7)) & ((1u << bits) - 1u);
}

/* Store code v at position k (the stream zero-initialized or v's bits cleared first). */
static inline void qat_packed_put(uint8_t *stream, int bits, int64_t k, unsigned v) {
  int64_t bit = k * bits;
  for (int i = 0; i < bits; i++, bit++)
    if (v >> i & 1u) stream[bit >> 3] |= (uint8_t)(1u << (bit & 7));
}

/* Scale of group j of row n, as float. */
static inline float qat_packed_scale(const qat_packed *p, int64_t n, int64_t j) {
  int64_t i = n * p->G + j;
  return p->sdtype == QAT_F16 ? qat_f16_to_f32(((const uint16_t *)p->scales)[i])
                              : ((const float *)p->scales)[i];
}

/* Offset subtracted from a code in group j of row n: z~ (asym) or 2^(b-1) (sym). */
static inline float qat_packed_zp(const qat_packed *p, int64_t n, int64_t j) {
  if (p->sym) return (float)(1 << (p->bits - 1));
  return (float)qat_packed_get(p->zeros + n * p->zrow_bytes, p->bits, j);
}

#endif
