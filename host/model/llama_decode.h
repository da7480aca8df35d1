/* Incremental LLaMA forward for generation: a KV cache per layer, the prompt in one prefill, then
 * one token per step against the cached keys and values (llama_decode.c).
 *
 * A decoder holds one sequence. Its arena (on the model's backend) keeps K and V of every layer,
 * [S, Hkv, D] each in the model's act_dtype with S = max_ctx, and the activations of one chunk
 * of up to max_chunk tokens; nothing is allocated per token. The model's compute weights (w_hat:
 * fake-quant of the masters when quantized) are refreshed once, when the decoder is made: the
 * model must not change (weights, set_quant, act_dtype) while a decoder uses it.
 *
 * Same ops as qat_llama_forward: a chunk at position 0 runs attention_fwd (causal) over itself;
 * later tokens run attention_decode against the cache. Logits equal the whole-context forward's
 * last row up to float rounding (GEMV vs GEMM accumulation order). */
#ifndef QAT_MODEL_LLAMA_DECODE_H
#define QAT_MODEL_LLAMA_DECODE_H

#include "model/llama.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_llama_decoder qat_llama_decoder;

/* A decoder for up to max_ctx positions (1 <= max_ctx <= cfg.max_seq; <= sliding_window when the
 * model has one) taking chunks of up to max_chunk tokens (1 <= max_chunk <= max_ctx). */
qat_status qat_llama_decoder_new(qat_llama *m, int max_ctx, int max_chunk,
                                 qat_llama_decoder **out);
void qat_llama_decoder_free(qat_llama_decoder *d);

/* Appends tokens[n] (host ids, 1 <= n <= max_chunk) at positions len .. len + n - 1 and writes
 * the last one's logits to logits[V] (host F32; NULL: not computed). Refused with QAT_EINVAL and
 * nothing changed when len + n exceeds max_ctx (the cache is full) or an id is outside the
 * vocab. */
qat_status qat_llama_decoder_step(qat_llama_decoder *d, const int32_t *tokens, int n,
                                  float *logits);

int qat_llama_decoder_len(const qat_llama_decoder *d);     /* positions in the cache */
int qat_llama_decoder_max_ctx(const qat_llama_decoder *d); /* S */
void qat_llama_decoder_reset(qat_llama_decoder *d);        /* empties the cache */
/* Bytes of the decoder's arena (KV cache + chunk activations). */
size_t qat_llama_decoder_bytes(const qat_llama_decoder *d);

#ifdef __cplusplus
}
#endif
#endif
