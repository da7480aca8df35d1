/* libFuzzer target: a SentencePiece tokenizer.model, through qat_tokenizer_load (the
 * sentencepiece library parses the proto; qat checks the pieces, BOS/EOS and byte pieces), then
 * a text encoded, decoded and split (tok_common.h). Parts: tokenizer.model, text. Seeds:
 * seeds.py tokenizer_spm (the Llama-2 tokenizer.model from the assets, a small trained model). */
#include "tok_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = fz_dir("spm");
  char path[256];
  fz_part p[2];
  fz_split(data, size, 2, p);
  fz_write(dir, "tokenizer.model", p[0], 0);
  qat_tokenizer *t = NULL;
  if (qat_tokenizer_load(fz_path(path, sizeof path, dir, "tokenizer.model"), 0, &t) == QAT_OK) {
    fz_tok_exercise(t, (const char *)p[1].p, p[1].n);
    qat_tokenizer_free(t);
  }
  fz_end();
  return 0;
}
