/* qat convert --from llama2c MODEL.bin [--tokenizer tok.bin] --out DIR: a llama2.c checkpoint
 * into a Hugging Face Llama folder (host/model/llama2c.c);
 * qat convert --from gguf FILE.gguf --out DIR [--dtype f32|bf16] [--shard-mb N]: a llama.cpp
 * GGUF file (host/io/gguf_convert.c). */
#include "cli/cli.h"
#include "io/gguf_convert.h"
#include "model/llama2c.h"

#include <stdlib.h>
#include <string.h>

qat_status cmd_convert(int argc, char **argv) {
  qat_flag f[] = {
      {"from", 1, NULL, "source format: llama2c or gguf"},
      {"tokenizer", 1, NULL, "llama2c: tokenizer file copied into the folder (tokenizer.bin)"},
      {"dtype", 1, NULL, "gguf: dtype of the written weights, f32 (default) or bf16"},
      {"shard-mb", 1, NULL, "gguf: largest safetensors shard in MiB (default 4096)"},
      {"out", 1, NULL, "output folder (written atomically)"},
      {"help", 0, NULL, "show this help"},
  };
  const int nf = (int)(sizeof f / sizeof f[0]);
  /* One positional argument (the checkpoint); the rest are flags. */
  char **rest = calloc((size_t)argc + 1, sizeof *rest);
  if (!rest) return QAT_FAIL(QAT_ENOMEM, "out of memory");
  const char *model = NULL;
  int nrest = 0;
  qat_status st = QAT_OK;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strncmp(a, "--", 2) == 0) {
      rest[nrest++] = argv[i];
      int takes = 0;
      for (int k = 0; k < nf; k++)
        if (strcmp(a + 2, f[k].name) == 0) takes = f[k].takes_value;
      if (takes && i + 1 < argc) rest[nrest++] = argv[++i];
    } else if (!model) {
      model = a;
    } else {
      st = QAT_FAIL(QAT_EUSAGE, "qat convert: unexpected argument \"%s\"", a);
      goto done;
    }
  }
  QAT_CHECK(st, qat_parse_flags(nrest, rest, f, nf, "convert"), done);
  if (qat_flag_get(f, nf, "help")) {
    qat_print_usage("convert",
                    "--from llama2c MODEL.bin [--tokenizer tok.bin] --out DIR\n"
                    "       qat convert --from gguf FILE.gguf --out DIR [--dtype f32|bf16] [--shard-mb N]",
                    f, nf);
    goto done;
  }
  const char *from = qat_flag_get(f, nf, "from"), *out = qat_flag_get(f, nf, "out");
  int gguf = from && !strcmp(from, "gguf");
  if (!from || (strcmp(from, "llama2c") != 0 && !gguf)) {
    st = QAT_FAIL(QAT_EUSAGE, "qat convert: --from %s: expected llama2c or gguf",
                  from ? from : "(missing)");
    goto done;
  }
  if (!model || !out) {
    st = QAT_FAIL(QAT_EUSAGE, "qat convert: need %s and --out DIR", gguf ? "FILE.gguf" : "MODEL.bin");
    goto done;
  }
  const char *dtype = qat_flag_get(f, nf, "dtype"), *tokf = qat_flag_get(f, nf, "tokenizer");
  if (gguf && tokf) {
    st = QAT_FAIL(QAT_EUSAGE, "qat convert: --tokenizer is for llama2c (a GGUF file has its own)");
    goto done;
  }
  if (!gguf && dtype) {
    st = QAT_FAIL(QAT_EUSAGE, "qat convert: --dtype is for gguf (llama2c writes float32)");
    goto done;
  }
  if (gguf && dtype && strcmp(dtype, "f32") && strcmp(dtype, "bf16")) {
    st = QAT_FAIL(QAT_EUSAGE, "qat convert: --dtype %s: expected f32 or bf16", dtype);
    goto done;
  }
  const char *shard = qat_flag_get(f, nf, "shard-mb");
  uint64_t shard_bytes = 0;
  if (shard) {
    char *end;
    long long mb = strtoll(shard, &end, 10);
    if (!gguf || *end || end == shard || mb < 1 || mb > (1ll << 30)) {
      st = QAT_FAIL(QAT_EUSAGE, "qat convert: --shard-mb %s: expected a positive number of MiB "
                    "(gguf only)", shard);
      goto done;
    }
    shard_bytes = (uint64_t)mb << 20;
  }
  st = gguf ? qat_gguf_convert(model, out, dtype, shard_bytes)
            : qat_llama2c_convert(model, tokf, out);
done:
  free(rest);
  return st;
}
