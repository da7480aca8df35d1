/* libFuzzer target: the text `qat tokenize` reads (any bytes: invalid UTF-8, NUL bytes, CR, huge
 * lines, <|endoftext|> markers), through qat_tokenize_docs with the tokenizers of the folder
 * $QAT_FUZZ_TOKDIR (tokenizer.json, tokenizer.bin and/or tokenizer.model, as seeds.py
 * tokenize_text writes them). The first input byte picks the tokenizer, the document mode
 * (blank-line | none), the split (all | train | heldout) and --lf; the rest is the text. */
#include "fuzz_util.h"
#include "io/tokenizer.h"

static qat_tokenizer *g_tok[3];
static int g_ntok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  const char *dir = getenv("QAT_FUZZ_TOKDIR");
  if (!dir) {
    fprintf(stderr, "fuzz_tokenize_text: set QAT_FUZZ_TOKDIR (tests/fuzz/seeds.py tokenize_text)\n");
    exit(2);
  }
  const char *names[3] = {"tokenizer.json", "tokenizer.bin", "tokenizer.model"};
  for (int i = 0; i < 3; i++) {
    char path[512];
    fz_path(path, sizeof path, dir, names[i]);
    if (!qat_path_exists(path)) continue;
    if (qat_tokenizer_load(path, 0, &g_tok[g_ntok]) != QAT_OK) {
      fprintf(stderr, "fuzz_tokenize_text: %s\n", qat_last_error());
      exit(2);
    }
    g_ntok++;
  }
  if (!g_ntok) {
    fprintf(stderr, "fuzz_tokenize_text: no tokenizer in %s\n", dir);
    exit(2);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t sel = data[0];
  qat_tokenizer *t = g_tok[sel % g_ntok];
  const char *mode = (sel >> 2) & 1 ? "none" : "blank-line";
  const char *splits[4] = {"all", "train", "heldout", "all"};
  const char *split = splits[(sel >> 3) & 3];
  size_t len = size - 1;
  char *text = malloc(len + 1);
  if (!text) abort();
  memcpy(text, data + 1, len);
  if ((sel >> 5) & 1) { /* --lf, as cmd_tokenize does it */
    size_t w = 0;
    for (size_t i = 0; i < len; i++)
      if (!(text[i] == '\r' && i + 1 < len && text[i + 1] == '\n')) text[w++] = text[i];
    len = w;
  }
  int32_t *ids = NULL;
  int64_t n = 0, ndocs = 0;
  if (qat_tokenize_docs(t, text, len, mode, split, &ids, &n, &ndocs) == QAT_OK) {
    int V = qat_tokenizer_vocab(t);
    for (int64_t i = 0; i < n; i++)
      if (ids[i] < 0 || ids[i] >= V) abort();
    if (ndocs < 0 || (!strcmp(mode, "none") && ndocs > 1)) abort();
    free(ids);
  }
  free(text);
  fz_end();
  return 0;
}
