/* CPU ops on frozen integer codes (EfficientQAT E2E-QP, REFERENCE.md section 3): the plain-C
 * reference for cuda/codes.cu.
 *   fq_codes:    codes[R, C] U8 = the code q fq_forward uses for w (sym: q + 2^(bits-1))
 *   dq_forward:  w_hat[R, C] = (q - z~) * s~                       (F32 or BF16)
 *   dq_backward: ds[R, G] = sum over the group of g * (q - z~)     (g F32 or BF16)
 * Group layout as host/backend/cpu/fakequant.c: group (r, j) is columns [j*g, min((j+1)*g, C))
 * of row r; per-channel is row r; per-tensor is all of W with s, z [1, 1].
 *
 * Bit-exactness with fq_forward: the float code is rebuilt exactly ((float)u8 - offset is an
 * integer below 2^8) and multiplied the same way, (code - z~) * s~, so
 * dq_forward(fq_codes(w)) == fq_forward(w) bit for bit (tests/test_codes.c). A NaN code (NaN
 * weight or scale) has no U8 value: fq_codes refuses it, naming the tensor and position. */
#include "backend/cpu/qgeom.h"

#include <math.h>
#include <stdlib.h>

#define FLOATS ((1u << QAT_F32) | (1u << QAT_BF16))



/* ---- fq_codes ------------------------------------------------------------------------------ */

static qat_status cpu_fq_codes(const qat_backend *be, const qat_qspec *q, const qat_tensor *w,
                               const qat_tensor *s, const qat_tensor *z, qat_tensor *codes) {
  QAT_TRY(qat_fq_check_args(be, "fq_codes", q, w, s, z));
  QAT_TRY(qat_fq_check_tensor(be, "fq_codes", "codes", codes, 1u << QAT_U8, w->shape[0],
                              w->shape[1]));
  qgeom p = qgeom_make(q, w->shape[0], w->shape[1]);
  const float *W = w->data, *S = s->data, *Z = p.asym ? z->data : NULL;
  uint8_t *Q = codes->data;
  int64_t R = p.R, C = p.C;
  int64_t bad = -1; /* smallest flat index of a NaN code */
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; r++) {
    int64_t row_bad = -1;
    for (int64_t j = 0; j < p.G; j++) {
      int64_t c0, c1, k = sidx(&p, r, j);
      group_cols(&p, j, &c0, &c1);
      float sv = eff_scale(S[k]), zt = eff_zero(&p, Z, k);
      for (int64_t c = c0; c < c1; c++) {
        int64_t i = r * C + c;
        float code = clampf(rintf(W[i] / sv) + zt, p.lo, p.hi); /* exactly fq_forward's */
        if (code != code) {
          if (row_bad < 0) row_bad = i;
          Q[i] = 0;
          continue;
        }
        Q[i] = (uint8_t)(code + p.off);
      }
    }
    if (row_bad >= 0) {
#pragma omp critical(qat_fq_codes_bad)
      if (bad < 0 || row_bad < bad) bad = row_bad;
    }
  }
  if (bad >= 0) {
    int64_t k = sidx(&p, bad / C, p.pertensor ? 0 : (bad % C) / p.glen);
    return QAT_FAIL(QAT_EINVAL,
                    "fq_codes: tensor %s has no integer code at [%lld, %lld] (weight %g, scale %g)",
                    w->name ? w->name : "w", (long long)(bad / C), (long long)(bad % C),
                    (double)W[bad], (double)S[k]);
  }
  return QAT_OK;
}

/* ---- dq_forward / dq_backward ---------------------------------------------------------------- */

static qat_status cpu_dq_forward(const qat_backend *be, const qat_qspec *q,
                                 const qat_tensor *codes, const qat_tensor *s,
                                 const qat_tensor *z, qat_tensor *w_hat) {
  if (!s) return QAT_FAIL(QAT_EINVAL, "dq_forward: tensor s is missing");
  QAT_TRY(qat_codes_check_args(be, "dq_forward", q, codes, s, z));
  QAT_TRY(qat_fq_check_tensor(be, "dq_forward", "w_hat", w_hat, FLOATS, codes->shape[0],
                              codes->shape[1]));
  qgeom p = qgeom_make(q, codes->shape[0], codes->shape[1]);
  const uint8_t *Q = codes->data;
  const float *S = s->data, *Z = p.asym ? z->data : NULL;
  int bf16 = w_hat->dtype == QAT_BF16;
  int64_t R = p.R, C = p.C;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; r++) {
    for (int64_t j = 0; j < p.G; j++) {
      int64_t c0, c1, k = sidx(&p, r, j);
      group_cols(&p, j, &c0, &c1);
      float sv = eff_scale(S[k]), zt = eff_zero(&p, Z, k);
      for (int64_t c = c0; c < c1; c++) {
        int64_t i = r * C + c;
        float code = (float)Q[i] - p.off; /* exact */
        float v = (code - zt) * sv;
        if (bf16)
          ((uint16_t *)w_hat->data)[i] = qat_f32_to_bf16(v);
        else
          ((float *)w_hat->data)[i] = v;
      }
    }
  }
  return QAT_OK;
}

/* sum of g * (code - zt) over elements [i0, i1) of the flat arrays, in double. */
static double group_ds(const qgeom *p, const uint8_t *Q, const void *g, int bf16, int64_t i0,
                       int64_t i1, float zt) {
  double acc = 0.0;
  for (int64_t i = i0; i < i1; i++) {
    float gv = bf16 ? qat_bf16_to_f32(((const uint16_t *)g)[i]) : ((const float *)g)[i];
    float d = ((float)Q[i] - p->off) - zt; /* exact small integer */
    acc += (double)gv * d;
  }
  return acc;
}

static qat_status cpu_dq_backward(const qat_backend *be, const qat_qspec *q,
                                  const qat_tensor *codes, const qat_tensor *z,
                                  const qat_tensor *g, qat_tensor *ds) {
  const char *op = "dq_backward";
  QAT_TRY(qat_codes_check_args(be, op, q, codes, NULL, z));
  int64_t R = codes->shape[0], C = codes->shape[1], ss[2];
  qat_qspec_sshape(q, R, C, ss);
  QAT_TRY(qat_fq_check_tensor(be, op, "g", g, FLOATS, R, C));
  QAT_TRY(qat_fq_check_tensor(be, op, "ds", ds, 1u << QAT_F32, ss[0], ss[1]));
  qgeom p = qgeom_make(q, R, C);
  const uint8_t *Q = codes->data;
  const float *Z = p.asym ? z->data : NULL;
  float *dS = ds->data;
  int bf16 = g->dtype == QAT_BF16;
  if (p.pertensor) {
    /* per-row partials, then a fixed-order total: the same result for any thread count */
    double *part = malloc(sizeof(double) * (size_t)R);
    if (!part) return QAT_FAIL(QAT_ENOMEM, "%s: per-tensor partials for %lld rows", op, (long long)R);
    float zt = eff_zero(&p, Z, 0);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; r++) part[r] = group_ds(&p, Q, g->data, bf16, r * C, (r + 1) * C, zt);
    double tot = 0.0;
    for (int64_t r = 0; r < R; r++) tot += part[r];
    free(part);
    dS[0] = (float)tot;
    return QAT_OK;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; r++) {
    for (int64_t j = 0; j < p.G; j++) {
      int64_t c0, c1, k = sidx(&p, r, j);
      group_cols(&p, j, &c0, &c1);
      dS[k] = (float)group_ds(&p, Q, g->data, bf16, r * C + c0, r * C + c1, eff_zero(&p, Z, k));
    }
  }
  return QAT_OK;
}

void qat_cpu_register_codes(qat_backend *be) {
  be->fq_codes = cpu_fq_codes;
  be->dq_forward = cpu_dq_forward;
  be->dq_backward = cpu_dq_backward;
}
