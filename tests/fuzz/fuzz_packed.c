/* libFuzzer target: a packed-weight file (what `qat quantize --packed` writes), through
 * `qat inspect` (cmd_inspect, compiled in; stdout to /dev/null), which validates the
 * "qat_packed" metadata and reads every packed Linear, and then what the exporters do with each
 * Linear: qat_packed_st_read, dequantize up to 64 rows, and the GPTQ repacking
 * (qat_packed_to_gptq). Seeds: seeds.py packed. */
#include "cli/cli.h"
#include "fuzz_util.h"
#include "quant/packed.h"
#include "quant/packed_gptq.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  if (!freopen("/dev/null", "w", stdout)) abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = fz_dir("packed");
  char path[256];
  fz_write(dir, "model.safetensors", (fz_part){data, size}, 0);
  fz_path(path, sizeof path, dir, "model.safetensors");
  char *argv[] = {path, NULL};
  (void)cmd_inspect(1, argv);
  fz_end();
  qat_st_file f;
  if (qat_st_open(path, &f) == QAT_OK) {
    for (int i = 0; qat_packed_st_is_packed(&f) && i < f.n; i++) {
      const char *name = f.tensors[i].name;
      size_t len = strlen(name);
      if (len < 7 || strcmp(name + len - 7, ".qcodes") != 0 || len - 7 >= 200) continue;
      char base[208];
      memcpy(base, name, len - 7);
      base[len - 7] = 0;
      qat_packed p;
      if (qat_packed_st_read(&f, base, &p) != QAT_OK) continue;
      int64_t rows = p.N < 64 ? p.N : 64;
      float *w = malloc((size_t)(rows * p.K) * sizeof(float) + 1);
      if (!w) abort();
      qat_packed_dequant(&p, 0, rows, w);
      free(w);
      qat_gptq_tensors g;
      if (qat_packed_to_gptq(&p, base, &g) == QAT_OK) qat_gptq_tensors_free(&g);
      qat_packed_free(&p);
      fz_end();
    }
    qat_st_close(&f);
  }
  fz_end();
  return 0;
}
