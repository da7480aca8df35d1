/* Generation: the sampler follows llama2.c's run.c (argmax at temperature 0; softmax of
 * logits / T; top-p keeps the smallest set of most likely tokens whose mass exceeds p).
 *
 * The loop: one forward over the prompt (the prefill) gives the first new token's logits; each
 * further token is one step of the KV-cache decoder (model/llama_decode.h). With no_cache every
 * token reruns the whole-context forward instead, O(T^2): the reference path greedy generation
 * through the cache is tested against (tests/test_generate_cache.sh). */
#include "model/generate.h"

#include "model/llama_decode.h"

#include "core/log.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void qat_sampler_init(qat_sampler *s, float temperature, float top_p, uint64_t seed) {
  s->temperature = temperature;
  s->top_p = top_p;
  s->rng = splitmix64(seed);
  if (s->rng == 0) s->rng = 0x2545f4914f6cdd1dull;
}

/* xorshift64* (as llama2.c), a float in [0, 1) from the top 24 bits. */
static float rand_f32(qat_sampler *s) {
  s->rng ^= s->rng >> 12;
  s->rng ^= s->rng << 25;
  s->rng ^= s->rng >> 27;
  uint32_t u = (uint32_t)((s->rng * 0x2545f4914f6cdd1dull) >> 32);
  return (float)(u >> 8) / 16777216.0f;
}

static int argmax(const float *x, int n) {
  int best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best]) best = i;
  return best;
}

typedef struct {
  float p;
  int i;
} prob_index;

static int cmp_desc(const void *a, const void *b) {
  float x = ((const prob_index *)a)->p, y = ((const prob_index *)b)->p;
  return x > y ? -1 : x < y ? 1 : 0;
}

int qat_sample(qat_sampler *s, float *logits, int V) {
  if (s->temperature <= 0.0f) return argmax(logits, V);
  /* probabilities = softmax(logits / T), in place */
  float mx = logits[argmax(logits, V)];
  double z = 0.0;
  for (int i = 0; i < V; i++) {
    logits[i] = expf((logits[i] - mx) / s->temperature);
    z += logits[i];
  }
  for (int i = 0; i < V; i++) logits[i] = (float)(logits[i] / z);
  float r = rand_f32(s);
  if (s->top_p <= 0.0f || s->top_p >= 1.0f) {
    float cdf = 0.0f;
    for (int i = 0; i < V; i++) {
      cdf += logits[i];
      if (r < cdf) return i;
    }
    return V - 1; /* rounding */
  }
  /* top-p: tokens below (1 - p) / (V - 1) can never be in the nucleus, so drop them before the
   * sort (llama2.c's trick; the sort is then over a handful of candidates). */
  prob_index *pi = malloc((size_t)V * sizeof *pi);
  if (!pi) return argmax(logits, V); /* degrade rather than fail mid-stream */
  const float cutoff = (1.0f - s->top_p) / (float)(V > 1 ? V - 1 : 1);
  int n = 0;
  for (int i = 0; i < V; i++)
    if (logits[i] >= cutoff) pi[n++] = (prob_index){logits[i], i};
  if (n == 0) { /* a near-uniform distribution can fall entirely below the cutoff */
    free(pi);
    return argmax(logits, V);
  }
  qsort(pi, (size_t)n, sizeof *pi, cmp_desc);
  float cum = 0.0f;
  int last = n - 1;
  for (int i = 0; i < n; i++) {
    cum += pi[i].p;
    if (cum > s->top_p) {
      last = i;
      break;
    }
  }
  float u = r * cum, cdf = 0.0f;
  int pick = pi[last].i;
  for (int i = 0; i <= last; i++) {
    cdf += pi[i].p;
    if (u < cdf) {
      pick = pi[i].i;
      break;
    }
  }
  free(pi);
  return pick;
}

/* Prints a piece, skipping a lone ASCII control byte (raw control bytes from byte fallback, as
 * llama2.c's safe_printf). Bytes >= 0x80 pass: byte-level BPE tokens (Llama-3, Qwen2) are often
 * one byte of a multi-byte UTF-8 character, completed by the next token. */
static void put_piece(FILE *out, const char *piece) {
  if (!piece || !piece[0]) return;
  if (piece[1] == 0) {
    unsigned char c = (unsigned char)piece[0];
    if (c < 0x80 && !(isprint(c) || isspace(c))) return;
  }
  fputs(piece, out);
  fflush(out);
}

/* Where generated tokens go: printed through the tokenizer (text mode) and / or kept as ids. */
typedef struct gen_sink {
  qat_tokenizer *tok; /* NULL: nothing printed */
  FILE *out;
  int stop1, stop2; /* ids that end generation (-1: none) */
  int32_t *gen;     /* [steps] or NULL */
} gen_sink;

/* ctx[tmax] holds the prompt in [0, n); generates into ctx[n, tmax). */
static qat_status gen_loop(qat_llama *m, int32_t *ctx, int64_t n, int64_t tmax,
                           const qat_generate_opts *o, qat_sampler *s, const gen_sink *k,
                           qat_generate_stats *stats) {
  const int V = m->cfg.vocab;
  qat_status st = QAT_OK;
  qat_llama_decoder *dec = NULL;
  float *row = malloc((size_t)V * sizeof *row); /* [V] logits of the last position */
  if (!row) return QAT_FAIL(QAT_ENOMEM, "generate: out of memory");
  if (tmax > n) {
    if (o->no_cache)
      QAT_CHECK(st, qat_llama_plan(m, 1, (int)tmax, 0), done);
    else
      QAT_CHECK(st, qat_llama_decoder_new(m, (int)tmax, (int)n, &dec), done);
  }
  double t0 = qat_now(), t1 = t0;
  int64_t T = n;
  while (T < tmax) {
    /* logits of position T - 1: the prompt at once, then the token appended last */
    if (dec) {
      int64_t nnew = T == n ? n : 1;
      QAT_CHECK(st, qat_llama_decoder_step(dec, ctx + T - nnew, (int)nnew, row), done);
    } else {
      QAT_CHECK(st, qat_llama_forward(m, ctx, 1, (int)T), done);
      const float *last = (const float *)m->logits.data + (T - 1) * (int64_t)V;
      QAT_CHECK(st, m->be->download(m->be, row, last, (size_t)V * sizeof *row), done);
    }
    if (T == n) {
      t1 = qat_now();
      stats->prefill_seconds = t1 - t0;
    } else {
      stats->decode_steps++;
    }
    int next = qat_sample(s, row, V);
    if (next == k->stop1 || next == k->stop2) break;
    if (k->tok) put_piece(k->out, qat_tokenizer_piece(k->tok, ctx[T - 1], next));
    if (k->gen) k->gen[T - n] = next;
    ctx[T++] = next;
    stats->new_tokens++;
  }
  double t2 = qat_now();
  stats->seconds = t2 - t0;
  stats->decode_seconds = stats->decode_steps ? t2 - t1 : 0.0;
done:
  qat_llama_decoder_free(dec);
  free(row);
  return st;
}

/* Checks the prompt ids and copies them into a fresh ctx[tmax] (tmax = n + steps, capped). */
static qat_status gen_prepare(const qat_llama *m, const int32_t *ids, int64_t n, int steps,
                              int32_t **ctx, int64_t *tmax) {
  const int V = m->cfg.vocab, max_seq = m->cfg.max_seq;
  *ctx = NULL;
  if (steps < 0) return QAT_FAIL(QAT_EINVAL, "generate: steps %d must be >= 0", steps);
  if (n == 0)
    return QAT_FAIL(QAT_EINVAL, "generate: no token to start from (the tokenizer has no BOS and "
                                "the prompt is empty)");
  if (n > max_seq)
    return QAT_FAIL(QAT_EINVAL, "generate: the prompt is %lld tokens, more than max_seq %d",
                    (long long)n, max_seq);
  for (int64_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= V)
      return QAT_FAIL(QAT_EINVAL, "generate: prompt token %d is outside the model's vocab %d",
                      ids[i], V);
  *tmax = n + steps < max_seq ? n + steps : max_seq;
  *ctx = malloc((size_t)*tmax * sizeof **ctx);
  if (!*ctx) return QAT_FAIL(QAT_ENOMEM, "generate: out of memory");
  memcpy(*ctx, ids, (size_t)n * sizeof **ctx);
  return QAT_OK;
}

qat_status qat_generate(qat_llama *m, qat_tokenizer *tok, const char *prompt,
                        const qat_generate_opts *o, qat_sampler *s, FILE *out,
                        qat_generate_stats *stats) {
  memset(stats, 0, sizeof *stats);
  const int bos = qat_tokenizer_bos(tok), eos = qat_tokenizer_eos(tok);
  int32_t *ids = NULL, *ctx = NULL;
  int64_t n = 0, tmax = 0;
  QAT_TRY(qat_tokenizer_encode(tok, prompt ? prompt : "", prompt ? strlen(prompt) : 0, 1, &ids,
                               &n));
  qat_status st;
  QAT_CHECK(st, gen_prepare(m, ids, n, o->steps, &ctx, &tmax), done);
  stats->prompt_tokens = (int)n;
  /* echo the prompt as the tokenizer decodes it (from token 1 after a BOS, else from 0) */
  for (int64_t i = bos >= 0 && ctx[0] == bos ? 1 : 0; i < n; i++)
    put_piece(out, qat_tokenizer_piece(tok, i > 0 ? ctx[i - 1] : -1, ctx[i]));
  gen_sink k = {tok, out, eos, bos, NULL};
  QAT_CHECK(st, gen_loop(m, ctx, n, tmax, o, s, &k, stats), done);
  fputc('\n', out);
  fflush(out);
done:
  free(ids);
  free(ctx);
  return st;
}

qat_status qat_generate_ids(qat_llama *m, const int32_t *prompt, int n, const qat_generate_opts *o,
                            int stop_id, qat_sampler *s, int32_t *gen, qat_generate_stats *stats) {
  memset(stats, 0, sizeof *stats);
  int32_t *ctx = NULL;
  int64_t tmax = 0;
  QAT_TRY(gen_prepare(m, prompt, n, o->steps, &ctx, &tmax));
  stats->prompt_tokens = n;
  gen_sink k = {NULL, NULL, stop_id, -1, gen};
  qat_status st = gen_loop(m, ctx, n, tmax, o, s, &k, stats);
  free(ctx);
  return st;
}
