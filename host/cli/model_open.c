/* The model flags eval and generate share: --model DIR, --device cpu|cuda (default cuda when a
 * GPU is usable) and --quant rtn:BITSgGROUP (RTN fake-quant of the decoder Linears). */
#include "backend/backend.h"
#include "cli/cli.h"
#include "model/llama.h"
#include "quant/quant.h"

qat_status qat_cli_open_model(const char *dir, const char *device, const char *quant,
                              qat_llama **out) {
  *out = NULL;
  qat_qspec q;
  if (quant) QAT_TRY(qat_quant_parse(quant, &q));
  if (!device) device = qat_cuda_available() ? "cuda" : "cpu";
  qat_backend *be;
  QAT_TRY(qat_backend_by_name(device, &be));
  qat_llama *m;
  QAT_TRY(qat_llama_load(dir, be, &m));
  if (quant) {
    qat_status st = qat_llama_set_quant(m, &q);
    if (st != QAT_OK) {
      qat_llama_free(m);
      return st;
    }
  }
  *out = m;
  return QAT_OK;
}
