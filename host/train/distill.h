/* Knowledge distillation loss on logits: per token
 *   loss = (1 - alpha) * CE(student, target) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))
 * and its gradient with respect to the student logits:
 *   (1 - alpha) * (softmax(s) - onehot) + alpha * T * (softmax(s/T) - softmax(t/T)).
 * Computed on host rows in double precision; targets -1 are ignored entirely. This is the
 * reference: training on a device uses the backend op kd_xent (backend/backend.h), which keeps
 * the logits on the device. */
#ifndef QAT_TRAIN_DISTILL_H
#define QAT_TRAIN_DISTILL_H

#include "core/status.h"
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* student, teacher: [N, V]; dlogits [N, V] (may alias student; NULL: loss only) gets
 * scale * gradient; targets in [0, V) or -1 (others: QAT_EINVAL before anything is written);
 * *loss = scale * sum of token losses; *ce = unscaled sum of CE terms (for reporting). */
qat_status qat_distill_loss(const float *student, const float *teacher, const int32_t *targets,
                            int64_t N, int64_t V, double temperature, double alpha, double scale,
                            float *dlogits, double *loss, double *ce, int64_t *count);

#ifdef __cplusplus
}
#endif
#endif
