/* qat inspect FILE.gguf: header, every metadata key with its type and value (long strings and
 * arrays shortened), every tensor with its ggml type, shape (ne0 first, as GGUF stores it) and
 * bytes, and totals per type. The whole file is validated first (io/gguf.c), so a malformed file
 * prints only its one-line error. */
#include "cli/cli.h"
#include "io/gguf.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int qat_file_is_gguf(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  char m[4] = {0};
  size_t n = fread(m, 1, 4, f);
  fclose(f);
  size_t len = strlen(path);
  return (n == 4 && !memcmp(m, "GGUF", 4)) || (len > 5 && !strcmp(path + len - 5, ".gguf"));
}

/* A string value, escaped and cut at max bytes. */
static void print_str(const char *s, uint64_t len, uint64_t max) {
  putchar('"');
  for (uint64_t i = 0; i < len && i < max; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\')
      printf("\\%c", c);
    else if (c == '\n')
      printf("\\n");
    else if (c < 0x20 || c == 0x7f)
      printf("\\x%02x", c);
    else
      putchar(c);
  }
  putchar('"');
  if (len > max) printf("... (%" PRIu64 " bytes)", len);
}

static void print_num(uint32_t t, int64_t i, double f) {
  if (t == QAT_GGUF_F32 || t == QAT_GGUF_F64)
    printf("%.9g", f);
  else if (t == QAT_GGUF_BOOL)
    printf("%s", i ? "true" : "false");
  else if (t == QAT_GGUF_U64)
    printf("%" PRIu64, (uint64_t)i);
  else
    printf("%" PRId64, i);
}

static void print_value(const qat_gguf_value *v) {
  if (v->type == QAT_GGUF_STRING) {
    print_str(v->str, v->len, 120);
  } else if (v->type == QAT_GGUF_ARRAY) {
    printf("[%s x %" PRIu64 "]", qat_gguf_vtype_name(v->elem), v->count);
    if (v->elem == QAT_GGUF_ARRAY) return;
    printf(" ");
    for (uint64_t k = 0; k < v->count && k < 6; k++) {
      if (k) printf(", ");
      if (v->elem == QAT_GGUF_STRING) {
        const char *s;
        uint64_t len;
        qat_gguf_arr_str(v, k, &s, &len);
        print_str(s, len, 40);
      } else {
        print_num(v->elem, qat_gguf_arr_i64(v, k), qat_gguf_arr_f64(v, k));
      }
    }
    if (v->count > 6) printf(", ...");
  } else {
    print_num(v->type, v->type == QAT_GGUF_U64 ? (int64_t)v->u : v->i, v->f);
  }
}

qat_status qat_inspect_gguf(const char *path) {
  qat_gguf_file f;
  QAT_TRY(qat_gguf_open(path, &f));
  printf("gguf file: %s (version %u, %zu bytes, alignment %" PRIu64 ", data at %" PRIu64 ")\n",
         path, f.version, f.map_size, f.alignment, f.data_offset);
  printf("metadata (%" PRId64 " keys):\n", f.n_kv);
  for (int64_t i = 0; i < f.n_kv; i++) {
    printf("  %-40s %-6s ", f.kv[i].key, qat_gguf_vtype_name(f.kv[i].v.type));
    print_value(&f.kv[i].v);
    printf("\n");
  }
  printf("\ntensors (%" PRId64 "):\n", f.n_tensors);
  uint64_t bytes[64] = {0}, params[64] = {0}, total_b = 0, total_p = 0;
  int count[64] = {0};
  for (int64_t i = 0; i < f.n_tensors; i++) {
    const qat_gguf_tensor *t = &f.tensors[i];
    char shape[128];
    size_t k = (size_t)snprintf(shape, sizeof shape, "[");
    for (int d = 0; d < t->ndim && k < sizeof shape; d++)
      k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%" PRId64, d ? ", " : "", t->ne[d]);
    if (k < sizeof shape) snprintf(shape + k, sizeof shape - k, "]");
    printf("  %-40s %-7s %-18s %12" PRIu64 " bytes\n", t->name, qat_ggml_type_name(t->type), shape,
           t->nbytes);
    int slot = t->type < 64 ? (int)t->type : 63;
    bytes[slot] += t->nbytes;
    params[slot] += (uint64_t)t->numel;
    count[slot]++;
    total_b += t->nbytes;
    total_p += (uint64_t)t->numel;
  }
  printf("\ntotal: %" PRId64 " tensors, %" PRIu64 " parameters, %" PRIu64 " bytes\n", f.n_tensors,
         total_p, total_b);
  for (int s = 0; s < 64; s++)
    if (count[s])
      printf("  %-7s %6d tensors %14" PRIu64 " parameters %14" PRIu64 " bytes\n",
             qat_ggml_type_name((uint32_t)s), count[s], params[s], bytes[s]);
  qat_gguf_close(&f);
  return QAT_OK;
}
