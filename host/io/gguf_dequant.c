/* ggml block formats -> float32, bit-exact with the gguf Python package's
 * gguf.quants.dequantize (llama.cpp's gguf-py/gguf/quants.py): every value is computed with the
 * same float32 operations in the same order (d * q, then + m or - dm, where quants.py first
 * forms the sub-block scale d * sc in float32). The project builds with -ffp-contract=off, so no
 * multiply-add is fused behind our back. Layouts (QK_K = 256; d, m, dmin are F16):
 *   Q4_0  [d | qs[16]]              x = d * (q - 8); byte j: element j (low), j + 16 (high)
 *   Q4_1  [d | m | qs[16]]          x = d * q + m
 *   Q5_0  [d | qh u32 | qs[16]]     q |= bit j of qh << 4; x = d * (q - 16)
 *   Q5_1  [d | m | qh | qs[16]]     x = d * q + m
 *   Q8_0  [d | int8 qs[32]]         x = q * d
 *   Q2_K  [scales[16] | qs[64] | d | dmin]      16 sub-blocks of 16: (d*sc) * q - (dmin*m)
 *   Q3_K  [hmask[32] | qs[64] | scales[12] | d] 6-bit signed scales; q - 4 when the hmask bit is 0
 *   Q4_K  [d | dmin | scales[12] | qs[128]]     8 sub-blocks of 32, 6-bit scales and mins
 *   Q5_K  [d | dmin | scales[12] | qh[32] | qs[128]]
 *   Q6_K  [ql[128] | qh[64] | int8 scales[16] | d]  x = (d * sc) * (q - 32) */
#include "core/tensor.h"
#include "io/gguf.h"

#include <assert.h>
#include <inttypes.h>
#include <string.h>

#define QK 32
#define QK_K 256

typedef struct { uint16_t d; uint8_t qs[QK / 2]; } blk_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[QK / 2]; } blk_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[QK / 2]; } blk_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[QK / 2]; } blk_q5_1;
typedef struct { uint16_t d; int8_t qs[QK]; } blk_q8_0;
typedef struct { uint8_t scales[QK_K / 16], qs[QK_K / 4]; uint16_t d, dmin; } blk_q2_k;
typedef struct { uint8_t hmask[QK_K / 8], qs[QK_K / 4], scales[12]; uint16_t d; } blk_q3_k;
typedef struct { uint16_t d, dmin; uint8_t scales[12], qs[QK_K / 2]; } blk_q4_k;
typedef struct { uint16_t d, dmin; uint8_t scales[12], qh[QK_K / 8], qs[QK_K / 2]; } blk_q5_k;
typedef struct { uint8_t ql[QK_K / 2], qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; } blk_q6_k;

static_assert(sizeof(blk_q4_0) == 18, "Q4_0 block");
static_assert(sizeof(blk_q4_1) == 20, "Q4_1 block");
static_assert(sizeof(blk_q5_0) == 22, "Q5_0 block");
static_assert(sizeof(blk_q5_1) == 24, "Q5_1 block");
static_assert(sizeof(blk_q8_0) == 34, "Q8_0 block");
static_assert(sizeof(blk_q2_k) == 84, "Q2_K block");
static_assert(sizeof(blk_q3_k) == 110, "Q3_K block");
static_assert(sizeof(blk_q4_k) == 144, "Q4_K block");
static_assert(sizeof(blk_q5_k) == 176, "Q5_K block");
static_assert(sizeof(blk_q6_k) == 210, "Q6_K block");

/* F16 fields are little-endian like the whole file; blocks are copied out (the mapping gives no
 * alignment guarantee when general.alignment is 1). */
static float h2f(uint16_t h) { return qat_f16_to_f32(h); }

static void q4_0(const blk_q4_0 *b, float *y) {
  const float d = h2f(b->d);
  for (int j = 0; j < QK / 2; j++) {
    y[j] = d * (float)((b->qs[j] & 0x0F) - 8);
    y[j + QK / 2] = d * (float)((b->qs[j] >> 4) - 8);
  }
}

static void q4_1(const blk_q4_1 *b, float *y) {
  const float d = h2f(b->d), m = h2f(b->m);
  for (int j = 0; j < QK / 2; j++) {
    float p0 = d * (float)(b->qs[j] & 0x0F), p1 = d * (float)(b->qs[j] >> 4);
    y[j] = p0 + m;
    y[j + QK / 2] = p1 + m;
  }
}

static uint32_t qh32(const uint8_t *qh) {
  return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static void q5_0(const blk_q5_0 *b, float *y) {
  const float d = h2f(b->d);
  const uint32_t qh = qh32(b->qh);
  for (int j = 0; j < QK / 2; j++) {
    int lo = (b->qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4;
    int hi = (b->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
    y[j] = d * (float)(lo - 16);
    y[j + QK / 2] = d * (float)(hi - 16);
  }
}

static void q5_1(const blk_q5_1 *b, float *y) {
  const float d = h2f(b->d), m = h2f(b->m);
  const uint32_t qh = qh32(b->qh);
  for (int j = 0; j < QK / 2; j++) {
    int lo = (b->qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4;
    int hi = (b->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
    float p0 = d * (float)lo, p1 = d * (float)hi;
    y[j] = p0 + m;
    y[j + QK / 2] = p1 + m;
  }
}

static void q8_0(const blk_q8_0 *b, float *y) {
  const float d = h2f(b->d);
  for (int j = 0; j < QK; j++)
    y[j] = (float)b->qs[j] * d;
}

/* Q2_K: element e = h*128 + s*32 + l (h < 2, s < 4, l < 32) is bits 2s.. of qs[h*32 + l];
 * sub-block e / 16 has scale nibble (low) and min nibble (high). */
static void q2_k(const blk_q2_k *b, float *y) {
  const float d = h2f(b->d), dmin = h2f(b->dmin);
  for (int e = 0; e < QK_K; e++) {
    int h = e / 128, s = (e % 128) / 32, l = e % 32, sb = e / 16;
    float dl = d * (float)(b->scales[sb] & 0x0F), ml = dmin * (float)(b->scales[sb] >> 4);
    float q = (float)((b->qs[h * 32 + l] >> (2 * s)) & 3);
    float p = dl * q;
    y[e] = p - ml;
  }
}

/* Q3_K: 16 scales of 6 bits: low nibbles from bytes 0..7 (byte i % 8, nibble i / 8), high two
 * bits from bytes 8..11 (byte i % 4, pair i / 4), minus 32. q = 2 low bits (as Q2_K) minus 4
 * when bit e / 32 of hmask[e % 32] is clear. */
static void q3_k(const blk_q3_k *b, float *y) {
  const float d = h2f(b->d);
  float dl[16];
  for (int i = 0; i < 16; i++) {
    int lo = (b->scales[i % 8] >> (4 * (i / 8))) & 0x0F;
    int hi = (b->scales[8 + i % 4] >> (2 * (i / 4))) & 0x03;
    dl[i] = d * (float)((int8_t)(uint8_t)(lo | hi << 4) - 32);
  }
  for (int e = 0; e < QK_K; e++) {
    int h = e / 128, s = (e % 128) / 32, l = e % 32;
    int ql = (b->qs[h * 32 + l] >> (2 * s)) & 3;
    int hm = ((b->hmask[l] >> (e / 32)) & 1) ^ 1;
    y[e] = dl[e / 16] * (float)(ql - (hm << 2));
  }
}

/* Q4_K / Q5_K: 8 six-bit scales and mins packed in 12 bytes (quants.py Q4_K.get_scale_min). */
static void scale_min_k4(const uint8_t *s, uint8_t sc[8], uint8_t mn[8]) {
  for (int j = 0; j < 4; j++) {
    sc[j] = s[j] & 0x3F;
    mn[j] = s[j + 4] & 0x3F;
    sc[j + 4] = (uint8_t)((s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30));
    mn[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30));
  }
}

/* Q4_K: sub-block 2i is the low nibbles of qs[32i .. 32i+32), 2i + 1 the high ones. */
static void q4_k(const blk_q4_k *b, float *y) {
  const float d = h2f(b->d), dmin = h2f(b->dmin);
  uint8_t sc[8], mn[8];
  scale_min_k4(b->scales, sc, mn);
  for (int sb = 0; sb < 8; sb++) {
    const float ds = d * (float)sc[sb], dm = dmin * (float)mn[sb];
    for (int l = 0; l < 32; l++) {
      float p = ds * (float)((b->qs[(sb / 2) * 32 + l] >> (4 * (sb % 2))) & 0x0F);
      y[sb * 32 + l] = p - dm;
    }
  }
}

/* Q5_K: as Q4_K plus a fifth bit: bit sb of qh[l]. */
static void q5_k(const blk_q5_k *b, float *y) {
  const float d = h2f(b->d), dmin = h2f(b->dmin);
  uint8_t sc[8], mn[8];
  scale_min_k4(b->scales, sc, mn);
  for (int sb = 0; sb < 8; sb++) {
    const float ds = d * (float)sc[sb], dm = dmin * (float)mn[sb];
    for (int l = 0; l < 32; l++) {
      int q = ((b->qs[(sb / 2) * 32 + l] >> (4 * (sb % 2))) & 0x0F) | ((b->qh[l] >> sb) & 1) << 4;
      float p = ds * (float)q;
      y[sb * 32 + l] = p - dm;
    }
  }
}

/* Q6_K: element e = h*128 + r (h < 2): low nibble of ql[h*64 + r % 64] (shift 4 * (r / 64)),
 * high pair of qh[h*32 + r % 32] (shift 2 * (r / 32)); scale e / 16. */
static void q6_k(const blk_q6_k *b, float *y) {
  const float d = h2f(b->d);
  for (int e = 0; e < QK_K; e++) {
    int h = e / 128, r = e % 128;
    int ql = (b->ql[h * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
    int qh = (b->qh[h * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
    float ds = d * (float)b->scales[e / 16];
    y[e] = ds * (float)((ql | qh << 4) - 32);
  }
}

int qat_gguf_can_dequant(uint32_t t) {
  switch (t) {
  case QAT_GGML_F32: case QAT_GGML_F16: case QAT_GGML_BF16: case QAT_GGML_Q4_0:
  case QAT_GGML_Q4_1: case QAT_GGML_Q5_0: case QAT_GGML_Q5_1: case QAT_GGML_Q8_0:
  case QAT_GGML_Q2_K: case QAT_GGML_Q3_K: case QAT_GGML_Q4_K: case QAT_GGML_Q5_K:
  case QAT_GGML_Q6_K: return 1;
  default: return 0;
  }
}

/* One block type: copy each block out (alignment), decode into dst. */
#define BLOCKS(T, fn, QB)                                                                          \
  do {                                                                                             \
    const uint8_t *s = src;                                                                        \
    for (int64_t k = 0; k < n / (QB); k++) {                                                       \
      T blk;                                                                                       \
      memcpy(&blk, s + (size_t)k * sizeof blk, sizeof blk);                                        \
      fn(&blk, dst + k * (QB));                                                                    \
    }                                                                                              \
  } while (0)

qat_status qat_gguf_dequant(uint32_t type, const void *src, int64_t n, float *dst) {
  if (!qat_gguf_can_dequant(type))
    return QAT_FAIL(QAT_EUNSUPPORTED, "tensor type %s cannot be dequantized (F32, F16, BF16, "
                    "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K are)",
                    qat_ggml_type_name(type));
  int bs = qat_ggml_type_block(type);
  if (n < 0 || n % bs)
    return QAT_FAIL(QAT_EINVAL, "%s: %" PRId64 " elements is not a multiple of the block of %d",
                    qat_ggml_type_name(type), n, bs);
  const uint8_t *p = src;
  switch (type) {
  case QAT_GGML_F32: memcpy(dst, src, (size_t)n * 4); break;
  case QAT_GGML_F16:
    for (int64_t i = 0; i < n; i++)
      dst[i] = qat_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
    break;
  case QAT_GGML_BF16:
    for (int64_t i = 0; i < n; i++) {
      uint32_t b = (uint32_t)(p[2 * i] | p[2 * i + 1] << 8) << 16;
      memcpy(&dst[i], &b, 4);
    }
    break;
  case QAT_GGML_Q4_0: BLOCKS(blk_q4_0, q4_0, QK); break;
  case QAT_GGML_Q4_1: BLOCKS(blk_q4_1, q4_1, QK); break;
  case QAT_GGML_Q5_0: BLOCKS(blk_q5_0, q5_0, QK); break;
  case QAT_GGML_Q5_1: BLOCKS(blk_q5_1, q5_1, QK); break;
  case QAT_GGML_Q8_0: BLOCKS(blk_q8_0, q8_0, QK); break;
  case QAT_GGML_Q2_K: BLOCKS(blk_q2_k, q2_k, QK_K); break;
  case QAT_GGML_Q3_K: BLOCKS(blk_q3_k, q3_k, QK_K); break;
  case QAT_GGML_Q4_K: BLOCKS(blk_q4_k, q4_k, QK_K); break;
  case QAT_GGML_Q5_K: BLOCKS(blk_q5_k, q5_k, QK_K); break;
  case QAT_GGML_Q6_K: BLOCKS(blk_q6_k, q6_k, QK_K); break;
  }
  return QAT_OK;
}

qat_status qat_gguf_tensor_f32(const qat_gguf_file *f, const qat_gguf_tensor *t, float *dst) {
  qat_status st = qat_gguf_dequant(t->type, t->data, t->numel, dst);
  if (st != QAT_OK) return qat_context(st, "%s: tensor %s", f->path, t->name);
  return QAT_OK;
}
