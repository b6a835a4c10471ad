#include "train/schedule.h"

#include <math.h>
#include <string.h>

#include "core/status.h"

static const char *const kind_names[] = {"constant", "linear", "cosine"};

mxl_status mxl_schedule_kind_parse(const char *name, mxl_schedule_kind *out) {
  for (int i = 0; i < 3; i++)
    if (!strcmp(name, kind_names[i])) {
      *out = (mxl_schedule_kind)i;
      return MXL_OK;
    }
  return mxl_errorf(MXL_ERR_ARGUMENT, "schedule '%s': expected constant, linear or cosine",
                    name);
}

const char *mxl_schedule_kind_name(mxl_schedule_kind kind) {
  return (unsigned)kind < 3 ? kind_names[kind] : "unknown";
}

mxl_status mxl_schedule_validate(const mxl_schedule *s) {
  if (!(s->lr > 0) || !isfinite(s->lr))
    return mxl_errorf(MXL_ERR_ARGUMENT, "learning rate %g must be positive", s->lr);
  if (s->total <= 0) return mxl_errorf(MXL_ERR_ARGUMENT, "total steps %d must be positive", s->total);
  if (s->warmup < 0 || s->warmup > s->total)
    return mxl_errorf(MXL_ERR_ARGUMENT, "warmup %d must be within 0..%d steps", s->warmup,
                      s->total);
  if (!(s->min_ratio >= 0 && s->min_ratio <= 1))
    return mxl_errorf(MXL_ERR_ARGUMENT, "minimum lr ratio %g must be within 0..1", s->min_ratio);
  return MXL_OK;
}

float mxl_schedule_lr(const mxl_schedule *s, int step) {
  if (step < s->warmup) return s->lr * (float)(step + 1) / (float)s->warmup;
  double span = s->total - s->warmup;
  double progress = span > 0 ? (step - s->warmup) / span : 1.0;
  if (progress > 1) progress = 1;
  switch (s->kind) {
  case MXL_SCHEDULE_CONSTANT: return s->lr;
  case MXL_SCHEDULE_LINEAR: return (float)(s->lr * (1.0 - progress));
  case MXL_SCHEDULE_COSINE: {
    double cosine = 0.5 * (1.0 + cos(3.14159265358979323846 * progress));
    return (float)(s->lr * (s->min_ratio + (1.0 - s->min_ratio) * cosine));
  }
  }
  return s->lr;
}
