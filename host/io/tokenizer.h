/* Tokenizers: llama2.c tokenizer.bin (REFERENCE.md section 6, implemented here) and
 * SentencePiece tokenizer.model (through the sentencepiece library, spm_shim.cc). */
#ifndef QAT_IO_TOKENIZER_H
#define QAT_IO_TOKENIZER_H

#include "core/status.h"
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_tokenizer qat_tokenizer;

/* By content: a SentencePiece model proto or a llama2.c tokenizer.bin. vocab_hint is the vocab
 * size for tokenizer.bin (which does not store it; 0 = infer from file length). */
qat_status qat_tokenizer_load(const char *path, int vocab_hint, qat_tokenizer **out);
/* Finds tokenizer.model or tokenizer.bin in a model folder. */
qat_status qat_tokenizer_load_dir(const char *dir, int vocab_hint, qat_tokenizer **out);
void qat_tokenizer_free(qat_tokenizer *t);
int qat_tokenizer_vocab(const qat_tokenizer *t);
int qat_tokenizer_bos(const qat_tokenizer *t); /* 1 for Llama-2 / llama2.c */
int qat_tokenizer_eos(const qat_tokenizer *t); /* 2 */
/* ids (malloc'd) = [BOS if bos] + encode(text[0..len)). */
qat_status qat_tokenizer_encode(const qat_tokenizer *t, const char *text, size_t len, int bos,
                                int32_t **ids, int64_t *n);
/* Text of one token for streaming output (leading space after BOS stripped, <0xNN> bytes
 * decoded); returns a pointer valid until the next call. */
const char *qat_tokenizer_piece(qat_tokenizer *t, int prev, int id);

/* Documents of a text file: mode "blank-line" splits on blank lines and on <|endoftext|>
 * (empty documents dropped); "none" is one document. Each document becomes BOS + encode(doc).
 * split: "all", "train" (first 90% of documents), "heldout" (last 10%; REFERENCE.md section 5). */
qat_status qat_tokenize_docs(const qat_tokenizer *t, const char *text, size_t len,
                             const char *mode, const char *split, int32_t **ids, int64_t *n,
                             int64_t *ndocs);

#ifdef __cplusplus
}
#endif
#endif
