/* File-system helpers: whole-file reads, atomic writes (temporary + fsync + rename), and
 * atomically published output directories, so no command ever leaves a half-written output. */
#ifndef QAT_IO_FSUTIL_H
#define QAT_IO_FSUTIL_H

#include "core/status.h"
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

int qat_path_exists(const char *path);
int qat_is_dir(const char *path);
/* buf = a "/" b; QAT_EINVAL when it does not fit. */
qat_status qat_path_join(char *buf, size_t n, const char *a, const char *b);
qat_status qat_mkdir_p(const char *path);
/* Reads a whole file, NUL-terminated (*len excludes the NUL). Caller frees *data. */
qat_status qat_read_file(const char *path, char **data, size_t *len);
/* Writes path atomically: path.tmp.PID, fsync, rename, fsync of the directory. */
qat_status qat_write_file_atomic(const char *path, const void *data, size_t len);
qat_status qat_copy_file(const char *src, const char *dst);
qat_status qat_rm_rf(const char *path);
/* Sorted entry names of a directory (no "." / ".."); free with qat_free_list. */
qat_status qat_list_dir(const char *dir, char ***names, int *n);
void qat_free_list(char **names, int n);

/* Output directories: qat_dir_begin makes an empty sibling temporary "OUT.tmp-XXXXXX" (in tmp);
 * the caller writes into it; qat_dir_commit fsyncs it and renames it to OUT (an existing OUT is
 * replaced only after the new one is complete); qat_dir_abort removes the temporary. When
 * qat_dir_begin fails, tmp is "" and qat_dir_abort(tmp) does nothing. */
qat_status qat_dir_begin(const char *out, char *tmp, size_t n);
qat_status qat_dir_commit(const char *tmp, const char *out);
void qat_dir_abort(const char *tmp);

/* Streamed atomic file, for outputs too large to build in memory (safetensors, checkpoints):
 * qat_atomic_open creates a temporary "path.tmp.PID.N" beside path; qat_atomic_write appends;
 * qat_atomic_commit fsyncs, renames it to path and fsyncs the directory; qat_atomic_abort
 * (safe after a failed write or commit, and on a zeroed struct) removes the temporary. Each call
 * that fails has already aborted, so callers only abort on their own errors. */
typedef struct qat_atomic_file {
  int fd; /* -1 when closed */
  char *path, *tmp;
} qat_atomic_file;
qat_status qat_atomic_open(qat_atomic_file *f, const char *path);
qat_status qat_atomic_write(qat_atomic_file *f, const void *data, size_t len);
qat_status qat_atomic_commit(qat_atomic_file *f);
void qat_atomic_abort(qat_atomic_file *f);
/* fsync a directory (after creating or renaming entries in it). */
qat_status qat_fsync_dir(const char *dir);

#ifdef __cplusplus
}
#endif
#endif
