/* Learning-rate schedules with linear warmup, as transformers' get_scheduler
 * defines them except for the first step: the multiplier of optimizer step
 * s (0-based, steps already taken) is (s+1)/warmup during warmup, then
 * constant, linear decay to 0, or a cosine from 1 to min_ratio over the
 * remaining steps. transformers uses s/warmup, so its first step has
 * learning rate 0 and a 1-step run changes nothing; here every step
 * trains, and the last warm-up step reaches the peak. */
#ifndef MXL_TRAIN_SCHEDULE_H
#define MXL_TRAIN_SCHEDULE_H

#include "mxlora.h"

typedef enum mxl_schedule_kind {
  MXL_SCHEDULE_CONSTANT,
  MXL_SCHEDULE_LINEAR,
  MXL_SCHEDULE_COSINE,
} mxl_schedule_kind;

typedef struct mxl_schedule {
  mxl_schedule_kind kind;
  float lr;        /* peak learning rate */
  int warmup;      /* warmup steps */
  int total;       /* total optimizer steps */
  float min_ratio; /* cosine floor as a fraction of lr (0 = to zero) */
} mxl_schedule;

/* Parses "constant", "linear" or "cosine". */
mxl_status mxl_schedule_kind_parse(const char *name, mxl_schedule_kind *out);
const char *mxl_schedule_kind_name(mxl_schedule_kind kind);
mxl_status mxl_schedule_validate(const mxl_schedule *s);
float mxl_schedule_lr(const mxl_schedule *s, int step);

#endif
