/* The Block-AP activation cache (actcache.h): nsets x nsamples slots of slot_elems elements,
 * placed per sample index across three tiers, fastest first:
 *   sample i < nd            -> device memory (be->alloc), one buffer, set-major;
 *   nd <= i < nd + nh        -> host memory (be->host_alloc: pinned on CUDA), set-major;
 *   nd + nh <= i < nsamples  -> disk: one file per set in disk_dir (mkstemp names, unlinked at
 *                               free), slot i at offset (i - nd - nh) * slot_bytes.
 * (All sets of one sample share a tier, so a batch of the trainer reads one tier per sample.)
 *
 * Disk reads can be prefetched: one background worker thread reads queued disk slots into a
 * ring of slot-sized host staging buffers (host_alloc). get() of a disk slot uses a completed
 * (or waits for an in-flight) prefetch of that slot, else reads synchronously into the caller's
 * staging buffer; then uploads to the device. put() of a slot drops any prefetch of it first
 * (waiting if the worker is reading it), so a get never sees stale data.
 *
 * Threads: the cache is used by one caller thread; the only other thread is the worker. The
 * ring (the queue) is touched under one mutex, with one condition variable each way; the worker
 * never calls backend ops or QAT_FAIL (it only preads, and records errno). free() joins it. */
#include "train/actcache.h"

#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define RING_MAX 8 /* staging buffers: enough for a batch of inputs and targets ahead */

typedef enum { E_FREE = 0, E_QUEUED, E_BUSY, E_READY } entry_state;

typedef struct ring_entry {
  void *buf; /* slot_bytes, host_alloc */
  entry_state state;
  int set;
  int64_t i;
  uint64_t seq; /* queue order (FIFO) and age for eviction */
  int err;      /* errno of a failed read (state goes back to E_FREE) */
} ring_entry;

struct qat_actcache {
  const qat_backend *be;
  int nsets;
  int64_t nsamples, slot_elems;
  qat_dtype dtype;
  size_t slot_bytes;
  int64_t nd, nh, nk; /* samples per tier: device, host, disk */
  void *dev;          /* [nsets][nd] slots */
  void *host;         /* [nsets][nh] slots */
  int *fds;           /* [nsets] disk files (-1: none) */
  char **paths;       /* [nsets] their names (unlinked at free) */
  void *stage;        /* caller's staging buffer for synchronous disk reads / writes */
  char dir[1024];

  /* prefetch */
  int nring;
  ring_entry ring[RING_MAX];
  uint64_t seq;
  pthread_t worker;
  int worker_started, stop;
  pthread_mutex_t mu;
  pthread_cond_t wake; /* caller -> worker: work queued or stop */
  pthread_cond_t done; /* worker -> caller: an entry left E_BUSY */
  int64_t hits, sync_reads, dropped; /* disk gets served by a prefetch / read here; hints dropped */
};

static double gib(double b) { return b / (1024.0 * 1024.0 * 1024.0); }

/* "40.0 GiB", "16.0 MiB", "12.0 KiB" */
static const char *human(char *buf, size_t n, double b) {
  if (b >= 1024.0 * 1024.0 * 1024.0)
    snprintf(buf, n, "%.1f GiB", gib(b));
  else if (b >= 1024.0 * 1024.0)
    snprintf(buf, n, "%.1f MiB", b / 1048576.0);
  else
    snprintf(buf, n, "%.1f KiB", b / 1024.0);
  return buf;
}

/* ---- disk I/O (whole-slot pread / pwrite, retried on short transfers and EINTR) -------------- */

static int read_full(int fd, void *buf, size_t n, off_t off) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = pread(fd, p, n, off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    if (r == 0) return EIO; /* the file is shorter than its slots: truncated underneath us */
    p += r;
    n -= (size_t)r;
    off += r;
  }
  return 0;
}

static int write_full(int fd, const void *buf, size_t n, off_t off) {
  const char *p = buf;
  while (n > 0) {
    ssize_t r = pwrite(fd, p, n, off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    p += r;
    n -= (size_t)r;
    off += r;
  }
  return 0;
}

static off_t disk_off(const qat_actcache *c, int64_t i) {
  return (off_t)(i - c->nd - c->nh) * (off_t)c->slot_bytes;
}

/* ---- the prefetch worker ---------------------------------------------------------------------- */

static ring_entry *oldest(qat_actcache *c, entry_state st) {
  ring_entry *best = NULL;
  for (int k = 0; k < c->nring; k++)
    if (c->ring[k].state == st && (!best || c->ring[k].seq < best->seq)) best = &c->ring[k];
  return best;
}

static ring_entry *find(qat_actcache *c, int set, int64_t i) {
  for (int k = 0; k < c->nring; k++)
    if (c->ring[k].state != E_FREE && c->ring[k].set == set && c->ring[k].i == i)
      return &c->ring[k];
  return NULL;
}

static void *worker_main(void *arg) {
  qat_actcache *c = arg;
  pthread_mutex_lock(&c->mu);
  for (;;) {
    ring_entry *e;
    while (!c->stop && !(e = oldest(c, E_QUEUED))) pthread_cond_wait(&c->wake, &c->mu);
    if (c->stop) break;
    e->state = E_BUSY; /* from now on only this thread touches e->buf until it leaves E_BUSY */
    int fd = c->fds[e->set];
    off_t off = disk_off(c, e->i);
    pthread_mutex_unlock(&c->mu);
    int err = read_full(fd, e->buf, c->slot_bytes, off);
    pthread_mutex_lock(&c->mu);
    e->err = err;
    e->state = err ? E_FREE : E_READY;
    pthread_cond_broadcast(&c->done);
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

/* Waits (mutex held) while the worker reads entry e. */
static void wait_not_busy(qat_actcache *c, ring_entry *e) {
  while (e->state == E_BUSY) pthread_cond_wait(&c->done, &c->mu);
}

/* ---- create / free ---------------------------------------------------------------------------- */

void qat_actcache_free(qat_actcache *c) {
  if (!c) return;
  if (c->worker_started) {
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->worker, NULL);
  }
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->wake);
  pthread_cond_destroy(&c->done);
  for (int k = 0; k < c->nring; k++)
    if (c->ring[k].buf) c->be->host_free(c->be, c->ring[k].buf);
  if (c->stage) c->be->host_free(c->be, c->stage);
  if (c->dev) c->be->free(c->be, c->dev);
  if (c->host) c->be->host_free(c->be, c->host);
  for (int s = 0; c->fds && s < c->nsets; s++) {
    if (c->fds[s] >= 0) close(c->fds[s]);
    if (c->paths && c->paths[s]) {
      unlink(c->paths[s]);
      free(c->paths[s]);
    }
  }
  free(c->fds);
  free(c->paths);
  free(c);
}

/* mkdir -p (the cache directory is a job setting; its files are removed at free, the directory
 * is left). */
static int make_dirs(const char *dir) {
  char p[1024];
  int n = snprintf(p, sizeof p, "%s", dir);
  if (n <= 0 || n >= (int)sizeof p) return ENAMETOOLONG;
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = 0;
    if (mkdir(p, 0777) != 0 && errno != EEXIST) return errno;
    *s = '/';
  }
  if (mkdir(p, 0777) != 0 && errno != EEXIST) return errno;
  return 0;
}

static qat_status make_files(qat_actcache *c, const char *dir) {
  size_t bytes = (size_t)c->nk * c->slot_bytes;
  int e0 = make_dirs(dir);
  if (e0) return QAT_FAIL(QAT_EIO, "actcache: cannot create disk_dir %s: %s", dir, strerror(e0));
  struct statvfs vf;
  if (statvfs(dir, &vf) != 0)
    return QAT_FAIL(QAT_EIO, "actcache: disk_dir %s: %s", dir, strerror(errno));
  double avail = (double)vf.f_bavail * (double)vf.f_frsize;
  if (avail < (double)bytes * (double)c->nsets)
    return QAT_FAIL(QAT_ENOMEM,
                    "actcache: the disk tier needs %.1f GiB in %s but only %.1f GiB are free "
                    "(short by %.1f GiB)",
                    gib((double)bytes * c->nsets), dir, gib(avail),
                    gib((double)bytes * c->nsets - avail));
  for (int s = 0; s < c->nsets; s++) {
    size_t n = strlen(dir) + 40;
    c->paths[s] = malloc(n);
    if (!c->paths[s]) return QAT_FAIL(QAT_ENOMEM, "actcache: out of host memory");
    snprintf(c->paths[s], n, "%s/qat-actcache-set%d-XXXXXX", dir, s);
    c->fds[s] = mkstemp(c->paths[s]);
    if (c->fds[s] < 0) {
      int e = errno;
      free(c->paths[s]);
      c->paths[s] = NULL;
      return QAT_FAIL(QAT_EIO, "actcache: cannot create a cache file in %s: %s", dir, strerror(e));
    }
    /* sparse until written: the space check above is the reservation */
    if (ftruncate(c->fds[s], (off_t)bytes) != 0)
      return QAT_FAIL(QAT_EIO, "actcache: %s: cannot size to %.1f GiB: %s", c->paths[s],
                      gib((double)bytes), strerror(errno));
  }
  return QAT_OK;
}

qat_status qat_actcache_create(const qat_backend *be, int nsets, int64_t nsamples,
                               int64_t slot_elems, qat_dtype dtype,
                               const qat_actcache_budget *budget, qat_actcache **out) {
  *out = NULL;
  if (!be || !budget) return QAT_FAIL(QAT_EINVAL, "actcache: backend and budget are required");
  if (nsets < 1 || nsamples < 1 || slot_elems < 1)
    return QAT_FAIL(QAT_EINVAL, "actcache: %d sets x %lld samples x %lld elements must be positive",
                    nsets, (long long)nsamples, (long long)slot_elems);
  if (dtype != QAT_F32 && dtype != QAT_BF16)
    return QAT_FAIL(QAT_EINVAL, "actcache: dtype %s (F32 or BF16)", qat_dtype_name(dtype));
  if (!be->host_alloc || !be->host_free)
    return QAT_FAIL(QAT_EUNSUPPORTED, "actcache: the %s backend has no host_alloc", be->name);
  size_t slot_bytes = (size_t)slot_elems * qat_dtype_size(dtype);
  size_t sample_bytes = slot_bytes * (size_t)nsets; /* all sets of one sample share a tier */
  int64_t nd = (int64_t)(budget->device_bytes / sample_bytes);
  if (nd > nsamples) nd = nsamples;
  int64_t nh = (int64_t)(budget->host_bytes / sample_bytes);
  if (nh > nsamples - nd) nh = nsamples - nd;
  int64_t nk = nsamples - nd - nh;
  if (nk > 0 && !budget->disk_dir) {
    char h[5][32];
    return QAT_FAIL(QAT_ENOMEM,
                    "actcache: %d sets x %lld samples x %s = %s do not fit the device budget %s + "
                    "host budget %s (%lld of %lld samples fit; short by %s) and no disk_dir is set",
                    nsets, (long long)nsamples, human(h[0], 32, (double)slot_bytes),
                    human(h[1], 32, (double)sample_bytes * (double)nsamples),
                    human(h[2], 32, (double)budget->device_bytes),
                    human(h[3], 32, (double)budget->host_bytes), (long long)(nd + nh),
                    (long long)nsamples, human(h[4], 32, (double)nk * (double)sample_bytes));
  }

  qat_actcache *c = calloc(1, sizeof *c);
  if (!c) return QAT_FAIL(QAT_ENOMEM, "actcache: out of host memory");
  c->be = be;
  c->nsets = nsets;
  c->nsamples = nsamples;
  c->slot_elems = slot_elems;
  c->dtype = dtype;
  c->slot_bytes = slot_bytes;
  c->nd = nd;
  c->nh = nh;
  c->nk = nk;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->wake, NULL);
  pthread_cond_init(&c->done, NULL);
  qat_status st = QAT_OK;
  c->fds = malloc(sizeof *c->fds * (size_t)nsets);
  c->paths = calloc((size_t)nsets, sizeof *c->paths);
  if (!c->fds || !c->paths) {
    st = QAT_FAIL(QAT_ENOMEM, "actcache: out of host memory");
    goto fail;
  }
  for (int s = 0; s < nsets; s++) c->fds[s] = -1;
  if (nd > 0)
    QAT_CHECK(st, qat_context(be->alloc(be, &c->dev, (size_t)nd * sample_bytes),
                              "actcache: device tier of %.1f GiB", gib((double)nd * sample_bytes)),
              fail);
  if (nh > 0)
    QAT_CHECK(st, qat_context(be->host_alloc(be, &c->host, (size_t)nh * sample_bytes),
                              "actcache: host tier of %.1f GiB", gib((double)nh * sample_bytes)),
              fail);
  if (nk > 0) {
    snprintf(c->dir, sizeof c->dir, "%s", budget->disk_dir);
    QAT_CHECK(st, make_files(c, budget->disk_dir), fail);
    QAT_CHECK(st, be->host_alloc(be, &c->stage, slot_bytes), fail);
    c->nring = nk * nsets < RING_MAX ? (int)(nk * nsets) : RING_MAX;
    for (int k = 0; k < c->nring; k++)
      QAT_CHECK(st, be->host_alloc(be, &c->ring[k].buf, slot_bytes), fail);
    if (pthread_create(&c->worker, NULL, worker_main, c) != 0) {
      st = QAT_FAIL(QAT_EIO, "actcache: cannot start the prefetch thread");
      goto fail;
    }
    c->worker_started = 1;
  }
  char where[1100] = "", h[4][32];
  if (nk > 0) snprintf(where, sizeof where, " in %s", c->dir);
  qat_log("actcache: %d sets x %lld samples x %s: device %s (%lld slots), host %s (%lld slots), "
          "disk %s (%lld slots)%s",
          nsets, (long long)nsamples, human(h[0], 32, (double)slot_bytes),
          human(h[1], 32, (double)nd * sample_bytes), (long long)(nd * nsets),
          human(h[2], 32, (double)nh * sample_bytes), (long long)(nh * nsets),
          human(h[3], 32, (double)nk * sample_bytes), (long long)(nk * nsets), where);
  *out = c;
  return QAT_OK;
fail:
  qat_actcache_free(c);
  return st;
}

void qat_actcache_get_plan(const qat_actcache *c, qat_actcache_plan *p) {
  memset(p, 0, sizeof *p);
  if (!c) return;
  p->slots_device = c->nd * c->nsets;
  p->slots_host = c->nh * c->nsets;
  p->slots_disk = c->nk * c->nsets;
  p->bytes_device = (size_t)p->slots_device * c->slot_bytes;
  p->bytes_host = (size_t)p->slots_host * c->slot_bytes;
  p->bytes_disk = (size_t)p->slots_disk * c->slot_bytes;
}

/* ---- put / get / prefetch --------------------------------------------------------------------- */

static qat_status check_slot(const qat_actcache *c, const char *op, int set, int64_t i,
                             const qat_tensor *t) {
  if (set < 0 || set >= c->nsets || i < 0 || i >= c->nsamples)
    return QAT_FAIL(QAT_EINVAL, "actcache %s: slot (set %d, sample %lld) is outside %d x %lld", op,
                    set, (long long)i, c->nsets, (long long)c->nsamples);
  if (!t) return QAT_OK;
  if (!t->data || t->dtype != c->dtype || t->device != c->be->device || qat_numel(t) != c->slot_elems)
    return QAT_FAIL(QAT_EINVAL,
                    "actcache %s: tensor %s must hold %lld %s elements on the %s device (got %lld "
                    "%s)", op, t->name ? t->name : "(unnamed)", (long long)c->slot_elems,
                    qat_dtype_name(c->dtype), c->be->name, (long long)qat_numel(t),
                    qat_dtype_name(t->dtype));
  return QAT_OK;
}

static void *dev_slot(const qat_actcache *c, int set, int64_t i) {
  return (char *)c->dev + ((size_t)set * (size_t)c->nd + (size_t)i) * c->slot_bytes;
}
static void *host_slot(const qat_actcache *c, int set, int64_t i) {
  return (char *)c->host + ((size_t)set * (size_t)c->nh + (size_t)(i - c->nd)) * c->slot_bytes;
}

qat_status qat_actcache_put(qat_actcache *c, int set, int64_t i, const qat_tensor *src) {
  QAT_TRY(check_slot(c, "put", set, i, src));
  if (i < c->nd) return c->be->copy(c->be, dev_slot(c, set, i), src->data, c->slot_bytes);
  if (i < c->nd + c->nh) return c->be->download(c->be, host_slot(c, set, i), src->data, c->slot_bytes);
  /* a prefetch of this slot would hold the old data: drop it (after the worker is done with it) */
  pthread_mutex_lock(&c->mu);
  ring_entry *e = find(c, set, i);
  if (e) {
    wait_not_busy(c, e);
    e->state = E_FREE;
  }
  pthread_mutex_unlock(&c->mu);
  QAT_TRY(c->be->download(c->be, c->stage, src->data, c->slot_bytes));
  int err = write_full(c->fds[set], c->stage, c->slot_bytes, disk_off(c, i));
  if (err)
    return QAT_FAIL(QAT_EIO, "actcache put: %s: cannot write slot %lld: %s", c->paths[set],
                    (long long)i, strerror(err));
  return QAT_OK;
}

qat_status qat_actcache_get(qat_actcache *c, int set, int64_t i, qat_tensor *dst) {
  QAT_TRY(check_slot(c, "get", set, i, dst));
  if (i < c->nd) return c->be->copy(c->be, dst->data, dev_slot(c, set, i), c->slot_bytes);
  if (i < c->nd + c->nh) return c->be->upload(c->be, dst->data, host_slot(c, set, i), c->slot_bytes);
  pthread_mutex_lock(&c->mu);
  ring_entry *e = find(c, set, i);
  if (e && e->state == E_QUEUED) { /* not started: cheaper to read it here than to wait */
    e->state = E_FREE;
    e = NULL;
  }
  if (e) wait_not_busy(c, e);
  int ready = e && e->state == E_READY;
  pthread_mutex_unlock(&c->mu);
  qat_status st;
  if (ready) {
    /* E_READY entries are the caller's: the worker never touches them */
    st = c->be->upload(c->be, dst->data, e->buf, c->slot_bytes);
    c->hits++;
    pthread_mutex_lock(&c->mu);
    e->state = E_FREE;
    pthread_mutex_unlock(&c->mu);
    return st;
  }
  c->sync_reads++;
  int err = read_full(c->fds[set], c->stage, c->slot_bytes, disk_off(c, i));
  if (err)
    return QAT_FAIL(QAT_EIO, "actcache get: %s: cannot read slot %lld: %s", c->paths[set],
                    (long long)i, strerror(err));
  return c->be->upload(c->be, dst->data, c->stage, c->slot_bytes);
}

qat_status qat_actcache_prefetch(qat_actcache *c, int set, int64_t i) {
  QAT_TRY(check_slot(c, "prefetch", set, i, NULL));
  if (i < c->nd + c->nh) return QAT_OK; /* device and host slots are read directly */
  pthread_mutex_lock(&c->mu);
  if (!find(c, set, i)) {
    ring_entry *e = oldest(c, E_FREE);
    if (!e) e = oldest(c, E_READY); /* evict the oldest unread prefetch */
    if (e) {
      e->state = E_QUEUED;
      e->set = set;
      e->i = i;
      e->seq = ++c->seq;
      e->err = 0;
      pthread_cond_signal(&c->wake);
    } else {
      c->dropped++; /* every buffer is queued or being read */
    }
  }
  pthread_mutex_unlock(&c->mu);
  return QAT_OK;
}

/* Caller thread only. */
void qat_actcache_stats(const qat_actcache *c, int64_t *hits, int64_t *sync_reads,
                        int64_t *dropped) {
  *hits = c->hits;
  *sync_reads = c->sync_reads;
  *dropped = c->dropped;
}

/* ---- batches */

qat_status qat_actcache_get_batch(qat_actcache *c, int set, int64_t i0, int n, int T,
                                  const qat_tensor *stage, qat_tensor *x) {
  int bf = c->dtype != QAT_F32;
  if (bf && (!stage || stage->dtype != c->dtype))
    return QAT_FAIL(QAT_EINVAL, "actcache get_batch: a %s cache needs a %s staging tensor",
                    qat_dtype_name(c->dtype), qat_dtype_name(c->dtype));
  qat_tensor dst = bf ? qat_rows(stage, 0, (int64_t)n * T) : *x; /* [n*T, C] */
  for (int k = 0; k < n; k++) {
    qat_tensor v = qat_rows(&dst, (int64_t)k * T, T);
    QAT_TRY(qat_actcache_get(c, set, i0 + k, &v));
  }
  return bf ? QAT_OP(c->be, convert, x, &dst) : QAT_OK;
}

qat_status qat_actcache_put_batch(qat_actcache *c, int set, int64_t i0, int n, int T,
                                  const qat_tensor *stage, const qat_tensor *x) {
  int bf = c->dtype != QAT_F32;
  if (bf && (!stage || stage->dtype != c->dtype))
    return QAT_FAIL(QAT_EINVAL, "actcache put_batch: a %s cache needs a %s staging tensor",
                    qat_dtype_name(c->dtype), qat_dtype_name(c->dtype));
  qat_tensor src = bf ? qat_rows(stage, 0, (int64_t)n * T) : *x; /* [n*T, C] */
  if (bf) QAT_TRY(QAT_OP(c->be, convert, &src, x));
  for (int k = 0; k < n; k++) {
    qat_tensor v = qat_rows(&src, (int64_t)k * T, T);
    QAT_TRY(qat_actcache_put(c, set, i0 + k, &v));
  }
  return QAT_OK;
}

qat_status qat_actcache_prefetch_range(qat_actcache *c, int set, int64_t i0, int n, int64_t lo,
                                       int64_t hi) {
  for (int k = 0; k < n; k++)
    if (i0 + k >= lo && i0 + k < hi) QAT_TRY(qat_actcache_prefetch(c, set, i0 + k));
  return QAT_OK;
}
