/* NumPy .npy token shards (REFERENCE.md section 6): 1-D uint16 when the vocabulary fits, else
 * uint32; int32 accepted on read. */
#ifndef QAT_IO_NPY_H
#define QAT_IO_NPY_H

#include "core/status.h"
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Reads a 1-D u16/u32/i32/i64 .npy into int32 tokens (malloc'd); values must fit in int32 and be
 * >= 0. Header validated (magic, version, dict, fortran_order, shape vs file size). */
qat_status qat_npy_read_tokens(const char *path, int32_t **tokens, int64_t *n);
/* Writes atomically; dtype <u2 when vocab <= 65536, else <u4. */
qat_status qat_npy_write_tokens(const char *path, const int32_t *tokens, int64_t n, int64_t vocab);

#ifdef __cplusplus
}
#endif
#endif
