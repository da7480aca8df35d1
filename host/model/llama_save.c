/* Writing a Hugging Face folder from a model: config.json (the source's, copied; generated when
 * there is no source), model.safetensors in cfg.file_dtype, and the source's other files
 * (tokenizer files) copied through, all published at once (qat_dir_begin / commit).
 * Decoder Linear weights are w_hat = fake-quant(w) when quantized ((codes - z) * s for Linears
 * frozen to integer codes), computed by the model's backend in F32 exactly as the forward does,
 * then converted to the file dtype. */
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "model/llama_priv.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

static const char *torch_name(qat_dtype t) {
  return t == QAT_F16 ? "float16" : t == QAT_BF16 ? "bfloat16" : "float32";
}

/* The source's config.json verbatim, unless its dtype differs from the file dtype written. */
static qat_status write_config(const qat_llama *m, const char *src_dir, const char *tmp) {
  char src[4096], dst[4096];
  QAT_TRY(qat_path_join(dst, sizeof dst, tmp, "config.json"));
  if (src_dir) {
    QAT_TRY(qat_path_join(src, sizeof src, src_dir, "config.json"));
    if (qat_path_exists(src)) {
      char *text = NULL;
      size_t len = 0;
      QAT_TRY(qat_read_file(src, &text, &len));
      cJSON *root = cJSON_ParseWithLength(text, len);
      const char *want = torch_name(m->cfg.file_dtype);
      const cJSON *dt = root ? cJSON_GetObjectItemCaseSensitive(root, "torch_dtype") : NULL;
      if (!dt && root) dt = cJSON_GetObjectItemCaseSensitive(root, "dtype");
      qat_status st;
      if (root && cJSON_IsString(dt) && strcmp(dt->valuestring, want) != 0) {
        cJSON_ReplaceItemInObjectCaseSensitive(root, dt->string, cJSON_CreateString(want));
        char *out = cJSON_Print(root);
        st = out ? qat_write_file_atomic(dst, out, strlen(out))
                 : QAT_FAIL(QAT_ENOMEM, "%s: cannot print config.json", dst);
        cJSON_free(out);
      } else {
        st = qat_write_file_atomic(dst, text, len);
      }
      cJSON_Delete(root);
      free(text);
      return st;
    }
  }
  char *json = qat_llama_config_json(&m->cfg);
  if (!json) return QAT_FAIL(QAT_ENOMEM, "%s: cannot build config.json", dst);
  qat_status st = qat_write_file_atomic(dst, json, strlen(json));
  cJSON_free(json);
  return st;
}

static qat_status copy_others(const char *src_dir, const char *tmp) {
  if (!src_dir) return QAT_OK;
  char **names = NULL;
  int n = 0;
  QAT_TRY(qat_list_dir(src_dir, &names, &n));
  qat_status st = QAT_OK;
  for (int i = 0; i < n && st == QAT_OK; i++) {
    const char *nm = names[i];
    if (strcmp(nm, "config.json") == 0 || ends_with(nm, ".safetensors") ||
        strcmp(nm, "model.safetensors.index.json") == 0)
      continue;
    char s[4096], d[4096];
    st = qat_path_join(s, sizeof s, src_dir, nm);
    if (st == QAT_OK && qat_is_dir(s)) continue;
    if (st == QAT_OK) st = qat_path_join(d, sizeof d, tmp, nm);
    if (st == QAT_OK) st = qat_copy_file(s, d);
  }
  qat_free_list(names, n);
  return st;
}

static qat_status write_weights(const qat_llama *mc, const char *tmp) {
  qat_llama *m = (qat_llama *)mc; /* the table hands out pointers; nothing is modified */
  qat_dtype fd = m->cfg.file_dtype;
  lt_entry *t = NULL;
  int n = 0;
  QAT_TRY(qat_llama_table(m, &t, &n));
  void **bufs = calloc((size_t)n, sizeof *bufs);
  float *stage = NULL;
  qat_st_writer w;
  qat_st_writer_init(&w);
  qat_arena scratch = {0};
  qat_status st = QAT_OK;
  if (!bufs) {
    st = QAT_FAIL(QAT_ENOMEM, "save: out of host memory");
    goto done;
  }
  int64_t maxn = 0, maxlin = 0;
  for (int i = 0; i < n; i++) {
    int64_t k = qat_numel(t[i].p);
    if (k > maxn) maxn = k;
    if (t[i].kind == LT_LINEAR_W && k > maxlin) maxlin = k;
  }
  stage = malloc((size_t)maxn * sizeof *stage);
  if (!stage) {
    st = QAT_FAIL(QAT_ENOMEM, "save: cannot stage %lld floats", (long long)maxn);
    goto done;
  }
  qat_tensor wq = {0};
  if (m->quantized)
    QAT_CHECK(st, qat_arena_init(&scratch, m->be, "save scratch", qat_arena_need(QAT_F32, maxlin)),
              done);
  for (int i = 0; i < n; i++) {
    lt_entry *e = &t[i];
    const qat_tensor *src = e->p;
    if (e->kind == LT_LINEAR_W && m->quantized) {
      qat_linear *li = e->lin;
      qat_arena_reset(&scratch);
      QAT_CHECK(st, qat_arena_tensor(&scratch, &wq, QAT_F32, 2, e->shape, e->name), done);
      const qat_tensor *z = m->qspec.sym ? NULL : &li->z;
      if (li->use_codes) /* frozen integer codes (E2E-QP, U8 or packed): the trained s */
        QAT_CHECK(st, qat_llama_linear_dequant(m, li, &wq), done);
      else
        QAT_CHECK(st, QAT_OP(m->be, fq_forward, &m->qspec, &li->w, &li->s, z, &wq), done);
      src = &wq;
    }
    qat_tensor h = qat_view(stage, QAT_F32, QAT_DEV_CPU, e->ndim, e->shape);
    QAT_CHECK(st, qat_tensor_download(m->be, &h, src), done);
    size_t k = (size_t)qat_numel(src);
    bufs[i] = malloc(k * qat_dtype_size(fd));
    if (!bufs[i]) {
      st = QAT_FAIL(QAT_ENOMEM, "save: out of host memory for %s", e->name);
      goto done;
    }
    QAT_CHECK(st, qat_convert_from_f32(stage, bufs[i], fd, k), done);
    QAT_CHECK(st, qat_st_writer_add(&w, e->name, fd, e->ndim, e->shape, bufs[i]), done);
  }
  QAT_CHECK(st, qat_st_writer_meta(&w, "format", "pt"), done);
  char path[4096];
  QAT_CHECK(st, qat_path_join(path, sizeof path, tmp, "model.safetensors"), done);
  QAT_CHECK(st, qat_st_write(&w, path), done);
done:
  qat_arena_free(&scratch);
  qat_st_writer_free(&w);
  if (bufs)
    for (int i = 0; i < n; i++) free(bufs[i]);
  free(bufs);
  free(stage);
  free(t);
  return st;
}

qat_status qat_llama_save_hf(const qat_llama *m, const char *src_dir, const char *out_dir) {
  char tmp[4096];
  if (m->packed)
    return QAT_FAIL(QAT_EUNSUPPORTED, "save %s: the model's Linears are packed codes (it is "
                                      "inference only; its folder is already the export)",
                    out_dir);
  QAT_TRY(qat_dir_begin(out_dir, tmp, sizeof tmp));
  qat_status st;
  QAT_CHECK(st, write_weights(m, tmp), fail);
  QAT_CHECK(st, write_config(m, src_dir, tmp), fail);
  QAT_CHECK(st, copy_others(src_dir, tmp), fail);
  QAT_CHECK(st, qat_dir_commit(tmp, out_dir), fail);
  return QAT_OK;
fail:
  qat_dir_abort(tmp);
  return st;
}
