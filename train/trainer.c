/* The trainer object: create (recipe, communicator, run folder, model,
 * data, adapter), the public calls, destroy. */
#include "train/trainer.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapters/fingerprint.h"
#include "core/clock.h"
#include "core/json.h"
#include "core/sha256.h"
#include "core/status.h"

double mxl_trainer_now(void) { return mxl_now_seconds(); }

char *mxl_trainer_path(const trainer *t, const char *name) {
  return mxl_path_join(t->cfg.out, name);
}

void mxl_trainer_info(trainer *t, const char *fmt, ...) {
  if (!t->on_event || t->rank != 0) return;
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

static mxl_status load_recipe(trainer *t, const mxl_train_options *o) {
  t->source = o->recipe ? o->recipe : "command line";
  if (o->recipe) {
    MXL_TRY(mxl_json_parse_file(o->recipe, 1 << 20, &t->recipe));
  } else {
    t->recipe = cJSON_CreateObject();
    if (!t->recipe) return mxl_errorf(MXL_ERR_MEMORY, "recipe: out of memory");
  }
  for (int i = 0; i < o->n_settings; i++) {
    const mxl_train_setting *s = &o->settings[i];
    MXL_TRY(mxl_recipe_set(t->recipe, s->key, s->value, s->flag));
  }
  return mxl_train_config_parse(t->recipe, t->source, &t->cfg);
}

static mxl_status open_comm(trainer *t) {
  /* "mpi" and "nccl" choose the gradient transport; any MPI run starts the
   * same way. */
  mxl_comm_options co = {!strcmp(t->cfg.dist, "none") ? "none" : "auto", t->cfg.dist_timeout_s};
  MXL_TRY(mxl_comm_create(&co, &t->comm));
  t->rank = mxl_comm_rank(t->comm);
  t->world = mxl_comm_size(t->comm);
  return MXL_OK;
}

static mxl_status open_run_dir(trainer *t) {
  if (t->rank != 0) return MXL_OK; /* rank 0 alone touches the run folder */
  int removed = 0;
  MXL_TRY(mxl_run_dir_open(t->cfg.out, t->cfg.resume, t->cfg.overwrite, &t->dir, &removed));
  if (removed)
    mxl_trainer_info(t, "removed %d temporary file%s of interrupted saves from %s", removed,
                     removed == 1 ? "" : "s", t->cfg.out);
  return MXL_OK;
}

/* The tiny demo model is written once, by rank 0, before anyone opens it. */
static mxl_status write_tiny(trainer *t) {
  const mxl_train_config *c = &t->cfg;
  mxl_status st = MXL_OK;
  if (t->rank == 0 && !mxl_path_exists(c->model)) {
    mxl_trainer_info(t, "writing the tiny '%s' model to %s", c->tiny_preset, c->model);
    mxl_tiny_options opt = {0};
    opt.preset = c->tiny_preset;
    opt.layout = "hf";
    opt.seed = c->tiny_seed;
    opt.vocab_corpus = c->tiny_corpus;
    opt.set = c->tiny_set;
    opt.n_set = c->n_tiny_set;
    st = mxl_tiny_write(c->model, &opt, NULL, NULL);
  }
  if (st != MXL_OK) return st;
  return mxl_comm_barrier(t->comm);
}

/* Under MPI each rank of a node takes its own GPU and its share of the
 * cores. */
static mxl_status open_backend(trainer *t) {
  const mxl_train_config *c = &t->cfg;
  const int local = mxl_comm_local_rank(t->comm), per_node = mxl_comm_local_size(t->comm);
  char name[64];
  snprintf(name, sizeof name, "%s", c->backend);
  int device = 0;
  const int gpu_per_rank =
      per_node > 1 && (!strcmp(c->backend, "cuda") || !strcmp(c->backend, "auto"));
  if (gpu_per_rank) {
    snprintf(name, sizeof name, "cuda:%d", local);
    device = local;
  } else if (!strncmp(c->backend, "cuda:", 5)) {
    device = atoi(c->backend + 5);
  }
  int threads = c->threads;
  if (threads == 0 && per_node > 1) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    threads = cores > per_node ? (int)(cores / per_node) : 1;
  }
  mxl_status st = mxl_backend_create_named(name, threads, &t->be);
  if (st != MXL_OK && gpu_per_rank && !strcmp(c->backend, "auto"))
    st = mxl_backend_create_named("cpu", threads, &t->be); /* "auto": no GPU for this rank */
  if (st != MXL_OK) return mxl_error_prefix(st, "%s: ", t->source);
  const char *gradients = !strcmp(c->dist, "mpi") || !strcmp(c->dist, "nccl") ? c->dist : "auto";
  return mxl_comm_attach_backend(t->comm, t->be, device, gradients);
}

static mxl_status open_model(trainer *t) {
  const mxl_train_config *c = &t->cfg;
  if (c->tiny_preset) MXL_TRY(write_tiny(t));
  MXL_TRY(mxl_model_open(c->model, &t->model));
  if (t->model->w.qk_interleaved)
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "%s: metal/model.bin stores q/k permuted and pre-scaled; train on the "
                      "repository root or original/ (the adapter then overlays on all three)",
                      c->model);
  MXL_TRY(open_backend(t));
  const mxl_engine_options eo = {.unembed_on_host = c->unembed_on_host};
  MXL_TRY(mxl_engine_create_opts(t->model, t->be, &eo, &t->engine));
  t->st.moe_chunk = c->moe_chunk;
  t->st.keep_activations = c->keep_activations;
  uint8_t fp[MXL_SHA256_SIZE];
  MXL_TRY(mxl_model_fingerprint(t->model, fp));
  mxl_sha256_hex(fp, t->base_sha256);
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
  } else if (c->eval_fraction == 0 && c->eval_count == 0) {
    t->train_set = t->all; /* no evaluation */
    t->all = NULL;
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

/* Every rank must train the same model on the same data with the same
 * settings: compares each rank's fingerprints with rank 0's. */
static mxl_status check_same_inputs(trainer *t) {
  if (t->world == 1) return MXL_OK;
  char mine[3][65], ref[3][65];
  memcpy(mine[0], t->base_sha256, 65);
  memcpy(mine[1], t->data_sha256, 65);
  char *settings = cJSON_PrintUnformatted(t->recipe);
  if (!settings) return mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  uint8_t digest[MXL_SHA256_SIZE];
  mxl_sha256(settings, strlen(settings), digest);
  mxl_sha256_hex(digest, mine[2]);
  free(settings);
  memcpy(ref, mine, sizeof ref);
  MXL_TRY(mxl_comm_bcast(t->comm, ref, sizeof ref, 0));
  double differs = memcmp(ref, mine, sizeof ref) != 0;
  MXL_TRY(mxl_comm_allreduce(t->comm, &differs, 1, MXL_REDUCE_MAX));
  if (!differs) return MXL_OK;
  if (strcmp(ref[0], mine[0]))
    return mxl_errorf(MXL_ERR_STATE, "rank %d: %s is another model than rank 0's (fingerprint "
                      "%.16s..., rank 0 %.16s...)", t->rank, t->cfg.model, mine[0], ref[0]);
  if (strcmp(ref[1], mine[1]))
    return mxl_errorf(MXL_ERR_STATE, "rank %d: %s differs from rank 0's copy (sha256 %.16s..., "
                      "rank 0 %.16s...)", t->rank, t->cfg.data, mine[1], ref[1]);
  if (strcmp(ref[2], mine[2]))
    return mxl_errorf(MXL_ERR_STATE, "rank %d: the settings (recipe and options) differ from "
                      "rank 0's; start every rank with the same command", t->rank);
  return mxl_errorf(MXL_ERR_STATE, "rank %d: another rank's model, data or settings differ "
                    "from rank 0's", t->rank);
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
  o->shard = t->rank;
  o->n_shards = t->world;
  return MXL_OK;
}

static mxl_status make_batcher(trainer *t) {
  mxl_batch_options o;
  MXL_TRY(mxl_trainer_batch_options(t, 1, &o));
  MXL_TRY(mxl_batcher_create(t->train_set, &o, &t->batcher));
  mxl_batcher_counts n = mxl_batcher_get_counts(t->batcher);
  mxl_trainer_info(t, "batches of %d × %d tokens%s: %zu documents (%zu cut, %zu too long "
                   "dropped, %zu with nothing to train dropped)",
                   t->cfg.batch_size * t->world, t->cfg.seq_len, t->cfg.pack ? ", packed" : "",
                   n.docs, n.truncated, n.dropped_long, n.dropped_untrained);
  if (t->world > 1)
    mxl_trainer_info(t, "data parallel: %s, %d row%s of each batch per rank%s",
                     mxl_comm_describe(t->comm), t->cfg.batch_size,
                     t->cfg.batch_size == 1 ? "" : "s",
                     t->cfg.zero_stage ? ", AdamW moments sharded (ZeRO-1)" : "");
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
  double per_step = (double)c->batch_size * t->world * c->seq_len * c->grad_accum;
  int steps = (int)ceil(c->epochs * tokens / per_step);
  return steps > 0 ? steps : 1;
}

static mxl_status make_schedule(trainer *t) {
  t->total_steps = total_steps(t);
  mxl_schedule *s = &t->cfg.schedule;
  s->total = t->total_steps;
  if (s->warmup < 0) s->warmup = (int)ceil(t->cfg.warmup_ratio * t->total_steps);
  if (s->warmup > s->total) s->warmup = s->total;
  mxl_status st = mxl_schedule_validate(s);
  return st == MXL_OK ? st : mxl_error_prefix(st, "%s: ", t->source);
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
  const size_t n = t->params->layout->n_floats;
  t->shard_lo = 0;
  t->shard_hi = n;
  if (c->zero_stage) mxl_comm_shard(t->comm, n, t->rank, &t->shard_lo, &t->shard_hi);
  size_t bytes = (t->shard_hi - t->shard_lo) * sizeof(float);
  t->m = t->be->ops->alloc(t->be, bytes ? bytes : 64);
  t->v = t->be->ops->alloc(t->be, bytes ? bytes : 64);
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

/* The starting parameters: the checkpoint when resuming, else an adapter
 * file or PEFT's initialisation; rank 0's, on every rank. */
static mxl_status initial_state(trainer *t, int *resumed) {
  *resumed = 0;
  if (t->cfg.resume) MXL_TRY(mxl_trainer_resume(t, resumed));
  if (*resumed) {
    if (t->cfg.init_adapter)
      mxl_trainer_info(t, "init_adapter %s not used: the run continues from its checkpoint",
                       t->cfg.init_adapter);
    return MXL_OK;
  }
  if (t->cfg.init_adapter) return mxl_trainer_init_adapter(t);
  return mxl_trainer_share_params(t);
}

/* Room for the saves: an adapter and a checkpoint beside the previous
 * ones, times the numbered copies kept. */
static mxl_status check_space(trainer *t) {
  if (t->rank != 0) return MXL_OK;
  const uint64_t n = t->params->layout->n_floats, params = t->params->layout->n_params;
  const uint64_t checkpoint = 3 * n * sizeof(float) + (64u << 10);
  const uint64_t adapter = params * (t->cfg.adapter_bf16 ? 2 : 4) + (64u << 10);
  const int keep = t->cfg.keep_checkpoints > 1 ? t->cfg.keep_checkpoints : 1;
  uint64_t need = (adapter + checkpoint) * (uint64_t)(keep + 1), have = 0;
  const char *mine[] = {"adapter.mxla", "checkpoint.mxstate"};
  for (int i = 0; i < 2; i++) {
    char *p = mxl_trainer_path(t, mine[i]);
    struct stat s;
    if (p && stat(p, &s) == 0) have += (uint64_t)s.st_size;
    free(p);
  }
  need = need > have + adapter + checkpoint ? need - have : adapter + checkpoint;
  char what[160];
  snprintf(what, sizeof what, "adapter %.1f MB and checkpoint %.1f MB, %d cop%s beside the "
           "previous save", adapter / 1e6, checkpoint / 1e6, keep, keep == 1 ? "y" : "ies");
  return mxl_run_dir_check_space(t->cfg.out, need, checkpoint, what);
}

static mxl_status open_metrics(trainer *t, int resumed) {
  if (t->rank != 0) return MXL_OK;
  char *path = mxl_trainer_path(t, "metrics.jsonl");
  if (!path) return mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  mxl_status st = mxl_metrics_open(&t->metrics, path, t->cfg.resume,
                                   resumed ? t->step : 0, t->world);
  free(path);
  return st;
}

/* Every rank runs the same setup; a failure on one rank ends the job
 * (mxl_dist_abort), so no rank waits for another that gave up. */
static mxl_status setup(trainer *t) {
  MXL_TRY(open_run_dir(t));
  MXL_TRY(open_model(t));
  MXL_TRY(load_data(t));
  MXL_TRY(check_same_inputs(t));
  MXL_TRY(make_batcher(t));
  MXL_TRY(make_schedule(t));
  MXL_TRY(make_lora(t));
  MXL_TRY(make_micro_batches(t));
  int resumed = 0;
  MXL_TRY(initial_state(t, &resumed));
  t->resumed_step = resumed ? t->step : 0;
  MXL_TRY(check_space(t));
  return open_metrics(t, resumed);
}

mxl_status mxl_trainer_create(const mxl_train_options *o, mxl_trainer **out) {
  *out = NULL;
  trainer *t = calloc(1, sizeof *t);
  if (!t) return mxl_errorf(MXL_ERR_MEMORY, "trainer: out of memory");
  t->on_event = o->on_event;
  t->user = o->user;
  t->stop = o->stop;
  t->first_loss = t->last_loss = t->first_eval = t->last_eval = NAN;
  t->eval_step = t->saved_step = -1;
  t->dir.lock_fd = -1;
  t->started = mxl_trainer_now();
  mxl_status st = load_recipe(t, o);
  if (st == MXL_OK) st = open_comm(t);
  if (st == MXL_OK) st = setup(t);
  if (st != MXL_OK) {
    mxl_trainer_destroy(t);
    return st;
  }
  *out = t;
  return MXL_OK;
}

void mxl_trainer_destroy(mxl_trainer *t) {
  if (!t) return;
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
  mxl_comm_destroy(t->comm);
  mxl_run_dir_close(&t->dir);
  cJSON_Delete(t->recipe);
  free(t);
}

int mxl_trainer_rank(const mxl_trainer *t) { return t->rank; }
int mxl_trainer_world_size(const mxl_trainer *t) { return t->world; }

/* ---------------------------------------------------------------- the run */

mxl_status mxl_train(const mxl_train_options *o, mxl_train_summary *summary) {
  memset(summary, 0, sizeof *summary);
  summary->first_loss = summary->final_loss = NAN;
  summary->first_eval_loss = summary->final_eval_loss = NAN;
  mxl_trainer *t = NULL;
  MXL_TRY(mxl_trainer_create(o, &t));
  mxl_status st = MXL_OK;
  for (mxl_train_progress p = MXL_TRAIN_RUNNING; st == MXL_OK && p == MXL_TRAIN_RUNNING;)
    st = mxl_trainer_step(t, &p);
  if (st == MXL_OK) st = mxl_trainer_finish(t, summary);
  mxl_trainer_destroy(t);
  return st;
}
