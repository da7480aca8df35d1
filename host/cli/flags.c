/* Flag parsing for subcommands. */
#include "cli/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

qat_status qat_parse_flags(int argc, char **argv, qat_flag *flags, int nflags, const char *cmd) {
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strncmp(a, "--", 2) != 0)
      return QAT_FAIL(QAT_EUSAGE, "qat %s: unexpected argument \"%s\"", cmd, a);
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    qat_flag *f = NULL;
    for (int k = 0; k < nflags; k++)
      if (strlen(flags[k].name) == len && strncmp(flags[k].name, name, len) == 0) f = &flags[k];
    if (!f) return QAT_FAIL(QAT_EUSAGE, "qat %s: unknown flag --%.*s", cmd, (int)len, name);
    if (f->takes_value) {
      if (eq)
        f->value = eq + 1;
      else if (i + 1 < argc)
        f->value = argv[++i];
      else
        return QAT_FAIL(QAT_EUSAGE, "qat %s: flag --%s needs a value", cmd, f->name);
    } else {
      if (eq) return QAT_FAIL(QAT_EUSAGE, "qat %s: flag --%s takes no value", cmd, f->name);
      f->value = "1";
    }
  }
  return QAT_OK;
}

const char *qat_flag_get(const qat_flag *flags, int nflags, const char *name) {
  for (int k = 0; k < nflags; k++)
    if (strcmp(flags[k].name, name) == 0) return flags[k].value;
  return NULL;
}

qat_status qat_flag_int(const qat_flag *flags, int nflags, const char *name, long lo, long hi,
                        long dflt, long *out) {
  const char *v = qat_flag_get(flags, nflags, name);
  if (!v) {
    *out = dflt;
    return QAT_OK;
  }
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || *end || end == v || x < lo || x > hi)
    return QAT_FAIL(QAT_EUSAGE, "--%s %s: expected an integer in [%ld, %ld]", name, v, lo, hi);
  *out = x;
  return QAT_OK;
}

qat_status qat_flag_float(const qat_flag *flags, int nflags, const char *name, double dflt,
                          double *out) {
  const char *v = qat_flag_get(flags, nflags, name);
  if (!v) {
    *out = dflt;
    return QAT_OK;
  }
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || *end || end == v) return QAT_FAIL(QAT_EUSAGE, "--%s %s: expected a number", name, v);
  *out = x;
  return QAT_OK;
}

void qat_print_usage(const char *cmd, const char *synopsis, const qat_flag *flags, int nflags) {
  printf("usage: qat %s %s\n", cmd, synopsis);
  for (int k = 0; k < nflags; k++)
    printf("  --%-14s %s\n", flags[k].name, flags[k].help ? flags[k].help : "");
}
