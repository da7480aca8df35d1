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
 * NaN weight stays NaN in w_hat instead of being clamped to a finite code.
 *
 * fq_init with q->init == QAT_QINIT_MSE searches QAT_MSE_STEPS shrunk ranges per group (backend.h
 * qat_qinit): each candidate is a full fake-quant pass over the group plus |e|^2.4, so the search
 * costs ~80 forwards; the per-element loop is written to vectorize (see mse_cand_err). */
#include "backend/cpu/qgeom.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- init: RTN / min-max ---------------------------------------------------------------------- */

/* From the group's min and max (asym) or max |w| (sym) to s and z, exactly as REFERENCE.md. */
/* Under scale_f16 s is rounded to F16 first and z derived from the rounded s, so the pair is
 * the one the forward will use (the MSE search scores its candidates the same way). */
static void init_from_range(const qgeom *p, float mn, float mx, float *s, float *z) {
  if (p->asym) {
    float sv = clampf((mx - mn) / p->hi, QAT_S_MIN, QAT_S_MAX);
    if (p->s16) sv = f16_scale(sv);
    *s = sv;
    *z = rintf(-clampf(mn / sv, -1e4f, 1e4f)) + 0.0f; /* + 0: no -0 zero points */
  } else {
    float amax = fmaxf(fabsf(mn), fabsf(mx));
    float sv = clampf(amax / p->hi, QAT_S_MIN, QAT_S_MAX);
    *s = p->s16 ? f16_scale(sv) : sv;
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

/* ---- init: MSE clipping search (semantics: backend.h, qat_qinit) ----------------------------- */

/* The per-element loop of a candidate must vectorize (a 7B model is ~6.5e9 weights x 80
 * candidates). GCC will not if-convert the float comparisons of the clamps under its default
 * -ftrapping-math, which only matters to code that traps on FP exceptions; qat never does, and
 * the option changes no result (no reassociation, no contraction), so it is lifted for the
 * functions between push and pop. Clang does not assume trapping math by default. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif

static inline float f_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static inline uint32_t u_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

/* rintf (round half to even) for finite x, inline: below 2^22 adding and removing 1.5 * 2^23
 * rounds to an integer in the current (nearest-even) mode; from 2^22 on, x is an integer or a
 * half that lies far outside every code range, so the clamp that follows gives the same code. */
static inline float rne_code(float x) {
  float a = fabsf(x), r = copysignf((a + 12582912.0f) - 12582912.0f, x);
  return a < 4194304.0f ? r : x;
}

/* x^2.4 for finite x >= 0 within 4e-7 relative of the exact power (powf(x, 2.4f) is off by up to
 * ~1e-6: 2.4f is not 2.4), in float without library calls so the loop vectorizes:
 * x = m 2^k with m in [sqrt(1/2), sqrt(2)); 2.4 k = q + r/5 with q = floor(12k / 5) (exact in
 * float for these k); x^2.4 = 2^q exp(2.4 ln m + r ln2 / 5), ln m from the atanh series in
 * t = (m - 1) / (m + 1) (|t| <= 0.172, 4 terms, truncation < 3e-8), exp as 2^n times the degree-7
 * Taylor polynomial on |f| <= ln2 / 2 (truncation < 6e-9). Polynomials in Estrin form: short
 * dependency chains, which is what bounds this loop's speed. Terms below 2^-52 (x^2.4 < 2^-124)
 * count as 0; above 2^53 the power overflows float and is +inf. */
static inline float pow24f(float x) {
  uint32_t b = u_bits(x);
  float m = f_bits((b & 0x7fffffu) | 0x3f800000u), mh = 0.5f * m;
  int big = m > 1.41421356f;
  m = big ? mh : m;
  float k12 = 12.0f * (float)((int)(b >> 23) - 127 + big), v = 0.2f * k12, q = rne_code(v);
  q = q > v ? q - 1.0f : q; /* floor: v is an integer or at least 0.2 away from one */
  float r = k12 - 5.0f * q;
  float t = (m - 1.0f) / (m + 1.0f), t2 = t * t, t4 = t2 * t2;
  float lnm = t * ((2.0f + 0.6666667f * t2) + t4 * (0.4f + 0.2857143f * t2));
  float y = 2.4f * lnm + r * 0.13862944f; /* + r ln2 / 5 */
  float n = rne_code(y * 1.44269504f), f = y - n * 0.69314718f, f2 = f * f, f4 = f2 * f2;
  float e = ((1.0f + f) + f2 * (0.5f + 0.16666667f * f)) +
            f4 * ((0.041666668f + 0.0083333338f * f) + f2 * (0.0013888889f + 1.984127e-4f * f));
  float res = f_bits(u_bits(e) + ((uint32_t)(int)(q + n) << 23));
  res = x > 0x1p53f ? INFINITY : res;
  return x < 0x1p-52f ? 0.0f : res;
}

enum { MSE_CHUNK = 16, MSE_LANES = 8 };

static inline double lanes_total(const double *lane, double tail) {
  for (int j = 0; j < MSE_LANES; j++) tail += lane[j];
  return tail;
}

/* err = sum over x[n] of |w_hat - x|^2.4 (double) for the candidate (sv, zt), w_hat the
 * forward's (code - zt) * sv with code = clamp(round(x / sv) + zt, lo, hi). MSE_LANES running
 * sums in a fixed order keep it deterministic and vectorizable. Every term is >= 0, so once the
 * partial total reaches `stop` the final one cannot be below it: returns early (a value >= stop),
 * which is exact for a strict "<" comparison against stop. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
__attribute__((target_clones("avx2", "default"))) /* 8 lanes where the CPU has them; same result */
#endif
static double mse_cand_err(const float *x, int64_t n, float sv, float zt, float lo, float hi,
                           double stop) {
  double lane[MSE_LANES] = {0}, tail = 0;
  float t[MSE_CHUNK];
  for (int64_t c0 = 0; c0 < n; c0 += MSE_CHUNK) {
    int m = (int)(n - c0 < MSE_CHUNK ? n - c0 : MSE_CHUNK);
    const float *xc = x + c0;
    for (int i = 0; i < m; i++) {
      float code = rne_code(xc[i] / sv) + zt;
      code = code < lo ? lo : code;
      code = code > hi ? hi : code;
      t[i] = pow24f(fabsf((code - zt) * sv - xc[i]));
    }
    int i = 0;
    for (; i + MSE_LANES <= m; i += MSE_LANES)
      for (int j = 0; j < MSE_LANES; j++) lane[j] += t[i + j];
    for (; i < m; i++) tail += t[i];
    if (c0 + MSE_CHUNK < n && lanes_total(lane, tail) >= stop) return lanes_total(lane, tail);
  }
  return lanes_total(lane, tail);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

/* Shrink factor of candidate i: 1 - i / grid rounded once to float (i = 0: exactly 1). */
static float mse_shrink(int i) { return (float)(1.0 - (double)i / QAT_MSE_GRID); }

/* Candidate i of a group with range [mn, mx]: s, z as init_from_range makes them, and z~. */
static void mse_candidate(const qgeom *p, int i, float mn, float mx, float *s, float *z,
                          float *zt) {
  float sh = mse_shrink(i);
  *z = 0.0f;
  init_from_range(p, sh * mn, sh * mx, s, z);
  *zt = p->asym ? clampf(rintf(*z), 0.0f, p->hi) : 0.0f;
}

/* One contiguous group x[n] with range [mn, mx] (finite): the best candidate's s (and z). */
static void mse_group(const qgeom *p, const float *x, int64_t n, float mn, float mx, float *s,
                      float *z) {
  double best = INFINITY;
  for (int i = 0; i < QAT_MSE_STEPS; i++) {
    float sc, zc, zt;
    mse_candidate(p, i, mn, mx, &sc, &zc, &zt);
    double err = mse_cand_err(x, n, sc, zt, p->lo, p->hi, best);
    if (i == 0 || err < best) { /* i = 0 (min-max) always stands, even at an infinite error */
      best = err;
      *s = sc;
      *z = zc;
    }
  }
}

/* Per-tensor: one group spanning all rows of W[R, C]; each candidate's error is a fixed-order sum
 * of per-row errors computed in parallel (part[R] scratch). */
static void mse_tensor(const qgeom *p, const float *W, float mn, float mx, double *part, float *s,
                       float *z) {
  double best = INFINITY;
  for (int i = 0; i < QAT_MSE_STEPS; i++) {
    float sc, zc, zt;
    mse_candidate(p, i, mn, mx, &sc, &zc, &zt);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < p->R; r++)
      part[r] = mse_cand_err(W + r * p->C, p->C, sc, zt, p->lo, p->hi, INFINITY);
    double err = 0.0;
    for (int64_t r = 0; r < p->R; r++) err += part[r];
    if (i == 0 || err < best) {
      best = err;
      *s = sc;
      *z = zc;
    }
  }
}

/* On error (a non-finite weight) s and z are unspecified. */
static qat_status cpu_fq_init(const qat_backend *be, const qat_qspec *q, const qat_tensor *w,
                              qat_tensor *s, qat_tensor *z) {
  QAT_TRY(qat_fq_check_args(be, "fq_init", q, w, s, z));
  qgeom p = qgeom_make(q, w->shape[0], w->shape[1]);
  const float *W = w->data; /* [R, C] */
  float *S = s->data, *Z = p.asym ? z->data : NULL;
  int64_t R = p.R, C = p.C;
  int finite = 1, mse = q->init == QAT_QINIT_MSE;
  float zdummy;
  if (p.pertensor) {
    float mn, mx;
    range_of(W, R * C, &mn, &mx, &finite);
    if (mse && finite) {
      double *part = malloc(sizeof(double) * (size_t)R);
      if (!part)
        return QAT_FAIL(QAT_ENOMEM, "fq_init: per-tensor partials for %lld rows", (long long)R);
      mse_tensor(&p, W, mn, mx, part, &S[0], Z ? &Z[0] : &zdummy);
      free(part);
    } else {
      init_from_range(&p, mn, mx, &S[0], Z ? &Z[0] : &zdummy);
    }
  } else {
#pragma omp parallel for schedule(static) reduction(& : finite)
    for (int64_t r = 0; r < R; r++) {
      for (int64_t j = 0; j < p.G; j++) {
        int64_t c0, c1, k = sidx(&p, r, j);
        float mn, mx, zd;
        int ok = 1;
        group_cols(&p, j, &c0, &c1);
        range_of(W + r * C + c0, c1 - c0, &mn, &mx, &ok);
        finite &= ok;
        if (mse && ok)
          mse_group(&p, W + r * C + c0, c1 - c0, mn, mx, &S[k], Z ? &Z[k] : &zd);
        else
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

/* ---- F16 grid of the step sizes (backend.h fq_scale_f16) ------------------------------------ */

static qat_status cpu_fq_scale_f16(const qat_backend *be, qat_tensor *s) {
  if (!s || (!s->data && qat_numel(s) > 0))
    return QAT_FAIL(QAT_EINVAL, "fq_scale_f16: tensor s is missing");
  if (s->dtype != QAT_F32 || s->device != be->device)
    return QAT_FAIL(QAT_EINVAL, "fq_scale_f16: tensor %s must be F32 on the %s backend",
                    s->name ? s->name : "s", be->name);
  float *S = s->data;
  int64_t n = qat_numel(s);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) S[i] = f16_scale(S[i]);
  return QAT_OK;
}

void qat_cpu_register_quant(qat_backend *be) {
  be->fq_scale_f16 = cpu_fq_scale_f16;
  be->fq_init = cpu_fq_init;
  be->fq_forward = cpu_fq_forward;
  be->fq_backward = cpu_fq_backward;
}
