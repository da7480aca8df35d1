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
 * replaced only after the new one is complete); qat_dir_abort removes the temporary. */
qat_status qat_dir_begin(const char *out, char *tmp, size_t n);
qat_status qat_dir_commit(const char *tmp, const char *out);
void qat_dir_abort(const char *tmp);

#ifdef __cplusplus
}
#endif
#endif
