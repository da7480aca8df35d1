/* .npy token shards: round trips, the u2/u4 choice, every accepted dtype and header version
 * (files built byte by byte here, the way numpy lays them out), and malformed files, which must
 * be QAT_EFORMAT with a message naming the file, never a crash. */
#include "io/npy.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static const char *tmp_path(const char *name) { return tu_dir_path(name); }


static long file_size(const char *path) {
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fclose(f);
  return n;
}

/* An .npy file: version major (1 or 2), header dict text (padded with spaces + '\n' to a
 * multiple of 64 as numpy does), then `data` bytes. Returns the file size. */
static size_t make_npy(const char *path, int major, const char *dict, const void *data,
                       size_t nbytes) {
  size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
  size_t total = pre + dl + 1, pad = (64 - total % 64) % 64, hlen = dl + pad + 1;
  size_t n = pre + hlen + nbytes;
  unsigned char *b = malloc(n);
  memcpy(b, "\x93NUMPY", 6);
  b[6] = (unsigned char)major;
  b[7] = 0;
  for (size_t k = 0; k < pre - 8; k++) b[8 + k] = (unsigned char)(hlen >> (8 * k));
  memcpy(b + pre, dict, dl);
  memset(b + pre + dl, ' ', pad);
  b[pre + hlen - 1] = '\n';
  if (nbytes) memcpy(b + pre + hlen, data, nbytes);
  tu_write_file(path, b, n);
  free(b);
  return n;
}

static void expect_format_error(const char *path, const char *what) {
  int32_t *t = (int32_t *)0x1;
  int64_t n = -1;
  qat_status st = qat_npy_read_tokens(path, &t, &n);
  ck_assert_msg(st == QAT_EFORMAT, "%s: expected QAT_EFORMAT, got %s (%s)", what,
                qat_status_name(st), qat_last_error());
  ck_assert_ptr_null(t);
  ck_assert_int_eq(n, 0);
  ck_assert_msg(strstr(qat_last_error(), path) != NULL, "%s: message does not name the file: %s",
                what, qat_last_error());
}

START_TEST(test_round_trip_u2_u4) {
  /* vocab 65536 is the largest that fits uint16 (ids 0..65535); 65537 needs uint32. */
  const int64_t vocabs[] = {512, 65536, 65537, 128256};
  const int64_t n = 1237; /* odd, and not a multiple of the writer's chunk */
  int32_t *x = malloc(n * sizeof *x);
  tu_rng r = {42};
  for (int v = 0; v < 4; v++) {
    for (int64_t i = 0; i < n; i++) x[i] = (int32_t)(tu_next(&r) % (uint64_t)vocabs[v]);
    x[0] = 0;
    x[n - 1] = (int32_t)(vocabs[v] - 1); /* extremes survive */
    const char *p = tmp_path("rt.npy");
    TU_REQUIRE_OK(qat_npy_write_tokens(p, x, n, vocabs[v]));
    int isz = vocabs[v] <= 65536 ? 2 : 4;
    long sz = file_size(p);
    ck_assert_int_eq((sz - n * isz) % 64, 0); /* header padded to 64 bytes */
    FILE *f = fopen(p, "rb");
    char hdr[128] = {0};
    ck_assert_int_eq(fread(hdr, 1, 127, f), 127);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(hdr + 10, isz == 2 ? "'descr': '<u2'" : "'descr': '<u4'"));
    int32_t *y;
    int64_t m;
    TU_REQUIRE_OK(qat_npy_read_tokens(p, &y, &m));
    ck_assert_int_eq(m, n);
    ck_assert_int_eq(memcmp(x, y, n * sizeof *x), 0);
    free(y);
  }
  /* empty shard */
  TU_REQUIRE_OK(qat_npy_write_tokens(tmp_path("empty.npy"), x, 0, 512));
  int32_t *y;
  int64_t m = -1;
  TU_REQUIRE_OK(qat_npy_read_tokens(tmp_path("empty.npy"), &y, &m));
  ck_assert_int_eq(m, 0);
  free(y);
  /* no temporary files left beside the output */
  char *out;
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "ls -A '%s'", tu_dir());
  ck_assert_int_eq(tu_run(cmd, &out), 0);
  ck_assert_msg(strstr(out, "tmp") == NULL, "leftover temporary: %s", out);
  free(out);
  free(x);
}
END_TEST

START_TEST(test_write_rejects_out_of_vocab) {
  int32_t x[3] = {1, 512, 2};
  const char *p = tmp_path("bad.npy");
  ck_assert_int_eq(qat_npy_write_tokens(p, x, 3, 512), QAT_EINVAL);
  x[1] = -1;
  ck_assert_int_eq(qat_npy_write_tokens(p, x, 3, 512), QAT_EINVAL);
  ck_assert_int_eq(access(p, F_OK), -1); /* nothing written */
}
END_TEST

START_TEST(test_read_all_dtypes_and_versions) {
  const char *p = tmp_path("d.npy");
  int32_t *y;
  int64_t m;
  uint16_t u2[3] = {0, 7, 65535};
  make_npy(p, 1, "{'descr': '<u2', 'fortran_order': False, 'shape': (3,), }", u2, sizeof u2);
  TU_REQUIRE_OK(qat_npy_read_tokens(p, &y, &m));
  ck_assert_int_eq(m, 3);
  ck_assert_int_eq(y[2], 65535);
  free(y);
  uint32_t u4[2] = {5, 2147483647u};
  make_npy(p, 2, "{'descr': '<u4', 'fortran_order': False, 'shape': (2,), }", u4, sizeof u4);
  TU_REQUIRE_OK(qat_npy_read_tokens(p, &y, &m));
  ck_assert_int_eq(m, 2);
  ck_assert_int_eq(y[1], 2147483647);
  free(y);
  int32_t i4[4] = {3, 1, 4, 1};
  /* key order and spacing are free in the dict; double quotes are valid Python too */
  make_npy(p, 1, "{\"shape\": ( 4 , ), \"fortran_order\":False,'descr':'<i4'}", i4, sizeof i4);
  TU_REQUIRE_OK(qat_npy_read_tokens(p, &y, &m));
  ck_assert_int_eq(m, 4);
  ck_assert_int_eq(memcmp(y, i4, sizeof i4), 0);
  free(y);
  int64_t i8[2] = {9, 100000};
  make_npy(p, 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", i8, sizeof i8);
  TU_REQUIRE_OK(qat_npy_read_tokens(p, &y, &m));
  ck_assert_int_eq(y[0], 9);
  ck_assert_int_eq(y[1], 100000);
  free(y);
}
END_TEST

START_TEST(test_malformed) {
  const char *p = tmp_path("m.npy");
  uint16_t u2[4] = {1, 2, 3, 4};
  const char *ok = "{'descr': '<u2', 'fortran_order': False, 'shape': (4,), }";

  size_t n = make_npy(p, 1, ok, u2, sizeof u2);
  /* sanity: the unmodified file reads */
  int32_t *y;
  int64_t m;
  TU_REQUIRE_OK(qat_npy_read_tokens(p, &y, &m));
  free(y);

  /* bad magic */
  FILE *f = fopen(p, "r+b");
  fputc('X', f);
  fclose(f);
  expect_format_error(p, "bad magic");
  /* unsupported version */
  make_npy(p, 1, ok, u2, sizeof u2);
  f = fopen(p, "r+b");
  fseek(f, 6, SEEK_SET);
  fputc(7, f);
  fclose(f);
  expect_format_error(p, "version 7");
  /* truncated data (one byte short), and trailing garbage */
  make_npy(p, 1, ok, u2, sizeof u2);
  ck_assert_int_eq(truncate(p, (off_t)n - 1), 0);
  expect_format_error(p, "truncated data");
  make_npy(p, 1, "{'descr': '<u2', 'fortran_order': False, 'shape': (3,), }", u2, sizeof u2);
  expect_format_error(p, "trailing data");
  /* header length pointing past the end of the file */
  make_npy(p, 1, ok, u2, sizeof u2);
  ck_assert_int_eq(truncate(p, 40), 0);
  expect_format_error(p, "truncated header");
  ck_assert_int_eq(truncate(p, 7), 0);
  expect_format_error(p, "truncated magic");
  /* dict contents */
  make_npy(p, 1, "{'descr': '<u2', 'fortran_order': True, 'shape': (4,), }", u2, sizeof u2);
  expect_format_error(p, "fortran order");
  make_npy(p, 1, "{'descr': '<u2', 'fortran_order': False, 'shape': (2, 2), }", u2, sizeof u2);
  expect_format_error(p, "2-D shape");
  make_npy(p, 1, "{'descr': '<u2', 'fortran_order': False, 'shape': (), }", u2, 2);
  expect_format_error(p, "0-D shape");
  make_npy(p, 1, "{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }", u2, sizeof u2);
  expect_format_error(p, "float descr");
  make_npy(p, 1, "{'descr': '>u2', 'fortran_order': False, 'shape': (4,), }", u2, sizeof u2);
  expect_format_error(p, "big-endian descr");
  make_npy(p, 1, "{'descr': '<u2', 'shape': (4,), }", u2, sizeof u2);
  expect_format_error(p, "missing fortran_order");
  make_npy(p, 1, "{'descr': '<u2', 'fortran_order': False, 'shape': (4,), 'x': 1}", u2, sizeof u2);
  expect_format_error(p, "unknown key");
  make_npy(p, 1, "{'descr': '<u2', 'fortran_order': False, 'shape': (4,)", u2, sizeof u2);
  expect_format_error(p, "unterminated dict");
  make_npy(p, 1, "{'descr': '<u2', 'fortran_order': False, 'shape': (99999999999999999999,), }",
           u2, sizeof u2);
  expect_format_error(p, "overflowing shape");
  make_npy(p, 1, "{'descr': '<u2', 'fortran_order': False, 'shape': (4611686018427387904,), }",
           u2, sizeof u2);
  expect_format_error(p, "huge shape");
  /* values that are not token ids */
  int32_t neg[2] = {5, -3};
  make_npy(p, 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", neg, sizeof neg);
  expect_format_error(p, "negative i4");
  int64_t big[2] = {5, 2147483648LL};
  make_npy(p, 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", big, sizeof big);
  expect_format_error(p, "i8 above INT32_MAX");
  uint32_t bigu[1] = {2147483648u};
  make_npy(p, 1, "{'descr': '<u4', 'fortran_order': False, 'shape': (1,), }", bigu, sizeof bigu);
  expect_format_error(p, "u4 above INT32_MAX");
  /* a missing file is an I/O error naming it */
  ck_assert_int_eq(qat_npy_read_tokens(tmp_path("absent.npy"), &y, &m), QAT_EIO);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "absent.npy"));
}
END_TEST

START_TEST(test_numpy_reads_ours) {
  /* numpy is the independent reader, when the interpreter has it. */
  if (tu_run("python3 -c 'import numpy' 2>/dev/null", NULL) != 0) {
    tu_skip("python3 numpy not available");
    return;
  }
  int32_t x[5] = {1, 70000, 2, 0, 65536};
  const char *p = tmp_path("np.npy");
  TU_REQUIRE_OK(qat_npy_write_tokens(p, x, 5, 70001));
  char cmd[4400], *out;
  snprintf(cmd, sizeof cmd,
           "python3 -c \"import numpy as np; a = np.load('%s'); print(a.dtype, a.tolist())\"", p);
  ck_assert_int_eq(tu_run(cmd, &out), 0);
  ck_assert_str_eq(out, "uint32 [1, 70000, 2, 0, 65536]\n");
  free(out);
  TU_REQUIRE_OK(qat_npy_write_tokens(p, (int32_t[]){3, 65535}, 2, 65536));
  ck_assert_int_eq(tu_run(cmd, &out), 0);
  ck_assert_str_eq(out, "uint16 [3, 65535]\n");
  free(out);
  /* and we read what numpy writes (v1.0 header; int64 is its default integer) */
  snprintf(cmd, sizeof cmd,
           "python3 -c \"import numpy as np; np.save('%s', np.array([4, 8, 15, 16, 23, 42]))\"", p);
  ck_assert_int_eq(tu_run(cmd, NULL), 0);
  int32_t *y;
  int64_t m;
  TU_REQUIRE_OK(qat_npy_read_tokens(p, &y, &m));
  ck_assert_int_eq(m, 6);
  ck_assert_int_eq(y[5], 42);
  free(y);
}
END_TEST

int main(void) {
  Suite *s = suite_create("npy");
  TCase *tc = tcase_create("npy");
  tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
  tcase_add_test(tc, test_round_trip_u2_u4);
  tcase_add_test(tc, test_write_rejects_out_of_vocab);
  tcase_add_test(tc, test_read_all_dtypes_and_versions);
  tcase_add_test(tc, test_malformed);
  tcase_add_test(tc, test_numpy_reads_ours);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
