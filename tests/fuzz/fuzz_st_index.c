/* libFuzzer target: a sharded model folder, through qat_st_set_open (every model loader's first
 * step): parts model.safetensors.index.json, model-00001-of-00002.safetensors,
 * model-00002-of-00002.safetensors (an empty index part means no index: then the first shard
 * part is model.safetensors). Every tensor the set holds is then looked up by name. Seeds:
 * seeds.py st_index. */
#include "fuzz_util.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = fz_dir("idx");
  fz_part p[3];
  fz_split(data, size, 3, p);
  fz_write(dir, "model.safetensors.index.json", p[0], 1);
  if (p[0].n) {
    fz_write(dir, "model-00001-of-00002.safetensors", p[1], 1);
    fz_write(dir, "model-00002-of-00002.safetensors", p[2], 1);
    fz_write(dir, "model.safetensors", (fz_part){0}, 1);
  } else {
    fz_write(dir, "model.safetensors", p[1], 0);
  }
  qat_st_set s;
  if (qat_st_set_open(dir, &s) == QAT_OK) {
    for (int i = 0; i < s.nfiles; i++)
      for (int j = 0; j < s.files[i].n; j++) {
        const qat_st_file *in = NULL;
        if (!qat_st_set_find(&s, s.files[i].tensors[j].name, &in) || in != &s.files[i]) abort();
      }
    qat_st_set_close(&s);
  }
  fz_end();
  return 0;
}
