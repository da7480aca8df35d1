/* Learning-rate schedules (see schedule.h for the exact formulas). */
#include "train/schedule.h"

#include <math.h>
#include <stddef.h>

const char *qat_lr_schedule_name(qat_lr_schedule s) {
  switch (s) {
  case QAT_SCHED_COSINE: return "cosine";
  case QAT_SCHED_LINEAR: return "linear";
  case QAT_SCHED_CONSTANT: return "constant";
  }
  return NULL;
}

double qat_lr_at(qat_lr_schedule schedule, double base_lr, int64_t step, int64_t total_steps,
                 int64_t warmup, double min_ratio) {
  if (step < 0) step = 0;
  if (warmup > 0 && step < warmup) return base_lr * (double)(step + 1) / (double)warmup;
  if (warmup < 0) warmup = 0;
  /* decay steps: warmup .. total_steps - 1; a single one (or none) is too short to decay */
  int64_t decay = total_steps - warmup;
  double p = decay <= 1 ? 0.0 : (double)(step - warmup) / (double)(decay - 1);
  if (p > 1.0) p = 1.0;
  double min_lr = base_lr * min_ratio;
  switch (schedule) {
  case QAT_SCHED_COSINE: return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + cos(M_PI * p));
  case QAT_SCHED_LINEAR: return base_lr - (base_lr - min_lr) * p;
  case QAT_SCHED_CONSTANT: return base_lr;
  }
  return base_lr;
}
