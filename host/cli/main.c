/* qat: the command-line entry point. Dispatches to subcommands; the only place that exits. */
#include "backend/backend.h"
#include "cli/cli.h"
#include "core/log.h"

#include <stdio.h>
#include <string.h>

static const struct {
  const char *name;
  qat_cmd_fn fn;
  const char *help;
} k_cmds[] = {
    {"quantize", cmd_quantize, "PTQ-quantize a Hugging Face folder (RTN) to fake-quant weights"},
    {"inspect", cmd_inspect, "summarize a safetensors or GGUF file, or a model folder"},
    {"convert", cmd_convert, "convert a llama2.c checkpoint or a GGUF file to a HF folder"},
    {"eval", cmd_eval, "perplexity of a model folder on a token shard"},
    {"generate", cmd_generate, "sample text from a model folder"},
    {"tokenize", cmd_tokenize, "tokenize a text file into a .npy token shard"},
    {"train", cmd_train, "run a training job from a YAML config (QAT)"},
    {"export", cmd_export, "export a run's newest checkpoint (fake-quant HF folder)"},
};
#define NCMDS (int)(sizeof k_cmds / sizeof k_cmds[0])

static void usage(FILE *f) {
  fprintf(f, "qat %s: quantization-aware training for LLaMA-class models\n\nusage: qat <command> [flags]\n\ncommands:\n", QAT_VERSION);
  for (int i = 0; i < NCMDS; i++) fprintf(f, "  %-10s %s\n", k_cmds[i].name, k_cmds[i].help);
  fprintf(f, "\n`qat <command> --help` shows a command's flags.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("qat %s\n", QAT_VERSION);
    return 0;
  }
  for (int i = 0; i < NCMDS; i++) {
    if (strcmp(argv[1], k_cmds[i].name) != 0) continue;
    qat_status st = k_cmds[i].fn(argc - 2, argv + 2);
    if (st != QAT_OK) {
      fprintf(stderr, "qat %s: error: %s\n", argv[1], qat_last_error());
      return qat_exit_code(st);
    }
    return 0;
  }
  fprintf(stderr, "qat: unknown command \"%s\" (see qat --help)\n", argv[1]);
  return 2;
}
