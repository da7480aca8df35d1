/* qat train CONFIG.yaml [key.sub=value ...]: runs a training job (train/trainer.h).
 * SIGINT / SIGTERM ask the job to save a checkpoint and stop; re-running the same command
 * resumes from the newest checkpoint. */
#include "cli/cli.h"
#include "core/log.h"
#include "dist/dist.h"
#include "train/config_paths.h"
#include "train/trainer.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static void on_signal(int sig) {
  (void)sig;
  qat_train_request_stop();
}

qat_status cmd_train(int argc, char **argv) {
  if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
    printf("usage: qat train CONFIG.yaml [key.sub=value ...]\n"
           "  keys are documented in configs/README.md; the effective config is printed and\n"
           "  saved as checkpoint.dir/config.yaml; re-running resumes from the newest checkpoint\n");
    return argc < 1 ? QAT_FAIL(QAT_EUSAGE, "missing CONFIG.yaml") : QAT_OK;
  }
  for (int i = 1; i < argc; i++)
    if (!strchr(argv[i], '='))
      return QAT_FAIL(QAT_EUSAGE, "override \"%s\": expected key.sub=value", argv[i]);
  qat_config cfg;
  QAT_TRY(qat_config_load(argv[0], (const char *const *)argv + 1, argc - 1, &cfg));
  /* the run directory must not depend on where this command was started */
  qat_status pst = qat_config_absolute_paths(&cfg);
  if (pst != QAT_OK) {
    qat_config_free(&cfg);
    return pst;
  }
  qat_dist_env env; /* launched on several ranks: rank 0 prints the config */
  if (qat_dist_env_detect(&env) != QAT_OK || env.rank == 0) {
    fprintf(stderr, "# effective config\n");
    qat_config_print(&cfg, stderr);
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  qat_status st = qat_train_run(&cfg);
  qat_config_free(&cfg);
  return st;
}
