/* Helpers shared by the Check test programs: assets lookup, seeded random data, tolerances,
 * and a runner that returns 77 (ctest "skipped") when every case skipped. */
#ifndef QAT_TESTUTIL_H
#define QAT_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

/* ../shared/assets or $QAT_ASSETS; NULL when absent. */
const char *tu_assets(void);
/* Path of the built qat binary ($QAT_BIN, else build/qat). */
const char *tu_qat_bin(void);
/* A fresh temporary directory (removed by tu_rmrf). */
char *tu_tmpdir(void);
void tu_rmrf(const char *path);
/* A per-test temporary directory, as a Check checked fixture
 * (tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown)): tu_dir() is its path,
 * tu_dir_path(name) a path inside it (a static buffer, valid until the next call). */
void tu_dir_setup(void);
void tu_dir_teardown(void);
const char *tu_dir(void);
const char *tu_dir_path(const char *name);
/* Run a shell command, return its exit status; output into *out (malloc'd) if out != NULL. */
int tu_run(const char *cmd, char **out);

/* splitmix64-based reproducible randoms. */
typedef struct { uint64_t s; } tu_rng;
uint64_t tu_next(tu_rng *r);
float tu_uniform(tu_rng *r, float lo, float hi);
float tu_normal(tu_rng *r);
void tu_fill_normal(tu_rng *r, float *x, size_t n, float stddev);

/* max |a - b| / (max |b| + tiny), the normalized error used for op comparisons. */
double tu_nerr(const float *a, const float *b, size_t n);

/* Mark a test as skipped: prints "skipped: why" and counts it. */
void tu_skip(const char *why);
/* The CUDA backend into *gpu and 1 when a GPU is usable; else the test is skipped ("no CUDA
 * GPU") and 0. */
int tu_need_gpu(qat_backend **gpu);
/* Writes n bytes to path (fails the test on an I/O error). */
void tu_write_file(const char *path, const void *p, size_t n);
/* srunner over the suite; returns 0 pass, 1 fail, 77 when everything was skipped. */
int tu_run_suite(Suite *s);

#define TU_REQUIRE_OK(expr)                                                                        \
  do {                                                                                             \
    qat_status _s = (expr);                                                                        \
    ck_assert_msg(_s == QAT_OK, "%s -> %s: %s", #expr, qat_status_name(_s), qat_last_error());    \
  } while (0)

#endif
