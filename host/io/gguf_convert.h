/* qat convert --from gguf: a GGUF file of a llama / mistral / qwen2 model -> a Hugging Face folder
 * (config.json, model.safetensors, tokenizer files), published atomically (fsutil.h: a failure
 * leaves no output folder). What is written, and how it matches tests/ref/gguf_ref.py:
 *   tensors: dequantized to float32 (gguf_dequant.c; --dtype bf16 rounds to nearest even),
 *     renamed to Hugging Face names, attn_q / attn_k rows un-permuted per head for llama and
 *     mistral (llama.cpp's converter interleaves RoPE pairs; qwen2 is stored unpermuted);
 *     no output.weight -> tie_word_embeddings; rope_freqs.weight (Llama-3.1 style) is not a
 *     weight but the llama3 rope_scaling, recovered into config.json;
 *   config.json from {arch}.* keys (gguf_config.c);
 *   tokenizer (gguf_tokenizer.c): tokenizer.ggml.model "gpt2" -> a byte-level BPE tokenizer.json
 *     with the pre-tokenizer tokenizer.ggml.pre names; "llama" -> a SentencePiece tokenizer.model
 *     (BPE by score, byte fallback, dummy prefix); tokenizer_config.json with BOS / EOS,
 *     add_bos_token, add_eos_token and the chat template. */
#ifndef QAT_IO_GGUF_CONVERT_H
#define QAT_IO_GGUF_CONVERT_H

#include "core/status.h"
#include "io/gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dtype: "f32" or "bf16". The weights go into model.safetensors, or into shards
 * model-0000i-of-0000N.safetensors of at most shard_bytes each (0: QAT_GGUF_SHARD_BYTES; one
 * larger tensor makes a shard of its own) listed by model.safetensors.index.json. */
#define QAT_GGUF_SHARD_BYTES ((uint64_t)4 << 30)
qat_status qat_gguf_convert(const char *gguf_path, const char *out_dir, const char *dtype,
                            uint64_t shard_bytes);

/* ---- shared by gguf_convert.c, gguf_config.c, gguf_tokenizer.c ---- */

/* The pre-tokenizer regexes of tokenizer.ggml.pre "llama-bpe" and "qwen2" as their Hugging Face
 * tokenizer.json files spell them (gguf_tokenizer.c writes them, gguf_export_tok.c recognizes
 * them). */
#define QAT_GGUF_LLAMA3_RE                                                                         \
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?"                      \
  "[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QAT_GGUF_QWEN2_RE                                                                          \
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?"                           \
  "[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct qat_gguf_hparams {
  char arch[16]; /* llama | mistral | qwen2 */
  int64_t n_layers, dim, ffn, heads, kv_heads, head_dim, ctx, vocab;
  double eps, theta;
  int tied;
  int has_bos, has_eos;
  int64_t bos, eos;
  /* rope_scaling: rope_type "" (none), "llama3", "linear" or "yarn" */
  char rope_type[16];
  double rope_factor, rope_lo, rope_hi;
  int64_t rope_orig;
} qat_gguf_hparams;

/* {arch}.* keys (required ones named in the error when absent), checked for sanity; vocab from
 * {arch}.vocab_size, else tokenizer.ggml.tokens, else token_embd's rows; rope.scaling.* keys. */
qat_status qat_gguf_read_hparams(const qat_gguf_file *f, qat_gguf_hparams *h);
/* rope_freqs.weight's factors [head_dim / 2] -> llama3 rope_scaling (exactly reproduced, or an
 * error naming the tensor). */
qat_status qat_gguf_rope_llama3(const qat_gguf_file *f, const float *factors, int64_t n,
                                qat_gguf_hparams *h);
qat_status qat_gguf_write_config(const qat_gguf_hparams *h, const char *torch_dtype,
                                 const char *dir);
/* Checks tokenizer.ggml.* (before anything is written) and writes the tokenizer files into dir;
 * with dir NULL only checks. No tokenizer.ggml.model: nothing (a warning). */
qat_status qat_gguf_write_tokenizer(const qat_gguf_file *f, const qat_gguf_hparams *h,
                                    const char *dir);

#ifdef __cplusplus
}
#endif
#endif
