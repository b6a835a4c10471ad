/* What outlives a training process: saves (adapter + checkpoint, one commit
 * point, numbered copies, a rescue folder when the run folder refuses the
 * save), resume and init_adapter (rank 0 reads, every rank receives), and
 * the end of the run. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adapters/adapter_file.h"
#include "core/json.h"
#include "core/status.h"
#include "train/run_match.h"
#include "train/state_file.h"
#include "train/trainer.h"

static const char RESUME_HINT[] =
    "resume with the settings of the checkpoint, or start a new run (another --out, or "
    "--overwrite)";

static const char *adapter_dtype(const trainer *t) { return t->cfg.adapter_bf16 ? "bf16" : "f32"; }

static cJSON *run_lora_json(const trainer *t, int with_dtype) {
  return mxl_run_lora_json(&t->params->layout->cfg, t->model->config.n_layers,
                           with_dtype ? adapter_dtype(t) : NULL);
}

/* Where the last good state of the run is, for messages. */
static void kept_text(const trainer *t, char *buf, size_t cap) {
  if (t->saved_step >= 0)
    snprintf(buf, cap, "the last save (step %d) in %s is kept", t->saved_step, t->cfg.out);
  else if (t->resumed_step > 0)
    snprintf(buf, cap, "the checkpoint it resumed from (step %d) in %s is kept", t->resumed_step,
             t->cfg.out);
  else
    snprintf(buf, cap, "nothing was saved");
}

mxl_status mxl_trainer_diverged(trainer *t, int step, const char *what) {
  char kept[600];
  kept_text(t, kept, sizeof kept);
  return mxl_errorf(MXL_ERR_NUMERIC, "step %d: %s; the run diverged (lower the learning rate, "
                    "now %g); %s", step, what, t->cfg.schedule.lr, kept);
}

/* ---------------------------------------------------------------- writing */

static mxl_status write_adapter(trainer *t, const char *path) {
  mxl_adapter_save_options opt;
  mxl_adapter_save_options_default(&opt);
  opt.dtype = t->cfg.adapter_bf16 ? MXL_ADAPTER_BF16 : MXL_ADAPTER_F32;
  opt.provenance.recipe = t->cfg.name;
  opt.provenance.dataset_sha256 = t->data_sha256;
  opt.provenance.steps = t->step;
  opt.provenance.final_loss = t->last_loss;
  return mxl_adapter_save(path, t->params, t->model, &opt);
}

static void add_finite(cJSON *o, const char *key, double v) {
  if (isfinite(v)) cJSON_AddNumberToObject(o, key, v); /* NaN has no JSON spelling */
}

static cJSON *checkpoint_meta(const trainer *t) {
  cJSON *m = cJSON_CreateObject();
  char cursor[MXL_CURSOR_TEXT_MAX];
  mxl_data_cursor c = mxl_batcher_cursor(t->batcher);
  mxl_data_cursor_format(&c, cursor, sizeof cursor);
  cJSON_AddStringToObject(m, "recipe", t->cfg.name);
  cJSON_AddNumberToObject(m, "step", t->step);
  cJSON_AddNumberToObject(m, "total_steps", t->total_steps);
  cJSON_AddStringToObject(m, "data_cursor", cursor);
  cJSON_AddStringToObject(m, "data_sha256", t->data_sha256);
  cJSON_AddStringToObject(m, "base_sha256", t->base_sha256);
  cJSON_AddItemToObject(m, "lora", run_lora_json(t, 1));
  cJSON_AddNumberToObject(m, "n_floats", (double)t->params->layout->n_floats);
  cJSON_AddNumberToObject(m, "world_size", t->world);
  cJSON_AddNumberToObject(m, "batch_rows", (double)t->cfg.batch_size * t->world);
  cJSON_AddNumberToObject(m, "skipped_total", t->skipped_total);
  cJSON_AddNumberToObject(m, "bad_in_row", t->bad_in_row);
  cJSON_AddNumberToObject(m, "tokens_done", (double)t->tokens_done);
  add_finite(m, "first_loss", t->first_loss);
  add_finite(m, "last_loss", t->last_loss);
  add_finite(m, "first_eval", t->first_eval);
  add_finite(m, "last_eval", t->last_eval);
  return m;
}

static mxl_status write_checkpoint(trainer *t, const float *host, const char *path) {
  const size_t bytes = t->params->layout->n_floats * sizeof(float);
  cJSON *meta = checkpoint_meta(t);
  if (!meta) return mxl_errorf(MXL_ERR_MEMORY, "checkpoint: out of memory");
  mxl_blob blobs[] = {{"lora", host, bytes},
                      {"adam_m", (const char *)host + bytes, bytes},
                      {"adam_v", (const char *)host + 2 * bytes, bytes}};
  mxl_status st = mxl_state_save(path, meta, blobs, 3);
  cJSON_Delete(meta);
  return st;
}

/* Parameters, m and v as three host blocks on rank 0 (the moments gathered
 * from their owners with ZeRO-1). */
static mxl_status gather_state(trainer *t, float **host_out) {
  *host_out = NULL;
  const mxl_ops *ops = t->be->ops;
  const size_t n = t->params->layout->n_floats, part = t->shard_hi - t->shard_lo;
  float *host = t->rank == 0 ? malloc(3 * n * sizeof(float)) : NULL;
  float *mine = t->cfg.zero_stage ? malloc(2 * (part ? part : 1) * sizeof(float)) : NULL;
  mxl_status st = MXL_OK;
  if ((t->rank == 0 && !host) || (t->cfg.zero_stage && !mine))
    st = mxl_errorf(MXL_ERR_MEMORY, "save: out of memory for %zu parameters", n);
  if (st == MXL_OK && t->rank == 0) ops->download(t->be, host, t->params->params, n * 4);
  if (st == MXL_OK && !t->cfg.zero_stage && t->rank == 0) {
    ops->download(t->be, host + n, t->m, n * 4);
    ops->download(t->be, host + 2 * n, t->v, n * 4);
  }
  if (st == MXL_OK && t->cfg.zero_stage) {
    ops->download(t->be, mine, t->m, part * 4);
    ops->download(t->be, mine + part, t->v, part * 4);
  }
  if (st == MXL_OK) st = ops->sync(t->be);
  if (st == MXL_OK && t->cfg.zero_stage) {
    st = mxl_comm_gather_shards(t->comm, mine, host ? host + n : NULL, n, 0);
    if (st == MXL_OK)
      st = mxl_comm_gather_shards(t->comm, mine + part, host ? host + 2 * n : NULL, n, 0);
  }
  free(mine);
  if (st != MXL_OK) {
    free(host);
    return st;
  }
  *host_out = host;
  return MXL_OK;
}

static void fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

/* The checkpoint's rename is the commit point: the adapter follows it, so
 * a save that fails while writing leaves both files of the previous save,
 * and a crash between the two renames leaves the adapter one save behind
 * the checkpoint (which a resume repairs), never ahead of it. */
static mxl_status commit(trainer *t, const char *ck_pending, const char *ad_pending) {
  char *ck = mxl_trainer_path(t, "checkpoint.mxstate"), *ad = mxl_trainer_path(t, "adapter.mxla");
  mxl_status st = MXL_OK;
  if (!ck || !ad) st = mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  else if (rename(ck_pending, ck) != 0)
    st = mxl_errorf(MXL_ERR_IO, "%s: cannot rename into place: %s", ck, strerror(errno));
  else if (rename(ad_pending, ad) != 0)
    st = mxl_errorf(MXL_ERR_IO, "%s: cannot rename into place: %s (the checkpoint is saved; "
                    "resume to write the adapter again)", ad, strerror(errno));
  fsync_dir(t->cfg.out);
  free(ck);
  free(ad);
  return st;
}

/* ---------------------------------------------------------------- copies */

static int numbered_step(const char *name, const char *prefix, const char *suffix) {
  size_t lp = strlen(prefix), ls = strlen(suffix), n = strlen(name);
  if (n <= lp + ls || strncmp(name, prefix, lp) || strcmp(name + n - ls, suffix)) return -1;
  char *end = NULL;
  long v = strtol(name + lp, &end, 10);
  return end == name + n - ls && v >= 0 && v < INT32_MAX ? (int)v : -1;
}

static int by_step_desc(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x < y) - (x > y);
}

static mxl_status link_copy(trainer *t, const char *name, const char *prefix, const char *suffix) {
  char leaf[128];
  snprintf(leaf, sizeof leaf, "%s%06d%s", prefix, t->step, suffix);
  char *from = mxl_trainer_path(t, name), *to = mxl_trainer_path(t, leaf);
  mxl_status st = MXL_OK;
  if (!from || !to) st = mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  else if ((unlink(to) != 0 && errno != ENOENT) || link(from, to) != 0)
    st = mxl_errorf(MXL_ERR_IO, "%s: cannot keep a numbered copy (keep_checkpoints): %s", to,
                    strerror(errno));
  free(from);
  free(to);
  return st;
}

/* Numbered copies of this save (hard links: no extra space until the next
 * save replaces the files), and only the last keep_checkpoints of them. */
static mxl_status keep_copies(trainer *t) {
  MXL_TRY(link_copy(t, "checkpoint.mxstate", "checkpoint-", ".mxstate"));
  MXL_TRY(link_copy(t, "adapter.mxla", "adapter-", ".mxla"));
  DIR *d = opendir(t->cfg.out);
  if (!d) return mxl_errorf(MXL_ERR_IO, "%s: cannot list: %s", t->cfg.out, strerror(errno));
  int steps[1024], n = 0;
  for (struct dirent *e; (e = readdir(d)) && n < 1024;) {
    int s = numbered_step(e->d_name, "checkpoint-", ".mxstate");
    if (s >= 0) steps[n++] = s;
  }
  closedir(d);
  qsort(steps, (size_t)n, sizeof *steps, by_step_desc);
  for (int i = t->cfg.keep_checkpoints; i < n; i++) {
    char leaf[128];
    const char *kinds[][2] = {{"checkpoint-", ".mxstate"}, {"adapter-", ".mxla"}};
    for (int k = 0; k < 2; k++) {
      snprintf(leaf, sizeof leaf, "%s%06d%s", kinds[k][0], steps[i], kinds[k][1]);
      char *p = mxl_trainer_path(t, leaf);
      if (p && unlink(p) != 0 && errno != ENOENT) {
        mxl_status st = mxl_errorf(MXL_ERR_IO, "%s: cannot remove: %s", p, strerror(errno));
        free(p);
        return st;
      }
      free(p);
    }
  }
  return MXL_OK;
}

/* ---------------------------------------------------------------- rescue */

/* The save failed in the run folder (a full disk, a removed folder): the
 * trained state goes to the rescue folder instead, and the error says
 * where. */
static mxl_status rescue(trainer *t, const float *host, mxl_status failed) {
  char why[1024], dir[1024], kept[600];
  snprintf(why, sizeof why, "%s", mxl_last_error());
  if (t->cfg.rescue_dir) {
    snprintf(dir, sizeof dir, "%s", t->cfg.rescue_dir);
  } else {
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/mxlora-rescue-%ld", tmp && *tmp ? tmp : "/tmp", (long)getpid());
  }
  char *ad = mxl_path_join(dir, "adapter.mxla"), *ck = mxl_path_join(dir, "checkpoint.mxstate");
  mxl_status st = ad && ck ? mxl_make_dirs(dir) : mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  if (st == MXL_OK) st = write_adapter(t, ad);
  if (st == MXL_OK) st = write_checkpoint(t, host, ck);
  free(ad);
  free(ck);
  if (st == MXL_OK)
    return mxl_errorf(failed, "%s; the trained state of step %d was saved in %s instead "
                      "(adapter.mxla, checkpoint.mxstate): continue with --out %s --resume, or "
                      "move both files into %s and resume there", why, t->step, dir, dir,
                      t->cfg.out);
  char again[512];
  snprintf(again, sizeof again, "%s", mxl_last_error());
  kept_text(t, kept, sizeof kept);
  return mxl_errorf(failed, "%s; saving in %s failed too (%s); %s", why, dir, again, kept);
}

/* Rank 0: both files under pending names, the commit, the copies. */
static mxl_status write_save(trainer *t, const float *host) {
  char *ad = mxl_run_dir_pending(t->cfg.out, "adapter.mxla");
  char *ck = mxl_run_dir_pending(t->cfg.out, "checkpoint.mxstate");
  mxl_status st = ad && ck ? write_adapter(t, ad) : mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  if (st == MXL_OK) st = write_checkpoint(t, host, ck);
  if (st == MXL_OK) st = commit(t, ck, ad);
  if (ad) unlink(ad);
  if (ck) unlink(ck);
  free(ad);
  free(ck);
  if (st == MXL_OK && t->cfg.keep_checkpoints > 0) st = keep_copies(t);
  return st == MXL_OK ? st : rescue(t, host, st);
}

/* The parameters about to be saved must still give a finite loss: an
 * update can leave them finite but so large that the model overflows.
 * A finite evaluation of this very step already proves it. */
static mxl_status check_before_save(trainer *t) {
  if (t->eval_step == t->step || t->step == t->resumed_step) return MXL_OK;
  double loss;
  MXL_TRY(mxl_trainer_probe_loss(t, &loss));
  double bad = !isfinite(loss);
  MXL_TRY(mxl_comm_allreduce(t->comm, &bad, 1, MXL_REDUCE_MAX));
  return bad ? mxl_trainer_diverged(t, t->step, "the parameters give a NaN/Inf loss, not saved")
             : MXL_OK;
}

mxl_status mxl_trainer_save_all(trainer *t) {
  MXL_TRY(check_before_save(t));
  float *host = NULL;
  MXL_TRY(gather_state(t, &host));
  mxl_status st = t->rank == 0 ? write_save(t, host) : MXL_OK;
  free(host);
  /* Every rank returns the outcome of rank 0's save. */
  double outcome = st;
  MXL_TRY(mxl_comm_bcast(t->comm, &outcome, sizeof outcome, 0));
  if (t->rank != 0 && outcome != MXL_OK)
    st = mxl_errorf((mxl_status)outcome, "rank %d: rank 0 could not save (see its message)",
                    t->rank);
  if (st != MXL_OK) return st;
  t->saved_step = t->step;
  if (t->on_event && t->rank == 0) {
    mxl_train_event ev = {.kind = MXL_EVENT_SAVE, .step = t->step,
                          .total_steps = t->total_steps, .message = t->cfg.out};
    t->on_event(t->user, &ev);
  }
  return MXL_OK;
}

mxl_status mxl_trainer_save(mxl_trainer *t) {
  if (t->failed) return mxl_errorf(MXL_ERR_STATE, "the run failed earlier: nothing is saved");
  if (t->bad_in_row > 0)
    return mxl_trainer_diverged(t, t->step, "the last step was not finite, not saved");
  mxl_status st = mxl_trainer_save_all(t);
  if (st != MXL_OK) t->failed = 1;
  return st;
}

/* ---------------------------------------------------------------- start */

/* Host memory to every rank's backend block (rank 0's values). */
static mxl_status spread(trainer *t, float *host, size_t n, float *dst, size_t lo, size_t hi) {
  MXL_TRY(mxl_comm_bcast(t->comm, host, n * sizeof(float), 0));
  t->be->ops->upload(t->be, dst, host + lo, (hi - lo) * sizeof(float));
  return t->be->ops->sync(t->be);
}

mxl_status mxl_trainer_share_params(trainer *t) {
  if (t->world == 1) return MXL_OK;
  const size_t n = t->params->layout->n_floats;
  float *host = malloc(n * sizeof(float));
  if (!host) return mxl_errorf(MXL_ERR_MEMORY, "out of memory for %zu parameters", n);
  mxl_status st = MXL_OK;
  if (t->rank == 0) {
    t->be->ops->download(t->be, host, t->params->params, n * sizeof(float));
    st = t->be->ops->sync(t->be);
  }
  if (st == MXL_OK) st = spread(t, host, n, t->params->params, 0, n);
  free(host);
  return st;
}

/* Rank 0's outcome of reading a file, on every rank. */
static mxl_status agree(trainer *t, mxl_status st, const char *what) {
  double outcome = st;
  MXL_TRY(mxl_comm_bcast(t->comm, &outcome, sizeof outcome, 0));
  if (t->rank == 0 || outcome == MXL_OK) return st;
  return mxl_errorf((mxl_status)outcome, "rank %d: rank 0 could not read %s (see its message)",
                    t->rank, what);
}

/* Rank 0: the adapter's parameters into `host`, after the same checks as
 * a resume (LoRA layout; the base is checked by the loader). */
static mxl_status read_init_adapter(trainer *t, float *host) {
  const char *path = t->cfg.init_adapter;
  mxl_adapter *a = NULL;
  mxl_lora *lora = NULL;
  mxl_status st = mxl_adapter_open(path, &a);
  if (st == MXL_OK) {
    const mxl_adapter_header *h = mxl_adapter_header_of(a);
    cJSON *saved = mxl_run_lora_json(&h->layout->cfg, t->model->config.n_layers, NULL);
    cJSON *now = run_lora_json(t, 0);
    st = saved && now ? mxl_run_lora_match(saved, now, path, "train with the adapter's LoRA "
                                           "settings (mxlora inspect shows them)")
                      : mxl_errorf(MXL_ERR_MEMORY, "out of memory");
    cJSON_Delete(saved);
    cJSON_Delete(now);
  }
  if (st == MXL_OK) st = mxl_adapter_load_on(a, t->model, NULL, &lora);
  if (st == MXL_OK && lora->layout->n_floats != t->params->layout->n_floats)
    st = mxl_errorf(MXL_ERR_STATE, "%s: %zu parameter floats, this run has %zu", path,
                    lora->layout->n_floats, t->params->layout->n_floats);
  if (st == MXL_OK) memcpy(host, lora->params, lora->layout->n_floats * sizeof(float));
  mxl_lora_destroy(lora);
  mxl_adapter_close(a);
  return st;
}

mxl_status mxl_trainer_init_adapter(trainer *t) {
  const size_t n = t->params->layout->n_floats;
  float *host = malloc(n * sizeof(float));
  if (!host) return mxl_errorf(MXL_ERR_MEMORY, "out of memory for %zu parameters", n);
  mxl_status st = t->rank == 0 ? read_init_adapter(t, host) : MXL_OK;
  st = agree(t, st, t->cfg.init_adapter);
  if (st == MXL_OK) st = spread(t, host, n, t->params->params, 0, n);
  free(host);
  if (st == MXL_OK)
    mxl_trainer_info(t, "starting from the adapter %s", t->cfg.init_adapter);
  return st;
}

/* ---------------------------------------------------------------- resume */

/* What rank 0 read from the checkpoint, sent to every rank. */
typedef struct resume_point {
  int32_t found, step, skipped_total, bad_in_row, world;
  int64_t tokens_done;
  double first_loss, last_loss, first_eval, last_eval;
  mxl_data_cursor cursor;
} resume_point;

static double meta_number(const cJSON *meta, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, key);
  return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* The checkpoint must come from this very run configuration. */
static mxl_status check_meta(trainer *t, const cJSON *meta, const char *path) {
  cJSON *now = run_lora_json(t, 1);
  if (!now) return mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  mxl_status st = mxl_run_lora_match(cJSON_GetObjectItemCaseSensitive(meta, "lora"), now, path,
                                     RESUME_HINT);
  cJSON_Delete(now);
  MXL_TRY(st);
  MXL_TRY(mxl_run_match_string(meta, "base_sha256", t->base_sha256, "base model (fingerprint)",
                               path, RESUME_HINT));
  MXL_TRY(mxl_run_match_string(meta, "data_sha256", t->data_sha256, "training data", path,
                               RESUME_HINT));
  const cJSON *step = cJSON_GetObjectItemCaseSensitive(meta, "step");
  if (cJSON_IsNumber(step) && step->valuedouble > t->total_steps)
    return mxl_errorf(MXL_ERR_STATE, "%s: the checkpoint is at step %.0f, past the %d steps this "
                      "run asks for: give more steps to continue it", path, step->valuedouble,
                      t->total_steps);
  return MXL_OK;
}

static mxl_status read_meta(trainer *t, const cJSON *meta, const char *path, resume_point *p) {
  MXL_TRY(check_meta(t, meta, path));
  const char *cursor_text;
  MXL_TRY(mxl_json_get_string(meta, "data_cursor", &cursor_text, path));
  MXL_TRY(mxl_data_cursor_parse(cursor_text, &p->cursor));
  int64_t step;
  MXL_TRY(mxl_json_get_int_range(meta, "step", 0, t->total_steps, &step, path));
  p->step = (int32_t)step;
  p->skipped_total = (int32_t)meta_number(meta, "skipped_total");
  p->bad_in_row = (int32_t)meta_number(meta, "bad_in_row");
  double world = meta_number(meta, "world_size");
  p->world = isfinite(world) ? (int32_t)world : 1;
  p->tokens_done = (int64_t)meta_number(meta, "tokens_done");
  p->first_loss = meta_number(meta, "first_loss");
  p->last_loss = meta_number(meta, "last_loss");
  p->first_eval = meta_number(meta, "first_eval");
  p->last_eval = meta_number(meta, "last_eval");
  return MXL_OK;
}

/* Rank 0: checks and copies the checkpoint into `p` and `host` (3 blocks). */
static mxl_status read_checkpoint(trainer *t, const char *path, resume_point *p, float *host) {
  if (!mxl_path_exists(path)) return MXL_OK;
  const size_t bytes = t->params->layout->n_floats * sizeof(float);
  mxl_state_file f;
  MXL_TRY(mxl_state_open(path, &f));
  mxl_status st = read_meta(t, f.meta, path, p);
  const char *names[] = {"lora", "adam_m", "adam_v"};
  for (int i = 0; i < 3 && st == MXL_OK; i++) {
    const void *blob;
    st = mxl_state_blob(&f, names[i], bytes, &blob);
    if (st == MXL_OK) memcpy((char *)host + i * bytes, blob, bytes);
  }
  mxl_state_close(&f);
  if (st == MXL_OK) p->found = 1;
  return st;
}

static mxl_status apply_resume(trainer *t, const resume_point *p, float *host, const char *path) {
  const size_t n = t->params->layout->n_floats;
  mxl_status st = mxl_batcher_seek(t->batcher, &p->cursor);
  if (st != MXL_OK) return mxl_error_prefix(st, "%s: ", path);
  MXL_TRY(spread(t, host, 3 * n, t->params->params, 0, n));
  const mxl_ops *ops = t->be->ops;
  ops->upload(t->be, t->m, host + n + t->shard_lo, (t->shard_hi - t->shard_lo) * 4);
  ops->upload(t->be, t->v, host + 2 * n + t->shard_lo, (t->shard_hi - t->shard_lo) * 4);
  MXL_TRY(ops->sync(t->be));
  t->step = p->step;
  t->skipped_total = p->skipped_total;
  t->bad_in_row = p->bad_in_row;
  t->tokens_done = p->tokens_done;
  t->first_loss = p->first_loss;
  t->last_loss = p->last_loss;
  t->first_eval = p->first_eval;
  t->last_eval = p->last_eval;
  mxl_trainer_info(t, "resumed from %s at step %d of %d", path, t->step, t->total_steps);
  if (p->world != t->world)
    mxl_trainer_info(t, "the checkpoint was written by %d rank%s, this run has %d: the data "
                     "continues where it stopped, in batches of %d rows",
                     p->world, p->world == 1 ? "" : "s", t->world, t->cfg.batch_size * t->world);
  return MXL_OK;
}

mxl_status mxl_trainer_resume(trainer *t, int *resumed) {
  *resumed = 0;
  const size_t n = t->params->layout->n_floats;
  char *path = mxl_trainer_path(t, "checkpoint.mxstate");
  float *host = malloc(3 * n * sizeof(float));
  resume_point p;
  memset(&p, 0, sizeof p);
  mxl_status st = path && host ? MXL_OK : mxl_errorf(MXL_ERR_MEMORY, "resume: out of memory");
  if (st == MXL_OK && t->rank == 0) st = read_checkpoint(t, path, &p, host);
  st = agree(t, st, path ? path : "the checkpoint");
  if (st == MXL_OK) st = mxl_comm_bcast(t->comm, &p, sizeof p, 0);
  if (st == MXL_OK && p.found) st = apply_resume(t, &p, host, path);
  if (st == MXL_OK && !p.found) {
    mxl_trainer_info(t, "resume: no checkpoint in %s, starting from step 0", t->cfg.out);
    st = mxl_trainer_share_params(t);
  }
  if (st == MXL_OK) *resumed = p.found;
  free(host);
  free(path);
  return st;
}

/* ---------------------------------------------------------------- finish */

/* Reads the loss curves back from metrics.jsonl (kept across resumes: a
 * resume mark drops the points an interrupted process logged after its
 * last checkpoint, as the resumed run trains those steps again). */
static mxl_status write_curve(trainer *t) {
  char *metrics = mxl_trainer_path(t, "metrics.jsonl"), *svg = mxl_trainer_path(t, "loss.svg");
  char *text = NULL;
  mxl_status st = metrics && svg ? mxl_read_file(metrics, (size_t)1 << 30, &text, NULL)
                                 : mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  size_t lines = 0;
  for (const char *p = text; p && *p; p++) lines += *p == '\n';
  double *xs = malloc((lines + 1) * 4 * sizeof(double));
  double *ys = xs + lines + 1, *ex = ys + lines + 1, *ey = ex + lines + 1;
  int n = 0, ne = 0;
  for (char *line = text; st == MXL_OK && xs && line && *line;) {
    char *end = strchr(line, '\n');
    cJSON *o = cJSON_ParseWithLength(line, end ? (size_t)(end - line) : strlen(line));
    double step = meta_number(o, "step"), loss = meta_number(o, "loss");
    double eval = meta_number(o, "eval_loss"), resumed = meta_number(o, "resume_from_step");
    if (isfinite(resumed)) {
      while (n > 0 && xs[n - 1] > resumed) n--;
      while (ne > 0 && ex[ne - 1] > resumed) ne--;
    }
    if (isfinite(loss)) xs[n] = step, ys[n++] = loss;
    if (isfinite(eval)) ex[ne] = step, ey[ne++] = eval;
    cJSON_Delete(o);
    line = end ? end + 1 : NULL;
  }
  if (st == MXL_OK && !xs) st = mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  if (st == MXL_OK) {
    mxl_curve curves[2] = {{xs, ys, n, "train loss", "#1f77b4", 1},
                           {ex, ey, ne, "eval loss", "#d62728", 0}};
    char title[256];
    snprintf(title, sizeof title, "mxlora: %s", t->cfg.name);
    st = mxl_curve_svg_write(svg, title, curves, 2);
  }
  free(xs);
  free(text);
  free(metrics);
  free(svg);
  return st;
}

static mxl_status write_summary_json(trainer *t, const mxl_train_summary *s) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "recipe", t->cfg.name);
  cJSON_AddNumberToObject(o, "steps", s->steps);
  cJSON_AddNumberToObject(o, "skipped_steps", s->skipped_steps);
  cJSON_AddNumberToObject(o, "tokens", (double)s->tokens);
  add_finite(o, "first_loss", s->first_loss);
  add_finite(o, "final_loss", s->final_loss);
  add_finite(o, "first_eval_loss", s->first_eval_loss);
  add_finite(o, "final_eval_loss", s->final_eval_loss);
  cJSON_AddNumberToObject(o, "seconds_this_run", s->seconds);
  cJSON_AddNumberToObject(o, "world_size", s->world_size);
  add_finite(o, "tokens_per_s", s->tokens_per_s);
  int steps = t->step - t->resumed_step;
  if (steps > 0) cJSON_AddNumberToObject(o, "allreduce_s_per_step", s->allreduce_s / steps);
  cJSON_AddStringToObject(o, "adapter", "adapter.mxla");
  char *text = cJSON_Print(o), *path = mxl_trainer_path(t, "summary.json");
  mxl_status st = text && path ? mxl_write_file_atomic(path, text, strlen(text))
                               : mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  free(text);
  free(path);
  cJSON_Delete(o);
  return st;
}

static void fill_summary(const trainer *t, mxl_train_summary *s) {
  memset(s, 0, sizeof *s);
  s->steps = t->step;
  s->skipped_steps = t->skipped_total;
  s->first_loss = t->first_loss;
  s->final_loss = t->last_loss;
  s->first_eval_loss = t->first_eval;
  s->final_eval_loss = t->last_eval;
  s->tokens = t->tokens_done;
  s->seconds = mxl_trainer_now() - t->started;
  s->world_size = t->world;
  s->tokens_per_s = t->run_seconds > 0 ? t->run_tokens / t->run_seconds : NAN;
  s->allreduce_s = mxl_comm_block_seconds(t->comm, NULL);
  snprintf(s->out_dir, sizeof s->out_dir, "%s", t->cfg.out);
}

mxl_status mxl_trainer_finish(mxl_trainer *t, mxl_train_summary *s) {
  fill_summary(t, s);
  s->interrupted = t->step < t->total_steps;
  if (t->failed) return mxl_errorf(MXL_ERR_STATE, "the run failed earlier: nothing is saved");
  mxl_status st = MXL_OK;
  /* Parameters whose last step was NaN/Inf are saved only when an
   * evaluation of this very step (finite, or it would have failed) shows
   * that the bad step was its batch's fault, not theirs. */
  if (t->bad_in_row > 0 && t->eval_step == t->step)
    mxl_trainer_info(t, "the last step was not finite but the evaluation is: saving");
  else if (t->bad_in_row > 0) {
    char what[128];
    snprintf(what, sizeof what, "the last %d step%s had NaN/Inf loss or gradients, the adapter "
             "was not saved", t->bad_in_row, t->bad_in_row == 1 ? "" : "s");
    st = mxl_trainer_diverged(t, t->step, what);
  }
  if (st == MXL_OK && t->saved_step != t->step) st = mxl_trainer_save_all(t);
  if (st == MXL_OK && t->rank == 0) st = write_curve(t);
  if (st == MXL_OK && t->rank == 0) st = write_summary_json(t, s);
  if (st != MXL_OK) {
    t->failed = 1;
    return st;
  }
  if (s->interrupted)
    return mxl_errorf(MXL_ERR_INTERRUPTED, "stopped at step %d of %d; adapter and checkpoint "
                      "saved in %s", t->step, t->total_steps, t->cfg.out);
  return MXL_OK;
}
