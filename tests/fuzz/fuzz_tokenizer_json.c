/* libFuzzer target: a Hugging Face tokenizer folder, through qat_tokenizer_load_dir (what
 * tokenize, eval, generate and train call): parts tokenizer.json, tokenizer_config.json,
 * config.json (each absent when empty) and a text that is then encoded, decoded and split
 * into documents (tok_common.h). Seeds: seeds.py tokenizer_json. */
#include "tok_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = fz_dir("tokjson");
  fz_part p[4];
  fz_split(data, size, 4, p);
  fz_write(dir, "tokenizer.json", p[0], 0);
  fz_write(dir, "tokenizer_config.json", p[1], 1);
  fz_write(dir, "config.json", p[2], 1);
  qat_tokenizer *t = NULL;
  if (qat_tokenizer_load_dir(dir, 0, &t) == QAT_OK) {
    fz_tok_exercise(t, (const char *)p[3].p, p[3].n);
    qat_tokenizer_free(t);
  }
  fz_end();
  return 0;
}
