/* CPU fake-quant ops: the plain-C reference the CUDA kernels (cuda/fakequant.cu) are tested
 * against. REFERENCE.md sections 1-2: uniform asymmetric / symmetric quantizer, RTN init,
 * STE for w and the LSQ+ / LSQ gradients of s and z.
 *
 * Dimensions: W[R, C]; groups along C (see backend.h), G = groups per row, s, z [R, G] or [1, 1].
 * Every group is one contiguous run of the row-major W: group (r, j) covers columns
 * [j*g, min((j+1)*g, C)) of row r; per-channel covers row r; per-tensor covers all of W.
 * OpenMP runs over rows; per-group sums accumulate in double (this is the reference).
 *
 * Rounding is round-half-to-even (rintf) and code clamps are written as comparisons so that a
 * NaN weight stays NaN in w_hat instead of being clamped to a finite code. */
#include "backend/cpu/qgeom.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- init: RTN / min-max ---------------------------------------------------------------------- */

/* From the group's min and max (asym) or max |w| (sym) to s and z, exactly as REFERENCE.md. */
static void init_from_range(const qgeom *p, float mn, float mx, float *s, float *z) {
  if (p->asym) {
    float sv = clampf((mx - mn) / p->hi, QAT_S_MIN, QAT_S_MAX);
    *s = sv;
    *z = rintf(-clampf(mn / sv, -1e4f, 1e4f)) + 0.0f; /* + 0: no -0 zero points */
  } else {
    float amax = fmaxf(fabsf(mn), fabsf(mx));
    *s = clampf(amax / p->hi, QAT_S_MIN, QAT_S_MAX);
  }
}

/* min and max of n floats; *finite &= all of them finite (one pass, comparisons vectorize). */
static void range_of(const float *x, int64_t n, float *mn, float *mx, int *finite) {
  float lo = x[0], hi = x[0];
  int ok = 1;
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
    ok &= fabsf(v) <= 3.402823466e38f; /* false for NaN and Inf */
  }
  *mn = lo;
  *mx = hi;
  *finite &= ok;
}

/* On error (a non-finite weight) s and z are unspecified. */
static qat_status cpu_fq_init(const qat_backend *be, const qat_qspec *q, const qat_tensor *w,
                              qat_tensor *s, qat_tensor *z) {
  QAT_TRY(qat_fq_check_args(be, "fq_init", q, w, s, z));
  qgeom p = qgeom_make(q, w->shape[0], w->shape[1]);
  const float *W = w->data; /* [R, C] */
  float *S = s->data, *Z = p.asym ? z->data : NULL;
  int64_t R = p.R, C = p.C;
  int finite = 1;
  float zdummy;
  if (p.pertensor) {
    float mn, mx;
    range_of(W, R * C, &mn, &mx, &finite);
    init_from_range(&p, mn, mx, &S[0], Z ? &Z[0] : &zdummy);
  } else {
#pragma omp parallel for schedule(static) reduction(& : finite)
    for (int64_t r = 0; r < R; r++) {
      for (int64_t j = 0; j < p.G; j++) {
        int64_t c0, c1, k = sidx(&p, r, j);
        float mn, mx, zd;
        group_cols(&p, j, &c0, &c1);
        range_of(W + r * C + c0, c1 - c0, &mn, &mx, &finite);
        init_from_range(&p, mn, mx, &S[k], Z ? &Z[k] : &zd);
      }
    }
  }
  if (!finite) { /* rare: find the first bad element for the message */
    int64_t i = 0;
    while (i < R * C && isfinite(W[i])) i++;
    return QAT_FAIL(QAT_EINVAL, "fq_init: tensor %s has a non-finite weight (%g) at [%lld, %lld]",
                    w->name ? w->name : "w", (double)W[i], (long long)(i / C), (long long)(i % C));
  }
  return QAT_OK;
}

/* ---- forward ---------------------------------------------------------------------------------- */

static qat_status cpu_fq_forward(const qat_backend *be, const qat_qspec *q, const qat_tensor *w,
                                 const qat_tensor *s, const qat_tensor *z, qat_tensor *w_hat) {
  QAT_TRY(qat_fq_check_args(be, "fq_forward", q, w, s, z));
  QAT_TRY(qat_fq_check_tensor(be, "fq_forward", "w_hat", w_hat,
                              (1u << QAT_F32) | (1u << QAT_BF16), w->shape[0], w->shape[1]));
  qgeom p = qgeom_make(q, w->shape[0], w->shape[1]);
  const float *W = w->data, *S = s->data, *Z = p.asym ? z->data : NULL;
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
        float code = clampf(rintf(W[i] / sv) + zt, p.lo, p.hi);
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

/* ---- backward --------------------------------------------------------------------------------- */

/* One group: dw = G inside I, 0 outside; returns sum G * dw^/ds (LSQ+ form) in *sum_ds and the sum
 * of G outside I in *sum_out (dz = -s~ * sum_out). */
static void group_backward(const qgeom *p, const float *W, const float *Gr, float *dW,
                           int64_t n, float sv, float zt, double *sum_ds, double *sum_out) {
  double ds = 0.0, out = 0.0;
  for (int64_t i = 0; i < n; i++) {
    float u = W[i] / sv, r = rintf(u), code = r + zt, g = Gr[i], d;
    int in = 0;
    if (code < p->lo) {
      d = p->lo - zt;
    } else if (code > p->hi) {
      d = p->hi - zt;
    } else {
      d = r - u; /* exact in float (Sterbenz) */
      in = 1;
    }
    if (dW) dW[i] = in ? g : 0.0f;
    ds += (double)g * d;
    if (!in) out += g;
  }
  *sum_ds = ds;
  *sum_out = out;
}

static qat_status cpu_fq_backward(const qat_backend *be, const qat_qspec *q, const qat_tensor *w,
                                  const qat_tensor *s, const qat_tensor *z, const qat_tensor *g,
                                  qat_tensor *dw, qat_tensor *ds, qat_tensor *dz) {
  const char *op = "fq_backward";
  QAT_TRY(qat_fq_check_args(be, op, q, w, s, z));
  int64_t R = w->shape[0], C = w->shape[1], ss[2];
  qat_qspec_sshape(q, R, C, ss);
  QAT_TRY(qat_fq_check_tensor(be, op, "g", g, 1u << QAT_F32, R, C));
  if (dw) QAT_TRY(qat_fq_check_tensor(be, op, "dw", dw, 1u << QAT_F32, R, C));
  int want_sz = q->grad != QAT_QGRAD_STE;
  if (!want_sz) ds = dz = NULL; /* STE: s and z get no gradient, nothing written */
  if (q->sym) dz = NULL;        /* no zero point */
  if (ds) QAT_TRY(qat_fq_check_tensor(be, op, "ds", ds, 1u << QAT_F32, ss[0], ss[1]));
  if (dz) QAT_TRY(qat_fq_check_tensor(be, op, "dz", dz, 1u << QAT_F32, ss[0], ss[1]));

  qgeom p = qgeom_make(q, R, C);
  const float *W = w->data, *S = s->data, *Z = p.asym ? z->data : NULL, *Gd = g->data;
  float *dW = dw ? dw->data : NULL, *dS = ds ? ds->data : NULL, *dZ = dz ? dz->data : NULL;
  int lsq = q->grad == QAT_QGRAD_LSQ;

  if (p.pertensor) {
    /* per-row partial sums, then a fixed-order total: deterministic for any thread count */
    double *part = malloc(sizeof(double) * 2 * (size_t)R);
    if (!part) return QAT_FAIL(QAT_ENOMEM, "%s: per-tensor partials for %lld rows", op, (long long)R);
    float sv = eff_scale(S[0]), zt = eff_zero(&p, Z, 0);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; r++)
      group_backward(&p, W + r * C, Gd + r * C, dW ? dW + r * C : NULL, C, sv, zt, &part[2 * r],
                     &part[2 * r + 1]);
    double sds = 0.0, sout = 0.0;
    for (int64_t r = 0; r < R; r++) {
      sds += part[2 * r];
      sout += part[2 * r + 1];
    }
    free(part);
    double gs = lsq ? 1.0 / sqrt((double)R * (double)C * p.qp) : 1.0;
    if (dS) dS[0] = (float)(sds * gs);
    if (dZ) dZ[0] = (float)(-(double)sv * sout * gs);
    return QAT_OK;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; r++) {
    for (int64_t j = 0; j < p.G; j++) {
      int64_t c0, c1, k = sidx(&p, r, j);
      group_cols(&p, j, &c0, &c1);
      float sv = eff_scale(S[k]), zt = eff_zero(&p, Z, k);
      double sds, sout;
      int64_t o = r * C + c0;
      group_backward(&p, W + o, Gd + o, dW ? dW + o : NULL, c1 - c0, sv, zt, &sds, &sout);
      double gs = lsq ? 1.0 / sqrt((double)(c1 - c0) * p.qp) : 1.0;
      if (dS) dS[k] = (float)(sds * gs);
      if (dZ) dZ[k] = (float)(-(double)sv * sout * gs);
    }
  }
  return QAT_OK;
}

void qat_cpu_register_quant(qat_backend *be) {
  be->fq_init = cpu_fq_init;
  be->fq_forward = cpu_fq_forward;
  be->fq_backward = cpu_fq_backward;
}
