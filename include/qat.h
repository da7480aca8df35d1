/* qat public header: the small surface a program embedding qat needs.
 * Errors are values: every library call returns qat_status; qat_last_error() holds the message
 * (with file:line of where it was raised) for the calling thread. Only main() exits. */
#ifndef QAT_H
#define QAT_H

#ifdef __cplusplus
extern "C" {
#endif

#define QAT_VERSION "0.1.0"

typedef enum qat_status {
  QAT_OK = 0,
  QAT_EUSAGE,       /* bad command line, config key or value (exit code 2) */
  QAT_EINVAL,       /* bad input data: impossible shape, NaN weight, bad argument */
  QAT_EIO,          /* file system error */
  QAT_EFORMAT,      /* malformed file (safetensors header, npy, json, checkpoint) */
  QAT_EUNSUPPORTED, /* valid input qat does not handle (architecture, dtype) */
  QAT_ENOMEM,       /* allocation failed or a job does not fit */
  QAT_EDEVICE,      /* CUDA / cuBLAS error, or no device */
  QAT_EINTERRUPT,   /* stopped by a signal after saving state */
  QAT_EINTERNAL,
} qat_status;

const char *qat_status_name(qat_status s);
/* Message of the last error raised on this thread ("" when none). */
const char *qat_last_error(void);
/* Process exit code for a status: 0 ok, 2 usage/config, 1 everything else. */
int qat_exit_code(qat_status s);

#ifdef __cplusplus
}
#endif

#endif
