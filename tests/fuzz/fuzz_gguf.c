/* libFuzzer target: a GGUF file, through every command that reads one: `qat inspect FILE.gguf`
 * (cmd_inspect, compiled into this target with its cli files; its stdout goes to /dev/null),
 * qat_gguf_open + qat_gguf_tensor_f32 of every dequantizable tensor (up to 1 M elements), and
 * `qat convert --from gguf` (qat_gguf_convert: config.json, tokenizer files, weights), whose
 * output folder must pass qat_llama_check_dir and nothing but it may be left behind. Seeds:
 * seeds.py gguf (tests/ref/gguf_make.py models and malformed files). */
#include "cli/cli.h"
#include "fuzz_util.h"
#include "io/gguf.h"
#include "io/gguf_convert.h"
#include "model/llama_check.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  if (!freopen("/dev/null", "w", stdout)) abort();
  return 0;
}

static void no_leftovers(const char *dir) {
  char **names = NULL;
  int n = 0;
  if (qat_list_dir(dir, &names, &n) != QAT_OK) abort();
  for (int i = 0; i < n; i++) {
    if (strcmp(names[i], "model.gguf") != 0) {
      fprintf(stderr, "fuzz: qat convert left %s/%s behind\n", dir, names[i]);
      abort();
    }
    free(names[i]);
  }
  free(names);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = fz_dir("gguf");
  char path[256], out[256];
  fz_write(dir, "model.gguf", (fz_part){data, size}, 0);
  fz_path(path, sizeof path, dir, "model.gguf");
  fz_path(out, sizeof out, dir, "out");
  char *argv[] = {path, NULL};
  (void)cmd_inspect(1, argv);
  fz_end();
  qat_gguf_file f;
  if (qat_gguf_open(path, &f) == QAT_OK) {
    for (int64_t i = 0; i < f.n_tensors; i++) {
      const qat_gguf_tensor *t = &f.tensors[i];
      if (qat_gguf_find_tensor(&f, t->name) != t) abort(); /* names are unique */
      if (!qat_gguf_can_dequant(t->type) || t->numel > (1 << 20)) continue;
      float *dst = malloc((size_t)t->numel * sizeof(float) + 1);
      if (!dst) abort();
      if (qat_gguf_tensor_f32(&f, t, dst) != QAT_OK) {
        fprintf(stderr, "fuzz: a validated tensor does not dequantize: %s\n", qat_last_error());
        abort();
      }
      free(dst);
    }
    qat_gguf_close(&f);
  }
  fz_end();
  if (qat_gguf_convert(path, out, "f32", 0) == QAT_OK) {
    qat_llama_config c;
    if (qat_llama_check_dir(out, &c) != QAT_OK) {
      fprintf(stderr, "fuzz: a converted GGUF folder fails the config check: %s\n",
              qat_last_error());
      abort();
    }
    if (qat_rm_rf(out) != QAT_OK) abort();
  }
  no_leftovers(dir);
  fz_end();
  return 0;
}
