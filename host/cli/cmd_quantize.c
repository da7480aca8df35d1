/* qat quantize: RTN PTQ of a Hugging Face folder. */
#include "cli/cli.h"

qat_status cmd_quantize(int argc, char **argv) {
  return QAT_FAIL(QAT_EUNSUPPORTED, "quantize: not built yet");
}
