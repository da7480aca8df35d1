/* libFuzzer target: a .npy token shard, through qat_npy_read_tokens (what the trainer and
 * qat eval call on data.train / data.val / --tokens). Every token it returns is >= 0. Seeds:
 * seeds.py npy. */
#include "fuzz_util.h"
#include "io/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = fz_dir("npy");
  char path[256];
  fz_write(dir, "tokens.npy", (fz_part){data, size}, 0);
  int32_t *tok = NULL;
  int64_t n = 0;
  if (qat_npy_read_tokens(fz_path(path, sizeof path, dir, "tokens.npy"), &tok, &n) == QAT_OK) {
    if (n < 0 || (uint64_t)n * 2 > size) abort(); /* at least 2 bytes per token on disk */
    for (int64_t i = 0; i < n; i++)
      if (tok[i] < 0) abort();
    free(tok);
  }
  fz_end();
  return 0;
}
