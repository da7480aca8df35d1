/* A one-shot broadcast over TCP for launchers without MPI (torchrun-style RANK / WORLD_SIZE with
 * MASTER_ADDR / MASTER_PORT): rank 0 listens and sends `bytes` of data (the NCCL unique id) to
 * each of the world - 1 peers that connect; the peers retry the connection until rank 0 listens
 * or timeout_s passes. Every wait is bounded by timeout_s, so a missing peer is an error, not a
 * hang. See dist.h. */
#include "dist/dist.h"

#include "core/log.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int wait_fd(int fd, short ev, double deadline) {
  for (;;) {
    double left = deadline - qat_now();
    if (left <= 0) return 0;
    struct pollfd p = {.fd = fd, .events = ev};
    int r = poll(&p, 1, (int)(left * 1000) + 1);
    if (r > 0) return 1;
    if (r < 0 && errno != EINTR) return -1;
  }
}

static qat_status send_all(int fd, const void *p, size_t n, double deadline) {
  const char *c = p;
  while (n > 0) {
    if (wait_fd(fd, POLLOUT, deadline) <= 0)
      return QAT_FAIL(QAT_EIO, "dist tcp: send timed out (dist.timeout_s)");
    ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return QAT_FAIL(QAT_EIO, "dist tcp: send: %s", strerror(errno));
    c += w;
    n -= (size_t)w;
  }
  return QAT_OK;
}

static qat_status recv_all(int fd, void *p, size_t n, double deadline) {
  char *c = p;
  while (n > 0) {
    if (wait_fd(fd, POLLIN, deadline) <= 0)
      return QAT_FAIL(QAT_EIO, "dist tcp: receive timed out (dist.timeout_s)");
    ssize_t r = recv(fd, c, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return QAT_FAIL(QAT_EIO, "dist tcp: rank 0 closed the connection early");
    if (r < 0) return QAT_FAIL(QAT_EIO, "dist tcp: recv: %s", strerror(errno));
    c += r;
    n -= (size_t)r;
  }
  return QAT_OK;
}

static qat_status serve(const char *port, int peers, const void *data, size_t bytes,
                        double deadline) {
  struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE},
                  *ai = NULL;
  int rc = getaddrinfo(NULL, port, &hints, &ai);
  if (rc) return QAT_FAIL(QAT_EUSAGE, "dist tcp: MASTER_PORT %s: %s", port, gai_strerror(rc));
  int fd = socket(ai->ai_family, ai->ai_socktype, 0), one = 1;
  qat_status st = QAT_OK;
  if (fd < 0) st = QAT_FAIL(QAT_EIO, "dist tcp: socket: %s", strerror(errno));
  if (st == QAT_OK) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (st == QAT_OK && bind(fd, ai->ai_addr, ai->ai_addrlen) != 0)
    st = QAT_FAIL(QAT_EIO, "dist tcp: rank 0 cannot listen on port %s: %s", port, strerror(errno));
  if (st == QAT_OK && listen(fd, peers) != 0)
    st = QAT_FAIL(QAT_EIO, "dist tcp: listen: %s", strerror(errno));
  freeaddrinfo(ai);
  uint64_t len = bytes;
  for (int i = 0; st == QAT_OK && i < peers; i++) {
    int w = wait_fd(fd, POLLIN, deadline);
    if (w <= 0) {
      st = QAT_FAIL(QAT_EIO, "dist tcp: %d of %d peers connected to port %s within "
                             "dist.timeout_s", i, peers, port);
      break;
    }
    int c = accept(fd, NULL, NULL);
    if (c < 0) {
      if (errno == EINTR) {
        i--;
        continue;
      }
      st = QAT_FAIL(QAT_EIO, "dist tcp: accept: %s", strerror(errno));
      break;
    }
    st = send_all(c, &len, sizeof len, deadline);
    if (st == QAT_OK) st = send_all(c, data, bytes, deadline);
    close(c);
  }
  if (fd >= 0) close(fd);
  return st;
}

static qat_status fetch(const char *host, const char *port, void *data, size_t bytes,
                        double deadline) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
  int rc = getaddrinfo(host, port, &hints, &ai);
  if (rc)
    return QAT_FAIL(QAT_EUSAGE, "dist tcp: MASTER_ADDR %s port %s: %s", host, port,
                    gai_strerror(rc));
  int fd = -1;
  struct timespec nap = {0, 100 * 1000 * 1000};
  while (fd < 0 && qat_now() < deadline) { /* rank 0 may not listen yet */
    fd = socket(ai->ai_family, ai->ai_socktype, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
      nanosleep(&nap, NULL);
    }
  }
  freeaddrinfo(ai);
  if (fd < 0)
    return QAT_FAIL(QAT_EIO, "dist tcp: could not reach rank 0 at %s:%s within dist.timeout_s",
                    host, port);
  uint64_t len = 0;
  qat_status st = recv_all(fd, &len, sizeof len, deadline);
  if (st == QAT_OK && len != bytes)
    st = QAT_FAIL(QAT_EFORMAT, "dist tcp: rank 0 sent %llu bytes, %zu expected",
                  (unsigned long long)len, bytes);
  if (st == QAT_OK) st = recv_all(fd, data, bytes, deadline);
  close(fd);
  return st;
}

qat_status qat_dist_tcp_bcast(const qat_dist_env *e, void *data, size_t bytes, double timeout_s) {
  const char *host = getenv("MASTER_ADDR"), *port = getenv("MASTER_PORT");
  if (!host || !*host || !port || !*port)
    return QAT_FAIL(QAT_EUSAGE, "dist: %s started %d ranks without MPI: MASTER_ADDR and "
                                "MASTER_PORT must name rank 0's host and a free port",
                    e->launcher, e->world);
  double deadline = qat_now() + (timeout_s > 0 ? timeout_s : 600);
  return e->rank == 0 ? serve(port, e->world - 1, data, bytes, deadline)
                      : fetch(host, port, data, bytes, deadline);
}
