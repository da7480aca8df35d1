/* llama2.c checkpoint -> Hugging Face Llama folder (see llama2c.h for the file layout).
 * The checkpoint is memory-mapped; only wq and wk are copied (their rows permuted from llama2.c's
 * interleaved-pair RoPE layout to HF's rotate-half layout), every other tensor is written
 * straight from the mapping. The output folder appears only when complete (qat_dir_begin/commit).
 *
 * Dimension letters: C dim, F hidden, L layers, H heads, Hkv kv heads, D = C / H, V vocab,
 * S seq_len. */
#include "model/llama2c.h"

#include "core/log.h"
#include "core/tensor.h"
#include "io/fsutil.h"
#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* a * b into *out; 0 on overflow. */
static int mul_u64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_mul_overflow(a, b, out); }

/* Float count of each tensor in file order; returns 0 on overflow. */
enum { T_EMB, T_RMS_ATT, T_WQ, T_WK, T_WV, T_WO, T_RMS_FFN, T_W1, T_W2, T_W3, T_RMS_FINAL,
       T_FREQ_RE, T_FREQ_IM, T_WCLS, T_COUNT };

static int tensor_sizes(const qat_llama2c_header *h, uint64_t n[T_COUNT]) {
  uint64_t C = (uint64_t)h->dim, F = (uint64_t)h->hidden, L = (uint64_t)h->n_layers;
  uint64_t V = (uint64_t)h->vocab, S = (uint64_t)h->seq_len;
  uint64_t D = C / (uint64_t)h->n_heads, KV = D * (uint64_t)h->n_kv_heads, LC, LCC, LKC, LFC;
  int ok = mul_u64(V, C, &n[T_EMB]) && mul_u64(L, C, &LC) && mul_u64(LC, C, &LCC) &&
           mul_u64(LC, KV, &LKC) && mul_u64(LC, F, &LFC) && mul_u64(S, D / 2, &n[T_FREQ_RE]);
  if (!ok) return 0;
  n[T_RMS_ATT] = n[T_RMS_FFN] = LC;
  n[T_WQ] = n[T_WO] = LCC;
  n[T_WK] = n[T_WV] = LKC;
  n[T_W1] = n[T_W2] = n[T_W3] = LFC;
  n[T_RMS_FINAL] = C;
  n[T_FREQ_IM] = n[T_FREQ_RE];
  n[T_WCLS] = h->tied ? 0 : n[T_EMB];
  return 1;
}

qat_status qat_llama2c_parse_header(const char *path, const void *hdr28, uint64_t file_size,
                                    qat_llama2c_header *h) {
  int32_t v[7];
  if (file_size < sizeof v)
    return QAT_FAIL(QAT_EFORMAT, "%s: %llu bytes, shorter than the 28-byte llama2.c header", path,
                    (unsigned long long)file_size);
  memcpy(v, hdr28, sizeof v); /* little-endian host assumed, as llama2.c does */
  h->dim = v[0];
  h->hidden = v[1];
  h->n_layers = v[2];
  h->n_heads = v[3];
  h->n_kv_heads = v[4];
  h->tied = v[5] > 0;
  h->vocab = v[5] == INT32_MIN ? 0 : (v[5] < 0 ? -v[5] : v[5]);
  h->seq_len = v[6];
  if (h->dim <= 0 || h->hidden <= 0 || h->n_layers <= 0 || h->n_heads <= 0 ||
      h->n_kv_heads <= 0 || h->vocab <= 0 || h->seq_len <= 0)
    return QAT_FAIL(QAT_EFORMAT,
                    "%s: not a llama2.c checkpoint: header dim %d hidden_dim %d n_layers %d "
                    "n_heads %d n_kv_heads %d vocab_size %d seq_len %d (each must be > 0; a "
                    "negative vocab_size marks an untied classifier)",
                    path, v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
  if (h->dim % h->n_heads != 0)
    return QAT_FAIL(QAT_EFORMAT, "%s: n_heads %d does not divide dim %d", path, h->n_heads, h->dim);
  if (h->n_heads % h->n_kv_heads != 0)
    return QAT_FAIL(QAT_EFORMAT, "%s: n_kv_heads %d does not divide n_heads %d", path,
                    h->n_kv_heads, h->n_heads);
  if ((h->dim / h->n_heads) % 2 != 0)
    return QAT_FAIL(QAT_EFORMAT, "%s: head dim %d is odd (RoPE rotates pairs)", path,
                    h->dim / h->n_heads);
  uint64_t n[T_COUNT], total = 0;
  if (!tensor_sizes(h, n)) return QAT_FAIL(QAT_EFORMAT, "%s: header dims overflow", path);
  for (int i = 0; i < T_COUNT; i++)
    if (__builtin_add_overflow(total, n[i], &total))
      return QAT_FAIL(QAT_EFORMAT, "%s: header dims overflow", path);
  uint64_t want;
  if (!mul_u64(total, 4, &want) || __builtin_add_overflow(want, 28, &want))
    return QAT_FAIL(QAT_EFORMAT, "%s: header dims overflow", path);
  if (file_size != want)
    return QAT_FAIL(QAT_EFORMAT,
                    "%s: %llu bytes, but its header (dim %d, hidden %d, layers %d, heads %d/%d, "
                    "vocab %d %s, seq_len %d) implies %llu",
                    path, (unsigned long long)file_size, h->dim, h->hidden, h->n_layers,
                    h->n_heads, h->n_kv_heads, h->vocab, h->tied ? "tied" : "untied", h->seq_len,
                    (unsigned long long)want);
  return QAT_OK;
}

void qat_llama2c_permute_rope(const float *src, float *dst, int n_heads, int head_dim,
                              int64_t cols) {
  int half = head_dim / 2;
  for (int h = 0; h < n_heads; h++) {
    const float *s = src + (int64_t)h * head_dim * cols;
    float *d = dst + (int64_t)h * head_dim * cols;
    for (int j = 0; j < half; j++) {
      memcpy(d + (int64_t)j * cols, s + (int64_t)(2 * j) * cols, (size_t)cols * sizeof(float));
      memcpy(d + (int64_t)(j + half) * cols, s + (int64_t)(2 * j + 1) * cols,
             (size_t)cols * sizeof(float));
    }
  }
}

static qat_status write_config(const char *dir, const qat_llama2c_header *h) {
  char path[4096], buf[2048];
  QAT_TRY(qat_path_join(path, sizeof path, dir, "config.json"));
  int k = snprintf(buf, sizeof buf,
                   "{\n"
                   "  \"architectures\": [\"LlamaForCausalLM\"],\n"
                   "  \"model_type\": \"llama\",\n"
                   "  \"hidden_size\": %d,\n"
                   "  \"intermediate_size\": %d,\n"
                   "  \"num_hidden_layers\": %d,\n"
                   "  \"num_attention_heads\": %d,\n"
                   "  \"num_key_value_heads\": %d,\n"
                   "  \"vocab_size\": %d,\n"
                   "  \"max_position_embeddings\": %d,\n"
                   "  \"rms_norm_eps\": 1e-05,\n"
                   "  \"rope_theta\": 10000.0,\n"
                   "  \"hidden_act\": \"silu\",\n"
                   "  \"tie_word_embeddings\": %s,\n"
                   "  \"bos_token_id\": 1,\n"
                   "  \"eos_token_id\": 2,\n"
                   "  \"torch_dtype\": \"float32\"\n"
                   "}\n",
                   h->dim, h->hidden, h->n_layers, h->n_heads, h->n_kv_heads, h->vocab,
                   h->seq_len, h->tied ? "true" : "false");
  if (k < 0 || (size_t)k >= sizeof buf) return QAT_FAIL(QAT_EINTERNAL, "config.json too long");
  return qat_write_file_atomic(path, buf, (size_t)k);
}

/* Everything the conversion holds, released in one place. */
typedef struct conv {
  int fd;
  void *map;
  size_t map_size;
  float *wq, *wk;   /* permuted copies [L, C, C], [L, Hkv*D, C] */
  char (*names)[112];
  int nnames;
  qat_st_writer w;
  char tmp[4096];
  int have_tmp;
} conv;

static void conv_free(conv *c) {
  if (c->have_tmp) qat_dir_abort(c->tmp);
  qat_st_writer_free(&c->w);
  free(c->names);
  free(c->wq);
  free(c->wk);
  if (c->map && c->map != MAP_FAILED) munmap(c->map, c->map_size);
  if (c->fd >= 0) close(c->fd);
}

static qat_status add(conv *c, const char *name, int ndim, int64_t d0, int64_t d1,
                      const float *data) {
  char *nm = c->names[c->nnames++];
  snprintf(nm, sizeof c->names[0], "%s", name);
  int64_t shape[2] = {d0, d1};
  return qat_st_writer_add(&c->w, nm, QAT_F32, ndim, shape, data);
}

static qat_status convert(conv *c, const char *model_path, const char *tok_path,
                          const char *out_dir) {
  c->fd = open(model_path, O_RDONLY | O_CLOEXEC);
  if (c->fd < 0) return QAT_FAIL(QAT_EIO, "%s: %s", model_path, strerror(errno));
  struct stat sb;
  if (fstat(c->fd, &sb) != 0) return QAT_FAIL(QAT_EIO, "%s: %s", model_path, strerror(errno));
  if (!S_ISREG(sb.st_mode)) return QAT_FAIL(QAT_EIO, "%s: not a regular file", model_path);
  uint8_t hdr[28] = {0};
  uint64_t size = (uint64_t)sb.st_size;
  if (size >= sizeof hdr && pread(c->fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr)
    return QAT_FAIL(QAT_EIO, "%s: cannot read the header: %s", model_path, strerror(errno));
  qat_llama2c_header h;
  QAT_TRY(qat_llama2c_parse_header(model_path, hdr, size, &h));
  if (tok_path && !qat_path_exists(tok_path))
    return QAT_FAIL(QAT_EIO, "%s: tokenizer file not found", tok_path);

  c->map_size = (size_t)size;
  c->map = mmap(NULL, c->map_size, PROT_READ, MAP_PRIVATE, c->fd, 0);
  if (c->map == MAP_FAILED) return QAT_FAIL(QAT_EIO, "%s: mmap: %s", model_path, strerror(errno));

  const int64_t C = h.dim, F = h.hidden, L = h.n_layers, V = h.vocab, H = h.n_heads,
                Hkv = h.n_kv_heads, D = C / H, KV = Hkv * D;
  uint64_t n[T_COUNT];
  tensor_sizes(&h, n); /* validated above */
  const float *t[T_COUNT];
  const float *p = (const float *)((const uint8_t *)c->map + 28);
  for (int i = 0; i < T_COUNT; i++) {
    t[i] = p;
    p += n[i];
  }

  /* wq, wk: permuted copies (the only tensors not written from the mapping). */
  c->wq = malloc(n[T_WQ] * sizeof(float));
  c->wk = malloc(n[T_WK] * sizeof(float));
  if (!c->wq || !c->wk)
    return QAT_FAIL(QAT_ENOMEM, "%s: out of memory permuting wq/wk (%llu floats)", model_path,
                    (unsigned long long)(n[T_WQ] + n[T_WK]));
  for (int64_t l = 0; l < L; l++) {
    qat_llama2c_permute_rope(t[T_WQ] + l * C * C, c->wq + l * C * C, (int)H, (int)D, C);
    qat_llama2c_permute_rope(t[T_WK] + l * KV * C, c->wk + l * KV * C, (int)Hkv, (int)D, C);
  }

  c->names = calloc((size_t)(9 * L + 3), sizeof c->names[0]);
  if (!c->names) return QAT_FAIL(QAT_ENOMEM, "out of memory");
  QAT_TRY(add(c, "model.embed_tokens.weight", 2, V, C, t[T_EMB]));
  for (int64_t l = 0; l < L; l++) {
    char nm[112];
#define LAYER(suffix, ndim, d0, d1, ptr)                                                           \
  do {                                                                                             \
    snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)l, suffix);                         \
    QAT_TRY(add(c, nm, ndim, d0, d1, ptr));                                                        \
  } while (0)
    LAYER("input_layernorm.weight", 1, C, 0, t[T_RMS_ATT] + l * C);
    LAYER("self_attn.q_proj.weight", 2, C, C, c->wq + l * C * C);
    LAYER("self_attn.k_proj.weight", 2, KV, C, c->wk + l * KV * C);
    LAYER("self_attn.v_proj.weight", 2, KV, C, t[T_WV] + l * KV * C);
    LAYER("self_attn.o_proj.weight", 2, C, C, t[T_WO] + l * C * C);
    LAYER("post_attention_layernorm.weight", 1, C, 0, t[T_RMS_FFN] + l * C);
    LAYER("mlp.gate_proj.weight", 2, F, C, t[T_W1] + l * F * C);
    LAYER("mlp.down_proj.weight", 2, C, F, t[T_W2] + l * C * F);
    LAYER("mlp.up_proj.weight", 2, F, C, t[T_W3] + l * F * C);
#undef LAYER
  }
  QAT_TRY(add(c, "model.norm.weight", 1, C, 0, t[T_RMS_FINAL]));
  if (!h.tied) QAT_TRY(add(c, "lm_head.weight", 2, V, C, t[T_WCLS]));
  QAT_TRY(qat_st_writer_meta(&c->w, "format", "pt"));

  QAT_TRY(qat_dir_begin(out_dir, c->tmp, sizeof c->tmp));
  c->have_tmp = 1;
  char path[4096];
  QAT_TRY(write_config(c->tmp, &h));
  QAT_TRY(qat_path_join(path, sizeof path, c->tmp, "model.safetensors"));
  QAT_TRY(qat_st_write(&c->w, path));
  if (tok_path) {
    QAT_TRY(qat_path_join(path, sizeof path, c->tmp, "tokenizer.bin"));
    QAT_TRY(qat_copy_file(tok_path, path));
  }
  QAT_TRY(qat_dir_commit(c->tmp, out_dir));
  c->have_tmp = 0;
  qat_log("convert: %s -> %s (dim %d, hidden %d, %d layers, %d/%d heads, vocab %d%s, seq %d)",
          model_path, out_dir, h.dim, h.hidden, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab,
          h.tied ? " tied" : "", h.seq_len);
  return QAT_OK;
}

qat_status qat_llama2c_convert(const char *model_path, const char *tokenizer_path,
                               const char *out_dir) {
  conv c;
  memset(&c, 0, sizeof c);
  c.fd = -1;
  qat_st_writer_init(&c.w);
  qat_status st = convert(&c, model_path, tokenizer_path, out_dir);
  conv_free(&c);
  return st;
}
