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
  int prompt_tokens; /* BOS + encoded prompt */
  int new_tokens;    /* generated (the stop token not counted) */
  double seconds;    /* of the decode loop */
} qat_generate_stats;

/* Encodes BOS (when the tokenizer has one) + prompt (NULL/"" = BOS only; QAT_EINVAL when that
 * leaves no token), then generates up to steps tokens, stopping at EOS, BOS or max_seq; each
 * piece goes to out as it is produced (then a final newline). */
qat_status qat_generate(qat_llama *m, qat_tokenizer *tok, const char *prompt, int steps,
                        qat_sampler *s, FILE *out, qat_generate_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
