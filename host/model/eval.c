/* Perplexity evaluation (REFERENCE.md section 5). Cross-entropy runs on the model's backend (the
 * xent op, no gradient) so only one float per token comes back to the host, where the sum is taken
 * in double: with millions of predictions a float sum would lose digits.
 *
 * Dimension letters: B windows per forward, S window length, V vocab. */
#include "model/eval.h"

#include "core/log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

qat_status qat_eval_ppl(qat_llama *m, const int32_t *tokens, int64_t n, int seq_len,
                        int64_t max_windows, int batch, qat_eval_result *r) {
  memset(r, 0, sizeof *r);
  const int S = seq_len, V = m->cfg.vocab;
  if (S < 2 || S > m->cfg.max_seq)
    return QAT_FAIL(QAT_EINVAL, "eval: seq_len %d must be in [2, max_position_embeddings = %d]", S,
                    m->cfg.max_seq);
  if (batch < 1) return QAT_FAIL(QAT_EINVAL, "eval: batch %d must be >= 1", batch);
  int64_t windows = n / S;
  if (max_windows > 0 && windows > max_windows) windows = max_windows;
  if (windows < 1)
    return QAT_FAIL(QAT_EINVAL, "eval: %lld tokens make no window of %d tokens", (long long)n, S);
  for (int64_t i = 0; i < windows * S; i++)
    if (tokens[i] < 0 || tokens[i] >= V)
      return QAT_FAIL(QAT_EINVAL, "eval: token %lld = %d is outside the vocabulary [0, %d)",
                      (long long)i, tokens[i], V);
  if (batch > windows) batch = (int)windows;
  QAT_TRY(qat_llama_plan(m, batch, S, 0));

  const qat_backend *be = m->be;
  const int64_t N = (int64_t)batch * S;
  qat_arena arena;
  size_t cap = qat_arena_need(QAT_I32, N) + qat_arena_need(QAT_F32, N);
  QAT_TRY(qat_arena_init(&arena, be, "eval", cap));
  qat_status st = QAT_OK;
  int32_t *targets = malloc((size_t)N * sizeof *targets); /* [B*S] host */
  float *losses = malloc((size_t)N * sizeof *losses);     /* [B*S] host */
  qat_tensor d_targets, d_losses;                         /* same, on the device */
  if (!targets || !losses) {
    st = QAT_FAIL(QAT_ENOMEM, "eval: out of memory");
    goto done;
  }
  int64_t shape[1] = {N};
  QAT_CHECK(st, qat_arena_tensor(&arena, &d_targets, QAT_I32, 1, shape, "eval.targets"), done);
  QAT_CHECK(st, qat_arena_tensor(&arena, &d_losses, QAT_F32, 1, shape, "eval.losses"), done);

  double sum = 0.0, t0 = qat_now();
  int64_t count = 0;
  qat_progress p;
  qat_progress_start(&p, "eval", windows);
  for (int64_t w0 = 0; w0 < windows; w0 += batch) {
    int b = (int)(windows - w0 < batch ? windows - w0 : batch);
    int64_t nb = (int64_t)b * S;
    const int32_t *x = tokens + w0 * S; /* [b, S] */
    for (int64_t i = 0; i < b; i++)
      for (int t = 0; t < S; t++) targets[i * S + t] = t + 1 < S ? x[i * S + t + 1] : -1;
    QAT_CHECK(st, qat_llama_forward(m, x, b, S), done);
    /* views over the first b windows of the planned buffers */
    qat_tensor logits = qat_view2(m->logits.data, QAT_F32, be->device, nb, V);
    qat_tensor tg = qat_view1(d_targets.data, QAT_I32, be->device, nb);
    qat_tensor ls = qat_view1(d_losses.data, QAT_F32, be->device, nb);
    QAT_CHECK(st, be->upload(be, tg.data, targets, (size_t)nb * sizeof *targets), done);
    QAT_CHECK(st, QAT_OP(be, xent, &logits, &tg, &ls, NULL, 0.0f), done);
    QAT_CHECK(st, be->download(be, losses, ls.data, (size_t)nb * sizeof *losses), done);
    for (int64_t i = 0; i < nb; i++)
      if (targets[i] >= 0) {
        sum += losses[i];
        count++;
      }
    if (!isfinite(sum)) {
      st = QAT_FAIL(QAT_EINVAL, "eval: non-finite loss in windows %lld..%lld", (long long)w0,
                    (long long)(w0 + b - 1));
      goto done;
    }
    char extra[64];
    snprintf(extra, sizeof extra, "nll %.4f", sum / (double)count);
    qat_progress_update(&p, w0 + b, extra);
  }
  r->windows = windows;
  r->tokens = count;
  r->nll = sum / (double)count;
  r->ppl = exp(r->nll);
  r->seconds = qat_now() - t0;
  {
    char extra[96];
    snprintf(extra, sizeof extra, "nll %.4f ppl %.3f", r->nll, r->ppl);
    qat_progress_end(&p, extra);
  }
done:
  free(targets);
  free(losses);
  qat_arena_free(&arena);
  return st;
}
