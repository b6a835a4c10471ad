#include <math.h>
#include <stdlib.h>

#include "core/status.h"
#include "train/evaluate.h"
#include "train/trainer.h"

mxl_status mxl_trainer_evaluate(trainer *t, double *loss_out, long long *tokens_out) {
  *loss_out = NAN;
  *tokens_out = 0;
  mxl_batch_options o;
  MXL_TRY(mxl_trainer_batch_options(t, 0, &o));
  mxl_batcher *b = NULL;
  MXL_TRY(mxl_batcher_create(t->eval_set, &o, &b));
  const mxl_lora_view *views[] = {&t->view};
  mxl_lora_stack stack = {views, 1, 0, 0}; /* no dropout in evaluation */
  double sum = 0;
  long long tokens = 0;
  mxl_status st = mxl_evaluate_batches(t->engine, &t->st, b, &stack, NULL, NULL, &sum, &tokens);
  mxl_batcher_destroy(b);
  if (st == MXL_OK && tokens > 0) *loss_out = sum / tokens;
  *tokens_out = tokens;
  return st;
}
