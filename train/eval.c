/* mxl_eval: loss and perplexity of a dataset with and without adapters. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/adapter_file.h"
#include "adapters/lora.h"
#include "core/status.h"
#include "model/train_step.h"
#include "train/evaluate.h"

typedef struct eval_run {
  mxl_model *model;
  mxl_tokenizer *tok;
  mxl_backend *be;
  mxl_engine *engine;
  mxl_dataset *data;
  mxl_train_state st;
  mxl_lora *loras[16];
  mxl_lora_layer *layers[16];
  mxl_lora_view views[16];
  int n_loras;
} eval_run;

static mxl_status open_all(eval_run *r, const mxl_eval_options *o) {
  MXL_TRY(mxl_model_open(o->model, &r->model));
  MXL_TRY(mxl_tokenizer_load(r->model->dir, &r->tok));
  MXL_TRY(mxl_backend_create_named(o->backend, o->threads, &r->be));
  MXL_TRY(mxl_engine_create_with(r->model, r->be, &o->weights, &r->engine));
  mxl_data_options dopt = {0};
  MXL_TRY(mxl_dataset_load(o->data, r->tok, &dopt, &r->data));
  if (o->n_adapters > 16) return mxl_errorf(MXL_ERR_ARGUMENT, "at most 16 adapters");
  for (int i = 0; i < o->n_adapters; i++) {
    mxl_adapter *file = NULL;
    mxl_status st = mxl_adapter_open(o->adapters[i], &file);
    if (st == MXL_OK) st = mxl_adapter_load_overlay(file, r->model, r->be, &r->loras[i]);
    mxl_adapter_close(file);
    MXL_TRY(st);
    r->n_loras = i + 1;
    r->layers[i] = calloc(r->model->config.n_layers, sizeof *r->layers[i]);
    if (!r->layers[i]) return mxl_errorf(MXL_ERR_MEMORY, "out of memory");
    r->views[i].layers = r->layers[i];
    mxl_lora_fill_view(r->loras[i]->layout, r->loras[i]->params, o->scales ? o->scales[i] : 1,
                       &r->views[i]);
  }
  return MXL_OK;
}

static void close_all(eval_run *r) {
  if (r->engine) mxl_train_state_release(r->engine, &r->st);
  for (int i = 0; i < r->n_loras; i++) {
    mxl_lora_destroy(r->loras[i]);
    free(r->layers[i]);
  }
  mxl_dataset_destroy(r->data);
  mxl_engine_destroy(r->engine);
  mxl_backend_destroy(r->be);
  mxl_tokenizer_free(r->tok);
  mxl_model_close(r->model);
}

mxl_status mxl_evaluate_batches(mxl_engine *e, mxl_train_state *st, mxl_batcher *b,
                                const mxl_lora_stack *lora, mxl_progress_fn progress,
                                void *user, double *loss_sum, long long *tokens) {
  *loss_sum = 0;
  *tokens = 0;
  mxl_status s = MXL_OK;
  for (int done = 0; s == MXL_OK && !done;) {
    const mxl_batch *batch = NULL;
    s = mxl_batcher_next(b, &batch, &done);
    if (s != MXL_OK || !batch || batch->trained == 0) continue;
    mxl_train_batch tb = {batch->rows, batch->seq_len, batch->ids, batch->labels,
                          batch->weights, batch->pos, batch->seg, NULL, NULL};
    double part = 0;
    s = mxl_train_step(e, st, &tb, lora, NULL, &part);
    *loss_sum += part;
    *tokens += (long long)batch->trained;
    if (progress) progress(user, "evaluating", (double)*tokens, 0);
  }
  return s;
}

/* One ordered pass over the data; returns the mean loss per trained token. */
static mxl_status pass(eval_run *r, const mxl_eval_options *o, const mxl_lora_stack *lora,
                       double *loss, mxl_eval_result *res) {
  mxl_batch_options bo = {0};
  bo.seq_len = o->seq_len > 0 ? o->seq_len : 2048;
  bo.rows = o->batch_size > 0 ? o->batch_size : 4;
  bo.pack = 1;
  bo.truncation = MXL_TRUNCATE_DROP;
  MXL_TRY(mxl_loss_mask_parse(o->loss_mask ? o->loss_mask : "assistant", &bo.mask));
  mxl_batcher *b = NULL;
  MXL_TRY(mxl_batcher_create(r->data, &bo, &b));
  mxl_batcher_counts counts = mxl_batcher_get_counts(b);
  res->samples = counts.docs;
  res->skipped_long = counts.dropped_long;
  double sum = 0;
  long long tokens = 0;
  mxl_status st = mxl_evaluate_batches(r->engine, &r->st, b, lora, o->progress, o->progress_user,
                                       &sum, &tokens);
  mxl_batcher_destroy(b);
  *loss = tokens > 0 ? sum / tokens : NAN;
  res->tokens = tokens;
  return st;
}

mxl_status mxl_eval(const mxl_eval_options *o, mxl_eval_result *res) {
  memset(res, 0, sizeof *res);
  res->base_loss = res->adapted_loss = NAN;
  if (!o->model || !o->data) return mxl_errorf(MXL_ERR_ARGUMENT, "eval needs a model and data");
  if (o->seq_len < 0 || o->batch_size < 0)
    return mxl_errorf(MXL_ERR_ARGUMENT, "eval: seq_len %d and batch_size %d: expected 0 "
                      "(the default) or a positive count", o->seq_len, o->batch_size);
  eval_run r = {0};
  mxl_status st = open_all(&r, o);
  if (st == MXL_OK) st = pass(&r, o, NULL, &res->base_loss, res);
  if (st == MXL_OK && r.n_loras > 0) {
    const mxl_lora_view *views[16];
    for (int i = 0; i < r.n_loras; i++) views[i] = &r.views[i];
    mxl_lora_stack stack = {views, r.n_loras, 0, 0};
    st = pass(&r, o, &stack, &res->adapted_loss, res);
  }
  close_all(&r);
  /* A non-finite loss is no measurement: the result stays filled in for
   * the caller to show, but the evaluation fails. */
  if (st == MXL_OK && res->tokens > 0 && !isfinite(res->base_loss))
    st = mxl_errorf(MXL_ERR_NUMERIC, "%s: the base model's loss is NaN/Inf", o->model);
  else if (st == MXL_OK && o->n_adapters > 0 && res->tokens > 0 && !isfinite(res->adapted_loss))
    st = mxl_errorf(MXL_ERR_NUMERIC, "the loss with the adapter%s is NaN/Inf: %s holds "
                    "non-finite or overflowing values (a diverged training run?)",
                    o->n_adapters > 1 ? "s" : "", o->adapters[0]);
  return st;
}
