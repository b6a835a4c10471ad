/* The trainer object (include/mxlora/train.h). Split across
 *   trainer.c         create (recipe, communicator, model, data, adapter), destroy
 *   trainer_step.c    one optimizer step: batches, forward/backward, the
 *                     gradient all-reduce, the update; evaluation and saves
 *   trainer_state.c   save (one commit point, numbered copies, rescue),
 *                     resume, init adapter, finish
 *   trainer_eval.c    evaluation over the (sharded) eval set
 *   run_dir.c         the run folder: lock, reuse rules, stale temporaries,
 *                     free space
 *   run_match.c       what a checkpoint or an init adapter must share with
 *                     the run */
#ifndef MXL_TRAIN_TRAINER_H
#define MXL_TRAIN_TRAINER_H

#include "adapters/lora.h"
#include "datasets/tokenizer.h"
#include "dist/comm.h"
#include "model/train_step.h"
#include "train/metrics.h"
#include "train/run_dir.h"
#include "train/train_config.h"

/* A copy of one micro-batch (the batcher's buffers are reused per call). */
typedef struct micro_batch {
  int32_t *ids, *labels, *pos, *seg; /* [B·T] */
  float *weights;                    /* [B·T] */
  long long trained, tokens;         /* weight > 0 labels; non-padding tokens */
} micro_batch;

struct mxl_trainer {
  mxl_train_config cfg;
  cJSON *recipe;
  const char *source;
  mxl_train_event_fn on_event;
  void *user;
  volatile const int *stop;

  mxl_comm *comm;
  int rank, world;
  mxl_run_dir dir; /* rank 0: the locked run folder */

  mxl_model *model;
  mxl_backend *be;
  mxl_engine *engine;
  mxl_tokenizer *tok;
  mxl_dataset *all, *train_set, *eval_set;
  mxl_batcher *batcher;
  char data_sha256[65];
  char base_sha256[65]; /* the base model's fingerprint */

  mxl_lora *params, *grads; /* same layout */
  float *m, *v;             /* AdamW moments, backend memory: [n_floats], or this
                               rank's shard [shard_hi - shard_lo] with ZeRO-1 */
  size_t shard_lo, shard_hi; /* the floats this rank updates (all without ZeRO) */
  mxl_lora_layer *view_layers, *grad_layers;
  mxl_lora_view view, gview;
  mxl_train_state st;
  int keeping_told;         /* the first step's activation mode was reported */
  micro_batch *micro;       /* [grad_accum] */

  mxl_metrics metrics;
  int step, total_steps;
  int bad_in_row, skipped_total;
  long long tokens_done;
  double first_loss, last_loss, first_eval, last_eval;
  int eval_step;            /* step of the last evaluation (-1: none) */
  int saved_step;           /* step of the last save in this process (-1: none) */
  int resumed_step;         /* step the run resumed at (0: fresh) */
  int loop_started, stopped, failed;
  double started;           /* monotonic seconds at create */
  double run_seconds;       /* time in steps this process */
  long long run_tokens;     /* tokens trained this process (all ranks) */
  mxl_rate rate;            /* the progress bar's tokens/s */
};

typedef struct mxl_trainer trainer;

char *mxl_trainer_path(const trainer *t, const char *name); /* out/name, malloc'd */
void mxl_trainer_info(trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
double mxl_trainer_now(void);

/* Batching options of the run; loop = 1 for training (shuffled, endless),
 * 0 for one ordered pass (evaluation). Sharded by rank. */
mxl_status mxl_trainer_batch_options(const trainer *t, int loop, mxl_batch_options *o);

/* trainer_state.c */
/* MXL_ERR_NUMERIC for a run that diverged at `step`, saying what happened
 * and where the last good state is. */
mxl_status mxl_trainer_diverged(trainer *t, int step, const char *what);
/* Saves adapter and checkpoint (rank 0 writes; every rank takes part). */
mxl_status mxl_trainer_save_all(trainer *t);
/* From out/checkpoint.mxstate (rank 0 reads, every rank receives). */
mxl_status mxl_trainer_resume(trainer *t, int *resumed);
/* cfg.init_adapter into the parameters (rank 0 reads, every rank receives). */
mxl_status mxl_trainer_init_adapter(trainer *t);
/* Sends rank 0's parameters to every rank. */
mxl_status mxl_trainer_share_params(trainer *t);
/* loss.svg and summary.json (rank 0) and the caller's summary. */
mxl_status mxl_trainer_write_summary(trainer *t, mxl_train_summary *s);

/* trainer_eval.c: mean loss per trained token over the eval set (NaN if
 * empty), every rank evaluating its shard. */
mxl_status mxl_trainer_evaluate(trainer *t, double *loss_out, long long *tokens_out);
/* The loss of micro-batch 0 with the current parameters, no gradients
 * (checks that parameters about to be saved still give a finite loss). */
mxl_status mxl_trainer_probe_loss(trainer *t, double *loss_out);

#endif
