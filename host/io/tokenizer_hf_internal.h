/* Private to host/io/tokenizer_hf*.c: the loaded Hugging Face tokenizer.json (struct qat_hf) and
 * the pieces its four files share. The pipeline follows the `tokenizers` library
 * (tokenizers/src/tokenizer/mod.rs encode_single_sequence):
 *   added tokens cut out of the raw text (tokenizer_hf.c)
 *   -> normalizer steps on each gap (tokenizer_hf_pretok.c: NFC, Prepend, Replace)
 *   -> "normalized" added tokens cut out of the normalized gap (tokenizer_hf.c)
 *   -> pre-tokenizer steps, each splitting every piece of the previous one (tokenizer_hf_pretok.c:
 *      Split with any behavior, ByteLevel, Digits, Metaspace, WhitespaceSplit, Punctuation)
 *   -> the BPE model per piece (tokenizer_hf_model.c: merges, ignore_merges, byte-level bytes,
 *      byte_fallback <0xNN> tokens, unk / fuse_unk)
 * Shared helpers (hash maps, JSON keys, UTF-8, PCRE2) are tokenizer_hf_util.c. */
#ifndef QAT_IO_TOKENIZER_HF_INTERNAL_H
#define QAT_IO_TOKENIZER_HF_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include "io/tokenizer_internal.h"

#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

enum {
  HF_MAX_STAGES = 16,    /* pre-tokenizer steps after flattening Sequences */
  HF_MAX_NORM = 16,      /* normalizer steps after flattening Sequences */
  HF_MAX_ID = 1 << 24,   /* a token id beyond this is a corrupt file, not a vocabulary */
  HF_NBYTE_CP = 256 + 68 /* GPT-2 bytes_to_unicode's code points are all below this */
};

/* ---- hash maps (tokenizer_hf_util.c) ---------------------------------------------------------- */

/* string -> id; a later duplicate key overrides the id, like a JSON object read into a map */
typedef struct {
  int64_t n, cap;
  char *pool; /* keys back to back */
  size_t pool_n, pool_cap;
  size_t *off;
  int32_t *len, *id;
  int64_t *slot; /* open addressing over entry indices, -1 = empty */
  uint64_t mask;
} hf_strmap;
qat_status hf_strmap_init(hf_strmap *m, int64_t n, size_t bytes); /* room for n keys, bytes in all */
void hf_strmap_free(hf_strmap *m);
int32_t hf_strmap_get(const hf_strmap *m, const char *s, size_t n); /* -1 when absent */
void hf_strmap_put(hf_strmap *m, const char *s, size_t n, int32_t id);

/* (id, id) -> (rank, merged id); a repeated pair takes the later rank, as tokenizers' HashMap */
typedef struct {
  uint64_t *key; /* ((a << 32) | b) + 1; 0 = empty */
  int32_t *rank, *to;
  uint64_t mask;
} hf_pairmap;
qat_status hf_pairmap_init(hf_pairmap *m, int64_t n);
void hf_pairmap_free(hf_pairmap *m);
void hf_pairmap_put(hf_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t to);
int hf_pairmap_get(const hf_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *to);

/* ---- JSON keys, messages, UTF-8, regexes (tokenizer_hf_util.c) -------------------------------- */

const cJSON *hf_get(const cJSON *o, const char *key);
int hf_unset(const cJSON *v); /* absent or JSON null */
const char *hf_type(const cJSON *o); /* o.type, or "" */
/* A boolean key: absent -> dflt; anything but a boolean is an error naming path and where.key. */
qat_status hf_bool(const char *path, const cJSON *o, const char *where, const char *key, int dflt,
                   int *out);
int hf_json_id(const cJSON *v, int32_t *id); /* an integral number in [0, HF_MAX_ID) */
/* s[0..n) for a one-line message: control bytes as \xNN, at most ~60 bytes. */
const char *hf_esc(const char *s, size_t n, char *buf, size_t cap);
/* Length of the UTF-8 character at s (Unicode Table 3-7); *ok = 0 when ill-formed, and the length
 * is that of the maximal subpart (what one U+FFFD replaces, as Python does). */
size_t hf_utf8_step(const unsigned char *s, size_t n, int *ok);
int hf_utf8_valid(const char *s, size_t n);
qat_status hf_utf8_lossy(const char *s, size_t n, char **out, size_t *out_n);
int hf_is_ascii(const char *s, size_t n);
qat_status hf_nfc(const char *path, const char *s, size_t n, char **out, size_t *out_n);
qat_status hf_grow(void **p, size_t *cap, size_t need, size_t elem);
/* Compiles a Regex (Oniguruma's \s / \S rewritten to Unicode White_Space) or a literal String
 * pattern; where names the key in errors. */
qat_status hf_compile(const char *path, const char *where, const char *pat, int literal,
                      pcre2_code **out);

/* ---- the loaded tokenizer ---------------------------------------------------------------------- */

typedef struct {
  char *s; /* owned */
  int32_t len, id;
} hf_added_tok;

/* Added tokens matched at one stage, longest first; first[b]: some token starts with byte b. */
typedef struct {
  hf_added_tok *v;
  int n;
  uint8_t first[256];
} hf_added_set;

enum { HF_NFC = 1, HF_PREPEND, HF_REPLACE };
typedef struct {
  int kind;
  char *a, *b;    /* Prepend: a; Replace: a literal pattern (NULL with re), b the content */
  size_t na, nb;
  pcre2_code *re; /* Replace's Regex pattern */
} hf_norm;

enum { HF_SPLIT = 1, HF_BYTELEVEL, HF_METASPACE };
enum { HF_ISOLATED = 0, HF_REMOVED, HF_MERGED_PREV, HF_MERGED_NEXT, HF_CONTIGUOUS };
enum { HF_PREPEND_ALWAYS = 0, HF_PREPEND_FIRST, HF_PREPEND_NEVER };
typedef struct {
  int kind;
  pcre2_code *re;      /* Split's pattern; ByteLevel's GPT-2 regex (NULL: use_regex false);
                          Metaspace's replacement as a literal (NULL: split false) */
  int behavior, invert;
  int prefix_space;    /* ByteLevel add_prefix_space */
  char repl[8];        /* Metaspace replacement (one character, UTF-8) */
  int nrepl, scheme;
} hf_stage;

/* Decoder steps applied to each token for qat_hf_piece (tokenizers/src/decoders). */
enum { HF_DEC_BYTELEVEL = 1, HF_DEC_REPLACE, HF_DEC_BYTEFALLBACK };
typedef struct {
  int kind;
  char *a, *b; /* Replace: pattern, content */
  size_t na, nb;
} hf_dec;

struct qat_hf {
  char *path;
  hf_strmap vocab;   /* model.vocab */
  hf_strmap added;   /* added_tokens[].content -> id */
  hf_pairmap merges; /* model.merges */
  hf_added_set raw;  /* "normalized": false, matched in the raw text */
  hf_added_set norm; /* "normalized": true, matched in normalized text (contents normalized) */
  int ignore_merges, fuse_unk, byte_fallback;
  int32_t unk;
  int32_t fallback_id[256]; /* id of "<0xNN>" for byte_fallback, -1 = none */
  int nnorm;
  hf_norm norm_steps[HF_MAX_NORM];
  int nstages;
  hf_stage stages[HF_MAX_STAGES];
  int ndec;
  hf_dec dec_steps[8];
  int strip_first;          /* leading spaces the decoder strips from the first token */
  int strip_each;           /* ... from every token (a Strip decoder without Fuse before it) */
  int32_t byte_id[256];     /* vocab id of each byte's byte-level character, -1 = none */
  char byte_u8[256][2];     /* that character in UTF-8 (1 or 2 bytes) */
  uint8_t byte_u8n[256];
  int16_t cp_byte[HF_NBYTE_CP]; /* the inverse: code point -> byte, -1 = not in the alphabet */
  int vocab_size;
  int bos, eos;             /* the id prepended to a document / the stop token; -1 = none */
  int eos_add;              /* the id appended to a document; -1 = none */
  int tpl, tpl_bos, tpl_eos; /* a TemplateProcessing "single": its tokens around $A (-1 none) */
  char *dec;                /* decoded bytes of every id back to back */
  size_t *dec_off;          /* [vocab_size + 1] */
};

/* ---- one encode call's scratch ----------------------------------------------------------------- */

typedef struct {
  int32_t id, prev, next; /* id -1: merged into its left neighbour */
} hf_symbol;

typedef struct {
  int32_t rank, pos, to;
} hf_candidate;

typedef struct {
  const qat_hf *h;
  qat_ivec *out;
  pcre2_match_data *md;
  pcre2_match_context *mctx; /* with a larger JIT stack, made on first need */
  pcre2_jit_stack *jit;
  /* per stage k: buf[2k] its rewritten input piece, buf[2k + 1] a piece it hands on rewritten;
   * buf[2 * HF_MAX_STAGES]: BPE's byte-level map */
  char *buf[2 * HF_MAX_STAGES + 1];
  size_t cap[2 * HF_MAX_STAGES + 1];
  hf_symbol *sym;
  size_t sym_cap;
  hf_candidate *heap;
  size_t heap_n, heap_cap;
} hf_encoder;

/* The next match of re in s[0..n) at or after `at`: [*a, *b), or *a = SIZE_MAX. */
qat_status hf_next_match(hf_encoder *e, const pcre2_code *re, const char *s, size_t n, size_t at,
                         size_t *a, size_t *b);

/* tokenizer_hf_model.c */
qat_status hf_load_model(qat_hf *h, const cJSON *model); /* options, vocab, unk, byte fallback */
qat_status hf_load_merges(qat_hf *h, const cJSON *model);
void hf_build_bytes(qat_hf *h);          /* byte-level tables, after the vocab */
qat_status hf_build_decode(qat_hf *h);   /* dec / dec_off, after vocab, added tokens, decoder */
/* BPE of one piece, ids appended to e->out. bytes: s is raw bytes still to be mapped through
 * the byte-level alphabet (a ByteLevel step was the last); else s is the model's characters. */
qat_status hf_bpe(hf_encoder *e, const char *s, size_t n, int bytes);

/* tokenizer_hf_pretok.c */
qat_status hf_load_normalizer(qat_hf *h, const cJSON *root);
qat_status hf_load_pretokenizer(qat_hf *h, const cJSON *root);
qat_status hf_load_decoder(qat_hf *h, const cJSON *root);
void hf_free_steps(qat_hf *h);
int hf_has_normalizer(const qat_hf *h);
/* The normalized form of s[0..n), malloc'd (also for added tokens' contents at load). */
qat_status hf_normalize(const qat_hf *h, const char *s, size_t n, char **out, size_t *out_n);
/* The pre-tokenizer from step `stage` on, then BPE, for piece s[0..n); first: the piece starts
 * at offset 0 of the original text (Metaspace's prepend_scheme "first"). */
qat_status hf_pretokenize(hf_encoder *e, int stage, const char *s, size_t n, int first);

#endif
