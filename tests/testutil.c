#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *tu_assets(void) {
  static char buf[4096];
  const char *env = getenv("QAT_ASSETS");
  const char *cands[] = {env, "../shared/assets", "../../shared/assets"};
  for (int i = 0; i < 3; i++) {
    if (!cands[i]) continue;
    snprintf(buf, sizeof buf, "%s/PROVENANCE.md", cands[i]);
    if (access(buf, R_OK) == 0) {
      snprintf(buf, sizeof buf, "%s", cands[i]);
      return buf;
    }
  }
  return NULL;
}

const char *tu_qat_bin(void) {
  const char *b = getenv("QAT_BIN");
  return b ? b : "build/qat";
}

char *tu_tmpdir(void) {
  char tmpl[] = "/tmp/qat-test-XXXXXX";
  char *d = mkdtemp(tmpl);
  ck_assert_ptr_nonnull(d);
  return strdup(d);
}

void tu_rmrf(const char *path) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}

int tu_run(const char *cmd, char **out) {
  FILE *p = popen(cmd, "r");
  if (!p) return -1;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  size_t n;
  while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
    len += n;
    if (cap - len < 1024) buf = realloc(buf, cap *= 2);
  }
  buf[len] = 0;
  int st = pclose(p);
  if (out)
    *out = buf;
  else
    free(buf);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

uint64_t tu_next(tu_rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

float tu_uniform(tu_rng *r, float lo, float hi) {
  return lo + (hi - lo) * (float)((tu_next(r) >> 40) * (1.0 / 16777216.0));
}

float tu_normal(tu_rng *r) {
  double u1 = ((tu_next(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
  double u2 = (tu_next(r) >> 11) * (1.0 / 9007199254740992.0);
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void tu_fill_normal(tu_rng *r, float *x, size_t n, float stddev) {
  for (size_t i = 0; i < n; i++) x[i] = stddev * tu_normal(r);
}

double tu_nerr(const float *a, const float *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (d > num || d != d) num = d;
    if (fabs(b[i]) > den) den = fabs(b[i]);
  }
  return num / (den + 1e-30);
}

static int g_skipped, g_ran;
void tu_skip(const char *why) {
  printf("skipped: %s\n", why);
  fflush(stdout);
  g_skipped++;
}

int tu_run_suite(Suite *s) {
  SRunner *sr = srunner_create(s);
  /* no fork: skip counters and sanitizers see one process */
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  g_ran = srunner_ntests_run(sr);
  srunner_free(sr);
  if (failed) return 1;
  if (g_ran > 0 && g_skipped >= g_ran) return 77;
  return 0;
}

int tu_need_gpu(qat_backend **gpu) {
  if (!qat_cuda_available()) {
    tu_skip("no CUDA GPU");
    return 0;
  }
  TU_REQUIRE_OK(qat_backend_cuda(gpu));
  return 1;
}

void tu_write_file(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  ck_assert_uint_eq(fwrite(p, 1, n, f), n);
  ck_assert_int_eq(fclose(f), 0);
}

static char *g_tu_dir;
void tu_dir_setup(void) { g_tu_dir = tu_tmpdir(); }
void tu_dir_teardown(void) {
  tu_rmrf(g_tu_dir);
  free(g_tu_dir);
  g_tu_dir = NULL;
}
const char *tu_dir(void) { return g_tu_dir; }
const char *tu_dir_path(const char *name) {
  static char buf[4096];
  snprintf(buf, sizeof buf, "%s/%s", g_tu_dir, name);
  return buf;
}
