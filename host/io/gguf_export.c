/* qat_gguf_export: model tensors from a source -> one GGUF file (gguf_export.h).
 *
 * Dimension letters: C dim, F hidden, V vocab, Hq / Hkv heads, D head dim, K in features. */
#include "io/gguf_export.h"

#include "core/log.h"
#include "core/tensor.h"
#include "quant/packed_gguf.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ggml's llama_ftype values for general.file_type */
enum { FTYPE_F32 = 0, FTYPE_F16 = 1, FTYPE_Q4_0 = 2, FTYPE_Q4_1 = 3, FTYPE_Q8_0 = 7 };

typedef struct ex {
  const qat_llama_config *cfg;
  qat_gguf_src_fn src;
  void *ctx;
  const qat_gguf_export_opts *o;
  qat_gguf_writer w;
  void **bufs; /* tensor data kept until the file is written */
  int nbufs, cap;
  int llama_arch;   /* 1: llama.cpp's "llama" (q / k rows permuted), 0: qwen2 */
  int said_small;   /* the 2/3-bit note printed */
  qat_gguf_export_stats *st;
} ex;

static qat_status keep(ex *e, void *p) {
  if (e->nbufs == e->cap) {
    int cap = e->cap ? 2 * e->cap : 64;
    void **nb = realloc(e->bufs, (size_t)cap * sizeof *nb);
    if (!nb) {
      free(p);
      return QAT_FAIL(QAT_ENOMEM, "gguf export: out of memory");
    }
    e->bufs = nb;
    e->cap = cap;
  }
  e->bufs[e->nbufs++] = p;
  return QAT_OK;
}

/* perm[r] = the Hugging Face row of GGUF row r for a q / k projection of `heads` heads of D
 * rows: llama.cpp pairs rotate as interleaved rows (2j, 2j + 1) = HF's (j, j + D/2). NULL
 * perm (no permutation) when heads is 0. */
static void rope_rows(int64_t *perm, int64_t rows, int64_t heads) {
  int64_t D = rows / heads, half = D / 2;
  for (int64_t r = 0; r < rows; r++) {
    int64_t h = r / D, i = r % D;
    perm[r] = h * D + (i % 2 ? i / 2 + half : i / 2);
  }
}

/* One tensor: fetch from the source, convert, register. heads > 0: rows permuted. */
static qat_status put_tensor(ex *e, const char *hf, const char *gg, int64_t rows, int64_t cols,
                             int ndim, int64_t heads, int linear) {
  qat_gguf_src s;
  memset(&s, 0, sizeof s);
  QAT_TRY(e->src(e->ctx, hf, rows, cols, &s));
  int64_t *perm = NULL;
  qat_status st = QAT_OK;
  if (heads) {
    if (rows % (2 * heads)) {
      st = QAT_FAIL(QAT_EINVAL, "gguf export: %s: %" PRId64 " rows do not split into %" PRId64
                    " heads of an even size", hf, rows, heads);
      goto done;
    }
    perm = malloc((size_t)rows * sizeof *perm);
    if (!perm) {
      st = QAT_FAIL(QAT_ENOMEM, "gguf export: out of memory");
      goto done;
    }
    rope_rows(perm, rows, heads);
  }
  int64_t ne[2] = {ndim == 2 ? cols : rows, rows};
  if (s.is_packed) {
    qat_packed *p = &s.packed;
    if (p->N != rows || p->K != cols) {
      st = QAT_FAIL(QAT_EINVAL, "gguf export: %s: packed [%" PRId64 ", %" PRId64 "], the model "
                    "wants [%" PRId64 ", %" PRId64 "]", hf, p->N, p->K, rows, cols);
      goto done;
    }
    uint32_t type;
    QAT_CHECK(st, qat_gguf_qtype(p->bits, p->sym, p->group, p->K, hf, &type), done);
    uint64_t nb = qat_gguf_tensor_bytes(type, 2, ne);
    void *blocks = malloc(nb ? nb : 1);
    if (!blocks) {
      st = QAT_FAIL(QAT_ENOMEM, "gguf export: %s: out of memory", hf);
      goto done;
    }
    double err = 0;
    st = qat_packed_to_gguf(p, perm, type, blocks, &err, hf);
    if (st == QAT_OK) st = keep(e, blocks);
    else free(blocks);
    if (st == QAT_OK) st = qat_gguf_w_tensor(&e->w, gg, type, 2, ne, blocks, nb);
    if (st != QAT_OK) goto done;
    if (!e->st->qtype) e->st->qtype = type; /* general.file_type names the first */
    e->st->n_quant++;
    e->st->bytes += nb;
    if (err > e->st->max_err) e->st->max_err = err;
    if (p->bits < 4 && !e->said_small) {
      printf("note: W%d codes are stored as Q4_0 (4.5 bits per weight): exact, but no smaller "
             "than 4-bit; llama.cpp has no block type of qat's %d-bit grid\n", p->bits, p->bits);
      e->said_small = 1;
    }
    if (!e->o->quiet)
      printf("  %-28s [%6" PRId64 ", %6" PRId64 "] %-4s W%d %s g%d  max weight change %.3g "
             "(F16 d%s)\n", gg, rows, cols, qat_ggml_type_name(type), p->bits,
             p->sym ? "sym" : "asym", p->group, err, type == QAT_GGML_Q4_1 ? ", m" : "");
    goto done;
  }
  if (!s.f32) {
    st = QAT_FAIL(QAT_EINTERNAL, "gguf export: %s: the source gave no data", hf);
    goto done;
  }
  /* floats: permute rows, then F32 or (2-D, on request) F16 */
  int64_t n = rows * cols;
  float *x = s.f32;
  if (perm) {
    float *y = malloc((size_t)n * sizeof *y);
    if (!y) {
      st = QAT_FAIL(QAT_ENOMEM, "gguf export: %s: out of memory", hf);
      goto done;
    }
    for (int64_t r = 0; r < rows; r++)
      memcpy(y + r * cols, x + perm[r] * cols, (size_t)cols * sizeof *y);
    free(x);
    x = s.f32 = y;
  }
  int half = e->o->f16 && ndim == 2;
  double err = 0;
  if (half) {
    uint16_t *h = (uint16_t *)x; /* in place: h[i] lies below x[i] for i > 0 */
    for (int64_t i = 0; i < n; i++) {
      float v = x[i];
      h[i] = qat_f32_to_f16(v);
      double d = fabs((double)qat_f16_to_f32(h[i]) - (double)v);
      if (!isfinite(qat_f16_to_f32(h[i]))) {
        st = QAT_FAIL(QAT_EINVAL, "gguf export: %s: element %" PRId64 " = %g overflows F16 (use "
                      "--gguf-dtype f32)", hf, i, v);
        goto done;
      }
      if (d > err) err = d;
    }
  }
  uint32_t type = half ? QAT_GGML_F16 : QAT_GGML_F32;
  uint64_t nb = (uint64_t)n * (half ? 2u : 4u);
  s.f32 = NULL;
  QAT_CHECK(st, keep(e, x), done);
  QAT_CHECK(st, qat_gguf_w_tensor(&e->w, gg, type, ndim, ne, x, nb), done);
  e->st->bytes += nb;
  if (linear) e->st->n_float_linear++;
  if (!e->o->quiet && (linear || ndim == 2))
    printf("  %-28s [%6" PRId64 ", %6" PRId64 "] %-4s max weight change %.3g%s%s\n", gg, rows,
           cols, qat_ggml_type_name(type), err, s.note[0] ? "  " : "", s.note);
done:
  if (s.is_packed) qat_packed_free(&s.packed);
  free(s.f32);
  free(perm);
  return st;
}

/* Llama-3.1 rope scaling: the per-frequency divisors llama.cpp keeps in rope_freqs.weight
 * (convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors). */
static qat_status rope_freqs(ex *e) {
  const qat_llama_config *c = e->cfg;
  int64_t n = c->head_dim / 2;
  float *f = malloc((size_t)n * sizeof *f);
  if (!f) return QAT_FAIL(QAT_ENOMEM, "gguf export: out of memory");
  double orig = c->rope_original_max_pos, lo = c->rope_low_freq_factor,
         hi = c->rope_high_freq_factor, factor = c->rope_factor;
  double lw = orig / lo, hw = orig / hi;
  for (int64_t i = 0; i < n; i++) {
    double inv = 1.0 / pow(c->rope_theta, 2.0 * (double)i / (double)c->head_dim);
    double wl = 2 * M_PI / inv;
    if (wl < hw) f[i] = 1;
    else if (wl > lw) f[i] = (float)factor;
    else {
      double s = (orig / wl - lo) / (hi - lo);
      f[i] = (float)(1 / ((1 - s) / factor + s));
    }
  }
  QAT_TRY(keep(e, f));
  int64_t ne[1] = {n};
  e->st->bytes += (uint64_t)n * 4;
  return qat_gguf_w_tensor(&e->w, "rope_freqs.weight", QAT_GGML_F32, 1, ne, f, (uint64_t)n * 4);
}

static qat_status metadata(ex *e) {
  const qat_llama_config *c = e->cfg;
  const char *a = e->llama_arch ? "llama" : "qwen2";
  char k[128];
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", a, s), k)
  qat_gguf_writer *w = &e->w;
  QAT_TRY(qat_gguf_w_str(w, "general.architecture", a));
  QAT_TRY(qat_gguf_w_str(w, "general.type", "model"));
  QAT_TRY(qat_gguf_w_str(w, "general.name", e->o->name ? e->o->name : "qat export"));
  QAT_TRY(qat_gguf_w_u32(w, KEY("context_length"), (uint32_t)c->max_seq));
  QAT_TRY(qat_gguf_w_u32(w, KEY("embedding_length"), (uint32_t)c->dim));
  QAT_TRY(qat_gguf_w_u32(w, KEY("block_count"), (uint32_t)c->n_layers));
  QAT_TRY(qat_gguf_w_u32(w, KEY("feed_forward_length"), (uint32_t)c->hidden));
  QAT_TRY(qat_gguf_w_u32(w, KEY("attention.head_count"), (uint32_t)c->n_heads));
  QAT_TRY(qat_gguf_w_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->n_kv_heads));
  QAT_TRY(qat_gguf_w_f32(w, KEY("rope.freq_base"), c->rope_theta));
  QAT_TRY(qat_gguf_w_f32(w, KEY("attention.layer_norm_rms_epsilon"), c->norm_eps));
  QAT_TRY(qat_gguf_w_u32(w, KEY("vocab_size"), (uint32_t)c->vocab));
  QAT_TRY(qat_gguf_w_u32(w, KEY("rope.dimension_count"), (uint32_t)c->head_dim));
  if (c->head_dim * c->n_heads != c->dim) { /* llama.cpp writes these only when they differ */
    QAT_TRY(qat_gguf_w_u32(w, KEY("attention.key_length"), (uint32_t)c->head_dim));
    QAT_TRY(qat_gguf_w_u32(w, KEY("attention.value_length"), (uint32_t)c->head_dim));
  }
  if (c->rope_type[0]) {
    QAT_TRY(qat_gguf_w_f32(w, KEY("rope.scaling.factor"), c->rope_factor));
    QAT_TRY(qat_gguf_w_u32(w, KEY("rope.scaling.original_context_length"),
                           (uint32_t)c->rope_original_max_pos));
  }
#undef KEY
  return QAT_OK;
}

static qat_status run(ex *e, const char *out_path) {
  const qat_llama_config *c = e->cfg;
  if (strcmp(c->arch, "llama") && strcmp(c->arch, "mistral") && strcmp(c->arch, "qwen2"))
    return QAT_FAIL(QAT_EUNSUPPORTED, "gguf export: model_type %s (llama, mistral, qwen2)", c->arch);
  if (c->rope_type[0] && strcmp(c->rope_type, "llama3"))
    return QAT_FAIL(QAT_EUNSUPPORTED, "gguf export: rope_scaling %s (llama3 only)", c->rope_type);
  e->llama_arch = strcmp(c->arch, "qwen2") != 0;
  QAT_TRY(qat_gguf_writer_init(&e->w));
  QAT_TRY(metadata(e));
  const char *kind = "none";
  QAT_TRY(qat_gguf_export_tokenizer(&e->w, e->o->tok_dir, c, &kind));
  if (!strcmp(kind, "none"))
    qat_warn("%s: no tokenizer.model, tokenizer.json or tokenizer.bin: the GGUF gets no "
             "tokenizer (llama.cpp will not load it)", e->o->tok_dir);
  const int64_t C = c->dim, F = c->hidden, V = c->vocab, D = c->head_dim;
  const int64_t Q = (int64_t)c->n_heads * D, KV = (int64_t)c->n_kv_heads * D;
  const int64_t hq = e->llama_arch ? c->n_heads : 0, hk = e->llama_arch ? c->n_kv_heads : 0;
  QAT_TRY(put_tensor(e, "model.embed_tokens.weight", "token_embd.weight", V, C, 2, 0, 0));
  if (c->rope_type[0]) QAT_TRY(rope_freqs(e));
  char hf[160], gg[96];
  for (int l = 0; l < c->n_layers; l++) {
    const struct {
      const char *hf, *gg;
      int64_t rows, cols, heads;
      int ndim, linear, present;
    } t[] = {
        {"input_layernorm.weight", "attn_norm.weight", C, 1, 0, 1, 0, 1},
        {"self_attn.q_proj.weight", "attn_q.weight", Q, C, hq, 2, 1, 1},
        {"self_attn.q_proj.bias", "attn_q.bias", Q, 1, hq, 1, 0, c->qkv_bias},
        {"self_attn.k_proj.weight", "attn_k.weight", KV, C, hk, 2, 1, 1},
        {"self_attn.k_proj.bias", "attn_k.bias", KV, 1, hk, 1, 0, c->qkv_bias},
        {"self_attn.v_proj.weight", "attn_v.weight", KV, C, 0, 2, 1, 1},
        {"self_attn.v_proj.bias", "attn_v.bias", KV, 1, 0, 1, 0, c->qkv_bias},
        {"self_attn.o_proj.weight", "attn_output.weight", C, Q, 0, 2, 1, 1},
        {"self_attn.o_proj.bias", "attn_output.bias", C, 1, 0, 1, 0, c->o_bias},
        {"post_attention_layernorm.weight", "ffn_norm.weight", C, 1, 0, 1, 0, 1},
        {"mlp.gate_proj.weight", "ffn_gate.weight", F, C, 0, 2, 1, 1},
        {"mlp.up_proj.weight", "ffn_up.weight", F, C, 0, 2, 1, 1},
        {"mlp.down_proj.weight", "ffn_down.weight", C, F, 0, 2, 1, 1},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
      if (!t[i].present) continue;
      snprintf(hf, sizeof hf, "model.layers.%d.%s", l, t[i].hf);
      snprintf(gg, sizeof gg, "blk.%d.%s", l, t[i].gg);
      QAT_TRY(put_tensor(e, hf, gg, t[i].rows, t[i].cols, t[i].ndim, t[i].heads, t[i].linear));
    }
  }
  QAT_TRY(put_tensor(e, "model.norm.weight", "output_norm.weight", C, 1, 1, 0, 0));
  if (!c->tie_embeddings) QAT_TRY(put_tensor(e, "lm_head.weight", "output.weight", V, C, 2, 0, 0));
  uint32_t ft = e->st->qtype == QAT_GGML_Q4_0   ? FTYPE_Q4_0
                : e->st->qtype == QAT_GGML_Q4_1 ? FTYPE_Q4_1
                : e->st->qtype == QAT_GGML_Q8_0 ? FTYPE_Q8_0
                : e->o->f16                     ? FTYPE_F16
                                                : FTYPE_F32;
  QAT_TRY(qat_gguf_w_u32(&e->w, "general.file_type", ft));
  QAT_TRY(qat_gguf_w_u32(&e->w, "general.quantization_version", 2));
  return qat_gguf_write(&e->w, out_path);
}

qat_status qat_gguf_export(const qat_llama_config *cfg, qat_gguf_src_fn src, void *ctx,
                           const qat_gguf_export_opts *o, const char *out_path,
                           qat_gguf_export_stats *stats) {
  ex e;
  memset(&e, 0, sizeof e);
  memset(stats, 0, sizeof *stats);
  e.cfg = cfg;
  e.src = src;
  e.ctx = ctx;
  e.o = o;
  e.st = stats;
  qat_status st = run(&e, out_path);
  qat_gguf_writer_free(&e.w);
  for (int i = 0; i < e.nbufs; i++)
    free(e.bufs[i]);
  free(e.bufs);
  return st;
}
