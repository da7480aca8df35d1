/* qat packed -> GPTQ gptq_v2 tensors (layout in quant/packed_gptq.h). */
#include "quant/packed_gptq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void qat_gptq_tensors_free(qat_gptq_tensors *t) {
  free(t->qweight);
  free(t->qzeros);
  free(t->scales);
  free(t->g_idx);
  memset(t, 0, sizeof *t);
}

qat_status qat_packed_to_gptq(const qat_packed *p, const char *name, qat_gptq_tensors *o) {
  memset(o, 0, sizeof *o);
  int b = p->bits;
  int64_t N = p->N, K = p->K, G = p->G;
  if (b != 2 && b != 3 && b != 4 && b != 8)
    return QAT_FAIL(QAT_EUNSUPPORTED, "gptq export: %s has %d bits (GPTQ packs 2, 3, 4, 8)", name, b);
  if ((K * b) % 32 || (N * b) % 32)
    return QAT_FAIL(QAT_EUNSUPPORTED,
                    "gptq export: %s [%lld, %lld] at %d bits: in and out features times bits must "
                    "be multiples of 32 (whole int32 words)",
                    name, (long long)N, (long long)K, b);
  int64_t KW = K * b / 32, NW = N * b / 32;
  o->K = K;
  o->N = N;
  o->G = G;
  o->qweight = malloc(sizeof(uint32_t) * (size_t)(KW * N));
  o->qzeros = calloc((size_t)(G * NW) + 2, sizeof(uint32_t)); /* + 2: the put below spills */
  o->scales = malloc(sizeof(uint16_t) * (size_t)(G * N));
  o->g_idx = malloc(sizeof(int32_t) * (size_t)K);
  if (!o->qweight || !o->qzeros || !o->scales || !o->g_idx) {
    qat_gptq_tensors_free(o);
    return QAT_FAIL(QAT_ENOMEM, "gptq export: %s: out of memory", name);
  }
  /* qweight: row n's stream is K*b/32 whole words (row_bytes == KW * 4 here), transposed */
  for (int64_t n = 0; n < N; n++)
    for (int64_t r = 0; r < KW; r++) {
      uint32_t w;
      memcpy(&w, p->codes + n * p->row_bytes + r * 4, 4);
      o->qweight[r * N + n] = w;
    }
  double worst = 0;
  for (int64_t j = 0; j < G; j++) {
    uint8_t *zrow = (uint8_t *)(o->qzeros + j * NW);
    for (int64_t n = 0; n < N; n++) {
      float s = qat_packed_scale(p, n, j);
      uint16_t h = p->sdtype == QAT_F16 ? ((const uint16_t *)p->scales)[n * G + j] : qat_f32_to_f16(s);
      o->scales[j * N + n] = h;
      float zp = qat_packed_zp(p, n, j);
      qat_packed_put(zrow, b, n, (unsigned)zp); /* words little-endian: bytes in order */
      /* the weight change itself, over the group's codes, in float32 as a reader computes
       * w = s * (q - z) (0 when s is an F16 number) */
      const float s16 = qat_f16_to_f32(h);
      if (s16 == s) continue;
      const uint8_t *row = p->codes + n * p->row_bytes;
      for (int64_t k = j * p->group; k < (j + 1) * p->group; k++) {
        float c = (float)qat_packed_get(row, b, k) - zp;
        double e = fabs((double)(c * s16) - (double)(c * s));
        if (e > worst) worst = e;
      }
    }
  }
  for (int64_t k = 0; k < K; k++) o->g_idx[k] = (int32_t)(k / p->group);
  o->max_err = worst;
  return QAT_OK;
}
