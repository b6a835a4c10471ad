/* Public API: LoRA training and evaluation. */
#ifndef MXLORA_TRAIN_H
#define MXLORA_TRAIN_H

#ifdef __cplusplus
extern "C" {
#endif

/* What the trainer reports while it runs. */
typedef enum mxl_train_event_kind {
  MXL_EVENT_INFO,  /* a sentence in `message` (setup, resume, data counts) */
  MXL_EVENT_STEP,  /* an optimizer step finished */
  MXL_EVENT_EVAL,  /* an evaluation finished */
  MXL_EVENT_SAVE,  /* adapter and checkpoint written (message: the path) */
} mxl_train_event_kind;

typedef struct mxl_train_event {
  mxl_train_event_kind kind;
  int step, total_steps;
  double loss;         /* mean loss per trained token of the step */
  double lr, grad_norm;
  double eval_loss;    /* MXL_EVENT_EVAL */
  double tokens_per_s; /* tokens processed per second over the last step */
  double elapsed_s, eta_s;
  long long tokens;    /* tokens processed so far */
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
  char out_dir[512];
} mxl_train_summary;

/* Runs a training recipe: `recipe_path` (JSON; NULL for none) with
 * `overrides` ("key=value", dotted keys for nested fields, applied in
 * order) on top. Writes into the recipe's "out" folder: adapter.mxla
 * (the adapter), checkpoint.mxstate (for resume), metrics.jsonl, loss.svg
 * and summary.json. *stop may be set (e.g. by a Ctrl-C handler): the run
 * then saves and returns MXL_ERR_INTERRUPTED. */
mxl_status mxl_train(const char *recipe_path, const char *const *overrides, int n_overrides,
                     mxl_train_event_fn on_event, void *user, volatile const int *stop,
                     mxl_train_summary *summary);

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
} mxl_eval_options;

typedef struct mxl_eval_result {
  double base_loss;    /* mean loss per trained token without adapters */
  double adapted_loss; /* with the adapters (NaN when none were given) */
  long long tokens;    /* trained tokens evaluated */
  size_t samples, skipped_long;
} mxl_eval_result;

mxl_status mxl_eval(const mxl_eval_options *opt, mxl_eval_result *result);

#ifdef __cplusplus
}
#endif

#endif
