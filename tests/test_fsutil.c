/* fsutil: path helpers, whole-file reads, atomic file writes (content, permissions, no
 * temporaries left, failure leaves nothing), streamed atomic files, copies, listings, rm -rf
 * (never follows symlinks) and atomically published output directories. */
#include "io/fsutil.h"
#include "testutil.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


static void path(char *buf, const char *name) { snprintf(buf, 4096, "%s", tu_dir_path(name)); }

static void put(const char *p, const char *text) {
  FILE *f = fopen(p, "wb");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

/* Number of entries of a directory (ignoring "." and ".."). */
static int count_entries(const char *dir) {
  char **names;
  int n;
  TU_REQUIRE_OK(qat_list_dir(dir, &names, &n));
  qat_free_list(names, n);
  return n;
}

START_TEST(test_path_join) {
  char b[16];
  TU_REQUIRE_OK(qat_path_join(b, sizeof b, "a", "b"));
  ck_assert_str_eq(b, "a/b");
  TU_REQUIRE_OK(qat_path_join(b, sizeof b, "a/", "b"));
  ck_assert_str_eq(b, "a/b");
  TU_REQUIRE_OK(qat_path_join(b, sizeof b, "", "b"));
  ck_assert_str_eq(b, "b");
  /* exactly 15 characters fit in 16 bytes; 16 do not */
  TU_REQUIRE_OK(qat_path_join(b, sizeof b, "abcdefg", "hijklmn"));
  ck_assert_int_eq(qat_path_join(b, sizeof b, "abcdefgh", "hijklmn"), QAT_EINVAL);
}
END_TEST

START_TEST(test_mkdir_exists) {
  char p[4096], f[4096];
  path(p, "x/y/z");
  ck_assert(!qat_path_exists(p));
  TU_REQUIRE_OK(qat_mkdir_p(p));
  ck_assert(qat_is_dir(p));
  TU_REQUIRE_OK(qat_mkdir_p(p)); /* existing: fine */
  path(f, "x/file");
  put(f, "hi");
  ck_assert(qat_path_exists(f));
  ck_assert(!qat_is_dir(f));
  ck_assert_int_eq(qat_mkdir_p(f), QAT_EIO);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "x/file"));
  path(f, "x/file/sub");
  ck_assert_int_ne(qat_mkdir_p(f), QAT_OK);
}
END_TEST

START_TEST(test_read_file) {
  char p[4096];
  path(p, "r.bin");
  const char bytes[] = {'a', 0, 'b', '\n', (char)0xff};
  FILE *f = fopen(p, "wb");
  fwrite(bytes, 1, sizeof bytes, f);
  fclose(f);
  char *data;
  size_t len;
  TU_REQUIRE_OK(qat_read_file(p, &data, &len));
  ck_assert_uint_eq(len, sizeof bytes);
  ck_assert_int_eq(memcmp(data, bytes, len), 0);
  ck_assert_int_eq(data[len], 0); /* NUL-terminated */
  free(data);
  path(p, "empty");
  put(p, "");
  TU_REQUIRE_OK(qat_read_file(p, &data, &len));
  ck_assert_uint_eq(len, 0);
  ck_assert_int_eq(data[0], 0);
  free(data);
  path(p, "missing");
  ck_assert_int_eq(qat_read_file(p, &data, &len), QAT_EIO);
  ck_assert_ptr_null(data);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), p));
  ck_assert_int_eq(qat_read_file(tu_dir(), &data, &len), QAT_EIO); /* a directory */
}
END_TEST

START_TEST(test_write_atomic) {
  char p[4096];
  path(p, "out.txt");
  mode_t old = umask(022);
  TU_REQUIRE_OK(qat_write_file_atomic(p, "first", 5));
  TU_REQUIRE_OK(qat_write_file_atomic(p, "second!", 7)); /* replaces */
  struct stat sb;
  ck_assert_int_eq(stat(p, &sb), 0);
  ck_assert_int_eq(sb.st_mode & 0777, 0644); /* 0666 & ~umask, like any new file */
  umask(old);
  char *data;
  size_t len;
  TU_REQUIRE_OK(qat_read_file(p, &data, &len));
  ck_assert_uint_eq(len, 7);
  ck_assert_str_eq(data, "second!");
  free(data);
  ck_assert_int_eq(count_entries(tu_dir()), 1); /* no temporaries left */
  /* a missing directory: fails naming the path, creates nothing anywhere */
  path(p, "nodir/out.txt");
  ck_assert_int_eq(qat_write_file_atomic(p, "x", 1), QAT_EIO);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "nodir/out.txt"));
  ck_assert_int_eq(count_entries(tu_dir()), 1);
  /* zero bytes */
  path(p, "zero");
  TU_REQUIRE_OK(qat_write_file_atomic(p, NULL, 0));
  ck_assert_int_eq(stat(p, &sb), 0);
  ck_assert_int_eq(sb.st_size, 0);
}
END_TEST

START_TEST(test_atomic_stream) {
  char p[4096];
  path(p, "s.bin");
  qat_atomic_file f;
  TU_REQUIRE_OK(qat_atomic_open(&f, p));
  TU_REQUIRE_OK(qat_atomic_write(&f, "abc", 3));
  ck_assert(!qat_path_exists(p)); /* invisible until committed */
  ck_assert_int_eq(count_entries(tu_dir()), 1);
  qat_atomic_abort(&f);
  ck_assert_int_eq(count_entries(tu_dir()), 0);
  qat_atomic_abort(&f); /* twice is harmless */

  TU_REQUIRE_OK(qat_atomic_open(&f, p));
  TU_REQUIRE_OK(qat_atomic_write(&f, "abc", 3));
  TU_REQUIRE_OK(qat_atomic_write(&f, "def", 3));
  TU_REQUIRE_OK(qat_atomic_commit(&f));
  ck_assert_ptr_null(f.tmp);
  char *data;
  size_t len;
  TU_REQUIRE_OK(qat_read_file(p, &data, &len));
  ck_assert_str_eq(data, "abcdef");
  free(data);
  ck_assert_int_eq(count_entries(tu_dir()), 1);
  /* a zeroed struct aborts without touching fd 0 */
  int before = fcntl(0, F_GETFD);
  qat_atomic_file z;
  memset(&z, 0, sizeof z);
  qat_atomic_abort(&z);
  ck_assert_int_eq(fcntl(0, F_GETFD), before);
}
END_TEST

START_TEST(test_copy_file) {
  char a[4096], b[4096];
  path(a, "src.bin");
  path(b, "dst.bin");
  /* larger than the 1 MiB copy buffer, not a multiple of it */
  size_t n = 2500000 + 7;
  unsigned char *buf = malloc(n);
  tu_rng r = {42};
  for (size_t i = 0; i < n; i++)
    buf[i] = (unsigned char)tu_next(&r);
  TU_REQUIRE_OK(qat_write_file_atomic(a, buf, n));
  TU_REQUIRE_OK(qat_copy_file(a, b));
  char *data;
  size_t len;
  TU_REQUIRE_OK(qat_read_file(b, &data, &len));
  ck_assert_uint_eq(len, n);
  ck_assert_int_eq(memcmp(data, buf, n), 0);
  free(data);
  free(buf);
  path(a, "missing");
  ck_assert_int_eq(qat_copy_file(a, b), QAT_EIO);
  ck_assert_int_eq(count_entries(tu_dir()), 2);
}
END_TEST

START_TEST(test_list_dir) {
  char p[4096];
  const char *names[] = {"zeta", "Alpha", "beta", "b"};
  for (int i = 0; i < 4; i++) {
    path(p, names[i]);
    put(p, "");
  }
  path(p, "sub");
  TU_REQUIRE_OK(qat_mkdir_p(p));
  char **v;
  int n;
  TU_REQUIRE_OK(qat_list_dir(tu_dir(), &v, &n));
  ck_assert_int_eq(n, 5);
  const char *want[] = {"Alpha", "b", "beta", "sub", "zeta"}; /* byte order */
  for (int i = 0; i < 5; i++)
    ck_assert_str_eq(v[i], want[i]);
  qat_free_list(v, n);
  path(p, "none");
  ck_assert_int_eq(qat_list_dir(p, &v, &n), QAT_EIO);
  ck_assert_int_eq(n, 0);
}
END_TEST

START_TEST(test_rm_rf) {
  char p[4096], outside[4096], link[4096];
  path(p, "tree/a/b");
  TU_REQUIRE_OK(qat_mkdir_p(p));
  path(p, "tree/a/b/f");
  put(p, "x");
  path(p, "tree/g");
  put(p, "y");
  /* a symlink to a directory outside the tree: removed, its target untouched */
  path(outside, "keep");
  TU_REQUIRE_OK(qat_mkdir_p(outside));
  path(p, "keep/precious");
  put(p, "z");
  path(link, "tree/a/link");
  ck_assert_int_eq(symlink(outside, link), 0);
  path(p, "tree");
  TU_REQUIRE_OK(qat_rm_rf(p));
  ck_assert(!qat_path_exists(p));
  path(p, "keep/precious");
  ck_assert(qat_path_exists(p));
  path(p, "tree");
  TU_REQUIRE_OK(qat_rm_rf(p)); /* absent: fine */
  path(p, "keep/precious");
  TU_REQUIRE_OK(qat_rm_rf(p)); /* a plain file */
  ck_assert(!qat_path_exists(p));
}
END_TEST

START_TEST(test_dir_commit) {
  char out[4096], tmp[4096], p[8300];
  path(out, "models/out"); /* the parent does not exist yet */
  mode_t um = umask(022);
  TU_REQUIRE_OK(qat_dir_begin(out, tmp, sizeof tmp));
  ck_assert(qat_is_dir(tmp));
  ck_assert_int_eq(strncmp(tmp, out, strlen(out)), 0);
  ck_assert_ptr_nonnull(strstr(tmp, ".tmp-"));
  snprintf(p, sizeof p, "%s/a.txt", tmp);
  TU_REQUIRE_OK(qat_write_file_atomic(p, "v1", 2));
  ck_assert(!qat_path_exists(out));
  TU_REQUIRE_OK(qat_dir_commit(tmp, out));
  umask(um);
  ck_assert(!qat_path_exists(tmp));
  struct stat sb;
  ck_assert_int_eq(stat(out, &sb), 0);
  ck_assert_int_eq(sb.st_mode & 0777, 0755); /* not mkdtemp's 0700 */
  snprintf(p, sizeof p, "%s/a.txt", out);
  char *data;
  size_t len;
  TU_REQUIRE_OK(qat_read_file(p, &data, &len));
  ck_assert_str_eq(data, "v1");
  free(data);

  /* a second run replaces the previous output whole: old files do not survive */
  TU_REQUIRE_OK(qat_dir_begin(out, tmp, sizeof tmp));
  snprintf(p, sizeof p, "%s/sub", tmp);
  TU_REQUIRE_OK(qat_mkdir_p(p));
  snprintf(p, sizeof p, "%s/sub/b.txt", tmp);
  TU_REQUIRE_OK(qat_write_file_atomic(p, "v2", 2));
  char slash[4200];
  snprintf(slash, sizeof slash, "%s/", out); /* "out/" is the same directory */
  TU_REQUIRE_OK(qat_dir_commit(tmp, slash));
  snprintf(p, sizeof p, "%s/sub/b.txt", out);
  ck_assert(qat_path_exists(p));
  snprintf(p, sizeof p, "%s/a.txt", out);
  ck_assert(!qat_path_exists(p));
  path(p, "models");
  ck_assert_int_eq(count_entries(p), 1); /* no OUT.old-* or OUT.tmp-* left */

  /* abort: the temporary goes, OUT is untouched */
  TU_REQUIRE_OK(qat_dir_begin(out, tmp, sizeof tmp));
  snprintf(p, sizeof p, "%s/junk", tmp);
  put(p, "j");
  qat_dir_abort(tmp);
  ck_assert(!qat_path_exists(tmp));
  path(p, "models");
  ck_assert_int_eq(count_entries(p), 1);
  snprintf(p, sizeof p, "%s/sub/b.txt", out);
  ck_assert(qat_path_exists(p));

  /* too small a buffer is an error, not an overflow */
  char small[8];
  ck_assert_int_eq(qat_dir_begin(out, small, sizeof small), QAT_EINVAL);
  ck_assert_int_eq(qat_dir_commit("/nonexistent-qat-dir", out), QAT_EIO);
}
END_TEST

int main(void) {
  Suite *s = suite_create("fsutil");
  TCase *tc = tcase_create("fsutil");
  tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
  tcase_add_test(tc, test_path_join);
  tcase_add_test(tc, test_mkdir_exists);
  tcase_add_test(tc, test_read_file);
  tcase_add_test(tc, test_write_atomic);
  tcase_add_test(tc, test_atomic_stream);
  tcase_add_test(tc, test_copy_file);
  tcase_add_test(tc, test_list_dir);
  tcase_add_test(tc, test_rm_rf);
  tcase_add_test(tc, test_dir_commit);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
