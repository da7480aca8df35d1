/* The one-process communicator: every collective is the identity on its buffer (a reduction
 * over one rank is its input; a gather of one rank is a copy). See dist.h. */
#include "dist/dist.h"

#include <string.h>

static qat_status s_allreduce(qat_dist *d, void *buf, int64_t n, qat_dtype dt, qat_dist_op op) {
  if (dt != QAT_F32 && dt != QAT_BF16)
    return QAT_FAIL(QAT_EINVAL, "dist allreduce: dtype %s (F32 or BF16)", qat_dtype_name(dt));
  return n < 0 ? QAT_FAIL(QAT_EINVAL, "dist allreduce: n = %lld", (long long)n) : QAT_OK;
}
static qat_status s_broadcast(qat_dist *d, void *buf, size_t bytes, int root) {
  return root == 0 ? QAT_OK : QAT_FAIL(QAT_EINVAL, "dist broadcast: root %d of 1 rank", root);
}
static qat_status s_allgather(qat_dist *d, const void *send, void *recv, size_t bytes) {
  if (send != recv) memmove(recv, send, bytes);
  return QAT_OK;
}
static qat_status s_reduce_scatter(qat_dist *d, const void *send, void *recv, int64_t n,
                                   qat_dtype dt, qat_dist_op op) {
  QAT_TRY(s_allreduce(d, recv, n, dt, op));
  if (send != recv) memmove(recv, send, (size_t)n * qat_dtype_size(dt));
  return QAT_OK;
}
static qat_status s_barrier(qat_dist *d) { return QAT_OK; }
static qat_status s_f64(qat_dist *d, double *v, int n, qat_dist_op op) { return QAT_OK; }
static qat_status s_i64(qat_dist *d, int64_t *v, int n, qat_dist_op op) { return QAT_OK; }
static void s_close(qat_dist *d, int clean) {}

qat_dist *qat_dist_single(void) {
  static qat_dist d = {.name = "single", .rank = 0, .world = 1, .local_rank = 0,
                       .device = QAT_DEV_CPU, .allreduce = s_allreduce, .broadcast = s_broadcast,
                       .allgather = s_allgather, .reduce_scatter = s_reduce_scatter,
                       .barrier = s_barrier, .allreduce_f64 = s_f64, .allreduce_i64 = s_i64,
                       .allgather_host = s_allgather, .close = s_close};
  return &d;
}
