/* Quantizer specs, bits per weight and host RTN with error statistics (see quant.h). */
#include "quant/quant.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SPEC_HELP                                                                                  \
  "expected [rtn:]<bits>g<group|c|t>[:sym|:asym][:minmax|:mse][:eqat|:lsq|:ste][:f32|:f16], "  \
  "e.g. rtn:4g128"

/* The "<bits>g<group>" part, e.g. "4g128", "w2g64", "3gc", "8gt". */
static qat_status parse_format(const char *spec, const char *f, size_t len, qat_qspec *q) {
  char buf[64];
  if (len == 0 || len >= sizeof buf)
    return QAT_FAIL(QAT_EUSAGE, "quant spec \"%s\": bad format \"%.*s\" (%s)", spec, (int)len, f,
                    SPEC_HELP);
  for (size_t i = 0; i < len; i++) buf[i] = (char)tolower((unsigned char)f[i]);
  buf[len] = 0;
  const char *p = buf;
  if (*p == 'w') p++;
  if (!isdigit((unsigned char)*p))
    return QAT_FAIL(QAT_EUSAGE, "quant spec \"%s\": bits missing in \"%s\" (%s)", spec, buf,
                    SPEC_HELP);
  char *end;
  errno = 0;
  long bits = strtol(p, &end, 10);
  if (errno || bits < 2 || bits > 8)
    return QAT_FAIL(QAT_EUSAGE, "quant spec \"%s\": bits %.*s out of range 2..8", spec,
                    (int)(end - p), p);
  if (*end != 'g')
    return QAT_FAIL(QAT_EUSAGE, "quant spec \"%s\": expected 'g' after the bits in \"%s\" (%s)",
                    spec, buf, SPEC_HELP);
  p = end + 1;
  long group;
  if (strcmp(p, "c") == 0) {
    group = -1;
  } else if (strcmp(p, "t") == 0) {
    group = 0;
  } else {
    if (!isdigit((unsigned char)*p))
      return QAT_FAIL(QAT_EUSAGE,
                      "quant spec \"%s\": group \"%s\" must be a positive integer, c (per-channel) "
                      "or t (per-tensor)",
                      spec, p);
    errno = 0;
    group = strtol(p, &end, 10);
    if (errno || *end || group < 1 || group > (1L << 30))
      return QAT_FAIL(QAT_EUSAGE, "quant spec \"%s\": bad group size \"%s\"", spec, p);
  }
  q->bits = (int)bits;
  q->group = (int)group;
  return QAT_OK;
}

qat_status qat_quant_parse(const char *spec, qat_qspec *out) {
  if (!spec || !*spec) return QAT_FAIL(QAT_EUSAGE, "quant spec is empty (%s)", SPEC_HELP);
  qat_qspec q = {.bits = 0, .group = 0, .sym = 0, .grad = QAT_QGRAD_EFFICIENTQAT,
                 .init = QAT_QINIT_MINMAX};
  const char *p = spec;
  const char *colon = strchr(p, ':');
  /* optional method prefix: only RTN is a PTQ init the ops implement; trainers pick their own */
  if (colon && (size_t)(colon - p) == 3 && strncasecmp(p, "rtn", 3) == 0) {
    p = colon + 1;
  } else if (colon && !isdigit((unsigned char)p[0]) && tolower((unsigned char)p[0]) != 'w') {
    return QAT_FAIL(QAT_EUSAGE, "quant spec \"%s\": unknown method \"%.*s\" (only rtn)", spec,
                    (int)(colon - p), p);
  }
  colon = strchr(p, ':');
  size_t flen = colon ? (size_t)(colon - p) : strlen(p);
  QAT_TRY(parse_format(spec, p, flen, &q));
  p += flen;
  int seen_sym = 0, seen_grad = 0, seen_init = 0, seen_sdt = 0;
  while (*p == ':') {
    p++;
    const char *e = strchr(p, ':');
    size_t len = e ? (size_t)(e - p) : strlen(p);
#define IS(word) (len == strlen(word) && strncasecmp(p, word, len) == 0)
    if (IS("sym") || IS("asym")) {
      if (seen_sym++) return QAT_FAIL(QAT_EUSAGE, "quant spec \"%s\": sym/asym given twice", spec);
      q.sym = IS("sym");
    } else if (IS(qat_qinit_name(QAT_QINIT_MINMAX)) || IS(qat_qinit_name(QAT_QINIT_MSE))) {
      if (seen_init++) return QAT_FAIL(QAT_EUSAGE, "quant spec \"%s\": init given twice", spec);
      q.init = IS(qat_qinit_name(QAT_QINIT_MSE)) ? QAT_QINIT_MSE : QAT_QINIT_MINMAX;
    } else if (IS("eqat") || IS("lsq") || IS("ste")) {
      if (seen_grad++)
        return QAT_FAIL(QAT_EUSAGE, "quant spec \"%s\": gradient mode given twice", spec);
      q.grad = IS("lsq") ? QAT_QGRAD_LSQ : IS("ste") ? QAT_QGRAD_STE : QAT_QGRAD_EFFICIENTQAT;
    } else if (IS("f32") || IS("f16")) { /* scale dtype: f16 keeps s on the F16 grid */
      if (seen_sdt++)
        return QAT_FAIL(QAT_EUSAGE, "quant spec \"%s\": scale dtype given twice", spec);
      q.scale_f16 = IS("f16");
    } else {
      return QAT_FAIL(QAT_EUSAGE, "quant spec \"%s\": unknown option \"%.*s\" (%s)", spec,
                      (int)len, p, SPEC_HELP);
    }
#undef IS
    p += len;
  }
  if (qat_qspec_check(&q) != QAT_OK) /* cannot happen after the checks above; keep it honest */
    return QAT_FAIL(QAT_EUSAGE, "quant spec \"%s\": %s", spec, qat_last_error());
  *out = q;
  return QAT_OK;
}

const char *qat_qinit_name(qat_qinit init) { return init == QAT_QINIT_MSE ? "mse" : "minmax"; }

int qat_qinit_from_name(const char *name, qat_qinit *out) {
  const qat_qinit all[2] = {QAT_QINIT_MINMAX, QAT_QINIT_MSE};
  for (int i = 0; i < 2; i++)
    if (name && strcmp(name, qat_qinit_name(all[i])) == 0) {
      *out = all[i];
      return 1;
    }
  return 0;
}

const char *qat_quant_format(const qat_qspec *q, char *buf, size_t n) {
  char g[32];
  if (q->group > 0)
    snprintf(g, sizeof g, "%d", q->group);
  else
    snprintf(g, sizeof g, "%s", q->group == 0 ? "t" : "c");
  const char *grad = q->grad == QAT_QGRAD_LSQ ? ":lsq" : q->grad == QAT_QGRAD_STE ? ":ste" : "";
  snprintf(buf, n, "rtn:%dg%s%s%s%s%s", q->bits, g, q->sym ? ":sym" : "",
           q->init == QAT_QINIT_MSE ? ":mse" : "", grad, q->scale_f16 ? ":f16" : "");
  return buf;
}

double qat_quant_bpw(const qat_qspec *q, int64_t rows, int64_t cols) {
  double g = q->group > 0 ? (double)q->group : q->group < 0 ? (double)cols : (double)rows * cols;
  if (g < 1) g = 1;
  double n = q->bits;
  return q->sym ? n + 16.0 / g : n + (n + 16.0) / g;
}

void qat_quant_error(const float *w, const float *w_hat, int64_t n, qat_quant_stats *st) {
  double mx = 0, se = 0, sw = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)w_hat[i] - (double)w[i];
    if (fabs(d) > mx || isnan(d)) mx = fabs(d);
    se += d * d;
    sw += (double)w[i] * w[i];
  }
  st->n = n;
  st->max_abs_err = mx;
  st->rmse = n ? sqrt(se / (double)n) : 0.0;
  st->rel_rmse = sw > 0 ? sqrt(se / sw) : 0.0;
}

qat_status qat_quant_rtn_f32_sz(const qat_qspec *q, const float *w, int64_t rows, int64_t cols,
                                float *out_w_hat, float *s_out, float *z_out,
                                qat_quant_stats *stats) {
  if (!q || !w || !out_w_hat)
    return QAT_FAIL(QAT_EINVAL, "quant rtn: missing spec, weights or output");
  QAT_TRY(qat_qspec_check(q));
  if (rows < 1 || cols < 1)
    return QAT_FAIL(QAT_EINVAL, "quant rtn: empty matrix [%lld, %lld]", (long long)rows,
                    (long long)cols);
  qat_backend *be = qat_backend_cpu();
  int64_t ss[2];
  qat_qspec_sshape(q, rows, cols, ss);
  size_t ns = (size_t)(ss[0] * ss[1]), nw = (size_t)rows * (size_t)cols;
  qat_status st = QAT_OK;
  float *s = s_out ? s_out : malloc(ns * sizeof(float));
  float *z = z_out ? z_out : malloc(ns * sizeof(float));
  /* in place: keep the original for the statistics */
  float *orig = NULL;
  if (out_w_hat == w && stats) orig = malloc(nw * sizeof(float));
  if (!s || !z || (out_w_hat == w && stats && !orig)) {
    st = QAT_FAIL(QAT_ENOMEM, "quant rtn: cannot allocate scales for [%lld, %lld]",
                  (long long)rows, (long long)cols);
    goto done;
  }
  if (orig) memcpy(orig, w, nw * sizeof(float));
  qat_tensor tw = qat_view2((void *)w, QAT_F32, QAT_DEV_CPU, rows, cols);
  qat_tensor ts = qat_view2(s, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
  qat_tensor tz = qat_view2(z, QAT_F32, QAT_DEV_CPU, ss[0], ss[1]);
  qat_tensor to = qat_view2(out_w_hat, QAT_F32, QAT_DEV_CPU, rows, cols);
  if (q->sym) memset(z, 0, ns * sizeof(float)); /* defined zero points even when unused */
  QAT_CHECK(st, QAT_OP(be, fq_init, q, &tw, &ts, &tz), done);
  QAT_CHECK(st, QAT_OP(be, fq_forward, q, &tw, &ts, &tz, &to), done);
  if (stats) qat_quant_error(orig ? orig : w, out_w_hat, (int64_t)nw, stats);
done:
  if (s != s_out) free(s);
  if (z != z_out) free(z);
  free(orig);
  return st;
}

qat_status qat_quant_rtn_f32(const qat_qspec *q, const float *w, int64_t rows, int64_t cols,
                             float *out_w_hat, qat_quant_stats *stats) {
  return qat_quant_rtn_f32_sz(q, w, rows, cols, out_w_hat, NULL, NULL, stats);
}
