/* Text generation: sampling (greedy, temperature, top-p) and a streaming decode loop. */
#ifndef QAT_MODEL_GENERATE_H
#define QAT_MODEL_GENERATE_H

#include "io/tokenizer.h"
#include "model/llama.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_sampler {
  float temperature; /* 0: greedy argmax */
  float top_p;       /* nucleus mass in (0, 1); >= 1 or <= 0: sample from the full distribution */
  uint64_t rng;      /* xorshift state (never 0) */
} qat_sampler;

void qat_sampler_init(qat_sampler *s, float temperature, float top_p, uint64_t seed);
/* Picks a token from logits[V] (host; overwritten with probabilities when temperature > 0). */
int qat_sample(qat_sampler *s, float *logits, int V);

typedef struct qat_generate_stats {
  int prompt_tokens;      /* BOS + encoded prompt */
  int new_tokens;         /* generated (the stop token not counted) */
  double seconds;         /* of the whole generation loop (prefill + decode) */
  double prefill_seconds; /* the first forward: the prompt, giving the first new token's logits */
  int decode_steps;       /* forwards after it, one per further token */
  double decode_seconds;  /* their time, sampling and printing included */
} qat_generate_stats;

typedef struct qat_generate_opts {
  int steps;    /* tokens to generate at most (>= 0) */
  int no_cache; /* 1: rerun the whole context every token (O(T^2); the reference path) */
} qat_generate_opts;

/* Encodes BOS (when the tokenizer has one) + prompt (NULL/"" = BOS only; QAT_EINVAL when that
 * leaves no token), then generates up to o->steps tokens, stopping at EOS, BOS or max_seq; each
 * piece goes to out as it is produced (then a final newline). By default the prompt runs in one
 * prefill and each new token in one step against a KV cache (model/llama_decode.h) sized for
 * prompt + steps (capped at max_seq); greedy output equals the no-cache path's. */
qat_status qat_generate(qat_llama *m, qat_tokenizer *tok, const char *prompt,
                        const qat_generate_opts *o, qat_sampler *s, FILE *out,
                        qat_generate_stats *stats);
/* The same from token ids (no tokenizer: nothing is printed), for benchmarks and tests; the ids
 * generated go to gen[steps] (NULL: not kept). stop_id >= 0 ends generation at that id. */
qat_status qat_generate_ids(qat_llama *m, const int32_t *prompt, int n, const qat_generate_opts *o,
                            int stop_id, qat_sampler *s, int32_t *gen, qat_generate_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
