/* libFuzzer target: a llama2.c checkpoint and tokenizer.bin, through qat_llama2c_convert (what
 * `qat convert --from llama2c MODEL.bin --tokenizer tok.bin --out DIR` calls); when it converts,
 * the output folder passes qat_llama_check_dir (config against weights) and is removed. Parts:
 * model.bin, tokenizer.bin (absent when empty). Seeds: seeds.py llama2c. */
#include "fuzz_util.h"
#include "model/llama2c.h"
#include "model/llama_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = fz_dir("l2c");
  char model[256], tok[256], out[256];
  fz_part p[2];
  fz_split(data, size, 2, p);
  fz_write(dir, "model.bin", p[0], 0);
  fz_write(dir, "tokenizer.bin", p[1], 1);
  fz_path(model, sizeof model, dir, "model.bin");
  fz_path(tok, sizeof tok, dir, "tokenizer.bin");
  fz_path(out, sizeof out, dir, "out");
  if (qat_llama2c_convert(model, p[1].n ? tok : NULL, out) == QAT_OK) {
    qat_llama_config c;
    if (qat_llama_check_dir(out, &c) != QAT_OK) {
      fprintf(stderr, "fuzz: a converted llama2.c folder fails the config check: %s\n",
              qat_last_error());
      abort();
    }
  }
  if (qat_path_exists(out) && qat_rm_rf(out) != QAT_OK) abort();
  fz_end();
  return 0;
}
