/* Counter-based window sampler (see sampler.h). */
#include "train/sampler.h"

#include <string.h>

#define GOLDEN 0x9E3779B97F4A7C15ull

/* splitmix64's output function (Steele, Lea, Flood 2014). */
static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void qat_window_sampler_init(qat_window_sampler *s, uint64_t seed) {
  s->seed = seed;
  s->counter = 0;
}

/* The seed is mixed first so that nearby seeds (0, 1, 2 ...) give unrelated streams instead of
 * streams shifted by a multiple of the gamma. */
uint64_t qat_window_word(uint64_t seed, uint64_t k) { return mix64(mix64(seed) + (k + 1) * GOLDEN); }

qat_status qat_window_at(uint64_t seed, uint64_t k, int64_t n_tokens, int64_t seq_len,
                          int64_t *start) {
  if (seq_len < 1)
    return QAT_FAIL(QAT_EINVAL, "sampler: seq_len %lld must be >= 1", (long long)seq_len);
  if (n_tokens < seq_len + 1)
    return QAT_FAIL(QAT_EINVAL, "sampler: %lld tokens are fewer than one window of %lld + 1",
                    (long long)n_tokens, (long long)seq_len);
  uint64_t range = (uint64_t)(n_tokens - seq_len); /* number of valid starts */
  /* Lemire's multiply-high maps a 64-bit word onto [0, range): bias <= range / 2^64, far below
   * anything measurable for token streams (< 2^40 tokens), and one word per window keeps the
   * state a plain counter (no rejection loop). */
  unsigned __int128 m = (unsigned __int128)qat_window_word(seed, k) * range;
  *start = (int64_t)(uint64_t)(m >> 64);
  return QAT_OK;
}

qat_status qat_window_next(qat_window_sampler *s, int64_t n_tokens, int64_t seq_len, int64_t *start) {
  QAT_TRY(qat_window_at(s->seed, s->counter, n_tokens, seq_len, start));
  s->counter++;
  return QAT_OK;
}

qat_status qat_windows_gather(uint64_t seed, const int32_t *tokens, int64_t n_tokens,
                              int64_t seq_len, int64_t count, int32_t *out) {
  for (int64_t i = 0; i < count; i++) {
    int64_t start = 0;
    QAT_TRY(qat_window_at(seed, (uint64_t)i, n_tokens, seq_len, &start));
    memcpy(out + i * seq_len, tokens + start, (size_t)seq_len * sizeof *out);
  }
  return QAT_OK;
}

int64_t qat_val_window_count(int64_t n_tokens, int64_t seq_len, int64_t max_windows) {
  if (seq_len < 1 || n_tokens < seq_len) return 0;
  int64_t n = n_tokens / seq_len;
  if (max_windows > 0 && n > max_windows) n = max_windows;
  return n;
}
