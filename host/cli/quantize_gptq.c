/* qat quantize --method gptq: GPTQ (train/gptq_run.h) of a Hugging Face folder on calibration
 * windows drawn from a token file, written as the same fake-quant folder `qat export` writes
 * (dequantized Linear weights in the model's dtype, other files copied, qat_quant.json and
 * qat_quant.safetensors with the scales and zero points). Built in a temporary sibling and
 * renamed: an error leaves nothing at --out. */
#include "backend/backend.h"
#include "cli/cli.h"
#include "core/log.h"
#include "io/fsutil.h"
#include "io/npy.h"
#include "model/llama.h"
#include "quant/quant.h"
#include "train/gptq_run.h"
#include "train/sampler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

qat_status qat_cli_quantize_gptq(const char *model, const char *out, const qat_qspec *q,
                                 const qat_flag *fl, int nf) {
  const char *calib = qat_flag_get(fl, nf, "calib"), *device = qat_flag_get(fl, nf, "device");
  if (!calib) return QAT_FAIL(QAT_EUSAGE, "--method gptq needs --calib TOKENS.npy");
  long samples, seq_len, block, batch, seed, skip;
  double damp, first_weight;
  QAT_TRY(qat_flag_int(fl, nf, "samples", 1, 1L << 20, 128, &samples));
  QAT_TRY(qat_flag_int(fl, nf, "seq-len", 0, 1L << 20, 0, &seq_len));
  QAT_TRY(qat_flag_int(fl, nf, "block", 1, 1L << 16, 128, &block));
  QAT_TRY(qat_flag_int(fl, nf, "batch", 1, 1L << 16, 4, &batch));
  QAT_TRY(qat_flag_int(fl, nf, "seed", 0, 1L << 30, 0, &seed));
  QAT_TRY(qat_flag_int(fl, nf, "skip-first", 0, 1L << 20, 0, &skip));
  QAT_TRY(qat_flag_float(fl, nf, "damp", 0.01, &damp));
  QAT_TRY(qat_flag_float(fl, nf, "first-weight", 1.0, &first_weight));
  if (!(first_weight > 0 && first_weight <= 1e6))
    return QAT_FAIL(QAT_EUSAGE, "--first-weight %g: must be in (0, 1e6] (--skip-first 1 leaves "
                    "the token out)", first_weight);
  if (!(damp >= 0 && damp < 1))
    return QAT_FAIL(QAT_EUSAGE, "--damp %g: must be in [0, 1)", damp);
  if (!device) device = qat_cuda_available() ? "cuda" : "cpu";
  qat_backend *be;
  QAT_TRY(qat_backend_by_name(device, &be));
  int32_t *tokens = NULL, *windows = NULL;
  int64_t ntok = 0;
  QAT_TRY(qat_npy_read_tokens(calib, &tokens, &ntok));
  qat_llama *m = NULL;
  char tmp[4096] = "";
  qat_status st = qat_llama_load(model, be, &m);
  int T = 0;
  if (st == QAT_OK) {
    T = seq_len > 0 ? (int)seq_len : (m->cfg.max_seq < 2048 ? m->cfg.max_seq : 2048);
    if (T > m->cfg.max_seq)
      st = QAT_FAIL(QAT_EUSAGE, "--seq-len %d exceeds the model's max_position_embeddings %d", T,
                    m->cfg.max_seq);
    else if (skip >= T)
      st = QAT_FAIL(QAT_EUSAGE, "--skip-first %ld: must be below --seq-len %d", skip, T);
  }
  if (st == QAT_OK) st = qat_llama_set_quant(m, q);
  if (st == QAT_OK) {
    windows = malloc((size_t)samples * T * sizeof *windows);
    st = windows ? qat_windows_gather((uint64_t)seed, tokens, ntok, T, samples, windows)
                 : QAT_FAIL(QAT_ENOMEM, "gptq: out of host memory");
    if (st != QAT_OK) qat_context(st, "%s (%lld tokens, windows of %d)", calib, (long long)ntok, T);
  }
  const int act = qat_flag_get(fl, nf, "act-order") != NULL;
  const int tseq = qat_flag_get(fl, nf, "true-sequential") != NULL;
  qat_gptq_run_opts o = {.T = T, .batch = (int)batch,
                         .gptq = {.damp = damp, .block = (int)block, .act_order = act},
                         .true_sequential = tseq, .skip_first = (int)skip,
                         .first_weight = (float)first_weight,
                         .budget = {.device_bytes = (size_t)8 << 30, .host_bytes = (size_t)64 << 30},
                         .cache_dtype = QAT_F32};
  qat_gptq_run_stats gs = {0};
  char spec[64];
  qat_qspec shown = *q;
  shown.grad = QAT_QGRAD_EFFICIENTQAT; /* the spec's default: no gradient option in the record */
  qat_quant_format(&shown, spec, sizeof spec);
  if (st == QAT_OK) {
    printf("GPTQ %s%s%s: %ld windows of %d tokens from %s, damp %g, block %ld, skip-first %ld, "
           "first-weight %g, on %s\n",
           spec, act ? " act-order" : "", tseq ? " true-sequential" : "", samples, T, calib, damp,
           block, skip, first_weight, device);
    fflush(stdout);
    st = qat_gptq_run(m, windows, samples, &o, &gs);
  }
  if (st == QAT_OK) st = qat_dir_begin(out, tmp, sizeof tmp);
  if (st == QAT_OK) st = qat_llama_save_hf(m, model, tmp);
  if (st == QAT_OK) {
    char extra[512];
    snprintf(extra, sizeof extra,
             "\"spec\": \"%s\", \"init\": \"%s\", \"samples\": %ld, \"seq_len\": %d, \"damp\": %g, "
             "\"block\": %ld, \"act_order\": %s, \"true_sequential\": %s, \"skip_first\": %ld, "
             "\"first_weight\": %g, \"seed\": %ld, \"rel_err_rtn\": %.6g, \"rel_err_gptq\": %.6g",
             spec, qat_qinit_name(q->init), samples, T, damp, block, act ? "true" : "false",
             tseq ? "true" : "false", skip, first_weight, seed, gs.rel_err_rtn, gs.rel_err_gptq);
    st = qat_cli_write_quant_record(m, tmp, "gptq", extra);
  }
  if (st == QAT_OK) st = qat_dir_commit(tmp, out);
  if (st != QAT_OK && tmp[0]) qat_dir_abort(tmp);
  if (st == QAT_OK)
    printf("quantized %lld Linears: rel. output error on the calibration data (mean) RTN %.5g -> "
           "GPTQ %.5g (%lld dead input columns), %.1f s -> %s\n",
           (long long)gs.linears, gs.rel_err_rtn, gs.rel_err_gptq, (long long)gs.dead,
           gs.seconds, out);
  free(tokens);
  free(windows);
  if (m) qat_llama_free(m);
  return st;
}
