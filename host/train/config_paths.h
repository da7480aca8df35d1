/* Run directories that work from anywhere: the path keys of a job config made absolute before
 * the job saves its effective config.yaml, so `qat export --checkpoint RUN` and a resume read the
 * same model and data whatever directory they are started from. */
#ifndef QAT_TRAIN_CONFIG_PATHS_H
#define QAT_TRAIN_CONFIG_PATHS_H

#include "train/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* model, data.train, data.val, checkpoint.dir and block_ap.cache_dir: a relative path becomes
 * cwd/path (symbolic links and ".." kept as written, so a path that does not exist yet, like a new
 * checkpoint.dir, resolves the same way as one that does); absolute paths and unset keys stay. */
qat_status qat_config_absolute_paths(qat_config *cfg);

#ifdef __cplusplus
}
#endif
#endif
