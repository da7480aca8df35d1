/* GGUF reader and dequantization against llama.cpp's own Python package: tests/ref/gguf_make.py
 * writes GGUF files with gguf.GGUFWriter (every dequantizable type at odd shapes, an unsupported
 * type, metadata of every value type and nested arrays; as version 3, version 2 and with
 * general.alignment 64) and the expected floats from gguf.quants.dequantize. Every metadata value
 * must read back exactly and every tensor must dequantize bit for bit (memcmp, so -0, inf, NaN
 * and subnormals count). Malformed files are covered end to end in test_gguf_convert.sh. */
#include "io/fsutil.h"
#include "io/gguf.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *g_dir;  /* files from gguf_make.py types */
static int g_have;   /* 0 when python3 / gguf are missing */
static cJSON *g_man; /* manifest.json */

static void setup_once(void) {
  if (g_dir) return;
  g_dir = tu_tmpdir();
  char cmd[4096], *out = NULL;
  snprintf(cmd, sizeof cmd,
           "python3 -c 'import gguf, numpy' 2>/dev/null && python3 tests/ref/gguf_make.py types %s "
           "2>&1",
           g_dir);
  int rc = tu_run(cmd, &out);
  g_have = rc == 0;
  if (!g_have) {
    fprintf(stderr, "gguf_make.py: rc %d: %s\n", rc, out ? out : "");
    free(out);
    return;
  }
  free(out);
  char path[4200], *text = NULL;
  size_t len = 0;
  snprintf(path, sizeof path, "%s/manifest.json", g_dir);
  TU_REQUIRE_OK(qat_read_file(path, &text, &len));
  g_man = cJSON_Parse(text);
  free(text);
  ck_assert_ptr_nonnull(g_man);
}

static const char *jstr(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  ck_assert_msg(cJSON_IsString(v), "manifest: %s", k);
  return v->valuestring;
}
static int jint(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  ck_assert_msg(cJSON_IsNumber(v), "manifest: %s", k);
  return v->valueint;
}

static int is_signed(uint32_t t) {
  return t == QAT_GGUF_I8 || t == QAT_GGUF_I16 || t == QAT_GGUF_I32 || t == QAT_GGUF_I64;
}

/* One scalar (type t) against its manifest text. */
static void check_scalar(const char *key, uint32_t t, uint64_t u, int64_t i, double f,
                         const char *want) {
  if (t == QAT_GGUF_F32 || t == QAT_GGUF_F64) {
    double w = strtod(want, NULL);
    ck_assert_msg(memcmp(&w, &f, 8) == 0, "%s: %.17g != %s", key, f, want);
  } else if (is_signed(t)) {
    ck_assert_msg(i == strtoll(want, NULL, 10), "%s: %" PRId64 " != %s", key, i, want);
  } else {
    ck_assert_msg(u == strtoull(want, NULL, 10), "%s: %" PRIu64 " != %s", key, u, want);
  }
}

static void check_kv(const qat_gguf_file *f) {
  const cJSON *kvs = cJSON_GetObjectItemCaseSensitive(g_man, "kv"), *e;
  int n = 0;
  cJSON_ArrayForEach(e, kvs) {
    const char *key = jstr(e, "key");
    const qat_gguf_kv *kv = qat_gguf_find(f, key);
    ck_assert_msg(kv != NULL, "%s: key %s missing", f->path, key);
    ck_assert_int_eq(kv->v.type, jint(e, "type"));
    if (kv->v.type == QAT_GGUF_STRING) {
      const char *w = jstr(e, "value");
      ck_assert_uint_eq(kv->v.len, strlen(w));
      ck_assert(memcmp(kv->v.str, w, kv->v.len) == 0);
      char *s = NULL;
      int found = 0;
      TU_REQUIRE_OK(qat_gguf_get_str(f, key, &s, &found));
      ck_assert(found && !strcmp(s, w));
      free(s);
    } else if (kv->v.type == QAT_GGUF_ARRAY) {
      ck_assert_int_eq(kv->v.elem, jint(e, "elem"));
      const cJSON *items = cJSON_GetObjectItemCaseSensitive(e, "items");
      const cJSON *counts = cJSON_GetObjectItemCaseSensitive(e, "counts");
      const cJSON *arr = items ? items : counts;
      ck_assert_uint_eq(kv->v.count, (uint64_t)cJSON_GetArraySize(arr));
      for (uint64_t k = 0; items && k < kv->v.count; k++) {
        const char *w = cJSON_GetArrayItem(items, (int)k)->valuestring;
        char what[200];
        snprintf(what, sizeof what, "%s[%" PRIu64 "]", key, k);
        if (kv->v.elem == QAT_GGUF_STRING) {
          const char *s;
          uint64_t len;
          qat_gguf_arr_str(&kv->v, k, &s, &len);
          ck_assert_msg(len == strlen(w) && memcmp(s, w, len) == 0, "%s", what);
        } else {
          int64_t iv = qat_gguf_arr_i64(&kv->v, k);
          check_scalar(what, kv->v.elem, (uint64_t)iv, iv, qat_gguf_arr_f64(&kv->v, k), w);
        }
      }
    } else {
      check_scalar(key, kv->v.type, kv->v.u, kv->v.i, kv->v.f, jstr(e, "value"));
    }
    n++;
  }
  ck_assert_int_ge(n, 27);
  /* typed getters refuse the wrong type, naming the file and the key */
  char *s = NULL;
  int found = 0;
  ck_assert_int_eq(qat_gguf_get_str(f, "test.u32", &s, &found), QAT_EFORMAT);
  ck_assert(strstr(qat_last_error(), "test.u32") && strstr(qat_last_error(), f->path));
  int64_t iv = 0;
  TU_REQUIRE_OK(qat_gguf_get_int(f, "test.i16", &iv, &found));
  ck_assert(found && iv == -32000);
  ck_assert_int_eq(qat_gguf_get_int(f, "test.u64", &iv, &found), QAT_EFORMAT); /* > INT64_MAX */
  TU_REQUIRE_OK(qat_gguf_get_int(f, "no.such.key", &iv, &found));
  ck_assert(!found);
}

static void check_tensors(const qat_gguf_file *f) {
  const cJSON *ts = cJSON_GetObjectItemCaseSensitive(g_man, "tensors"), *e;
  ck_assert_int_eq(f->n_tensors, cJSON_GetArraySize(ts));
  int checked = 0;
  cJSON_ArrayForEach(e, ts) {
    const char *name = jstr(e, "name");
    const qat_gguf_tensor *t = qat_gguf_find_tensor(f, name);
    ck_assert_msg(t != NULL, "%s: tensor %s missing", f->path, name);
    ck_assert_int_eq(t->type, jint(e, "type"));
    const cJSON *ne = cJSON_GetObjectItemCaseSensitive(e, "ne");
    ck_assert_int_eq(t->ndim, cJSON_GetArraySize(ne));
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
      ck_assert_int_eq(t->ne[d], cJSON_GetArrayItem(ne, d)->valueint);
      numel *= t->ne[d];
    }
    ck_assert_int_eq(t->numel, numel);
    ck_assert_uint_eq(t->nbytes, (uint64_t)(numel / qat_ggml_type_block(t->type)) *
                                     (uint64_t)qat_ggml_type_bytes(t->type));
    ck_assert_uint_eq(t->offset % f->alignment, 0);
    ck_assert_uint_eq(((uintptr_t)t->data - (uintptr_t)f->map) % f->alignment, 0);
    float *got = malloc((size_t)numel * sizeof *got);
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(e, "ref");
    if (!qat_gguf_can_dequant(t->type)) { /* only these two are outside qat's list */
      const char *tn = qat_ggml_type_name(t->type);
      ck_assert_msg(!strncmp(name, "q8_1", 4) || !strncmp(name, "iq4_nl", 6), "%s refused", name);
      ck_assert_int_eq(qat_gguf_tensor_f32(f, t, got), QAT_EUNSUPPORTED);
      ck_assert_msg(strstr(qat_last_error(), tn) && strstr(qat_last_error(), name), "%s",
                    qat_last_error());
      free(got);
      continue;
    }
    ck_assert_msg(ref != NULL, "%s: no reference", name);
    TU_REQUIRE_OK(qat_gguf_tensor_f32(f, t, got));
    char path[4300], *want = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/%s", g_dir, ref->valuestring);
    TU_REQUIRE_OK(qat_read_file(path, &want, &len));
    ck_assert_uint_eq(len, (size_t)numel * 4);
    for (int64_t k = 0; k < numel; k++)
      ck_assert_msg(memcmp(got + k, want + 4 * k, 4) == 0, "%s (%s) [%" PRId64 "]: %.9g != %.9g",
                    name, qat_ggml_type_name(t->type), k, got[k], ((float *)want)[k]);
    free(want);
    free(got);
    checked++;
  }
  ck_assert_int_ge(checked, 21);
}

static void check_file(const char *fname, uint32_t version, uint64_t align) {
  setup_once();
  if (!g_have) {
    tu_skip("python3 with the gguf package not found");
    return;
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", g_dir, fname);
  qat_gguf_file f;
  TU_REQUIRE_OK(qat_gguf_open(path, &f));
  ck_assert_uint_eq(f.version, version);
  ck_assert_uint_eq(f.alignment, align);
  ck_assert_uint_eq(f.data_offset % align, 0);
  check_kv(&f);
  check_tensors(&f);
  qat_gguf_close(&f);
}

START_TEST(test_v3) { check_file("types.gguf", 3, 32); }
END_TEST
START_TEST(test_v2) { check_file("types_v2.gguf", 2, 32); }
END_TEST
START_TEST(test_align64) { check_file("types_a64.gguf", 3, 64); }
END_TEST

/* Hand-made blocks whose values are known without any reference: Q4_0 with d = 1 gives q - 8,
 * Q8_0 with d = 0.5 gives q / 2; and a block count that is not whole is refused. */
START_TEST(test_known_blocks) {
  uint8_t b[34] = {0x00, 0x3c}; /* F16 1.0 */
  for (int j = 0; j < 16; j++)
    b[2 + j] = (uint8_t)(j | (15 - j) << 4);
  float y[32];
  TU_REQUIRE_OK(qat_gguf_dequant(QAT_GGML_Q4_0, b, 32, y));
  for (int j = 0; j < 16; j++) {
    ck_assert_float_eq(y[j], (float)(j - 8));
    ck_assert_float_eq(y[j + 16], (float)(7 - j));
  }
  b[0] = 0x00;
  b[1] = 0x38; /* 0.5 */
  for (int j = 0; j < 32; j++)
    b[2 + j] = (uint8_t)(int8_t)(j * 8 - 128);
  TU_REQUIRE_OK(qat_gguf_dequant(QAT_GGML_Q8_0, b, 32, y));
  for (int j = 0; j < 32; j++)
    ck_assert_float_eq(y[j], (float)(j * 8 - 128) * 0.5f);
  ck_assert_int_eq(qat_gguf_dequant(QAT_GGML_Q8_0, b, 31, y), QAT_EINVAL);
  ck_assert_int_eq(qat_gguf_dequant(QAT_GGML_Q8_K, b, 256, y), QAT_EUNSUPPORTED);
  ck_assert(strstr(qat_last_error(), "Q8_K"));
  ck_assert_str_eq(qat_ggml_type_name(99), "type 99");
}
END_TEST

/* A missing file and a directory are I/O errors naming the path. */
START_TEST(test_not_a_file) {
  qat_gguf_file f;
  ck_assert_int_eq(qat_gguf_open("/nonexistent/x.gguf", &f), QAT_EIO);
  ck_assert(strstr(qat_last_error(), "/nonexistent/x.gguf"));
  ck_assert_int_eq(qat_gguf_open("/tmp", &f), QAT_EIO);
}
END_TEST

int main(void) {
  Suite *s = suite_create("gguf");
  TCase *tc = tcase_create("gguf");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_v3);
  tcase_add_test(tc, test_v2);
  tcase_add_test(tc, test_align64);
  tcase_add_test(tc, test_known_blocks);
  tcase_add_test(tc, test_not_a_file);
  suite_add_tcase(s, tc);
  int rc = tu_run_suite(s);
  if (g_dir) tu_rmrf(g_dir);
  cJSON_Delete(g_man);
  return rc;
}
