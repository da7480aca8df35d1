/* qat's packed weights (quant/packed_layout.h: w = s~ * (code - zp)) as llama.cpp's GGUF block
 * types (REFERENCE.md section 9; dequantization as the gguf Python package's gguf.quants):
 *   Q4_0  block 32, 18 bytes: F16 d, 16 bytes of nibbles (byte j: element j low, j + 16 high);
 *         w = d * (c - 8)
 *   Q4_1  block 32, 20 bytes: F16 d, F16 m, nibbles as Q4_0; w = d * c + m
 *   Q8_0  block 32, 34 bytes: F16 d, int8 c[32]; w = d * c
 * The images of qat's grid (each 32-block lies in one qat group because the group is a
 * multiple of 32; a group of g > 32 repeats its scale in g / 32 blocks):
 *   2- and 3-bit (sym or asym) and 4-bit sym -> Q4_0, c = code - zp + 8 (|code - zp| <= 7 for
 *     b <= 3 asym, -8..7 for 4-bit sym), d = s~: exact but no smaller than 4-bit;
 *   4-bit asym -> Q4_1, c = code, d = s~, m = -s~ * z~ (as F16: the pair of F16 values next to
 *     those, m centred over the block's codes, with the smallest largest error; packed_gguf.c);
 *   5- to 8-bit sym and 5- to 7-bit asym -> Q8_0, c = code - zp (fits int8), d = s~.
 * 8-bit asym (code - z~ spans -255..255) and groups that are not a multiple of 32 have no image
 * and are refused with the reason. d and m are F16: the F16 rounding of s~ (none when qat's
 * scales are already F16) and of m = -s~ z~ changes the weights; qat_packed_to_gguf reports the
 * largest change, computed with the gguf package's float32 arithmetic. */
#ifndef QAT_QUANT_PACKED_GGUF_H
#define QAT_QUANT_PACKED_GGUF_H

#include "quant/packed.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QAT_GGUF_QBLOCK 32

typedef struct qat_block_q4_0 {
  uint16_t d;
  uint8_t qs[QAT_GGUF_QBLOCK / 2];
} qat_block_q4_0;
_Static_assert(sizeof(qat_block_q4_0) == 18, "Q4_0 block is 18 bytes");

typedef struct qat_block_q4_1 {
  uint16_t d, m;
  uint8_t qs[QAT_GGUF_QBLOCK / 2];
} qat_block_q4_1;
_Static_assert(sizeof(qat_block_q4_1) == 20, "Q4_1 block is 20 bytes");

typedef struct qat_block_q8_0 {
  uint16_t d;
  int8_t qs[QAT_GGUF_QBLOCK];
} qat_block_q8_0;
_Static_assert(sizeof(qat_block_q8_0) == 34, "Q8_0 block is 34 bytes");

/* The ggml type (QAT_GGML_Q4_0 / Q4_1 / Q8_0 of io/gguf.h) for bits, sym, group (columns) and
 * K in features; QAT_EUNSUPPORTED naming `name` and the reason otherwise. */
qat_status qat_gguf_qtype(int bits, int sym, int64_t group, int64_t K, const char *name,
                          uint32_t *type);

/* p (its N rows in the order rows[0..N), rows NULL = 0..N-1) as blocks of type (from
 * qat_gguf_qtype) into dst (N * K / 32 blocks, row after row); *max_err = the largest
 * |w_gguf - w_qat| over the tensor, where w_qat = (code - zp) * s~ as float32 and w_gguf is the
 * gguf package's dequantization of the block. An F16 d or m that overflows is QAT_EINVAL. */
qat_status qat_packed_to_gguf(const qat_packed *p, const int64_t *rows, uint32_t type, void *dst,
                              double *max_err, const char *name);

#ifdef __cplusplus
}
#endif

#endif
