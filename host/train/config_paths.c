/* Absolute path keys of a job config (config_paths.h). */
#include "train/config_paths.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static qat_status absolute(char **p, const char *key) {
  if (!*p || !**p || (*p)[0] == '/') return QAT_OK;
  char cwd[4096];
  if (!getcwd(cwd, sizeof cwd))
    return QAT_FAIL(QAT_EIO, "%s: cannot read the working directory to make \"%s\" absolute",
                    key, *p);
  const char *rel = *p;
  while (rel[0] == '.' && rel[1] == '/') rel += 2; /* ./x -> x */
  size_t n = strlen(cwd) + 1 + strlen(rel) + 1;
  char *abs = malloc(n);
  if (!abs) return QAT_FAIL(QAT_ENOMEM, "%s: out of memory", key);
  if (!strcmp(rel, ".") || !*rel)
    snprintf(abs, n, "%s", cwd);
  else
    snprintf(abs, n, "%s/%s", cwd, rel);
  free(*p);
  *p = abs;
  return QAT_OK;
}

qat_status qat_config_absolute_paths(qat_config *cfg) {
  QAT_TRY(absolute(&cfg->model, "model"));
  QAT_TRY(absolute(&cfg->data.train, "data.train"));
  QAT_TRY(absolute(&cfg->data.val, "data.val"));
  QAT_TRY(absolute(&cfg->checkpoint.dir, "checkpoint.dir"));
  QAT_TRY(absolute(&cfg->block_ap.cache_dir, "block_ap.cache_dir"));
  return QAT_OK;
}
