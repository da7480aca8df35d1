/* Training checkpoints: everything needed to resume a run exactly.
 * Layout: RUN/ckpt-<step, 8 digits>/ holding
 *   state.safetensors  every tensor by name (weights, quantizer params, optimizer moments, ...)
 *   state.json         {"format_version": 1, "step": N, "tensors": "state.safetensors",
 *                       "fields": {"key": {"int": "123"} | {"float": 0.5} | {"str": "..."}}}
 * Ints are stored as decimal strings so 64-bit values (sampler counters, RNG states) survive JSON
 * readers that hold numbers as doubles; floats are printed exactly (and "nan" / "inf" / "-inf"
 * as strings). A checkpoint is written into a temporary sibling directory, every file fsynced,
 * then renamed into place (io/fsutil.h qat_dir_begin / qat_dir_commit), so RUN/ckpt-N either is
 * complete or does not exist; after a successful save only the newest `keep` are kept.
 * A directory ckpt-N without its state.json is incomplete and ignored; *.tmp-* are leftovers of
 * interrupted saves (ignored, and removed by the next save). */
#ifndef QAT_TRAIN_CHECKPOINT_H
#define QAT_TRAIN_CHECKPOINT_H

#include "io/safetensors.h"
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QAT_CKPT_FORMAT_VERSION 1

typedef enum { QAT_CKF_INT = 0, QAT_CKF_FLOAT, QAT_CKF_STR } qat_ckpt_kind;

typedef struct qat_ckpt_field {
  char *key;
  qat_ckpt_kind kind;
  int64_t i;
  double f;
  char *s;
} qat_ckpt_field;

/* ---- writing */
typedef struct qat_ckpt_writer {
  qat_st_writer st; /* tensors are referenced, not copied: keep them alive until the save */
  int nfields, cap;
  qat_ckpt_field *fields;
} qat_ckpt_writer;

void qat_ckpt_writer_init(qat_ckpt_writer *w);
void qat_ckpt_writer_free(qat_ckpt_writer *w);
/* A tensor in host memory (any dtype); a name given twice is QAT_EINVAL. */
qat_status qat_ckpt_add_tensor(qat_ckpt_writer *w, const char *name, qat_dtype dtype, int ndim,
                               const int64_t *shape, const void *data);
qat_status qat_ckpt_add_f32(qat_ckpt_writer *w, const char *name, int ndim, const int64_t *shape,
                            const float *data);
/* Fields (setting a key again replaces its value). uint64 values go through int64 unchanged. */
qat_status qat_ckpt_set_int(qat_ckpt_writer *w, const char *key, int64_t v);
qat_status qat_ckpt_set_float(qat_ckpt_writer *w, const char *key, double v);
qat_status qat_ckpt_set_str(qat_ckpt_writer *w, const char *key, const char *v);

/* Writes RUN/ckpt-<step> atomically (replacing one of the same step), then deletes all but the
 * newest `keep` complete checkpoints (never the one just written) and leftover temporaries.
 * path_out (optional, n bytes) gets the checkpoint directory. */
qat_status qat_ckpt_save(const char *run_dir, int64_t step, const qat_ckpt_writer *w, int keep,
                         char *path_out, size_t n);
/* The same, calling hook(ctx, tmp) after state.safetensors and before state.json, with tmp the
 * temporary directory that becomes RUN/ckpt-<step>: other files of the checkpoint (ZeRO-1's
 * per-rank optimizer shards) are written there before the one commit point; a failing hook
 * aborts the save. */
typedef qat_status (*qat_ckpt_hook)(void *ctx, const char *tmp);
qat_status qat_ckpt_save_hook(const char *run_dir, int64_t step, const qat_ckpt_writer *w,
                              int keep, qat_ckpt_hook hook, void *ctx, char *path_out, size_t n);

/* Newest complete checkpoint of run_dir: path (n bytes) and step; path "" and step -1 when there
 * is none (a missing run_dir has none). */
qat_status qat_ckpt_latest(const char *run_dir, char *path, size_t n, int64_t *step);
/* "RUN/ckpt-00000120" */
qat_status qat_ckpt_path(const char *run_dir, int64_t step, char *path, size_t n);

/* ---- reading */
typedef struct qat_ckpt {
  char *dir;
  int64_t step;
  qat_st_file st;
  int nfields;
  qat_ckpt_field *fields;
} qat_ckpt;

/* Opens DIR (a ckpt-N directory): state.json is parsed and checked (format version, step equal
 * to the directory's), state.safetensors validated. Errors name the file. */
qat_status qat_ckpt_open(const char *dir, qat_ckpt *ck);
void qat_ckpt_close(qat_ckpt *ck);
/* NULL when absent. */
const qat_st_tensor *qat_ckpt_find(const qat_ckpt *ck, const char *name);
/* Copies a float tensor (F32/F16/BF16 stored) into dst as float32; the stored shape must equal
 * shape[0..ndim). Missing tensor or shape mismatch: QAT_EFORMAT naming the tensor and the file. */
qat_status qat_ckpt_read_f32(const qat_ckpt *ck, const char *name, float *dst, int ndim,
                             const int64_t *shape);
/* Copies the bytes of a tensor whose dtype and shape must match exactly. */
qat_status qat_ckpt_read(const qat_ckpt *ck, const char *name, qat_dtype dtype, void *dst,
                         int ndim, const int64_t *shape);
/* Fields: missing key or another kind is QAT_EFORMAT naming the key and the file. */
int qat_ckpt_has(const qat_ckpt *ck, const char *key);
qat_status qat_ckpt_get_int(const qat_ckpt *ck, const char *key, int64_t *v);
qat_status qat_ckpt_get_float(const qat_ckpt *ck, const char *key, double *v);
/* *v points into ck (valid until qat_ckpt_close). */
qat_status qat_ckpt_get_str(const qat_ckpt *ck, const char *key, const char **v);

#ifdef __cplusplus
}
#endif
#endif
