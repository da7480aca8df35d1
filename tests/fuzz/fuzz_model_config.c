/* libFuzzer target: a model folder's config.json + model.safetensors, through the entry points
 * every command uses (qat_llama_check_dir: config.json parsed and checked against the
 * safetensors headers; then, when it passes, qat_llama_load on the CPU backend, which must not
 * allocate more than the files hold). Input: u16 little-endian length n of the config text, n
 * bytes of config.json, the rest model.safetensors. Seeds: tests/fuzz/seeds_model_config.py.
 * Build: tests/fuzz/build.sh. */
#include "backend/backend.h"
#include "core/status.h"
#include "model/llama.h"
#include "model/llama_check.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[64];

static int write_file(const char *name, const uint8_t *p, size_t n) {
  char path[128];
  snprintf(path, sizeof path, "%s/%s", g_dir, name);
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t w = n ? fwrite(p, 1, n, f) : 0;
  return fclose(f) == 0 && w == n ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!g_dir[0]) {
    snprintf(g_dir, sizeof g_dir, "/tmp/qat-fuzz-cfg-XXXXXX");
    if (!mkdtemp(g_dir)) abort();
  }
  if (size < 2) return 0;
  size_t n = (size_t)data[0] | (size_t)data[1] << 8;
  if (n > size - 2) n = size - 2;
  if (write_file("config.json", data + 2, n) || write_file("model.safetensors", data + 2 + n,
                                                          size - 2 - n))
    abort();
  qat_llama_config c;
  if (qat_llama_check_dir(g_dir, &c) == QAT_OK) {
    qat_llama *m = NULL;
    if (qat_llama_load(g_dir, qat_backend_cpu(), &m) == QAT_OK) qat_llama_free(m);
  }
  /* every refusal is one line */
  if (strchr(qat_last_error(), '\n')) abort();
  qat_clear_error();
  return 0;
}
