/* GPTQ of one Linear (gptq.h). Linear algebra through the field's libraries: LAPACK's dpotrf /
 * dpotri (OpenBLAS ships LAPACK) for the Cholesky factor of H^-1, cblas_sgemm for the block
 * updates. Storage: W row-major [out, in] F32; H row-major [in, in] F64. LAPACK is column-major:
 * a symmetric matrix is the same in both, and a column-major lower factor L (A = L L^T) read
 * row-major is L^T, an upper factor U with A = U^T U - exactly the U GPTQ needs, rows
 * contiguous (U[i][j], j >= i, at H[i * in + j]). */
#include "quant/gptq.h"


#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK (Fortran symbols in OpenBLAS) */
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info);

/* H + damp * mean(diag) * I -> U (row-major upper, H^-1 = U^T U), in place. */
static qat_status inverse_factor(double *H, int64_t n, double damp) {
  double mean = 0;
  for (int64_t i = 0; i < n; i++) mean += H[i * n + i];
  mean /= (double)n;
  for (int64_t i = 0; i < n; i++) H[i * n + i] += damp * mean;
  int ni = (int)n, info = 0;
  dpotrf_("L", &ni, H, &ni, &info); /* H = L L^T (column-major lower) */
  if (info == 0) dpotri_("L", &ni, H, &ni, &info); /* H^-1, column-major lower triangle */
  if (info == 0) dpotrf_("L", &ni, H, &ni, &info); /* H^-1 = L2 L2^T: row-major U = L2^T */
  if (info != 0)
    return QAT_FAIL(QAT_EINVAL,
                    "gptq: the Hessian is not positive definite with damp %g (LAPACK info %d): "
                    "raise the damping or use more calibration data",
                    damp, info);
  for (int64_t i = 0; i < n; i++) /* clear the stale lower triangle (row-major) */
    for (int64_t j = 0; j < i; j++) H[i * n + j] = 0;
  return QAT_OK;
}

/* REFERENCE.md section 1's grid for one weight with step s and zero point z. */
static float grid(const qat_qspec *q, float w, float s, float z) {
  float st = fminf(fmaxf(s, 1e-4f), 1e4f);
  if (q->sym) {
    float qn = -(float)(1 << (q->bits - 1)), qp = (float)((1 << (q->bits - 1)) - 1);
    return fminf(fmaxf(nearbyintf(w / st), qn), qp) * st;
  }
  float qmax = (float)((1 << q->bits) - 1);
  float zt = fminf(fmaxf(nearbyintf(z), 0.0f), qmax);
  float c = fminf(fmaxf(nearbyintf(w / st) + zt, 0.0f), qmax);
  return (c - zt) * st;
}

/* s, z [rows, ngroups(cols)] of w [rows, cols] (host) by the spec's init: the CPU backend's
 * fq_init, without the fake-quant pass qat_quant_rtn_f32_sz would add; z zero when sym. */
static qat_status init_sz(const qat_qspec *q, const float *w, int64_t rows, int64_t cols,
                          float *s, float *z) {
  qat_backend *be = qat_backend_cpu();
  int64_t ss[2];
  qat_qspec_sshape(q, rows, cols, ss);
  qat_tensor tw = qat_view2((void *)w, QAT_F32, QAT_DEV_CPU, rows, cols);
  qat_tensor ts = qat_view2(s, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
  qat_tensor tz = qat_view2(z, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
  if (q->sym && z) memset(z, 0, (size_t)(ss[0] * ss[1]) * sizeof *z);
  return QAT_OP(be, fq_init, q, &tw, &ts, q->sym ? NULL : &tz);
}

/* s, z of columns [c0, c0 + g) (all rows) into column gi of s, z [out, ng]; tmp holds [out, g]
 * and the group's s, z. Columns before i2 are read from snap [out, i2 - i1] (the current block
 * as it was when the block began), later ones from W (which in-block updates never reach). */
static qat_status group_params(const qat_qspec *q, const float *W, int64_t out, int64_t in,
                               const float *snap, int64_t i1, int64_t i2, int64_t c0, int64_t g,
                               float *tmp, float *s, float *z, int64_t ng, int64_t gi) {
  for (int64_t r = 0; r < out; r++)
    for (int64_t c = c0; c < c0 + g; c++)
      tmp[r * g + c - c0] = c < i2 ? snap[r * (i2 - i1) + c - i1] : W[r * in + c];
  qat_qspec qg = *q;
  qg.group = (int)g;
  float *gs = tmp + out * g, *gz = gs + out; /* [out] each */
  QAT_TRY(init_sz(&qg, tmp, out, g, gs, gz));
  for (int64_t r = 0; r < out; r++) {
    s[r * ng + gi] = gs[r];
    if (z) z[r * ng + gi] = gz[r];
  }
  return QAT_OK;
}

/* Descending diag(H) order (ties: lower index first), as the reference's argsort. */
static const double *g_diag;
static int by_diag_desc(const void *a, const void *b) {
  int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
  if (g_diag[i] != g_diag[j]) return g_diag[i] > g_diag[j] ? -1 : 1;
  return i < j ? -1 : i > j;
}

/* The grids of every group from W as it is now (per-channel / per-tensor: over all of W). */
static qat_status static_params(const qat_qspec *q, const float *W, int64_t out, int64_t in,
                                int64_t g, int64_t ng, float *tmp, float *s, float *z) {
  if (q->group == 0) return init_sz(q, W, out, in, s, z);
  for (int64_t c = 0; c < in; c += g)
    QAT_TRY(group_params(q, W, out, in, NULL, 0, 0, c, in - c < g ? in - c : g, tmp, s, z, ng,
                         c / g));
  return QAT_OK;
}

/* The column loop over W [out, in] (loop order) with U (row-major upper factor of the loop-order
 * H^-1); loop column i uses group gcol[i] of s, z. dynamic: a group's grid is taken when the loop
 * reaches its first column (natural order; else all grids are set already). */
static qat_status column_loop(const qat_qspec *q, int64_t block, float *W, int64_t out, int64_t in,
                              const double *H, float *s, float *z, int64_t g, int64_t ng,
                              const int64_t *gcol, int dynamic, float *tmp, double *loss_out) {
  const int64_t B = block < in ? block : in;
  float *err = malloc((size_t)(out * B) * 4);  /* E [out, B] */
  float *u = malloc((size_t)(B * in) * 4);     /* U rows of the block, F32 */
  float *snap = malloc((size_t)(out * B) * 4); /* the block at its start */
  qat_status st = err && u && snap ? QAT_OK : QAT_FAIL(QAT_ENOMEM, "gptq: out of host memory");
  double loss = 0;
  for (int64_t i1 = 0; st == QAT_OK && i1 < in; i1 += B) {
    const int64_t i2 = i1 + B < in ? i1 + B : in, nb = i2 - i1;
    if (dynamic) {
      for (int64_t r = 0; r < out; r++) memcpy(snap + r * nb, W + r * in + i1, (size_t)nb * 4);
      /* the grids of the groups starting in this block: they read the block as it began and
       * later columns no in-block update reaches, so all can be taken now */
      for (int64_t i = i1; st == QAT_OK && i < i2; i++)
        if (i % g == 0)
          st = group_params(q, W, out, in, snap, i1, i2, i, in - i < g ? in - i : g, tmp, s, z,
                            ng, i / g);
      if (st != QAT_OK) break;
    }
    /* rows are independent inside a block: each runs the block's columns in order */
#pragma omp parallel for schedule(static) reduction(+ : loss)
    for (int64_t r = 0; r < out; r++) {
      float *wr = W + r * in;
      for (int64_t i = i1; i < i2; i++) {
        const double *Ui = H + i * in;
        const int64_t si = q->group == 0 ? 0 : r * ng + gcol[i];
        float w = wr[i], wh = grid(q, w, s[si], q->sym ? 0.0f : z[si]);
        double e = ((double)w - wh) / Ui[i];
        loss += e * e / 2;
        wr[i] = wh;
        err[r * nb + (i - i1)] = (float)e;
        for (int64_t j = i + 1; j < i2; j++) wr[j] -= (float)(e * Ui[j]);
      }
    }
    if (i2 == in) continue;
    /* W[:, i2:] -= E[out, nb] @ U[i1:i2, i2:] */
    for (int64_t k = 0; k < nb; k++)
      for (int64_t j = i2; j < in; j++) u[k * in + j] = (float)H[(i1 + k) * in + j];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)out, (int)(in - i2), (int)nb,
                -1.0f, err, (int)nb, u + i2, (int)in, 1.0f, W + i2, (int)in);
  }
  free(err);
  free(u);
  free(snap);
  *loss_out = loss;
  return st;
}

qat_status qat_gptq_linear(const qat_qspec *q, const qat_gptq_opts *o, float *W, int64_t out,
                           int64_t in, double *H, float *s, float *z, qat_gptq_stats *stats) {
  if (!q || !o || !W || !H || !s || (!z && !q->sym))
    return QAT_FAIL(QAT_EINVAL, "gptq: missing argument");
  QAT_TRY(qat_qspec_check(q));
  if (out < 1 || in < 1 || in > (1 << 20))
    return QAT_FAIL(QAT_EINVAL, "gptq: shape [%lld, %lld]", (long long)out, (long long)in);
  if (!(o->damp >= 0 && o->damp < 1) || o->block < 1)
    return QAT_FAIL(QAT_EINVAL, "gptq: damp %g (in [0, 1)), block %d (>= 1)", o->damp, o->block);
  for (int64_t i = 0; i < out * in; i++)
    if (!isfinite(W[i]))
      return QAT_FAIL(QAT_EINVAL, "gptq: non-finite weight %g at [%lld, %lld]", W[i],
                      (long long)(i / in), (long long)(i % in));
  for (int64_t i = 0; i < in * in; i++)
    if (!isfinite(H[i]))
      return QAT_FAIL(QAT_EINVAL, "gptq: non-finite Hessian entry at [%lld, %lld]",
                      (long long)(i / in), (long long)(i % in));
  qat_gptq_stats st0 = {0};
  for (int64_t i = 0; i < in; i++) {
    double d = H[i * in + i];
    if (d < 0) return QAT_FAIL(QAT_EINVAL, "gptq: negative Hessian diagonal %g at %lld", d,
                               (long long)i);
    if (d == 0) { /* an input that is always zero: its weights never matter */
      H[i * in + i] = 1;
      for (int64_t r = 0; r < out; r++) W[r * in + i] = 0;
      st0.dead++;
    }
  }
  int64_t ss[2];
  qat_qspec_sshape(q, out, in, ss);
  const int64_t ng = ss[1], g = q->group > 0 ? q->group : in;
  const int act = o->act_order != 0;
  float *tmp = malloc((size_t)(out * g + 2 * out) * 4 + 4); /* a group's columns + its s, z */
  int64_t *perm = malloc((size_t)in * 8), *gcol = malloc((size_t)in * 8);
  float *Wp = act ? malloc((size_t)(out * in) * 4) : W; /* W in loop order */
  double *Hp = act ? malloc((size_t)(in * in) * 8) : H; /* H in loop order */
  qat_status st = tmp && perm && gcol && Wp && Hp
                      ? QAT_OK
                      : QAT_FAIL(QAT_ENOMEM, "gptq: out of host memory");
  for (int64_t i = 0; st == QAT_OK && i < in; i++) perm[i] = i;
  if (st == QAT_OK && act) { /* columns by decreasing H[i,i]; static grids from W as given */
    double *dg = malloc((size_t)in * 8);
    if (!dg) st = QAT_FAIL(QAT_ENOMEM, "gptq: out of host memory");
    for (int64_t i = 0; st == QAT_OK && i < in; i++) dg[i] = H[i * in + i];
    if (st == QAT_OK) {
      g_diag = dg;
      qsort(perm, (size_t)in, sizeof *perm, by_diag_desc);
      st = static_params(q, W, out, in, g, ng, tmp, s, z);
    }
    free(dg);
    for (int64_t r = 0; st == QAT_OK && r < out; r++)
      for (int64_t i = 0; i < in; i++) Wp[r * in + i] = W[r * in + perm[i]];
    for (int64_t a = 0; st == QAT_OK && a < in; a++)
      for (int64_t b = 0; b < in; b++) Hp[a * in + b] = H[perm[a] * in + perm[b]];
  } else if (st == QAT_OK && q->group <= 0) {
    st = static_params(q, W, out, in, g, ng, tmp, s, z);
  }
  for (int64_t i = 0; st == QAT_OK && i < in; i++) gcol[i] = q->group > 0 ? perm[i] / g : 0;
  double loss = 0;
  if (st == QAT_OK) st = inverse_factor(Hp, in, o->damp);
  if (st == QAT_OK)
    st = column_loop(q, o->block, Wp, out, in, Hp, s, z, g, ng, gcol, !act && q->group > 0, tmp,
                     &loss);
  if (st == QAT_OK && act) /* back to the natural column order */
    for (int64_t r = 0; r < out; r++)
      for (int64_t i = 0; i < in; i++) W[r * in + perm[i]] = Wp[r * in + i];
  if (act) {
    free(Wp);
    free(Hp);
  }
  free(tmp);
  free(perm);
  free(gcol);
  if (st == QAT_OK && stats) {
    *stats = st0;
    stats->loss = loss;
  }
  return st;
}
