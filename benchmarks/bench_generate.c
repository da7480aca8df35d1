/* Generation benchmark: prefill and decode tokens/s of qat_generate_ids (host/model/generate.c)
 * on a Hugging Face folder, greedy, never stopping early (no EOS), so every run decodes exactly
 * --new tokens after a prompt of --prompt token ids drawn with a fixed seed (no tokenizer
 * involved: the same lengths as llama-bench's -d PROMPT -n NEW test, benchmarks/peer_llamacpp.sh).
 * Prints one line per repetition; --json one JSON object per line.
 *
 * Usage: bench_generate --model DIR [--device cpu|cuda] [--prompt 16] [--new 128] [--reps 3]
 *                       [--no-cache] [--quant rtn:4g128] [--json] [--ids] [--act int8|f32]
 * A folder of packed weights (qat quantize --packed) runs on its codes (model/llama_packed.h);
 * --act picks qgemm's activation precision there (default int8, as `qat generate`).
 * --ids also prints the generated ids (greedy: equal with and without --no-cache). */
#include "backend/backend.h"
#include "core/log.h"
#include "model/generate.h"
#include "model/llama_packed.h"
#include "quant/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void) {
  fprintf(stderr, "usage: bench_generate --model DIR [--device cpu|cuda] [--prompt N] [--new N] "
                  "[--reps N] [--no-cache] [--quant SPEC] [--json] [--ids] [--act int8|f32]\n");
}

int main(int argc, char **argv) {
  const char *dir = NULL, *device = "cpu", *quant = NULL, *act = "int8";
  int P = 16, NEW = 128, reps = 3, no_cache = 0, json = 0, print_ids = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--no-cache")) no_cache = 1;
    else if (!strcmp(a, "--json")) json = 1;
    else if (!strcmp(a, "--ids")) print_ids = 1;
    else if (v && !strcmp(a, "--model")) dir = argv[++i];
    else if (v && !strcmp(a, "--device")) device = argv[++i];
    else if (v && !strcmp(a, "--quant")) quant = argv[++i];
    else if (v && !strcmp(a, "--act") && (!strcmp(v, "int8") || !strcmp(v, "f32"))) act = argv[++i];
    else if (v && !strcmp(a, "--prompt")) P = atoi(argv[++i]);
    else if (v && !strcmp(a, "--new")) NEW = atoi(argv[++i]);
    else if (v && !strcmp(a, "--reps")) reps = atoi(argv[++i]);
    else {
      usage();
      return 2;
    }
  }
  if (!dir || P < 1 || NEW < 1 || reps < 1) {
    usage();
    return 2;
  }
  qat_backend *be;
  qat_llama *m = NULL;
  qat_qspec q;
  int32_t *ids = malloc((size_t)P * sizeof *ids), *gen = malloc((size_t)NEW * sizeof *gen);
  if (!ids || !gen) return 1;
  int packed = qat_llama_dir_is_packed(dir);
  if ((quant && qat_quant_parse(quant, &q) != QAT_OK) || qat_backend_by_name(device, &be) != QAT_OK ||
      (packed ? qat_llama_load_packed(dir, be, &m) : qat_llama_load(dir, be, &m)) != QAT_OK ||
      (quant && qat_llama_set_quant(m, &q) != QAT_OK)) {
    fprintf(stderr, "bench_generate: %s\n", qat_last_error());
    return 1;
  }
  uint64_t r = 0x9e3779b97f4a7c15ull; /* fixed prompt ids in [100, min(V, 40000)) */
  int hi = m->cfg.vocab < 40000 ? m->cfg.vocab : 40000;
  for (int i = 0; i < P; i++) {
    r ^= r << 13, r ^= r >> 7, r ^= r << 17;
    ids[i] = hi > 100 ? 100 + (int32_t)(r % (uint64_t)(hi - 100)) : (int32_t)(r % (uint64_t)hi);
  }
  if (packed) be->qgemm_act8 = !strcmp(act, "int8");
  const char *wt = packed ? (be->qgemm_act8 ? "packed-int8act" : "packed-f32act") : quant ? "fake-quant" : "f32";
  qat_generate_opts o = {NEW, no_cache};
  for (int k = 0; k < reps; k++) {
    qat_sampler s;
    qat_sampler_init(&s, 0.0f, 1.0f, 1);
    qat_generate_stats st;
    if (qat_generate_ids(m, ids, P, &o, -1, &s, gen, &st) != QAT_OK) {
      fprintf(stderr, "bench_generate: %s\n", qat_last_error());
      return 1;
    }
    double pf = st.prefill_seconds > 0 ? P / st.prefill_seconds : 0;
    double dc = st.decode_seconds > 0 ? st.decode_steps / st.decode_seconds : 0;
    if (json)
      printf("{\"device\": \"%s\", \"weights\": \"%s\", \"cache\": %s, \"prompt\": %d, \"new\": %d, "
             "\"prefill_tps\": %.2f, \"decode_tps\": %.2f, \"decode_steps\": %d}\n",
             device, wt, no_cache ? "false" : "true", P, st.new_tokens, pf, dc, st.decode_steps);
    else
      printf("bench_generate: %s %s %s prompt %d new %d: prefill %.1f tokens/s, decode %.2f "
             "tokens/s (%d steps)\n",
             device, wt, no_cache ? "no-cache" : "kv-cache", P, st.new_tokens, pf, dc,
             st.decode_steps);
    if (print_ids) { /* the generated ids, to compare the cache with --no-cache */
      printf("ids:");
      for (int i = 0; i < st.new_tokens; i++) printf(" %d", gen[i]);
      printf("\n");
    }
    fflush(stdout);
  }
  qat_llama_free(m);
  free(ids);
  free(gen);
  return 0;
}
