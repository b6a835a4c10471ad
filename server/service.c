/* The service: model + tokenizer + registry + scheduler + the engine
 * thread, and the default scale of each adapter by name. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "server/service.h"

static void *engine_main(void *arg) {
  mxl_scheduler_run(arg);
  return NULL;
}

/* "gpt-oss-20b" for .../gpt-oss-20b, .../gpt-oss-20b/original/ or
 * .../gpt-oss-20b/metal/model.bin. */
static char *default_model_id(const char *path) {
  char *copy = strdup(path);
  if (!copy) return NULL;
  for (;;) {
    size_t n = strlen(copy);
    while (n > 1 && copy[n - 1] == '/') copy[--n] = '\0';
    char *slash = strrchr(copy, '/');
    const char *last = slash ? slash + 1 : copy;
    int layout_part = !strcmp(last, "model.bin") || !strcmp(last, "metal") ||
                      !strcmp(last, "original");
    if (!layout_part || !slash || slash == copy) break;
    *slash = '\0';
  }
  char *slash = strrchr(copy, '/');
  char *id = strdup(slash && slash[1] ? slash + 1 : copy);
  free(copy);
  return id;
}

/* Raw text ends at the model's generation_config stop ids (those in its
 * vocabulary), as `mxlora generate` does; chat at <|return|> / <|call|>. */
static void find_stop_ids(mxl_service *svc, const mxl_model_info *m, int vocab) {
  for (int i = 0; i < m->n_stop_ids && svc->n_raw_stops < MXL_REQUEST_MAX_STOP; i++)
    if (m->stop_ids[i] >= 0 && m->stop_ids[i] < vocab)
      svc->raw_stops[svc->n_raw_stops++] = m->stop_ids[i];
  svc->has_chat = mxl_chat_ids_lookup(svc->tok, &svc->chat_ids) == MXL_OK;
  mxl_error_clear();
}

mxl_status mxl_service_open(const mxl_service_options *opt, mxl_service **out) {
  *out = NULL;
  mxl_service *svc = calloc(1, sizeof *svc);
  if (!svc) return mxl_errorf(MXL_ERR_MEMORY, "service: out of memory");
  pthread_mutex_init(&svc->mu, NULL);
  mxl_model_info m = {0};
  mxl_status st = mxl_model_open(opt->model, &svc->model);
  if (st == MXL_OK) mxl_model_get_info(svc->model, &m);
  if (st == MXL_OK) st = mxl_tokenizer_load(m.dir, &svc->tok);
  if (st == MXL_OK) st = mxl_scheduler_create(svc->model, &opt->scheduler, &svc->sched);
  mxl_registry_options ro = {opt->max_adapter_memory};
  if (st == MXL_OK)
    st = mxl_registry_create(svc->model, mxl_scheduler_backend(svc->sched), &ro, &svc->reg);
  svc->model_id = opt->model_id ? strdup(opt->model_id) : default_model_id(opt->model);
  if (st == MXL_OK && !svc->model_id) st = mxl_errorf(MXL_ERR_MEMORY, "service: out of memory");
  if (st == MXL_OK && pthread_create(&svc->engine, NULL, engine_main, svc->sched) != 0)
    st = mxl_errorf(MXL_ERR_MEMORY, "service: could not start the engine thread");
  if (st != MXL_OK) {
    mxl_service_close(svc);
    return st;
  }
  svc->engine_started = 1;
  mxl_scheduler_stats ss;
  mxl_scheduler_get_stats(svc->sched, &ss);
  svc->max_context = ss.max_context;
  svc->default_max_tokens = opt->default_max_tokens > 0 ? opt->default_max_tokens : 1024;
  find_stop_ids(svc, &m, ss.vocab);
  snprintf(svc->summary, sizeof svc->summary,
           "%s (%s layout, %s): %d layers, %d experts, %d per token, hidden %d, vocab %d; "
           "%s backend", svc->model_id, m.layout, m.dir, m.n_layers, m.n_experts,
           m.experts_per_token, m.hidden, ss.vocab, ss.backend);
  *out = svc;
  return MXL_OK;
}

void mxl_service_close(mxl_service *svc) {
  if (!svc) return;
  if (svc->engine_started) {
    mxl_scheduler_shutdown(svc->sched, 1);
    pthread_join(svc->engine, NULL);
  }
  mxl_scheduler_destroy(svc->sched); /* releases the adapter references of requests */
  mxl_registry_destroy(svc->reg);
  mxl_tokenizer_free(svc->tok);
  mxl_model_close(svc->model);
  free(svc->scales);
  free(svc->model_id);
  pthread_mutex_destroy(&svc->mu);
  free(svc);
}

mxl_registry *mxl_service_registry(mxl_service *svc) { return svc->reg; }
mxl_scheduler *mxl_service_scheduler(mxl_service *svc) { return svc->sched; }
const char *mxl_service_model_id(const mxl_service *svc) { return svc->model_id; }
int mxl_service_max_context(const mxl_service *svc) { return svc->max_context; }
const char *mxl_service_summary(const mxl_service *svc) { return svc->summary; }

/* ---------------------------------------------------------------- adapters */

/* The scale entry of `name` (lock held), or NULL. */
static mxl_service_scale *find_scale(mxl_service *svc, const char *name) {
  for (int i = 0; i < svc->n_scales; i++)
    if (!strcmp(svc->scales[i].name, name)) return &svc->scales[i];
  return NULL;
}

static mxl_status set_scale(mxl_service *svc, const char *name, float scale) {
  mxl_status st = MXL_OK;
  pthread_mutex_lock(&svc->mu);
  mxl_service_scale *e = find_scale(svc, name);
  if (!e && svc->n_scales == svc->cap_scales) {
    int cap = svc->cap_scales ? 2 * svc->cap_scales : 16;
    mxl_service_scale *grown = realloc(svc->scales, (size_t)cap * sizeof *grown);
    if (grown) {
      svc->scales = grown;
      svc->cap_scales = cap;
    }
  }
  if (!e && svc->n_scales < svc->cap_scales) {
    e = &svc->scales[svc->n_scales++];
    snprintf(e->name, sizeof e->name, "%s", name);
  }
  if (e)
    e->scale = scale;
  else
    st = mxl_errorf(MXL_ERR_MEMORY, "adapter %s: out of memory", name);
  pthread_mutex_unlock(&svc->mu);
  return st;
}

float mxl_service_adapter_scale(mxl_service *svc, const char *name) {
  pthread_mutex_lock(&svc->mu);
  const mxl_service_scale *e = find_scale(svc, name);
  float scale = e ? e->scale : 1.0f;
  pthread_mutex_unlock(&svc->mu);
  return scale;
}

static mxl_status check_scale(const char *name, float scale) {
  if (!isfinite(scale) || fabsf(scale) > 1e6f)
    return mxl_errorf(MXL_ERR_ARGUMENT, "adapter %s: scale %g is not a usable number", name,
                      (double)scale);
  return MXL_OK;
}

mxl_status mxl_service_load_adapter(mxl_service *svc, const char *name, const char *path,
                                    float scale, int pinned) {
  if (name && !strcmp(name, svc->model_id))
    return mxl_errorf(MXL_ERR_ARGUMENT, "adapter name \"%s\" is the base model's name", name);
  MXL_TRY(check_scale(name, scale));
  MXL_TRY(mxl_registry_load(svc->reg, name, path));
  mxl_status st = pinned > 0 ? mxl_registry_pin(svc->reg, name, 1) : MXL_OK;
  if (st == MXL_OK) st = set_scale(svc, name, scale);
  if (st != MXL_OK) mxl_registry_unload(svc->reg, name);
  return st;
}

mxl_status mxl_service_reload_adapter(mxl_service *svc, const char *name, const char *path,
                                      float scale, int pinned) {
  if (!isnan(scale)) MXL_TRY(check_scale(name, scale));
  MXL_TRY(mxl_registry_reload(svc->reg, name, path));
  if (pinned >= 0) MXL_TRY(mxl_registry_pin(svc->reg, name, pinned));
  return isnan(scale) ? MXL_OK : set_scale(svc, name, scale);
}

mxl_status mxl_service_unload_adapter(mxl_service *svc, const char *name) {
  MXL_TRY(mxl_registry_unload(svc->reg, name));
  pthread_mutex_lock(&svc->mu);
  mxl_service_scale *e = find_scale(svc, name);
  if (e) *e = svc->scales[--svc->n_scales];
  pthread_mutex_unlock(&svc->mu);
  return MXL_OK;
}
