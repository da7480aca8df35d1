/* Perplexity by the GPTQ / EfficientQAT protocol (REFERENCE.md section 5): the token stream is cut
 * into non-overlapping windows of S tokens (the remainder dropped), each run independently from
 * position 0; each window contributes its S - 1 next-token predictions; nll = mean cross-entropy
 * (nats) over all predictions, ppl = exp(nll). */
#ifndef QAT_MODEL_EVAL_H
#define QAT_MODEL_EVAL_H

#include "model/llama.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_eval_result {
  double nll;      /* mean next-token cross-entropy, nats */
  double ppl;      /* exp(nll) */
  int64_t tokens;  /* predictions counted: windows * (S - 1) */
  int64_t windows; /* windows evaluated */
  double seconds;
} qat_eval_result;

/* tokens[n] (host); seq_len S in [2, max_seq]; max_windows <= 0: all windows; batch >= 1 windows
 * per forward. Token ids must lie in [0, vocab). Shows progress on stderr. Plans the model's
 * activations for (batch, S) without training buffers. */
qat_status qat_eval_ppl(qat_llama *m, const int32_t *tokens, int64_t n, int seq_len,
                        int64_t max_windows, int batch, qat_eval_result *r);

#ifdef __cplusplus
}
#endif
#endif
