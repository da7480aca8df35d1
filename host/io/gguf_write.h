/* GGUF writer (version 3, little-endian; REFERENCE.md section 9), the mirror of gguf.h's reader.
 *
 * Metadata values are serialized as they are added (strings, u32, i32, f32, bool and arrays of
 * strings / f32 / i32: what llama.cpp's llama metadata uses); tensors are registered with their
 * ggml type, dims (ne[0] fastest-moving) and a data pointer the caller keeps valid until
 * qat_gguf_write. Offsets are assigned at registration, each tensor aligned to
 * QAT_GGUF_DEFAULT_ALIGNMENT (32, the general.alignment llama.cpp assumes; the writer records
 * the key itself). Keys and tensor names must be unique; a tensor's byte count must match its
 * type and shape (whole blocks along ne[0]). qat_gguf_write streams header, metadata, tensor
 * infos and data into a temporary beside path and renames it (fsutil.h), so a failure leaves no
 * file. Errors name the key or tensor. */
#ifndef QAT_IO_GGUF_WRITE_H
#define QAT_IO_GGUF_WRITE_H

#include "core/status.h"
#include "io/gguf.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_gguf_wtensor {
  char *name;
  int ndim;
  int64_t ne[QAT_GGUF_MAX_DIMS];
  uint32_t type;
  const void *data;
  uint64_t nbytes, offset;
} qat_gguf_wtensor;

typedef struct qat_gguf_writer {
  uint8_t *kv; /* serialized key/value pairs */
  size_t kv_n, kv_cap;
  int64_t n_kv;
  char **keys;
  qat_gguf_wtensor *t;
  int64_t n_t, cap_t;
  uint64_t data_bytes; /* end of the last tensor in the data section */
  int oom;
} qat_gguf_writer;

/* An empty writer holding general.alignment = 32 (u32). */
qat_status qat_gguf_writer_init(qat_gguf_writer *w);
void qat_gguf_writer_free(qat_gguf_writer *w);

qat_status qat_gguf_w_str(qat_gguf_writer *w, const char *key, const char *val);
qat_status qat_gguf_w_u32(qat_gguf_writer *w, const char *key, uint32_t v);
qat_status qat_gguf_w_i32(qat_gguf_writer *w, const char *key, int32_t v);
qat_status qat_gguf_w_f32(qat_gguf_writer *w, const char *key, float v);
qat_status qat_gguf_w_bool(qat_gguf_writer *w, const char *key, int v);
/* n strings: vals[i] of lens[i] bytes (lens NULL: NUL-terminated). */
qat_status qat_gguf_w_arr_str(qat_gguf_writer *w, const char *key, const char *const *vals,
                              const size_t *lens, uint64_t n);
qat_status qat_gguf_w_arr_f32(qat_gguf_writer *w, const char *key, const float *v, uint64_t n);
qat_status qat_gguf_w_arr_i32(qat_gguf_writer *w, const char *key, const int32_t *v, uint64_t n);

/* Registers tensor name (copied) of ggml type with dims ne[0..ndim) and nbytes at data
 * (referenced, not copied, until qat_gguf_write). */
qat_status qat_gguf_w_tensor(qat_gguf_writer *w, const char *name, uint32_t type, int ndim,
                             const int64_t *ne, const void *data, uint64_t nbytes);

/* Bytes of a tensor of type with dims ne (0 when ne[0] is not whole blocks or the type is
 * unknown). */
uint64_t qat_gguf_tensor_bytes(uint32_t type, int ndim, const int64_t *ne);

/* The whole file to path, atomically. */
qat_status qat_gguf_write(const qat_gguf_writer *w, const char *path);

#ifdef __cplusplus
}
#endif
#endif
