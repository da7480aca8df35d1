/* Training and validation windows over a token stream.
 * Training: random windows of seq_len + 1 tokens (seq_len inputs, the same shifted by one as
 * next-token targets), drawn with a counter-based RNG, so the whole sampler state is two integers
 * (seed, counter): a checkpoint stores them and a resumed run draws exactly the same windows.
 * Window k of a stream is a pure function of (seed, k), which also lets data-parallel ranks take
 * disjoint indices of one shared stream (e.g. k = step * world * batch + rank * batch + b).
 * Validation (REFERENCE.md section 5): non-overlapping windows of seq_len tokens from position 0,
 * the remainder dropped; each contributes seq_len - 1 next-token predictions. */
#ifndef QAT_TRAIN_SAMPLER_H
#define QAT_TRAIN_SAMPLER_H

#include "core/status.h"
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_window_sampler {
  uint64_t seed;
  uint64_t counter; /* windows drawn so far */
} qat_window_sampler;

void qat_window_sampler_init(qat_window_sampler *s, uint64_t seed);

/* The 64-bit random word number k of stream `seed`: splitmix64's finalizer applied to
 * mix(seed) + (k + 1) * golden gamma, i.e. splitmix64 jumped straight to position k. */
uint64_t qat_window_word(uint64_t seed, uint64_t k);

/* Start of window k: uniform in [0, n_tokens - seq_len - 1] (a window holds seq_len + 1 tokens).
 * QAT_EINVAL when seq_len < 1 or the stream is shorter than one window. */
qat_status qat_window_at(uint64_t seed, uint64_t k, int64_t n_tokens, int64_t seq_len,
                          int64_t *start);
/* The next window start; advances the counter by one (only on success). */
qat_status qat_window_next(qat_window_sampler *s, int64_t n_tokens, int64_t seq_len, int64_t *start);

/* out[count * seq_len] = the first count windows of stream `seed` over tokens[n_tokens], back
 * to back (seq_len tokens each; calibration sets of Block-AP and GPTQ). QAT_EINVAL as
 * qat_window_at. */
qat_status qat_windows_gather(uint64_t seed, const int32_t *tokens, int64_t n_tokens,
                              int64_t seq_len, int64_t count, int32_t *out);

/* Validation windows: count = floor(n_tokens / seq_len), capped at max_windows when > 0;
 * window i covers tokens [i * seq_len, (i + 1) * seq_len). 0 when the stream is too short. */
int64_t qat_val_window_count(int64_t n_tokens, int64_t seq_len, int64_t max_windows);
static inline int64_t qat_val_window_start(int64_t i, int64_t seq_len) { return i * seq_len; }

#ifdef __cplusplus
}
#endif
#endif
