/* qat tokenize: a text file -> a .npy token shard (REFERENCE.md sections 5 and 6), the input
 * of training and of `qat eval`. Documents are BOS + encode(document) (no BOS when the
 * tokenizer has none: Qwen2); the train / held-out split is by whole documents, so the two
 * shards never share a story. */
#include "cli/cli.h"
#include "core/log.h"
#include "io/fsutil.h"
#include "io/npy.h"
#include "io/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

qat_status cmd_tokenize(int argc, char **argv) {
  qat_flag f[] = {
      {"tokenizer", 1, NULL,
       "tokenizer.model, tokenizer.json, tokenizer.bin, or a model folder holding one"},
      {"in", 1, NULL, "input text file"},
      {"out", 1, NULL, "output token shard (.npy, written atomically; uint16 when the vocab fits)"},
      {"docs", 1, NULL,
       "blank-line (default: documents split on blank lines and <|endoftext|>) | none"},
      {"split", 1, NULL, "all (default) | train (first 90% of documents) | heldout (last 10%)"},
      {"vocab", 1, NULL, "vocabulary size of a tokenizer.bin (default: read to end of file); "
                         "for the others, the model's vocab the ids must fit"},
      {"lf", 0, NULL,
       "read CRLF line ends as LF first (WikiText-2's raw file: REFERENCE.md section 5); "
       "--docs blank-line folds them anyway"},
      {"help", 0, NULL, "show this help"},
  };
  const int nf = (int)(sizeof f / sizeof f[0]);
  const char *syn = "--tokenizer T --in TEXT --out TOKENS.npy [--docs blank-line|none] "
                    "[--split all|train|heldout] [--vocab N] [--lf]";
  QAT_TRY(qat_parse_flags(argc, argv, f, nf, "tokenize"));
  if (qat_flag_get(f, nf, "help")) {
    qat_print_usage("tokenize", syn, f, nf);
    return QAT_OK;
  }
  const char *tok_path = qat_flag_get(f, nf, "tokenizer"), *in = qat_flag_get(f, nf, "in"),
             *out = qat_flag_get(f, nf, "out"), *docs = qat_flag_get(f, nf, "docs"),
             *split = qat_flag_get(f, nf, "split");
  if (!tok_path || !in || !out)
    return QAT_FAIL(QAT_EUSAGE, "--tokenizer, --in and --out are required (usage: "
                                "qat tokenize %s)", syn);
  if (!docs) docs = "blank-line";
  if (!split) split = "all";
  /* Checked again by qat_tokenize_docs; here so a typo fails before any work. */
  if (strcmp(docs, "blank-line") && strcmp(docs, "none"))
    return QAT_FAIL(QAT_EUSAGE, "--docs %s: expected blank-line or none", docs);
  if (strcmp(split, "all") && strcmp(split, "train") && strcmp(split, "heldout"))
    return QAT_FAIL(QAT_EUSAGE, "--split %s: expected all, train or heldout", split);
  long vocab;
  QAT_TRY(qat_flag_int(f, nf, "vocab", 0, 1 << 30, 0, &vocab));

  qat_tokenizer *tok = NULL;
  char *text = NULL;
  int32_t *ids = NULL;
  int64_t n = 0, ndocs = 0;
  size_t len = 0;
  qat_status st;
  if (qat_is_dir(tok_path))
    QAT_CHECK(st, qat_tokenizer_load_dir(tok_path, (int)vocab, &tok), done);
  else
    QAT_CHECK(st, qat_tokenizer_load(tok_path, (int)vocab, &tok), done);
  QAT_CHECK(st, qat_read_file(in, &text, &len), done);
  if (qat_flag_get(f, nf, "lf")) { /* CRLF -> LF in place (a lone CR stays) */
    size_t w = 0;
    for (size_t i = 0; i < len; i++)
      if (!(text[i] == '\r' && i + 1 < len && text[i + 1] == '\n')) text[w++] = text[i];
    len = w;
  }
  double t0 = qat_now();
  st = qat_tokenize_docs(tok, text, len, docs, split, &ids, &n, &ndocs);
  double dt = qat_now() - t0;
  if (st != QAT_OK) {
    if (st != QAT_EUSAGE) qat_context(st, "%s", in);
    goto done;
  }
  QAT_CHECK(st, qat_npy_write_tokens(out, ids, n, qat_tokenizer_vocab(tok)), done);
  printf("tokenize: %s (%.2f MB): %lld documents (--docs %s, --split %s), %lld tokens in %.3f s "
         "(%.0f tokens/s) -> %s (%s)\n",
         in, (double)len / 1e6, (long long)ndocs, docs, split, (long long)n, dt,
         dt > 0 ? (double)n / dt : 0.0, out,
         qat_tokenizer_vocab(tok) <= 65536 ? "uint16" : "uint32");
done:
  free(ids);
  free(text);
  qat_tokenizer_free(tok);
  return st;
}
