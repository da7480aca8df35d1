/* Bucketed gradient all-reduce overlapping the backward (see grad_bucket.h). */
#include "train/grad_bucket.h"

#include "backend/cuda_stream.h"
#include "train/dist_train.h"

#include <stdlib.h>
#include <string.h>

qat_status qat_grad_buckets_init(qat_grad_buckets *g, qat_dist *d, qat_backend *be,
                                 qat_dtype wire, double bucket_bytes) {
  memset(g, 0, sizeof *g);
  if (wire != QAT_F32 && wire != QAT_BF16)
    return QAT_FAIL(QAT_EINVAL, "gradient buckets: wire dtype %s (F32 or BF16)",
                    qat_dtype_name(wire));
  g->d = d;
  g->be = be;
  g->wire = wire;
  g->stream = qat_cuda_compute_stream(be);
  double cap = bucket_bytes / 4.0; /* F32 elements of gradient per bucket */
  g->cap = cap < 1 ? 1 : cap > 1e15 ? (int64_t)1e15 : (int64_t)cap;
  return QAT_OK;
}

/* Grows the segment / bucket arrays (host). */
static qat_status grow(void **p, int *cap, int need, size_t esize) {
  if (need <= *cap) return QAT_OK;
  int c = *cap ? *cap : 64;
  while (c < need) c *= 2;
  void *q = realloc(*p, (size_t)c * esize);
  if (!q) return QAT_FAIL(QAT_ENOMEM, "gradient buckets: out of memory");
  *p = q;
  *cap = c;
  return QAT_OK;
}

qat_status qat_grad_buckets_begin(qat_grad_buckets *g, qat_llama *m) {
  int L = m->cfg.n_layers;
  g->nseg = g->nb = 0; /* rebuilt each step (cheap, host only); the arrays only grow */
  g->next = g->back = 0;
  g->total = 0;
  qat_grad_bucket cur = {0, 0, 0, L};
  for (int l = L - 1; l >= -1; l--) {
    qat_tensor list[16];
    int n = qat_dist_grad_buffers_of(m, l, list);
    for (int i = 0; i < n; i++) {
      if (list[i].dtype != QAT_F32)
        return QAT_FAIL(QAT_EINTERNAL, "dist: gradient %s is %s, F32 expected",
                        list[i].name ? list[i].name : "?", qat_dtype_name(list[i].dtype));
      int64_t ne = qat_numel(&list[i]), off = 0;
      g->total += ne;
      while (off < ne) {
        int64_t take = ne - off < g->cap - cur.n ? ne - off : g->cap - cur.n;
        QAT_TRY(grow((void **)&g->seg, &g->segcap, g->nseg + 1, sizeof *g->seg));
        g->seg[g->nseg++] = (qat_grad_seg){list[i].data, off, take, cur.n};
        cur.nseg++;
        cur.n += take;
        cur.ready_layer = l;
        off += take;
        if (cur.n == g->cap) { /* full: closed, the next one starts at the next segment */
          QAT_TRY(grow((void **)&g->bk, &g->bkcap, g->nb + 1, sizeof *g->bk));
          g->bk[g->nb++] = cur;
          cur = (qat_grad_bucket){g->nseg, 0, 0, l};
        }
      }
    }
  }
  if (cur.n > 0) {
    QAT_TRY(grow((void **)&g->bk, &g->bkcap, g->nb + 1, sizeof *g->bk));
    g->bk[g->nb++] = cur;
  }
  /* staging: min(cap, total) elements per slot, allocated once (total is fixed for a job) */
  if (!g->slot[0] && g->nb > 0) {
    int64_t n = g->cap < g->total ? g->cap : g->total;
    for (int s = 0; s < QAT_GB_SLOTS && s < g->nb; s++)
      QAT_TRY(g->be->alloc(g->be, &g->slot[s], (size_t)n * qat_dtype_size(g->wire)));
  }
  m->bwd_hook = qat_grad_buckets_layer_done;
  m->bwd_hook_ctx = g;
  return QAT_OK;
}

/* Bucket b's segments between the gradients and its slot (dir 1: in, 0: back). */
static qat_status move(qat_grad_buckets *g, int b, int in) {
  const qat_grad_bucket *k = &g->bk[b];
  char *slot = g->slot[b % QAT_GB_SLOTS];
  size_t es = qat_dtype_size(g->wire);
  for (int i = k->seg0; i < k->seg0 + k->nseg; i++) {
    const qat_grad_seg *s = &g->seg[i];
    float *grad = (float *)s->data + s->off;
    void *st = slot + (size_t)s->at * es;
    if (g->wire == QAT_F32) {
      size_t bytes = (size_t)s->n * 4;
      QAT_TRY(in ? g->be->copy(g->be, st, grad, bytes) : g->be->copy(g->be, grad, st, bytes));
    } else {
      qat_tensor tg = qat_view1(grad, QAT_F32, g->be->device, s->n);
      qat_tensor ts = qat_view1(st, g->wire, g->be->device, s->n);
      QAT_TRY(in ? QAT_OP(g->be, convert, &ts, &tg) : QAT_OP(g->be, convert, &tg, &ts));
    }
  }
  return QAT_OK;
}

/* The oldest bucket in flight back into the gradients (host: wait on the host as well). */
static qat_status retire(qat_grad_buckets *g, int host) {
  int b = g->back, s = b % QAT_GB_SLOTS;
  void *req = g->req[s];
  g->req[s] = NULL;
  QAT_TRY(qat_dist_allreduce_wait(g->d, req, g->stream, host));
  QAT_TRY(move(g, b, 0));
  g->back++;
  return QAT_OK;
}

static qat_status start(qat_grad_buckets *g) {
  int b = g->next, s = b % QAT_GB_SLOTS;
  if (b - g->back >= QAT_GB_SLOTS) QAT_TRY(retire(g, 0)); /* its slot is still in flight */
  QAT_TRY(move(g, b, 1));
  QAT_TRY(qat_dist_allreduce_start(g->d, g->slot[s], g->bk[b].n, g->wire, QAT_RED_SUM, g->stream,
                                   &g->req[s]));
  g->wire_bytes += g->bk[b].n * (int64_t)qat_dtype_size(g->wire);
  g->started++;
  g->next++;
  return QAT_OK;
}

qat_status qat_grad_buckets_layer_done(void *ctx, int l) {
  qat_grad_buckets *g = ctx;
  while (g->next < g->nb && g->bk[g->next].ready_layer >= l) {
    QAT_TRY(start(g));
    if (l >= 0) g->early++;
  }
  return QAT_OK;
}

qat_status qat_grad_buckets_finish(qat_grad_buckets *g, qat_llama *m) {
  m->bwd_hook = NULL;
  m->bwd_hook_ctx = NULL;
  while (g->next < g->nb) QAT_TRY(start(g));
  while (g->back < g->nb) QAT_TRY(retire(g, g->back == g->nb - 1));
  return QAT_OK;
}

void qat_grad_buckets_free(qat_grad_buckets *g) {
  for (int s = 0; s < QAT_GB_SLOTS; s++)
    if (g->slot[s]) g->be->free(g->be, g->slot[s]);
  free(g->seg);
  free(g->bk);
  memset(g, 0, sizeof *g);
}
