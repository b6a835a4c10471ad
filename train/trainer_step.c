/* One optimizer step of a (data-parallel) run:
 *
 *   every rank: its rows of the global batch -> global trained-token count
 *   (all-reduce) -> loss weights 1/count -> forward + backward into the
 *   LoRA gradients -> gradient all-reduce (a sum: the mean over the global
 *   batch) -> the same AdamW update everywhere (or each rank its shard,
 *   then an all-gather, with ZeRO-1).
 *
 * N ranks with micro-batches of b rows thus take exactly the step one
 * process takes with N·b rows, up to the order of the fp32 sums. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "train/trainer.h"

static mxl_status fetch_micro_batches(trainer *t, long long *trained, long long *tokens) {
  const size_t n = (size_t)t->cfg.batch_size * t->cfg.seq_len;
  *trained = *tokens = 0;
  for (int i = 0; i < t->cfg.grad_accum; i++) {
    const mxl_batch *b = NULL;
    int done = 0;
    MXL_TRY(mxl_batcher_next(t->batcher, &b, &done));
    micro_batch *m = &t->micro[i];
    memcpy(m->ids, b->ids, n * 4), memcpy(m->labels, b->labels, n * 4);
    memcpy(m->pos, b->pos, n * 4), memcpy(m->seg, b->seg, n * 4);
    memcpy(m->weights, b->weights, n * 4);
    m->trained = (long long)b->trained;
    m->tokens = 0;
    for (size_t j = 0; j < n; j++) m->tokens += b->seg[j] >= 0;
    *trained += m->trained;
    *tokens += m->tokens;
  }
  return MXL_OK;
}

/* Dropout masks depend only on (seed, step, micro-batch, rank): a resumed
 * run draws exactly the masks the uninterrupted one would have. Each rank
 * draws its own (rank 0 the masks of a single process). */
static uint64_t step_seed(const trainer *t, int micro) {
  uint64_t s = t->cfg.seed * 0x9e3779b97f4a7c15ull + (uint64_t)t->step * 1000003u + micro;
  s ^= (uint64_t)t->rank * 0xd1b54a32d192ed03ull;
  return mxl_splitmix64(&s);
}

/* Says once what keep_activations made of the first step: auto decides
 * from the memory left then. */
static void tell_keeping(trainer *t) {
  if (t->keeping_told) return;
  t->keeping_told = 1;
  const mxl_train_state *st = &t->st;
  const mxl_config *c = t->engine->cfg;
  const int n = t->cfg.batch_size * t->cfg.seq_len;
  const int chunk = mxl_train_moe_chunk(st, t->be->ops->host_memory);
  size_t bytes = mxl_train_keep_bytes(c, n, chunk, t->cfg.rank, t->cfg.dropout > 0);
  if (st->keep_activations == MXL_KEEP_AUTO)
    mxl_trainer_info(t, "activations: %s (keep_activations auto: %.2f GB of tapes, budget "
                     "%.2f GB)", st->keeping ? "kept for the backward" : "recomputed",
                     bytes / 1e9, st->keep_budget / 1e9);
  else
    mxl_trainer_info(t, "activations: %s (keep_activations %s: %.2f GB of tapes)",
                     st->keeping ? "kept for the backward" : "recomputed",
                     mxl_keep_mode_name(st->keep_activations), bytes / 1e9);
  if (t->be->ops->host_memory)
    mxl_trainer_info(t, "mapped weights: %s",
                     st->resident == MXL_RESIDENT_DROP
                         ? "dropped from the resident set after each use (auto: the checkpoint "
                           "is over a quarter of the memory available, or that is unknown)"
                         : "kept resident between steps");
}

/* Loss weights 1/(global trained tokens): every rank's gradients are then
 * parts of the global mean, and their sum is the step's gradient. */
static mxl_status forward_backward(trainer *t, double global_trained, double *loss) {
  const mxl_lora_view *views[] = {&t->view};
  const size_t n = (size_t)t->cfg.batch_size * t->cfg.seq_len;
  *loss = 0;
  for (int i = 0; i < t->cfg.grad_accum; i++) {
    micro_batch *m = &t->micro[i];
    for (size_t j = 0; j < n; j++) m->weights[j] /= (float)global_trained;
    mxl_lora_stack stack = {views, 1, 1, step_seed(t, i)};
    mxl_train_batch b = {t->cfg.batch_size, t->cfg.seq_len, m->ids, m->labels, m->weights,
                         m->pos, m->seg, NULL, NULL};
    double part = 0;
    MXL_TRY(mxl_train_step(t->engine, &t->st, &b, &stack, &t->gview, &part));
    tell_keeping(t);
    *loss += part;
  }
  return MXL_OK;
}

/* Sums the gradients over the ranks (each its own shard with ZeRO-1) and
 * returns the global norm. */
static mxl_status reduce_gradients(trainer *t, double *norm) {
  const mxl_ops *ops = t->be->ops;
  const size_t n = t->params->layout->n_floats;
  float *g = t->grads->params;
  if (!t->cfg.zero_stage) {
    MXL_TRY(mxl_comm_allreduce_block(t->comm, g, n));
    *norm = sqrt(ops->sum_squares(t->be, g, n));
    return MXL_OK;
  }
  MXL_TRY(mxl_comm_reduce_scatter_block(t->comm, g, n));
  double sq = ops->sum_squares(t->be, g + t->shard_lo, t->shard_hi - t->shard_lo);
  MXL_TRY(mxl_comm_allreduce(t->comm, &sq, 1, MXL_REDUCE_SUM));
  *norm = sqrt(sq);
  return MXL_OK;
}

/* Clips by global norm and applies AdamW, or skips a step whose loss or
 * gradients are not finite. Fails when the update itself made a parameter
 * NaN/Inf: no later save may write it. */
static mxl_status apply_update(trainer *t, double loss, double norm, int *skipped) {
  const mxl_ops *ops = t->be->ops;
  const size_t n = t->params->layout->n_floats;
  *skipped = !isfinite(norm) || !isfinite(loss);
  if (*skipped) {
    t->skipped_total++;
    if (++t->bad_in_row >= t->cfg.max_bad_steps) {
      char what[160];
      snprintf(what, sizeof what, "%d step%s in a row had NaN/Inf loss or gradients "
               "(max_bad_steps %d)", t->bad_in_row, t->bad_in_row == 1 ? "" : "s",
               t->cfg.max_bad_steps);
      return mxl_trainer_diverged(t, t->step + 1, what);
    }
  } else {
    t->bad_in_row = 0;
    const mxl_train_config *c = &t->cfg;
    float clip = c->max_grad_norm > 0 && norm > c->max_grad_norm
                     ? (float)(c->max_grad_norm / norm) : 1.0f;
    float lr = mxl_schedule_lr(&c->schedule, t->step);
    const size_t lo = t->shard_lo, count = t->shard_hi - t->shard_lo;
    ops->adamw(t->be, t->params->params + lo, t->grads->params + lo, t->m, t->v, count, lr,
               c->beta1, c->beta2, c->eps, c->weight_decay, t->step + 1, clip);
    if (c->zero_stage) MXL_TRY(mxl_comm_allgather_block(t->comm, t->params->params, n));
    if (!isfinite(ops->sum_squares(t->be, t->params->params, n)))
      return mxl_trainer_diverged(t, t->step + 1, "the update made LoRA parameters NaN/Inf");
  }
  ops->zero(t->be, t->grads->params, n * sizeof(float));
  return ops->sync(t->be);
}

static mxl_status train_one_step(trainer *t, mxl_step_record *rec, double *rate) {
  double t0 = mxl_trainer_now();
  long long trained, tokens;
  MXL_TRY(fetch_micro_batches(t, &trained, &tokens));
  double counts[2] = {(double)trained, (double)tokens};
  MXL_TRY(mxl_comm_allreduce(t->comm, counts, 2, MXL_REDUCE_SUM));
  double loss = NAN, norm = NAN;
  int skipped = 1;
  if (counts[0] > 0) {
    MXL_TRY(forward_backward(t, counts[0], &loss));
    MXL_TRY(mxl_comm_allreduce(t->comm, &loss, 1, MXL_REDUCE_SUM));
    MXL_TRY(reduce_gradients(t, &norm));
    MXL_TRY(apply_update(t, loss, norm, &skipped));
  } else {
    mxl_trainer_info(t, "step %d: no trained tokens in this batch; update skipped", t->step + 1);
  }
  double seconds = mxl_trainer_now() - t0;
  memset(rec, 0, sizeof *rec);
  rec->step = ++t->step;
  rec->loss = loss;
  rec->lr = mxl_schedule_lr(&t->cfg.schedule, t->step - 1);
  rec->grad_norm = norm;
  rec->tokens = (long long)counts[0];
  rec->tokens_per_s = counts[1] / fmax(seconds, 1e-9);
  rec->elapsed_s = mxl_trainer_now() - t->started;
  rec->skipped = skipped;
  t->tokens_done += (long long)counts[1];
  t->run_tokens += (long long)counts[1];
  t->run_seconds += seconds;
  *rate = mxl_rate_add(&t->rate, counts[1], seconds);
  if (isfinite(loss)) {
    if (!isfinite(t->first_loss)) t->first_loss = loss;
    t->last_loss = loss;
  }
  return t->rank == 0 ? mxl_metrics_step(&t->metrics, rec) : MXL_OK;
}

static void report_step(trainer *t, const mxl_step_record *r, double rate) {
  if (!t->on_event || t->rank != 0) return;
  double per_step = t->run_seconds / fmax(t->step - t->resumed_step, 1);
  mxl_train_event ev = {.kind = MXL_EVENT_STEP, .step = t->step, .total_steps = t->total_steps,
                        .loss = r->loss, .lr = r->lr, .grad_norm = r->grad_norm,
                        .tokens_per_s = rate, .elapsed_s = r->elapsed_s,
                        .eta_s = per_step * (t->total_steps - t->step),
                        .tokens = t->tokens_done, .skipped = r->skipped};
  t->on_event(t->user, &ev);
}

static mxl_status maybe_evaluate(trainer *t, int force) {
  int every = t->cfg.eval_every;
  if (!t->eval_set || mxl_dataset_size(t->eval_set) == 0) return MXL_OK;
  if (!force && (every <= 0 || t->step % every != 0)) return MXL_OK;
  double loss;
  long long tokens;
  MXL_TRY(mxl_trainer_evaluate(t, &loss, &tokens));
  t->eval_step = t->step;
  if (isfinite(loss)) {
    if (!isfinite(t->first_eval)) t->first_eval = loss;
    t->last_eval = loss;
  }
  if (t->rank == 0) MXL_TRY(mxl_metrics_eval(&t->metrics, t->step, loss, tokens));
  if (t->on_event && t->rank == 0) {
    mxl_train_event ev = {.kind = MXL_EVENT_EVAL, .step = t->step,
                          .total_steps = t->total_steps, .eval_loss = loss, .tokens = tokens};
    t->on_event(t->user, &ev);
  }
  if (!isfinite(loss) && t->step > 0)
    return mxl_trainer_diverged(t, t->step, "the evaluation loss is NaN/Inf");
  return MXL_OK;
}

static mxl_status step_once(trainer *t, mxl_train_progress *progress) {
  if (!t->loop_started) {
    t->loop_started = 1;
    if (t->step == 0) MXL_TRY(maybe_evaluate(t, 1));
  }
  /* Every rank stops at the same step, or none does. */
  double stop = t->stop && *t->stop;
  MXL_TRY(mxl_comm_allreduce(t->comm, &stop, 1, MXL_REDUCE_MAX));
  if (stop) {
    t->stopped = 1;
    *progress = MXL_TRAIN_STOPPED;
    return MXL_OK;
  }
  mxl_step_record rec;
  double rate;
  MXL_TRY(train_one_step(t, &rec, &rate));
  report_step(t, &rec, rate);
  int last = t->step == t->total_steps;
  MXL_TRY(maybe_evaluate(t, last));
  if (!last && t->cfg.save_every > 0 && t->step % t->cfg.save_every == 0) {
    if (t->bad_in_row > 0)
      mxl_trainer_info(t, "step %d: save skipped, the step was not finite", t->step);
    else
      MXL_TRY(mxl_trainer_save_all(t));
  }
  *progress = last ? MXL_TRAIN_DONE : MXL_TRAIN_RUNNING;
  return MXL_OK;
}

mxl_status mxl_trainer_step(mxl_trainer *t, mxl_train_progress *progress) {
  *progress = MXL_TRAIN_DONE;
  if (t->failed) return mxl_errorf(MXL_ERR_STATE, "the run failed earlier and cannot go on");
  if (t->stopped) {
    *progress = MXL_TRAIN_STOPPED;
    return MXL_OK;
  }
  if (t->step >= t->total_steps) return MXL_OK;
  mxl_status st = step_once(t, progress);
  if (st != MXL_OK) t->failed = 1;
  return st;
}
