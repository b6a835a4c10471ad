/* train/schedule against values worked out from transformers' formulas (warm-up
 * shifted by one step: see schedule.h). */
#include "train/schedule.h"
#include "test.h"

static void test_warmup_then_shapes(void) {
  mxl_schedule s = {MXL_SCHEDULE_LINEAR, 1e-3f, 10, 110, 0};
  /* warm-up: (s+1)/warmup, so the first step already trains */
  MXL_CHECK_NEAR(mxl_schedule_lr(&s, 0), 1e-4, 1e-9);
  MXL_CHECK_NEAR(mxl_schedule_lr(&s, 4), 5e-4, 1e-9);
  MXL_CHECK_NEAR(mxl_schedule_lr(&s, 9), 1e-3, 1e-9);
  MXL_CHECK_NEAR(mxl_schedule_lr(&s, 10), 1e-3, 1e-9);
  MXL_CHECK_NEAR(mxl_schedule_lr(&s, 60), 5e-4, 1e-9);
  MXL_CHECK_NEAR(mxl_schedule_lr(&s, 110), 0.0, 1e-9);
  s.kind = MXL_SCHEDULE_COSINE;
  MXL_CHECK_NEAR(mxl_schedule_lr(&s, 60), 5e-4, 1e-9);      /* cos(pi/2) */
  MXL_CHECK_NEAR(mxl_schedule_lr(&s, 35), 1e-3 * 0.5 * (1 + cos(M_PI / 4)), 1e-9);
  s.min_ratio = 0.1f;
  MXL_CHECK_NEAR(mxl_schedule_lr(&s, 110), 1e-4, 1e-9);
  s.kind = MXL_SCHEDULE_CONSTANT;
  MXL_CHECK_NEAR(mxl_schedule_lr(&s, 100), 1e-3, 1e-9);
}

static void test_validation(void) {
  mxl_schedule s = {MXL_SCHEDULE_LINEAR, 1e-3f, 20, 10, 0};
  MXL_CHECK_FAILS(mxl_schedule_validate(&s), MXL_ERR_ARGUMENT, "warmup");
  s.warmup = 0;
  s.lr = 0;
  MXL_CHECK_FAILS(mxl_schedule_validate(&s), MXL_ERR_ARGUMENT, "learning rate");
  mxl_schedule_kind k;
  MXL_CHECK_FAILS(mxl_schedule_kind_parse("cosine_restarts", &k), MXL_ERR_ARGUMENT,
                  "cosine_restarts");
  MXL_CHECK_OK(mxl_schedule_kind_parse("cosine", &k));
  MXL_CHECK(k == MXL_SCHEDULE_COSINE);
}

int main(void) {
  MXL_RUN(test_warmup_then_shapes);
  MXL_RUN(test_validation);
  return mxl_test_summary("schedule");
}
