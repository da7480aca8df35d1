/* libFuzzer target: a YAML job config with key=value overrides, through qat_config_load (what
 * `qat train CONFIG.yaml key=value...` calls: libcyaml parse, overrides in order, validation),
 * then the round trip every run relies on (its saved config.yaml is what resume and export
 * read): a config that loads prints, saves, reloads with no overrides, and prints the same text
 * and equal keys, and so does its absolute-paths form. Parts: config.yaml, overrides (one per
 * line, at most 8). Seeds: seeds.py config_yaml (the configs/ folder of the repository). */
#include "fuzz_util.h"
#include "train/config.h"
#include "train/config_paths.h"

static void round_trip(const qat_config *cfg, const char *dir) {
  char *s1 = NULL, *s2 = NULL, path[256];
  fz_path(path, sizeof path, dir, "saved.yaml");
  if (qat_config_to_string(cfg, &s1) != QAT_OK || qat_config_save(cfg, path) != QAT_OK) {
    fprintf(stderr, "fuzz: a loaded config does not print or save: %s\n", qat_last_error());
    abort();
  }
  qat_config back;
  if (qat_config_load(path, NULL, 0, &back) != QAT_OK) {
    fprintf(stderr, "fuzz: the saved config does not load back: %s\n--- saved:\n%s\n",
            qat_last_error(), s1);
    abort();
  }
  if (qat_config_to_string(&back, &s2) != QAT_OK || strcmp(s1, s2) != 0 ||
      !qat_config_equal(cfg, &back)) {
    fprintf(stderr, "fuzz: config round trip differs\n--- first:\n%s\n--- reloaded:\n%s\n", s1,
            s2 ? s2 : "(none)");
    abort();
  }
  free(s1);
  free(s2);
  qat_config_free(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = fz_dir("yaml");
  char path[256];
  fz_part p[2];
  fz_split(data, size, 2, p);
  fz_write(dir, "config.yaml", p[0], 0);
  char *ovr_text = fz_strdup(p[1]);
  const char *ovr[8];
  int n = 0;
  for (char *s = ovr_text, *e; s && *s && n < 8; s = e ? e + 1 : NULL) {
    e = strchr(s, '\n');
    if (e) *e = 0;
    ovr[n++] = s;
  }
  qat_config cfg;
  if (qat_config_load(fz_path(path, sizeof path, dir, "config.yaml"), ovr, n, &cfg) == QAT_OK) {
    round_trip(&cfg, dir);
    if (qat_config_absolute_paths(&cfg) == QAT_OK) round_trip(&cfg, dir);
    qat_config_free(&cfg);
  }
  free(ovr_text);
  fz_end();
  return 0;
}
