/* GGUF reader (llama.cpp's model file, REFERENCE.md section 9), versions 2 and 3, little-endian.
 *
 * qat_gguf_open maps the file read-only and validates all of it before returning: the header,
 * every metadata value (all 13 value types, arrays nested to any depth up to QAT_GGUF_MAX_DEPTH),
 * every tensor info, general.alignment, and every count, offset and size against the file size
 * with overflow-safe arithmetic. Keys and tensor names must be unique. On error nothing stays
 * open and the one-line message names the file and the field ("m.gguf: tensor 3
 * (blk.0.attn_q.weight): offset ... past the end of the file").
 *
 * Values and tensor data point into the mapping (zero copy): a 10 GB file costs its page cache,
 * never a second in-memory copy. gguf_dequant.c turns tensors into float32. */
#ifndef QAT_IO_GGUF_H
#define QAT_IO_GGUF_H

#include "core/status.h"
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QAT_GGUF_MAX_DIMS 4
#define QAT_GGUF_MAX_DEPTH 8 /* array nesting; llama.cpp's files never nest */
#define QAT_GGUF_DEFAULT_ALIGNMENT 32

/* Metadata value types (the file's u32 codes). */
typedef enum qat_gguf_vtype {
  QAT_GGUF_U8 = 0,
  QAT_GGUF_I8 = 1,
  QAT_GGUF_U16 = 2,
  QAT_GGUF_I16 = 3,
  QAT_GGUF_U32 = 4,
  QAT_GGUF_I32 = 5,
  QAT_GGUF_F32 = 6,
  QAT_GGUF_BOOL = 7,
  QAT_GGUF_STRING = 8,
  QAT_GGUF_ARRAY = 9,
  QAT_GGUF_U64 = 10,
  QAT_GGUF_I64 = 11,
  QAT_GGUF_F64 = 12,
  QAT_GGUF_VTYPE_COUNT
} qat_gguf_vtype;

/* ggml tensor types (the file's u32 codes; the ones this reader knows the block sizes of). */
enum {
  QAT_GGML_F32 = 0,
  QAT_GGML_F16 = 1,
  QAT_GGML_Q4_0 = 2,
  QAT_GGML_Q4_1 = 3,
  QAT_GGML_Q5_0 = 6,
  QAT_GGML_Q5_1 = 7,
  QAT_GGML_Q8_0 = 8,
  QAT_GGML_Q8_1 = 9,
  QAT_GGML_Q2_K = 10,
  QAT_GGML_Q3_K = 11,
  QAT_GGML_Q4_K = 12,
  QAT_GGML_Q5_K = 13,
  QAT_GGML_Q6_K = 14,
  QAT_GGML_Q8_K = 15,
  QAT_GGML_BF16 = 30,
};

typedef struct qat_gguf_value {
  uint32_t type; /* qat_gguf_vtype */
  /* Integers and bool: u (zero-extended) and i (sign-extended); floats: f. */
  uint64_t u;
  int64_t i;
  double f;
  /* STRING: len bytes at str, in the mapping, NOT NUL-terminated. */
  const char *str;
  uint64_t len;
  /* ARRAY: count items of type elem, serialized from items over bytes bytes. */
  uint32_t elem;
  uint64_t count;
  const uint8_t *items;
  uint64_t bytes;
  uint64_t *str_off; /* STRING arrays: offset of item k's u64 length from items */
} qat_gguf_value;

typedef struct qat_gguf_kv {
  char *key;
  qat_gguf_value v;
} qat_gguf_kv;

typedef struct qat_gguf_tensor {
  char *name;
  int ndim;
  int64_t ne[QAT_GGUF_MAX_DIMS]; /* ne[0] fastest-moving; unused dims are 1 */
  uint32_t type;                 /* ggml type code */
  uint64_t offset;               /* from the start of the data section */
  uint64_t nbytes;
  int64_t numel;
  const uint8_t *data; /* in the mapping */
} qat_gguf_tensor;

typedef struct qat_gguf_file {
  char *path;
  void *map;
  size_t map_size;
  uint32_t version;
  uint64_t alignment;   /* general.alignment, default 32 */
  uint64_t data_offset; /* start of the data section in the file */
  int64_t n_kv, n_tensors;
  qat_gguf_kv *kv;
  qat_gguf_tensor *tensors;
} qat_gguf_file;

qat_status qat_gguf_open(const char *path, qat_gguf_file *f);
void qat_gguf_close(qat_gguf_file *f);

/* NULL when absent. */
const qat_gguf_kv *qat_gguf_find(const qat_gguf_file *f, const char *key);
const qat_gguf_tensor *qat_gguf_find_tensor(const qat_gguf_file *f, const char *name);

/* Typed getters: *found = 0 (and *out untouched) when the key is absent; a value of the wrong
 * type is an error naming the file, the key and both types. Integers accept any integer type
 * (range-checked for int64); floats accept F32, F64 and integers; bools only BOOL. get_str
 * returns a malloc'd NUL-terminated copy (a string holding a NUL byte is an error). */
qat_status qat_gguf_get_int(const qat_gguf_file *f, const char *key, int64_t *out, int *found);
qat_status qat_gguf_get_float(const qat_gguf_file *f, const char *key, double *out, int *found);
qat_status qat_gguf_get_bool(const qat_gguf_file *f, const char *key, int *out, int *found);
qat_status qat_gguf_get_str(const qat_gguf_file *f, const char *key, char **out, int *found);
/* An ARRAY of elem items (elem < 0: any); *arr = NULL when absent. */
qat_status qat_gguf_get_array(const qat_gguf_file *f, const char *key, int elem,
                              const qat_gguf_value **arr);
/* Item k of a STRING array (k < count). */
void qat_gguf_arr_str(const qat_gguf_value *arr, uint64_t k, const char **s, uint64_t *len);
/* Item k of a numeric array as double / int64 (k < count; elem not STRING/ARRAY). */
double qat_gguf_arr_f64(const qat_gguf_value *arr, uint64_t k);
int64_t qat_gguf_arr_i64(const qat_gguf_value *arr, uint64_t k);

const char *qat_gguf_vtype_name(uint32_t t);
/* s for a one-line message: control bytes -> '?', cut at 60 bytes with "..." (into buf). */
const char *qat_gguf_printable(const char *s, char *buf, size_t n);
/* ggml type: name ("type 99" style in a static buffer when unknown), block size (elements) and
 * block bytes (both 0 when unknown). */
const char *qat_ggml_type_name(uint32_t t);
int qat_ggml_type_block(uint32_t t);
int qat_ggml_type_bytes(uint32_t t);

/* ---- gguf_dequant.c ---- */
/* 1 when qat_gguf_dequant handles this type (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * Q2_K .. Q6_K). */
int qat_gguf_can_dequant(uint32_t type);
/* n elements (a multiple of the type's block) of type from src into dst, bit-exact with the gguf
 * Python package's gguf.quants.dequantize. Other types: QAT_EUNSUPPORTED naming the type. */
qat_status qat_gguf_dequant(uint32_t type, const void *src, int64_t n, float *dst);
/* A whole tensor (numel floats); errors name the file and the tensor. */
qat_status qat_gguf_tensor_f32(const qat_gguf_file *f, const qat_gguf_tensor *t, float *dst);

#ifdef __cplusplus
}
#endif
#endif
