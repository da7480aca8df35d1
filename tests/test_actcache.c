/* The Block-AP activation cache (host/train/actcache.c) on the CPU backend:
 * - the same random data put / get through budgets that force all-device, all-host, all-disk and
 *   a mixed split come back bit-identical (F32 and BF16, odd slot sizes), with the plan's slot
 *   counts as computed here; disk files exist while the cache lives and are gone after free;
 * - prefetch then get returns the right slot (in order, out of order, repeated, more hints than
 *   staging buffers) and is actually used (hit counter); a put after a prefetch of the same slot
 *   (queued, in flight or completed) is never shadowed by the stale prefetch;
 * - a random interleaving of put / prefetch / get against a shadow copy (the worker thread runs
 *   concurrently: under ASan this is the race / leak check);
 * - a budget too small without a disk tier is QAT_ENOMEM naming the sizes; bad slots and tensors
 *   are QAT_EINVAL. Exactness everywhere: a slot is bytes moved, nothing is computed. */
#include "testutil.h"

#include "core/log.h"
#include "train/actcache.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#define NSETS 3
#define NSAMP 7

static int count_files(const char *dir) {
  DIR *d = opendir(dir);
  ck_assert_ptr_nonnull(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* Slot contents: random bits (any pattern must survive, NaN payloads included). */
static void fill(uint8_t *p, size_t n, uint64_t seed) {
  tu_rng r = {seed};
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(tu_next(&r) >> 56);
}

static qat_tensor slot_tensor(void *p, qat_dtype dt, int64_t elems) {
  qat_tensor t = qat_view1(p, dt, QAT_DEV_CPU, elems);
  t.name = "test.slot";
  return t;
}

/* Budgets in samples (all sets of a sample share a tier). */
static void roundtrip(qat_dtype dt, int64_t elems, int64_t dev_samples, int64_t host_samples,
                      const char *dir) {
  qat_backend *be = qat_backend_cpu();
  size_t sb = (size_t)elems * qat_dtype_size(dt), sample = sb * NSETS;
  qat_actcache_budget bud = {dev_samples * sample + sample / 2, host_samples * sample + 7, dir};
  qat_actcache *c = NULL;
  TU_REQUIRE_OK(qat_actcache_create(be, NSETS, NSAMP, elems, dt, &bud, &c));
  int64_t nd = dev_samples < NSAMP ? dev_samples : NSAMP;
  int64_t nh = host_samples < NSAMP - nd ? host_samples : NSAMP - nd, nk = NSAMP - nd - nh;
  qat_actcache_plan p;
  qat_actcache_get_plan(c, &p);
  ck_assert_int_eq(p.slots_device, nd * NSETS);
  ck_assert_int_eq(p.slots_host, nh * NSETS);
  ck_assert_int_eq(p.slots_disk, nk * NSETS);
  ck_assert_uint_eq(p.bytes_disk, (size_t)(nk * NSETS) * sb);
  if (dir) ck_assert_int_eq(count_files(dir), nk > 0 ? NSETS : 0);

  uint8_t *data = malloc(sample * NSAMP), *got = malloc(sb);
  fill(data, sample * NSAMP, 42 + (uint64_t)elems);
  for (int64_t i = 0; i < NSAMP; i++)
    for (int s = 0; s < NSETS; s++) {
      qat_tensor t = slot_tensor(data + (i * NSETS + s) * sb, dt, elems);
      TU_REQUIRE_OK(qat_actcache_put(c, s, i, &t));
    }
  for (int pass = 0; pass < 2; pass++) /* forward, then backward order */
    for (int64_t k = 0; k < NSAMP; k++)
      for (int s = 0; s < NSETS; s++) {
        int64_t i = pass ? NSAMP - 1 - k : k;
        memset(got, 0xab, sb);
        qat_tensor t = slot_tensor(got, dt, elems);
        TU_REQUIRE_OK(qat_actcache_get(c, s, i, &t));
        ck_assert_msg(memcmp(got, data + (i * NSETS + s) * sb, sb) == 0,
                      "slot (%d, %lld) differs (tiers %lld/%lld/%lld)", s, (long long)i,
                      (long long)nd, (long long)nh, (long long)nk);
      }
  qat_actcache_free(c);
  if (dir) ck_assert_int_eq(count_files(dir), 0);
  free(data);
  free(got);
}

START_TEST(test_tiers_roundtrip) {
  char *dir = tu_tmpdir();
  for (int bf = 0; bf < 2; bf++) {
    qat_dtype dt = bf ? QAT_BF16 : QAT_F32;
    int64_t elems = bf ? 1001 : 777;
    roundtrip(dt, elems, 100, 0, NULL); /* all device */
    roundtrip(dt, elems, 0, 100, NULL); /* all host */
    roundtrip(dt, elems, 0, 0, dir);    /* all disk */
    roundtrip(dt, elems, 2, 3, dir);    /* mixed: 2 device, 3 host, 2 disk samples */
    roundtrip(dt, elems, 6, 0, dir);    /* device and disk */
  }
  tu_rmrf(dir);
  free(dir);
}
END_TEST

typedef struct pf {
  qat_actcache *c;
  char *dir;
  int64_t elems;
  size_t sb;
  uint8_t *data; /* the expected content of every slot: [NSAMP][NSETS][sb] */
  uint8_t *got;
} pf;

static void pf_open(pf *f, int64_t nsamples_host) {
  f->dir = tu_tmpdir();
  f->elems = 4099;
  f->sb = (size_t)f->elems * 4;
  qat_actcache_budget bud = {0, (size_t)nsamples_host * NSETS * f->sb, f->dir};
  TU_REQUIRE_OK(qat_actcache_create(qat_backend_cpu(), NSETS, NSAMP, f->elems, QAT_F32, &bud, &f->c));
  f->data = malloc(f->sb * NSETS * NSAMP);
  f->got = malloc(f->sb);
  fill(f->data, f->sb * NSETS * NSAMP, 7);
  for (int64_t i = 0; i < NSAMP; i++)
    for (int s = 0; s < NSETS; s++) {
      qat_tensor t = slot_tensor(f->data + (i * NSETS + s) * f->sb, QAT_F32, f->elems);
      TU_REQUIRE_OK(qat_actcache_put(f->c, s, i, &t));
    }
}

static void pf_put(pf *f, int s, int64_t i, uint64_t seed) {
  uint8_t *d = f->data + (i * NSETS + s) * f->sb;
  fill(d, f->sb, seed);
  qat_tensor t = slot_tensor(d, QAT_F32, f->elems);
  TU_REQUIRE_OK(qat_actcache_put(f->c, s, i, &t));
}

static void pf_get(pf *f, int s, int64_t i) {
  memset(f->got, 0x5a, f->sb);
  qat_tensor t = slot_tensor(f->got, QAT_F32, f->elems);
  TU_REQUIRE_OK(qat_actcache_get(f->c, s, i, &t));
  ck_assert_msg(memcmp(f->got, f->data + (i * NSETS + s) * f->sb, f->sb) == 0,
                "slot (%d, %lld) differs", s, (long long)i);
}

static void pf_close(pf *f) {
  qat_actcache_free(f->c);
  ck_assert_int_eq(count_files(f->dir), 0);
  tu_rmrf(f->dir);
  free(f->dir);
  free(f->data);
  free(f->got);
}

static int64_t hits_of(qat_actcache *c) {
  int64_t h, r, d;
  qat_actcache_stats(c, &h, &r, &d);
  return h;
}
static int64_t sync_reads_of(qat_actcache *c) {
  int64_t h, r, d;
  qat_actcache_stats(c, &h, &r, &d);
  return r;
}

START_TEST(test_prefetch) {
  pf f;
  pf_open(&f, 0);
  /* in order */
  TU_REQUIRE_OK(qat_actcache_prefetch(f.c, 0, 3));
  usleep(50000); /* let it complete (the data must be right either way; a get of a hint the
                  * worker has not started yet reads the slot itself, so hit counts are
                  * only asserted in total below) */
  pf_get(&f, 0, 3);
  /* out of order */
  TU_REQUIRE_OK(qat_actcache_prefetch(f.c, 2, 5));
  TU_REQUIRE_OK(qat_actcache_prefetch(f.c, 1, 1));
  TU_REQUIRE_OK(qat_actcache_prefetch(f.c, 0, 6));
  usleep(50000);
  pf_get(&f, 1, 1);
  pf_get(&f, 0, 6);
  pf_get(&f, 2, 5);
  ck_assert_int_ge(hits_of(f.c), 1); /* prefetches are used */
  /* repeated: one prefetch serves one get; the next get reads again */
  TU_REQUIRE_OK(qat_actcache_prefetch(f.c, 1, 4));
  TU_REQUIRE_OK(qat_actcache_prefetch(f.c, 1, 4));
  usleep(50000);
  pf_get(&f, 1, 4);
  int64_t r0 = sync_reads_of(f.c);
  pf_get(&f, 1, 4);
  ck_assert_int_eq(sync_reads_of(f.c), r0 + 1);
  /* overwritten after a completed prefetch */
  TU_REQUIRE_OK(qat_actcache_prefetch(f.c, 2, 2));
  usleep(50000);
  pf_put(&f, 2, 2, 1001);
  pf_get(&f, 2, 2);
  /* overwritten right after the hint (queued or in flight) */
  for (int k = 0; k < 20; k++) {
    TU_REQUIRE_OK(qat_actcache_prefetch(f.c, k % NSETS, k % NSAMP));
    pf_put(&f, k % NSETS, k % NSAMP, 2000 + (uint64_t)k);
    pf_get(&f, k % NSETS, k % NSAMP);
  }
  /* more hints than staging buffers: older ones are evicted or dropped, results unchanged */
  for (int64_t i = 0; i < NSAMP; i++)
    for (int s = 0; s < NSETS; s++) TU_REQUIRE_OK(qat_actcache_prefetch(f.c, s, i));
  for (int64_t i = NSAMP - 1; i >= 0; i--)
    for (int s = 0; s < NSETS; s++) pf_get(&f, s, i);
  /* hints on slots of faster tiers are accepted and ignored: see the mixed case below */
  pf_close(&f);

  /* mixed tiers: samples 0..2 in host memory, 3..6 on disk */
  pf_open(&f, 3);
  TU_REQUIRE_OK(qat_actcache_prefetch(f.c, 1, 1)); /* host: nothing to do */
  TU_REQUIRE_OK(qat_actcache_prefetch(f.c, 1, 5));
  usleep(50000);
  pf_get(&f, 1, 1);
  pf_get(&f, 1, 5);
  ck_assert_int_le(hits_of(f.c), 1); /* only the disk slot can be prefetched */
  pf_close(&f);
}
END_TEST

/* Random put / prefetch / get against the shadow copy, no sleeps: the worker races the caller. */
START_TEST(test_prefetch_random_interleaving) {
  pf f;
  pf_open(&f, 1);
  tu_rng r = {99};
  for (int k = 0; k < 3000; k++) {
    int s = (int)(tu_next(&r) % NSETS);
    int64_t i = (int64_t)(tu_next(&r) % NSAMP);
    int op = (int)(tu_next(&r) % 10);
    if (op < 5)
      TU_REQUIRE_OK(qat_actcache_prefetch(f.c, s, i));
    else if (op < 7)
      pf_put(&f, s, i, 5000 + (uint64_t)k);
    else
      pf_get(&f, s, i);
  }
  int64_t h, rd, d;
  qat_actcache_stats(f.c, &h, &rd, &d);
  printf("random interleaving: %lld gets from prefetches, %lld synchronous, %lld hints dropped\n",
         (long long)h, (long long)rd, (long long)d);
  ck_assert_int_gt(h, 0);
  pf_close(&f);
  /* create and free with the worker idle, repeatedly (join while waiting) */
  for (int k = 0; k < 20; k++) {
    pf_open(&f, 0);
    pf_close(&f);
  }
}
END_TEST

START_TEST(test_errors) {
  qat_backend *be = qat_backend_cpu();
  qat_actcache *c = NULL;
  /* 3 x 7 x 1 MiB = 21 MiB in 4 + 8 MiB, no disk */
  qat_actcache_budget bud = {4u << 20, 8u << 20, NULL};
  ck_assert_int_eq(qat_actcache_create(be, 3, 7, 1 << 18, QAT_F32, &bud, &c), QAT_ENOMEM);
  ck_assert_ptr_null(c);
  const char *msg = qat_last_error();
  ck_assert_msg(strstr(msg, "3 sets x 7 samples x 1.0 MiB") && strstr(msg, "short by") &&
                    strstr(msg, "disk_dir"),
                "message: %s", msg);
  ck_assert_int_eq(qat_actcache_create(be, 0, 7, 10, QAT_F32, &bud, &c), QAT_EINVAL);
  ck_assert_int_eq(qat_actcache_create(be, 3, 7, 10, QAT_I32, &bud, &c), QAT_EINVAL);
  qat_actcache_budget nodir = {0, 0, "/proc/qat-actcache"}; /* cannot be created */
  ck_assert_int_ne(qat_actcache_create(be, 3, 7, 10, QAT_F32, &nodir, &c), QAT_OK);
  ck_assert_ptr_null(c);
  /* a missing disk_dir is created */
  char *tmp = tu_tmpdir(), sub[4200];
  snprintf(sub, sizeof sub, "%s/a/b", tmp);
  qat_actcache_budget mk = {0, 0, sub};
  TU_REQUIRE_OK(qat_actcache_create(be, 3, 7, 10, QAT_F32, &mk, &c));
  ck_assert_int_eq(count_files(sub), 3);
  qat_actcache_free(c);
  ck_assert_int_eq(count_files(sub), 0);
  tu_rmrf(tmp);
  free(tmp);

  qat_actcache_budget big = {1u << 20, 0, NULL};
  TU_REQUIRE_OK(qat_actcache_create(be, 2, 5, 10, QAT_F32, &big, &c));
  float buf[11];
  qat_tensor t = slot_tensor(buf, QAT_F32, 10), t11 = slot_tensor(buf, QAT_F32, 11);
  qat_tensor tb = slot_tensor(buf, QAT_BF16, 10);
  ck_assert_int_eq(qat_actcache_put(c, 2, 0, &t), QAT_EINVAL);
  ck_assert_int_eq(qat_actcache_put(c, 0, 5, &t), QAT_EINVAL);
  ck_assert_int_eq(qat_actcache_get(c, -1, 0, &t), QAT_EINVAL);
  ck_assert_int_eq(qat_actcache_put(c, 0, 0, &t11), QAT_EINVAL);
  ck_assert_ptr_nonnull(strstr(qat_last_error(), "test.slot"));
  ck_assert_int_eq(qat_actcache_get(c, 0, 0, &tb), QAT_EINVAL);
  ck_assert_int_eq(qat_actcache_prefetch(c, 0, 9), QAT_EINVAL);
  qat_actcache_free(c);
  qat_actcache_free(NULL);
}
END_TEST

int main(void) {
  qat_log_set_level(QAT_LOG_QUIET); /* one plan line per cache: many caches here */
  Suite *s = suite_create("actcache");
  TCase *tc = tcase_create("cpu");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_tiers_roundtrip);
  tcase_add_test(tc, test_prefetch);
  tcase_add_test(tc, test_prefetch_random_interleaving);
  tcase_add_test(tc, test_errors);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
