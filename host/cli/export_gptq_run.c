/* qat export --format gptq --checkpoint RUN: a training run's newest checkpoint (or one
 * ckpt-N) as a GPTQ gptq_v2 checkpoint. The run's model (trained s, z; codes = fq_codes of the
 * masters, or E2E-QP's frozen codes) is written as a temporary `qat quantize --packed` folder with
 * F32 scales (the Hugging Face folder of qat_llama_save_hf, every decoder Linear's weight replaced
 * by its packed codes), which export_gptq.c then converts, so both sources share one writer and
 * its per-tensor report: the largest weight change from rounding the scales to GPTQ's F16, 0
 * for a run trained with quant.scale_dtype: f16. The temporary folder is removed on success and
 * on error; the output is built in a sibling temporary and renamed by export_gptq.c. */
#include "cli/cli.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "quant/packed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The decoder Linear whose weight is named hf, or NULL. */
static qat_linear *find_linear(qat_llama *m, const char *hf) {
  for (int l = 0; l < m->cfg.n_layers; l++) {
    qat_llama_layer *L = &m->layers[l];
    qat_linear *ls[7] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
    for (int i = 0; i < 7; i++) {
      size_t n = strlen(ls[i]->name);
      if (!strncmp(hf, ls[i]->name, n) && !strcmp(hf + n, ".weight")) return ls[i];
    }
  }
  return NULL;
}

/* lin's codes (frozen, or fq_codes of its masters) and s, z into a packed W[N, K], F32 scales.
 * The model lives on the CPU backend (qat_cli_load_run): its tensors are host memory. */
static qat_status pack_linear(const qat_llama *m, qat_linear *lin, qat_packed *p) {
  const qat_qspec *q = &m->qspec;
  const qat_backend *be = m->be;
  int64_t N = lin->w.shape[0], K = lin->w.shape[1];
  uint8_t *codes = malloc((size_t)(N * K));
  if (!codes) return QAT_FAIL(QAT_ENOMEM, "gptq export: %s: out of memory", lin->name);
  qat_tensor ct = qat_view2(codes, QAT_U8, QAT_DEV_CPU, N, K);
  qat_status st = QAT_OK;
  if (lin->use_codes && lin->codes.data) memcpy(codes, lin->codes.data, (size_t)(N * K));
  else st = be->fq_codes(be, q, &lin->w, &lin->s, q->sym ? NULL : &lin->z, &ct);
  if (st == QAT_OK) st = qat_packed_alloc(p, q, N, K, QAT_F32, lin->name);
  if (st == QAT_OK)
    st = qat_packed_pack(p, codes, lin->s.data, q->sym ? NULL : lin->z.data, lin->name);
  free(codes);
  return st;
}

/* dir/model.safetensors (qat_llama_save_hf's) rewritten in the packed folder form. */
static qat_status make_packed(qat_llama *m, const char *dir) {
  char path[4096], meta[256];
  QAT_TRY(qat_path_join(path, sizeof path, dir, "model.safetensors.index.json"));
  if (qat_path_exists(path))
    return QAT_FAIL(QAT_EUNSUPPORTED, "gptq export: sharded models are not exported to gptq yet");
  QAT_TRY(qat_path_join(path, sizeof path, dir, "model.safetensors"));
  qat_st_file f;
  QAT_TRY(qat_st_open(path, &f));
  qat_st_writer w;
  qat_st_writer_init(&w);
  qat_packed *pk = calloc((size_t)f.n + 1, sizeof *pk);
  qat_status st = pk ? QAT_OK : QAT_FAIL(QAT_ENOMEM, "gptq export: out of memory");
  int np = 0;
  for (int i = 0; i < f.nmeta && st == QAT_OK; i++)
    st = qat_st_writer_meta(&w, f.meta_keys[i], f.meta_vals[i]);
  if (st == QAT_OK)
    st = qat_st_writer_meta(&w, "qat_packed", qat_packed_meta(&m->qspec, QAT_F32, meta, sizeof meta));
  for (int i = 0; i < f.n && st == QAT_OK; i++) {
    const qat_st_tensor *t = &f.tensors[i];
    qat_linear *lin = find_linear(m, t->name);
    if (!lin) {
      st = qat_st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data);
      continue;
    }
    st = pack_linear(m, lin, &pk[np]);
    if (st == QAT_OK) st = qat_packed_st_add(&w, lin->name, &pk[np]);
    np++;
  }
  if (st == QAT_OK) st = qat_st_write(&w, path); /* atomic: the mapping stays valid */
  for (int i = 0; i < np; i++) qat_packed_free(&pk[i]);
  free(pk);
  qat_st_writer_free(&w);
  qat_st_close(&f);
  return st;
}

qat_status qat_cli_export_gptq_run(const char *run, const char *out) {
  char model_dir[4096], ckdir[4096], tmp[4096] = "", pkdir[4200];
  int64_t step = -1;
  qat_qspec q;
  qat_llama *m = NULL;
  QAT_TRY(qat_cli_load_run(run, &m, &q, model_dir, sizeof model_dir, ckdir, sizeof ckdir, &step));
  /* the packed intermediate beside the output (same file system), removed in every case */
  snprintf(pkdir, sizeof pkdir, "%s.packed", out);
  qat_status st = qat_dir_begin(pkdir, tmp, sizeof tmp);
  if (st == QAT_OK) st = qat_llama_save_hf(m, model_dir, tmp);
  if (st == QAT_OK) st = make_packed(m, tmp);
  qat_llama_free(m);
  if (st == QAT_OK) {
    printf("gptq export of %s (step %lld):\n", ckdir, (long long)step);
    st = qat_cli_export_gptq(tmp, out);
  }
  qat_dir_abort(tmp);
  return st;
}
