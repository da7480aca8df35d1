/* Learning-rate schedules for the trainers: linear warmup from 0, then cosine, linear or constant
 * decay to base * min_ratio at the last step. Pure functions of the step, so a resumed run gets
 * the same rates as an uninterrupted one without storing any schedule state. */
#ifndef QAT_TRAIN_SCHEDULE_H
#define QAT_TRAIN_SCHEDULE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum qat_lr_schedule {
  QAT_SCHED_COSINE = 0,
  QAT_SCHED_LINEAR,
  QAT_SCHED_CONSTANT,
} qat_lr_schedule;

/* "cosine" | "linear" | "constant" (NULL when out of range). */
const char *qat_lr_schedule_name(qat_lr_schedule s);

/* Learning rate for optimizer step `step` (0-based) of a run of total_steps steps.
 *   warmup (step < warmup):  lr = base * (step + 1) / warmup   (reaches base at step warmup - 1)
 *   then, with D = total_steps - warmup decay steps and p = (step - warmup) / (D - 1) in [0, 1]
 *   (p = 0 when D <= 1: too short to decay; p = 1 past the end), min = base * min_ratio:
 *     cosine:   lr = min + (base - min) * (1 + cos(pi * p)) / 2
 *     linear:   lr = base - (base - min) * p
 *     constant: lr = base
 * So the first step after warmup runs at base and the last step (total_steps - 1) at min
 * (when there are at least 2 decay steps).
 * Negative step counts as 0; warmup <= 0 means no warmup. */
double qat_lr_at(qat_lr_schedule schedule, double base_lr, int64_t step, int64_t total_steps,
                 int64_t warmup, double min_ratio);

#ifdef __cplusplus
}
#endif
#endif
