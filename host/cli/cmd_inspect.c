/* qat inspect: summarize a safetensors file or a model folder. */
#include "cli/cli.h"

qat_status cmd_inspect(int argc, char **argv) {
  return QAT_FAIL(QAT_EUNSUPPORTED, "inspect: not built yet");
}
