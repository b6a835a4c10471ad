/* The training run (include/mxlora/train.h's mxl_train): setup, the step
 * loop, evaluation, checkpoints. Split across trainer.c (setup and loop),
 * trainer_state.c (checkpoint save and resume) and trainer_eval.c. */
#ifndef MXL_TRAIN_TRAINER_H
#define MXL_TRAIN_TRAINER_H

#include "adapters/lora.h"
#include "datasets/tokenizer.h"
#include "model/train_step.h"
#include "train/metrics.h"
#include "train/train_config.h"

/* A copy of one micro-batch (the batcher's buffers are reused per call). */
typedef struct micro_batch {
  int32_t *ids, *labels, *pos, *seg; /* [B·T] */
  float *weights;                    /* [B·T] */
  long long trained, tokens;         /* weight > 0 labels; non-padding tokens */
} micro_batch;

typedef struct trainer {
  mxl_train_config cfg;
  cJSON *recipe;
  const char *source;
  mxl_train_event_fn on_event;
  void *user;

  mxl_model *model;
  mxl_backend *be;
  mxl_engine *engine;
  mxl_tokenizer *tok;
  mxl_dataset *all, *train_set, *eval_set;
  mxl_batcher *batcher;

  mxl_lora *params, *grads; /* same layout */
  float *m, *v;             /* AdamW moments [n_floats], backend memory */
  mxl_lora_layer *view_layers, *grad_layers;
  mxl_lora_view view, gview;
  mxl_train_state st;
  micro_batch *micro;       /* [grad_accum] */

  mxl_metrics metrics;
  char data_sha256[65];
  int step, total_steps;
  int bad_in_row, skipped_total;
  long long tokens_done;
  double first_loss, last_loss, first_eval, last_eval;
  double started;           /* monotonic seconds at the start of this process's run */
} trainer;

char *mxl_trainer_path(const trainer *t, const char *name); /* out/name, malloc'd */
void mxl_trainer_info(trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Batching options of the run; loop = 1 for training (shuffled, endless),
 * 0 for one ordered pass (evaluation). */
mxl_status mxl_trainer_batch_options(const trainer *t, int loop, mxl_batch_options *o);

/* trainer_state.c */
mxl_status mxl_trainer_save(trainer *t);             /* adapter + checkpoint */
mxl_status mxl_trainer_resume(trainer *t, int *resumed); /* from out/checkpoint.mxstate */
/* loss.svg, summary.json and the caller's summary, at the end of a run. */
mxl_status mxl_trainer_finish(trainer *t, mxl_train_summary *s);

/* trainer_eval.c: mean loss per trained token over the eval set (NaN if empty). */
mxl_status mxl_trainer_evaluate(trainer *t, double *loss_out, long long *tokens_out);

#endif
