/* qat_gguf_convert: GGUF -> Hugging Face folder (gguf_convert.h). Everything is checked before
 * the output folder is begun (architecture, hyper-parameters, every tensor's name, type and
 * shape, the tokenizer), so a refused file costs no writing; then the tensors are dequantized
 * one by one into their own buffers (F32 tensors that need no change are written straight from
 * the mapping) and streamed into safetensors shards by the safetensors writer, each shard's
 * buffers freed once it is written. Peak memory is one shard (4 GiB by default) plus one tensor
 * during a q/k un-permutation, whatever the model's size. */
#include "io/gguf_convert.h"

#include "core/log.h"
#include "core/tensor.h"
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "model/llama2c.h"

#include <cjson/cJSON.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* blk.N.<gguf> -> model.layers.N.<hf> */
static const struct {
  const char *gguf, *hf;
} k_names[] = {
    {"attn_norm", "input_layernorm"},       {"attn_q", "self_attn.q_proj"},
    {"attn_k", "self_attn.k_proj"},         {"attn_v", "self_attn.v_proj"},
    {"attn_output", "self_attn.o_proj"},    {"ffn_norm", "post_attention_layernorm"},
    {"ffn_gate", "mlp.gate_proj"},          {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},
};

/* Hugging Face name into out (0 when the tensor has none); *layer gets N for blk.N.* (-1 else). */
static int hf_name(const char *name, int64_t n_layers, char *out, size_t n, int64_t *layer) {
  *layer = -1;
  if (!strcmp(name, "token_embd.weight")) return snprintf(out, n, "model.embed_tokens.weight"), 1;
  if (!strcmp(name, "output_norm.weight")) return snprintf(out, n, "model.norm.weight"), 1;
  if (!strcmp(name, "output.weight")) return snprintf(out, n, "lm_head.weight"), 1;
  if (strncmp(name, "blk.", 4)) return 0;
  char *end;
  long long l = strtoll(name + 4, &end, 10);
  if (end == name + 4 || *end != '.' || l < 0 || l >= n_layers || (name[4] == '0' && end != name + 5))
    return 0;
  const char *rest = end + 1, *dot = strrchr(rest, '.');
  if (!dot || (strcmp(dot, ".weight") && strcmp(dot, ".bias"))) return 0;
  for (size_t i = 0; i < sizeof k_names / sizeof *k_names; i++) {
    size_t k = strlen(k_names[i].gguf);
    if ((size_t)(dot - rest) == k && !strncmp(rest, k_names[i].gguf, k)) {
      *layer = l;
      snprintf(out, n, "model.layers.%lld.%s%s", l, k_names[i].hf, dot);
      return 1;
    }
  }
  return 0;
}

typedef struct conv {
  qat_gguf_file g;
  qat_gguf_hparams h;
  qat_st_writer w;
  void **bufs; /* the current shard's tensor buffers */
  int nbufs;
  int *shard; /* [n_tensors] output shard of each tensor */
  char tmp[4096];
  int have_tmp;
} conv;

static void conv_free(conv *c) {
  if (c->have_tmp) qat_dir_abort(c->tmp);
  qat_st_writer_free(&c->w);
  for (int i = 0; i < c->nbufs; i++)
    free(c->bufs[i]);
  free(c->bufs);
  free(c->shard);
  qat_gguf_close(&c->g);
}

/* Rows to un-permute for q / k of llama and mistral (0 = none), by name. */
static int64_t permute_heads(const conv *c, const char *name) {
  if (!strcmp(c->h.arch, "qwen2")) return 0;
  const char *dot = strrchr(name, '.');
  if (!dot || strcmp(dot, ".weight")) return 0;
  if (dot - name >= 6 && !strncmp(dot - 6, "attn_q", 6)) return c->h.heads;
  if (dot - name >= 6 && !strncmp(dot - 6, "attn_k", 6)) return c->h.kv_heads;
  return 0;
}

static int ends_with(const char *s, size_t n, const char *suffix) {
  size_t k = strlen(suffix);
  return n >= k && !strncmp(s + n - k, suffix, k);
}

/* The [rows, cols] (cols 0: 1-D) that the hyper-parameters imply for Hugging Face name nm; 0
 * when the model has no such tensor (biases exist on q, k, v and o only). */
static int expected_shape(const qat_gguf_hparams *h, const char *nm, int64_t *rows,
                          int64_t *cols) {
  int64_t C = h->dim, F = h->ffn, qd = h->heads * h->head_dim, kvd = h->kv_heads * h->head_dim;
  const char *dot = strrchr(nm, '.');
  int bias = !strcmp(dot, ".bias");
  size_t k = (size_t)(dot - nm);
  *cols = bias ? 0 : C;
  if (!strcmp(nm, "model.embed_tokens.weight") || !strcmp(nm, "lm_head.weight")) *rows = h->vocab;
  else if (ends_with(nm, k, "norm")) *rows = C, *cols = 0; /* also *_layernorm */
  else if (ends_with(nm, k, "q_proj")) *rows = qd;
  else if (ends_with(nm, k, "k_proj") || ends_with(nm, k, "v_proj")) *rows = kvd;
  else if (ends_with(nm, k, "o_proj")) *rows = C, *cols = bias ? 0 : qd;
  else if (!bias && (ends_with(nm, k, "gate_proj") || ends_with(nm, k, "up_proj"))) *rows = F;
  else if (!bias && ends_with(nm, k, "down_proj")) *rows = C, *cols = F;
  else return 0;
  return !(bias && ends_with(nm, k, "norm"));
}

/* Every tensor nameable, dequantizable and of a sane shape, before anything is written. */
static qat_status check_tensors(conv *c) {
  const qat_gguf_file *f = &c->g;
  int have_emb = 0;
  int64_t required = 0; /* the 9 weights of every layer and output_norm (names are unique) */
  for (int64_t i = 0; i < f->n_tensors; i++) {
    const qat_gguf_tensor *t = &f->tensors[i];
    char nm[256];
    int64_t layer;
    if (!strcmp(t->name, "rope_freqs.weight")) {
      if (t->ndim != 1 || t->type != QAT_GGML_F32)
        return QAT_FAIL(QAT_EFORMAT, "%s: rope_freqs.weight must be 1-D F32", f->path);
      continue;
    }
    if (!hf_name(t->name, c->h.n_layers, nm, sizeof nm, &layer))
      return QAT_FAIL(QAT_EUNSUPPORTED, "%s: tensor %.100s has no Hugging Face name in a %s model "
                      "of %" PRId64 " layers", f->path, t->name, c->h.arch, c->h.n_layers);
    if (!qat_gguf_can_dequant(t->type))
      return QAT_FAIL(QAT_EUNSUPPORTED, "%s: tensor %s: type %s is not supported (F32, F16, BF16, "
                      "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)", f->path,
                      t->name, qat_ggml_type_name(t->type));
    if (t->ndim > 2)
      return QAT_FAIL(QAT_EFORMAT, "%s: tensor %s has %d dims (1 or 2 expected)", f->path,
                      t->name, t->ndim);
    int64_t rows, cols;
    const char *dot = strrchr(nm, '.');
    if ((layer >= 0 && !strcmp(dot, ".weight")) || !strcmp(t->name, "output_norm.weight"))
      required++;
    if (!expected_shape(&c->h, nm, &rows, &cols))
      return QAT_FAIL(QAT_EUNSUPPORTED, "%s: tensor %s (%s) is not part of a %s model", f->path,
                      t->name, nm, c->h.arch);
    if (strcmp(t->name, "token_embd.weight") && /* checked below, with its own message */
        ((cols == 0 && (t->ndim != 1 || t->ne[0] != rows)) ||
        (cols != 0 && (t->ndim != 2 || t->ne[0] != cols || t->ne[1] != rows)))) {
      char have[64], want[64];
      if (t->ndim == 2) snprintf(have, sizeof have, "%" PRId64 ", %" PRId64, t->ne[0], t->ne[1]);
      else snprintf(have, sizeof have, "%" PRId64, t->ne[0]);
      if (cols) snprintf(want, sizeof want, "%" PRId64 ", %" PRId64, cols, rows);
      else snprintf(want, sizeof want, "%" PRId64, rows);
      return QAT_FAIL(QAT_EFORMAT, "%s: tensor %s has ne [%s] but the hyper-parameters imply [%s]",
                      f->path, t->name, have, want);
    }
    int64_t heads = permute_heads(c, t->name);
    if (heads && (t->ndim != 2 || t->ne[1] % (2 * heads)))
      return QAT_FAIL(QAT_EFORMAT, "%s: tensor %s: %" PRId64 " rows do not split into %" PRId64
                      " heads of an even size", f->path, t->name, t->ne[1], heads);
    if (!strcmp(t->name, "token_embd.weight")) {
      have_emb = 1;
      if (t->ndim != 2 || t->ne[0] != c->h.dim || t->ne[1] != c->h.vocab)
        return QAT_FAIL(QAT_EFORMAT, "%s: token_embd.weight is [%" PRId64 ", %" PRId64 "], not "
                        "[vocab %" PRId64 ", dim %" PRId64 "]", f->path, t->ne[1], t->ne[0],
                        c->h.vocab, c->h.dim);
    }
  }
  if (!have_emb) return QAT_FAIL(QAT_EFORMAT, "%s: no token_embd.weight", f->path);
  if (required != 9 * c->h.n_layers + 1)
    return QAT_FAIL(QAT_EFORMAT, "%s: %" PRId64 " of the %" PRId64 " norm and projection weights "
                    "of %" PRId64 " layers (blk.N.attn_norm .. ffn_down, output_norm) are present",
                    f->path, required, 9 * c->h.n_layers + 1, c->h.n_layers);
  return QAT_OK;
}

static qat_status keep(conv *c, void *p) {
  void **nb = realloc(c->bufs, (size_t)(c->nbufs + 1) * sizeof *nb);
  if (!nb) {
    free(p);
    return QAT_FAIL(QAT_ENOMEM, "out of memory");
  }
  c->bufs = nb;
  c->bufs[c->nbufs++] = p;
  return QAT_OK;
}

/* One tensor as float32 (or bf16) in its Hugging Face layout, added to the writer. */
static qat_status add_tensor(conv *c, const qat_gguf_tensor *t, int bf16) {
  const qat_gguf_file *f = &c->g;
  char nm[256];
  int64_t layer;
  hf_name(t->name, c->h.n_layers, nm, sizeof nm, &layer); /* checked */
  int64_t shape[2] = {t->ndim == 2 ? t->ne[1] : t->ne[0], t->ne[0]}; /* [rows, cols] */
  int64_t heads = permute_heads(c, t->name), n = t->numel;
  if (t->type == QAT_GGML_F32 && !heads && !bf16) /* as stored: straight from the mapping */
    return qat_st_writer_add(&c->w, nm, QAT_F32, t->ndim, shape, t->data);
  float *x = malloc((size_t)(n ? n : 1) * sizeof *x);
  if (!x) return QAT_FAIL(QAT_ENOMEM, "%s: tensor %s: out of memory (%" PRId64 " floats)", f->path,
                          t->name, n);
  qat_status st = qat_gguf_tensor_f32(f, t, x);
  if (st != QAT_OK) {
    free(x);
    return st;
  }
  if (heads) { /* llama.cpp's interleaved RoPE rows back to rotate-half, per head */
    float *y = malloc((size_t)n * sizeof *y);
    if (!y) {
      free(x);
      return QAT_FAIL(QAT_ENOMEM, "%s: tensor %s: out of memory", f->path, t->name);
    }
    qat_llama2c_permute_rope(x, y, (int)heads, (int)(t->ne[1] / heads), t->ne[0]);
    free(x);
    x = y;
  }
  QAT_TRY(keep(c, x));
  if (!bf16) return qat_st_writer_add(&c->w, nm, QAT_F32, t->ndim, shape, x);
  uint16_t *b = (uint16_t *)x; /* in place: b[i] lies below x[i] for i > 0 */
  for (int64_t i = 0; i < n; i++)
    b[i] = qat_f32_to_bf16(x[i]);
  return qat_st_writer_add(&c->w, nm, QAT_BF16, t->ndim, shape, b);
}

/* Output bytes of one tensor (numel x 4 or 2). */
static uint64_t out_bytes(const qat_gguf_tensor *t, int bf16) {
  return (uint64_t)t->numel * (bf16 ? 2u : 4u);
}

/* Releases one shard's tensors (the writer only references them). */
static void shard_reset(conv *c) {
  qat_st_writer_free(&c->w);
  qat_st_writer_init(&c->w);
  for (int i = 0; i < c->nbufs; i++)
    free(c->bufs[i]);
  c->nbufs = 0;
}

/* model.safetensors.index.json: every tensor's shard. */
static qat_status write_index(const conv *c, const int *shard, int nshards, uint64_t total,
                              const qat_gguf_tensor *rf) {
  cJSON *o = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(o, "metadata");
  char b[64];
  snprintf(b, sizeof b, "%" PRIu64, total);
  cJSON_AddItemToObject(meta, "total_size", cJSON_CreateRaw(b));
  cJSON *wm = cJSON_AddObjectToObject(o, "weight_map");
  const qat_gguf_file *f = &c->g;
  for (int64_t i = 0; i < f->n_tensors; i++) {
    if (&f->tensors[i] == rf) continue;
    char nm[256], file[64];
    int64_t layer;
    hf_name(f->tensors[i].name, c->h.n_layers, nm, sizeof nm, &layer);
    snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", shard[i] + 1, nshards);
    cJSON_AddStringToObject(wm, nm, file);
  }
  char *js = cJSON_Print(o);
  cJSON_Delete(o);
  if (!js) return QAT_FAIL(QAT_ENOMEM, "model.safetensors.index.json: out of memory");
  char path[4096];
  qat_status st = qat_path_join(path, sizeof path, c->tmp, "model.safetensors.index.json");
  if (st == QAT_OK) st = qat_write_file_atomic(path, js, strlen(js));
  cJSON_free(js);
  return st;
}

static qat_status convert(conv *c, const char *path, const char *out, const char *dtype,
                          uint64_t shard_bytes) {
  int bf16 = !strcmp(dtype, "bf16");
  if (!bf16 && strcmp(dtype, "f32"))
    return QAT_FAIL(QAT_EUSAGE, "--dtype %s: expected f32 or bf16", dtype);
  QAT_TRY(qat_gguf_open(path, &c->g));
  const qat_gguf_file *f = &c->g;
  int64_t nsplit = 1;
  int found = 0;
  QAT_TRY(qat_gguf_get_int(f, "split.count", &nsplit, &found));
  if (found && nsplit > 1)
    return QAT_FAIL(QAT_EUNSUPPORTED, "%s: split.count %" PRId64 ": a split GGUF file is not "
                    "supported (merge it first: llama-gguf-split --merge)", path, nsplit);
  QAT_TRY(qat_gguf_read_hparams(f, &c->h));
  QAT_TRY(check_tensors(c));
  const qat_gguf_tensor *rf = qat_gguf_find_tensor(f, "rope_freqs.weight");
  if (rf) {
    float *x = malloc((size_t)rf->numel * sizeof *x);
    if (!x) return QAT_FAIL(QAT_ENOMEM, "out of memory");
    qat_status st = qat_gguf_tensor_f32(f, rf, x);
    if (st == QAT_OK) st = qat_gguf_rope_llama3(f, x, rf->numel, &c->h);
    free(x);
    QAT_TRY(st);
  }
  QAT_TRY(qat_gguf_write_tokenizer(f, &c->h, NULL)); /* check only */

  /* shards of at most shard_bytes (a larger tensor alone), planned up front so the names
   * model-0000i-of-0000N are known; one shard is plain model.safetensors */
  c->shard = malloc((size_t)(f->n_tensors ? f->n_tensors : 1) * sizeof *c->shard);
  if (!c->shard) return QAT_FAIL(QAT_ENOMEM, "out of memory");
  int nshards = 0;
  uint64_t cur = 0, total = 0;
  for (int64_t i = 0; i < f->n_tensors; i++) {
    if (&f->tensors[i] == rf) continue;
    uint64_t nb = out_bytes(&f->tensors[i], bf16);
    if (nshards == 0 || (cur > 0 && cur + nb > shard_bytes)) {
      nshards++;
      cur = 0;
    }
    c->shard[i] = nshards - 1;
    cur += nb;
    total += nb;
  }
  if (nshards == 0) nshards = 1;

  QAT_TRY(qat_dir_begin(out, c->tmp, sizeof c->tmp));
  c->have_tmp = 1;
  char p[4096];
  for (int s = 0; s < nshards; s++) {
    for (int64_t i = 0; i < f->n_tensors; i++)
      if (&f->tensors[i] != rf && c->shard[i] == s) QAT_TRY(add_tensor(c, &f->tensors[i], bf16));
    QAT_TRY(qat_st_writer_meta(&c->w, "format", "pt"));
    char file[64];
    if (nshards == 1)
      snprintf(file, sizeof file, "model.safetensors");
    else
      snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, nshards);
    QAT_TRY(qat_path_join(p, sizeof p, c->tmp, file));
    QAT_TRY(qat_st_write(&c->w, p));
    shard_reset(c);
  }
  if (nshards > 1) QAT_TRY(write_index(c, c->shard, nshards, total, rf));
  QAT_TRY(qat_gguf_write_config(&c->h, bf16 ? "bfloat16" : "float32", c->tmp));
  QAT_TRY(qat_gguf_write_tokenizer(f, &c->h, c->tmp));
  QAT_TRY(qat_dir_commit(c->tmp, out));
  c->have_tmp = 0;
  qat_log("convert: %s -> %s (%s, dim %" PRId64 ", ffn %" PRId64 ", %" PRId64 " layers, %" PRId64
          "/%" PRId64 " heads, vocab %" PRId64 "%s%s%s, %s, %d shard%s)", path, out, c->h.arch,
          c->h.dim, c->h.ffn, c->h.n_layers, c->h.heads, c->h.kv_heads, c->h.vocab,
          c->h.tied ? ", tied" : "", c->h.rope_type[0] ? ", rope " : "", c->h.rope_type, dtype,
          nshards, nshards == 1 ? "" : "s");
  return QAT_OK;
}

qat_status qat_gguf_convert(const char *gguf_path, const char *out_dir, const char *dtype,
                            uint64_t shard_bytes) {
  conv c;
  memset(&c, 0, sizeof c);
  qat_st_writer_init(&c.w);
  qat_status st = convert(&c, gguf_path, out_dir, dtype ? dtype : "f32",
                          shard_bytes ? shard_bytes : QAT_GGUF_SHARD_BYTES);
  conv_free(&c);
  return st;
}
