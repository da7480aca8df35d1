/* qat packed -> GGUF Q4_0 / Q4_1 / Q8_0 blocks (layout and mapping in quant/packed_gguf.h). */
#include "quant/packed_gguf.h"

#include "io/gguf.h"

#include <math.h>
#include <string.h>

qat_status qat_gguf_qtype(int bits, int sym, int64_t group, int64_t K, const char *name,
                          uint32_t *type) {
  if (group <= 0 || group % QAT_GGUF_QBLOCK || K % QAT_GGUF_QBLOCK)
    return QAT_FAIL(QAT_EUNSUPPORTED,
                    "gguf export: %s: group %lld of %lld in features: llama.cpp's Q4_0 / Q4_1 / "
                    "Q8_0 hold one scale per 32 weights, so the group must be a multiple of 32",
                    name, (long long)group, (long long)K);
  if (bits >= 2 && bits <= 3) *type = QAT_GGML_Q4_0;
  else if (bits == 4) *type = sym ? QAT_GGML_Q4_0 : QAT_GGML_Q4_1;
  else if (bits >= 5 && bits <= 7) *type = QAT_GGML_Q8_0;
  else if (bits == 8 && sym) *type = QAT_GGML_Q8_0;
  else if (bits == 8)
    return QAT_FAIL(QAT_EUNSUPPORTED,
                    "gguf export: %s: 8-bit asymmetric codes minus zero points span -255..255, "
                    "beyond Q8_0's int8 (quantize with --sym / quant.sym: true)", name);
  else
    return QAT_FAIL(QAT_EUNSUPPORTED, "gguf export: %s: %d bits has no GGUF image", name, bits);
  return QAT_OK;
}

/* F16 of x, or -1 (as an int) when it overflows. */
static int f16_of(float x, uint16_t *h) {
  *h = qat_f32_to_f16(x);
  return isfinite(qat_f16_to_f32(*h)) ? 0 : -1;
}

/* Largest |w_gguf - w_qat| over one block: w_gguf as the gguf package computes it, in float32
 * (-ffp-contract=off: no fused d * q + m), w_qat = (code - zp) * s. c[i] = code - zp. */
static double block_err(uint32_t type, const int *c, int zp, float s, float d, float m) {
  double worst = 0;
  for (int i = 0; i < QAT_GGUF_QBLOCK; i++) {
    float qv = type == QAT_GGML_Q4_1 ? (float)(c[i] + zp) : (float)c[i];
    float wg = d * qv;
    if (type == QAT_GGML_Q4_1) wg = wg + m;
    double e = fabs((double)wg - (double)((float)c[i] * s));
    if (e > worst) worst = e;
  }
  return worst;
}

/* Q4_1's F16 pair: d = s and m = -s z would be exact, but both round. The error of a code q is
 * (d - s) q + (m + s z), linear in q, so for a rounded d the best real m centres it over the
 * block's codes: m* = -s z - (d - s)(qlo + qhi) / 2. Candidates: d = f16(s) and its two F16
 * neighbours; m = f16(-s z), f16(m*) and the latter's neighbours; the pair with the smallest
 * largest error over the block wins, the plain rounding (*dh, *mh on entry) on ties, so an exact
 * pair (F16 s, F16-representable s z) stays exact. */
static void q41_pair(const int *c, int zp, float s, uint16_t *dh, uint16_t *mh) {
  int lo = 15, hi = 0;
  for (int i = 0; i < QAT_GGUF_QBLOCK; i++) {
    int q = c[i] + zp;
    if (q < lo) lo = q;
    if (q > hi) hi = q;
  }
  double best = block_err(QAT_GGML_Q4_1, c, zp, s, qat_f16_to_f32(*dh), qat_f16_to_f32(*mh));
  const uint16_t d0 = *dh, m0 = *mh;
  for (int dd = -1; dd <= 1 && best > 0; dd++) {
    uint16_t dc = (uint16_t)(d0 + dd);
    float d = qat_f16_to_f32(dc);
    if (!(d > 0) || !isfinite(d)) continue;
    float ms = (float)(-(double)s * zp - ((double)d - s) * (lo + hi) / 2);
    uint16_t mr = qat_f32_to_f16(ms);
    const uint16_t mcand[4] = {m0, mr, (uint16_t)(mr - 1), (uint16_t)(mr + 1)};
    for (int k = 0; k < 4; k++) {
      float m = qat_f16_to_f32(mcand[k]);
      if (!isfinite(m)) continue;
      double e = block_err(QAT_GGML_Q4_1, c, zp, s, d, m);
      if (e < best) best = e, *dh = dc, *mh = mcand[k];
    }
  }
}

qat_status qat_packed_to_gguf(const qat_packed *p, const int64_t *rows, uint32_t type, void *dst,
                              double *max_err, const char *name) {
  uint32_t want;
  QAT_TRY(qat_gguf_qtype(p->bits, p->sym, p->group, p->K, name, &want));
  if (want != type)
    return QAT_FAIL(QAT_EINVAL, "gguf export: %s: %s asked for W%d %s codes (%s expected)", name,
                    qat_ggml_type_name(type), p->bits, p->sym ? "sym" : "asym",
                    qat_ggml_type_name(want));
  const int64_t nb = p->K / QAT_GGUF_QBLOCK; /* blocks per row */
  double worst = 0;
  uint8_t *out = dst;
  const size_t bsz = type == QAT_GGML_Q4_0 ? sizeof(qat_block_q4_0)
                     : type == QAT_GGML_Q4_1 ? sizeof(qat_block_q4_1)
                                             : sizeof(qat_block_q8_0);
  for (int64_t r = 0; r < p->N; r++) {
    const int64_t n = rows ? rows[r] : r;
    const uint8_t *row = p->codes + n * p->row_bytes;
    for (int64_t b = 0; b < nb; b++, out += bsz) {
      const int64_t k0 = b * QAT_GGUF_QBLOCK, j = k0 / p->group;
      const float s = qat_packed_scale(p, n, j), zp = qat_packed_zp(p, n, j);
      int c[QAT_GGUF_QBLOCK]; /* code - zp */
      for (int i = 0; i < QAT_GGUF_QBLOCK; i++)
        c[i] = (int)qat_packed_get(row, p->bits, k0 + i) - (int)zp;
      uint16_t dh, mh = 0;
      if (f16_of(s, &dh))
        return QAT_FAIL(QAT_EINVAL, "gguf export: %s: row %lld group %lld: scale %g overflows F16",
                        name, (long long)n, (long long)j, s);
      if (type == QAT_GGML_Q4_1) {
        if (f16_of(-s * zp, &mh))
          return QAT_FAIL(QAT_EINVAL, "gguf export: %s: row %lld group %lld: min -s*z = %g "
                          "overflows F16", name, (long long)n, (long long)j, -s * zp);
        q41_pair(c, (int)zp, s, &dh, &mh);
      }
      const float d = qat_f16_to_f32(dh), m = qat_f16_to_f32(mh);
      const double e = block_err(type, c, (int)zp, s, d, m);
      if (e > worst) worst = e;
      if (type == QAT_GGML_Q4_0) {
        qat_block_q4_0 q; /* built here and copied: blocks of 18 bytes are not 2-aligned */
        q.d = dh;
        for (int i = 0; i < 16; i++)
          q.qs[i] = (uint8_t)((c[i] + 8) | (c[i + 16] + 8) << 4);
        memcpy(out, &q, sizeof q);
      } else if (type == QAT_GGML_Q4_1) {
        qat_block_q4_1 q;
        q.d = dh;
        q.m = mh;
        for (int i = 0; i < 16; i++) /* back to the raw codes 0..15 */
          q.qs[i] = (uint8_t)((c[i] + (int)zp) | (c[i + 16] + (int)zp) << 4);
        memcpy(out, &q, sizeof q);
      } else {
        qat_block_q8_0 q;
        q.d = dh;
        for (int i = 0; i < QAT_GGUF_QBLOCK; i++)
          q.qs[i] = (int8_t)c[i];
        memcpy(out, &q, sizeof q);
      }
    }
  }
  *max_err = worst;
  return QAT_OK;
}
