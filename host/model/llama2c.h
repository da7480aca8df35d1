/* llama2.c checkpoints (karpathy/llama2.c run.c "legacy" format) -> Hugging Face Llama folders.
 *
 * Format: a 28-byte header of 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 * vocab_size, seq_len; a negative vocab_size means an untied classifier), then float32 tensors:
 * token_embedding [V, C], rms_att [L, C], wq [L, C, C], wk [L, Hkv*D, C], wv [L, Hkv*D, C],
 * wo [L, C, C], rms_ffn [L, C], w1 [L, F, C], w2 [L, C, F], w3 [L, F, C], rms_final [C],
 * freq_cis_real [S, D/2], freq_cis_imag [S, D/2] (unused), then wcls [V, C] when untied.
 * The converter permutes wq/wk rows per head: llama2.c rotates interleaved pairs, HF halves. */
#ifndef QAT_MODEL_LLAMA2C_H
#define QAT_MODEL_LLAMA2C_H

#include "core/status.h"
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_llama2c_header {
  int dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len;
  int tied; /* vocab_size > 0 in the file */
} qat_llama2c_header;

/* Parses and validates the header of a file of file_size bytes (positive dims, heads | dim,
 * kv_heads | heads, even head dim, size exactly as implied). Errors name path. */
qat_status qat_llama2c_parse_header(const char *path, const void *hdr28, uint64_t file_size,
                                    qat_llama2c_header *h);

/* Converts MODEL.bin into an HF folder out_dir (config.json, model.safetensors F32, and
 * tokenizer.bin copied from tokenizer_path when non-NULL), published atomically. */
qat_status qat_llama2c_convert(const char *model_path, const char *tokenizer_path,
                               const char *out_dir);

/* Row permutation for one projection of n_heads heads of head_dim rows each, rows of `cols`
 * floats: interleaved-pair RoPE layout -> rotate-half layout (HF convert_llama_weights_to_hf):
 * within a head, new row j = old row 2j, new row j + D/2 = old row 2j + 1. */
void qat_llama2c_permute_rope(const float *src, float *dst, int n_heads, int head_dim,
                              int64_t cols);

#ifdef __cplusplus
}
#endif
#endif
