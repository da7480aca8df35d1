/* stderr logging and a progress meter (rate and ETA). */
#include "core/log.h"

#include <stdarg.h>
#include <time.h>
#include <unistd.h>

static qat_log_level g_level = QAT_LOG_INFO;
void qat_log_set_level(qat_log_level l) { g_level = l; }
static qat_log_level g_saved[8];
static int g_depth;
void qat_log_level_push_quiet(void) {
  if (g_depth < 8) g_saved[g_depth] = g_level;
  g_depth++;
  if (g_level > QAT_LOG_QUIET) g_level = QAT_LOG_QUIET;
}
void qat_log_level_pop(void) {
  if (g_depth > 0 && --g_depth < 8) g_level = g_saved[g_depth];
}

#define VLOG(prefix)                                                                               \
  do {                                                                                             \
    va_list ap;                                                                                    \
    va_start(ap, fmt);                                                                             \
    fputs(prefix, stderr);                                                                         \
    vfprintf(stderr, fmt, ap);                                                                     \
    fputc('\n', stderr);                                                                           \
    va_end(ap);                                                                                    \
  } while (0)

void qat_log(const char *fmt, ...) {
  if (g_level >= QAT_LOG_INFO) VLOG("");
}
void qat_debug(const char *fmt, ...) {
  if (g_level >= QAT_LOG_DEBUG) VLOG("debug: ");
}
void qat_warn(const char *fmt, ...) { VLOG("warning: "); }

double qat_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void qat_progress_start(qat_progress *p, const char *what, int64_t total) {
  p->what = what;
  p->total = total;
  p->done = 0;
  p->t0 = p->last_print = qat_now();
  p->tty = isatty(2);
}

static void fmt_eta(double s, char *buf, size_t n) {
  if (s < 0 || s > 1e7) {
    snprintf(buf, n, "--");
    return;
  }
  int h = (int)(s / 3600), m = (int)(s / 60) % 60, sec = (int)s % 60;
  if (h)
    snprintf(buf, n, "%dh%02dm", h, m);
  else
    snprintf(buf, n, "%dm%02ds", m, sec);
}

static void print_line(qat_progress *p, const char *extra, int final) {
  double el = qat_now() - p->t0;
  double rate = el > 0 ? p->done / el : 0;
  char eta[32];
  fmt_eta(rate > 0 ? (p->total - p->done) / rate : -1, eta, sizeof eta);
  fprintf(stderr, "%s%s %lld/%lld  %.1f/s  ETA %s  %s%s", p->tty ? "\r\033[K" : "", p->what,
          (long long)p->done, (long long)p->total, rate, eta, extra ? extra : "",
          (!p->tty || final) ? "\n" : "");
  fflush(stderr);
}

void qat_progress_update(qat_progress *p, int64_t done, const char *extra) {
  p->done = done;
  if (g_level < QAT_LOG_INFO) return;
  double now = qat_now();
  double every = p->tty ? 0.2 : 10.0;
  if (now - p->last_print < every && done != p->total) return;
  p->last_print = now;
  print_line(p, extra, 0);
}

void qat_progress_end(qat_progress *p, const char *extra) {
  if (g_level < QAT_LOG_INFO) return;
  print_line(p, extra, 1);
}
