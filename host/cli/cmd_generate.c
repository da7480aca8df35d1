/* qat generate: sample text from a Hugging Face folder (host/model/generate.c), optionally with
 * RTN fake-quant of the decoder Linears (applied once at load). The prompt runs in one prefill,
 * then one token per step against a KV cache (--no-cache: the whole context every token). Text
 * goes to stdout; prefill and decode speed to stderr. */
#include "backend/backend.h"
#include "cli/cli.h"
#include "io/tokenizer.h"
#include "model/generate.h"
#include "model/llama_packed.h"
#include "quant/quant.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

qat_status cmd_generate(int argc, char **argv) {
  qat_flag f[] = {
      {"model", 1, NULL,
       "Hugging Face model folder (with tokenizer.model, tokenizer.json or tokenizer.bin)"},
      {"prompt", 1, NULL, "text to continue (default: none, BOS only; required without a BOS)"},
      {"steps", 1, NULL, "tokens to generate at most (default 256)"},
      {"temperature", 1, NULL, "sampling temperature; 0 = greedy (default 1.0)"},
      {"top-p", 1, NULL, "nucleus mass (default 0.9; 1 = off)"},
      {"seed", 1, NULL, "random seed (default: from the clock)"},
      {"quant", 1, NULL,
       "RTN fake-quant of the decoder Linears, e.g. rtn:4g128, rtn:2g32:mse (clipping search)"},
      {"device", 1, NULL, "cpu | cuda (default cuda when available; cpu for a packed folder)"},
      {"packed", 0, NULL,
       "run on the folder's packed codes (qat quantize --packed), with the KV cache; detected "
       "without the flag too, which then says so: no F32 Linear weight is built"},
      {"act", 1, NULL,
       "packed weights: int8 (default) quantizes each decode step's activations per 64 or 32 "
       "inputs to int8 and dots them with the codes in integer arithmetic, as llama.cpp's Q8_0 "
       "does (error bound: tests/test_qgemm.c); f32 keeps them F32 (exact up to F32 sums)"},
      {"no-cache", 0, NULL,
       "rerun the whole context for every token instead of using a KV cache (slow; reference)"},
      {"help", 0, NULL, "show this help"},
  };
  const int nf = (int)(sizeof f / sizeof f[0]);
  QAT_TRY(qat_parse_flags(argc, argv, f, nf, "generate"));
  if (qat_flag_get(f, nf, "help")) {
    qat_print_usage("generate", "--model DIR [flags]", f, nf);
    return QAT_OK;
  }
  const char *dir = qat_flag_get(f, nf, "model");
  if (!dir) return QAT_FAIL(QAT_EUSAGE, "qat generate: need --model DIR");
  long steps, seed;
  double temp, top_p;
  QAT_TRY(qat_flag_int(f, nf, "steps", 0, 1L << 24, 256, &steps));
  QAT_TRY(qat_flag_float(f, nf, "temperature", 1.0, &temp));
  QAT_TRY(qat_flag_float(f, nf, "top-p", 0.9, &top_p));
  QAT_TRY(qat_flag_int(f, nf, "seed", 0, 0x7fffffffffffffffL, (long)time(NULL), &seed));
  if (!(temp >= 0.0)) return QAT_FAIL(QAT_EUSAGE, "--temperature %g: must be >= 0", temp);
  if (!(top_p > 0.0 && top_p <= 1.0)) return QAT_FAIL(QAT_EUSAGE, "--top-p %g: must be in (0, 1]", top_p);
  const char *act = qat_flag_get(f, nf, "act");
  if (act && strcmp(act, "int8") && strcmp(act, "f32"))
    return QAT_FAIL(QAT_EUSAGE, "--act %s: must be int8 or f32", act);
  if (act && !qat_llama_dir_is_packed(dir))
    return QAT_FAIL(QAT_EUSAGE, "--act %s: %s has no packed weights (the flag is for packed folders)",
                    act, dir);
  qat_llama *m = NULL;
  qat_tokenizer *tok = NULL;
  qat_status st;
  QAT_CHECK(st, qat_cli_open_model(dir, qat_flag_get(f, nf, "device"), qat_flag_get(f, nf, "quant"),
                                    qat_flag_get(f, nf, "packed") != NULL, &m),
            done);
  /* the backend is a per-process singleton: the setting lasts for this command */
  if (m->packed) m->be->qgemm_act8 = !act || !strcmp(act, "int8");
  QAT_CHECK(st, qat_tokenizer_load_dir(dir, m->cfg.vocab, &tok), done);
  /* Without a BOS (Qwen2) an empty prompt would leave no token to start from. */
  const char *prompt = qat_flag_get(f, nf, "prompt");
  if (qat_tokenizer_bos(tok) < 0 && (!prompt || !prompt[0])) {
    st = QAT_FAIL(QAT_EUSAGE, "qat generate: %s's tokenizer has no BOS token: give a --prompt",
                  dir);
    goto done;
  }
  qat_sampler s;
  qat_sampler_init(&s, (float)temp, (float)top_p, (uint64_t)seed);
  qat_generate_stats gs;
  qat_generate_opts o = {(int)steps, qat_flag_get(f, nf, "no-cache") != NULL};
  QAT_CHECK(st, qat_generate(m, tok, prompt, &o, &s, stdout, &gs), done);
  fprintf(stderr,
          "generate: %d new tokens in %.2f s; prefill %d tokens at %.1f tokens/s; decode %d "
          "steps at %.1f tokens/s (%s%s)\n",
          gs.new_tokens, gs.seconds, gs.prompt_tokens,
          gs.prefill_seconds > 0 ? gs.prompt_tokens / gs.prefill_seconds : 0.0, gs.decode_steps,
          gs.decode_seconds > 0 ? gs.decode_steps / gs.decode_seconds : 0.0,
          o.no_cache ? "no cache" : "kv cache",
          !m->packed ? "" : m->be->qgemm_act8 ? ", int8 activations" : ", F32 activations");
done:
  if (tok) qat_tokenizer_free(tok);
  if (m) qat_llama_free(m);
  return st;
}
