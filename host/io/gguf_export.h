/* A qat model as a llama.cpp GGUF file (qat export --format gguf): gguf_convert.h in reverse.
 *
 *   metadata: general.* (architecture "llama" for llama / mistral, "qwen2" for qwen2; name;
 *     file_type; quantization_version 2) and {arch}.* hyper-parameters from config.json
 *     (context_length, embedding_length, block_count, feed_forward_length, head counts, rope
 *     dimension and freq_base, rms epsilon, vocab_size; key/value_length when head_dim is not
 *     dim / heads); Llama-3.1 rope_scaling as a rope_freqs.weight tensor of llama3 divisors, as
 *     llama.cpp's converter writes it;
 *   tokenizer.ggml.* from the folder's tokenizer (gguf_export_tok.c): tokenizer.json byte-level
 *     BPE -> "gpt2" with the tokenizer.ggml.pre its pre-tokenizer is (smollm, llama-bpe, qwen2,
 *     gpt2); tokenizer.model (SentencePiece) or llama2.c tokenizer.bin -> "llama";
 *   tensors in llama.cpp's names (token_embd, blk.N.attn_q ..., output_norm, output; no
 *     output.weight when the embeddings are tied), attn_q / attn_k rows (and biases) permuted
 *     per head into llama.cpp's interleaved-pair RoPE layout for the llama architecture;
 *     quantized decoder Linears as Q4_0 / Q4_1 / Q8_0 (quant/packed_gguf.h; the largest weight
 *     change the F16 rounding of d and m causes is printed per tensor); everything else in the
 *     float dtype asked for (F32, or F16 for 2-D tensors: 1-D norms and biases stay F32 as
 *     llama.cpp's converter keeps them).
 * The tensors come from a source callback (a loaded model, a packed folder), one at a time; the
 * converted tensors are kept until the file is written (atomically), so the peak memory is the
 * output's size plus the source's (for a Llama-2-7B about 3.9 GB of Q4_0 blocks + 1 GB of F32
 * embeddings and lm_head; an F32 fp export 27 GB). */
#ifndef QAT_IO_GGUF_EXPORT_H
#define QAT_IO_GGUF_EXPORT_H

#include "core/status.h"
#include "io/gguf_write.h"
#include "model/llama.h"
#include "quant/packed.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One tensor from a source, owned by the exporter once returned. */
typedef struct qat_gguf_src {
  int is_packed;     /* 1: a quantized decoder Linear in packed (which the exporter frees) */
  qat_packed packed;
  float *f32;        /* else: the tensor as F32 in its Hugging Face layout (malloc'd) */
  char note[160];    /* a quantized Linear that comes as f32: why (printed) */
} qat_gguf_src;

/* Fills out for the Hugging Face tensor hf_name ([rows, cols]; cols = 1 for 1-D). */
typedef qat_status (*qat_gguf_src_fn)(void *ctx, const char *hf_name, int64_t rows, int64_t cols,
                                      qat_gguf_src *out);

typedef struct qat_gguf_export_opts {
  const char *tok_dir;     /* folder holding the tokenizer files (and tokenizer_config.json) */
  int f16;                 /* 1: unquantized 2-D tensors as F16, else F32 */
  const char *name;        /* general.name (NULL: "qat export") */
  int quiet;               /* 1: no per-tensor lines */
} qat_gguf_export_opts;

typedef struct qat_gguf_export_stats {
  int n_quant, n_float_linear; /* Linears written as Q blocks / as floats */
  double max_err;              /* largest per-tensor weight change (F16 rounding) */
  uint64_t bytes;              /* tensor data bytes */
  uint32_t qtype;              /* the Q type of the quantized Linears (0 when none) */
} qat_gguf_export_stats;

qat_status qat_gguf_export(const qat_llama_config *cfg, qat_gguf_src_fn src, void *ctx,
                           const qat_gguf_export_opts *o, const char *out_path,
                           qat_gguf_export_stats *stats);

/* ---- gguf_export_tok.c ---- */
/* tokenizer.ggml.* (and tokenizer.chat_template) for the tokenizer in dir, with cfg's vocab,
 * BOS and EOS; QAT_EUNSUPPORTED naming the file for kinds GGUF export does not handle; no
 * tokenizer file at all: nothing, *kind = "none". *kind: "gpt2" / "llama" / "none". */
qat_status qat_gguf_export_tokenizer(qat_gguf_writer *w, const char *dir,
                                     const qat_llama_config *cfg, const char **kind);

#ifdef __cplusplus
}
#endif
#endif
