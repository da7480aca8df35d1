/* E2E-QP with packed frozen codes (llama.h qat_llama_pack_frozen; issue 11): every Linear's
 * frozen U8 codes and zero points become a qat_packed (quant/packed_layout.h), the U8 codes
 * arena is freed, and the Linear runs on the backend's qgemm (forward, dx) and qgemm_ds (ds).
 *
 * Scales: the packed descriptor's F32 scales are the trainable s itself (pk->scales points at
 * s's data, no copy), which is exact while every s of the Linear lies in [QAT_S_MIN, QAT_S_MAX]
 * (then s~ = clamp(s) = s, REFERENCE.md section 1). qat_llama_pk_sync, called at every refresh
 * (each forward), checks that; a Linear with an s outside the range (or NaN) gets a clamped copy
 * instead (allocated then, kept), refreshed at each sync: the same s~ as dq_forward's
 * clampf(s, 1e-4, 1e4). Zero points z~ = clamp(round(z)) are packed once (z is frozen). */
#include "model/llama_priv.h"
#include "quant/packed.h"

#include <stdlib.h>
#include <string.h>

static float clamp_s(float s) { return s < QAT_S_MIN ? QAT_S_MIN : (s > QAT_S_MAX ? QAT_S_MAX : s); }

/* Bytes of one Linear's packed codes and zero points as qat_packed_alloc allocates them (each
 * buffer + QAT_PACKED_SLACK); the scales are s's own (qstate). */
static size_t pk_linear_need(const qat_qspec *q, int64_t N, int64_t K) {
  int64_t g = q->group < 0 ? K : q->group, G = K / g;
  size_t b = (size_t)(N * qat_packed_stream_bytes(K, q->bits)) + QAT_PACKED_SLACK;
  if (!q->sym) b += (size_t)(N * qat_packed_stream_bytes(G, q->bits)) + QAT_PACKED_SLACK;
  return b;
}

size_t qat_llama_pk_need(const qat_llama *m) {
  size_t need = 0;
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) need += pk_linear_need(&m->qspec, lins[i]->out, lins[i]->in);
  }
  return need;
}

void qat_llama_pk_release(qat_llama *m) {
  struct qat_llama_priv *P = m->priv;
  if (!P || !P->ecodes) return;
  int n = 7 * m->cfg.n_layers;
  for (int i = 0; i < n; i++) {
    qat_packed *p = &P->ecodes[i];
    p->scales = P->eclamp[i]; /* s's data is not ours; the clamped copy (or NULL) is */
    qat_packed_free(p);
  }
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) lins[i]->pk = NULL;
  }
  free(P->ecodes);
  free(P->eclamp);
  P->ecodes = NULL;
  P->eclamp = NULL;
  P->ecodes_bytes = 0;
}

static int pk_index(const qat_llama *m, const qat_linear *li) {
  const qat_packed *b = m->priv->ecodes;
  if (!b || li->pk < b || li->pk >= b + 7 * m->cfg.n_layers) return -1;
  return (int)(li->pk - b);
}

qat_status qat_llama_pk_sync(const qat_llama *m, qat_linear *li) {
  struct qat_llama_priv *P = m->priv;
  int i = pk_index(m, li);
  if (i < 0) return QAT_FAIL(QAT_EINTERNAL, "model: %s is not an E2E-QP packed Linear", li->name);
  qat_packed *p = &P->ecodes[i];
  const float *s = li->s.data;
  int64_t n = p->N * p->G;
  int inside = 1;
  for (int64_t k = 0; k < n && inside; k++) inside = s[k] >= QAT_S_MIN && s[k] <= QAT_S_MAX;
  if (inside && !P->eclamp[i]) {
    p->scales = li->s.data;
    return QAT_OK;
  }
  if (!P->eclamp[i]) { /* first s outside the range: a clamped copy from now on */
    P->eclamp[i] = malloc(sizeof(float) * (size_t)n + QAT_PACKED_SLACK);
    if (!P->eclamp[i])
      return QAT_FAIL(QAT_ENOMEM, "model: clamped scales of %s [%lld]", li->name, (long long)n);
    P->ecodes_bytes += sizeof(float) * (size_t)n + QAT_PACKED_SLACK;
  }
  for (int64_t k = 0; k < n; k++) P->eclamp[i][k] = clamp_s(s[k]);
  p->scales = P->eclamp[i];
  return QAT_OK;
}

/* p's codes and zero points from host codes U8 [N, K] and li's z (s~ only checked: p's scales
 * stay s's data). */
static qat_status pack_codes(const qat_llama *m, const qat_linear *li, qat_packed *p,
                             const uint8_t *codes) {
  int64_t n = p->N * p->G;
  /* qat_packed_pack refuses s <= 0 (its guard) where dq_forward clamps: it sees the clamped s,
   * written into a scratch that stands in for p's scales meanwhile */
  float *sc = malloc(sizeof(float) * (size_t)n + QAT_PACKED_SLACK);
  if (!sc) return QAT_FAIL(QAT_ENOMEM, "model: packing %s", li->name);
  const float *s = li->s.data;
  for (int64_t k = 0; k < n; k++) sc[k] = clamp_s(s[k]);
  void *keep = p->scales;
  p->scales = sc;
  qat_status st = qat_packed_pack(p, codes, sc, m->qspec.sym ? NULL : li->z.data, li->name);
  p->scales = keep;
  free(sc);
  return st;
}

/* Linear li into a fresh packed descriptor *p with scales pointing at s: its U8 codes when
 * frozen, else frozen here as qat_llama_freeze_codes does (codes = fq_codes(w, s, z) in a
 * one-Linear scratch, w <- dq_forward(codes)), so no U8 arena is ever needed. */
static qat_status pack_linear(qat_llama *m, qat_linear *li, qat_packed *p) {
  const qat_qspec *q = &m->qspec;
  int64_t N = li->out, K = li->in;
  QAT_TRY(qat_packed_alloc(p, q, N, K, QAT_F32, li->name));
  free(p->scales);
  p->scales = li->s.data;
  if (li->use_codes) return pack_codes(m, li, p, li->codes.data);
  uint8_t *c = malloc((size_t)(N * K));
  if (!c) return QAT_FAIL(QAT_ENOMEM, "model: freezing %s", li->name);
  qat_tensor ct = qat_view2(c, QAT_U8, QAT_DEV_CPU, N, K);
  const qat_tensor *z = q->sym ? NULL : &li->z;
  qat_status st = qat_context(QAT_OP(m->be, fq_codes, q, &li->w, &li->s, z, &ct), "freezing %s",
                              li->name);
  if (st == QAT_OK) st = pack_codes(m, li, p, c);
  if (st == QAT_OK) st = QAT_OP(m->be, dq_forward, q, &ct, &li->s, z, &li->w);
  free(c);
  QAT_TRY(st);
  li->use_codes = 1;
  li->frozen = 1;
  return QAT_OK;
}

qat_status qat_llama_pk_load_codes(qat_llama *m, qat_linear *li, const uint8_t *codes) {
  if (!QAT_LLAMA_PKC(m, li))
    return QAT_FAIL(QAT_EINTERNAL, "model: %s has no packed codes", li->name);
  return pack_codes(m, li, (qat_packed *)li->pk, codes);
}

qat_status qat_llama_pack_frozen(qat_llama *m) {
  struct qat_llama_priv *P = m->priv;
  int L = m->cfg.n_layers;
  if (P->ecodes) return QAT_OK;
  if (!m->quantized) return QAT_FAIL(QAT_EINVAL, "model pack_frozen: fake-quant is off");
  if (m->packed) return QAT_FAIL(QAT_EINVAL, "model pack_frozen: the model is a packed folder");
  if (m->be->device != QAT_DEV_CPU || !m->be->qgemm || !m->be->qgemm_ds)
    return QAT_FAIL(QAT_EUNSUPPORTED, "packed frozen codes train on the cpu backend only (the %s "
                                      "backend has no qgemm / qgemm_ds yet)",
                    m->be->name);
  if (m->qspec.group == 0)
    return QAT_FAIL(QAT_EUNSUPPORTED, "packed frozen codes need group scales or per-channel "
                                      "(quant.group != 0; per-tensor is not a packed format)");
  for (int l = 0; l < L; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) {
      if (lins[i]->use_codes && !lins[i]->codes.data)
        return QAT_FAIL(QAT_EINTERNAL, "model pack_frozen: %s has no codes", lins[i]->name);
      int64_t g = m->qspec.group < 0 ? lins[i]->in : m->qspec.group;
      if (lins[i]->in % g != 0)
        return QAT_FAIL(QAT_EUNSUPPORTED,
                        "packed frozen codes: quant.group %d does not divide the %lld input "
                        "columns of %s (a packed format needs whole groups)",
                        m->qspec.group, (long long)lins[i]->in, lins[i]->name);
    }
  }
  size_t nl = 7 * (size_t)(L > 0 ? L : 0);
  /* the compute weights go first (qgemm needs no w_hat; rebuilt by the next layout if this
   * fails), so the peak is the U8 codes beside the packed ones, not beside w_hat too */
  qat_arena_free(&P->wcomp);
  P->wcomp_built = 0;
  for (int l = 0; l < L; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) memset(&lins[i]->w_hat, 0, sizeof lins[i]->w_hat);
  }
  P->ecodes = calloc(nl ? nl : 1, sizeof *P->ecodes);
  P->eclamp = calloc(nl ? nl : 1, sizeof *P->eclamp);
  if (!P->ecodes || !P->eclamp) {
    free(P->ecodes);
    free(P->eclamp);
    P->ecodes = NULL;
    P->eclamp = NULL;
    return QAT_FAIL(QAT_ENOMEM, "model pack_frozen: out of host memory");
  }
  qat_status st = QAT_OK;
  for (int l = 0; l < L && st == QAT_OK; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7 && st == QAT_OK; i++) {
      st = pack_linear(m, lins[i], &P->ecodes[7 * l + i]);
      if (st == QAT_OK) lins[i]->pk = &P->ecodes[7 * l + i];
    }
  }
  if (st != QAT_OK) {
    qat_llama_pk_release(m);
    return st;
  }
  P->ecodes_bytes = qat_llama_pk_need(m);
  /* the U8 codes are no longer needed: the packed ones are the state */
  for (int l = 0; l < L; l++) {
    qat_linear *lins[7];
    qat_llama_linears(&m->layers[l], lins);
    for (int i = 0; i < 7; i++) memset(&lins[i]->codes, 0, sizeof lins[i]->codes);
  }
  qat_arena_free(&P->codes);
  QAT_TRY(qat_llama_sync_wcomp(m)); /* frees the compute weights: qgemm needs no w_hat */
  P->grads_built = 0; /* the next training plan lays the gradients out without the dW scratch */
  P->fwd_training = 0;
  return QAT_OK;
}

qat_status qat_llama_linear_dequant(const qat_llama *m, qat_linear *li, qat_tensor *out) {
  if (!li->pk || m->packed) {
    if (!li->use_codes || !li->codes.data)
      return QAT_FAIL(QAT_EINVAL, "model: %s is not frozen to codes", li->name);
    return QAT_OP(m->be, dq_forward, &m->qspec, &li->codes, &li->s,
                  m->qspec.sym ? NULL : &li->z, out);
  }
  if (out->dtype != QAT_F32 || qat_numel(out) != li->out * li->in)
    return QAT_FAIL(QAT_EINTERNAL, "model: dequantizing %s needs an F32 [%lld, %lld]", li->name,
                    (long long)li->out, (long long)li->in);
  QAT_TRY(qat_llama_pk_sync(m, li)); /* s moved since the last forward (an optimizer step) */
  qat_packed_dequant(li->pk, 0, li->out, out->data); /* cpu: device memory is host memory */
  return QAT_OK;
}

qat_status qat_llama_linear_codes(const qat_llama *m, const qat_linear *li, uint8_t *host) {
  if (li->pk && !m->packed) {
    qat_packed_unpack(li->pk, host, NULL, NULL);
    return QAT_OK;
  }
  if (!li->use_codes || !li->codes.data)
    return QAT_FAIL(QAT_EINVAL, "model: %s is not frozen to codes", li->name);
  return m->be->download(m->be, host, li->codes.data, qat_nbytes(&li->codes));
}
