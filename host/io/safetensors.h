/* safetensors reader (memory-mapped, every header field validated) and writer (atomic).
 * Format (REFERENCE.md section 6): u64 little-endian header length N, N bytes of JSON
 * {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the
 * data; offsets are relative to the first byte after the header. */
#ifndef QAT_IO_SAFETENSORS_H
#define QAT_IO_SAFETENSORS_H

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qat_st_tensor {
  char *name;
  qat_dtype dtype;
  int ndim; /* 0 for scalars (numel 1) */
  int64_t shape[QAT_MAX_DIMS];
  uint64_t begin, end; /* byte offsets into the data section */
  const void *data;    /* points into the mapping */
} qat_st_tensor;

typedef struct qat_st_file {
  char *path;
  void *map;
  size_t map_size;
  int n;                  /* tensors, in header order */
  qat_st_tensor *tensors;
  int nmeta;
  char **meta_keys, **meta_vals;
} qat_st_file;

/* Opens and validates; on error nothing stays open and the message names the file. */
qat_status qat_st_open(const char *path, qat_st_file *f);
void qat_st_close(qat_st_file *f);
const qat_st_tensor *qat_st_find(const qat_st_file *f, const char *name);
const char *qat_st_meta(const qat_st_file *f, const char *key);
int64_t qat_st_numel(const qat_st_tensor *t);
/* Copies a float tensor (F32/F16/BF16) into dst as float32 (numel floats). */
qat_status qat_st_read_f32(const qat_st_tensor *t, float *dst);

/* A model folder's weights: model.safetensors, or the shards named by
 * model.safetensors.index.json (every shard validated; a tensor listed twice or missing from its
 * shard is an error). A path to a single .safetensors file also opens, as a set of one. */
typedef struct qat_st_set {
  int nfiles;
  qat_st_file *files;
} qat_st_set;
qat_status qat_st_set_open(const char *dir, qat_st_set *s);
void qat_st_set_close(qat_st_set *s);
/* NULL when absent; *file (optional) gets the file that holds it. */
const qat_st_tensor *qat_st_set_find(const qat_st_set *s, const char *name,
                                     const qat_st_file **file);

/* Writer: tensors are referenced (not copied) until qat_st_write, which writes the file
 * atomically (temporary + fsync + rename), header padded to 8 bytes. */
typedef struct qat_st_writer {
  int n, cap;
  struct qat_st_wentry {
    char *name;
    qat_dtype dtype;
    int ndim;
    int64_t shape[QAT_MAX_DIMS];
    const void *data;
  } *e;
  int nmeta;
  char **meta_keys, **meta_vals;
} qat_st_writer;
void qat_st_writer_init(qat_st_writer *w);
qat_status qat_st_writer_add(qat_st_writer *w, const char *name, qat_dtype dtype, int ndim,
                             const int64_t *shape, const void *data);
qat_status qat_st_writer_meta(qat_st_writer *w, const char *key, const char *value);
qat_status qat_st_write(const qat_st_writer *w, const char *path);
void qat_st_writer_free(qat_st_writer *w);

#ifdef __cplusplus
}
#endif
#endif
