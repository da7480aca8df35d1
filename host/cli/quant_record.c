/* The quantization record of a fake-quant Hugging Face folder written from a quantized model
 * (`qat export`, `qat quantize --method gptq`): qat_quant.safetensors with every decoder Linear's
 * "<linear>.scales" and "<linear>.zeros" (F32; the integer codes are round(w_hat / s) + z), and
 * qat_quant.json {"method", "format": "fakequant", "bits", "group", "sym", "scales", extra}. */
#include "cli/cli.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "model/llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

qat_status qat_cli_write_quant_record(const qat_llama *m, const char *dir, const char *method,
                                      const char *extra) {
  qat_st_writer w;
  qat_st_writer_init(&w);
  qat_status st = QAT_OK;
  int nbuf = 0;
  float **bufs = calloc((size_t)m->cfg.n_layers * 14 + 1, sizeof *bufs);
  if (!bufs) return QAT_FAIL(QAT_ENOMEM, "export: out of memory");
  char name[160];
  for (int l = 0; st == QAT_OK && l < m->cfg.n_layers; l++) {
    const qat_llama_layer *L = &m->layers[l];
    const qat_linear *lins[7] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
    for (int i = 0; st == QAT_OK && i < 7; i++) {
      const qat_tensor *ts[2] = {&lins[i]->s, &lins[i]->z};
      const char *suf[2] = {"scales", "zeros"};
      for (int k = 0; st == QAT_OK && k < 2; k++) {
        if (!ts[k]->data) continue;
        float *b = bufs[nbuf++] = malloc(qat_nbytes(ts[k]) + 1);
        if (!b) st = QAT_FAIL(QAT_ENOMEM, "export: out of memory");
        if (st == QAT_OK) st = m->be->download(m->be, b, ts[k]->data, qat_nbytes(ts[k]));
        snprintf(name, sizeof name, "%s.%s", lins[i]->name, suf[k]);
        if (st == QAT_OK) st = qat_st_writer_add(&w, name, QAT_F32, ts[k]->ndim, ts[k]->shape, b);
      }
    }
  }
  char path[4096], rec[512];
  snprintf(rec, sizeof rec, "{\"bits\": %d, \"group\": %d, \"sym\": %s}", m->qspec.bits,
           m->qspec.group, m->qspec.sym ? "true" : "false");
  if (st == QAT_OK) st = qat_st_writer_meta(&w, "qat_quant", rec);
  if (st == QAT_OK) st = qat_path_join(path, sizeof path, dir, "qat_quant.safetensors");
  if (st == QAT_OK) st = qat_st_write(&w, path);
  for (int i = 0; i < nbuf; i++) free(bufs[i]);
  free(bufs);
  qat_st_writer_free(&w);
  if (st != QAT_OK) return st;
  snprintf(rec, sizeof rec,
           "{\"method\": \"%s\", \"format\": \"fakequant\", \"bits\": %d, \"group\": %d, "
           "\"sym\": %s, \"scales\": \"qat_quant.safetensors\"%s%s}\n",
           method, m->qspec.bits, m->qspec.group, m->qspec.sym ? "true" : "false",
           extra ? ", " : "", extra ? extra : "");
  QAT_TRY(qat_path_join(path, sizeof path, dir, "qat_quant.json"));
  return qat_write_file_atomic(path, rec, strlen(rec));
}
