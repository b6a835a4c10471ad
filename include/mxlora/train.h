/* Public API: LoRA training and evaluation. */
#ifndef MXLORA_TRAIN_H
#define MXLORA_TRAIN_H

#ifdef __cplusplus
extern "C" {
#endif

/* What the trainer reports while it runs (rank 0 of a data-parallel run
 * alone reports; the other ranks stay quiet). */
typedef enum mxl_train_event_kind {
  MXL_EVENT_INFO,  /* a sentence in `message` (setup, resume, data counts) */
  MXL_EVENT_STEP,  /* an optimizer step finished */
  MXL_EVENT_EVAL,  /* an evaluation finished */
  MXL_EVENT_SAVE,  /* adapter and checkpoint written (message: the folder) */
} mxl_train_event_kind;

typedef struct mxl_train_event {
  mxl_train_event_kind kind;
  int step, total_steps;
  double loss;         /* mean loss per trained token of the step (NaN: not finite) */
  double lr, grad_norm;
  double eval_loss;    /* MXL_EVENT_EVAL */
  double tokens_per_s; /* tokens per second of every rank together, over the last steps */
  double elapsed_s, eta_s;
  long long tokens;    /* tokens processed so far (all ranks) */
  int skipped;         /* the step's update was skipped (NaN/Inf guard) */
  const char *message;
} mxl_train_event;

typedef void (*mxl_train_event_fn)(void *user, const mxl_train_event *ev);

typedef struct mxl_train_summary {
  int steps, skipped_steps, interrupted;
  double first_loss, final_loss;
  double first_eval_loss, final_eval_loss; /* NaN without evaluation */
  double seconds;
  long long tokens;
  int world_size;
  double tokens_per_s;      /* over this process's steps, all ranks together */
  double allreduce_s;       /* seconds in gradient reductions, this process */
  char out_dir[512];
} mxl_train_summary;

/* One setting on top of the recipe, as the user gave it. */
typedef struct mxl_train_setting {
  const char *key;   /* recipe key, dotted for nested ones ("lora.rank") */
  const char *value; /* text, typed by the recipe schema (recipes/README.md) */
  const char *flag;  /* how the user wrote it, for messages ("--rank"); NULL: the key */
} mxl_train_setting;

typedef struct mxl_train_options {
  const char *recipe;                /* JSON recipe file, or NULL */
  const mxl_train_setting *settings; /* applied in order on top of it */
  int n_settings;
  mxl_train_event_fn on_event;       /* optional */
  void *user;
  /* Set to non-zero (e.g. by a signal handler) to stop at the next step:
   * every rank stops at the same step, and the run is saved. */
  volatile const int *stop;
} mxl_train_options;

/* ---- the trainer: create, step until done, finish, destroy ----
 *
 *   mxl_trainer *t;
 *   MXL_TRY(mxl_trainer_create(&opt, &t));
 *   for (mxl_train_progress p = MXL_TRAIN_RUNNING; p == MXL_TRAIN_RUNNING;)
 *     st = mxl_trainer_step(t, &p);           // stop on error
 *   st = mxl_trainer_finish(t, &summary);     // final save, curve, summary
 *   mxl_trainer_destroy(t);
 *
 * Under an MPI launcher (mpirun -np N, srun) every rank runs this same
 * sequence: each trains its share of every global batch (N × batch_size
 * rows) and the LoRA gradients are averaged over the global batch between
 * the backward pass and the optimizer step. Rank 0 alone writes files and
 * reports events. A failure on one rank must end them all: call
 * mxl_dist_abort after any error. */
typedef struct mxl_trainer mxl_trainer;

typedef enum mxl_train_progress {
  MXL_TRAIN_RUNNING, /* more steps to go */
  MXL_TRAIN_DONE,    /* every step taken */
  MXL_TRAIN_STOPPED, /* *stop was set: nothing more is trained */
} mxl_train_progress;

/* Reads the recipe and settings, opens the run folder (locked; an existing
 * one needs resume or overwrite), loads model and data, and initialises the
 * adapter (PEFT init, init_adapter, or the checkpoint when resuming). */
mxl_status mxl_trainer_create(const mxl_train_options *o, mxl_trainer **out);

/* One optimizer step, with the evaluation and save it is due for. A step
 * whose loss or gradients are NaN/Inf is skipped; max_bad_steps of them in a
 * row, or parameters that become non-finite, fail with MXL_ERR_NUMERIC
 * (nothing more is saved: the last save stays the last finite adapter). */
mxl_status mxl_trainer_step(mxl_trainer *t, mxl_train_progress *progress);

/* Saves adapter and checkpoint now (one commit point: the checkpoint and
 * the adapter of a save are renamed into place together, after both are
 * written). A failed save is retried in rescue_dir; the error says where
 * the trained state is. */
mxl_status mxl_trainer_save(mxl_trainer *t);

/* Ends the run: the final save (refused when the run diverged), loss.svg,
 * summary.json and *summary. After MXL_TRAIN_STOPPED it saves and returns
 * MXL_ERR_INTERRUPTED. */
mxl_status mxl_trainer_finish(mxl_trainer *t, mxl_train_summary *summary);

int mxl_trainer_rank(const mxl_trainer *t);
int mxl_trainer_world_size(const mxl_trainer *t);
void mxl_trainer_destroy(mxl_trainer *t);

/* Ends every rank of an MPI job with exit status `code` when this process
 * is part of one (MPI_Abort); returns without doing anything otherwise. */
void mxl_dist_abort(int code);

/* The whole run: create, steps, finish, destroy. */
mxl_status mxl_train(const mxl_train_options *o, mxl_train_summary *summary);

/* Evaluation: mean loss per trained token (and perplexity) of a dataset,
 * for the base model and, when adapters are given, with them overlaid. */
typedef struct mxl_eval_options {
  const char *model, *data;
  const char *const *adapters; /* adapter files, overlaid together */
  const float *scales;         /* [n_adapters] or NULL (all 1) */
  int n_adapters;
  int seq_len;                 /* 0: 2048 */
  int batch_size;              /* 0: 4 */
  const char *loss_mask;       /* NULL: "assistant" */
  const char *backend;         /* NULL: "cpu"; or "cuda", "cuda:N", "auto", "ref" */
  int threads;
  mxl_progress_fn progress;    /* optional, per batch */
  void *progress_user;
  mxl_weight_options weights;  /* CPU: weights in 2 MB pages (--no-mmap) */
} mxl_eval_options;

typedef struct mxl_eval_result {
  double base_loss;    /* mean loss per trained token without adapters */
  double adapted_loss; /* with the adapters (NaN when none were given) */
  long long tokens;    /* trained tokens evaluated */
  size_t samples, skipped_long;
} mxl_eval_result;

/* Fails with MXL_ERR_NUMERIC when a loss is NaN/Inf (the result is still
 * filled in). */
mxl_status mxl_eval(const mxl_eval_options *opt, mxl_eval_result *result);

#ifdef __cplusplus
}
#endif

#endif
