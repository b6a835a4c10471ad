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
  /* Every rank evaluated its rows of each batch. */
  double both[2] = {sum, (double)tokens};
  if (st == MXL_OK) st = mxl_comm_allreduce(t->comm, both, 2, MXL_REDUCE_SUM);
  if (st == MXL_OK && both[1] > 0) *loss_out = both[0] / both[1];
  *tokens_out = (long long)both[1];
  return st;
}

mxl_status mxl_trainer_probe_loss(trainer *t, double *loss_out) {
  const micro_batch *m = &t->micro[0];
  const mxl_lora_view *views[] = {&t->view};
  mxl_lora_stack stack = {views, 1, 0, 0};
  mxl_train_batch b = {t->cfg.batch_size, t->cfg.seq_len, m->ids, m->labels, m->weights,
                       m->pos, m->seg, NULL, NULL};
  return mxl_train_step(t->engine, &t->st, &b, &stack, NULL, loss_out);
}
