/* qat export --format gptq --model DIR: a `qat quantize --packed` folder as a GPTQ checkpoint
 * (gptq_v2, REFERENCE.md section 10; layout in quant/packed_gptq.h) that GPTQModel / vLLM load:
 * every packed Linear as <base>.qweight / .qzeros / .scales / .g_idx, every other tensor and
 * file copied, config.json gaining "quantization_config" {quant_method gptq, bits, group_size,
 * sym, desc_act false, checkpoint_format gptq_v2}. Per tensor the largest weight change (F16
 * rounding of F32 scales; 0 from F16 scales) is printed. Built in a temporary sibling and
 * renamed; a sharded input (model.safetensors.index.json) is refused for now. */
#include "cli/cli.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "quant/packed_gptq.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

/* One packed file -> tmp/<same name>; spec of its metadata into *bits, *group, *sym. */
static qat_status convert_file(const qat_st_file *f, const char *tmp, int *bits, int *group,
                               int *sym, int *nlin) {
  qat_st_writer w;
  qat_st_writer_init(&w);
  qat_gptq_tensors *gt = calloc((size_t)f->n + 1, sizeof *gt);
  if (!gt) return QAT_FAIL(QAT_ENOMEM, "export: out of memory");
  int ng = 0;
  qat_qspec q;
  qat_dtype sdt;
  qat_status st = qat_packed_st_spec(f, &q, &sdt);
  *bits = q.bits;
  *group = q.group;
  *sym = q.sym;
  for (int i = 0; i < f->nmeta && st == QAT_OK; i++)
    if (strcmp(f->meta_keys[i], "qat_packed") != 0 && !ends_with(f->meta_keys[i], ".in_features"))
      st = qat_st_writer_meta(&w, f->meta_keys[i], f->meta_vals[i]);
  for (int i = 0; i < f->n && st == QAT_OK; i++) {
    const qat_st_tensor *t = &f->tensors[i];
    if (ends_with(t->name, ".qscales") || ends_with(t->name, ".qzeros")) continue;
    if (!ends_with(t->name, ".qcodes")) {
      st = qat_st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data);
      continue;
    }
    char base[512], name[560];
    snprintf(base, sizeof base, "%.*s", (int)(strlen(t->name) - 7), t->name);
    qat_packed p;
    QAT_CHECK(st, qat_packed_st_read(f, base, &p), done);
    st = qat_packed_to_gptq(&p, base, &gt[ng]);
    qat_packed_free(&p);
    if (st != QAT_OK) goto done;
    qat_gptq_tensors *g = &gt[ng++];
    int64_t sh[2] = {g->K * *bits / 32, g->N};
    snprintf(name, sizeof name, "%s.qweight", base);
    QAT_CHECK(st, qat_st_writer_add(&w, name, QAT_I32, 2, sh, g->qweight), done);
    sh[0] = g->G;
    sh[1] = g->N * *bits / 32;
    snprintf(name, sizeof name, "%s.qzeros", base);
    QAT_CHECK(st, qat_st_writer_add(&w, name, QAT_I32, 2, sh, g->qzeros), done);
    sh[1] = g->N;
    snprintf(name, sizeof name, "%s.scales", base);
    QAT_CHECK(st, qat_st_writer_add(&w, name, QAT_F16, 2, sh, g->scales), done);
    snprintf(name, sizeof name, "%s.g_idx", base);
    QAT_CHECK(st, qat_st_writer_add(&w, name, QAT_I32, 1, &g->K, g->g_idx), done);
    printf("  %-52s [%6lld, %6lld] gptq W%d max weight change %.3g\n", base, (long long)g->N,
           (long long)g->K, *bits, g->max_err);
    (*nlin)++;
  }
  char path[4096];
  const char *slash = strrchr(f->path, '/');
  if (st == QAT_OK) st = qat_path_join(path, sizeof path, tmp, slash ? slash + 1 : f->path);
  if (st == QAT_OK) st = qat_st_write(&w, path);
done:
  for (int i = 0; i < ng; i++) qat_gptq_tensors_free(&gt[i]);
  free(gt);
  qat_st_writer_free(&w);
  return st;
}

/* src/config.json + quantization_config -> tmp/config.json */
static qat_status write_config(const char *src, const char *tmp, int bits, int group, int sym) {
  char path[4096], *text = NULL;
  size_t len = 0;
  QAT_TRY(qat_path_join(path, sizeof path, src, "config.json"));
  QAT_TRY(qat_read_file(path, &text, &len));
  cJSON *root = cJSON_ParseWithLength(text, len);
  free(text);
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return QAT_FAIL(QAT_EFORMAT, "%s: not a JSON object", path);
  }
  cJSON_DeleteItemFromObjectCaseSensitive(root, "quantization_config");
  cJSON *q = cJSON_AddObjectToObject(root, "quantization_config");
  cJSON_AddStringToObject(q, "quant_method", "gptq");
  cJSON_AddNumberToObject(q, "bits", bits);
  cJSON_AddNumberToObject(q, "group_size", group);
  cJSON_AddBoolToObject(q, "sym", sym);
  cJSON_AddBoolToObject(q, "desc_act", 0);
  cJSON_AddStringToObject(q, "checkpoint_format", "gptq_v2");
  char *out = cJSON_Print(root);
  cJSON_Delete(root);
  if (!out) return QAT_FAIL(QAT_ENOMEM, "export: out of memory");
  qat_status st = qat_path_join(path, sizeof path, tmp, "config.json");
  if (st == QAT_OK) st = qat_write_file_atomic(path, out, strlen(out));
  cJSON_free(out);
  return st;
}

qat_status qat_cli_export_gptq(const char *src, const char *out) {
  char path[4096];
  QAT_TRY(qat_path_join(path, sizeof path, src, "model.safetensors.index.json"));
  if (qat_path_exists(path))
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: sharded packed folders are not exported to gptq yet",
                    src);
  qat_st_set set;
  QAT_TRY(qat_st_set_open(src, &set));
  for (int i = 0; i < set.nfiles; i++)
    if (!qat_packed_st_is_packed(&set.files[i])) {
      qat_status e = QAT_FAIL(QAT_EFORMAT,
                              "%s: no qat_packed metadata (make it with qat quantize --packed)",
                              set.files[i].path);
      qat_st_set_close(&set);
      return e;
    }
  char tmp[4096] = "";
  int bits = 0, group = 0, sym = 0, nlin = 0;
  qat_status st = qat_dir_begin(out, tmp, sizeof tmp);
  for (int i = 0; i < set.nfiles && st == QAT_OK; i++)
    st = convert_file(&set.files[i], tmp, &bits, &group, &sym, &nlin);
  qat_st_set_close(&set);
  if (st == QAT_OK && nlin == 0) st = QAT_FAIL(QAT_EFORMAT, "%s: no packed Linears", src);
  char **names = NULL;
  int n = 0;
  if (st == QAT_OK) st = qat_list_dir(src, &names, &n);
  for (int i = 0; i < n && st == QAT_OK; i++) {
    if (ends_with(names[i], ".safetensors") || strcmp(names[i], "config.json") == 0) continue;
    char a[4096], b[4096];
    st = qat_path_join(a, sizeof a, src, names[i]);
    if (st == QAT_OK) st = qat_path_join(b, sizeof b, tmp, names[i]);
    if (st == QAT_OK && !qat_is_dir(a)) st = qat_copy_file(a, b);
  }
  qat_free_list(names, n);
  if (st == QAT_OK) st = write_config(src, tmp, bits, group, sym);
  if (st == QAT_OK) st = qat_dir_commit(tmp, out);
  if (st != QAT_OK) {
    qat_dir_abort(tmp);
    return st;
  }
  printf("exported %d Linears as gptq_v2 W%d g%d %s -> %s\n", nlin, bits, group,
         sym ? "sym" : "asym", out);
  return QAT_OK;
}
