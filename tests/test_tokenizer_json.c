/* tokenizer.json (byte-level BPE) through the public tokenizer.h API, on small files built here
 * whose ids are worked out by hand from the `tokenizers` rules: merge order (lowest rank first,
 * leftmost on ties), ignore_merges, the GPT-2 pre-tokenizer pattern, added tokens (longest match),
 * NFC, U+FFFD for invalid UTF-8, decoding (byte tokens, mid-UTF-8 pieces, round trips), BOS / EOS
 * from the template, tokenizer_config.json (null = none) and config.json, the folder's file
 * preference, and malformed files (an error naming the file and the key, never a crash). The
 * comparison with the `tokenizers` library itself on real text is tests/test_tokenizer_hf.sh.
 *
 * `test_tokenizer_json --roundtrip DIR TEXT OUT` writes the concatenated qat_tokenizer_piece of
 * every id of TEXT (encoded with DIR's tokenizer) to OUT, for the script test;
 * `test_tokenizer_json --cases DIR INP OUT` encodes each case of a llama.cpp ggml-vocab-*.inp
 * file (cases separated by "\n__ggml_vocab_test__\n") and writes one line of " id id ..." per
 * case to OUT, the layout of llama.cpp's .out files. */
#include "io/fsutil.h"
#include "io/tokenizer.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static const char *tmp_path(const char *name) { return tu_dir_path(name); }


static void write_json(const char *path, cJSON *j) {
  char *s = cJSON_PrintUnformatted(j);
  tu_write_file(path, s, strlen(s));
  free(s);
}

/* GPT-2's bytes_to_unicode, written as its Python original: bs = printable ranges, then the other
 * bytes appended with code points 256, 257, ... */
static void byte_char(int b, char out[3]) {
  int bs[256], cs[256], n = 0, extra = 0;
  for (int x = 33; x <= 126; x++) bs[n] = x, cs[n++] = x;
  for (int x = 161; x <= 172; x++) bs[n] = x, cs[n++] = x;
  for (int x = 174; x <= 255; x++) bs[n] = x, cs[n++] = x;
  for (int x = 0; x < 256; x++) {
    int seen = 0;
    for (int k = 0; k < n && !seen; k++) seen = bs[k] == x;
    if (!seen) bs[n] = x, cs[n++] = 256 + extra++;
  }
  int cp = -1;
  for (int k = 0; k < 256; k++)
    if (bs[k] == b) cp = cs[k];
  if (cp < 0x80) {
    out[0] = (char)cp, out[1] = 0;
  } else {
    out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 63)), out[2] = 0;
  }
}

/* The byte-level spelling of raw bytes s (malloc'd). */
static char *bl(const char *s) {
  char *d = calloc(2 * strlen(s) + 1, 1), c[3];
  for (const char *p = s; *p; p++) {
    byte_char((unsigned char)*p, c);
    strcat(d, c);
  }
  return d;
}

static void add_vocab(cJSON *vocab, const char *raw, int id) {
  char *k = bl(raw);
  cJSON_AddNumberToObject(vocab, k, id);
  free(k);
}

static void add_merge(cJSON *merges, const char *a, const char *b) {
  char *x = bl(a), *y = bl(b);
  cJSON *m = cJSON_CreateArray();
  cJSON_AddItemToArray(m, cJSON_CreateString(x));
  cJSON_AddItemToArray(m, cJSON_CreateString(y));
  cJSON_AddItemToArray(merges, m);
  free(x);
  free(y);
}

static cJSON *added(int id, const char *content, int special, int normalized) {
  cJSON *t = cJSON_CreateObject();
  cJSON_AddNumberToObject(t, "id", id);
  cJSON_AddStringToObject(t, "content", content);
  cJSON_AddBoolToObject(t, "single_word", 0);
  cJSON_AddBoolToObject(t, "lstrip", 0);
  cJSON_AddBoolToObject(t, "rstrip", 0);
  cJSON_AddBoolToObject(t, "normalized", normalized);
  cJSON_AddBoolToObject(t, "special", special);
  return t;
}

static cJSON *byte_level(int use_regex) {
  cJSON *b = cJSON_CreateObject();
  cJSON_AddStringToObject(b, "type", "ByteLevel");
  cJSON_AddBoolToObject(b, "add_prefix_space", 0);
  cJSON_AddBoolToObject(b, "trim_offsets", 1);
  cJSON_AddBoolToObject(b, "use_regex", use_regex);
  return b;
}

static cJSON *model_of(cJSON *j) { return cJSON_GetObjectItem(j, "model"); }

static cJSON *typed(const char *type) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "type", type);
  return o;
}

/* Sequence[Split(regex, behavior), ByteLevel(use_regex false)] */
static cJSON *split_then_byte_level(const char *regex, const char *behavior) {
  cJSON *seq = typed("Sequence"), *list = cJSON_CreateArray(), *sp = typed("Split");
  cJSON *pat = cJSON_CreateObject();
  cJSON_AddStringToObject(pat, "Regex", regex);
  cJSON_AddItemToObject(sp, "pattern", pat);
  cJSON_AddStringToObject(sp, "behavior", behavior);
  cJSON_AddBoolToObject(sp, "invert", 0);
  cJSON_AddItemToArray(list, sp);
  cJSON_AddItemToArray(list, byte_level(0));
  cJSON_AddItemToObject(seq, "pretokenizers", list);
  return seq;
}

/* Ids: byte b's character is id b; then
 *   256 "b " (merge rank 0)  257 "bc" (1)  258 "ab" (2)  259 "abc" = a + bc (3)  260 "aa" (4)
 *   261 "ca" (no merge makes it)  300 <|s|>  301 <|s|>x  302 <|bos|>  (special added tokens).
 * Pre-tokenizer: ByteLevel without its regex: the whole text is one piece. */
static cJSON *base_json(void) {
  cJSON *j = cJSON_CreateObject(), *model = cJSON_CreateObject();
  cJSON *vocab = cJSON_CreateObject(), *merges = cJSON_CreateArray(), *add = cJSON_CreateArray();
  cJSON_AddStringToObject(j, "version", "1.0");
  cJSON_AddNullToObject(j, "truncation");
  cJSON_AddNullToObject(j, "padding");
  cJSON_AddItemToArray(add, added(300, "<|s|>", 1, 0));
  cJSON_AddItemToArray(add, added(301, "<|s|>x", 1, 0));
  cJSON_AddItemToArray(add, added(302, "<|bos|>", 1, 0));
  cJSON_AddItemToObject(j, "added_tokens", add);
  cJSON_AddNullToObject(j, "normalizer");
  cJSON_AddItemToObject(j, "pre_tokenizer", byte_level(0));
  cJSON_AddNullToObject(j, "post_processor");
  cJSON_AddNullToObject(j, "decoder");
  cJSON_AddStringToObject(model, "type", "BPE");
  cJSON_AddNullToObject(model, "dropout");
  cJSON_AddNullToObject(model, "unk_token");
  cJSON_AddNullToObject(model, "continuing_subword_prefix");
  cJSON_AddNullToObject(model, "end_of_word_suffix");
  cJSON_AddBoolToObject(model, "fuse_unk", 0);
  cJSON_AddBoolToObject(model, "byte_fallback", 0);
  cJSON_AddBoolToObject(model, "ignore_merges", 0);
  for (int b = 1; b < 256; b++) {
    char s[2] = {(char)b, 0};
    add_vocab(vocab, s, b);
  }
  cJSON_AddStringToObject(vocab, "\xC4\x80", 0); /* byte 0: U+0100 */
  static const char *const extra[] = {"b ", "bc", "ab", "abc", "aa", "ca"};
  for (int i = 0; i < 6; i++) add_vocab(vocab, extra[i], 256 + i);
  add_merge(merges, "b", " ");
  add_merge(merges, "b", "c");
  add_merge(merges, "a", "b");
  add_merge(merges, "a", "bc");
  add_merge(merges, "a", "a");
  cJSON_AddItemToObject(model, "vocab", vocab);
  cJSON_AddItemToObject(model, "merges", merges);
  cJSON_AddItemToObject(j, "model", model);
  return j;
}

static qat_tokenizer *load_json(cJSON *j) {
  write_json(tmp_path("tokenizer.json"), j);
  cJSON_Delete(j);
  qat_tokenizer *t = NULL;
  TU_REQUIRE_OK(qat_tokenizer_load(tmp_path("tokenizer.json"), 0, &t));
  return t;
}

/* encode(s) == want[0..n) */
static void expect_ids(qat_tokenizer *t, const char *s, size_t len, const int32_t *want, int n) {
  int32_t *ids;
  int64_t m;
  TU_REQUIRE_OK(qat_tokenizer_encode(t, s, len, 0, &ids, &m));
  char got[512] = "";
  for (int64_t i = 0; i < m && strlen(got) < 480; i++)
    snprintf(got + strlen(got), sizeof got - strlen(got), "%d ", ids[i]);
  ck_assert_msg(m == n, "\"%s\": %lld ids (%s), want %d", s, (long long)m, got, n);
  for (int i = 0; i < n; i++)
    ck_assert_msg(ids[i] == want[i], "\"%s\": id %d is %d, want %d (%s)", s, i, ids[i], want[i],
                  got);
  free(ids);
}
#define EXPECT(t, s, ...)                                                                          \
  do {                                                                                             \
    const int32_t w_[] = {__VA_ARGS__};                                                            \
    expect_ids(t, s, sizeof(s) - 1, w_, (int)(sizeof w_ / sizeof w_[0]));                          \
  } while (0)

/* The pieces of encode(s) concatenated == want. */
static void expect_roundtrip(qat_tokenizer *t, const char *s, const char *want) {
  int32_t *ids;
  int64_t n;
  TU_REQUIRE_OK(qat_tokenizer_encode(t, s, strlen(s), 0, &ids, &n));
  size_t cap = 4 * strlen(s) + 16, w = 0;
  char *d = calloc(cap, 1);
  for (int64_t i = 0; i < n; i++) {
    const char *p = qat_tokenizer_piece(t, i ? ids[i - 1] : -1, ids[i]);
    ck_assert_uint_lt(w + strlen(p), cap);
    memcpy(d + w, p, strlen(p));
    w += strlen(p);
  }
  ck_assert_msg(w == strlen(want) && !memcmp(d, want, w), "round trip of \"%s\" gave \"%s\"", s,
                d);
  free(d);
  free(ids);
}

START_TEST(test_merge_order) {
  qat_tokenizer *t = load_json(base_json());
  EXPECT(t, "abc", 259);          /* b+c (rank 1) before a+b (rank 2), then a+bc (rank 3) */
  EXPECT(t, "abab", 258, 258);    /* both a+b */
  EXPECT(t, "aaa", 260, 'a');     /* a+a twice possible: the leftmost first */
  EXPECT(t, "aaaaa", 260, 260, 'a');
  EXPECT(t, "ab ab", 'a', 256, 258); /* one piece: b+" " (rank 0) beats a+b (rank 2) */
  EXPECT(t, "ca", 'c', 'a');      /* in the vocab, but no merge makes it */
  EXPECT(t, "xabcx", 'x', 259, 'x');
  EXPECT(t, "\xC3\xA9 ", 0xC3, 0xA9, ' '); /* bytes, not characters */
  ck_assert_int_eq(qat_tokenizer_vocab(t), 303);
  qat_tokenizer_free(t);
}
END_TEST

START_TEST(test_ignore_merges_and_gpt2_pattern) {
  cJSON *j = base_json();
  cJSON_ReplaceItemInObject(cJSON_GetObjectItem(j, "model"), "ignore_merges", cJSON_CreateTrue());
  qat_tokenizer *t = load_json(j);
  EXPECT(t, "ca", 261); /* the whole piece is a vocab entry */
  EXPECT(t, "abc", 259);
  EXPECT(t, "cab", 'c', 258);
  qat_tokenizer_free(t);
  j = base_json();
  cJSON_ReplaceItemInObject(j, "pre_tokenizer", byte_level(1));
  t = load_json(j);
  /* GPT-2's pattern splits "ab ab" into "ab", " ab": b+" " can no longer merge */
  EXPECT(t, "ab ab", 258, ' ', 258);
  EXPECT(t, "it's  ab", 'i', 't', '\'', 's', ' ', ' ', 258);
  qat_tokenizer_free(t);
  /* Split steps: \s means Unicode White_Space, as in Oniguruma: U+180E (E1 A0 8E) is not one,
   * so "b" + U+180E stays one piece and b + E1 merges */
  j = base_json();
  cJSON_ReplaceItemInObject(j, "pre_tokenizer", split_then_byte_level("\\s", "Isolated"));
  add_vocab(cJSON_GetObjectItem(model_of(j), "vocab"), "b\xE1", 262);
  add_merge(cJSON_GetObjectItem(model_of(j), "merges"), "b", "\xE1");
  t = load_json(j);
  EXPECT(t, "ab ab", 258, ' ', 258);
  EXPECT(t, "b\xE1\xA0\x8E", 262, 0xA0, 0x8E);
  EXPECT(t, "b\xC2\x85" "b\xE3\x80\x80", 'b', 0xC2, 0x85, 'b', 0xE3, 0x80, 0x80);
  qat_tokenizer_free(t);
  /* a "String" pattern is literal */
  j = base_json();
  cJSON *seq = split_then_byte_level(".", "Isolated");
  cJSON *pat = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(seq, "pretokenizers"), 0),
                                   "pattern");
  cJSON_DeleteItemFromObject(pat, "Regex");
  cJSON_AddStringToObject(pat, "String", ".");
  cJSON_ReplaceItemInObject(j, "pre_tokenizer", seq);
  t = load_json(j);
  EXPECT(t, "ab.ab", 258, '.', 258);
  qat_tokenizer_free(t);
}
END_TEST

START_TEST(test_added_tokens) {
  qat_tokenizer *t = load_json(base_json());
  EXPECT(t, "a<|s|>xb<|s|>", 'a', 301, 'b', 300); /* the longest at a position */
  EXPECT(t, "<|s|<|s|>>", '<', '|', 's', '|', 300, '>');
  EXPECT(t, "b<|s|> ab", 'b', 300, ' ', 258); /* no merge across a special token */
  /* an added token never reaches BPE, so qat_tokenizer_piece gives its content */
  expect_roundtrip(t, "x<|bos|>y<|s|>x", "x<|bos|>y<|s|>x");
  qat_tokenizer_free(t);
}
END_TEST

START_TEST(test_nfc_and_invalid_utf8) {
  cJSON *j = base_json();
  cJSON *nz = cJSON_CreateObject();
  cJSON_AddStringToObject(nz, "type", "NFC");
  cJSON_ReplaceItemInObject(j, "normalizer", nz);
  /* a normalized added token written decomposed matches the composed text */
  cJSON_AddItemToArray(cJSON_GetObjectItem(j, "added_tokens"), added(310, "e\xCC\x81t", 0, 1));
  qat_tokenizer *t = load_json(j);
  EXPECT(t, "e\xCC\x81", 0xC3, 0xA9);           /* e + U+0301 -> U+00E9 */
  EXPECT(t, "A\xCC\x8A" "b", 0xC3, 0x85, 'b');  /* A + ring -> U+00C5 */
  EXPECT(t, "\xC3\xA9t!", 310, '!');
  EXPECT(t, "e\xCC\x81t", 310);
  /* each gap between raw added tokens is normalized on its own */
  EXPECT(t, "e<|s|>\xCC\x81", 'e', 300, 0xCC, 0x81);
  /* invalid UTF-8: U+FFFD (EF BF BD) per maximal ill-formed subsequence */
  EXPECT(t, "\xFF" "a", 0xEF, 0xBF, 0xBD, 'a');
  EXPECT(t, "\xE2\x82" "a", 0xEF, 0xBF, 0xBD, 'a');
  EXPECT(t, "\xC0\xAF", 0xEF, 0xBF, 0xBD, 0xEF, 0xBF, 0xBD);
  EXPECT(t, "\xED\xA0\x80", 0xEF, 0xBF, 0xBD, 0xEF, 0xBF, 0xBD, 0xEF, 0xBF, 0xBD);
  EXPECT(t, "\xF0\x9F\x98", 0xEF, 0xBF, 0xBD);
  expect_roundtrip(t, "Cafe\xCC\x81 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x91\x8D\r\n\t x",
                   "Caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x91\x8D\r\n\t x");
  expect_roundtrip(t, "bad \xFF!", "bad \xEF\xBF\xBD!");
  qat_tokenizer_free(t);
}
END_TEST

START_TEST(test_pieces) {
  qat_tokenizer *t = load_json(base_json());
  ck_assert_str_eq(qat_tokenizer_piece(t, -1, 259), "abc");
  ck_assert_str_eq(qat_tokenizer_piece(t, -1, 256), "b ");
  ck_assert_str_eq(qat_tokenizer_piece(t, -1, ' '), " ");     /* U+0120 */
  ck_assert_str_eq(qat_tokenizer_piece(t, -1, '\n'), "\n");   /* U+010A */
  ck_assert_str_eq(qat_tokenizer_piece(t, -1, 0xE4), "\xE4"); /* part of a character */
  ck_assert_str_eq(qat_tokenizer_piece(t, -1, 301), "<|s|>x");
  ck_assert_str_eq(qat_tokenizer_piece(t, -1, 290), "");      /* a hole in the ids */
  ck_assert_str_eq(qat_tokenizer_piece(t, -1, 303), "");      /* out of range */
  ck_assert_str_eq(qat_tokenizer_piece(t, -1, -5), "");
  expect_roundtrip(t, " leading, trailing  \n\n", " leading, trailing  \n\n");
  qat_tokenizer_free(t);
}
END_TEST

static cJSON *template_bos(const char *name, int id) {
  cJSON *pp = cJSON_CreateObject(), *single = cJSON_CreateArray(), *it = cJSON_CreateObject();
  cJSON *st = cJSON_CreateObject(), *seq = cJSON_CreateObject(), *sp = cJSON_CreateObject();
  cJSON_AddStringToObject(pp, "type", "TemplateProcessing");
  cJSON_AddStringToObject(st, "id", name);
  cJSON_AddNumberToObject(st, "type_id", 0);
  cJSON_AddItemToObject(it, "SpecialToken", st);
  cJSON_AddItemToArray(single, it);
  cJSON *a = cJSON_CreateObject();
  cJSON_AddStringToObject(a, "id", "A");
  cJSON_AddNumberToObject(a, "type_id", 0);
  cJSON_AddItemToObject(seq, "Sequence", a);
  cJSON_AddItemToArray(single, seq);
  cJSON_AddItemToObject(pp, "single", single);
  cJSON *entry = cJSON_CreateObject(), *ids = cJSON_CreateArray();
  cJSON_AddStringToObject(entry, "id", name);
  cJSON_AddItemToArray(ids, cJSON_CreateNumber(id));
  cJSON_AddItemToObject(entry, "ids", ids);
  cJSON_AddItemToObject(sp, name, entry);
  cJSON_AddItemToObject(pp, "special_tokens", sp);
  return pp;
}

static qat_tokenizer *load_dir(void) {
  qat_tokenizer *t = NULL;
  TU_REQUIRE_OK(qat_tokenizer_load_dir(tu_dir(), 0, &t));
  return t;
}

START_TEST(test_bos_eos) {
  /* file alone: no template, no well-known names -> none; BOS is then never written */
  qat_tokenizer *t = load_json(base_json());
  ck_assert_int_eq(qat_tokenizer_bos(t), -1);
  ck_assert_int_eq(qat_tokenizer_eos(t), -1);
  int32_t *ids;
  int64_t n;
  TU_REQUIRE_OK(qat_tokenizer_encode(t, "ab", 2, 1, &ids, &n));
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(ids[0], 258);
  free(ids);
  TU_REQUIRE_OK(qat_tokenize_docs(t, "ab\n\nab", 6, "blank-line", "all", &ids, &n, &(int64_t){0}));
  ck_assert_int_eq(n, 2); /* documents concatenated */
  free(ids);
  qat_tokenizer_free(t);

  /* the template's BOS; EOS by name */
  cJSON *j = base_json();
  cJSON_ReplaceItemInObject(j, "post_processor", template_bos("<|bos|>", 302));
  cJSON_AddItemToArray(cJSON_GetObjectItem(j, "added_tokens"), added(305, "</s>", 1, 0));
  t = load_json(j);
  ck_assert_int_eq(qat_tokenizer_bos(t), 302);
  ck_assert_int_eq(qat_tokenizer_eos(t), 305);
  TU_REQUIRE_OK(qat_tokenizer_encode(t, "ab", 2, 1, &ids, &n));
  ck_assert_int_eq(n, 2);
  ck_assert_int_eq(ids[0], 302);
  free(ids);
  qat_tokenizer_free(t);

  /* config.json ids override the file's; tokenizer_config.json overrides config.json, and its
   * null means no BOS */
  tu_write_file(tmp_path("config.json"), "{\"bos_token_id\": 300, \"eos_token_id\": [301, 2]}", 48);
  t = load_dir();
  ck_assert_int_eq(qat_tokenizer_bos(t), 300);
  ck_assert_int_eq(qat_tokenizer_eos(t), 301);
  qat_tokenizer_free(t);
  const char *cfg = "{\"bos_token\": null, \"eos_token\": {\"content\": \"<|s|>x\"}}";
  tu_write_file(tmp_path("tokenizer_config.json"), cfg, strlen(cfg));
  t = load_dir();
  ck_assert_int_eq(qat_tokenizer_bos(t), -1);
  ck_assert_int_eq(qat_tokenizer_eos(t), 301);
  qat_tokenizer_free(t);
  cfg = "{\"bos_token\": \"ab\", \"eos_token\": \"<nope>\"}";
  tu_write_file(tmp_path("tokenizer_config.json"), cfg, strlen(cfg));
  t = NULL;
  ck_assert_int_ne(qat_tokenizer_load_dir(tu_dir(), 0, &t), QAT_OK);
  ck_assert_ptr_null(t);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "tokenizer_config.json: eos_token \"<nope>\""));
}
END_TEST

START_TEST(test_folder_preference_and_vocab_hint) {
  /* tokenizer.json before tokenizer.bin (a one-token llama2.c file: max_len 1, score 0, "a") */
  cJSON *j = base_json();
  write_json(tmp_path("tokenizer.json"), j);
  cJSON_Delete(j);
  tu_write_file(tmp_path("tokenizer.bin"), "\x01\0\0\0\0\0\0\0\x01\0\0\0a", 13);
  qat_tokenizer *t = load_dir();
  ck_assert_int_eq(qat_tokenizer_vocab(t), 303);
  qat_tokenizer_free(t);
  TU_REQUIRE_OK(qat_tokenizer_load_dir(tu_dir(), 303, &t)); /* ids must fit the model's vocab */
  qat_tokenizer_free(t);
  TU_REQUIRE_OK(qat_tokenizer_load_dir(tu_dir(), 400, &t)); /* padding rows are fine */
  qat_tokenizer_free(t);
  ck_assert_int_eq(qat_tokenizer_load_dir(tu_dir(), 302, &t), QAT_EINVAL);
  /* tokenizer.model before tokenizer.json (Llama-2 folders ship both) */
  const char *a = tu_assets();
  if (a) {
    char cmd[4600];
    snprintf(cmd, sizeof cmd, "cp '%s/tokenizers/llama2/tokenizer.model' '%s/'", a, tu_dir());
    ck_assert_int_eq(tu_run(cmd, NULL), 0);
    t = load_dir();
    ck_assert_int_eq(qat_tokenizer_vocab(t), 32000);
    ck_assert_int_eq(qat_tokenizer_bos(t), 1);
    qat_tokenizer_free(t);
  }
  /* by content: a UTF-8 BOM and whitespace before the object */
  j = base_json();
  char *body = cJSON_PrintUnformatted(j), *file = malloc(strlen(body) + 8);
  cJSON_Delete(j);
  sprintf(file, "\xEF\xBB\xBF\n  %s", body);
  tu_write_file(tmp_path("bom.json"), file, strlen(file));
  free(body);
  free(file);
  TU_REQUIRE_OK(qat_tokenizer_load(tmp_path("bom.json"), 0, &t));
  ck_assert_int_eq(qat_tokenizer_vocab(t), 303);
  qat_tokenizer_free(t);
}
END_TEST

/* Loading j (then freed) fails with status want and a message naming the file and `key`. */
static void expect_refused(cJSON *j, qat_status want, const char *key) {
  write_json(tmp_path("bad.json"), j);
  cJSON_Delete(j);
  qat_tokenizer *t = NULL;
  qat_status st = qat_tokenizer_load(tmp_path("bad.json"), 0, &t);
  const char *msg = qat_last_error();
  ck_assert_msg(st == want, "%s: status %s, want %s (%s)", key, qat_status_name(st),
                qat_status_name(want), msg);
  ck_assert_ptr_null(t);
  ck_assert_msg(strstr(msg, tmp_path("bad.json")) && strstr(msg, key),
                "message does not name the file and %s: %s", key, msg);
  ck_assert_ptr_null(strchr(msg, '\n'));
}

static cJSON *with(cJSON *j, cJSON *obj, const char *key, cJSON *v) {
  if (cJSON_GetObjectItem(obj, key))
    cJSON_ReplaceItemInObject(obj, key, v);
  else
    cJSON_AddItemToObject(obj, key, v);
  return j;
}


START_TEST(test_refused) {
  cJSON *j = base_json();
  char *body = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  tu_write_file(tmp_path("bad.json"), body, strlen(body) / 2); /* truncated */
  free(body);
  qat_tokenizer *t = NULL;
  ck_assert_int_eq(qat_tokenizer_load(tmp_path("bad.json"), 0, &t), QAT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "not valid JSON"));

  j = base_json();
  expect_refused(with(j, model_of(j), "type", cJSON_CreateString("Unigram")), QAT_EUNSUPPORTED,
                 "model.type \"Unigram\"");
  j = base_json();
  cJSON_AddItemToArray(cJSON_GetObjectItem(model_of(j), "merges"), cJSON_CreateString("a zz"));
  expect_refused(j, QAT_EFORMAT, "model.merges[5]: \"zz\" is not in model.vocab");
  j = base_json(); /* both symbols known, their concatenation not */
  cJSON_AddItemToArray(cJSON_GetObjectItem(model_of(j), "merges"), cJSON_CreateString("c b"));
  expect_refused(j, QAT_EFORMAT, "model.merges[5]: \"cb\"");
  j = base_json();
  cJSON_AddItemToArray(cJSON_GetObjectItem(model_of(j), "merges"), cJSON_CreateString("ab"));
  expect_refused(j, QAT_EFORMAT, "model.merges[5]");
  j = base_json();
  expect_refused(with(j, model_of(j), "dropout", cJSON_CreateNumber(0.1)), QAT_EUNSUPPORTED,
                 "model.dropout");
  j = base_json();
  expect_refused(with(j, model_of(j), "byte_fallback", cJSON_CreateString("yes")), QAT_EFORMAT,
                 "model.byte_fallback is not a boolean");
  j = base_json();
  expect_refused(with(j, model_of(j), "continuing_subword_prefix", cJSON_CreateString("##")),
                 QAT_EUNSUPPORTED, "model.continuing_subword_prefix");
  j = base_json();
  expect_refused(with(j, model_of(j), "end_of_word_suffix", cJSON_CreateString("</w>")),
                 QAT_EUNSUPPORTED, "model.end_of_word_suffix");
  j = base_json();
  expect_refused(with(j, model_of(j), "unk_token", cJSON_CreateString("<unk>")), QAT_EFORMAT,
                 "model.unk_token");
  j = base_json();
  cJSON_AddNumberToObject(cJSON_GetObjectItem(model_of(j), "vocab"), "neg", -3);
  expect_refused(j, QAT_EFORMAT, "model.vocab[\"neg\"]");
  j = base_json();
  expect_refused(with(j, j, "normalizer", typed("NFKC")), QAT_EUNSUPPORTED,
                 "normalizer.type \"NFKC\"");
  j = base_json();
  expect_refused(with(j, j, "pre_tokenizer", typed("Whitespace")), QAT_EUNSUPPORTED,
                 "pre_tokenizer.type \"Whitespace\"");
  j = base_json();
  expect_refused(with(j, j, "pre_tokenizer", typed("BertPreTokenizer")), QAT_EUNSUPPORTED,
                 "pre_tokenizer.type \"BertPreTokenizer\"");
  j = base_json();
  cJSON *bl1 = byte_level(0);
  cJSON_ReplaceItemInObject(bl1, "add_prefix_space", cJSON_CreateNumber(1));
  expect_refused(with(j, j, "pre_tokenizer", bl1), QAT_EFORMAT,
                 "pre_tokenizer.add_prefix_space is not a boolean");
  j = base_json();
  expect_refused(with(j, j, "pre_tokenizer", split_then_byte_level("\\s+", "Sideways")),
                 QAT_EFORMAT, "pre_tokenizer.pretokenizers[0].behavior \"Sideways\"");
  j = base_json();
  cJSON *ms = typed("Metaspace");
  cJSON_AddStringToObject(ms, "replacement", "\xE2\x96\x81");
  cJSON_AddStringToObject(ms, "prepend_scheme", "sometimes");
  expect_refused(with(j, j, "pre_tokenizer", ms), QAT_EFORMAT,
                 "pre_tokenizer.prepend_scheme \"sometimes\"");
  j = base_json();
  ms = typed("Metaspace");
  cJSON_AddStringToObject(ms, "replacement", "ab");
  expect_refused(with(j, j, "pre_tokenizer", ms), QAT_EFORMAT,
                 "pre_tokenizer.replacement is not one character");
  j = base_json();
  expect_refused(with(j, j, "decoder", typed("WordPiece")), QAT_EUNSUPPORTED,
                 "decoder.type \"WordPiece\"");
  j = base_json();
  cJSON *seq = typed("Sequence"), *nl = cJSON_CreateArray();
  cJSON_AddItemToArray(nl, typed("NFC"));
  cJSON_AddItemToArray(nl, typed("Precompiled"));
  cJSON_AddItemToObject(seq, "normalizers", nl);
  expect_refused(with(j, j, "normalizer", seq), QAT_EUNSUPPORTED,
                 "normalizer.normalizers[1].type \"Precompiled\"");
  j = base_json(); /* two special tokens before $A */
  cJSON *pp = template_bos("<|bos|>", 302);
  cJSON_AddItemToArray(cJSON_GetObjectItem(pp, "single"),
                       cJSON_Duplicate(cJSON_GetArrayItem(cJSON_GetObjectItem(pp, "single"), 0), 1));
  cJSON *single = cJSON_GetObjectItem(pp, "single");
  cJSON_InsertItemInArray(single, 0, cJSON_DetachItemFromArray(single, 2));
  expect_refused(with(j, j, "post_processor", pp), QAT_EUNSUPPORTED,
                 "post_processor.single: more than one special token before $A");
  j = base_json();
  expect_refused(with(j, j, "pre_tokenizer", split_then_byte_level("(a", "Isolated")), QAT_EFORMAT,
                 "pre_tokenizer.pretokenizers[0]: pattern does not compile");
  j = base_json();
  cJSON *lst = added(320, "<x>", 1, 0);
  cJSON_ReplaceItemInObject(lst, "lstrip", cJSON_CreateTrue());
  cJSON_AddItemToArray(cJSON_GetObjectItem(j, "added_tokens"), lst);
  expect_refused(j, QAT_EUNSUPPORTED, "added_tokens[3].lstrip");
  j = base_json();
  cJSON_DeleteItemFromObject(j, "model");
  expect_refused(j, QAT_EFORMAT, "no \"model\" object");
}
END_TEST

/* A byte with no symbol in the vocab: an error naming the piece without unk_token, unk with it
 * (consecutive ones fused with fuse_unk). */
START_TEST(test_missing_byte_symbol) {
  cJSON *j = base_json();
  char z[3];
  byte_char('z', z);
  cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItem(model_of(j), "vocab"), z);
  qat_tokenizer *t = load_json(cJSON_Duplicate(j, 1));
  int32_t *ids;
  int64_t n;
  ck_assert_int_eq(qat_tokenizer_encode(t, "azz", 3, 0, &ids, &n), QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "byte 0x7A of piece \"azz\""));
  qat_tokenizer_free(t);
  cJSON_ReplaceItemInObject(model_of(j), "unk_token", cJSON_CreateString("ca"));
  t = load_json(cJSON_Duplicate(j, 1));
  EXPECT(t, "azza", 'a', 261, 261, 'a');
  qat_tokenizer_free(t);
  cJSON_ReplaceItemInObject(model_of(j), "fuse_unk", cJSON_CreateTrue());
  t = load_json(j);
  EXPECT(t, "azza", 'a', 261, 'a');
  qat_tokenizer_free(t);
}
END_TEST

/* SentencePiece-style: characters (no byte-level alphabet), byte_fallback, unk, decoders.
 * Ids: <unk> 0, a 1, <0xC3> 2, <0xA9> 3, b 4, ab 5 (merge a b), \xE2\x96\x81 (U+2581) 6,
 * U+2581 a 7 (merge U+2581 a), <s> 8 (special), </s> 9 (special). */
static cJSON *spm_json(int fuse_unk) {
  cJSON *j = base_json(), *model = model_of(j), *vocab = cJSON_CreateObject();
  cJSON *merges = cJSON_CreateArray(), *add = cJSON_CreateArray();
  static const char *const toks[] = {"<unk>", "a", "<0xC3>", "<0xA9>", "b", "ab", "\xE2\x96\x81",
                                     "\xE2\x96\x81" "a", "<s>", "</s>"};
  for (int i = 0; i < 10; i++) cJSON_AddNumberToObject(vocab, toks[i], i);
  cJSON_ReplaceItemInObject(model, "vocab", vocab);
  static const char *const m[][2] = {{"a", "b"}, {"\xE2\x96\x81", "a"}};
  for (int i = 0; i < 2; i++) {
    cJSON *p = cJSON_CreateArray();
    cJSON_AddItemToArray(p, cJSON_CreateString(m[i][0]));
    cJSON_AddItemToArray(p, cJSON_CreateString(m[i][1]));
    cJSON_AddItemToArray(merges, p);
  }
  cJSON_ReplaceItemInObject(model, "merges", merges);
  cJSON_ReplaceItemInObject(model, "unk_token", cJSON_CreateString("<unk>"));
  cJSON_ReplaceItemInObject(model, "fuse_unk", cJSON_CreateBool(fuse_unk));
  cJSON_ReplaceItemInObject(model, "byte_fallback", cJSON_CreateTrue());
  cJSON_AddItemToArray(add, added(8, "<s>", 1, 0));
  cJSON_AddItemToArray(add, added(9, "</s>", 1, 0));
  cJSON_ReplaceItemInObject(j, "added_tokens", add);
  cJSON_ReplaceItemInObject(j, "pre_tokenizer", cJSON_CreateNull());
  return j;
}

/* tokenizers' BPE::merge_word: a missing character becomes its <0xNN> tokens when all exist,
 * else <unk> (fused when fuse_unk); byte tokens are added *before* a pending unk is flushed
 * ("x\u00e9" -> <0xC3> <0xA9> <unk>). Checked against tokenizers 0.23 by hand. */
START_TEST(test_byte_fallback) {
  qat_tokenizer *t = load_json(spm_json(1));
  EXPECT(t, "a\xC3\xA9xxa", 1, 2, 3, 0, 1);
  EXPECT(t, "x\xC3\xA9", 2, 3, 0);
  EXPECT(t, "xxab", 0, 5);
  EXPECT(t, "\xC3\xA9" "ab", 2, 3, 5);
  /* no decoder: pieces are the vocab strings */
  ck_assert_str_eq(qat_tokenizer_piece(t, -1, 2), "<0xC3>");
  qat_tokenizer_free(t);
  t = load_json(spm_json(0));
  EXPECT(t, "a\xC3\xA9xxa", 1, 2, 3, 0, 0, 1);
  EXPECT(t, "xxab", 0, 0, 5);
  qat_tokenizer_free(t);

  /* Llama-2's HF layout: Prepend + Replace normalizer, decoder Replace, ByteFallback, Fuse,
   * Strip(1 left): " ab" -> "\u2581\u2581ab" -> [6, 6, 5] (a b merges first); pieces strip the
   * first space. Ids as tokenizers 0.23 gives them. */
  cJSON *j = spm_json(1), *nz = typed("Sequence"), *nl = cJSON_CreateArray();
  cJSON *pre = typed("Prepend"), *rp = typed("Replace"), *pat = cJSON_CreateObject();
  cJSON_AddStringToObject(pre, "prepend", "\xE2\x96\x81");
  cJSON_AddStringToObject(pat, "String", " ");
  cJSON_AddItemToObject(rp, "pattern", pat);
  cJSON_AddStringToObject(rp, "content", "\xE2\x96\x81");
  cJSON_AddItemToArray(nl, pre);
  cJSON_AddItemToArray(nl, rp);
  cJSON_AddItemToObject(nz, "normalizers", nl);
  cJSON_ReplaceItemInObject(j, "normalizer", nz);
  cJSON *dec = typed("Sequence"), *dl = cJSON_CreateArray(), *drp = cJSON_Duplicate(rp, 1);
  cJSON_ReplaceItemInObject(cJSON_GetObjectItem(drp, "pattern"), "String",
                            cJSON_CreateString("\xE2\x96\x81"));
  cJSON_ReplaceItemInObject(drp, "content", cJSON_CreateString(" "));
  cJSON *strip = typed("Strip");
  cJSON_AddStringToObject(strip, "content", " ");
  cJSON_AddNumberToObject(strip, "start", 1);
  cJSON_AddNumberToObject(strip, "stop", 0);
  cJSON_AddItemToArray(dl, drp);
  cJSON_AddItemToArray(dl, typed("ByteFallback"));
  cJSON_AddItemToArray(dl, typed("Fuse"));
  cJSON_AddItemToArray(dl, strip);
  cJSON_AddItemToObject(dec, "decoders", dl);
  cJSON_ReplaceItemInObject(j, "decoder", dec);
  t = load_json(j);
  EXPECT(t, " ab", 6, 6, 5);
  EXPECT(t, "a ab\xC3\xA9 b", 7, 6, 5, 2, 3, 6, 4);
  EXPECT(t, "a<s>a", 7, 8, 7); /* Prepend applies to each gap between added tokens */
  EXPECT(t, "\xC3\xA9", 6, 2, 3);
  ck_assert_str_eq(qat_tokenizer_piece(t, -1, 7), "a");       /* the text's first token */
  ck_assert_str_eq(qat_tokenizer_piece(t, 8, 7), "a");        /* after the BOS (<s> by name) */
  ck_assert_str_eq(qat_tokenizer_piece(t, 1, 7), " a");       /* mid-text */
  ck_assert_str_eq(qat_tokenizer_piece(t, 7, 2), "\xC3");     /* <0xC3> -> the byte */
  ck_assert_str_eq(qat_tokenizer_piece(t, 7, 6), " ");
  expect_roundtrip(t, "a ab\xC3\xA9 b", "a ab\xC3\xA9 b");
  qat_tokenizer_free(t);
}
END_TEST

/* tokenizer_config.json's add_bos_token / add_eos_token over the template and the names. */
START_TEST(test_add_bos_eos) {
  cJSON *j = spm_json(1), *pp = template_bos("<s>", 8);
  cJSON *tail = cJSON_CreateObject(), *st = cJSON_CreateObject(), *ent = cJSON_CreateObject();
  cJSON_AddStringToObject(st, "id", "</s>");
  cJSON_AddNumberToObject(st, "type_id", 0);
  cJSON_AddItemToObject(tail, "SpecialToken", st);
  cJSON_AddItemToArray(cJSON_GetObjectItem(pp, "single"), tail); /* <s> $A </s> */
  cJSON *ids = cJSON_CreateArray();
  cJSON_AddItemToArray(ids, cJSON_CreateNumber(9));
  cJSON_AddStringToObject(ent, "id", "</s>");
  cJSON_AddItemToObject(ent, "ids", ids);
  cJSON_AddItemToObject(cJSON_GetObjectItem(pp, "special_tokens"), "</s>", ent);
  cJSON_ReplaceItemInObject(j, "post_processor", pp);
  qat_tokenizer *t = load_json(j); /* the file alone: the template says both */
  ck_assert_int_eq(qat_tokenizer_bos(t), 8);
  ck_assert_int_eq(qat_tokenizer_eos(t), 9);
  ck_assert_int_eq(qat_tokenizer_doc_eos(t), 9);
  int32_t *v;
  int64_t n, nd;
  TU_REQUIRE_OK(qat_tokenize_docs(t, "a\n\nb", 4, "blank-line", "all", &v, &n, &nd));
  const int32_t want[] = {8, 1, 9, 8, 4, 9}; /* <s> a </s> <s> b </s> */
  ck_assert_int_eq(n, 6);
  for (int i = 0; i < 6; i++) ck_assert_int_eq(v[i], want[i]);
  qat_tokenizer_free(t);
  free(v);

  /* the folder: add_eos_token false drops the template's EOS (still the stop token) */
  const char *cfg = "{\"add_bos_token\": true, \"add_eos_token\": false}";
  tu_write_file(tmp_path("tokenizer_config.json"), cfg, strlen(cfg));
  t = load_dir();
  ck_assert_int_eq(qat_tokenizer_bos(t), 8);
  ck_assert_int_eq(qat_tokenizer_eos(t), 9);
  ck_assert_int_eq(qat_tokenizer_doc_eos(t), -1);
  qat_tokenizer_free(t);
  /* add_bos_token false: no BOS although one is named (SmolLM2, Qwen2) */
  cfg = "{\"add_bos_token\": false, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}";
  tu_write_file(tmp_path("tokenizer_config.json"), cfg, strlen(cfg));
  t = load_dir();
  ck_assert_int_eq(qat_tokenizer_bos(t), -1);
  ck_assert_int_eq(qat_tokenizer_doc_eos(t), 9); /* the template's, add_eos_token unsaid */
  TU_REQUIRE_OK(qat_tokenizer_encode(t, "a", 1, 1, &v, &n));
  ck_assert_int_eq(n, 1); /* qat_tokenizer_encode never appends the EOS */
  ck_assert_int_eq(v[0], 1);
  free(v);
  qat_tokenizer_free(t);
  /* no template: add_eos_token true appends the named EOS; a template with nothing before $A
   * and no add_bos_token: no BOS */
  j = spm_json(1);
  pp = template_bos("<s>", 8);
  cJSON_DeleteItemFromArray(cJSON_GetObjectItem(pp, "single"), 0); /* $A */
  cJSON_ReplaceItemInObject(j, "post_processor", pp);
  write_json(tmp_path("tokenizer.json"), j);
  cJSON_Delete(j);
  cfg = "{\"add_eos_token\": true, \"eos_token\": {\"content\": \"</s>\"}}";
  tu_write_file(tmp_path("tokenizer_config.json"), cfg, strlen(cfg));
  t = load_dir();
  ck_assert_int_eq(qat_tokenizer_bos(t), -1);
  ck_assert_int_eq(qat_tokenizer_doc_eos(t), 9);
  qat_tokenizer_free(t);
}
END_TEST

/* --roundtrip DIR TEXT OUT */
static int roundtrip(const char *dir, const char *in, const char *out) {
  qat_tokenizer *t = NULL;
  char *text = NULL;
  size_t len;
  int32_t *ids = NULL;
  int64_t n = 0;
  qat_status st = qat_tokenizer_load_dir(dir, 0, &t);
  if (st == QAT_OK) st = qat_read_file(in, &text, &len);
  if (st == QAT_OK) st = qat_tokenizer_encode(t, text, len, 0, &ids, &n);
  FILE *f = st == QAT_OK ? fopen(out, "wb") : NULL;
  if (st != QAT_OK || !f) {
    fprintf(stderr, "roundtrip: %s\n", st != QAT_OK ? qat_last_error() : out);
    return 1;
  }
  for (int64_t i = 0; i < n; i++) fputs(qat_tokenizer_piece(t, i ? ids[i - 1] : -1, ids[i]), f);
  fclose(f);
  printf("roundtrip: %lld tokens decoded\n", (long long)n);
  free(ids);
  free(text);
  qat_tokenizer_free(t);
  return 0;
}

/* --cases DIR INP OUT */
static int cases(const char *dir, const char *in, const char *out) {
  static const char sep[] = "\n__ggml_vocab_test__\n";
  qat_tokenizer *t = NULL;
  char *text = NULL;
  size_t len;
  qat_status st = qat_tokenizer_load_dir(dir, 0, &t);
  if (st == QAT_OK) st = qat_read_file(in, &text, &len);
  FILE *f = st == QAT_OK ? fopen(out, "w") : NULL;
  if (!f) {
    fprintf(stderr, "cases: %s\n", st != QAT_OK ? qat_last_error() : out);
    return 1;
  }
  int ncase = 0;
  for (size_t a = 0; a < len && st == QAT_OK; ncase++) {
    const char *e = memmem(text + a, len - a, sep, sizeof sep - 1);
    size_t b = e ? (size_t)(e - text) : len;
    int32_t *ids = NULL;
    int64_t n = 0;
    st = qat_tokenizer_encode(t, text + a, b - a, 0, &ids, &n);
    for (int64_t i = 0; i < n; i++) fprintf(f, " %d", ids[i]);
    fputc('\n', f);
    free(ids);
    a = e ? b + sizeof sep - 1 : len;
  }
  fclose(f);
  if (st != QAT_OK) fprintf(stderr, "cases: %s\n", qat_last_error());
  printf("cases: %d encoded\n", ncase);
  free(text);
  qat_tokenizer_free(t);
  return st == QAT_OK ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc == 5 && !strcmp(argv[1], "--roundtrip")) return roundtrip(argv[2], argv[3], argv[4]);
  if (argc == 5 && !strcmp(argv[1], "--cases")) return cases(argv[2], argv[3], argv[4]);
  Suite *s = suite_create("tokenizer_hf");
  TCase *tc = tcase_create("tokenizer_hf");
  tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
  tcase_add_test(tc, test_merge_order);
  tcase_add_test(tc, test_ignore_merges_and_gpt2_pattern);
  tcase_add_test(tc, test_added_tokens);
  tcase_add_test(tc, test_nfc_and_invalid_utf8);
  tcase_add_test(tc, test_pieces);
  tcase_add_test(tc, test_bos_eos);
  tcase_add_test(tc, test_folder_preference_and_vocab_hint);
  tcase_add_test(tc, test_refused);
  tcase_add_test(tc, test_missing_byte_symbol);
  tcase_add_test(tc, test_byte_fallback);
  tcase_add_test(tc, test_add_bos_eos);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
