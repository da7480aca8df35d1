/* Shared by the libFuzzer targets tests/fuzz/fuzz_*.c (header-only: each target is one .c).
 *
 * Multi-file inputs: one fuzz input holds several files separated by FZ_SEP ("\n@@qat@@\n",
 * which the dictionaries carry so mutations can add and drop parts); part k is file k, missing
 * parts are empty. Each target writes its parts into its own temporary folder (one per
 * process) and calls the library entry points the commands call on such a folder.
 *
 * fz_end() is every target's last step: the error message, if any, must be one line (the
 * project's rule for every refusal), then it is cleared for the next input. With
 * QAT_FUZZ_VERBOSE set it prints each refusal (tests/fuzz/run.sh --check-seeds). */
#ifndef QAT_FUZZ_UTIL_H
#define QAT_FUZZ_UTIL_H
#include "core/log.h"
#include "core/status.h"
#include "io/fsutil.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FZ_SEP "\n@@qat@@\n"
#define FZ_MAX_PARTS 8

typedef struct fz_part {
  const uint8_t *p;
  size_t n;
} fz_part;

/* Splits data into exactly k parts (the last takes the rest; absent ones are empty). */
static inline void fz_split(const uint8_t *data, size_t size, int k, fz_part *parts) {
  const size_t sl = sizeof FZ_SEP - 1;
  size_t at = 0;
  for (int i = 0; i < k; i++) {
    parts[i].p = data + at;
    parts[i].n = 0;
    if (at >= size) continue;
    size_t end = size;
    if (i < k - 1)
      for (size_t j = at; j + sl <= size; j++)
        if (memcmp(data + j, FZ_SEP, sl) == 0) {
          end = j;
          break;
        }
    parts[i].n = end - at;
    at = end < size ? end + sl : size;
  }
}

/* The process's scratch folder /tmp/qat-fuzz-<tag>-XXXXXX (made once; info logs off from then
 * on, unless QAT_FUZZ_VERBOSE is set). */
static inline const char *fz_dir(const char *tag) {
  static char dir[96];
  if (!dir[0]) {
    if (!getenv("QAT_FUZZ_VERBOSE")) qat_log_set_level(QAT_LOG_QUIET);
    snprintf(dir, sizeof dir, "/tmp/qat-fuzz-%s-XXXXXX", tag);
    if (!mkdtemp(dir)) abort();
  }
  return dir;
}

/* dir/name (buf of n bytes). */
static inline const char *fz_path(char *buf, size_t n, const char *dir, const char *name) {
  snprintf(buf, n, "%s/%s", dir, name);
  return buf;
}

/* Writes dir/name; an empty part with absent_if_empty removes the file instead, so the
 * fuzzer also exercises a folder without it. */
static inline void fz_write(const char *dir, const char *name, fz_part part, int absent_if_empty) {
  char path[256];
  fz_path(path, sizeof path, dir, name);
  if (absent_if_empty && part.n == 0) {
    unlink(path);
    return;
  }
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  size_t w = part.n ? fwrite(part.p, 1, part.n, f) : 0;
  if (fclose(f) != 0 || w != part.n) abort();
}

/* A NUL-terminated copy (malloc'd) of a part, for text inputs. */
static inline char *fz_strdup(fz_part part) {
  char *s = malloc(part.n + 1);
  if (!s) abort();
  if (part.n) memcpy(s, part.p, part.n);
  s[part.n] = 0;
  return s;
}

static inline void fz_end(void) {
  static int verbose = -1; /* QAT_FUZZ_VERBOSE=1: print each refusal (to check seeds load) */
  if (verbose < 0) verbose = getenv("QAT_FUZZ_VERBOSE") != NULL;
  if (verbose && qat_last_error()[0]) fprintf(stderr, "refused: %s\n", qat_last_error());
  if (strchr(qat_last_error(), '\n')) {
    fprintf(stderr, "fuzz: error message spans lines: %s\n", qat_last_error());
    abort();
  }
  qat_clear_error();
}

#endif
