/* qat eval: perplexity of a Hugging Face folder on a token shard (.npy), optionally with RTN
 * fake-quant of the decoder Linears (REFERENCE.md section 5 protocol, host/model/eval.c). */
#include "backend/backend.h"
#include "cli/cli.h"
#include "core/log.h"
#include "io/npy.h"
#include "model/eval.h"
#include "quant/quant.h"

#include <stdio.h>
#include <stdlib.h>

qat_status cmd_eval(int argc, char **argv) {
  qat_flag f[] = {
      {"model", 1, NULL, "Hugging Face model folder"},
      {"data", 1, NULL, "token shard (.npy, 1-D)"},
      {"seq-len", 1, NULL, "window length S (default min(max_position_embeddings, 2048))"},
      {"max-windows", 1, NULL, "evaluate at most K windows (default all)"},
      {"batch", 1, NULL, "windows per forward (default 1)"},
      {"quant", 1, NULL,
       "RTN fake-quant of the decoder Linears, e.g. rtn:4g128, rtn:2g32:mse (clipping search)"},
      {"device", 1, NULL, "cpu | cuda (default cuda when available; cpu for a packed folder)"},
      {"packed", 0, NULL,
       "run on the folder's packed codes (qat quantize --packed; detected without the flag too, "
       "which then says so): no F32 Linear weight is built"},
      {"json", 0, NULL, "print one JSON line {nll, ppl, tokens, windows} on stdout"},
      {"help", 0, NULL, "show this help"},
  };
  const int nf = (int)(sizeof f / sizeof f[0]);
  QAT_TRY(qat_parse_flags(argc, argv, f, nf, "eval"));
  if (qat_flag_get(f, nf, "help")) {
    qat_print_usage("eval", "--model DIR --data TOKENS.npy [flags]", f, nf);
    return QAT_OK;
  }
  const char *dir = qat_flag_get(f, nf, "model"), *data = qat_flag_get(f, nf, "data");
  if (!dir || !data) return QAT_FAIL(QAT_EUSAGE, "qat eval: need --model DIR and --data TOKENS.npy");
  long seq_len, max_windows, batch;
  QAT_TRY(qat_flag_int(f, nf, "seq-len", 0, 1L << 20, 0, &seq_len));
  QAT_TRY(qat_flag_int(f, nf, "max-windows", 0, 1L << 40, 0, &max_windows));
  QAT_TRY(qat_flag_int(f, nf, "batch", 1, 1 << 16, 1, &batch));
  const char *qs = qat_flag_get(f, nf, "quant");
  int32_t *tokens = NULL;
  int64_t n = 0;
  QAT_TRY(qat_npy_read_tokens(data, &tokens, &n));
  qat_llama *m = NULL;
  qat_status st;
  QAT_CHECK(st, qat_cli_open_model(dir, qat_flag_get(f, nf, "device"), qs,
                                    qat_flag_get(f, nf, "packed") != NULL, &m), done);
  if (seq_len == 0) seq_len = m->cfg.max_seq < 2048 ? m->cfg.max_seq : 2048;
  qat_eval_result r;
  QAT_CHECK(st, qat_eval_ppl(m, tokens, n, (int)seq_len, max_windows, (int)batch, &r), done);
  if (qat_flag_get(f, nf, "json"))
    printf("{\"nll\": %.9f, \"ppl\": %.9f, \"tokens\": %lld, \"windows\": %lld}\n", r.nll, r.ppl,
           (long long)r.tokens, (long long)r.windows);
  else
    printf("%s%s%s: nll %.6f ppl %.4f (%lld predictions in %lld windows of %ld, %.1f s)\n", dir,
           qs ? " " : "", qs ? qs : "", r.nll, r.ppl, (long long)r.tokens, (long long)r.windows,
           seq_len, r.seconds);
done:
  if (m) qat_llama_free(m);
  free(tokens);
  return st;
}
