/* Thread-local error message storage for qat_status values. */
#include "core/status.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char g_msg[2048];

const char *qat_status_name(qat_status s) {
  switch (s) {
  case QAT_OK: return "ok";
  case QAT_EUSAGE: return "usage";
  case QAT_EINVAL: return "invalid input";
  case QAT_EIO: return "i/o";
  case QAT_EFORMAT: return "format";
  case QAT_EUNSUPPORTED: return "unsupported";
  case QAT_ENOMEM: return "out of memory";
  case QAT_EDEVICE: return "device";
  case QAT_EINTERRUPT: return "interrupted";
  case QAT_EINTERNAL: return "internal";
  }
  return "unknown";
}

const char *qat_last_error(void) { return g_msg; }

int qat_exit_code(qat_status s) {
  if (s == QAT_OK) return 0;
  if (s == QAT_EUSAGE) return 2;
  return 1;
}

void qat_clear_error(void) { g_msg[0] = 0; }

/* A refusal is one line: names taken from files (a tensor or shard name, a JSON key, a path)
 * may hold control bytes, so every one of them in the message becomes '?'. */
static void one_line(void) {
  for (char *c = g_msg; *c; c++)
    if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
}

qat_status qat_fail(qat_status code, const char *file, int line, const char *fmt, ...) {
  const char *base = strrchr(file, '/');
  base = base ? base + 1 : file;
  char body[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(body, sizeof body, fmt, ap);
  va_end(ap);
  snprintf(g_msg, sizeof g_msg, "%s [%s:%d]", body, base, line);
  one_line();
  return code;
}

qat_status qat_context(qat_status code, const char *fmt, ...) {
  char pre[512], old[sizeof g_msg];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(pre, sizeof pre, fmt, ap);
  va_end(ap);
  memcpy(old, g_msg, sizeof old);
  snprintf(g_msg, sizeof g_msg, "%.500s: %.1500s", pre, old);
  one_line();
  return code;
}
