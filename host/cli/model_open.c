/* The model flags eval and generate share: --model DIR, --device cpu|cuda (default cuda when a
 * GPU is usable), --quant rtn:BITSgGROUP (RTN fake-quant of the decoder Linears) and --packed.
 * A folder whose safetensors carry "qat_packed" metadata (qat quantize --packed) is detected and
 * run on its packed codes (model/llama_packed.h; the cpu backend, the default for such a folder);
 * --packed says that is expected and refuses a folder without them. Either way one line on
 * stderr gives the bits per Linear weight and the weight bytes held, so F32 and packed runs of
 * the same model can be compared. */
#include "backend/backend.h"
#include "cli/cli.h"
#include "core/log.h"
#include "model/llama.h"
#include "model/llama_packed.h"
#include "quant/quant.h"

#include <stdio.h>

static void report(const char *dir, const qat_llama *m) {
  qat_llama_wbytes w;
  qat_llama_weight_bytes(m, &w);
  const double MiB = 1024.0 * 1024.0;
  fprintf(stderr,
          "model: %s: %s Linears, %.3f bits per weight (%.2f MiB for %lld weights); resident "
          "weights %.2f MiB\n",
          dir, m->packed ? "packed" : m->quantized ? "fake-quant F32" : "F32", w.bpw,
          (double)w.linear_bytes / MiB, (long long)w.linear_weights, (double)w.resident / MiB);
}

qat_status qat_cli_open_model(const char *dir, const char *device, const char *quant, int packed,
                              qat_llama **out) {
  *out = NULL;
  qat_qspec q;
  if (quant) QAT_TRY(qat_quant_parse(quant, &q));
  int is_packed = qat_llama_dir_is_packed(dir);
  if (packed && !is_packed)
    return QAT_FAIL(QAT_EUSAGE, "--packed: %s has no packed weights (no qat_packed metadata in "
                                "its safetensors; qat quantize --packed writes them)",
                    dir);
  if (is_packed && quant)
    return QAT_FAIL(QAT_EUSAGE, "--quant %s: %s holds packed codes already (drop --quant)", quant,
                    dir);
  if (!device) device = !is_packed && qat_cuda_available() ? "cuda" : "cpu";
  qat_backend *be;
  QAT_TRY(qat_backend_by_name(device, &be));
  qat_llama *m;
  if (is_packed) {
    QAT_TRY(qat_llama_load_packed(dir, be, &m));
    if (!packed) qat_log("model: %s holds packed weights (qat_packed metadata): running on them", dir);
    report(dir, m);
    *out = m;
    return QAT_OK;
  }
  QAT_TRY(qat_llama_load(dir, be, &m));
  if (quant) {
    qat_status st = qat_llama_set_quant(m, &q);
    if (st != QAT_OK) {
      qat_llama_free(m);
      return st;
    }
  }
  report(dir, m);
  *out = m;
  return QAT_OK;
}
