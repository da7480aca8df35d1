/* Errors as values (nccl-tests style): raise with QAT_FAIL, which records "file:line: message"
 * in a thread-local buffer and returns the code; pass up with QAT_TRY, which adds nothing to the
 * message, or QAT_CTX, which prefixes context ("model.safetensors: ..."). */
#ifndef QAT_CORE_STATUS_H
#define QAT_CORE_STATUS_H

#include "qat.h"
#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

qat_status qat_fail(qat_status code, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Prefix the current message with "ctx: " (printf-style) and return code unchanged. */
qat_status qat_context(qat_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void qat_clear_error(void);

#define QAT_FAIL(code, ...) qat_fail((code), __FILE__, __LINE__, __VA_ARGS__)
#define QAT_TRY(expr)                                                                              \
  do {                                                                                             \
    qat_status _qs = (expr);                                                                       \
    if (_qs != QAT_OK) return _qs;                                                                 \
  } while (0)
/* Like QAT_TRY but jumps to a cleanup label with the status in `st`. */
#define QAT_CHECK(st, expr, label)                                                                 \
  do {                                                                                             \
    (st) = (expr);                                                                                 \
    if ((st) != QAT_OK) goto label;                                                                \
  } while (0)

#ifdef __cplusplus
}
#endif

#endif
