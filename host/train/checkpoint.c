/* Training checkpoints (see checkpoint.h for the layout and the guarantees).
 * state.json is written by hand (floats as %.17g, which strtod reads back bit-exactly; cJSON's
 * printer accepts a 15-digit form within an epsilon, which is not exact) and read with cJSON. */
#include "train/checkpoint.h"

#include "io/fsutil.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATE_JSON "state.json"
#define STATE_ST "state.safetensors"

/* ------------------------------------------------------------------ writer */

void qat_ckpt_writer_init(qat_ckpt_writer *w) {
  memset(w, 0, sizeof *w);
  qat_st_writer_init(&w->st);
}

static void field_free(qat_ckpt_field *f) {
  free(f->key);
  free(f->s);
}

void qat_ckpt_writer_free(qat_ckpt_writer *w) {
  qat_st_writer_free(&w->st);
  for (int i = 0; i < w->nfields; i++) field_free(&w->fields[i]);
  free(w->fields);
  memset(w, 0, sizeof *w);
}

qat_status qat_ckpt_add_tensor(qat_ckpt_writer *w, const char *name, qat_dtype dtype, int ndim,
                               const int64_t *shape, const void *data) {
  for (int i = 0; i < w->st.n; i++)
    if (strcmp(w->st.e[i].name, name) == 0)
      return QAT_FAIL(QAT_EINVAL, "checkpoint: tensor '%s' added twice", name);
  return qat_st_writer_add(&w->st, name, dtype, ndim, shape, data);
}

qat_status qat_ckpt_add_f32(qat_ckpt_writer *w, const char *name, int ndim, const int64_t *shape,
                            const float *data) {
  return qat_ckpt_add_tensor(w, name, QAT_F32, ndim, shape, data);
}

/* The field for key (replacing its old value) or a new one. */
static qat_status field_slot(qat_ckpt_writer *w, const char *key, qat_ckpt_field **out) {
  if (!key || !key[0]) return QAT_FAIL(QAT_EINVAL, "checkpoint: empty field key");
  for (int i = 0; i < w->nfields; i++)
    if (strcmp(w->fields[i].key, key) == 0) {
      free(w->fields[i].s);
      w->fields[i].s = NULL;
      *out = &w->fields[i];
      return QAT_OK;
    }
  if (w->nfields == w->cap) {
    int cap = w->cap ? 2 * w->cap : 16;
    qat_ckpt_field *nf = realloc(w->fields, (size_t)cap * sizeof *nf);
    if (!nf) return QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory");
    w->fields = nf;
    w->cap = cap;
  }
  qat_ckpt_field *f = &w->fields[w->nfields];
  memset(f, 0, sizeof *f);
  f->key = strdup(key);
  if (!f->key) return QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory");
  w->nfields++;
  *out = f;
  return QAT_OK;
}

qat_status qat_ckpt_set_int(qat_ckpt_writer *w, const char *key, int64_t v) {
  qat_ckpt_field *f;
  QAT_TRY(field_slot(w, key, &f));
  f->kind = QAT_CKF_INT;
  f->i = v;
  return QAT_OK;
}

qat_status qat_ckpt_set_float(qat_ckpt_writer *w, const char *key, double v) {
  qat_ckpt_field *f;
  QAT_TRY(field_slot(w, key, &f));
  f->kind = QAT_CKF_FLOAT;
  f->f = v;
  return QAT_OK;
}

qat_status qat_ckpt_set_str(qat_ckpt_writer *w, const char *key, const char *v) {
  qat_ckpt_field *f;
  QAT_TRY(field_slot(w, key, &f));
  f->kind = QAT_CKF_STR;
  f->s = strdup(v ? v : "");
  if (!f->s) return QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory");
  return QAT_OK;
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

static qat_status state_json(int64_t step, const qat_ckpt_writer *w, char **out, size_t *len) {
  FILE *f = open_memstream(out, len);
  if (!f) return QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory");
  fprintf(f, "{\n  \"format_version\": %d,\n  \"step\": %" PRId64 ",\n  \"tensors\": \"%s\",\n",
          QAT_CKPT_FORMAT_VERSION, step, STATE_ST);
  fputs("  \"fields\": {", f);
  for (int i = 0; i < w->nfields; i++) {
    const qat_ckpt_field *fd = &w->fields[i];
    fputs(i ? ",\n    " : "\n    ", f);
    json_string(f, fd->key);
    switch (fd->kind) {
    case QAT_CKF_INT: fprintf(f, ": {\"int\": \"%" PRId64 "\"}", fd->i); break;
    case QAT_CKF_FLOAT:
      if (isnan(fd->f))
        fputs(": {\"float\": \"nan\"}", f);
      else if (isinf(fd->f))
        fprintf(f, ": {\"float\": \"%s\"}", fd->f > 0 ? "inf" : "-inf");
      else
        fprintf(f, ": {\"float\": %.17g}", fd->f);
      break;
    case QAT_CKF_STR:
      fputs(": {\"str\": ", f);
      json_string(f, fd->s);
      fputc('}', f);
      break;
    }
  }
  fputs(w->nfields ? "\n  }\n}\n" : "}\n}\n", f);
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(*out);
    *out = NULL;
    return QAT_FAIL(QAT_ENOMEM, "checkpoint: cannot format state.json");
  }
  return QAT_OK;
}

qat_status qat_ckpt_path(const char *run_dir, int64_t step, char *path, size_t n) {
  if (step < 0) return QAT_FAIL(QAT_EINVAL, "checkpoint: negative step %" PRId64, step);
  char name[64];
  snprintf(name, sizeof name, "ckpt-%08" PRId64, step);
  return qat_path_join(path, n, run_dir, name);
}

/* Step of a directory name "ckpt-<digits>" (exactly), else -1. */
static int64_t parse_ckpt_name(const char *name) {
  if (strncmp(name, "ckpt-", 5) != 0) return -1;
  const char *d = name + 5;
  if (!*d || strlen(d) > 18) return -1;
  for (const char *p = d; *p; p++)
    if (*p < '0' || *p > '9') return -1;
  return (int64_t)strtoll(d, NULL, 10);
}

static int is_complete(const char *run_dir, const char *name) {
  char p[4096], q[4096];
  if (qat_path_join(p, sizeof p, run_dir, name) != QAT_OK || !qat_is_dir(p)) return 0;
  if (qat_path_join(q, sizeof q, p, STATE_JSON) != QAT_OK || !qat_path_exists(q)) return 0;
  if (qat_path_join(q, sizeof q, p, STATE_ST) != QAT_OK || !qat_path_exists(q)) return 0;
  return 1;
}

static int cmp_desc(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* Keeps the newest `keep` complete checkpoints and `saved`; removes older complete and
 * incomplete ckpt-N directories and leftover "ckpt-*.tmp-*" temporaries. */
static qat_status prune(const char *run_dir, int64_t saved, int keep) {
  char **names = NULL;
  int n = 0;
  QAT_TRY(qat_list_dir(run_dir, &names, &n));
  int64_t *steps = calloc((size_t)n + 1, sizeof *steps);
  qat_status st = QAT_OK;
  if (!steps) {
    st = QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory");
    goto done;
  }
  int nc = 0;
  for (int i = 0; i < n; i++) {
    int64_t s = parse_ckpt_name(names[i]);
    if (s >= 0 && is_complete(run_dir, names[i])) steps[nc++] = s;
  }
  qsort(steps, (size_t)nc, sizeof *steps, cmp_desc);
  int64_t cutoff = nc > keep ? steps[keep - 1] : -1; /* complete ones below this go */
  for (int i = 0; i < n && st == QAT_OK; i++) {
    int64_t s = parse_ckpt_name(names[i]);
    int remove = 0;
    if (s >= 0 && s < cutoff && s < saved) remove = 1;
    if (s < 0 && strncmp(names[i], "ckpt-", 5) == 0 && strstr(names[i], ".tmp-")) remove = 1;
    if (!remove) continue;
    char p[4096];
    QAT_CHECK(st, qat_path_join(p, sizeof p, run_dir, names[i]), done);
    st = qat_rm_rf(p);
  }
done:
  free(steps);
  qat_free_list(names, n);
  return st;
}

qat_status qat_ckpt_save(const char *run_dir, int64_t step, const qat_ckpt_writer *w, int keep,
                         char *path_out, size_t n) {
  return qat_ckpt_save_hook(run_dir, step, w, keep, NULL, NULL, path_out, n);
}

qat_status qat_ckpt_save_hook(const char *run_dir, int64_t step, const qat_ckpt_writer *w,
                              int keep, qat_ckpt_hook hook, void *ctx, char *path_out, size_t n) {
  if (keep < 1) return QAT_FAIL(QAT_EINVAL, "checkpoint: keep %d must be >= 1", keep);
  char out[4096], tmp[4096], file[4096];
  QAT_TRY(qat_ckpt_path(run_dir, step, out, sizeof out));
  QAT_TRY(qat_mkdir_p(run_dir));
  QAT_TRY(qat_dir_begin(out, tmp, sizeof tmp));
  qat_status st = QAT_OK;
  char *json = NULL;
  size_t jlen = 0;
  QAT_CHECK(st, qat_path_join(file, sizeof file, tmp, STATE_ST), fail);
  QAT_CHECK(st, qat_st_write(&w->st, file), fail);
  if (hook) QAT_CHECK(st, hook(ctx, tmp), fail);
  /* state.json last: its presence marks a complete checkpoint even without the atomic rename */
  QAT_CHECK(st, state_json(step, w, &json, &jlen), fail);
  QAT_CHECK(st, qat_path_join(file, sizeof file, tmp, STATE_JSON), fail);
  QAT_CHECK(st, qat_write_file_atomic(file, json, jlen), fail);
  free(json);
  json = NULL;
  QAT_CHECK(st, qat_dir_commit(tmp, out), fail);
  if (path_out && n) snprintf(path_out, n, "%s", out);
  st = prune(run_dir, step, keep);
  if (st != QAT_OK) qat_context(st, "checkpoint %s saved, pruning old ones failed", out);
  return st;
fail:
  free(json);
  qat_dir_abort(tmp);
  return qat_context(st, "saving checkpoint %s", out);
}

qat_status qat_ckpt_latest(const char *run_dir, char *path, size_t n, int64_t *step) {
  if (n) path[0] = 0;
  *step = -1;
  if (!qat_is_dir(run_dir)) return QAT_OK;
  char **names = NULL;
  int nn = 0;
  QAT_TRY(qat_list_dir(run_dir, &names, &nn));
  int64_t best = -1;
  for (int i = 0; i < nn; i++) {
    int64_t s = parse_ckpt_name(names[i]);
    if (s > best && is_complete(run_dir, names[i])) best = s;
  }
  qat_free_list(names, nn);
  if (best < 0) return QAT_OK;
  QAT_TRY(qat_ckpt_path(run_dir, best, path, n));
  *step = best;
  return QAT_OK;
}

/* ------------------------------------------------------------------ reader */

void qat_ckpt_close(qat_ckpt *ck) {
  if (!ck) return;
  if (ck->st.path || ck->st.map) qat_st_close(&ck->st);
  for (int i = 0; i < ck->nfields; i++) field_free(&ck->fields[i]);
  free(ck->fields);
  free(ck->dir);
  memset(ck, 0, sizeof *ck);
}

/* Parses one "key": {"int"|"float"|"str": ...} entry. */
static qat_status parse_field(const char *file, const cJSON *item, qat_ckpt_field *f) {
  const char *key = item->string;
  if (!cJSON_IsObject(item) || !item->child || item->child->next)
    return QAT_FAIL(QAT_EFORMAT, "%s: field '%s' is not {\"int\"|\"float\"|\"str\": value}", file,
                    key);
  const cJSON *v = item->child;
  f->key = strdup(key);
  if (!f->key) return QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory");
  if (strcmp(v->string, "int") == 0 && cJSON_IsString(v)) {
    char *end;
    errno = 0;
    long long x = strtoll(v->valuestring, &end, 10);
    if (errno || end == v->valuestring || *end)
      return QAT_FAIL(QAT_EFORMAT, "%s: field '%s': bad int '%s'", file, key, v->valuestring);
    f->kind = QAT_CKF_INT;
    f->i = (int64_t)x;
  } else if (strcmp(v->string, "float") == 0 && cJSON_IsNumber(v)) {
    f->kind = QAT_CKF_FLOAT;
    f->f = v->valuedouble;
  } else if (strcmp(v->string, "float") == 0 && cJSON_IsString(v)) {
    const char *s = v->valuestring;
    f->kind = QAT_CKF_FLOAT;
    if (strcmp(s, "nan") == 0)
      f->f = NAN;
    else if (strcmp(s, "inf") == 0)
      f->f = INFINITY;
    else if (strcmp(s, "-inf") == 0)
      f->f = -INFINITY;
    else
      return QAT_FAIL(QAT_EFORMAT, "%s: field '%s': bad float '%s'", file, key, s);
  } else if (strcmp(v->string, "str") == 0 && cJSON_IsString(v)) {
    f->kind = QAT_CKF_STR;
    f->s = strdup(v->valuestring);
    if (!f->s) return QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory");
  } else {
    return QAT_FAIL(QAT_EFORMAT, "%s: field '%s': unknown kind '%s'", file, key, v->string);
  }
  return QAT_OK;
}

static qat_status parse_state(const char *file, const char *text, int64_t dir_step, qat_ckpt *ck) {
  cJSON *root = cJSON_Parse(text);
  if (!root) return QAT_FAIL(QAT_EFORMAT, "%s: not valid JSON", file);
  qat_status st = QAT_OK;
  const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "format_version");
  const cJSON *step = cJSON_GetObjectItemCaseSensitive(root, "step");
  const cJSON *fields = cJSON_GetObjectItemCaseSensitive(root, "fields");
  if (!cJSON_IsObject(root) || !cJSON_IsNumber(ver)) {
    st = QAT_FAIL(QAT_EFORMAT, "%s: no format_version", file);
    goto done;
  }
  if (ver->valuedouble != QAT_CKPT_FORMAT_VERSION) {
    st = QAT_FAIL(QAT_EFORMAT, "%s: format_version %g, this qat reads version %d", file,
                  ver->valuedouble, QAT_CKPT_FORMAT_VERSION);
    goto done;
  }
  /* steps are far below 2^53, so a JSON number holds them exactly */
  if (!cJSON_IsNumber(step) || step->valuedouble < 0 || step->valuedouble > 9007199254740992.0 ||
      step->valuedouble != floor(step->valuedouble)) {
    st = QAT_FAIL(QAT_EFORMAT, "%s: missing or bad step", file);
    goto done;
  }
  ck->step = (int64_t)step->valuedouble;
  if (dir_step >= 0 && ck->step != dir_step) {
    st = QAT_FAIL(QAT_EFORMAT, "%s: step %" PRId64 " but the directory is for step %" PRId64, file,
                  ck->step, dir_step);
    goto done;
  }
  if (!cJSON_IsObject(fields)) {
    st = QAT_FAIL(QAT_EFORMAT, "%s: missing \"fields\" object", file);
    goto done;
  }
  int n = cJSON_GetArraySize(fields);
  ck->fields = calloc((size_t)n + 1, sizeof *ck->fields);
  if (!ck->fields) {
    st = QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory");
    goto done;
  }
  for (const cJSON *it = fields->child; it; it = it->next) {
    for (int j = 0; j < ck->nfields; j++)
      if (strcmp(ck->fields[j].key, it->string) == 0) {
        st = QAT_FAIL(QAT_EFORMAT, "%s: field '%s' appears twice", file, it->string);
        goto done;
      }
    st = parse_field(file, it, &ck->fields[ck->nfields]);
    ck->nfields++; /* counted even on failure so qat_ckpt_close frees the partial entry */
    if (st != QAT_OK) goto done;
  }
done:
  cJSON_Delete(root);
  return st;
}

qat_status qat_ckpt_open(const char *dir, qat_ckpt *ck) {
  memset(ck, 0, sizeof *ck);
  char file[4096];
  qat_status st = QAT_OK;
  char *text = NULL;
  ck->dir = strdup(dir);
  if (!ck->dir) return QAT_FAIL(QAT_ENOMEM, "checkpoint: out of memory");
  /* the directory's own step, when it is named ckpt-N, must match state.json */
  const char *base = strrchr(dir, '/');
  base = base ? base + 1 : dir;
  int64_t dir_step = parse_ckpt_name(base);
  QAT_CHECK(st, qat_path_join(file, sizeof file, dir, STATE_JSON), fail);
  QAT_CHECK(st, qat_read_file(file, &text, NULL), fail);
  QAT_CHECK(st, parse_state(file, text, dir_step, ck), fail);
  free(text);
  text = NULL;
  QAT_CHECK(st, qat_path_join(file, sizeof file, dir, STATE_ST), fail);
  QAT_CHECK(st, qat_st_open(file, &ck->st), fail);
  return QAT_OK;
fail:
  free(text);
  qat_ckpt_close(ck);
  return st;
}

const qat_st_tensor *qat_ckpt_find(const qat_ckpt *ck, const char *name) {
  return qat_st_find(&ck->st, name);
}

static const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
  size_t used = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < ndim && used < n; i++)
    used += (size_t)snprintf(buf + used, n - used, "%s%" PRId64, i ? ", " : "", shape[i]);
  if (used < n) snprintf(buf + used, n - used, "]");
  return buf;
}

static qat_status find_checked(const qat_ckpt *ck, const char *name, int ndim,
                               const int64_t *shape, const qat_st_tensor **out) {
  const qat_st_tensor *t = qat_st_find(&ck->st, name);
  if (!t)
    return QAT_FAIL(QAT_EFORMAT, "%s/%s: no tensor '%s'", ck->dir, STATE_ST, name);
  int same = t->ndim == ndim;
  for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
  if (!same) {
    char a[128], b[128];
    return QAT_FAIL(QAT_EFORMAT, "%s/%s: tensor '%s' has shape %s, expected %s", ck->dir,
                    STATE_ST, name, shape_str(t->ndim, t->shape, a, sizeof a),
                    shape_str(ndim, shape, b, sizeof b));
  }
  *out = t;
  return QAT_OK;
}

qat_status qat_ckpt_read_f32(const qat_ckpt *ck, const char *name, float *dst, int ndim,
                             const int64_t *shape) {
  const qat_st_tensor *t;
  QAT_TRY(find_checked(ck, name, ndim, shape, &t));
  if (t->dtype != QAT_F32 && t->dtype != QAT_F16 && t->dtype != QAT_BF16)
    return QAT_FAIL(QAT_EFORMAT, "%s/%s: tensor '%s' is %s, not a float tensor", ck->dir, STATE_ST,
                    name, qat_dtype_name(t->dtype));
  return qat_st_read_f32(t, dst);
}

qat_status qat_ckpt_read(const qat_ckpt *ck, const char *name, qat_dtype dtype, void *dst,
                         int ndim, const int64_t *shape) {
  const qat_st_tensor *t;
  QAT_TRY(find_checked(ck, name, ndim, shape, &t));
  if (t->dtype != dtype)
    return QAT_FAIL(QAT_EFORMAT, "%s/%s: tensor '%s' is %s, expected %s", ck->dir, STATE_ST, name,
                    qat_dtype_name(t->dtype), qat_dtype_name(dtype));
  size_t bytes = (size_t)qat_st_numel(t) * qat_dtype_size(dtype);
  if (t->end - t->begin != bytes)
    return QAT_FAIL(QAT_EFORMAT, "%s/%s: tensor '%s' holds %llu bytes, expected %zu", ck->dir,
                    STATE_ST, name, (unsigned long long)(t->end - t->begin), bytes);
  if (bytes) memcpy(dst, t->data, bytes);
  return QAT_OK;
}

static const qat_ckpt_field *get_field(const qat_ckpt *ck, const char *key) {
  for (int i = 0; i < ck->nfields; i++)
    if (strcmp(ck->fields[i].key, key) == 0) return &ck->fields[i];
  return NULL;
}

int qat_ckpt_has(const qat_ckpt *ck, const char *key) { return get_field(ck, key) != NULL; }

static qat_status get_kind(const qat_ckpt *ck, const char *key, qat_ckpt_kind kind,
                           const qat_ckpt_field **out) {
  static const char *names[] = {"int", "float", "str"};
  const qat_ckpt_field *f = get_field(ck, key);
  if (!f) return QAT_FAIL(QAT_EFORMAT, "%s/%s: no field '%s'", ck->dir, STATE_JSON, key);
  if (f->kind != kind)
    return QAT_FAIL(QAT_EFORMAT, "%s/%s: field '%s' is %s, expected %s", ck->dir, STATE_JSON, key,
                    names[f->kind], names[kind]);
  *out = f;
  return QAT_OK;
}

qat_status qat_ckpt_get_int(const qat_ckpt *ck, const char *key, int64_t *v) {
  const qat_ckpt_field *f;
  QAT_TRY(get_kind(ck, key, QAT_CKF_INT, &f));
  *v = f->i;
  return QAT_OK;
}

qat_status qat_ckpt_get_float(const qat_ckpt *ck, const char *key, double *v) {
  const qat_ckpt_field *f;
  QAT_TRY(get_kind(ck, key, QAT_CKF_FLOAT, &f));
  *v = f->f;
  return QAT_OK;
}

qat_status qat_ckpt_get_str(const qat_ckpt *ck, const char *key, const char **v) {
  const qat_ckpt_field *f;
  QAT_TRY(get_kind(ck, key, QAT_CKF_STR, &f));
  *v = f->s;
  return QAT_OK;
}
