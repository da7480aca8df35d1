/* qat export --format gguf: a model as one llama.cpp GGUF file (io/gguf_export.h), from
 *   --checkpoint RUN         a training run's newest checkpoint (trained s, z; E2E-QP's frozen
 *                            codes when the run has them);
 *   --model PACKED_DIR       a `qat quantize --packed` folder: its codes and scales as stored;
 *   --model FAKEQUANT_DIR    a fake-quant folder with its qat_quant.safetensors record (qat
 *                            export, qat quantize --method gptq): the codes are recovered as
 *                            fq_codes(w_hat) with the recorded s, z, and checked to dequantize
 *                            back to w_hat bit for bit;
 *   --model FP_DIR [--quant SPEC]  an unquantized folder, RTN-quantized first when --quant says so.
 * Quantized Linears whose in features are not whole groups (stories260K's down_proj: 172 at
 * g32) have no packed form: they are written as their fake-quant weights in floats (said per
 * tensor). */
#include "cli/cli.h"
#include "core/log.h"
#include "io/fsutil.h"
#include "io/gguf_export.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "quant/packed.h"
#include "quant/quant.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a loaded model as the source ---- */

typedef struct msrc {
  qat_llama *m;
  int check_grid; /* 1: the masters are fake-quant weights: they must equal dequant(codes) */
} msrc;

/* The model's tensor (or Linear) named hf; NULL when it has none. */
static qat_tensor *find(qat_llama *m, const char *hf, qat_linear **lin) {
  *lin = NULL;
  if (!strcmp(hf, "model.embed_tokens.weight")) return &m->embed;
  if (!strcmp(hf, "model.norm.weight")) return &m->final_norm;
  if (!strcmp(hf, "lm_head.weight")) return &m->lm_head;
  int l, k = 0;
  if (sscanf(hf, "model.layers.%d.%n", &l, &k) != 1 || !k || l < 0 || l >= m->cfg.n_layers) return NULL;
  qat_llama_layer *L = &m->layers[l];
  const char *r = hf + k;
  if (!strcmp(r, "input_layernorm.weight")) return &L->attn_norm;
  if (!strcmp(r, "post_attention_layernorm.weight")) return &L->ffn_norm;
  qat_linear *ls[7] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
  for (int i = 0; i < 7; i++) {
    size_t n = strlen(ls[i]->name);
    if (strncmp(hf, ls[i]->name, n) || hf[n] != '.') continue;
    if (!strcmp(hf + n, ".weight")) return *lin = ls[i], &ls[i]->w;
    if (!strcmp(hf + n, ".bias")) return ls[i]->b.data ? &ls[i]->b : NULL;
  }
  return NULL;
}

static qat_status download(const qat_llama *m, const qat_tensor *t, void **out) {
  size_t nb = qat_nbytes(t);
  *out = malloc(nb ? nb : 1);
  if (!*out) return QAT_FAIL(QAT_ENOMEM, "gguf export: out of memory");
  return m->be->download(m->be, *out, t->data, nb);
}

/* A quantized Linear: codes (frozen, or fq_codes of the masters), then packed, or its
 * fake-quant weights when the groups do not tile the in features. */
static qat_status quant_linear(msrc *c, qat_linear *lin, int64_t N, int64_t K, qat_gguf_src *out) {
  qat_llama *m = c->m;
  const qat_qspec *q = &m->qspec;
  const qat_backend *be = m->be;
  uint8_t *codes = malloc((size_t)(N * K));
  float *s = NULL, *z = NULL, *w = NULL, *wq = malloc((size_t)(N * K) * sizeof *wq);
  qat_status st = QAT_OK;
  if (!codes || !wq) {
    st = QAT_FAIL(QAT_ENOMEM, "gguf export: %s: out of memory", lin->name);
    goto done;
  }
  qat_tensor ct = qat_view2(codes, QAT_U8, QAT_DEV_CPU, N, K);
  qat_tensor wt = qat_view2(wq, QAT_F32, QAT_DEV_CPU, N, K);
  /* the model lives on the CPU backend (the callers load it there): host views are valid */
  if (lin->use_codes && lin->codes.data) memcpy(codes, lin->codes.data, (size_t)(N * K));
  else QAT_CHECK(st, be->fq_codes(be, q, &lin->w, &lin->s, &lin->z, &ct), done);
  QAT_CHECK(st, be->dq_forward(be, q, &ct, &lin->s, &lin->z, &wt), done);
  if (c->check_grid) {
    QAT_CHECK(st, download(m, &lin->w, (void **)&w), done);
    for (int64_t i = 0; i < N * K; i++)
      if (memcmp(&w[i], &wq[i], 4)) {
        st = QAT_FAIL(QAT_EINVAL, "gguf export: %s.weight[%" PRId64 ", %" PRId64 "] = %.9g is not "
                      "on the grid of qat_quant.safetensors (dequantized code: %.9g)", lin->name,
                      i / K, i % K, w[i], wq[i]);
        goto done;
      }
  }
  if (q->group == -1 || (q->group > 0 && K % q->group == 0)) {
    QAT_CHECK(st, download(m, &lin->s, (void **)&s), done);
    if (!q->sym) QAT_CHECK(st, download(m, &lin->z, (void **)&z), done);
    QAT_CHECK(st, qat_packed_alloc(&out->packed, q, N, K, QAT_F32, lin->name), done);
    out->is_packed = 1;
    QAT_CHECK(st, qat_packed_pack(&out->packed, codes, s, z, lin->name), done);
  } else if (q->group == 0) {
    st = QAT_FAIL(QAT_EUNSUPPORTED, "gguf export: %s: per-tensor scales have no GGUF block type "
                  "(groups of 32, 64, ... only)", lin->name);
  } else {
    out->f32 = wq;
    wq = NULL;
    snprintf(out->note, sizeof out->note, "(W%d: %" PRId64 " in features are not whole groups "
             "of %d: the fake-quant weights as floats)", q->bits, K, q->group);
  }
done:
  free(codes);
  free(s);
  free(z);
  free(w);
  free(wq);
  return st;
}

static qat_status model_get(void *ctx, const char *hf, int64_t rows, int64_t cols,
                            qat_gguf_src *out) {
  msrc *c = ctx;
  qat_linear *lin;
  qat_tensor *t = find(c->m, hf, &lin);
  if (!t || !t->data) return QAT_FAIL(QAT_EINTERNAL, "gguf export: the model has no %s", hf);
  if (qat_numel(t) != rows * cols)
    return QAT_FAIL(QAT_EINVAL, "gguf export: %s has %" PRId64 " elements, %" PRId64 " expected",
                    hf, qat_numel(t), rows * cols);
  if (lin && c->m->quantized) return quant_linear(c, lin, rows, cols, out);
  return download(c->m, t, (void **)&out->f32);
}

/* ---- a packed folder as the source ---- */

static qat_status packed_get(void *ctx, const char *hf, int64_t rows, int64_t cols,
                             qat_gguf_src *out) {
  const qat_st_set *set = ctx;
  char base[512], name[560];
  size_t n = strlen(hf);
  if (n > 7 && !strcmp(hf + n - 7, ".weight")) {
    snprintf(base, sizeof base, "%.*s", (int)(n - 7), hf);
    snprintf(name, sizeof name, "%s.qcodes", base);
    const qat_st_file *f;
    if (qat_st_set_find(set, name, &f)) {
      QAT_TRY(qat_packed_st_read(f, base, &out->packed));
      out->is_packed = 1;
      return QAT_OK;
    }
  }
  const qat_st_tensor *t = qat_st_set_find(set, hf, NULL);
  if (!t) return QAT_FAIL(QAT_EFORMAT, "gguf export: the packed folder has no %s", hf);
  if (qat_st_numel(t) != rows * cols)
    return QAT_FAIL(QAT_EFORMAT, "gguf export: %s has %" PRId64 " elements, %" PRId64 " expected",
                    hf, qat_st_numel(t), rows * cols);
  out->f32 = malloc((size_t)(rows * cols) * sizeof(float));
  if (!out->f32) return QAT_FAIL(QAT_ENOMEM, "gguf export: out of memory");
  return qat_st_read_f32(t, out->f32);
}

/* ---- the quantization record of a fake-quant folder ---- */

static qat_status read_record(const char *dir, qat_qspec *q) {
  char path[4096], *d = NULL;
  size_t n = 0;
  QAT_TRY(qat_path_join(path, sizeof path, dir, "qat_quant.json"));
  QAT_TRY(qat_read_file(path, &d, &n));
  cJSON *r = cJSON_ParseWithLength(d, n);
  free(d);
  const cJSON *b = cJSON_GetObjectItemCaseSensitive(r, "bits");
  const cJSON *g = cJSON_GetObjectItemCaseSensitive(r, "group");
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(r, "sym");
  qat_status st = QAT_OK;
  if (!cJSON_IsNumber(b) || !cJSON_IsNumber(g) || !cJSON_IsBool(s))
    st = QAT_FAIL(QAT_EFORMAT, "%s: needs bits, group (numbers) and sym (bool)", path);
  else {
    memset(q, 0, sizeof *q);
    q->bits = b->valueint;
    q->group = g->valueint;
    q->sym = cJSON_IsTrue(s);
    st = qat_qspec_check(q);
  }
  cJSON_Delete(r);
  return st;
}

/* qat_quant.safetensors' <linear>.scales / .zeros into the model's quantizer state. */
static qat_status load_record(qat_llama *m, const char *path) {
  qat_st_file f;
  QAT_TRY(qat_st_open(path, &f));
  qat_status st = QAT_OK;
  char name[160];
  for (int l = 0; st == QAT_OK && l < m->cfg.n_layers; l++) {
    qat_llama_layer *L = &m->layers[l];
    qat_linear *ls[7] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
    for (int i = 0; st == QAT_OK && i < 7; i++) {
      qat_tensor *ts[2] = {&ls[i]->s, &ls[i]->z};
      const char *suf[2] = {"scales", "zeros"};
      for (int k = 0; st == QAT_OK && k < 2; k++) {
        if (!ts[k]->data) continue;
        snprintf(name, sizeof name, "%s.%s", ls[i]->name, suf[k]);
        const qat_st_tensor *t = qat_st_find(&f, name);
        if (!t) {
          st = QAT_FAIL(QAT_EFORMAT, "%s: no %s", path, name);
          break;
        }
        if (qat_st_numel(t) != qat_numel(ts[k])) {
          st = QAT_FAIL(QAT_EFORMAT, "%s: %s has %" PRId64 " values, the model's spec %" PRId64,
                        path, name, qat_st_numel(t), qat_numel(ts[k]));
          break;
        }
        float *buf = malloc(qat_nbytes(ts[k]));
        if (!buf) st = QAT_FAIL(QAT_ENOMEM, "gguf export: out of memory");
        if (st == QAT_OK) st = qat_st_read_f32(t, buf);
        if (st == QAT_OK) st = m->be->upload(m->be, ts[k]->data, buf, qat_nbytes(ts[k]));
        free(buf);
      }
    }
  }
  qat_st_close(&f);
  return st;
}

/* ---- the command ---- */

static int folder_is_packed(const char *dir, qat_st_set *set, int *opened) {
  *opened = qat_st_set_open(dir, set) == QAT_OK;
  for (int i = 0; *opened && i < set->nfiles; i++)
    if (qat_packed_st_is_packed(&set->files[i])) return 1;
  return 0;
}

static void report(const qat_gguf_export_stats *s, const char *from, const char *out) {
  printf("exported %s -> %s: %d quantized Linears (%s), %d Linears as floats, %.1f MB of "
         "tensors; largest weight change from the F16 rounding of d / m: %.3g\n", from, out,
         s->n_quant, s->qtype ? qat_ggml_type_name(s->qtype) : "none", s->n_float_linear,
         (double)s->bytes / 1e6, s->max_err);
}

qat_status qat_cli_export_gguf(const char *run, const char *model, const char *quant, int f16,
                               const char *out) {
  qat_gguf_export_opts o = {.f16 = f16};
  qat_gguf_export_stats stats;
  qat_llama *m = NULL;
  qat_status st = QAT_OK;
  char dir[4096];
  if (run) {
    if (quant) return QAT_FAIL(QAT_EUSAGE, "--quant: the run's own quantizer is exported");
    char ckdir[4096];
    int64_t step;
    qat_qspec q;
    QAT_TRY(qat_cli_load_run(run, &m, &q, dir, sizeof dir, ckdir, sizeof ckdir, &step));
    o.tok_dir = dir;
    msrc c = {.m = m};
    st = qat_gguf_export(&m->cfg, model_get, &c, &o, out, &stats);
    if (st == QAT_OK) report(&stats, ckdir, out);
    qat_llama_free(m);
    return st;
  }
  snprintf(dir, sizeof dir, "%s", model);
  o.tok_dir = dir;
  qat_st_set set;
  int opened = 0;
  if (folder_is_packed(dir, &set, &opened)) {
    qat_llama_config cfg;
    if (quant) st = QAT_FAIL(QAT_EUSAGE, "--quant: %s is already packed", dir);
    if (st == QAT_OK) st = qat_llama_config_load(dir, &cfg);
    if (st == QAT_OK) st = qat_gguf_export(&cfg, packed_get, &set, &o, out, &stats);
    qat_st_set_close(&set);
    if (st == QAT_OK) report(&stats, dir, out);
    return st;
  }
  if (opened) qat_st_set_close(&set);
  char rec[4096];
  QAT_TRY(qat_path_join(rec, sizeof rec, dir, "qat_quant.safetensors"));
  int has_rec = qat_path_exists(rec);
  if (has_rec && quant)
    return QAT_FAIL(QAT_EUSAGE, "--quant: %s is already quantized (qat_quant.safetensors)", dir);
  qat_qspec q;
  if (has_rec) QAT_TRY(read_record(dir, &q));
  else if (quant) QAT_TRY(qat_quant_parse(quant, &q));
  QAT_TRY(qat_llama_load(dir, qat_backend_cpu(), &m));
  if (has_rec || quant) st = qat_llama_set_quant(m, &q);
  if (st == QAT_OK && has_rec) st = load_record(m, rec);
  msrc c = {.m = m, .check_grid = has_rec};
  if (st == QAT_OK) st = qat_gguf_export(&m->cfg, model_get, &c, &o, out, &stats);
  if (st == QAT_OK) report(&stats, dir, out);
  qat_llama_free(m);
  return st;
}
