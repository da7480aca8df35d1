/* Training job configuration (see config.h).
 * k_keys below is the single source of truth: each row is a dotted key, its type, where it lives
 * in qat_config and its default (as text, parsed like a command-line override). From it we build
 * the libcyaml schema at load time, apply overrides, print, compare and hash. Adding a key = one
 * struct member + one row + a line in configs/README.md (a test checks the README lists every key).
 *
 * libcyaml checks the structure (unknown keys, a list where a value belongs: with line numbers)
 * and loads each value as text into a flat array of pointers, one slot per key (NULL = absent, so
 * absent keys keep their defaults); the text is then converted strictly by the parser that the
 * overrides use (libcyaml 1.3's own number and bool parsing accepts "3.7" as 3 and "flase" as
 * true), and a bad value is reported with the line where its key is set. Every
 * section mapping of the schema aliases the same flat array (data_offset 0): the slots are unique
 * per key, so nothing is loaded or freed twice. */
#include "train/config.h"

#include "io/fsutil.h"

#include <assert.h>
#include <ctype.h>
#include <cyaml/cyaml.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { K_STR, K_INT, K_I64, K_FLOAT, K_BOOL, K_ENUM } key_kind;

typedef struct key_def {
  const char *key; /* "section.name" or "name" */
  key_kind kind;
  size_t off; /* into qat_config */
  const char *dflt;
  const cyaml_strval_t *names; /* K_ENUM */
  int nnames;
} key_def;

static const cyaml_strval_t k_method[] = {
    {"qat", QAT_METHOD_QAT}, {"block_ap", QAT_METHOD_BLOCK_AP},
    {"e2e_qp", QAT_METHOD_E2E_QP}, {"pipeline", QAT_METHOD_PIPELINE}, {"gptq", QAT_METHOD_GPTQ}};
static const cyaml_strval_t k_grad[] = {
    {"ste", QAT_CFG_GRAD_STE}, {"efficientqat", QAT_CFG_GRAD_EFFICIENTQAT}, {"lsq", QAT_CFG_GRAD_LSQ}};
static const cyaml_strval_t k_train_set[] = {{"all", QAT_TRAIN_ALL}, {"scales", QAT_TRAIN_SCALES}};
static const cyaml_strval_t k_init[] = {{"minmax", QAT_CFG_INIT_MINMAX}, {"mse", QAT_CFG_INIT_MSE}};
static const cyaml_strval_t k_sched[] = {
    {"cosine", QAT_SCHED_COSINE}, {"linear", QAT_SCHED_LINEAR}, {"constant", QAT_SCHED_CONSTANT}};
static const cyaml_strval_t k_resume[] = {
    {"auto", QAT_RESUME_AUTO}, {"never", QAT_RESUME_NEVER}, {"must", QAT_RESUME_MUST}};
static const cyaml_strval_t k_device[] = {{"cpu", QAT_DEV_CPU}, {"cuda", QAT_DEV_CUDA}};
static const cyaml_strval_t k_dist[] = {{"auto", QAT_CFG_DIST_AUTO},
                                        {"single", QAT_CFG_DIST_SINGLE},
                                        {"mpi", QAT_CFG_DIST_MPI},
                                        {"nccl", QAT_CFG_DIST_NCCL}};
static const cyaml_strval_t k_cache_dtype[] = {{"bf16", QAT_BF16}, {"f32", QAT_F32}};
static const cyaml_strval_t k_scale_dtype[] = {{"f32", QAT_F32}, {"f16", QAT_F16}};

#define OFF(m) offsetof(qat_config, m)
#define ENUM(t) t, (int)(sizeof t / sizeof t[0])
/* Keys of one section must be contiguous (print groups them by section in this order). */
static const key_def k_keys[] = {
    {"model", K_STR, OFF(model), NULL, NULL, 0},
    {"data.train", K_STR, OFF(data.train), NULL, NULL, 0},
    {"data.val", K_STR, OFF(data.val), NULL, NULL, 0},
    {"data.seq_len", K_INT, OFF(data.seq_len), "512", NULL, 0},
    {"method", K_ENUM, OFF(method), "qat", ENUM(k_method)},
    {"quant.bits", K_INT, OFF(quant.bits), "4", NULL, 0},
    {"quant.group", K_INT, OFF(quant.group), "128", NULL, 0},
    {"quant.sym", K_BOOL, OFF(quant.sym), "false", NULL, 0},
    {"quant.grad", K_ENUM, OFF(quant.grad), "efficientqat", ENUM(k_grad)},
    {"quant.train", K_ENUM, OFF(quant.train), "all", ENUM(k_train_set)},
    {"quant.init", K_ENUM, OFF(quant.init), "minmax", ENUM(k_init)},
    {"quant.scale_dtype", K_ENUM, OFF(quant.scale_dtype), "f32", ENUM(k_scale_dtype)},
    {"train.steps", K_I64, OFF(train.steps), "0", NULL, 0},
    {"train.batch", K_INT, OFF(train.batch), "8", NULL, 0},
    {"train.grad_accum", K_INT, OFF(train.grad_accum), "1", NULL, 0},
    {"train.global_batch", K_INT, OFF(train.global_batch), "0", NULL, 0},
    {"train.lr", K_FLOAT, OFF(train.lr), "1e-5", NULL, 0},
    {"train.lr_quant", K_FLOAT, OFF(train.lr_quant), "1e-4", NULL, 0},
    {"train.weight_decay", K_FLOAT, OFF(train.weight_decay), "0", NULL, 0},
    {"train.warmup", K_I64, OFF(train.warmup), "0", NULL, 0},
    {"train.schedule", K_ENUM, OFF(train.schedule), "cosine", ENUM(k_sched)},
    {"train.min_lr_ratio", K_FLOAT, OFF(train.min_lr_ratio), "0.05", NULL, 0},
    {"train.seed", K_I64, OFF(train.seed), "0", NULL, 0},
    {"train.clip", K_FLOAT, OFF(train.clip), "0", NULL, 0},
    {"train.eval_every", K_I64, OFF(train.eval_every), "0", NULL, 0},
    {"train.eval_windows", K_I64, OFF(train.eval_windows), "0", NULL, 0},
    {"train.max_bad_steps", K_INT, OFF(train.max_bad_steps), "5", NULL, 0},
    {"train.recompute", K_BOOL, OFF(train.recompute), "false", NULL, 0},
    {"distill.enabled", K_BOOL, OFF(distill.enabled), "false", NULL, 0},
    {"distill.temperature", K_FLOAT, OFF(distill.temperature), "1.0", NULL, 0},
    {"distill.alpha", K_FLOAT, OFF(distill.alpha), "0.5", NULL, 0},
    {"checkpoint.dir", K_STR, OFF(checkpoint.dir), NULL, NULL, 0},
    {"checkpoint.every", K_I64, OFF(checkpoint.every), "0", NULL, 0},
    {"checkpoint.keep", K_INT, OFF(checkpoint.keep), "3", NULL, 0},
    {"checkpoint.resume", K_ENUM, OFF(checkpoint.resume), "auto", ENUM(k_resume)},
    {"device", K_ENUM, OFF(device), "cpu", ENUM(k_device)},
    {"block_ap.samples", K_INT, OFF(block_ap.samples), "4096", NULL, 0},
    {"block_ap.epochs", K_INT, OFF(block_ap.epochs), "2", NULL, 0},
    {"block_ap.lr_w", K_FLOAT, OFF(block_ap.lr_w), "1e-5", NULL, 0},
    {"block_ap.lr_quant", K_FLOAT, OFF(block_ap.lr_quant), "1e-4", NULL, 0},
    {"block_ap.batch", K_INT, OFF(block_ap.batch), "2", NULL, 0},
    {"block_ap.grad_accum", K_INT, OFF(block_ap.grad_accum), "1", NULL, 0},
    {"block_ap.val_samples", K_INT, OFF(block_ap.val_samples), "64", NULL, 0},
    {"block_ap.cache_device_mb", K_I64, OFF(block_ap.cache_device_mb), "4096", NULL, 0},
    {"block_ap.cache_host_mb", K_I64, OFF(block_ap.cache_host_mb), "16384", NULL, 0},
    {"block_ap.cache_dir", K_STR, OFF(block_ap.cache_dir), NULL, NULL, 0},
    {"block_ap.cache_dtype", K_ENUM, OFF(block_ap.cache_dtype), "bf16", ENUM(k_cache_dtype)},
    {"block_ap.train_norms", K_BOOL, OFF(block_ap.train_norms), "false", NULL, 0},
    {"gptq.samples", K_INT, OFF(gptq.samples), "128", NULL, 0},
    {"gptq.batch", K_INT, OFF(gptq.batch), "4", NULL, 0},
    {"gptq.damp", K_FLOAT, OFF(gptq.damp), "0.01", NULL, 0},
    {"gptq.block", K_INT, OFF(gptq.block), "128", NULL, 0},
    {"gptq.act_order", K_BOOL, OFF(gptq.act_order), "false", NULL, 0},
    {"gptq.true_sequential", K_BOOL, OFF(gptq.true_sequential), "false", NULL, 0},
    {"gptq.skip_first", K_INT, OFF(gptq.skip_first), "0", NULL, 0},
    {"gptq.first_weight", K_FLOAT, OFF(gptq.first_weight), "1", NULL, 0},
    {"e2e_qp.steps", K_I64, OFF(e2e_qp.steps), "128", NULL, 0},
    {"e2e_qp.lr", K_FLOAT, OFF(e2e_qp.lr), "1e-5", NULL, 0},
    {"e2e_qp.batch", K_INT, OFF(e2e_qp.batch), "4", NULL, 0},
    {"e2e_qp.grad_accum", K_INT, OFF(e2e_qp.grad_accum), "8", NULL, 0},
    {"e2e_qp.clip", K_FLOAT, OFF(e2e_qp.clip), "0.3", NULL, 0},
    {"e2e_qp.warmup_ratio", K_FLOAT, OFF(e2e_qp.warmup_ratio), "0.03", NULL, 0},
    {"e2e_qp.seq_len", K_INT, OFF(e2e_qp.seq_len), "0", NULL, 0},
    {"e2e_qp.packed", K_BOOL, OFF(e2e_qp.packed), "false", NULL, 0},
    {"dist.backend", K_ENUM, OFF(dist.backend), "auto", ENUM(k_dist)},
    {"dist.timeout_s", K_FLOAT, OFF(dist.timeout_s), "600", NULL, 0},
    {"dist.zero", K_INT, OFF(dist.zero), "0", NULL, 0},
    {"dist.zero_bucket_mb", K_FLOAT, OFF(dist.zero_bucket_mb), "64", NULL, 0},
    {"dist.bucket_mb", K_FLOAT, OFF(dist.bucket_mb), "25", NULL, 0},
    {"dist.grad_dtype", K_ENUM, OFF(dist.grad_dtype), "f32", ENUM(k_cache_dtype)},
};
#define NKEYS ((int)(sizeof k_keys / sizeof k_keys[0]))

/* Every enum in qat_config is stored as an int-sized C enum (libcyaml writes data_size bytes). */
_Static_assert(sizeof(qat_cfg_method) == sizeof(int), "enum size");
_Static_assert(sizeof(qat_lr_schedule) == sizeof(int), "enum size");
_Static_assert(sizeof(qat_device) == sizeof(int), "enum size");
_Static_assert(sizeof(qat_dtype) == sizeof(int), "enum size");
_Static_assert(sizeof(qat_cfg_dist) == sizeof(int), "enum size");

static void *field_ptr(const qat_config *cfg, const key_def *k) { return (char *)cfg + k->off; }

static const key_def *find_key(const char *key) {
  for (int i = 0; i < NKEYS; i++)
    if (strcmp(k_keys[i].key, key) == 0) return &k_keys[i];
  return NULL;
}

const char *qat_cfg_method_name(qat_cfg_method m) {
  for (size_t i = 0; i < sizeof k_method / sizeof k_method[0]; i++)
    if (k_method[i].val == m) return k_method[i].str;
  return "?";
}

int qat_config_e2e_seq_len(const qat_config *cfg) {
  return cfg->e2e_qp.seq_len > 0 ? cfg->e2e_qp.seq_len : cfg->data.seq_len;
}

static const char *enum_name(const key_def *k, int v) {
  for (int i = 0; i < k->nnames; i++)
    if (k->names[i].val == v) return k->names[i].str;
  return NULL;
}

/* "one of: a, b, c" into buf. */
static const char *enum_choices(const key_def *k, char *buf, size_t n) {
  size_t used = 0;
  buf[0] = 0;
  for (int i = 0; i < k->nnames && used < n; i++)
    used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? ", " : "", k->names[i].str);
  return buf;
}

static const char *kind_expect(const key_def *k, char *buf, size_t n) {
  switch (k->kind) {
  case K_STR: return "a string";
  case K_INT: return "an integer (32-bit)";
  case K_I64: return "an integer";
  case K_FLOAT: return "a number";
  case K_BOOL: return "true or false";
  case K_ENUM: {
    char c[256];
    snprintf(buf, n, "one of: %s", enum_choices(k, c, sizeof c));
    return buf;
  }
  }
  return "?";
}

/* ------------------------------------------------------------------ setting values from text */

/* Parses text as the key's type into the config; 0 on success, -1 when the text is ill-typed. */
static int set_from_text(qat_config *cfg, const key_def *k, const char *text) {
  void *p = field_ptr(cfg, k);
  char *end = NULL;
  switch (k->kind) {
  case K_STR: {
    char *s = strdup(text);
    if (!s) return -1;
    free(*(char **)p);
    *(char **)p = s;
    return 0;
  }
  case K_INT:
  case K_I64: {
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end) return -1;
    if (k->kind == K_INT) {
      if (v < INT_MIN || v > INT_MAX) return -1;
      *(int *)p = (int)v;
    } else {
      *(int64_t *)p = (int64_t)v;
    }
    return 0;
  }
  case K_FLOAT: {
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || (errno == ERANGE && isinf(v))) return -1;
    *(double *)p = v;
    return 0;
  }
  case K_BOOL: {
    static const char *t[] = {"true", "yes", "on", "1"}, *f[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
      if (strcasecmp(text, t[i]) == 0) return *(bool *)p = true, 0;
      if (strcasecmp(text, f[i]) == 0) return *(bool *)p = false, 0;
    }
    return -1;
  }
  case K_ENUM:
    for (int i = 0; i < k->nnames; i++)
      if (strcmp(text, k->names[i].str) == 0) return *(int *)p = (int)k->names[i].val, 0;
    return -1;
  }
  return -1;
}

void qat_config_defaults(qat_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  for (int i = 0; i < NKEYS; i++) {
    if (!k_keys[i].dflt) continue;
    int rc = set_from_text(cfg, &k_keys[i], k_keys[i].dflt);
    (void)rc;
    assert(rc == 0 && "bad default in k_keys");
  }
}

void qat_config_free(qat_config *cfg) {
  if (!cfg) return;
  for (int i = 0; i < NKEYS; i++)
    if (k_keys[i].kind == K_STR) free(*(char **)field_ptr(cfg, &k_keys[i]));
  free(cfg->source);
  memset(cfg, 0, sizeof *cfg);
}

/* Levenshtein distance (short strings only: keys). */
static int edit_distance(const char *a, const char *b) {
  int la = (int)strlen(a), lb = (int)strlen(b);
  if (la > 63 || lb > 63) return 99;
  int d[64][64];
  for (int i = 0; i <= la; i++) d[i][0] = i;
  for (int j = 0; j <= lb; j++) d[0][j] = j;
  for (int i = 1; i <= la; i++)
    for (int j = 1; j <= lb; j++) {
      int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
      d[i][j] = c;
    }
  return d[la][lb];
}

/* " (did you mean 'train.lr'?)" for an unknown key, or "" when nothing is close. */
static const char *suggest(const char *key, char *buf, size_t n) {
  const char *best = NULL;
  int bestd = 3; /* at most two edits away */
  for (int i = 0; i < NKEYS; i++) {
    int d = edit_distance(key, k_keys[i].key);
    if (d < bestd) bestd = d, best = k_keys[i].key;
  }
  if (!best) { /* the right name in the wrong section: "quant.lr_quant" -> "train.lr_quant" */
    const char *leaf = strrchr(key, '.');
    leaf = leaf ? leaf + 1 : key;
    for (int i = 0; i < NKEYS && !best; i++) {
      const char *kl = strrchr(k_keys[i].key, '.');
      if (strcmp(kl ? kl + 1 : k_keys[i].key, leaf) == 0) best = k_keys[i].key;
    }
  }
  if (best)
    snprintf(buf, n, " (did you mean '%s'?)", best);
  else
    buf[0] = 0;
  return buf;
}

qat_status qat_config_set(qat_config *cfg, const char *assignment) {
  const char *eq = strchr(assignment, '=');
  if (!eq || eq == assignment)
    return QAT_FAIL(QAT_EUSAGE, "override '%s': expected key.sub=value", assignment);
  char key[128];
  size_t kl = (size_t)(eq - assignment);
  if (kl >= sizeof key) return QAT_FAIL(QAT_EUSAGE, "override '%s': key too long", assignment);
  memcpy(key, assignment, kl);
  key[kl] = 0;
  const key_def *k = find_key(key);
  char sug[160], ex[300];
  if (!k)
    return QAT_FAIL(QAT_EUSAGE, "override '%s': unknown key '%s'%s", assignment, key,
                    suggest(key, sug, sizeof sug));
  if (set_from_text(cfg, k, eq + 1) != 0)
    return QAT_FAIL(QAT_EUSAGE, "override '%s': bad value '%s' for key '%s' (expected %s)",
                    assignment, eq + 1, key, kind_expect(k, ex, sizeof ex));
  return QAT_OK;
}

/* ------------------------------------------------------------------ libcyaml schema and errors */

/* Flat raw storage: slot i points at key i's loaded value (NULL = absent). */
typedef struct raw_cfg {
  void *slot[NKEYS];
} raw_cfg;

typedef struct schema {
  cyaml_schema_field_t *root;     /* top-level fields + one per section, NULL-key terminated */
  cyaml_schema_field_t *sections; /* per section: its fields, each array NULL-key terminated */
  cyaml_schema_value_t top;
  char names[NKEYS][32]; /* section names / leaf keys (schema keys point here) */
} schema;

/* Every key is loaded as a string and converted by set_from_text, the same strict parser the
 * overrides use: libcyaml's own scalars are lax (1.3 reads "3.7" or "10abc" as an INT, and any
 * unknown word as a true BOOL). libcyaml still rejects sequences or mappings where a scalar
 * belongs, with the line. */
static void fill_scalar(cyaml_schema_field_t *f, const key_def *k, const char *leaf, int slot) {
  memset(f, 0, sizeof *f);
  f->key = leaf;
  f->data_offset = (uint32_t)(offsetof(raw_cfg, slot) + (size_t)slot * sizeof(void *));
  cyaml_schema_value_t *v = &f->value;
  v->type = CYAML_STRING;
  /* string keys: "null", "~" or an empty value leave the key unset (printed for unset strings);
   * other keys: an empty value is the string "", which no parser accepts */
  v->flags = (enum cyaml_flag)(CYAML_FLAG_OPTIONAL | (k->kind == K_STR ? CYAML_FLAG_POINTER_NULL_STR
                                                                        : CYAML_FLAG_POINTER));
  v->data_size = sizeof(char);
  v->string.min = 0;
  v->string.max = CYAML_UNLIMITED;
}

/* Builds the schema from k_keys; sections appear in table order. */
static qat_status schema_build(schema *s) {
  memset(s, 0, sizeof *s);
  s->root = calloc(2 * NKEYS + 1, sizeof *s->root);
  s->sections = calloc(2 * NKEYS + 1, sizeof *s->sections);
  if (!s->root || !s->sections) return QAT_FAIL(QAT_ENOMEM, "config: out of memory");
  int nroot = 0, nsec = 0;
  for (int i = 0; i < NKEYS;) {
    const char *dot = strchr(k_keys[i].key, '.');
    if (!dot) {
      fill_scalar(&s->root[nroot++], &k_keys[i], k_keys[i].key, i);
      i++;
      continue;
    }
    size_t sl = (size_t)(dot - k_keys[i].key);
    assert(sl < sizeof s->names[0]);
    memcpy(s->names[i], k_keys[i].key, sl);
    s->names[i][sl] = 0;
    cyaml_schema_field_t *first = &s->sections[nsec];
    int j = i;
    for (; j < NKEYS && strncmp(k_keys[j].key, s->names[i], sl) == 0 && k_keys[j].key[sl] == '.';
         j++)
      fill_scalar(&s->sections[nsec++], &k_keys[j], k_keys[j].key + sl + 1, j);
    nsec++; /* zeroed terminator */
    cyaml_schema_field_t *f = &s->root[nroot++];
    f->key = s->names[i];
    f->data_offset = 0; /* the section aliases the flat slot array */
    f->value.type = CYAML_MAPPING;
    f->value.flags = CYAML_FLAG_OPTIONAL;
    f->value.data_size = sizeof(raw_cfg);
    f->value.mapping.fields = first;
    i = j;
  }
  s->top.type = CYAML_MAPPING;
  s->top.flags = CYAML_FLAG_POINTER;
  s->top.data_size = sizeof(raw_cfg);
  s->top.mapping.fields = s->root;
  return QAT_OK;
}

static void schema_free(schema *s) {
  free(s->root);
  free(s->sections);
}

/* libcyaml reports an error as one "Load: ..." line and then a backtrace, innermost first:
 * "  in mapping field 'lr' (line: 4, column: 7)". We keep all of it and decode it afterwards. */
typedef struct log_buf {
  char text[4096];
  size_t len;
} log_buf;

static void log_capture(cyaml_log_t level, void *ctx, const char *fmt, va_list args) {
  log_buf *b = ctx;
  if (level < CYAML_LOG_ERROR || b->len >= sizeof b->text - 1) return;
  int k = vsnprintf(b->text + b->len, sizeof b->text - b->len, fmt, args);
  if (k > 0) b->len += (size_t)k;
  if (b->len >= sizeof b->text) b->len = sizeof b->text - 1;
}

/* 1-based line of the first "key:" at or after line `from` in text (from when not found).
 * libcyaml places an unknown key at the previous value's position, so we look it up ourselves. */
static int find_key_line(const char *text, const char *key, int from, int at_line_start) {
  size_t kl = strlen(key);
  int line = 1;
  for (const char *p = text; *p; line++) {
    const char *eol = strchr(p, '\n');
    if (!eol) eol = p + strlen(p);
    if (line >= from) {
      for (const char *q = p; q + kl <= eol; q++) {
        if (*q == '#' && (q == p || isspace((unsigned char)q[-1]))) break; /* comment */
        if (strncmp(q, key, kl) != 0) continue;
        if (q > p && (at_line_start || !strchr(" \t{,\"'", q[-1]))) continue;
        const char *r = q + kl;
        if (r < eol && (*r == '"' || *r == '\'')) r++;
        while (r < eol && (*r == ' ' || *r == '\t')) r++;
        if (r < eol && *r == ':') return line;
      }
    }
    p = *eol ? eol + 1 : eol;
  }
  return from;
}

/* Turns the captured libcyaml log into one line: "FILE:LINE: key 'a.b': what (expected ...)". */
static qat_status cyaml_error(const char *path, const char *text, const log_buf *lb,
                              cyaml_err_t err) {
  char msg[512] = "", fields[8][64];
  int nf = 0, line = 0;
  const char *p = lb->text;
  while (*p) {
    const char *eol = strchr(p, '\n');
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    char l[600];
    snprintf(l, sizeof l, "%.*s", (int)(len < 599 ? len : 599), p);
    char name[64];
    int ln, col;
    const char *in = strstr(l, "in mapping");
    if (in) {
      if (sscanf(in, "in mapping field '%63[^']' (line: %d, column: %d)", name, &ln, &col) == 3) {
        if (nf < 8) snprintf(fields[nf++], sizeof fields[0], "%s", name);
        if (!line) line = ln;
      } else if (sscanf(in, "in mapping (line: %d, column: %d)", &ln, &col) == 2) {
        if (!line) line = ln;
      }
    } else if (!msg[0] && strncmp(l, "Load: ", 6) == 0 && strcmp(l, "Load: Backtrace:") != 0) {
      snprintf(msg, sizeof msg, "%.500s", l + 6);
    }
    if (!eol) break;
    p = eol + 1;
  }
  if (!msg[0]) snprintf(msg, sizeof msg, "%s", cyaml_strerror(err));
  /* dotted key: backtrace fields outermost first, plus the unknown key itself */
  char key[256] = "";
  size_t kl = 0;
  for (int i = nf - 1; i >= 0 && kl < sizeof key; i--)
    kl += (size_t)snprintf(key + kl, sizeof key - kl, "%s%s", kl ? "." : "", fields[i]);
  static const char unexpected[] = "Unexpected key: ";
  char sug[160], ex[300];
  if (strncmp(msg, unexpected, sizeof unexpected - 1) == 0) {
    const char *uk = msg + sizeof unexpected - 1;
    if (kl < sizeof key) snprintf(key + kl, sizeof key - kl, "%s%.200s", kl ? "." : "", uk);
    line = find_key_line(text, uk, line > 0 ? line : 1, 0);
    return QAT_FAIL(QAT_EUSAGE, "%s:%d: unknown key '%s'%s", path, line, key,
                    suggest(key, sug, sizeof sug));
  }
  if (strncmp(msg, "libyaml: ", 9) == 0) { /* syntax: the key is only where the parser was */
    if (key[0])
      return QAT_FAIL(QAT_EUSAGE, "%s:%d: YAML syntax error near key '%s': %s", path, line, key,
                      msg + 9);
    return QAT_FAIL(QAT_EUSAGE, "%s:%d: YAML syntax error: %s", path, line > 0 ? line : 1, msg + 9);
  }
  if (strncmp(msg, "Mapping field already seen", 26) == 0 && nf > 0) {
    /* libcyaml points at the first occurrence's value; the second one comes after it */
    line = find_key_line(text, fields[0], line + 1, 0);
    return QAT_FAIL(QAT_EUSAGE, "%s:%d: key '%s' given twice", path, line, key);
  }
  const key_def *k = key[0] ? find_key(key) : NULL;
  if (k && strncmp(msg, "Expecting", 9) == 0)
    return QAT_FAIL(QAT_EUSAGE, "%s:%d: key '%s': %s (expected %s)", path, line, key, msg,
                    kind_expect(k, ex, sizeof ex));
  if (key[0])
    return QAT_FAIL(QAT_EUSAGE, "%s:%d: key '%s': %s", path, line, key, msg);
  return QAT_FAIL(QAT_EUSAGE, "%s:%d: %s", path, line > 0 ? line : 1, msg);
}

/* 1-based line where a dotted key is set: its section's line (a top-level key at column 0), then
 * the first "leaf:" from there. Only used to point at a bad value, so a heuristic is enough. */
static int key_line(const char *text, const char *key) {
  const char *dot = strchr(key, '.');
  if (!dot) return find_key_line(text, key, 1, 1);
  char section[64];
  snprintf(section, sizeof section, "%.*s", (int)(dot - key), key);
  return find_key_line(text, dot + 1, find_key_line(text, section, 1, 1), 0);
}

/* Converts the keys present in raw into cfg; a bad value names file:line, the key and the value. */
static qat_status from_raw(qat_config *cfg, const raw_cfg *raw, const char *path,
                           const char *text) {
  for (int i = 0; i < NKEYS; i++) {
    const char *v = raw->slot[i];
    if (!v) continue;
    const key_def *k = &k_keys[i];
    if (set_from_text(cfg, k, v) != 0) {
      char ex[300];
      return QAT_FAIL(QAT_EUSAGE, "%s:%d: key '%s': bad value '%.200s' (expected %s)", path,
                      key_line(text, k->key), k->key, v, kind_expect(k, ex, sizeof ex));
    }
  }
  return QAT_OK;
}

static qat_status parse_file(const char *path, qat_config *cfg) {
  char *text = NULL;
  size_t len = 0;
  QAT_TRY(qat_read_file(path, &text, &len));
  schema s;
  qat_status st = schema_build(&s);
  if (st != QAT_OK) {
    free(text);
    return st;
  }
  log_buf lb = {.len = 0};
  lb.text[0] = 0;
  cyaml_config_t cc = {.log_fn = log_capture, .log_ctx = &lb, .mem_fn = cyaml_mem,
                       .log_level = CYAML_LOG_ERROR, .flags = CYAML_CFG_DEFAULT};
  raw_cfg *raw = NULL;
  cyaml_err_t err = cyaml_load_data((const uint8_t *)text, len, &cc, &s.top,
                                    (cyaml_data_t **)&raw, NULL);
  if (err != CYAML_OK)
    st = cyaml_error(path, text, &lb, err);
  else if (raw) /* NULL for an empty document: every key at its default */
    st = from_raw(cfg, raw, path, text);
  if (raw) cyaml_free(&cc, &s.top, raw, 0);
  schema_free(&s);
  free(text);
  return st;
}

qat_status qat_config_load(const char *path, const char *const *overrides, int n,
                           qat_config *cfg) {
  qat_config_defaults(cfg);
  qat_status st = QAT_OK;
  cfg->source = strdup(path);
  if (!cfg->source) {
    st = QAT_FAIL(QAT_ENOMEM, "config: out of memory");
    goto fail;
  }
  QAT_CHECK(st, parse_file(path, cfg), fail);
  for (int i = 0; i < n; i++) QAT_CHECK(st, qat_config_set(cfg, overrides[i]), fail);
  st = qat_config_validate(cfg);
  if (st != QAT_OK) {
    qat_context(st, "%s", path);
    goto fail;
  }
  return QAT_OK;
fail:
  qat_config_free(cfg);
  return st;
}

/* ------------------------------------------------------------------ validation */

#define BAD(key, fmtv, v, why)                                                                     \
  QAT_FAIL(QAT_EUSAGE, "key '%s' = " fmtv ": %s", key, v, why)
#define NEED_I(cond, key, v, why)                                                                  \
  do {                                                                                             \
    if (!(cond)) return BAD(key, "%lld", (long long)(v), why);                                     \
  } while (0)
/* written as !(cond) so that NaN fails every range check */
#define NEED_F(cond, key, v, why)                                                                  \
  do {                                                                                             \
    if (!(cond)) return BAD(key, "%g", (double)(v), why);                                          \
  } while (0)
#define NEED_S(s, key)                                                                             \
  do {                                                                                             \
    if (!(s) || !(s)[0]) return QAT_FAIL(QAT_EUSAGE, "key '%s' is required (a path)", key);      \
  } while (0)

qat_status qat_config_validate(const qat_config *c) {
  NEED_S(c->model, "model");
  NEED_S(c->data.train, "data.train");
  NEED_S(c->data.val, "data.val");
  NEED_S(c->checkpoint.dir, "checkpoint.dir");
  NEED_I(c->data.seq_len >= 2, "data.seq_len", c->data.seq_len, "must be >= 2");
  NEED_I(c->quant.bits >= 2 && c->quant.bits <= 8, "quant.bits", c->quant.bits,
         "must be in 2..8");
  NEED_I(c->quant.group >= -1, "quant.group", c->quant.group,
         "must be -1 (per-channel), 0 (per-tensor) or a group size >= 1");
  NEED_I(c->quant.init == QAT_CFG_INIT_MINMAX || c->quant.init == QAT_CFG_INIT_MSE, "quant.init",
         (int)c->quant.init, "must be minmax or mse");
  NEED_I(c->quant.scale_dtype == QAT_F32 || c->quant.scale_dtype == QAT_F16, "quant.scale_dtype",
         (int)c->quant.scale_dtype, "must be f32 or f16");
  NEED_I(c->method != QAT_METHOD_QAT || c->train.steps >= 1, "train.steps", c->train.steps,
         "must be >= 1 (required for method qat)");
  NEED_I(c->train.steps >= 0, "train.steps", c->train.steps, "must be >= 0");
  NEED_I(c->train.batch >= 1, "train.batch", c->train.batch, "must be >= 1");
  NEED_I(c->train.grad_accum >= 1, "train.grad_accum", c->train.grad_accum, "must be >= 1");
  NEED_I(c->train.global_batch >= 0, "train.global_batch", c->train.global_batch,
         "must be >= 0 (0 = world * batch * grad_accum)");
  NEED_F(c->train.lr >= 0 && isfinite(c->train.lr), "train.lr", c->train.lr, "must be >= 0");
  NEED_F(c->train.lr_quant >= 0 && isfinite(c->train.lr_quant), "train.lr_quant",
         c->train.lr_quant, "must be >= 0");
  NEED_F(c->train.weight_decay >= 0 && isfinite(c->train.weight_decay), "train.weight_decay",
         c->train.weight_decay, "must be >= 0");
  NEED_I(c->train.warmup >= 0, "train.warmup", c->train.warmup, "must be >= 0");
  NEED_I(c->method != QAT_METHOD_QAT || c->train.warmup <= c->train.steps, "train.warmup",
         c->train.warmup, "must be <= train.steps");
  NEED_F(c->train.min_lr_ratio >= 0 && c->train.min_lr_ratio <= 1, "train.min_lr_ratio",
         c->train.min_lr_ratio, "must be in [0, 1]");
  NEED_F(c->train.clip >= 0 && isfinite(c->train.clip), "train.clip", c->train.clip,
         "must be >= 0 (0 = off)");
  NEED_I(c->train.eval_every >= 0, "train.eval_every", c->train.eval_every,
         "must be >= 0 (0 = only at the end)");
  NEED_I(c->train.eval_windows >= 0, "train.eval_windows", c->train.eval_windows,
         "must be >= 0 (0 = all)");
  NEED_I(c->train.max_bad_steps >= 0, "train.max_bad_steps", c->train.max_bad_steps,
         "must be >= 0");
  NEED_F(c->distill.temperature > 0 && isfinite(c->distill.temperature), "distill.temperature",
         c->distill.temperature, "must be > 0");
  NEED_F(c->distill.alpha >= 0 && c->distill.alpha <= 1, "distill.alpha", c->distill.alpha,
         "must be in [0, 1]");
  NEED_I(c->checkpoint.every >= 0, "checkpoint.every", c->checkpoint.every,
         "must be >= 0 (0 = only at the end)");
  NEED_I(c->checkpoint.keep >= 1, "checkpoint.keep", c->checkpoint.keep, "must be >= 1");
  NEED_I(c->gptq.samples >= 1, "gptq.samples", c->gptq.samples, "must be >= 1");
  NEED_I(c->gptq.batch >= 1, "gptq.batch", c->gptq.batch, "must be >= 1");
  NEED_F(c->gptq.damp >= 0 && c->gptq.damp < 1, "gptq.damp", c->gptq.damp, "must be in [0, 1)");
  NEED_I(c->gptq.block >= 1, "gptq.block", c->gptq.block, "must be >= 1");
  NEED_I(c->gptq.skip_first >= 0 && c->gptq.skip_first < c->data.seq_len, "gptq.skip_first",
         c->gptq.skip_first, "must be in [0, data.seq_len)");
  NEED_F(c->gptq.first_weight > 0 && c->gptq.first_weight <= 1e6, "gptq.first_weight",
         c->gptq.first_weight, "must be in (0, 1e6]");
  NEED_I(c->block_ap.samples >= 1, "block_ap.samples", c->block_ap.samples, "must be >= 1");
  NEED_I(c->block_ap.epochs >= 1, "block_ap.epochs", c->block_ap.epochs, "must be >= 1");
  NEED_F(c->block_ap.lr_w >= 0 && isfinite(c->block_ap.lr_w), "block_ap.lr_w", c->block_ap.lr_w,
         "must be >= 0");
  NEED_F(c->block_ap.lr_quant >= 0 && isfinite(c->block_ap.lr_quant), "block_ap.lr_quant",
         c->block_ap.lr_quant, "must be >= 0");
  NEED_I(c->e2e_qp.steps >= 1, "e2e_qp.steps", c->e2e_qp.steps, "must be >= 1");
  NEED_F(c->e2e_qp.lr >= 0 && isfinite(c->e2e_qp.lr), "e2e_qp.lr", c->e2e_qp.lr, "must be >= 0");
  NEED_I(c->block_ap.batch >= 1, "block_ap.batch", c->block_ap.batch, "must be >= 1");
  NEED_I(c->block_ap.grad_accum >= 1, "block_ap.grad_accum", c->block_ap.grad_accum,
         "must be >= 1");
  NEED_I(c->block_ap.val_samples >= 0, "block_ap.val_samples", c->block_ap.val_samples,
         "must be >= 0 (0 = no validation MSE)");
  NEED_I(c->block_ap.cache_device_mb >= 0, "block_ap.cache_device_mb", c->block_ap.cache_device_mb,
         "must be >= 0");
  NEED_I(c->block_ap.cache_host_mb >= 0, "block_ap.cache_host_mb", c->block_ap.cache_host_mb,
         "must be >= 0");
  NEED_I(c->block_ap.cache_dtype == QAT_BF16 || c->block_ap.cache_dtype == QAT_F32,
         "block_ap.cache_dtype", (int)c->block_ap.cache_dtype, "must be bf16 or f32");
  NEED_I(c->e2e_qp.batch >= 1, "e2e_qp.batch", c->e2e_qp.batch, "must be >= 1");
  NEED_I(c->e2e_qp.grad_accum >= 1, "e2e_qp.grad_accum", c->e2e_qp.grad_accum, "must be >= 1");
  NEED_F(c->e2e_qp.clip >= 0 && isfinite(c->e2e_qp.clip), "e2e_qp.clip", c->e2e_qp.clip,
         "must be >= 0 (0 = off)");
  NEED_F(c->e2e_qp.warmup_ratio >= 0 && c->e2e_qp.warmup_ratio < 1, "e2e_qp.warmup_ratio",
         c->e2e_qp.warmup_ratio, "must be in [0, 1)");
  if (c->e2e_qp.packed && c->device == QAT_DEV_CUDA)
    return BAD("e2e_qp.packed", "%s", "true",
               "packed frozen codes train on device cpu only (no CUDA qgemm_ds yet): set it false");
  if (c->e2e_qp.packed && c->quant.group == 0)
    return BAD("e2e_qp.packed", "%s", "true",
               "needs group scales or per-channel (quant.group 0, per-tensor, is not packed)");
  NEED_I(c->e2e_qp.seq_len == 0 || c->e2e_qp.seq_len >= 2, "e2e_qp.seq_len", c->e2e_qp.seq_len,
         "must be 0 (= data.seq_len) or >= 2");
  NEED_F(c->dist.timeout_s >= 0 && isfinite(c->dist.timeout_s), "dist.timeout_s",
         c->dist.timeout_s, "must be >= 0 (0 = never)");
  NEED_I(c->dist.zero == 0 || c->dist.zero == 1, "dist.zero", c->dist.zero, "must be 0 or 1");
  NEED_F(c->dist.zero_bucket_mb > 0 && c->dist.zero_bucket_mb <= 65536, "dist.zero_bucket_mb",
         c->dist.zero_bucket_mb, "must be in (0, 65536]");
  NEED_F(c->dist.bucket_mb > 0 && c->dist.bucket_mb <= 65536, "dist.bucket_mb",
         c->dist.bucket_mb, "must be in (0, 65536]");
  NEED_I(c->dist.grad_dtype == QAT_F32 || c->dist.grad_dtype == QAT_BF16, "dist.grad_dtype",
         (int)c->dist.grad_dtype, "must be f32 or bf16");
  if (c->dist.grad_dtype == QAT_BF16 && c->dist.zero)
    return BAD("dist.grad_dtype", "%s", "bf16", "not implemented with dist.zero = 1 (use f32)");
  return QAT_OK;
}

qat_status qat_config_check_files(const qat_config *c) {
  char p[4096];
  if (!c->model || !qat_is_dir(c->model))
    return QAT_FAIL(QAT_EUSAGE, "key 'model': '%s' is not a directory", c->model ? c->model : "");
  QAT_TRY(qat_path_join(p, sizeof p, c->model, "config.json"));
  if (!qat_path_exists(p))
    return QAT_FAIL(QAT_EUSAGE, "key 'model': '%s' has no config.json (not a Hugging Face folder)",
                    c->model);
  const char *keys[] = {"data.train", "data.val"};
  const char *vals[] = {c->data.train, c->data.val};
  for (int i = 0; i < 2; i++)
    if (!vals[i] || !qat_path_exists(vals[i]) || qat_is_dir(vals[i]))
      return QAT_FAIL(QAT_EUSAGE, "key '%s': token file '%s' not found", keys[i],
                      vals[i] ? vals[i] : "");
  return QAT_OK;
}

/* ------------------------------------------------------------------ printing */

/* Shortest %g form that reads back as the same double. */
static void fmt_double(double v, char *buf, size_t n) {
  if (isnan(v)) {
    snprintf(buf, n, "nan");
    return;
  }
  if (isinf(v)) {
    snprintf(buf, n, v > 0 ? "inf" : "-inf");
    return;
  }
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, n, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) return;
  }
}

static void print_string(FILE *f, const char *s) {
  if (!s) {
    fputs("null", f);
    return;
  }
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f)
      fprintf(f, "\\x%02x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

qat_status qat_config_print(const qat_config *cfg, FILE *f) {
  fputs("# qat train config: every key with its effective value (configs/README.md)\n", f);
  char section[32] = "";
  for (int i = 0; i < NKEYS; i++) {
    const key_def *k = &k_keys[i];
    const char *dot = strchr(k->key, '.');
    const char *leaf = k->key;
    if (dot) {
      size_t sl = (size_t)(dot - k->key);
      if (strlen(section) != sl || strncmp(section, k->key, sl) != 0) {
        snprintf(section, sizeof section, "%.*s", (int)sl, k->key);
        fprintf(f, "%s:\n", section);
      }
      leaf = dot + 1;
      fputs("  ", f);
    } else {
      section[0] = 0;
    }
    fprintf(f, "%s: ", leaf);
    const void *p = field_ptr(cfg, k);
    char buf[64];
    switch (k->kind) {
    case K_STR: print_string(f, *(char *const *)p); break;
    case K_INT: fprintf(f, "%d", *(const int *)p); break;
    case K_I64: fprintf(f, "%lld", (long long)*(const int64_t *)p); break;
    case K_FLOAT:
      fmt_double(*(const double *)p, buf, sizeof buf);
      fputs(buf, f);
      break;
    case K_BOOL: fputs(*(const bool *)p ? "true" : "false", f); break;
    case K_ENUM: {
      const char *name = enum_name(k, *(const int *)p);
      fputs(name ? name : "?", f);
      break;
    }
    }
    fputc('\n', f);
  }
  if (ferror(f)) return QAT_FAIL(QAT_EIO, "config: write failed");
  return QAT_OK;
}

qat_status qat_config_to_string(const qat_config *cfg, char **out) {
  size_t len = 0;
  *out = NULL;
  FILE *f = open_memstream(out, &len);
  if (!f) return QAT_FAIL(QAT_ENOMEM, "config: out of memory");
  qat_status st = qat_config_print(cfg, f);
  fclose(f);
  if (st != QAT_OK) {
    free(*out);
    *out = NULL;
  }
  return st;
}

qat_status qat_config_save(const qat_config *cfg, const char *path) {
  char *s = NULL;
  QAT_TRY(qat_config_to_string(cfg, &s));
  qat_status st = qat_write_file_atomic(path, s, strlen(s));
  free(s);
  return st;
}

uint64_t qat_config_hash(const qat_config *cfg) {
  char *s = NULL;
  if (qat_config_to_string(cfg, &s) != QAT_OK) return 0;
  uint64_t h = 0xcbf29ce484222325ull;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
  free(s);
  return h;
}

bool qat_config_equal(const qat_config *a, const qat_config *b) {
  for (int i = 0; i < NKEYS; i++) {
    const key_def *k = &k_keys[i];
    const void *pa = field_ptr(a, k), *pb = field_ptr(b, k);
    switch (k->kind) {
    case K_STR: {
      const char *sa = *(char *const *)pa, *sb = *(char *const *)pb;
      if ((sa == NULL) != (sb == NULL) || (sa && strcmp(sa, sb) != 0)) return false;
      break;
    }
    case K_INT:
    case K_ENUM:
      if (*(const int *)pa != *(const int *)pb) return false;
      break;
    case K_I64:
      if (*(const int64_t *)pa != *(const int64_t *)pb) return false;
      break;
    case K_FLOAT: /* bit-exact: a round trip must not move a value by one ulp */
      if (memcmp(pa, pb, sizeof(double)) != 0) return false;
      break;
    case K_BOOL:
      if (*(const bool *)pa != *(const bool *)pb) return false;
      break;
    }
  }
  return true;
}
