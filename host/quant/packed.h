/* Building, checking and storing packed low-bit weights (layout: quant/packed_layout.h).
 * qat_packed_pack turns the integer codes qat already produces (fq_codes, the E2E-QP frozen
 * codes) and the group scales / zero points into the packed form; qat_packed_unpack gives them
 * back exactly (F32 scales; F16 scales are rounded to nearest even once, at pack time).
 *
 * On disk (safetensors): per Linear "<base>.qcodes" U8 [N, row_bytes], "<base>.qscales" F32|F16
 * [N, G], "<base>.qzeros" U8 [N, zrow_bytes] (asym), <base> being the weight name without
 * ".weight"; the file's "qat_packed" metadata is JSON {"version": 1, "bits", "group" (-1 for
 * per-channel), "sym", "scale_dtype": "F16"|"F32", "layout": "lsb-stream-u32"}. The group of
 * each tensor follows from its qscales shape. */
#ifndef QAT_QUANT_PACKED_H
#define QAT_QUANT_PACKED_H

#include "backend/backend.h"
#include "io/safetensors.h"
#include "quant/packed_layout.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Allocates an all-zero packed W[N, K] for spec q (bits 2..8, group > 0 dividing K or -1;
 * per-tensor refused) with scales of sdtype (QAT_F32 or QAT_F16). name goes into messages. */
qat_status qat_packed_alloc(qat_packed *p, const qat_qspec *q, int64_t N, int64_t K,
                            qat_dtype sdtype, const char *name);
void qat_packed_free(qat_packed *p);

/* Fill p from codes U8 [N, K] (fq_codes' values), s [N, G] and (asym) z [N, G] F32 (the raw
 * quantizer state: clamped and rounded as fq_forward does). Zero-scale guard: a scale that is
 * not finite or <= 0 before the clamp, or a code >= 2^bits, is QAT_EINVAL naming the tensor
 * and position. */
qat_status qat_packed_pack(qat_packed *p, const uint8_t *codes, const float *s, const float *z,
                           const char *name);
/* Back out: codes U8 [N, K], s [N, G] (the stored s~ as F32), zt [N, G] (z~; 2^(b-1) when sym);
 * each may be NULL. */
void qat_packed_unpack(const qat_packed *p, uint8_t *codes, float *s, float *zt);
/* w[n1 - n0, K] = dequantized rows n0 .. n1-1 (plain C reference). */
void qat_packed_dequant(const qat_packed *p, int64_t n0, int64_t n1, float *w);

/* Total bytes (codes + scales + zeros) and bits per weight. */
int64_t qat_packed_bytes(const qat_packed *p);
double qat_packed_bpw(const qat_packed *p);

/* The "qat_packed" metadata value for spec q (its group as given: -1 per-channel) with scales of
 * sdtype into buf. */
const char *qat_packed_meta(const qat_qspec *q, qat_dtype sdtype, char *buf, size_t n);
/* The file's spec from its "qat_packed" metadata (bits, group, sym; version checked). */
qat_status qat_packed_st_spec(const qat_st_file *f, qat_qspec *q, qat_dtype *sdtype);
/* Add p's tensors under base (e.g. "model.layers.0.mlp.up_proj") to w; names are copied by
 * the writer, data is referenced until qat_st_write. */
qat_status qat_packed_st_add(qat_st_writer *w, const char *base, const qat_packed *p);
/* Read base's packed tensors from f (metadata checked; shapes checked against each other and
 * the metadata) into a freshly allocated p. */
qat_status qat_packed_st_read(const qat_st_file *f, const char *base, qat_packed *p);
/* 1 when f carries "qat_packed" metadata. */
int qat_packed_st_is_packed(const qat_st_file *f);

#ifdef __cplusplus
}
#endif

#endif
