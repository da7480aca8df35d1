/* Checkpoints: bit-exact save/load round trip of tensors and fields, keep-K pruning, newest
 * complete checkpoint detection next to leftovers and incomplete directories, and corrupted or
 * mismatched state.json files rejected with errors naming the file. */
#include "testutil.h"
#include "io/fsutil.h"
#include "train/checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void has(const char *needle) {
  ck_assert_msg(strstr(qat_last_error(), needle) != NULL, "error '%s' lacks '%s'",
                qat_last_error(), needle);
}

static void sh(const char *fmt, const char *a, const char *b) {
  char cmd[2 * 4096 + 256];
  int n = snprintf(cmd, sizeof cmd, fmt, a, b);
  ck_assert_msg(n > 0 && (size_t)n < sizeof cmd, "command too long");
  ck_assert_msg(tu_run(cmd, NULL) == 0, "%s", cmd);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

static int bits_eq(const void *a, const void *b, size_t n) { return memcmp(a, b, n) == 0; }

START_TEST(test_round_trip) {
  char *run = tu_tmpdir();
  tu_rng r = {42};
  /* w: odd shape, with the values that break sloppy writers: -0, subnormal, inf, NaN payload */
  enum { R = 3, C = 5 };
  float w[R * C];
  tu_fill_normal(&r, w, R * C, 1.0f);
  w[0] = -0.0f;
  w[1] = 1e-45f;
  w[2] = INFINITY;
  uint32_t nan_bits = 0x7fc01234u;
  memcpy(&w[3], &nan_bits, 4);
  float scalar = 0.1f;
  int32_t ids[7] = {0, -1, 2147483647, -2147483647 - 1, 5, 6, 7};
  uint8_t codes[2][3] = {{0, 255, 7}, {1, 2, 3}};
  uint16_t half[4] = {qat_f32_to_bf16(1.5f), qat_f32_to_bf16(-2.0f), qat_f32_to_bf16(1e-3f), 0};

  qat_ckpt_writer wr;
  qat_ckpt_writer_init(&wr);
  TU_REQUIRE_OK(qat_ckpt_add_f32(&wr, "model.layers.0.mlp.down_proj.weight", 2,
                                 (int64_t[]){R, C}, w));
  TU_REQUIRE_OK(qat_ckpt_add_f32(&wr, "scalar", 0, NULL, &scalar));
  TU_REQUIRE_OK(qat_ckpt_add_tensor(&wr, "ids", QAT_I32, 1, (int64_t[]){7}, ids));
  TU_REQUIRE_OK(qat_ckpt_add_tensor(&wr, "codes", QAT_U8, 2, (int64_t[]){2, 3}, codes));
  TU_REQUIRE_OK(qat_ckpt_add_tensor(&wr, "half", QAT_BF16, 1, (int64_t[]){4}, half));
  ck_assert_int_eq(qat_ckpt_add_f32(&wr, "scalar", 0, NULL, &scalar), QAT_EINVAL);
  has("scalar");

  const uint64_t rng_state = 0xFEDCBA9876543210ull; /* > INT64_MAX: goes through int64 */
  const double fl[] = {0.1, 1.0 / 3.0, 1e-310, -0.0, 6.02214076e23, INFINITY, -INFINITY};
  const char *fk[] = {"f.tenth", "f.third", "f.subnormal", "f.negzero", "f.big", "f.inf", "f.ninf"};
  TU_REQUIRE_OK(qat_ckpt_set_int(&wr, "sampler.counter", 12345));
  TU_REQUIRE_OK(qat_ckpt_set_int(&wr, "sampler.counter", 960)); /* replaced */
  TU_REQUIRE_OK(qat_ckpt_set_int(&wr, "rng.state", (int64_t)rng_state));
  TU_REQUIRE_OK(qat_ckpt_set_int(&wr, "i.min", INT64_MIN));
  TU_REQUIRE_OK(qat_ckpt_set_int(&wr, "i.max", INT64_MAX));
  for (int i = 0; i < 7; i++) TU_REQUIRE_OK(qat_ckpt_set_float(&wr, fk[i], fl[i]));
  TU_REQUIRE_OK(qat_ckpt_set_float(&wr, "f.nan", NAN));
  TU_REQUIRE_OK(qat_ckpt_set_str(&wr, "config.path", "runs/a \"b\"\\c\n\tcaf\xc3\xa9.yaml"));

  char path[4096];
  TU_REQUIRE_OK(qat_ckpt_save(run, 120, &wr, 3, path, sizeof path));
  qat_ckpt_writer_free(&wr);
  char want[4096];
  snprintf(want, sizeof want, "%s/ckpt-00000120", run);
  ck_assert_str_eq(path, want);

  qat_ckpt ck;
  TU_REQUIRE_OK(qat_ckpt_open(path, &ck));
  ck_assert_int_eq(ck.step, 120);
  float w2[R * C], s2, h2[4];
  int32_t ids2[7];
  uint8_t codes2[2][3];
  TU_REQUIRE_OK(qat_ckpt_read_f32(&ck, "model.layers.0.mlp.down_proj.weight", w2, 2,
                                  (int64_t[]){R, C}));
  ck_assert(bits_eq(w, w2, sizeof w)); /* bit-exact, NaN payload and -0 included */
  TU_REQUIRE_OK(qat_ckpt_read_f32(&ck, "scalar", &s2, 0, NULL));
  ck_assert(bits_eq(&scalar, &s2, 4));
  TU_REQUIRE_OK(qat_ckpt_read(&ck, "ids", QAT_I32, ids2, 1, (int64_t[]){7}));
  ck_assert(bits_eq(ids, ids2, sizeof ids));
  TU_REQUIRE_OK(qat_ckpt_read(&ck, "codes", QAT_U8, codes2, 2, (int64_t[]){2, 3}));
  ck_assert(bits_eq(codes, codes2, sizeof codes));
  TU_REQUIRE_OK(qat_ckpt_read_f32(&ck, "half", h2, 1, (int64_t[]){4})); /* bf16 -> f32 */
  for (int i = 0; i < 4; i++) ck_assert(h2[i] == qat_bf16_to_f32(half[i]));
  ck_assert_ptr_nonnull(qat_ckpt_find(&ck, "ids"));
  ck_assert_ptr_null(qat_ckpt_find(&ck, "nope"));

  int64_t iv;
  TU_REQUIRE_OK(qat_ckpt_get_int(&ck, "sampler.counter", &iv));
  ck_assert_int_eq(iv, 960);
  TU_REQUIRE_OK(qat_ckpt_get_int(&ck, "rng.state", &iv));
  ck_assert_uint_eq((uint64_t)iv, rng_state);
  TU_REQUIRE_OK(qat_ckpt_get_int(&ck, "i.min", &iv));
  ck_assert(iv == INT64_MIN);
  TU_REQUIRE_OK(qat_ckpt_get_int(&ck, "i.max", &iv));
  ck_assert(iv == INT64_MAX);
  for (int i = 0; i < 7; i++) {
    double d;
    TU_REQUIRE_OK(qat_ckpt_get_float(&ck, fk[i], &d));
    ck_assert_msg(bits_eq(&d, &fl[i], sizeof d), "%s: %.17g != %.17g", fk[i], d, fl[i]);
  }
  double dn;
  TU_REQUIRE_OK(qat_ckpt_get_float(&ck, "f.nan", &dn));
  ck_assert(isnan(dn));
  const char *s;
  TU_REQUIRE_OK(qat_ckpt_get_str(&ck, "config.path", &s));
  ck_assert_str_eq(s, "runs/a \"b\"\\c\n\tcaf\xc3\xa9.yaml");
  ck_assert(qat_ckpt_has(&ck, "rng.state"));
  ck_assert(!qat_ckpt_has(&ck, "rng.stat"));

  /* lookups that must fail, each naming what failed */
  float big[16];
  ck_assert_int_eq(qat_ckpt_read_f32(&ck, "model.layers.0.mlp.down_proj.weight", big, 2,
                                     (int64_t[]){C, R}),
                   QAT_EFORMAT);
  has("model.layers.0.mlp.down_proj.weight");
  has("[3, 5]");
  has("[5, 3]");
  ck_assert_int_eq(qat_ckpt_read_f32(&ck, "missing.weight", big, 1, (int64_t[]){4}), QAT_EFORMAT);
  has("missing.weight");
  has("state.safetensors");
  ck_assert_int_eq(qat_ckpt_read(&ck, "ids", QAT_U32, ids2, 1, (int64_t[]){7}), QAT_EFORMAT);
  has("'ids' is I32");
  ck_assert_int_eq(qat_ckpt_read_f32(&ck, "ids", big, 1, (int64_t[]){7}), QAT_EFORMAT);
  has("ids");
  ck_assert_int_eq(qat_ckpt_get_float(&ck, "sampler.counter", &dn), QAT_EFORMAT);
  has("sampler.counter");
  has("state.json");
  ck_assert_int_eq(qat_ckpt_get_int(&ck, "no.such", &iv), QAT_EFORMAT);
  has("no.such");
  qat_ckpt_close(&ck);
  tu_rmrf(run);
  free(run);
}
END_TEST

static void save_step(const char *run, int64_t step, int keep) {
  float v = (float)step;
  qat_ckpt_writer w;
  qat_ckpt_writer_init(&w);
  TU_REQUIRE_OK(qat_ckpt_add_f32(&w, "v", 1, (int64_t[]){1}, &v));
  TU_REQUIRE_OK(qat_ckpt_set_int(&w, "step.copy", step));
  TU_REQUIRE_OK(qat_ckpt_save(run, step, &w, keep, NULL, 0));
  qat_ckpt_writer_free(&w);
}

static int exists_in(const char *run, const char *name) {
  char p[4400];
  snprintf(p, sizeof p, "%s/%s", run, name);
  return qat_path_exists(p);
}

START_TEST(test_keep_pruning) {
  char *root = tu_tmpdir();
  char run[4096];
  snprintf(run, sizeof run, "%s/runs/job", root); /* created by the first save */
  for (int64_t s = 10; s <= 50; s += 10) save_step(run, s, 3);
  ck_assert(!exists_in(run, "ckpt-00000010"));
  ck_assert(!exists_in(run, "ckpt-00000020"));
  ck_assert(exists_in(run, "ckpt-00000030"));
  ck_assert(exists_in(run, "ckpt-00000040"));
  ck_assert(exists_in(run, "ckpt-00000050"));
  char **names;
  int n;
  TU_REQUIRE_OK(qat_list_dir(run, &names, &n));
  ck_assert_int_eq(n, 3); /* no temporaries left behind */
  qat_free_list(names, n);
  /* a leftover of an interrupted save, and an unrelated file, then keep 1 */
  sh("mkdir -p %s/ckpt-00000060.tmp-Ab12Cd && echo x > %s/notes.txt", run, run);
  save_step(run, 60, 1);
  ck_assert(!exists_in(run, "ckpt-00000060.tmp-Ab12Cd"));
  ck_assert(!exists_in(run, "ckpt-00000050"));
  ck_assert(exists_in(run, "ckpt-00000060"));
  ck_assert(exists_in(run, "notes.txt"));
  /* saving the same step again replaces it */
  save_step(run, 60, 1);
  qat_ckpt ck;
  char p[4096];
  int64_t step;
  TU_REQUIRE_OK(qat_ckpt_latest(run, p, sizeof p, &step));
  ck_assert_int_eq(step, 60);
  TU_REQUIRE_OK(qat_ckpt_open(p, &ck));
  float v;
  TU_REQUIRE_OK(qat_ckpt_read_f32(&ck, "v", &v, 1, (int64_t[]){1}));
  ck_assert(v == 60.0f);
  qat_ckpt_close(&ck);
  /* an older step saved after newer ones (a resumed run) never deletes the newer ones nor
   * itself */
  save_step(run, 5, 1);
  ck_assert(exists_in(run, "ckpt-00000005"));
  ck_assert(exists_in(run, "ckpt-00000060"));
  ck_assert_int_eq(qat_ckpt_save(run, 7, &(qat_ckpt_writer){0}, 0, NULL, 0), QAT_EINVAL);
  has("keep");
  tu_rmrf(root);
  free(root);
}
END_TEST

START_TEST(test_latest) {
  char *run = tu_tmpdir();
  char p[4096];
  int64_t step = 99;
  /* none yet: empty dir, then a missing dir */
  TU_REQUIRE_OK(qat_ckpt_latest(run, p, sizeof p, &step));
  ck_assert_int_eq(step, -1);
  ck_assert_str_eq(p, "");
  char missing[4096];
  snprintf(missing, sizeof missing, "%s/nope", run);
  TU_REQUIRE_OK(qat_ckpt_latest(missing, p, sizeof p, &step));
  ck_assert_int_eq(step, -1);

  save_step(run, 10, 10);
  save_step(run, 30, 10);
  save_step(run, 90, 10);
  /* 90 loses its state.json: incomplete; a complete-looking temporary for 70; odd names */
  sh("rm %s/ckpt-00000090/state.json%s", run, "");
  sh("cp -r %s/ckpt-00000030 %s/ckpt-00000070.tmp-XyZ123", run, run);
  sh("mkdir -p %s/ckpt-abc %s/ckpt-", run, run);
  sh("mkdir -p %s/ckpt-00000080x && touch %s/ckpt-00000080x/state.json", run, run);
  TU_REQUIRE_OK(qat_ckpt_latest(run, p, sizeof p, &step));
  ck_assert_int_eq(step, 30);
  char want[4096];
  snprintf(want, sizeof want, "%s/ckpt-00000030", run);
  ck_assert_str_eq(p, want);
  qat_ckpt_path(run, 123456789, p, sizeof p); /* wider than 8 digits still parses */
  ck_assert(strstr(p, "ckpt-123456789") != NULL);
  save_step(run, 123456789, 10);
  TU_REQUIRE_OK(qat_ckpt_latest(run, p, sizeof p, &step));
  ck_assert_int_eq(step, 123456789);
  tu_rmrf(run);
  free(run);
}
END_TEST

/* Rewrites state.json of a fresh step-40 checkpoint and expects open to fail naming it. */
static void expect_bad_state(const char *run, const char *json, const char *needle) {
  save_step(run, 40, 5);
  char dir[4096], file[4200];
  snprintf(dir, sizeof dir, "%s/ckpt-00000040", run);
  snprintf(file, sizeof file, "%s/state.json", dir);
  write_text(file, json);
  qat_ckpt ck;
  ck_assert_int_eq(qat_ckpt_open(dir, &ck), QAT_EFORMAT);
  has(file);
  has(needle);
  ck_assert_ptr_null(ck.dir); /* nothing left open */
}

START_TEST(test_corrupt_state) {
  char *run = tu_tmpdir();
  expect_bad_state(run, "{\"format_version\": 1, \"step\": 40, \"fie", "not valid JSON");
  expect_bad_state(run, "", "not valid JSON");
  expect_bad_state(run, "{\"format_version\": 2, \"step\": 40, \"fields\": {}}",
                   "format_version 2");
  expect_bad_state(run, "{\"step\": 40, \"fields\": {}}", "format_version");
  expect_bad_state(run, "{\"format_version\": 1, \"step\": 41, \"fields\": {}}", "step 41");
  expect_bad_state(run, "{\"format_version\": 1, \"step\": 40}", "fields");
  expect_bad_state(run, "{\"format_version\": 1, \"step\": 40, \"fields\": {\"a\": {\"int\": \"1x\"}}}",
                   "'a'");
  expect_bad_state(run, "{\"format_version\": 1, \"step\": 40, \"fields\": {\"a\": 3}}", "'a'");
  expect_bad_state(run,
                   "{\"format_version\": 1, \"step\": 40, \"fields\": {\"b\": {\"bool\": true}}}",
                   "'b'");
  expect_bad_state(run,
                   "{\"format_version\": 1, \"step\": 40, \"fields\": {\"c\": {\"int\": \"1\"},"
                   " \"c\": {\"int\": \"2\"}}}",
                   "'c'");
  /* a truncated state.safetensors names that file */
  save_step(run, 40, 5);
  char dir[4096], file[4200];
  snprintf(dir, sizeof dir, "%s/ckpt-00000040", run);
  snprintf(file, sizeof file, "%s/state.safetensors", dir);
  write_text(file, "\x10\0\0\0\0\0\0\0{\"v\"");
  qat_ckpt ck;
  ck_assert_int_ne(qat_ckpt_open(dir, &ck), QAT_OK);
  has("state.safetensors");
  /* no checkpoint at all */
  snprintf(dir, sizeof dir, "%s/ckpt-00000777", run);
  ck_assert_int_ne(qat_ckpt_open(dir, &ck), QAT_OK);
  has("ckpt-00000777/state.json");
  tu_rmrf(run);
  free(run);
}
END_TEST

int main(void) {
  Suite *s = suite_create("checkpoint");
  TCase *tc = tcase_create("checkpoint");
  tcase_add_test(tc, test_round_trip);
  tcase_add_test(tc, test_keep_pruning);
  tcase_add_test(tc, test_latest);
  tcase_add_test(tc, test_corrupt_state);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
