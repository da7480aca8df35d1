/* libFuzzer target: a llama2.c tokenizer.bin, through qat_tokenizer_load (vocab inferred from
 * the file, as `qat tokenize` does without --vocab; and with the hint the first text byte
 * gives, as a model folder does), then a text encoded, decoded and split (tok_common.h). Parts:
 * tokenizer.bin, text. Seeds: seeds.py tokenizer_bin. */
#include "tok_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = fz_dir("tokbin");
  char path[256];
  fz_part p[2];
  fz_split(data, size, 2, p);
  fz_write(dir, "tokenizer.bin", p[0], 0);
  fz_path(path, sizeof path, dir, "tokenizer.bin");
  int hint = p[1].n ? p[1].p[0] * 4 : 0;
  for (int k = 0; k < 2; k++) {
    qat_tokenizer *t = NULL;
    if (qat_tokenizer_load(path, k ? hint : 0, &t) == QAT_OK) {
      if (k == 0) fz_tok_exercise(t, (const char *)p[1].p, p[1].n);
      qat_tokenizer_free(t);
    }
    fz_end();
  }
  return 0;
}
