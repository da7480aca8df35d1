/* qat export --checkpoint RUN --out DIR --format fakequant: the newest checkpoint of a run as a
 * Hugging Face folder whose decoder Linear weights are the dequantized low-bit weights (exactly
 * fake-quant(w) with the trained s, z), plus the quantization record: qat_quant.json (bits,
 * group, sym) and qat_quant.safetensors ("<linear>.scales", "<linear>.zeros" and the integer
 * codes are recoverable as round(w_hat / s) + z). Built in a temporary sibling and renamed.
 * --format gptq --model DIR: a `qat quantize --packed` folder as a gptq_v2 checkpoint
 * (export_gptq.c); --format gptq --checkpoint RUN: a training run's (export_gptq_run.c).
 * --format gguf (export_gguf.c): a run, a packed, fake-quant or fp folder as a llama.cpp GGUF. */
#include "cli/cli.h"
#include "core/log.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "train/checkpoint.h"
#include "train/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Loads the checkpoint's tensors into the model's parameters of the same name: the decoder
 * Linears and quantizer state, and the norm gains, embeddings and biases a checkpoint carries
 * when they were trained (Block-AP's train_norms), which are parameters because the caller set
 * train_embeddings before qat_llama_set_quant built the list. */
static qat_status load_params(qat_llama *m, const qat_ckpt *ck) {
  float *buf = NULL;
  qat_status st = QAT_OK;
  int found = 0;
  for (int i = 0; st == QAT_OK && i < m->nparams; i++) {
    qat_param *p = &m->params[i];
    if (!qat_ckpt_find(ck, p->name)) continue;
    free(buf);
    buf = malloc(qat_nbytes(p->p) + 1);
    if (!buf) st = QAT_FAIL(QAT_ENOMEM, "export: out of memory");
    if (st == QAT_OK) st = qat_ckpt_read_f32(ck, p->name, buf, p->p->ndim, p->p->shape);
    if (st == QAT_OK) st = m->be->upload(m->be, p->p->data, buf, qat_nbytes(p->p));
    found++;
  }
  free(buf);
  if (st == QAT_OK && found == 0)
    st = QAT_FAIL(QAT_EFORMAT, "%s: no model tensors in this checkpoint", ck->dir);
  return st;
}

/* RUN (its newest checkpoint) or RUN/ckpt-N -> the run's model on the CPU with the
 * checkpoint's weights and quantizer state (the trainer's spec in *q); model_dir gets the run's
 * model folder (config and tokenizer files), ckdir the checkpoint. Shared by the fakequant and
 * gguf exports. */
qat_status qat_cli_load_run(const char *run, qat_llama **out, qat_qspec *q, char *model_dir,
                            size_t nmodel, char *ckdir, size_t nck, int64_t *step) {
  *out = NULL;
  char rundir[4096], cfgpath[4096];
  *step = -1;
  snprintf(rundir, sizeof rundir, "%s", run);
  QAT_TRY(qat_path_join(cfgpath, sizeof cfgpath, rundir, "config.yaml"));
  if (!qat_path_exists(cfgpath)) { /* a ckpt-N directory: its parent is the run */
    char *slash = strrchr(rundir, '/');
    if (slash) *slash = 0; else snprintf(rundir, sizeof rundir, ".");
    snprintf(ckdir, nck, "%s", run);
    QAT_TRY(qat_path_join(cfgpath, sizeof cfgpath, rundir, "config.yaml"));
    if (!qat_path_exists(cfgpath))
      return QAT_FAIL(QAT_EIO, "%s: not a run directory (no config.yaml)", run);
  } else {
    QAT_TRY(qat_ckpt_latest(rundir, ckdir, nck, step));
    if (*step < 0) return QAT_FAIL(QAT_EIO, "%s: the run holds no checkpoint", run);
  }
  qat_config cfg;
  QAT_TRY(qat_config_load(cfgpath, NULL, 0, &cfg));
  qat_llama *m = NULL;
  qat_ckpt ck;
  int ck_open = 0;
  *q = (qat_qspec){.bits = cfg.quant.bits, .group = cfg.quant.group, .sym = cfg.quant.sym,
                   .scale_f16 = cfg.quant.scale_dtype == QAT_F16};
  snprintf(model_dir, nmodel, "%s", cfg.model);
  qat_status st = qat_llama_load(cfg.model, qat_backend_cpu(), &m);
  if (st == QAT_OK) m->train_embeddings = 1; /* norm gains etc. in m->params: load_params */
  if (st == QAT_OK) st = qat_llama_set_quant(m, q);
  if (st == QAT_OK) st = qat_ckpt_open(ckdir, &ck);
  if (st == QAT_OK) ck_open = 1;
  if (st == QAT_OK) st = load_params(m, &ck);
  if (st == QAT_OK) *step = ck.step;
  if (ck_open) qat_ckpt_close(&ck);
  qat_config_free(&cfg);
  if (st != QAT_OK && m) qat_llama_free(m);
  if (st == QAT_OK) *out = m;
  return st;
}

qat_status cmd_export(int argc, char **argv) {
  qat_flag fl[] = {
      {"checkpoint", 1, NULL, "run directory (its newest checkpoint) or one ckpt-N directory"},
      {"out", 1, NULL, "output Hugging Face folder, or FILE.gguf (replaced atomically)"},
      {"format", 1, NULL, "fakequant (default), gptq (gptq_v2, from --checkpoint or --model, a "
       "qat quantize --packed folder) or gguf (llama.cpp: Q4_0 / Q4_1 / Q8_0, from --checkpoint "
       "or --model)"},
      {"model", 1, NULL, "gptq: the packed folder; gguf: a packed folder, a fake-quant folder "
       "with qat_quant.safetensors (qat export, qat quantize --method gptq) or an fp folder"},
      {"quant", 1, NULL, "gguf from an fp --model: RTN-quantize it first (e.g. rtn:4g32:sym)"},
      {"gguf-dtype", 1, NULL, "gguf: f32 (default) or f16 for the unquantized 2-D tensors "
       "(embeddings, lm_head, Linears left unquantized); norms stay F32"},
      {"help", 0, NULL, "show this help"},
  };
  int nf = (int)(sizeof fl / sizeof fl[0]);
  QAT_TRY(qat_parse_flags(argc, argv, fl, nf, "export"));
  if (qat_flag_get(fl, nf, "help")) {
    qat_print_usage("export",
                    "--checkpoint RUN --out DIR [--format fakequant] | --checkpoint RUN | --model "
                    "PACKED --out DIR --format gptq | --checkpoint RUN | --model DIR [--quant SPEC] --out "
                    "FILE.gguf --format gguf [--gguf-dtype f32|f16]",
                    fl, nf);
    return QAT_OK;
  }
  const char *run = qat_flag_get(fl, nf, "checkpoint"), *out = qat_flag_get(fl, nf, "out");
  const char *format = qat_flag_get(fl, nf, "format");
  const char *model = qat_flag_get(fl, nf, "model");
  const char *quant = qat_flag_get(fl, nf, "quant"), *gdt = qat_flag_get(fl, nf, "gguf-dtype");
  if (format && strcmp(format, "gguf") == 0) {
    if (!out) return QAT_FAIL(QAT_EUSAGE, "--out FILE.gguf is required");
    if (!run == !model) return QAT_FAIL(QAT_EUSAGE, "--format gguf: give --checkpoint RUN or --model DIR");
    if (gdt && strcmp(gdt, "f32") && strcmp(gdt, "f16"))
      return QAT_FAIL(QAT_EUSAGE, "--gguf-dtype %s: expected f32 or f16", gdt);
    return qat_cli_export_gguf(run, model, quant, gdt && !strcmp(gdt, "f16"), out);
  }
  if (quant || gdt) return QAT_FAIL(QAT_EUSAGE, "--%s: only with --format gguf", quant ? "quant" : "gguf-dtype");
  if (format && strcmp(format, "gptq") == 0) {
    if (!out) return QAT_FAIL(QAT_EUSAGE, "--out is required");
    if (!run == !model)
      return QAT_FAIL(QAT_EUSAGE, "--format gptq: give --checkpoint RUN or --model PACKED_DIR "
                                  "(qat quantize --packed)");
    return run ? qat_cli_export_gptq_run(run, out) : qat_cli_export_gptq(model, out);
  }
  if (model) return QAT_FAIL(QAT_EUSAGE, "--model: only with --format gptq or gguf");
  if (!run) return QAT_FAIL(QAT_EUSAGE, "--checkpoint is required");
  if (!out) return QAT_FAIL(QAT_EUSAGE, "--out is required");
  if (format && strcmp(format, "fakequant") != 0)
    return QAT_FAIL(QAT_EUSAGE, "--format %s: expected fakequant, gptq or gguf", format);
  char tmp[4096] = "", ckdir[4096], model_dir[4096];
  qat_llama *m = NULL;
  int64_t step = -1;
  qat_qspec q;
  qat_status st = qat_cli_load_run(run, &m, &q, model_dir, sizeof model_dir, ckdir, sizeof ckdir,
                                   &step);
  if (st == QAT_OK) st = qat_dir_begin(out, tmp, sizeof tmp);
  if (st == QAT_OK) st = qat_llama_save_hf(m, model_dir, tmp);
  if (st == QAT_OK) st = qat_cli_write_quant_record(m, tmp, "qat", NULL);
  if (st == QAT_OK) st = qat_dir_commit(tmp, out);
  if (st != QAT_OK && tmp[0]) qat_dir_abort(tmp);
  if (st == QAT_OK)
    printf("exported %s (W%d g%d %s, step %lld) -> %s\n", ckdir, q.bits, q.group,
           q.sym ? "sym" : "asym", (long long)step, out);
  if (m) qat_llama_free(m);
  return st;
}
