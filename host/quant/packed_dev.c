/* Moving a packed weight onto a backend's device (quant/packed_dev.h). */
#include "quant/packed_dev.h"

#include <string.h>

/* *dp = a device copy of host buffer [bytes] plus QAT_PACKED_SLACK zero bytes. */
static qat_status up_buf(const qat_backend *be, const void *src, size_t bytes, uint8_t **dp,
                         const char *name, const char *part) {
  void *p = NULL;
  qat_status st = be->alloc(be, &p, bytes + QAT_PACKED_SLACK);
  if (st != QAT_OK) return qat_context(st, "packed %s: %s", name, part);
  st = be->memset0(be, (uint8_t *)p + bytes, QAT_PACKED_SLACK);
  if (st == QAT_OK && bytes) st = be->upload(be, p, src, bytes);
  if (st == QAT_OK) st = be->sync(be);
  if (st != QAT_OK) {
    be->free(be, p);
    return qat_context(st, "packed %s: uploading %s", name, part);
  }
  *dp = p;
  return QAT_OK;
}

qat_status qat_packed_upload(const qat_backend *be, const qat_packed *src, qat_packed *dst,
                             const char *name) {
  name = name ? name : "w";
  memset(dst, 0, sizeof *dst);
  if (!src || !src->codes || !src->scales || (!src->sym && !src->zeros))
    return QAT_FAIL(QAT_EINVAL, "packed %s: nothing to upload", name);
  qat_packed d = *src;
  d.codes = d.zeros = NULL;
  d.scales = NULL;
  size_t ssz = src->sdtype == QAT_F16 ? 2 : 4;
  uint8_t *sc = NULL;
  qat_status st = up_buf(be, src->codes, (size_t)(src->N * src->row_bytes), &d.codes, name,
                         "codes");
  if (st == QAT_OK)
    st = up_buf(be, src->scales, (size_t)(src->N * src->G) * ssz, &sc, name, "scales");
  d.scales = sc;
  if (st == QAT_OK && !src->sym)
    st = up_buf(be, src->zeros, (size_t)(src->N * src->zrow_bytes), &d.zeros, name, "zeros");
  if (st != QAT_OK) {
    qat_packed_free_on(be, &d);
    return st;
  }
  *dst = d;
  return QAT_OK;
}

void qat_packed_free_on(const qat_backend *be, qat_packed *p) {
  if (p->codes) be->free(be, p->codes);
  if (p->scales) be->free(be, p->scales);
  if (p->zeros) be->free(be, p->zeros);
  memset(p, 0, sizeof *p);
}
