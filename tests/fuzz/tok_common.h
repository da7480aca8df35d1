/* What fuzz_tokenizer_* do with a tokenizer that loaded: encode text with and without BOS,
 * decode every id back piece by piece (ids in range, pieces non-NULL), and split it into
 * documents as `qat tokenize` does. */
#ifndef QAT_FUZZ_TOK_COMMON_H
#define QAT_FUZZ_TOK_COMMON_H
#include "fuzz_util.h"
#include "io/tokenizer.h"

static inline void fz_tok_exercise(qat_tokenizer *t, const char *text, size_t len) {
  int V = qat_tokenizer_vocab(t);
  if (V <= 0) abort();
  for (int bos = 0; bos < 2; bos++) {
    int32_t *ids = NULL;
    int64_t n = 0;
    if (qat_tokenizer_encode(t, text, len, bos, &ids, &n) != QAT_OK) continue;
    for (int64_t i = 0; i < n; i++) {
      if (ids[i] < 0 || ids[i] >= V) abort();
      if (!qat_tokenizer_piece(t, i ? ids[i - 1] : -1, ids[i])) abort();
    }
    free(ids);
  }
  int32_t *ids = NULL;
  int64_t n = 0, ndocs = 0;
  if (qat_tokenize_docs(t, text, len, "blank-line", "all", &ids, &n, &ndocs) == QAT_OK) {
    for (int64_t i = 0; i < n; i++)
      if (ids[i] < 0 || ids[i] >= V) abort();
    free(ids);
  }
}

#endif
