/* libFuzzer target: one .safetensors file, through qat_st_open (what every loader calls on each
 * file) and qat_st_read_f32 of every float tensor (the copy loaders make). Seeds:
 * seeds.py safetensors. Build: tests/fuzz/build.sh. */
#include "fuzz_util.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = fz_dir("st");
  char path[256];
  fz_write(dir, "model.safetensors", (fz_part){data, size}, 0);
  qat_st_file f;
  if (qat_st_open(fz_path(path, sizeof path, dir, "model.safetensors"), &f) == QAT_OK) {
    for (int i = 0; i < f.n; i++) {
      const qat_st_tensor *t = &f.tensors[i];
      if (qat_st_find(&f, t->name) == NULL) abort(); /* every listed tensor is found by name */
      if (t->dtype != QAT_F32 && t->dtype != QAT_F16 && t->dtype != QAT_BF16) continue;
      float *dst = malloc((size_t)qat_st_numel(t) * sizeof(float) + 1);
      if (!dst) abort();
      (void)qat_st_read_f32(t, dst);
      free(dst);
    }
    for (int i = 0; i < f.nmeta; i++)
      if (qat_st_meta(&f, f.meta_keys[i]) == NULL) abort();
    qat_st_close(&f);
  }
  fz_end();
  return 0;
}
