/* qat inspect PATH: summarize a .safetensors file, a GGUF file (inspect_gguf.c) or a Hugging
 * Face model folder without
 * interpreting it: the key config.json fields as written, each file's metadata, every tensor's
 * name, dtype and shape, and parameter / byte totals per dtype. Every header is validated on the
 * way (safetensors.c), so inspect doubles as a checker: a malformed file is a one-line error. */
#include "cli/cli.h"
#include "io/fsutil.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "quant/packed.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *k_config_keys[] = {
    "model_type",        "architectures",       "hidden_size",         "intermediate_size",
    "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
    "rope_theta",        "tie_word_embeddings", "torch_dtype",
};

static const char *human_bytes(double b, char *buf, size_t n) {
  const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) {
    b /= 1024;
    i++;
  }
  snprintf(buf, n, i ? "%.2f %s" : "%.0f %s", b, u[i]);
  return buf;
}

/* config.json of a folder, parsed (NULL when the folder has none). */
static qat_status load_config(const char *dir, cJSON **out) {
  *out = NULL;
  char path[4096];
  QAT_TRY(qat_path_join(path, sizeof path, dir, "config.json"));
  if (!qat_path_exists(path)) return QAT_OK;
  char *text = NULL;
  size_t len = 0;
  QAT_TRY(qat_read_file(path, &text, &len));
  cJSON *root = cJSON_ParseWithLength(text, len);
  free(text);
  if (!root) return QAT_FAIL(QAT_EFORMAT, "%s: not valid JSON", path);
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return QAT_FAIL(QAT_EFORMAT, "%s: not a JSON object", path);
  }
  *out = root;
  return QAT_OK;
}

/* The listed config.json fields, each printed as its JSON text. */
static void print_config(const cJSON *root) {
  if (!root) {
    printf("config.json: absent\n");
    return;
  }
  printf("config.json:\n");
  int found = 0;
  for (size_t i = 0; i < sizeof k_config_keys / sizeof *k_config_keys; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, k_config_keys[i]);
    if (!v) continue;
    char *s = cJSON_PrintUnformatted(v);
    printf("  %-22s %s\n", k_config_keys[i], s ? s : "?");
    cJSON_free(s);
    found++;
  }
  if (!found) printf("  (none of the usual fields)\n");
}

typedef struct {
  uint64_t params[QAT_DTYPE_COUNT], bytes[QAT_DTYPE_COUNT];
  int tensors[QAT_DTYPE_COUNT];
} totals;

/* Packed Linears of a file with qat_packed metadata (quant/packed.h), each read and validated:
 * spec, shape and bits per weight (codes + scales + zeros); totals into *nw weights, *nb bytes. */
static qat_status print_packed(const qat_st_file *f, double *nw, double *nb) {
  if (!qat_packed_st_is_packed(f)) return QAT_OK;
  printf("packed Linears:\n");
  for (int i = 0; i < f->n; i++) {
    const char *name = f->tensors[i].name;
    size_t l = strlen(name);
    if (l < 7 || strcmp(name + l - 7, ".qcodes") != 0) continue;
    char base[512];
    snprintf(base, sizeof base, "%.*s", (int)(l - 7), name);
    qat_packed p;
    QAT_TRY(qat_packed_st_read(f, base, &p));
    printf("  %-52s W%d g%-5d %-4s [%lld, %lld] scales %s  %.3f bits/weight\n", base, p.bits,
           p.group == p.K ? -1 : p.group, p.sym ? "sym" : "asym", (long long)p.N, (long long)p.K,
           qat_dtype_name((qat_dtype)p.sdtype), qat_packed_bpw(&p));
    *nw += (double)p.N * (double)p.K;
    *nb += (double)qat_packed_bytes(&p);
    qat_packed_free(&p);
  }
  return QAT_OK;
}

static void print_file(const qat_st_file *f, totals *tot) {
  printf("\nfile: %s (%d tensors, %zu bytes)\n", f->path, f->n, f->map_size);
  if (f->nmeta) {
    printf("metadata:\n");
    for (int i = 0; i < f->nmeta; i++)
      printf("  %s = %s\n", f->meta_keys[i], f->meta_vals[i]);
  }
  int w = 0;
  for (int i = 0; i < f->n; i++) {
    int l = (int)strlen(f->tensors[i].name);
    if (l > w) w = l;
  }
  if (w > 60) w = 60;
  for (int i = 0; i < f->n; i++) {
    const qat_st_tensor *t = &f->tensors[i];
    char shape[128];
    size_t k = (size_t)snprintf(shape, sizeof shape, "[");
    for (int d = 0; d < t->ndim && k < sizeof shape; d++)
      k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%" PRId64, d ? ", " : "", t->shape[d]);
    if (k < sizeof shape) snprintf(shape + k, sizeof shape - k, "]");
    printf("  %-*s %-5s %s\n", w, t->name, qat_dtype_name(t->dtype), shape);
    tot->params[t->dtype] += (uint64_t)qat_st_numel(t);
    tot->bytes[t->dtype] += t->end - t->begin;
    tot->tensors[t->dtype]++;
  }
}

qat_status cmd_inspect(int argc, char **argv) {
  qat_flag flags[] = {{"help", 0, NULL, "show this help"}};
  int nflags = (int)(sizeof flags / sizeof flags[0]);
  const char *path = NULL;
  char **rest = malloc(((size_t)argc + 1) * sizeof *rest);
  if (!rest) return QAT_FAIL(QAT_ENOMEM, "out of memory");
  int nrest = 0;
  qat_status st = QAT_OK;
  for (int i = 0; i < argc; i++) {
    if (strncmp(argv[i], "--", 2) == 0)
      rest[nrest++] = argv[i];
    else if (!path)
      path = argv[i];
    else
      st = QAT_FAIL(QAT_EUSAGE, "unexpected argument \"%s\"", argv[i]);
  }
  if (st == QAT_OK) st = qat_parse_flags(nrest, rest, flags, nflags, "inspect");
  free(rest);
  QAT_TRY(st);
  if (qat_flag_get(flags, nflags, "help")) {
    qat_print_usage("inspect", "PATH  (a .safetensors file, a .gguf file or a model folder)", flags,
                    nflags);
    return QAT_OK;
  }
  if (!path) return QAT_FAIL(QAT_EUSAGE, "missing PATH (see qat inspect --help)");
  if (!qat_path_exists(path)) return QAT_FAIL(QAT_EIO, "%s: no such file or directory", path);

  int is_dir = qat_is_dir(path);
  if (!is_dir && qat_file_is_gguf(path)) return qat_inspect_gguf(path);
  /* validate everything before printing anything, so a bad file gives only its error */
  cJSON *config = NULL;
  if (is_dir) QAT_TRY(load_config(path, &config));
  qat_st_set set;
  st = qat_st_set_open(path, &set);
  if (st != QAT_OK) {
    cJSON_Delete(config);
    return st;
  }
  printf("%s: %s\n", is_dir ? "model folder" : "safetensors file", path);
  if (is_dir) print_config(config);
  cJSON_Delete(config);
  totals tot = {0};
  double pw = 0, pb = 0;
  for (int i = 0; i < set.nfiles && st == QAT_OK; i++) {
    print_file(&set.files[i], &tot);
    st = print_packed(&set.files[i], &pw, &pb);
  }
  if (st != QAT_OK) {
    qat_st_set_close(&set);
    return st;
  }

  uint64_t params = 0, bytes = 0;
  int ntensors = 0;
  for (int d = 0; d < QAT_DTYPE_COUNT; d++) {
    params += tot.params[d];
    bytes += tot.bytes[d];
    ntensors += tot.tensors[d];
  }
  char hb[32];
  printf("\ntotal: %d tensors in %d file%s, %" PRIu64 " parameters, %" PRIu64 " bytes (%s)\n",
         ntensors, set.nfiles, set.nfiles == 1 ? "" : "s", params, bytes,
         human_bytes((double)bytes, hb, sizeof hb));
  for (int d = 0; d < QAT_DTYPE_COUNT; d++)
    if (tot.tensors[d])
      printf("  %-5s %6d tensors %14" PRIu64 " parameters %14" PRIu64 " bytes (%s)\n",
             qat_dtype_name((qat_dtype)d), tot.tensors[d], tot.params[d], tot.bytes[d],
             human_bytes((double)tot.bytes[d], hb, sizeof hb));
  if (pw > 0)
    printf("packed: %.0f weights in %s, %.3f bits (%.3f bytes) per weight\n", pw,
           human_bytes(pb, hb, sizeof hb), 8.0 * pb / pw, pb / pw);
  qat_st_set_close(&set);
  return QAT_OK;
}
