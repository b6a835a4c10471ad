#include "train/trainer.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "core/sha256.h"
#include "core/status.h"

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

char *mxl_trainer_path(const trainer *t, const char *name) {
  return mxl_path_join(t->cfg.out, name);
}

void mxl_trainer_info(trainer *t, const char *fmt, ...) {
  if (!t->on_event) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  mxl_train_event ev = {.kind = MXL_EVENT_INFO, .step = t->step, .total_steps = t->total_steps,
                        .message = msg};
  t->on_event(t->user, &ev);
}

/* ---------------------------------------------------------------- setup */

static mxl_status load_recipe(trainer *t, const char *path, const char *const *overrides,
                              int n) {
  t->source = path ? path : "command line";
  if (path) {
    MXL_TRY(mxl_json_parse_file(path, 1 << 20, &t->recipe));
  } else {
    t->recipe = cJSON_CreateObject();
    if (!t->recipe) return mxl_errorf(MXL_ERR_MEMORY, "recipe: out of memory");
  }
  for (int i = 0; i < n; i++) MXL_TRY(mxl_recipe_override(t->recipe, overrides[i]));
  return mxl_train_config_parse(t->recipe, t->source, &t->cfg);
}

static mxl_status open_model(trainer *t) {
  const mxl_train_config *c = &t->cfg;
  if (c->tiny_preset && !mxl_path_exists(c->model)) {
    mxl_trainer_info(t, "writing the tiny '%s' model to %s", c->tiny_preset, c->model);
    mxl_tiny_options opt = {0};
    opt.preset = c->tiny_preset;
    opt.layout = "hf";
    opt.seed = c->tiny_seed;
    opt.vocab_corpus = c->tiny_corpus;
    opt.set = c->tiny_set;
    opt.n_set = c->n_tiny_set;
    MXL_TRY(mxl_tiny_write(c->model, &opt, NULL, NULL));
  }
  MXL_TRY(mxl_model_open(c->model, &t->model));
  if (t->model->w.qk_interleaved)
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "%s: metal/model.bin stores q/k permuted and pre-scaled; train on the "
                      "repository root or original/ (the adapter then overlays on all three)",
                      c->model);
  mxl_status st = mxl_backend_create_named(c->backend, c->threads, &t->be);
  if (st != MXL_OK) return mxl_error_prefix(st, "%s: ", t->source);
  MXL_TRY(mxl_engine_create(t->model, t->be, &t->engine));
  return mxl_tokenizer_load(t->model->dir, &t->tok);
}

static mxl_status load_data(trainer *t) {
  const mxl_train_config *c = &t->cfg;
  mxl_data_options opts = {0};
  MXL_TRY(mxl_analysis_rule_parse(c->analysis_rule, &opts.render.analysis));
  opts.on_bad_line = c->skip_bad_lines ? MXL_BAD_LINE_SKIP : MXL_BAD_LINE_ERROR;
  MXL_TRY(mxl_dataset_load(c->data, t->tok, &opts, &t->all));
  if (mxl_dataset_skipped(t->all))
    mxl_trainer_info(t, "skipped %zu bad samples of %s; the first: %s",
                     mxl_dataset_skipped(t->all), c->data, mxl_dataset_first_skip(t->all));
  if (c->eval_data) {
    t->train_set = t->all;
    t->all = NULL;
    MXL_TRY(mxl_dataset_load(c->eval_data, t->tok, &opts, &t->eval_set));
  } else {
    MXL_TRY(mxl_dataset_split(t->all, c->eval_fraction, (size_t)c->eval_count, c->seed,
                              &t->train_set, &t->eval_set));
  }
  uint8_t digest[MXL_SHA256_SIZE];
  MXL_TRY(mxl_sha256_file(c->data, digest));
  mxl_sha256_hex(digest, t->data_sha256);
  mxl_trainer_info(t, "data: %zu training and %zu evaluation samples from %s",
                   mxl_dataset_size(t->train_set),
                   t->eval_set ? mxl_dataset_size(t->eval_set) : (size_t)0, c->data);
  return MXL_OK;
}

mxl_status mxl_trainer_batch_options(const trainer *t, int loop, mxl_batch_options *o) {
  const mxl_train_config *c = &t->cfg;
  memset(o, 0, sizeof *o);
  o->seq_len = c->seq_len;
  o->rows = c->batch_size;
  o->pack = c->pack;
  o->truncation = c->truncate_cut ? MXL_TRUNCATE_CUT : MXL_TRUNCATE_DROP;
  MXL_TRY(mxl_loss_mask_parse(c->loss_mask, &o->mask));
  o->shuffle = loop;
  o->seed = c->seed;
  o->loop = loop;
  o->pad_id = 0;
  return MXL_OK;
}

static mxl_status make_batcher(trainer *t) {
  mxl_batch_options o;
  MXL_TRY(mxl_trainer_batch_options(t, 1, &o));
  MXL_TRY(mxl_batcher_create(t->train_set, &o, &t->batcher));
  mxl_batcher_counts n = mxl_batcher_get_counts(t->batcher);
  mxl_trainer_info(t, "batches of %d × %d tokens%s: %zu documents (%zu cut, %zu too long "
                   "dropped, %zu with nothing to train dropped)",
                   t->cfg.batch_size, t->cfg.seq_len, t->cfg.pack ? ", packed" : "", n.docs,
                   n.truncated, n.dropped_long, n.dropped_untrained);
  return MXL_OK;
}

static int total_steps(const trainer *t) {
  const mxl_train_config *c = &t->cfg;
  if (c->steps > 0) return c->steps;
  double tokens = 0;
  for (size_t i = 0; i < mxl_dataset_size(t->train_set); i++) {
    mxl_sample_view s;
    if (mxl_dataset_sample(t->train_set, i, &s) == MXL_OK)
      tokens += s.n < (size_t)c->seq_len ? s.n : (size_t)c->seq_len;
  }
  double per_step = (double)c->batch_size * c->seq_len * c->grad_accum;
  int steps = (int)ceil(c->epochs * tokens / per_step);
  return steps > 0 ? steps : 1;
}

static mxl_status make_lora(trainer *t) {
  const mxl_train_config *c = &t->cfg;
  const mxl_config *mc = &t->model->config;
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, c->rank, c->alpha);
  lc.rslora = c->rslora;
  if (c->attn_targets)
    MXL_TRY(mxl_lora_config_add(&lc, c->attn_targets, c->n_attn_layers ? c->attn_layers : NULL,
                                c->n_attn_layers, mc->n_layers));
  if (c->expert_targets)
    MXL_TRY(mxl_lora_config_add(&lc, c->expert_targets,
                                c->n_expert_layers ? c->expert_layers : NULL,
                                c->n_expert_layers, mc->n_layers));
  MXL_TRY(mxl_lora_create(mc, &lc, t->be, &t->params));
  MXL_TRY(mxl_lora_create(mc, &lc, t->be, &t->grads));
  MXL_TRY(mxl_lora_init_peft(t->params, c->seed));
  size_t bytes = t->params->layout->n_floats * sizeof(float);
  t->m = t->be->ops->alloc(t->be, bytes);
  t->v = t->be->ops->alloc(t->be, bytes);
  t->view_layers = calloc(mc->n_layers, sizeof *t->view_layers);
  t->grad_layers = calloc(mc->n_layers, sizeof *t->grad_layers);
  if (!t->m || !t->v || !t->view_layers || !t->grad_layers)
    return mxl_errorf(MXL_ERR_MEMORY, "optimizer state: out of memory");
  t->view.layers = t->view_layers;
  t->gview.layers = t->grad_layers;
  mxl_lora_fill_view(t->params->layout, t->params->params, 1.0f, &t->view);
  mxl_lora_fill_view(t->grads->layout, t->grads->params, 1.0f, &t->gview);
  t->view.dropout = c->dropout;
  mxl_trainer_info(t, "LoRA: rank %d, alpha %g, %zu trainable parameters", c->rank, c->alpha,
                   t->params->layout->n_params);
  return MXL_OK;
}

static mxl_status make_micro_batches(trainer *t) {
  const size_t n = (size_t)t->cfg.batch_size * t->cfg.seq_len;
  t->micro = calloc(t->cfg.grad_accum, sizeof *t->micro);
  if (!t->micro) return mxl_errorf(MXL_ERR_MEMORY, "batches: out of memory");
  for (int i = 0; i < t->cfg.grad_accum; i++) {
    micro_batch *m = &t->micro[i];
    m->ids = malloc(n * 4), m->labels = malloc(n * 4), m->pos = malloc(n * 4);
    m->seg = malloc(n * 4), m->weights = malloc(n * 4);
    if (!m->ids || !m->labels || !m->pos || !m->seg || !m->weights)
      return mxl_errorf(MXL_ERR_MEMORY, "batches: out of memory");
  }
  return MXL_OK;
}

static mxl_status setup(trainer *t) {
  MXL_TRY(mxl_make_dirs(t->cfg.out));
  MXL_TRY(open_model(t));
  MXL_TRY(load_data(t));
  MXL_TRY(make_batcher(t));
  t->total_steps = total_steps(t);
  mxl_schedule *s = &t->cfg.schedule;
  s->total = t->total_steps;
  if (s->warmup < 0) s->warmup = (int)ceil(t->cfg.warmup_ratio * t->total_steps);
  if (s->warmup > s->total) s->warmup = s->total;
  mxl_status st = mxl_schedule_validate(s);
  if (st != MXL_OK) return mxl_error_prefix(st, "%s: ", t->source);
  MXL_TRY(make_lora(t));
  MXL_TRY(make_micro_batches(t));
  int resumed = 0;
  if (t->cfg.resume) MXL_TRY(mxl_trainer_resume(t, &resumed));
  char *metrics = mxl_trainer_path(t, "metrics.jsonl");
  st = metrics ? mxl_metrics_open(&t->metrics, metrics, resumed ? t->step : 0)
               : mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  free(metrics);
  return st;
}

static void teardown(trainer *t) {
  mxl_metrics_close(&t->metrics);
  for (int i = 0; t->micro && i < t->cfg.grad_accum; i++) {
    free(t->micro[i].ids), free(t->micro[i].labels), free(t->micro[i].pos);
    free(t->micro[i].seg), free(t->micro[i].weights);
  }
  free(t->micro);
  if (t->engine) mxl_train_state_release(t->engine, &t->st);
  if (t->be) {
    t->be->ops->free(t->be, t->m);
    t->be->ops->free(t->be, t->v);
  }
  mxl_lora_destroy(t->params);
  mxl_lora_destroy(t->grads);
  free(t->view_layers);
  free(t->grad_layers);
  mxl_batcher_destroy(t->batcher);
  mxl_dataset_destroy(t->eval_set);
  mxl_dataset_destroy(t->train_set);
  mxl_dataset_destroy(t->all);
  mxl_tokenizer_free(t->tok);
  mxl_engine_destroy(t->engine);
  mxl_backend_destroy(t->be);
  mxl_model_close(t->model);
  cJSON_Delete(t->recipe);
}

/* ---------------------------------------------------------------- one step */

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

/* Dropout masks depend only on (seed, step, micro-batch): a resumed run
 * draws exactly the masks the uninterrupted one would have. */
static uint64_t step_seed(const trainer *t, int micro) {
  uint64_t s = t->cfg.seed * 0x9e3779b97f4a7c15ull + (uint64_t)t->step * 1000003u + micro;
  return mxl_splitmix64(&s);
}

static mxl_status forward_backward(trainer *t, long long trained, double *loss) {
  const mxl_lora_view *views[] = {&t->view};
  *loss = 0;
  for (int i = 0; i < t->cfg.grad_accum; i++) {
    micro_batch *m = &t->micro[i];
    const size_t n = (size_t)t->cfg.batch_size * t->cfg.seq_len;
    for (size_t j = 0; j < n; j++) m->weights[j] /= (float)trained;
    mxl_lora_stack stack = {views, 1, 1, step_seed(t, i)};
    mxl_train_batch b = {t->cfg.batch_size, t->cfg.seq_len, m->ids, m->labels, m->weights,
                         m->pos, m->seg, NULL, NULL};
    double part = 0;
    MXL_TRY(mxl_train_step(t->engine, &t->st, &b, &stack, &t->gview, &part));
    *loss += part;
  }
  return MXL_OK;
}

/* Clips by global norm and applies AdamW, or skips a non-finite step. */
static mxl_status apply_update(trainer *t, double *norm, int *skipped) {
  const mxl_ops *ops = t->be->ops;
  const size_t n = t->params->layout->n_floats;
  *norm = sqrt(ops->sum_squares(t->be, t->grads->params, n));
  *skipped = !isfinite(*norm);
  if (*skipped) {
    t->skipped_total++;
    if (++t->bad_in_row >= t->cfg.max_bad_steps)
      return mxl_errorf(MXL_ERR_NUMERIC,
                        "step %d: %d steps in a row had NaN/Inf gradients; stopping (lower the "
                        "learning rate, or raise max_bad_steps)", t->step + 1, t->bad_in_row);
  } else {
    t->bad_in_row = 0;
    const mxl_train_config *c = &t->cfg;
    float clip = c->max_grad_norm > 0 && *norm > c->max_grad_norm
                     ? (float)(c->max_grad_norm / *norm) : 1.0f;
    float lr = mxl_schedule_lr(&c->schedule, t->step);
    ops->adamw(t->be, t->params->params, t->grads->params, t->m, t->v, n, lr, c->beta1,
               c->beta2, c->eps, c->weight_decay, t->step + 1, clip);
  }
  ops->zero(t->be, t->grads->params, n * sizeof(float));
  return ops->sync(t->be);
}

static mxl_status train_one_step(trainer *t, mxl_step_record *rec) {
  double t0 = now_seconds();
  long long trained, tokens;
  MXL_TRY(fetch_micro_batches(t, &trained, &tokens));
  double loss = NAN, norm = NAN;
  int skipped = 1;
  if (trained > 0) {
    MXL_TRY(forward_backward(t, trained, &loss));
    MXL_TRY(apply_update(t, &norm, &skipped));
  } else {
    mxl_trainer_info(t, "step %d: no trained tokens in this batch; update skipped", t->step + 1);
  }
  memset(rec, 0, sizeof *rec);
  rec->step = ++t->step;
  rec->loss = loss;
  rec->lr = mxl_schedule_lr(&t->cfg.schedule, t->step - 1);
  rec->grad_norm = norm;
  rec->tokens = trained;
  rec->tokens_per_s = tokens / fmax(now_seconds() - t0, 1e-9);
  rec->elapsed_s = now_seconds() - t->started;
  rec->skipped = skipped;
  t->tokens_done += tokens;
  if (isfinite(loss)) {
    if (!isfinite(t->first_loss)) t->first_loss = loss;
    t->last_loss = loss;
  }
  return mxl_metrics_step(&t->metrics, rec);
}

/* ---------------------------------------------------------------- the loop */

static void report_step(trainer *t, const mxl_step_record *r, int first_step) {
  if (!t->on_event) return;
  int done = t->step - first_step;
  double per_step = r->elapsed_s / (done > 0 ? done : 1);
  mxl_train_event ev = {.kind = MXL_EVENT_STEP, .step = t->step, .total_steps = t->total_steps,
                        .loss = r->loss, .lr = r->lr, .grad_norm = r->grad_norm,
                        .tokens_per_s = r->tokens_per_s, .elapsed_s = r->elapsed_s,
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
  if (!isfinite(t->first_eval)) t->first_eval = loss;
  t->last_eval = loss;
  MXL_TRY(mxl_metrics_eval(&t->metrics, t->step, loss, tokens));
  if (t->on_event) {
    mxl_train_event ev = {.kind = MXL_EVENT_EVAL, .step = t->step,
                          .total_steps = t->total_steps, .eval_loss = loss, .tokens = tokens};
    t->on_event(t->user, &ev);
  }
  return MXL_OK;
}

static mxl_status loop(trainer *t, volatile const int *stop, int *interrupted) {
  const int first_step = t->step;
  if (first_step == 0) MXL_TRY(maybe_evaluate(t, 1));
  while (t->step < t->total_steps) {
    if (stop && *stop) {
      *interrupted = 1;
      return MXL_OK;
    }
    mxl_step_record rec;
    MXL_TRY(train_one_step(t, &rec));
    report_step(t, &rec, first_step);
    int last = t->step == t->total_steps;
    MXL_TRY(maybe_evaluate(t, last));
    if (!last && t->cfg.save_every > 0 && t->step % t->cfg.save_every == 0)
      MXL_TRY(mxl_trainer_save(t));
  }
  return MXL_OK;
}

/* ---------------------------------------------------------------- the run */

mxl_status mxl_train(const char *recipe_path, const char *const *overrides, int n_overrides,
                     mxl_train_event_fn on_event, void *user, volatile const int *stop,
                     mxl_train_summary *summary) {
  trainer t = {0};
  t.on_event = on_event;
  t.user = user;
  t.first_loss = t.last_loss = t.first_eval = t.last_eval = NAN;
  t.started = now_seconds();
  memset(summary, 0, sizeof *summary);
  int interrupted = 0;
  mxl_status st = load_recipe(&t, recipe_path, overrides, n_overrides);
  if (st == MXL_OK) st = setup(&t);
  if (st == MXL_OK) st = loop(&t, stop, &interrupted);
  if (st == MXL_OK) st = mxl_trainer_save(&t);
  if (st == MXL_OK) st = mxl_trainer_finish(&t, summary);
  summary->interrupted = interrupted;
  teardown(&t);
  if (st == MXL_OK && interrupted)
    st = mxl_errorf(MXL_ERR_INTERRUPTED, "interrupted at step %d; saved, resume with resume=true",
                    summary->steps);
  return st;
}
