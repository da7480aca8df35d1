/* Tokenizers: llama2.c tokenizer.bin (REFERENCE.md section 6, implemented here), SentencePiece
 * tokenizer.model (through the sentencepiece library, spm_shim.cc) and Hugging Face tokenizer.json
 * BPE as real models ship it: byte-level (GPT-2, Llama-3, Qwen2, SmolLM2) and SentencePiece-style
 * with byte fallback (Llama-2, Mistral) (tokenizer_hf*.c: the `tokenizers` library's semantics
 * for that subset; other tokenizer.json kinds are refused with the file and the key).
 *
 * BOS / EOS of a tokenizer.json: the ids are the folder's tokenizer_config.json "bos_token" /
 * "eos_token" (null means none), else its config.json "bos_token_id" / "eos_token_id", else the
 * file's TemplateProcessing post-processor, else an added token named <|begin_of_text|> or <s>
 * (BOS), <|end_of_text|>, <|endoftext|> or </s> (EOS). Whether documents get them:
 * tokenizer_config.json "add_bos_token" / "add_eos_token" when present (SmolLM2 and Qwen2 say
 * add_bos_token: false), else what the template adds (single: [BOS] $A [EOS]), else BOS yes, EOS
 * no. Without a BOS qat_tokenizer_bos is -1, nothing is prepended anywhere and documents are
 * simply concatenated. */
#ifndef QAT_IO_TOKENIZER_H
#define QAT_IO_TOKENIZER_H

#include "core/status.h"
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_tokenizer qat_tokenizer;

/* By content: a SentencePiece model proto, a llama2.c tokenizer.bin or a tokenizer.json (the
 * file alone: no tokenizer_config.json is read). vocab_hint is the vocab size for tokenizer.bin
 * (which does not store it; 0 = infer from file length); a SentencePiece model must have exactly
 * that many pieces, a tokenizer.json's ids must be below it. */
qat_status qat_tokenizer_load(const char *path, int vocab_hint, qat_tokenizer **out);
/* Finds tokenizer.model, else tokenizer.json (with the folder's BOS / EOS), else tokenizer.bin in
 * a model folder. */
qat_status qat_tokenizer_load_dir(const char *dir, int vocab_hint, qat_tokenizer **out);
void qat_tokenizer_free(qat_tokenizer *t);
int qat_tokenizer_vocab(const qat_tokenizer *t);
/* The id prepended to documents: 1 for Llama-2 / llama2.c; -1 when none. */
int qat_tokenizer_bos(const qat_tokenizer *t);
int qat_tokenizer_eos(const qat_tokenizer *t); /* the stop token: 2; -1 when none */
/* The id appended to each document by qat_tokenize_docs (add_eos_token, a template's
 * "$A [EOS]"); -1 when none (the usual case). */
int qat_tokenizer_doc_eos(const qat_tokenizer *t);
/* ids (malloc'd) = [BOS if bos and the tokenizer has one] + encode(text[0..len)). */
qat_status qat_tokenizer_encode(const qat_tokenizer *t, const char *text, size_t len, int bos,
                                int32_t **ids, int64_t *n);
/* Text of one token for streaming output (leading space after BOS stripped, <0xNN> bytes
 * decoded; a byte-level token's bytes, possibly part of a UTF-8 character, so a stream of pieces
 * concatenates to the text); prev is the previous id, -1 for the first. Returns a pointer valid
 * until the next call. */
const char *qat_tokenizer_piece(qat_tokenizer *t, int prev, int id);

/* Documents of a text file: mode "blank-line" splits on blank lines and on <|endoftext|>
 * (empty documents dropped); "none" is one document. Each document becomes BOS + encode(doc)
 * [+ qat_tokenizer_doc_eos] (just encode(doc) for a tokenizer without BOS).
 * split: "all", "train" (first 90% of documents), "heldout" (last 10%; REFERENCE.md section 5). */
qat_status qat_tokenize_docs(const qat_tokenizer *t, const char *text, size_t len,
                             const char *mode, const char *split, int32_t **ids, int64_t *n,
                             int64_t *ndocs);

#ifdef __cplusplus
}
#endif
#endif
