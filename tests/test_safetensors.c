/* safetensors reader / writer: round trips of every dtype (bytes identical, layout checked
 * against the format independently: 8-byte header length, space padding, contiguous data in
 * insertion order, __metadata__ first), scalars and zero-size tensors, F16/BF16 -> F32 against
 * exact known encodings, sharded folders, and a corpus of malformed files crafted byte by byte
 * (plus random mutations of a good file), each of which must fail with QAT_EFORMAT (or
 * QAT_EUNSUPPORTED for an unknown dtype) naming the file, leaving nothing open. */
#include "io/fsutil.h"
#include "io/safetensors.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


static void path(char *buf, const char *name) { snprintf(buf, 4096, "%s", tu_dir_path(name)); }

/* A raw file: the 8-byte little-endian length hlen, then body (body_len bytes). */
static void put_raw(const char *p, uint64_t hlen, const void *body, size_t body_len) {
  FILE *f = fopen(p, "wb");
  ck_assert_ptr_nonnull(f);
  unsigned char lb[8];
  for (int i = 0; i < 8; i++)
    lb[i] = (unsigned char)(hlen >> (8 * i));
  ck_assert_uint_eq(fwrite(lb, 1, 8, f), 8);
  if (body_len) ck_assert_uint_eq(fwrite(body, 1, body_len, f), body_len);
  fclose(f);
}

/* A well-formed length for header text json followed by ndata zero bytes of data. */
static void put_st(const char *p, const char *json, size_t ndata) {
  size_t hl = strlen(json);
  char *body = calloc(1, hl + ndata + 1);
  memcpy(body, json, hl);
  put_raw(p, hl, body, hl + ndata);
  free(body);
}

static void *read_all(const char *p, size_t *len) {
  char *d;
  TU_REQUIRE_OK(qat_read_file(p, &d, len));
  return d;
}

START_TEST(test_roundtrip_all_dtypes) {
  char p[4096];
  path(p, "all.safetensors");
  /* shapes of every rank 1..4 with odd sizes, so offsets are not all multiples of 8 */
  static const int64_t shapes[][4] = {{7}, {3, 5}, {2, 3, 5}, {1, 3, 1, 3}, {13}};
  static const int ranks[] = {1, 2, 3, 4, 1};
  tu_rng r = {7};
  qat_st_writer w;
  qat_st_writer_init(&w);
  TU_REQUIRE_OK(qat_st_writer_meta(&w, "format", "pt"));
  TU_REQUIRE_OK(qat_st_writer_meta(&w, "note", "quotes \" and \\ and \xc3\xa9"));
  void *bufs[QAT_DTYPE_COUNT];
  char names[QAT_DTYPE_COUNT][64];
  size_t sizes[QAT_DTYPE_COUNT];
  for (int d = 0; d < QAT_DTYPE_COUNT; d++) {
    int k = d % 5;
    int64_t numel = 1;
    for (int i = 0; i < ranks[k]; i++)
      numel *= shapes[k][i];
    sizes[d] = (size_t)numel * qat_dtype_size((qat_dtype)d);
    bufs[d] = malloc(sizes[d]);
    for (size_t i = 0; i < sizes[d]; i++)
      ((unsigned char *)bufs[d])[i] = (unsigned char)tu_next(&r);
    /* names sort differently from insertion order: order must follow insertion */
    snprintf(names[d], sizeof names[d], "layers.%d.w_%s", QAT_DTYPE_COUNT - d,
             qat_dtype_name((qat_dtype)d));
    TU_REQUIRE_OK(qat_st_writer_add(&w, names[d], (qat_dtype)d, ranks[k], shapes[k], bufs[d]));
  }
  TU_REQUIRE_OK(qat_st_write(&w, p));
  qat_st_writer_free(&w);

  /* layout, checked on the raw bytes */
  size_t flen;
  unsigned char *raw = read_all(p, &flen);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = hlen << 8 | raw[i];
  ck_assert_uint_eq(hlen % 8, 0);
  size_t total = 0;
  for (int d = 0; d < QAT_DTYPE_COUNT; d++)
    total += sizes[d];
  ck_assert_uint_eq(flen, 8 + hlen + total);
  cJSON *h = cJSON_ParseWithLength((char *)raw + 8, hlen); /* padding is spaces: valid JSON */
  ck_assert_ptr_nonnull(h);
  const cJSON *c = h->child;
  ck_assert_str_eq(c->string, "__metadata__");
  uint64_t off = 0;
  for (int d = 0; d < QAT_DTYPE_COUNT; d++) {
    c = c->next;
    ck_assert_str_eq(c->string, names[d]);
    const cJSON *o = cJSON_GetObjectItem(c, "data_offsets");
    ck_assert_uint_eq((uint64_t)o->child->valuedouble, off);
    off += sizes[d];
    ck_assert_uint_eq((uint64_t)o->child->next->valuedouble, off);
    ck_assert_int_eq(memcmp(raw + 8 + hlen + off - sizes[d], bufs[d], sizes[d]), 0);
  }
  cJSON_Delete(h);
  free(raw);

  /* and through the reader */
  qat_st_file f;
  TU_REQUIRE_OK(qat_st_open(p, &f));
  ck_assert_int_eq(f.n, QAT_DTYPE_COUNT);
  ck_assert_int_eq(f.nmeta, 2);
  ck_assert_str_eq(qat_st_meta(&f, "format"), "pt");
  ck_assert_str_eq(qat_st_meta(&f, "note"), "quotes \" and \\ and \xc3\xa9");
  ck_assert_ptr_null(qat_st_meta(&f, "absent"));
  for (int d = 0; d < QAT_DTYPE_COUNT; d++) {
    const qat_st_tensor *t = &f.tensors[d];
    ck_assert_str_eq(t->name, names[d]);
    ck_assert_ptr_eq(qat_st_find(&f, names[d]), t);
    ck_assert_int_eq(t->dtype, d);
    int k = d % 5;
    ck_assert_int_eq(t->ndim, ranks[k]);
    for (int i = 0; i < ranks[k]; i++)
      ck_assert_int_eq(t->shape[i], shapes[k][i]);
    ck_assert_uint_eq(t->end - t->begin, sizes[d]);
    ck_assert_int_eq(memcmp(t->data, bufs[d], sizes[d]), 0);
    free(bufs[d]);
  }
  ck_assert_ptr_null(qat_st_find(&f, "nope"));
  qat_st_close(&f);
  ck_assert_ptr_null(f.map);
  ck_assert_int_eq(f.n, 0);
}
END_TEST

START_TEST(test_scalar_and_empty) {
  char p[4096];
  path(p, "se.safetensors");
  float s = 3.25f;
  int32_t dummy = 0;
  qat_st_writer w;
  qat_st_writer_init(&w);
  TU_REQUIRE_OK(qat_st_writer_add(&w, "scalar", QAT_F32, 0, NULL, &s));
  TU_REQUIRE_OK(qat_st_writer_add(&w, "empty", QAT_I32, 2, (int64_t[]){0, 3}, &dummy));
  TU_REQUIRE_OK(qat_st_writer_add(&w, "empty_null", QAT_BF16, 1, (int64_t[]){0}, NULL));
  TU_REQUIRE_OK(qat_st_write(&w, p));
  qat_st_writer_free(&w);
  qat_st_file f;
  TU_REQUIRE_OK(qat_st_open(p, &f));
  ck_assert_int_eq(f.n, 3);
  ck_assert_int_eq(f.nmeta, 0);
  const qat_st_tensor *t = qat_st_find(&f, "scalar");
  ck_assert_int_eq(t->ndim, 0);
  ck_assert_int_eq(qat_st_numel(t), 1);
  float got;
  TU_REQUIRE_OK(qat_st_read_f32(t, &got));
  ck_assert_float_eq(got, 3.25f);
  t = qat_st_find(&f, "empty");
  ck_assert_int_eq(t->ndim, 2);
  ck_assert_int_eq(qat_st_numel(t), 0);
  ck_assert_uint_eq(t->begin, t->end);
  t = qat_st_find(&f, "empty_null");
  ck_assert_int_eq(qat_st_numel(t), 0);
  TU_REQUIRE_OK(qat_st_read_f32(t, &got)); /* nothing to copy */
  qat_st_close(&f);

  /* a file with no tensors at all */
  qat_st_writer_init(&w);
  TU_REQUIRE_OK(qat_st_write(&w, p));
  TU_REQUIRE_OK(qat_st_open(p, &f));
  ck_assert_int_eq(f.n, 0);
  qat_st_close(&f);
}
END_TEST

START_TEST(test_convert_f32) {
  char p[4096];
  path(p, "conv.safetensors");
  /* exact encodings and the values they stand for (IEEE 754 binary16 / bfloat16) */
  const uint16_t h[] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x3555, 0x8000, 0x0400};
  const float hv[] = {1.0f,  -2.0f,           65504.0f, 5.9604644775390625e-08f, 0.333251953125f,
                      -0.0f, 6.103515625e-05f};
  const uint16_t b[] = {0x3f80, 0xc060, 0x4049, 0x0001, 0x7f7f};
  const float bv[] = {1.0f, -3.5f, 3.140625f, 9.183549615799121e-41f, 3.3895313892515355e+38f};
  const float fv[] = {1.5f, -1e-30f, 123456.789f};
  int32_t iv[] = {1, 2};
  qat_st_writer w;
  qat_st_writer_init(&w);
  TU_REQUIRE_OK(qat_st_writer_add(&w, "h", QAT_F16, 1, (int64_t[]){7}, h));
  TU_REQUIRE_OK(qat_st_writer_add(&w, "b", QAT_BF16, 1, (int64_t[]){5}, b));
  TU_REQUIRE_OK(qat_st_writer_add(&w, "f", QAT_F32, 1, (int64_t[]){3}, fv));
  TU_REQUIRE_OK(qat_st_writer_add(&w, "i", QAT_I32, 1, (int64_t[]){2}, iv));
  TU_REQUIRE_OK(qat_st_write(&w, p));
  qat_st_writer_free(&w);
  qat_st_file f;
  TU_REQUIRE_OK(qat_st_open(p, &f));
  float out[8];
  TU_REQUIRE_OK(qat_st_read_f32(qat_st_find(&f, "h"), out));
  for (int i = 0; i < 7; i++)
    ck_assert_float_eq(out[i], hv[i]); /* exact: every half is a float */
  ck_assert(signbit(out[5]));
  TU_REQUIRE_OK(qat_st_read_f32(qat_st_find(&f, "b"), out));
  for (int i = 0; i < 5; i++)
    ck_assert_float_eq(out[i], bv[i]);
  TU_REQUIRE_OK(qat_st_read_f32(qat_st_find(&f, "f"), out));
  for (int i = 0; i < 3; i++)
    ck_assert_float_eq(out[i], fv[i]);
  ck_assert_int_eq(qat_st_read_f32(qat_st_find(&f, "i"), out), QAT_EUNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "\"i\""));
  qat_st_close(&f);

  /* another writer's file with a 16-bit tensor at an odd address: still read exactly */
  path(p, "odd.safetensors");
  const char *js = "{\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                   "\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[1,5]}}";
  size_t hl = strlen(js), pad = (8 - hl % 8) % 8; /* data starts 8-aligned, so "h" sits at +1 */
  unsigned char body[512];
  memcpy(body, js, hl);
  memset(body + hl, ' ', pad);
  const unsigned char data[] = {9, 0x00, 0x3c, 0x00, 0xc0}; /* u8 9; half 1.0, -2.0 */
  memcpy(body + hl + pad, data, sizeof data);
  put_raw(p, hl + pad, body, hl + pad + sizeof data);
  TU_REQUIRE_OK(qat_st_open(p, &f));
  const qat_st_tensor *t = qat_st_find(&f, "h");
  ck_assert_uint_eq((uintptr_t)t->data & 1, 1);
  TU_REQUIRE_OK(qat_st_read_f32(t, out));
  ck_assert_float_eq(out[0], 1.0f);
  ck_assert_float_eq(out[1], -2.0f);
  qat_st_close(&f);
}
END_TEST

/* Names of 1..8 characters shift the JSON length through every residue mod 8: the header is
 * always padded with spaces to a multiple of 8, so the data starts 8-byte aligned. */
START_TEST(test_header_padding) {
  char p[4096], name[16];
  path(p, "pad.safetensors");
  double x = 1.5;
  for (int len = 1; len <= 8; len++) {
    memset(name, 'n', (size_t)len);
    name[len] = 0;
    qat_st_writer w;
    qat_st_writer_init(&w);
    TU_REQUIRE_OK(qat_st_writer_add(&w, name, QAT_I64, 1, (int64_t[]){1}, &x));
    TU_REQUIRE_OK(qat_st_write(&w, p));
    qat_st_writer_free(&w);
    size_t flen;
    unsigned char *raw = read_all(p, &flen);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
      hlen = hlen << 8 | raw[i];
    ck_assert_uint_eq(hlen % 8, 0);
    ck_assert_uint_eq(flen, 8 + hlen + 8);
    ck_assert_int_eq(raw[8], '{');
    size_t k = 8 + hlen; /* back over the padding: spaces, then the closing brace */
    while (raw[k - 1] == ' ')
      k--;
    ck_assert_int_eq(raw[k - 1], '}');
    ck_assert_uint_lt(8 + hlen - k, 8);
    ck_assert_int_eq(memcmp(raw + 8 + hlen, &x, 8), 0);
    free(raw);
    qat_st_file f;
    TU_REQUIRE_OK(qat_st_open(p, &f));
    ck_assert_uint_eq((uintptr_t)f.tensors[0].data % 8, 0);
    qat_st_close(&f);
  }
}
END_TEST

START_TEST(test_writer_errors) {
  char p[4096];
  float x[4] = {0};
  qat_st_writer w;
  qat_st_writer_init(&w);
  TU_REQUIRE_OK(qat_st_writer_add(&w, "a", QAT_F32, 1, (int64_t[]){4}, x));
  ck_assert_int_eq(qat_st_writer_add(&w, "a", QAT_F32, 1, (int64_t[]){4}, x), QAT_EINVAL);
  ck_assert_int_eq(qat_st_writer_add(&w, "r5", QAT_F32, 5, (int64_t[]){1, 1, 1, 1, 1}, x),
                   QAT_EINVAL);
  ck_assert_int_eq(qat_st_writer_add(&w, "neg", QAT_F32, 1, (int64_t[]){-1}, x), QAT_EINVAL);
  ck_assert_int_eq(qat_st_writer_add(&w, "__metadata__", QAT_F32, 1, (int64_t[]){4}, x),
                   QAT_EINVAL);
  ck_assert_int_eq(qat_st_writer_add(&w, "nodata", QAT_F32, 1, (int64_t[]){4}, NULL), QAT_EINVAL);
  ck_assert_int_eq(
      qat_st_writer_add(&w, "huge", QAT_F32, 3, (int64_t[]){1 << 30, 1 << 30, 1 << 30}, x),
      QAT_EINVAL);
  TU_REQUIRE_OK(qat_st_writer_meta(&w, "k", "v"));
  ck_assert_int_eq(qat_st_writer_meta(&w, "k", "v2"), QAT_EINVAL);
  ck_assert_int_eq(w.n, 1);

  /* atomic: a missing directory fails and leaves nothing behind */
  path(p, "missing/dir/x.safetensors");
  ck_assert_int_eq(qat_st_write(&w, p), QAT_EIO);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "missing/dir/x.safetensors"));
  path(p, "missing");
  ck_assert(!qat_path_exists(p));
  char **names;
  int n;
  TU_REQUIRE_OK(qat_list_dir(tu_dir(), &names, &n));
  ck_assert_int_eq(n, 0);
  qat_free_list(names, n);
  /* overwriting an existing file leaves just the file */
  path(p, "x.safetensors");
  TU_REQUIRE_OK(qat_st_write(&w, p));
  TU_REQUIRE_OK(qat_st_write(&w, p));
  TU_REQUIRE_OK(qat_list_dir(tu_dir(), &names, &n));
  ck_assert_int_eq(n, 1);
  qat_free_list(names, n);
  qat_st_writer_free(&w);
}
END_TEST

/* ---- sharded folders ---- */

static void write_shard(const char *dir, const char *file, const char **names, int n, float base) {
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", dir, file);
  float v[3][2];
  qat_st_writer w;
  qat_st_writer_init(&w);
  for (int i = 0; i < n; i++) {
    v[i][0] = base + (float)i;
    v[i][1] = -base - (float)i;
    TU_REQUIRE_OK(qat_st_writer_add(&w, names[i], QAT_F32, 1, (int64_t[]){2}, v[i]));
  }
  TU_REQUIRE_OK(qat_st_write(&w, p));
  qat_st_writer_free(&w);
}

static void write_text(const char *dir, const char *file, const char *text) {
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", dir, file);
  TU_REQUIRE_OK(qat_write_file_atomic(p, text, strlen(text)));
}

#define S1 "model-00001-of-00002.safetensors"
#define S2 "model-00002-of-00002.safetensors"

START_TEST(test_sharded) {
  write_shard(tu_dir(), S1, (const char *[]){"a", "b"}, 2, 10);
  write_shard(tu_dir(), S2, (const char *[]){"c"}, 1, 20);
  write_text(tu_dir(), "model.safetensors.index.json",
             "{\"metadata\": {\"total_size\": 24}, \"weight_map\": "
             "{\"a\": \"" S1 "\", \"c\": \"" S2 "\", \"b\": \"" S1 "\"}}");
  qat_st_set s;
  TU_REQUIRE_OK(qat_st_set_open(tu_dir(), &s));
  ck_assert_int_eq(s.nfiles, 2); /* each shard once although S1 is named twice */
  const qat_st_file *file;
  const struct {
    const char *name, *shard;
    float v0;
  } want[] = {{"a", S1, 10}, {"b", S1, 11}, {"c", S2, 20}};
  for (int i = 0; i < 3; i++) {
    const qat_st_tensor *t = qat_st_set_find(&s, want[i].name, &file);
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_nonnull(strstr(file->path, want[i].shard));
    float out[2];
    TU_REQUIRE_OK(qat_st_read_f32(t, out));
    ck_assert_float_eq(out[0], want[i].v0);
    ck_assert_float_eq(out[1], -want[i].v0);
  }
  ck_assert_ptr_null(qat_st_set_find(&s, "zz", &file));
  ck_assert_ptr_null(file);
  qat_st_set_close(&s);
  ck_assert_int_eq(s.nfiles, 0);

  /* the index names a tensor its shard does not hold */
  write_text(tu_dir(), "model.safetensors.index.json",
             "{\"weight_map\": {\"a\": \"" S1 "\", \"c\": \"" S1 "\"}}");
  ck_assert_int_eq(qat_st_set_open(tu_dir(), &s), QAT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "model.safetensors.index.json"));
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "\"c\""));
  ck_assert_int_eq(s.nfiles, 0);

  /* a tensor held by two shards */
  write_shard(tu_dir(), S2, (const char *[]){"c", "a"}, 2, 20);
  write_text(tu_dir(), "model.safetensors.index.json",
             "{\"weight_map\": {\"a\": \"" S1 "\", \"b\": \"" S1 "\", \"c\": \"" S2 "\"}}");
  ck_assert_int_eq(qat_st_set_open(tu_dir(), &s), QAT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "\"a\""));
  ck_assert_ptr_nonnull(strstr(qat_last_error(), S1));
  ck_assert_ptr_nonnull(strstr(qat_last_error(), S2));

  /* a shard outside the folder, a missing shard, a bad index */
  write_text(tu_dir(), "model.safetensors.index.json", "{\"weight_map\": {\"a\": \"../x\"}}");
  ck_assert_int_eq(qat_st_set_open(tu_dir(), &s), QAT_EFORMAT);
  write_text(tu_dir(), "model.safetensors.index.json", "{\"weight_map\": {\"a\": \"nope.st\"}}");
  ck_assert_int_eq(qat_st_set_open(tu_dir(), &s), QAT_EIO);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "nope.st"));
  write_text(tu_dir(), "model.safetensors.index.json", "{\"weight_map\": [1]}");
  ck_assert_int_eq(qat_st_set_open(tu_dir(), &s), QAT_EFORMAT);
  write_text(tu_dir(), "model.safetensors.index.json", "{\"weight_map\": {\"a\": 3}}");
  ck_assert_int_eq(qat_st_set_open(tu_dir(), &s), QAT_EFORMAT);
  write_text(tu_dir(), "model.safetensors.index.json", "{\"weight_map\": ");
  ck_assert_int_eq(qat_st_set_open(tu_dir(), &s), QAT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "index.json"));
  /* a malformed shard is reported with the shard's name */
  write_text(tu_dir(), "model.safetensors.index.json",
             "{\"weight_map\": {\"a\": \"" S1 "\", \"c\": \"" S2 "\"}}");
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", tu_dir(), S2);
  put_st(p, "{\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,9]}}", 8);
  ck_assert_int_eq(qat_st_set_open(tu_dir(), &s), QAT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), S2));
}
END_TEST

START_TEST(test_single_folder) {
  qat_st_set s;
  ck_assert_int_eq(qat_st_set_open(tu_dir(), &s), QAT_EIO); /* nothing there */
  ck_assert_ptr_nonnull(strstr(qat_last_error(), tu_dir()));
  write_shard(tu_dir(), "model.safetensors", (const char *[]){"x", "y"}, 2, 1);
  TU_REQUIRE_OK(qat_st_set_open(tu_dir(), &s));
  ck_assert_int_eq(s.nfiles, 1);
  ck_assert_ptr_nonnull(qat_st_set_find(&s, "y", NULL));
  qat_st_set_close(&s);
  /* a file path is a set of one */
  char p[4096];
  path(p, "model.safetensors");
  TU_REQUIRE_OK(qat_st_set_open(p, &s));
  ck_assert_int_eq(s.nfiles, 1);
  qat_st_set_close(&s);
}
END_TEST

/* ---- malformed corpus ---- */

#define T_OK "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

typedef struct {
  const char *what;
  const char *json; /* header text; NULL: raw bytes below */
  size_t ndata;
  qat_status want;
  const char *needle; /* expected in the message besides the path */
} bad_case;

static const bad_case k_bad[] = {
    {"not json", "{\"a\": {", 8, QAT_EFORMAT, "not valid JSON"},
    {"not json 2", "{'a': 1}", 8, QAT_EFORMAT, "not valid JSON"},
    {"array", "[1, 2, 3]", 8, QAT_EFORMAT, "not a JSON object"},
    {"string", "\"hello\"", 8, QAT_EFORMAT, "not a JSON object"},
    {"trailing bytes", "{} x", 0, QAT_EFORMAT, "after the JSON"},
    {"two objects", "{}{}", 0, QAT_EFORMAT, "after the JSON"},
    {"entry not object", "{\"a\": 5}", 8, QAT_EFORMAT, "not an object"},
    {"unknown dtype", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 8,
     QAT_EUNSUPPORTED, "F8_E4M3"},
    {"dtype not string", "{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     QAT_EFORMAT, "dtype"},
    {"missing dtype", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, QAT_EFORMAT, "dtype"},
    {"missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, QAT_EFORMAT,
     "data_offsets"},
    {"extra key", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8,
     QAT_EFORMAT, "unknown key"},
    {"key twice", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"shape\":[2],\"data_offsets\":[0,8]}}",
     8, QAT_EFORMAT, "twice"},
    {"size mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 16,
     QAT_EFORMAT, "needs 16"},
    {"offsets past data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
     QAT_EFORMAT, "past the data"},
    {"overlap", "{\"a\":" T_OK ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, QAT_EFORMAT, "overlap"},
    {"overlap same range", "{\"a\":" T_OK ",\"b\":" T_OK "}", 8, QAT_EFORMAT, "overlap"},
    {"negative dim", "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 8,
     QAT_EFORMAT, "shape[0] is -1"},
    {"rank 5", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,1]}}", 8,
     QAT_EFORMAT, "rank 5"},
    {"fractional dim", "{\"a\":{\"dtype\":\"U8\",\"shape\":[2.5],\"data_offsets\":[0,2]}}", 8,
     QAT_EFORMAT, "2.5"},
    {"string dim", "{\"a\":{\"dtype\":\"U8\",\"shape\":[\"2\"],\"data_offsets\":[0,2]}}", 8,
     QAT_EFORMAT, "a string"},
    {"huge dim", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1e300],\"data_offsets\":[0,2]}}", 8,
     QAT_EFORMAT, "shape[0]"},
    {"shape not array", "{\"a\":{\"dtype\":\"U8\",\"shape\":3,\"data_offsets\":[0,3]}}", 8,
     QAT_EFORMAT, "not an array"},
    {"shape product overflow",
     "{\"a\":{\"dtype\":\"U8\",\"shape\":[2097152,2097152,2097152],\"data_offsets\":[0,8]}}", 8,
     QAT_EFORMAT, "overflow"},
    {"byte size overflow",
     "{\"a\":{\"dtype\":\"I64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8,
     QAT_EFORMAT, "overflow"},
    {"begin > end", "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8,
     QAT_EFORMAT, "begin 8 > end 0"},
    {"negative offset", "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[-8,0]}}", 8,
     QAT_EFORMAT, "non-negative"},
    {"three offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}", 8,
     QAT_EFORMAT, "pair"},
    {"offsets not array", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":\"0-8\"}}", 8,
     QAT_EFORMAT, "pair"},
    {"metadata value not string", "{\"__metadata__\":{\"k\":1},\"a\":" T_OK "}", 8, QAT_EFORMAT,
     "metadata \"k\""},
    {"metadata not object", "{\"__metadata__\":\"x\"}", 0, QAT_EFORMAT, "__metadata__"},
    {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, QAT_EFORMAT, "twice"},
    {"duplicate names",
     "{\"a\":" T_OK ",\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16,
     QAT_EFORMAT, "\"a\" appears twice"},
    {"control chars in name",
     "{\"a\\nb\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,9]}}", 9, QAT_EFORMAT, "a?b"},
};

static void expect_bad(const char *p, qat_status want, const char *needle, const char *what) {
  qat_st_file f;
  memset(&f, 0x5a, sizeof f); /* open must not rely on the caller zeroing */
  qat_clear_error();
  qat_status st = qat_st_open(p, &f);
  ck_assert_msg(st == want, "%s: got %s (%s), want %s", what, qat_status_name(st), qat_last_error(),
                qat_status_name(want));
  const char *msg = qat_last_error();
  ck_assert_msg(strstr(msg, p) != NULL, "%s: message lacks the path: %s", what, msg);
  ck_assert_msg(strchr(msg, '\n') == NULL, "%s: message is not one line: %s", what, msg);
  if (needle)
    ck_assert_msg(strstr(msg, needle) != NULL, "%s: \"%s\" not in: %s", what, needle, msg);
  ck_assert_ptr_null(f.map); /* nothing stays open */
  ck_assert_ptr_null(f.tensors);
  ck_assert_int_eq(f.n, 0);
}

START_TEST(test_malformed_json) {
  char p[4096];
  int n = (int)(sizeof k_bad / sizeof k_bad[0]);
  for (int i = 0; i < n; i++) {
    snprintf(p, sizeof p, "%s/bad%02d.safetensors", tu_dir(), i);
    put_st(p, k_bad[i].json, k_bad[i].ndata);
    expect_bad(p, k_bad[i].want, k_bad[i].needle, k_bad[i].what);
  }
  /* the good entry the cases are built from really is good */
  path(p, "good.safetensors");
  put_st(p, "{\"a\":" T_OK "}", 8);
  qat_st_file f;
  TU_REQUIRE_OK(qat_st_open(p, &f));
  qat_st_close(&f);
}
END_TEST

START_TEST(test_malformed_raw) {
  char p[4096];
  path(p, "raw.safetensors");
  /* empty and shorter than the length field */
  put_raw(p, 0, NULL, 0);
  FILE *fp = fopen(p, "wb");
  fclose(fp);
  expect_bad(p, QAT_EFORMAT, "shorter than", "empty file");
  fp = fopen(p, "wb");
  fwrite("\x05\0\0\0\0", 1, 5, fp);
  fclose(fp);
  expect_bad(p, QAT_EFORMAT, "shorter than", "5-byte file");
  put_raw(p, 0, "{}", 2);
  expect_bad(p, QAT_EFORMAT, "length is 0", "header length 0");
  put_raw(p, 0xFFFFFFFFFFFFFFFFull, "{}", 2);
  expect_bad(p, QAT_EFORMAT, "18446744073709551615", "header length 2^64-1");
  put_raw(p, 0x8000000000000000ull, "{}", 2);
  expect_bad(p, QAT_EFORMAT, "exceeds", "header length 2^63");
  put_raw(p, 100, "{}      ", 8);
  expect_bad(p, QAT_EFORMAT, "exceeds the 8 bytes", "header longer than the file");
  put_raw(p, 3, "{}", 2);
  expect_bad(p, QAT_EFORMAT, "exceeds", "header one byte past the end");
  /* header length 150 MB in a (sparse) file long enough for it: the size limit applies */
  put_raw(p, 150000000, "{", 1);
  ck_assert_int_eq(truncate(p, 8 + 150000000 + 16), 0);
  expect_bad(p, QAT_EFORMAT, "limit", "absurd header length");
  /* a NUL byte inside the header */
  put_raw(p, 4, "{}\0 ", 4);
  expect_bad(p, QAT_EFORMAT, "after the JSON", "NUL in header");
  put_raw(p, 4, "{\"\0", 4);
  expect_bad(p, QAT_EFORMAT, "not valid JSON", "NUL in string");
  /* nesting far deeper than any header: cJSON's depth limit, not a stack overflow */
  enum { DEPTH = 100000 };
  char *deep = malloc(2 * DEPTH + 16);
  size_t k = 0;
  deep[k++] = '{';
  memcpy(deep + k, "\"a\":", 4);
  k += 4;
  for (int i = 0; i < DEPTH; i++)
    deep[k++] = '[';
  for (int i = 0; i < DEPTH; i++)
    deep[k++] = ']';
  deep[k++] = '}';
  put_raw(p, k, deep, k);
  free(deep);
  expect_bad(p, QAT_EFORMAT, "not valid JSON", "deep nesting");
  /* not a regular file */
  ck_assert_int_eq(qat_st_open(tu_dir(), &(qat_st_file){0}), QAT_EIO);
  path(p, "absent.safetensors");
  ck_assert_int_eq(qat_st_open(p, &(qat_st_file){0}), QAT_EIO);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "absent.safetensors"));
}
END_TEST

/* Random byte flips, insertions of quotes/brackets and truncations of a good file: the reader
 * returns OK or a one-line error naming the file, and an accepted file's tensors lie inside
 * the mapping (ASan watches every access). */
START_TEST(test_mutations) {
  char p[4096], q[4096];
  path(p, "base.safetensors");
  path(q, "mut.safetensors");
  float a[6] = {1, 2, 3, 4, 5, 6};
  uint16_t b[3] = {1, 2, 3};
  qat_st_writer w;
  qat_st_writer_init(&w);
  TU_REQUIRE_OK(qat_st_writer_meta(&w, "format", "pt"));
  TU_REQUIRE_OK(qat_st_writer_add(&w, "model.layers.0.w", QAT_F32, 2, (int64_t[]){2, 3}, a));
  TU_REQUIRE_OK(qat_st_writer_add(&w, "model.layers.0.b", QAT_BF16, 1, (int64_t[]){3}, b));
  TU_REQUIRE_OK(qat_st_write(&w, p));
  qat_st_writer_free(&w);
  size_t len;
  unsigned char *base = read_all(p, &len);
  unsigned char *m = malloc(len);
  tu_rng r = {2024};
  const char special[] = "{}[]\",:-0123456789e.";
  int accepted = 0, rejected = 0;
  for (int it = 0; it < 3000; it++) {
    memcpy(m, base, len);
    size_t mlen = len;
    int kind = (int)(tu_next(&r) % 4);
    int edits = 1 + (int)(tu_next(&r) % 3);
    for (int e = 0; e < edits && mlen > 0; e++) {
      size_t at = tu_next(&r) % mlen;
      if (kind == 0) m[at] = (unsigned char)tu_next(&r);
      if (kind == 1) m[at] = (unsigned char)special[tu_next(&r) % (sizeof special - 1)];
      if (kind == 2) m[tu_next(&r) % 8] ^= (unsigned char)(1u << (tu_next(&r) % 8));
      if (kind == 3) mlen = at;
    }
    unlink(q); /* a fresh file, not a truncated one: ext4 flushes truncated files on close */
    FILE *fp = fopen(q, "wb");
    if (mlen) fwrite(m, 1, mlen, fp);
    fclose(fp);
    qat_st_file f;
    qat_status st = qat_st_open(q, &f);
    if (st == QAT_OK) {
      accepted++;
      const uint8_t *lo = f.map, *hi = lo + f.map_size;
      for (int i = 0; i < f.n; i++) {
        const qat_st_tensor *t = &f.tensors[i];
        ck_assert((const uint8_t *)t->data >= lo &&
                  (const uint8_t *)t->data + (t->end - t->begin) <= hi);
        if (t->dtype == QAT_F32 || t->dtype == QAT_F16 || t->dtype == QAT_BF16) {
          float *out = malloc((size_t)qat_st_numel(t) * sizeof(float) + 1);
          TU_REQUIRE_OK(qat_st_read_f32(t, out));
          free(out);
        }
      }
      qat_st_close(&f);
    } else {
      rejected++;
      ck_assert_msg(st == QAT_EFORMAT || st == QAT_EUNSUPPORTED, "status %s: %s",
                    qat_status_name(st), qat_last_error());
      ck_assert_ptr_nonnull(strstr(qat_last_error(), q));
      ck_assert_ptr_null(strchr(qat_last_error(), '\n'));
    }
  }
  printf("mutations: %d accepted, %d rejected\n", accepted, rejected);
  ck_assert_int_gt(rejected, 1000); /* the corpus really exercises the error paths */
  ck_assert_int_gt(accepted, 10);   /* and data-byte flips stay valid */
  free(m);
  free(base);
}
END_TEST

int main(void) {
  Suite *s = suite_create("safetensors");
  TCase *tc = tcase_create("safetensors");
  tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
  tcase_add_test(tc, test_roundtrip_all_dtypes);
  tcase_add_test(tc, test_scalar_and_empty);
  tcase_add_test(tc, test_convert_f32);
  tcase_add_test(tc, test_header_padding);
  tcase_add_test(tc, test_writer_errors);
  tcase_add_test(tc, test_sharded);
  tcase_add_test(tc, test_single_folder);
  tcase_add_test(tc, test_malformed_json);
  tcase_add_test(tc, test_malformed_raw);
  tcase_add_test(tc, test_mutations);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
