/* Packed low-bit weights: allocation, pack / unpack against the fake-quant grid, dequant
 * reference, safetensors form. Layout and accessors: quant/packed_layout.h. */
#include "quant/packed.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *zalloc(size_t n) { return calloc(1, n + QAT_PACKED_SLACK); }

qat_status qat_packed_alloc(qat_packed *p, const qat_qspec *q, int64_t N, int64_t K,
                            qat_dtype sdtype, const char *name) {
  memset(p, 0, sizeof *p);
  name = name ? name : "w";
  if (q->bits < 2 || q->bits > 8)
    return QAT_FAIL(QAT_EUNSUPPORTED, "packed %s: %d bits (2..8 are packed)", name, q->bits);
  if (N <= 0 || K <= 0)
    return QAT_FAIL(QAT_EINVAL, "packed %s: shape [%lld, %lld]", name, (long long)N, (long long)K);
  if (q->group == 0)
    return QAT_FAIL(QAT_EUNSUPPORTED, "packed %s: per-tensor scales are not a packed format",
                    name);
  int64_t g = q->group < 0 ? K : q->group;
  if (K % g != 0)
    return QAT_FAIL(QAT_EUNSUPPORTED,
                    "packed %s: group %lld does not divide the %lld input columns (packed formats "
                    "need whole groups)",
                    name, (long long)g, (long long)K);
  if (sdtype != QAT_F32 && sdtype != QAT_F16)
    return QAT_FAIL(QAT_EUNSUPPORTED, "packed %s: scale dtype %s (F32 or F16)", name,
                    qat_dtype_name(sdtype));
  p->bits = q->bits;
  p->group = (int32_t)g;
  p->sym = q->sym != 0;
  p->sdtype = sdtype;
  p->N = N;
  p->K = K;
  p->G = K / g;
  p->row_bytes = qat_packed_stream_bytes(K, q->bits);
  p->zrow_bytes = p->sym ? 0 : qat_packed_stream_bytes(p->G, q->bits);
  p->codes = zalloc((size_t)(N * p->row_bytes));
  p->scales = zalloc((size_t)(N * p->G) * (sdtype == QAT_F16 ? 2 : 4));
  if (!p->sym) p->zeros = zalloc((size_t)(N * p->zrow_bytes));
  if (!p->codes || !p->scales || (!p->sym && !p->zeros)) {
    qat_packed_free(p);
    return QAT_FAIL(QAT_ENOMEM, "packed %s: cannot allocate [%lld, %lld]", name, (long long)N,
                    (long long)K);
  }
  return QAT_OK;
}

void qat_packed_free(qat_packed *p) {
  free(p->codes);
  free(p->zeros);
  free(p->scales);
  memset(p, 0, sizeof *p);
}

qat_status qat_packed_pack(qat_packed *p, const uint8_t *codes, const float *s, const float *z,
                           const char *name) {
  name = name ? name : "w";
  int b = p->bits;
  unsigned qmax = (1u << b) - 1u;
  if (!p->sym && !z) return QAT_FAIL(QAT_EINVAL, "packed %s: asymmetric without zeros", name);
  memset(p->codes, 0, (size_t)(p->N * p->row_bytes));
  if (p->zeros) memset(p->zeros, 0, (size_t)(p->N * p->zrow_bytes));
  for (int64_t n = 0; n < p->N; n++) {
    for (int64_t j = 0; j < p->G; j++) {
      int64_t i = n * p->G + j;
      float sv = s[i];
      /* The guard: fq_forward would clamp a zero or negative s up to 1e-4, silently giving a
       * grid the training never saw; a packed file must not carry one. */
      if (!(sv > 0.0f) || !isfinite(sv))
        return QAT_FAIL(QAT_EINVAL, "packed %s: scale %g at [%lld, %lld] is not a positive number",
                        name, (double)sv, (long long)n, (long long)j);
      sv = sv < QAT_S_MIN ? QAT_S_MIN : (sv > QAT_S_MAX ? QAT_S_MAX : sv);
      if (p->sdtype == QAT_F16)
        ((uint16_t *)p->scales)[i] = qat_f32_to_f16(sv);
      else
        ((float *)p->scales)[i] = sv;
      if (!p->sym) {
        float zv = z[i];
        if (zv != zv)
          return QAT_FAIL(QAT_EINVAL, "packed %s: zero point NaN at [%lld, %lld]", name,
                          (long long)n, (long long)j);
        zv = rintf(zv);
        zv = zv < 0.0f ? 0.0f : (zv > (float)qmax ? (float)qmax : zv);
        qat_packed_put(p->zeros + n * p->zrow_bytes, b, j, (unsigned)zv);
      }
    }
    uint8_t *row = p->codes + n * p->row_bytes;
    const uint8_t *c = codes + n * p->K;
    for (int64_t k = 0; k < p->K; k++) {
      if (c[k] > qmax)
        return QAT_FAIL(QAT_EINVAL, "packed %s: code %u at [%lld, %lld] exceeds %d bits", name,
                        c[k], (long long)n, (long long)k, b);
      qat_packed_put(row, b, k, c[k]);
    }
  }
  return QAT_OK;
}

void qat_packed_unpack(const qat_packed *p, uint8_t *codes, float *s, float *zt) {
  for (int64_t n = 0; n < p->N; n++) {
    for (int64_t j = 0; j < p->G; j++) {
      if (s) s[n * p->G + j] = qat_packed_scale(p, n, j);
      if (zt) zt[n * p->G + j] = qat_packed_zp(p, n, j);
    }
    if (codes)
      for (int64_t k = 0; k < p->K; k++)
        codes[n * p->K + k] = (uint8_t)qat_packed_get(p->codes + n * p->row_bytes, p->bits, k);
  }
}

void qat_packed_dequant(const qat_packed *p, int64_t n0, int64_t n1, float *w) {
  for (int64_t n = n0; n < n1; n++) {
    const uint8_t *row = p->codes + n * p->row_bytes;
    float *o = w + (n - n0) * p->K;
    for (int64_t j = 0; j < p->G; j++) {
      float sv = qat_packed_scale(p, n, j), zp = qat_packed_zp(p, n, j);
      for (int64_t k = j * p->group; k < (j + 1) * p->group; k++)
        o[k] = ((float)qat_packed_get(row, p->bits, k) - zp) * sv; /* dq_forward's order */
    }
  }
}

int64_t qat_packed_bytes(const qat_packed *p) {
  return p->N * p->row_bytes + p->N * p->G * (p->sdtype == QAT_F16 ? 2 : 4) +
         p->N * p->zrow_bytes;
}

double qat_packed_bpw(const qat_packed *p) {
  return 8.0 * (double)qat_packed_bytes(p) / ((double)p->N * (double)p->K);
}

const char *qat_packed_meta(const qat_qspec *q, qat_dtype sdtype, char *buf, size_t n) {
  snprintf(buf, n,
           "{\"version\": %d, \"bits\": %d, \"group\": %d, \"sym\": %s, \"scale_dtype\": \"%s\", "
           "\"layout\": \"lsb-stream-u32\"}",
           QAT_PACKED_VERSION, q->bits, q->group, q->sym ? "true" : "false",
           qat_dtype_name(sdtype));
  return buf;
}

qat_status qat_packed_st_add(qat_st_writer *w, const char *base, const qat_packed *p) {
  char name[512];
  int64_t sh[2] = {p->N, p->row_bytes};
  snprintf(name, sizeof name, "%s.qcodes", base);
  QAT_TRY(qat_st_writer_add(w, name, QAT_U8, 2, sh, p->codes));
  sh[1] = p->G;
  snprintf(name, sizeof name, "%s.qscales", base);
  QAT_TRY(qat_st_writer_add(w, name, (qat_dtype)p->sdtype, 2, sh, p->scales));
  if (!p->sym) {
    sh[1] = p->zrow_bytes;
    snprintf(name, sizeof name, "%s.qzeros", base);
    QAT_TRY(qat_st_writer_add(w, name, QAT_U8, 2, sh, p->zeros));
  }
  /* K itself: the word padding of a row makes it ambiguous from the qcodes shape alone */
  char k[32];
  snprintf(name, sizeof name, "%s.in_features", base);
  snprintf(k, sizeof k, "%lld", (long long)p->K);
  return qat_st_writer_meta(w, name, k);
}

int qat_packed_st_is_packed(const qat_st_file *f) { return qat_st_meta(f, "qat_packed") != NULL; }

/* bits / group / sym / scale dtype / version from the file's metadata. */
static qat_status parse_meta(const qat_st_file *f, int *bits, int *group, int *sym, qat_dtype *sdt) {
  const char *m = qat_st_meta(f, "qat_packed");
  if (!m) return QAT_FAIL(QAT_EFORMAT, "%s: no qat_packed metadata (not a packed file)", f->path);
  cJSON *j = cJSON_Parse(m);
  qat_status st = QAT_OK;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "version"),
              *b = cJSON_GetObjectItemCaseSensitive(j, "bits"),
              *s = cJSON_GetObjectItemCaseSensitive(j, "sym"),
              *d = cJSON_GetObjectItemCaseSensitive(j, "scale_dtype"),
              *l = cJSON_GetObjectItemCaseSensitive(j, "layout"),
              *g = cJSON_GetObjectItemCaseSensitive(j, "group");
  if (!j || !cJSON_IsNumber(v) || !cJSON_IsNumber(b) || !cJSON_IsBool(s) || !cJSON_IsString(d) ||
      !cJSON_IsString(l) || !cJSON_IsNumber(g))
    st = QAT_FAIL(QAT_EFORMAT,
                  "%s: qat_packed metadata needs version, bits, group, sym, scale_dtype and layout: "
                  "%.80s",
                  f->path, m);
  else if (v->valueint != QAT_PACKED_VERSION || strcmp(l->valuestring, "lsb-stream-u32") != 0)
    st = QAT_FAIL(QAT_EUNSUPPORTED, "%s: qat_packed version %d layout %s (this qat reads %d)",
                  f->path, v->valueint, l->valuestring, QAT_PACKED_VERSION);
  else if (b->valueint < 2 || b->valueint > 8)
    st = QAT_FAIL(QAT_EFORMAT, "%s: qat_packed bits %d", f->path, b->valueint);
  else if (strcmp(d->valuestring, "F16") != 0 && strcmp(d->valuestring, "F32") != 0)
    st = QAT_FAIL(QAT_EFORMAT, "%s: qat_packed scale_dtype %s (F16 or F32)", f->path,
                  d->valuestring);
  if (st == QAT_OK) {
    *bits = b->valueint;
    *group = g->valueint;
    *sym = cJSON_IsTrue(s);
    *sdt = strcmp(d->valuestring, "F16") == 0 ? QAT_F16 : QAT_F32;
  }
  cJSON_Delete(j);
  return st;
}

qat_status qat_packed_st_spec(const qat_st_file *f, qat_qspec *q, qat_dtype *sdtype) {
  int bits = 0, group = 0, sym = 0;
  QAT_TRY(parse_meta(f, &bits, &group, &sym, sdtype));
  *q = (qat_qspec){.bits = bits, .group = group, .sym = sym};
  return QAT_OK;
}

static qat_status want(const qat_st_file *f, const char *name, const qat_st_tensor *t,
                       qat_dtype dt, int64_t r, int64_t c) {
  if (!t) return QAT_FAIL(QAT_EFORMAT, "%s: packed tensor %s is missing", f->path, name);
  if (t->dtype != dt || t->ndim != 2 || (r >= 0 && t->shape[0] != r) ||
      (c >= 0 && t->shape[1] != c))
    return QAT_FAIL(QAT_EFORMAT, "%s: tensor %s is %s of %d dims [%lld, %lld], expected %s [%lld, %lld]",
                    f->path, name, qat_dtype_name(t->dtype), t->ndim, (long long)t->shape[0],
                    (long long)(t->ndim > 1 ? t->shape[1] : 0), qat_dtype_name(dt), (long long)r,
                    (long long)c);
  return QAT_OK;
}

qat_status qat_packed_st_read(const qat_st_file *f, const char *base, qat_packed *p) {
  int bits = 0, group = 0, sym = 0;
  qat_dtype sdt = QAT_F32;
  memset(p, 0, sizeof *p);
  QAT_TRY(parse_meta(f, &bits, &group, &sym, &sdt));
  char nc[512], ns[512], nz[512];
  snprintf(nc, sizeof nc, "%s.qcodes", base);
  snprintf(ns, sizeof ns, "%s.qscales", base);
  snprintf(nz, sizeof nz, "%s.qzeros", base);
  const qat_st_tensor *tc = qat_st_find(f, nc), *ts = qat_st_find(f, ns), *tz = qat_st_find(f, nz);
  QAT_TRY(want(f, nc, tc, QAT_U8, -1, -1));
  QAT_TRY(want(f, ns, ts, sdt, tc->shape[0], -1));
  int64_t N = tc->shape[0], G = ts->shape[1], rb = tc->shape[1];
  char nk[512];
  snprintf(nk, sizeof nk, "%s.in_features", base);
  const char *ks = qat_st_meta(f, nk);
  char *end = NULL;
  long long K = ks ? strtoll(ks, &end, 10) : 0;
  if (!ks || *end || K <= 0 || G <= 0 || K % G != 0 || qat_packed_stream_bytes(K, bits) != rb)
    return QAT_FAIL(QAT_EFORMAT,
                    "%s: metadata %s = %s does not fit %s (%lld bytes per row, %d bits) and %s "
                    "(%lld groups)",
                    f->path, nk, ks ? ks : "(missing)", nc, (long long)rb, bits, ns,
                    (long long)G);
  qat_qspec q = {.bits = bits, .group = (int)(K / G), .sym = sym};
  QAT_TRY(qat_packed_alloc(p, &q, N, K, sdt, base));
  qat_status st = QAT_OK;
  if (!sym) st = want(f, nz, tz, QAT_U8, N, p->zrow_bytes);
  else if (tz)
    st = QAT_FAIL(QAT_EFORMAT, "%s: symmetric file has zero points %s", f->path, nz);
  if (st != QAT_OK) {
    qat_packed_free(p);
    return st;
  }
  memcpy(p->codes, tc->data, (size_t)(N * rb));
  memcpy(p->scales, ts->data, (size_t)(N * G) * (sdt == QAT_F16 ? 2 : 4));
  if (!sym) memcpy(p->zeros, tz->data, (size_t)(N * p->zrow_bytes));
  /* the zero-scale guard on what was read, and codes past K must be zero padding */
  for (int64_t i = 0; i < N * G && st == QAT_OK; i++) {
    float sv = qat_packed_scale(p, i / G, i % G);
    if (!(sv >= QAT_S_MIN * 0.999f) || !(sv <= QAT_S_MAX * 1.001f))
      st = QAT_FAIL(QAT_EFORMAT, "%s: %s[%lld, %lld] = %g is outside [1e-4, 1e4]", f->path, ns,
                    (long long)(i / G), (long long)(i % G), (double)sv);
  }
  if (st != QAT_OK) qat_packed_free(p);
  return st;
}
