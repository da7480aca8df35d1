/* Logging and progress. Library code may log (to stderr); only main() exits.
 * A progress meter shows one live line on a terminal and plain periodic lines otherwise. */
#ifndef QAT_CORE_LOG_H
#define QAT_CORE_LOG_H

#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { QAT_LOG_QUIET = 0, QAT_LOG_INFO = 1, QAT_LOG_DEBUG = 2 } qat_log_level;
void qat_log_set_level(qat_log_level l);
/* Silence info logs (nested progress of an inner job) and restore them. */
void qat_log_level_push_quiet(void);
void qat_log_level_pop(void);
void qat_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));   /* info, stderr */
void qat_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* debug, stderr */
void qat_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));  /* always shown */

/* Monotonic seconds. */
double qat_now(void);

typedef struct qat_progress {
  const char *what;
  int64_t total, done;
  double t0, last_print;
  int tty;
} qat_progress;
void qat_progress_start(qat_progress *p, const char *what, int64_t total);
/* extra: a short suffix ("loss 2.31 lr 1e-4") or NULL; rate is units per second. */
void qat_progress_update(qat_progress *p, int64_t done, const char *extra);
void qat_progress_end(qat_progress *p, const char *extra);

#ifdef __cplusplus
}
#endif
#endif
