#include <time.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/status.h"
#include "train/state_file.h"
#include "train/trainer.h"

/* ---------------------------------------------------------------- save */

static mxl_status save_adapter(trainer *t) {
  char *path = mxl_trainer_path(t, "adapter.mxla");
  if (!path) return mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  mxl_adapter_save_options opt;
  mxl_adapter_save_options_default(&opt);
  opt.dtype = t->cfg.adapter_bf16 ? MXL_ADAPTER_BF16 : MXL_ADAPTER_F32;
  opt.provenance.recipe = t->cfg.name;
  opt.provenance.dataset_sha256 = t->data_sha256;
  opt.provenance.steps = t->step;
  opt.provenance.final_loss = t->last_loss;
  mxl_status st = mxl_adapter_save(path, t->params, t->model, &opt);
  free(path);
  return st;
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
  cJSON_AddNumberToObject(m, "n_floats", (double)t->params->layout->n_floats);
  cJSON_AddNumberToObject(m, "skipped_total", t->skipped_total);
  cJSON_AddNumberToObject(m, "bad_in_row", t->bad_in_row);
  cJSON_AddNumberToObject(m, "tokens_done", (double)t->tokens_done);
  /* NaN has no JSON spelling: absent means unknown. */
  if (isfinite(t->first_loss)) cJSON_AddNumberToObject(m, "first_loss", t->first_loss);
  if (isfinite(t->last_loss)) cJSON_AddNumberToObject(m, "last_loss", t->last_loss);
  if (isfinite(t->first_eval)) cJSON_AddNumberToObject(m, "first_eval", t->first_eval);
  if (isfinite(t->last_eval)) cJSON_AddNumberToObject(m, "last_eval", t->last_eval);
  return m;
}

static mxl_status save_checkpoint(trainer *t) {
  const size_t bytes = t->params->layout->n_floats * sizeof(float);
  float *host = malloc(3 * bytes);
  char *path = mxl_trainer_path(t, "checkpoint.mxstate");
  cJSON *meta = checkpoint_meta(t);
  mxl_status st = MXL_OK;
  if (!host || !path || !meta) st = mxl_errorf(MXL_ERR_MEMORY, "checkpoint: out of memory");
  if (st == MXL_OK) {
    const mxl_ops *ops = t->be->ops;
    ops->download(t->be, host, t->params->params, bytes);
    ops->download(t->be, (char *)host + bytes, t->m, bytes);
    ops->download(t->be, (char *)host + 2 * bytes, t->v, bytes);
    st = ops->sync(t->be);
  }
  if (st == MXL_OK) {
    mxl_blob blobs[] = {{"lora", host, bytes},
                        {"adam_m", (char *)host + bytes, bytes},
                        {"adam_v", (char *)host + 2 * bytes, bytes}};
    st = mxl_state_save(path, meta, blobs, 3);
  }
  cJSON_Delete(meta);
  free(path);
  free(host);
  return st;
}

mxl_status mxl_trainer_save(trainer *t) {
  MXL_TRY(save_adapter(t));
  MXL_TRY(save_checkpoint(t));
  if (t->on_event) {
    mxl_train_event ev = {.kind = MXL_EVENT_SAVE, .step = t->step,
                          .total_steps = t->total_steps, .message = t->cfg.out};
    t->on_event(t->user, &ev);
  }
  return MXL_OK;
}

/* ---------------------------------------------------------------- resume */

static double meta_number(const cJSON *meta, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, key);
  return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static mxl_status restore_blobs(trainer *t, const mxl_state_file *f) {
  const size_t bytes = t->params->layout->n_floats * sizeof(float);
  const void *lora, *m, *v;
  MXL_TRY(mxl_state_blob(f, "lora", bytes, &lora));
  MXL_TRY(mxl_state_blob(f, "adam_m", bytes, &m));
  MXL_TRY(mxl_state_blob(f, "adam_v", bytes, &v));
  const mxl_ops *ops = t->be->ops;
  ops->upload(t->be, t->params->params, lora, bytes);
  ops->upload(t->be, t->m, m, bytes);
  ops->upload(t->be, t->v, v, bytes);
  return ops->sync(t->be);
}

static mxl_status restore_meta(trainer *t, const mxl_state_file *f, const char *path) {
  const cJSON *meta = f->meta;
  double n_floats = meta_number(meta, "n_floats");
  if (n_floats != (double)t->params->layout->n_floats)
    return mxl_errorf(MXL_ERR_STATE,
                      "%s: saved for another LoRA configuration (%.0f parameters, this run has "
                      "%zu); use another out folder or the same rank, targets and layers",
                      path, n_floats, t->params->layout->n_floats);
  const char *cursor_text;
  MXL_TRY(mxl_json_get_string(meta, "data_cursor", &cursor_text, path));
  mxl_data_cursor cursor;
  MXL_TRY(mxl_data_cursor_parse(cursor_text, &cursor));
  mxl_status st = mxl_batcher_seek(t->batcher, &cursor);
  if (st != MXL_OK) return mxl_error_prefix(st, "%s: ", path);
  int64_t step;
  MXL_TRY(mxl_json_get_int_range(meta, "step", 0, t->total_steps, &step, path));
  t->step = (int)step;
  t->skipped_total = (int)meta_number(meta, "skipped_total");
  t->bad_in_row = (int)meta_number(meta, "bad_in_row");
  t->tokens_done = (long long)meta_number(meta, "tokens_done");
  t->first_loss = meta_number(meta, "first_loss");
  t->last_loss = meta_number(meta, "last_loss");
  t->first_eval = meta_number(meta, "first_eval");
  t->last_eval = meta_number(meta, "last_eval");
  return MXL_OK;
}

mxl_status mxl_trainer_resume(trainer *t, int *resumed) {
  *resumed = 0;
  char *path = mxl_trainer_path(t, "checkpoint.mxstate");
  if (!path) return mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  if (!mxl_path_exists(path)) {
    mxl_trainer_info(t, "resume: no checkpoint in %s, starting from step 0", t->cfg.out);
    free(path);
    return MXL_OK;
  }
  mxl_state_file f;
  mxl_status st = mxl_state_open(path, &f);
  if (st == MXL_OK) {
    st = restore_meta(t, &f, path);
    if (st == MXL_OK) st = restore_blobs(t, &f);
    mxl_state_close(&f);
  }
  if (st == MXL_OK) {
    *resumed = 1;
    mxl_trainer_info(t, "resumed from %s at step %d of %d", path, t->step, t->total_steps);
  }
  free(path);
  return st;
}

/* ---------------------------------------------------------------- finish */

/* Reads the loss curves back from metrics.jsonl (which survives resumes). */
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
    double eval = meta_number(o, "eval_loss");
    if (isfinite(loss)) xs[n] = step, ys[n++] = loss;
    if (isfinite(eval)) ex[ne] = step, ey[ne++] = eval;
    cJSON_Delete(o);
    line = end ? end + 1 : NULL;
  }
  if (st == MXL_OK && !xs) st = mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  if (st == MXL_OK) {
    mxl_curve curves[2] = {{xs, ys, n, "train loss", "#1f77b4"},
                           {ex, ey, ne, "eval loss", "#d62728"}};
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
  if (isfinite(s->first_loss)) cJSON_AddNumberToObject(o, "first_loss", s->first_loss);
  if (isfinite(s->final_loss)) cJSON_AddNumberToObject(o, "final_loss", s->final_loss);
  if (isfinite(s->first_eval_loss)) cJSON_AddNumberToObject(o, "first_eval_loss", s->first_eval_loss);
  if (isfinite(s->final_eval_loss)) cJSON_AddNumberToObject(o, "final_eval_loss", s->final_eval_loss);
  cJSON_AddNumberToObject(o, "seconds_this_run", s->seconds);
  cJSON_AddStringToObject(o, "adapter", "adapter.mxla");
  char *text = cJSON_Print(o), *path = mxl_trainer_path(t, "summary.json");
  mxl_status st = text && path ? mxl_write_file_atomic(path, text, strlen(text))
                               : mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  free(text);
  free(path);
  cJSON_Delete(o);
  return st;
}

mxl_status mxl_trainer_finish(trainer *t, mxl_train_summary *s) {
  s->steps = t->step;
  s->skipped_steps = t->skipped_total;
  s->first_loss = t->first_loss;
  s->final_loss = t->last_loss;
  s->first_eval_loss = t->first_eval;
  s->final_eval_loss = t->last_eval;
  s->tokens = t->tokens_done;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  s->seconds = ts.tv_sec + ts.tv_nsec * 1e-9 - t->started;
  snprintf(s->out_dir, sizeof s->out_dir, "%s", t->cfg.out);
  MXL_TRY(write_curve(t));
  return write_summary_json(t, s);
}
