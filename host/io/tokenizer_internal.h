/* Private to host/io/tokenizer*.c and spm_shim.cc: the three tokenizer back ends behind
 * tokenizer.h. llama2.c's tokenizer.bin BPE lives in tokenizer_bpe.c; SentencePiece models go
 * through the sentencepiece C++ library in spm_shim.cc (which catches every C++ exception);
 * Hugging Face tokenizer.json BPE (Llama-3, Qwen2, GPT-2, SmolLM2, Llama-2, Mistral) is
 * tokenizer_hf*.c. */
#ifndef QAT_IO_TOKENIZER_INTERNAL_H
#define QAT_IO_TOKENIZER_INTERNAL_H

#include "core/status.h"
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A growable int32 vector: encoders append to it so documents share one output buffer. */
typedef struct qat_ivec {
  int32_t *v;
  int64_t n, cap;
} qat_ivec;
qat_status qat_ivec_reserve(qat_ivec *a, int64_t extra);
qat_status qat_ivec_push(qat_ivec *a, int32_t x);

/* llama2.c tokenizer.bin (REFERENCE.md section 6). data/size: the whole file; vocab_hint 0 reads
 * token records until the end of the file. */
typedef struct qat_bpe qat_bpe;
qat_status qat_bpe_load(const char *path, const unsigned char *data, size_t size, int vocab_hint,
                        qat_bpe **out);
void qat_bpe_free(qat_bpe *b);
int qat_bpe_vocab(const qat_bpe *b);
/* The raw vocabulary string of id (not NUL-terminated; *len bytes); NULL when out of range. */
const char *qat_bpe_str(const qat_bpe *b, int id, int *len);
/* Appends encode(text) exactly as llama2.c run.c's encode() (no BOS/EOS) to out. */
qat_status qat_bpe_encode(const qat_bpe *b, const char *text, size_t len, qat_ivec *out);

/* SentencePiece model proto (the bytes of tokenizer.model). */
typedef struct qat_spm qat_spm;
/* Loads a model proto; its normalization tables are checked first (qat_spm_check_tables). */
qat_status qat_spm_load(const char *path, const void *data, size_t size, qat_spm **out);
/* spm_check.c: the precompiled_charsmap tables of the normalizer and denormalizer specs, which
 * sentencepiece reads without bounds checks, walked state by state; QAT_EFORMAT naming path. */
qat_status qat_spm_check_tables(const char *path, const void *data, size_t size);
void qat_spm_free(qat_spm *s);
int qat_spm_vocab(const qat_spm *s);
int qat_spm_bos(const qat_spm *s); /* -1 when the model has none */
int qat_spm_eos(const qat_spm *s);
/* Appends the ids of text (no BOS/EOS) to out. */
qat_status qat_spm_encode(const qat_spm *s, const char *text, size_t len, qat_ivec *out);
enum { QAT_SPM_NORMAL = 0, QAT_SPM_CONTROL = 1, QAT_SPM_BYTE = 2, QAT_SPM_UNKNOWN = 3 };
/* The piece string of id (pointer owned by the model, *len bytes) and its kind; NULL when id is
 * out of range. */
const char *qat_spm_piece(const qat_spm *s, int id, size_t *len, int *kind);
/* The piece's score, and its SentencePiece type (1 normal, 2 unknown, 3 control, 5 unused,
 * 6 byte; user-defined pieces read as normal; 0 when id is out of range): GGUF export. */
float qat_spm_score(const qat_spm *s, int id);
int qat_spm_type(const qat_spm *s, int id);

/* Hugging Face tokenizer.json (BPE: byte-level or SentencePiece-style; the subset and its
 * semantics: tokenizer_hf*.c). data/size: the whole file. BOS / EOS come from the file alone
 * (the post-processor's template, else added tokens named <|begin_of_text|> / <s>,
 * <|end_of_text|> / <|endoftext|> / </s>; -1 when none); qat_hf_load_folder overrides them from
 * dir's tokenizer_config.json ("bos_token", "eos_token": a string, {"content": ...} or null;
 * "add_bos_token", "add_eos_token"), else its config.json ("bos_token_id", "eos_token_id"). */
typedef struct qat_hf qat_hf;
qat_status qat_hf_load(const char *path, const char *data, size_t size, qat_hf **out);
qat_status qat_hf_load_folder(qat_hf *h, const char *dir);
void qat_hf_free(qat_hf *h);
int qat_hf_vocab(const qat_hf *h); /* max id + 1 over model.vocab and added_tokens */
int qat_hf_bos(const qat_hf *h);     /* the id prepended to a document; -1 when none */
int qat_hf_eos(const qat_hf *h);     /* the stop token; -1 when none */
int qat_hf_eos_add(const qat_hf *h); /* the id appended to a document; -1 when none */
/* Leading spaces the decoder strips from a token: the text's first (first = 1) or any other. */
int qat_hf_strip(const qat_hf *h, int first);
/* Appends the ids of text (no BOS/EOS) to out; invalid UTF-8 is read as U+FFFD per maximal
 * ill-formed subsequence. */
qat_status qat_hf_encode(const qat_hf *h, const char *text, size_t len, qat_ivec *out);
/* The bytes id stands for (*len of them, not NUL-terminated; possibly part of a UTF-8
 * character); NULL when id is out of range. */
const char *qat_hf_piece(const qat_hf *h, int id, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
