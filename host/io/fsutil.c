/* File-system helpers: whole-file reads, atomic file writes (temporary beside the target, fsync,
 * rename, fsync of the directory) and atomically published output directories. Every error names
 * the path and the system's reason; nothing here exits. */
#include "io/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int qat_path_exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

int qat_is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

qat_status qat_path_join(char *buf, size_t n, const char *a, const char *b) {
  size_t la = strlen(a);
  int slash = la > 0 && a[la - 1] != '/';
  int k = snprintf(buf, n, "%s%s%s", a, slash ? "/" : "", b);
  if (k < 0 || (size_t)k >= n) {
    if (n) buf[0] = 0;
    return QAT_FAIL(QAT_EINVAL, "path too long: %s/%s", a, b);
  }
  return QAT_OK;
}

/* The directory part of path ("." when it has none) into buf. */
static void dirname_of(const char *path, char *buf, size_t n) {
  size_t len = strlen(path);
  while (len > 1 && path[len - 1] == '/')
    len--; /* "a/b/" is in "a" */
  const char *s = NULL;
  for (size_t i = 0; i < len; i++)
    if (path[i] == '/') s = path + i;
  if (!s)
    snprintf(buf, n, ".");
  else if (s == path)
    snprintf(buf, n, "/");
  else
    snprintf(buf, n, "%.*s", (int)(s - path), path);
}

qat_status qat_mkdir_p(const char *path) {
  size_t len = strlen(path);
  if (len == 0) return QAT_FAIL(QAT_EINVAL, "mkdir: empty path");
  char *p = strdup(path);
  if (!p) return QAT_FAIL(QAT_ENOMEM, "mkdir %s: out of memory", path);
  /* create each prefix ending before a '/', then the whole path */
  for (size_t i = 1; i <= len; i++) {
    if (p[i] != '/' && p[i] != 0) continue;
    char c = p[i];
    p[i] = 0;
    if (mkdir(p, 0777) != 0 && errno != EEXIST) {
      int e = errno;
      qat_status st = QAT_FAIL(QAT_EIO, "mkdir %s: %s", p, strerror(e));
      free(p);
      return st;
    }
    p[i] = c;
  }
  free(p);
  if (!qat_is_dir(path)) return QAT_FAIL(QAT_EIO, "mkdir %s: exists and is not a directory", path);
  return QAT_OK;
}

qat_status qat_read_file(const char *path, char **data, size_t *len) {
  *data = NULL;
  if (len) *len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return QAT_FAIL(QAT_EIO, "%s: %s", path, strerror(errno));
  struct stat st;
  int bad = fstat(fd, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
  if (bad) {
    int e = bad;
    close(fd);
    return QAT_FAIL(QAT_EIO, "%s: %s", path, strerror(e));
  }
  /* size from fstat is a hint only (pipes and /proc report 0): grow until EOF */
  size_t cap = (st.st_size > 0 ? (size_t)st.st_size : 4096) + 1, n = 0;
  char *buf = malloc(cap);
  if (!buf) {
    close(fd);
    return QAT_FAIL(QAT_ENOMEM, "%s: cannot allocate %zu bytes", path, cap);
  }
  for (;;) {
    if (n + 1 >= cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        close(fd);
        return QAT_FAIL(QAT_ENOMEM, "%s: cannot allocate %zu bytes", path, cap * 2);
      }
      buf = nb;
      cap *= 2;
    }
    ssize_t r = read(fd, buf + n, cap - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      free(buf);
      close(fd);
      return QAT_FAIL(QAT_EIO, "%s: read: %s", path, strerror(e));
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  close(fd);
  buf[n] = 0;
  *data = buf;
  if (len) *len = n;
  return QAT_OK;
}

qat_status qat_fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return QAT_FAIL(QAT_EIO, "%s: %s", dir, strerror(errno));
  /* some file systems refuse fsync on directories (EINVAL): nothing more can be done there */
  if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
    int e = errno;
    close(fd);
    return QAT_FAIL(QAT_EIO, "fsync %s: %s", dir, strerror(e));
  }
  close(fd);
  return QAT_OK;
}

static atomic_uint g_tmp_counter;

qat_status qat_atomic_open(qat_atomic_file *f, const char *path) {
  memset(f, 0, sizeof *f);
  f->fd = -1;
  size_t n = strlen(path) + 64;
  f->path = strdup(path);
  f->tmp = malloc(n);
  if (!f->path || !f->tmp) {
    qat_atomic_abort(f);
    return QAT_FAIL(QAT_ENOMEM, "%s: out of memory", path);
  }
  /* pid + a process-wide counter: unique across processes and threads; O_EXCL never reuses a
   * stale temporary left by a crash */
  for (int tries = 0; tries < 100; tries++) {
    snprintf(f->tmp, n, "%s.tmp.%d.%u", path, (int)getpid(), atomic_fetch_add(&g_tmp_counter, 1));
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (f->fd >= 0 || errno != EEXIST) break;
  }
  if (f->fd < 0) {
    int e = errno;
    free(f->tmp); /* nothing was created: abort must not unlink someone else's file */
    f->tmp = NULL;
    qat_atomic_abort(f);
    return QAT_FAIL(QAT_EIO, "%s: cannot create a temporary file: %s", path, strerror(e));
  }
  return QAT_OK;
}

qat_status qat_atomic_write(qat_atomic_file *f, const void *data, size_t len) {
  if (!f->tmp || f->fd < 0) return QAT_FAIL(QAT_EINTERNAL, "atomic write on a closed file");
  const char *p = data;
  while (len > 0) {
    /* Linux writes at most ~2 GiB per call; chunk so large tensors need no special case */
    size_t chunk = len < ((size_t)1 << 30) ? len : ((size_t)1 << 30);
    ssize_t w = write(f->fd, p, chunk);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int e = w < 0 ? errno : EIO;
      qat_status st = QAT_FAIL(QAT_EIO, "%s: write: %s", f->path, strerror(e));
      qat_atomic_abort(f);
      return st;
    }
    p += w;
    len -= (size_t)w;
  }
  return QAT_OK;
}

qat_status qat_atomic_commit(qat_atomic_file *f) {
  if (!f->tmp || f->fd < 0) return QAT_FAIL(QAT_EINTERNAL, "atomic commit on a closed file");
  qat_status st = QAT_OK;
  if (fsync(f->fd) != 0) {
    st = QAT_FAIL(QAT_EIO, "%s: fsync: %s", f->path, strerror(errno));
  } else if (close(f->fd) != 0) {
    f->fd = -1;
    st = QAT_FAIL(QAT_EIO, "%s: close: %s", f->path, strerror(errno));
  } else {
    f->fd = -1;
    if (rename(f->tmp, f->path) != 0)
      st = QAT_FAIL(QAT_EIO, "%s: rename from %s: %s", f->path, f->tmp, strerror(errno));
  }
  if (st != QAT_OK) {
    qat_atomic_abort(f);
    return st;
  }
  char dir[4096];
  dirname_of(f->path, dir, sizeof dir);
  free(f->tmp);
  f->tmp = NULL; /* renamed: nothing left to remove */
  qat_atomic_abort(f);
  /* the rename is only durable once the directory entry is */
  return qat_fsync_dir(dir);
}

void qat_atomic_abort(qat_atomic_file *f) {
  if (f->tmp) {
    if (f->fd >= 0) close(f->fd);
    unlink(f->tmp);
  }
  f->fd = -1;
  free(f->tmp);
  free(f->path);
  f->tmp = f->path = NULL;
}

qat_status qat_write_file_atomic(const char *path, const void *data, size_t len) {
  qat_atomic_file f;
  QAT_TRY(qat_atomic_open(&f, path));
  QAT_TRY(qat_atomic_write(&f, data, len));
  return qat_atomic_commit(&f);
}

qat_status qat_copy_file(const char *src, const char *dst) {
  int in = open(src, O_RDONLY | O_CLOEXEC);
  if (in < 0) return QAT_FAIL(QAT_EIO, "%s: %s", src, strerror(errno));
  qat_atomic_file f;
  qat_status st = qat_atomic_open(&f, dst);
  if (st != QAT_OK) {
    close(in);
    return st;
  }
  enum { BUF = 1 << 20 };
  char *buf = malloc(BUF);
  if (!buf) {
    close(in);
    qat_atomic_abort(&f);
    return QAT_FAIL(QAT_ENOMEM, "copy %s: out of memory", src);
  }
  for (;;) {
    ssize_t r = read(in, buf, BUF);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      st = QAT_FAIL(QAT_EIO, "%s: read: %s", src, strerror(errno));
      qat_atomic_abort(&f);
      break;
    }
    if (r == 0) {
      st = qat_atomic_commit(&f);
      break;
    }
    st = qat_atomic_write(&f, buf, (size_t)r);
    if (st != QAT_OK) break;
  }
  free(buf);
  close(in);
  return st;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)ftw;
  int r = (flag == FTW_DP) ? rmdir(p) : unlink(p);
  return r != 0 && errno != ENOENT ? -1 : 0;
}

qat_status qat_rm_rf(const char *path) {
  if (!qat_path_exists(path)) return QAT_OK;
  /* FTW_PHYS: a symlink is removed, never followed */
  if (nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS) != 0)
    return QAT_FAIL(QAT_EIO, "remove %s: %s", path, strerror(errno));
  return QAT_OK;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

void qat_free_list(char **names, int n) {
  if (!names) return;
  for (int i = 0; i < n; i++)
    free(names[i]);
  free(names);
}

qat_status qat_list_dir(const char *dir, char ***names, int *n) {
  *names = NULL;
  *n = 0;
  DIR *d = opendir(dir);
  if (!d) return QAT_FAIL(QAT_EIO, "%s: %s", dir, strerror(errno));
  char **v = NULL;
  int cnt = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (cnt == cap) {
      cap = cap ? cap * 2 : 16;
      char **nv = realloc(v, (size_t)cap * sizeof *v);
      if (!nv) goto oom;
      v = nv;
    }
    if (!(v[cnt] = strdup(e->d_name))) goto oom;
    cnt++;
  }
  closedir(d);
  if (cnt) qsort(v, (size_t)cnt, sizeof *v, cmp_str);
  *names = v;
  *n = cnt;
  return QAT_OK;
oom:
  closedir(d);
  qat_free_list(v, cnt);
  return QAT_FAIL(QAT_ENOMEM, "%s: out of memory listing the directory", dir);
}

/* ---- output directories ---- */

qat_status qat_dir_begin(const char *out, char *tmp, size_t n) {
  size_t lo = strlen(out);
  while (lo > 1 && out[lo - 1] == '/')
    lo--; /* "out/" names the same directory as "out" */
  if (lo + 16 > n) {
    if (n) tmp[0] = 0;
    return QAT_FAIL(QAT_EINVAL, "output path too long: %s", out);
  }
  snprintf(tmp, n, "%.*s.tmp-XXXXXX", (int)lo, out);
  char parent[4096];
  dirname_of(tmp, parent, sizeof parent);
  qat_status st = qat_mkdir_p(parent);
  if (st != QAT_OK) {
    tmp[0] = 0; /* nothing to abort */
    return st;
  }
  /* mkdir rather than mkdtemp: mkdtemp makes the directory 0700, and the published output
   * should get the usual 0777 & ~umask like any directory the user creates */
  static atomic_uint counter;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  for (int tries = 0; tries < 100; tries++) {
    unsigned x = (unsigned)getpid() * 2654435761u ^ (unsigned)ts.tv_nsec ^
                 atomic_fetch_add(&counter, 1) * 40503u;
    snprintf(tmp, n, "%.*s.tmp-%06x", (int)lo, out, x & 0xffffffu);
    if (mkdir(tmp, 0777) == 0) return QAT_OK;
    if (errno != EEXIST) break;
  }
  int e = errno;
  tmp[0] = 0;
  return QAT_FAIL(QAT_EIO, "%s: cannot create a temporary directory: %s", out, strerror(e));
}

static int sync_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)ftw;
  if (flag != FTW_F && flag != FTW_DP) return 0;
  int fd = open(p, (flag == FTW_DP ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return -1;
  int r = fsync(fd);
  int e = errno;
  close(fd);
  errno = e;
  return r != 0 && e != EINVAL && e != EROFS ? -1 : 0;
}

qat_status qat_dir_commit(const char *tmp, const char *out_arg) {
  if (!qat_is_dir(tmp)) return QAT_FAIL(QAT_EIO, "%s: not a directory", tmp);
  char out[4096];
  size_t lo = strlen(out_arg);
  while (lo > 1 && out_arg[lo - 1] == '/')
    lo--; /* "out/" names the same directory as "out" */
  if (lo >= sizeof out) return QAT_FAIL(QAT_EINVAL, "output path too long: %s", out_arg);
  memcpy(out, out_arg, lo);
  out[lo] = 0;
  /* every file and directory inside must be durable before the new name points at it */
  if (nftw(tmp, sync_one, 32, FTW_DEPTH | FTW_PHYS) != 0)
    return QAT_FAIL(QAT_EIO, "fsync %s: %s", tmp, strerror(errno));
  char old[4200] = "";
  if (qat_path_exists(out)) {
    /* move the previous output aside under a fresh name; it is removed only once the new one
     * is in place, so a crash leaves either the old or the new output under OUT */
    static atomic_uint counter;
    int ok = 0;
    for (int tries = 0; tries < 100 && !ok; tries++) {
      snprintf(old, sizeof old, "%s.old-%d-%u", out, (int)getpid(), atomic_fetch_add(&counter, 1));
      if (qat_path_exists(old)) continue;
      if (rename(out, old) != 0)
        return QAT_FAIL(QAT_EIO, "%s: cannot move the previous output aside: %s", out,
                        strerror(errno));
      ok = 1;
    }
    if (!ok) return QAT_FAIL(QAT_EIO, "%s: no free name to move the previous output to", out);
  }
  if (rename(tmp, out) != 0) {
    int e = errno;
    if (old[0]) rename(old, out); /* put the previous output back */
    return QAT_FAIL(QAT_EIO, "%s: rename from %s: %s", out, tmp, strerror(e));
  }
  char parent[4096];
  dirname_of(out, parent, sizeof parent);
  QAT_TRY(qat_fsync_dir(parent));
  if (old[0]) QAT_TRY(qat_rm_rf(old));
  return QAT_OK;
}

void qat_dir_abort(const char *tmp) {
  if (tmp && tmp[0]) (void)qat_rm_rf(tmp);
}
