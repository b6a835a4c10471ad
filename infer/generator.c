/* The public generator: model + tokenizer + backend + overlaid adapters. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/adapter_file.h"
#include "adapters/fingerprint.h"
#include "adapters/lora.h"
#include "core/status.h"
#include "infer/generate.h"
#include "infer/npy.h"

enum { MAX_ADAPTERS = 16 };

typedef struct overlay {
  mxl_lora *lora; /* NULL: free slot */
  mxl_lora_layer *layers;
  mxl_lora_view view;
  float scale;
  uint8_t id[MXL_SHA256_SIZE]; /* its contents: every tensor's digest, rank, alpha, scaling */
} overlay;

struct mxl_generator {
  mxl_model *model;
  mxl_tokenizer *tok;
  mxl_backend *be;
  mxl_engine *engine;
  int max_context;
  overlay adapters[MAX_ADAPTERS];
};

/* The generator of mxl_generator_open, on `be` when given (which it owns
 * from then on, also on failure), else on a new backend named `backend`. */
static mxl_status generator_open(const char *path, mxl_backend *be, const char *backend,
                                 int threads, int max_context, const mxl_weight_options *weights,
                                 mxl_generator **out) {
  *out = NULL;
  if (max_context < 0) {
    mxl_backend_destroy(be);
    return mxl_errorf(MXL_ERR_ARGUMENT, "max_context %d: expected 0 (4096) or a positive count",
                      max_context);
  }
  mxl_generator *g = calloc(1, sizeof *g);
  if (!g) {
    mxl_backend_destroy(be);
    return mxl_errorf(MXL_ERR_MEMORY, "generator: out of memory");
  }
  g->be = be;
  mxl_status st = mxl_model_open(path, &g->model);
  if (st == MXL_OK) st = mxl_tokenizer_load(g->model->dir, &g->tok);
  if (st == MXL_OK && !g->be) st = mxl_backend_create_named(backend, threads, &g->be);
  if (st == MXL_OK) st = mxl_engine_create_with(g->model, g->be, weights, &g->engine);
  if (st != MXL_OK) {
    mxl_generator_close(g);
    return st;
  }
  int ctx = max_context > 0 ? max_context : 4096;
  g->max_context = ctx < g->model->config.max_context ? ctx : g->model->config.max_context;
  *out = g;
  return MXL_OK;
}

mxl_status mxl_generator_open(const char *path, const mxl_generator_options *opt,
                              mxl_generator **out) {
  return generator_open(path, NULL, opt && opt->backend ? opt->backend : "cpu",
                        opt ? opt->threads : 0, opt ? opt->max_context : 0,
                        opt ? &opt->weights : NULL, out);
}

mxl_status mxl_generator_open_on(const char *path, mxl_backend *be, int max_context,
                                 mxl_generator **out) {
  return generator_open(path, be, NULL, 0, max_context, NULL, out);
}

static void overlay_free(overlay *o) {
  mxl_lora_destroy(o->lora);
  free(o->layers);
  memset(o, 0, sizeof *o);
}

/* What an adapter file's parameters are: its tensors' digests (the file
 * header's), which tensors, and how they are scaled. */
static void adapter_id(const mxl_adapter *file, uint8_t id[MXL_SHA256_SIZE]) {
  const mxl_adapter_header *h = mxl_adapter_header_of(file);
  const mxl_adapter_info *info = mxl_adapter_get_info(file);
  char text[512];
  int n = snprintf(text, sizeof text, "rank=%d alpha=%.17g scaling=%.17g rslora=%d tensors=%d",
                   info->rank, info->alpha, info->scaling, info->rslora, info->n_tensors);
  mxl_sha256_ctx ctx;
  mxl_sha256_init(&ctx);
  mxl_sha256_update(&ctx, text, (size_t)n);
  mxl_sha256_update(&ctx, info->targets, strlen(info->targets));
  for (int i = 0; i < info->n_tensors; i++)
    mxl_sha256_update(&ctx, h->entries[i].sha256, MXL_SHA256_SIZE);
  mxl_sha256_final(&ctx, id);
}

/* (Re)builds the view of an overlay at its scale (the parameters are in
 * the model's layout already: mxl_adapter_load_overlay). */
static void overlay_view(overlay *o) {
  mxl_lora_fill_view(o->lora->layout, o->lora->params, o->scale, &o->view);
}

void mxl_generator_close(mxl_generator *g) {
  if (!g) return;
  for (int i = 0; i < MAX_ADAPTERS; i++) overlay_free(&g->adapters[i]);
  mxl_engine_destroy(g->engine);
  mxl_backend_destroy(g->be);
  mxl_tokenizer_free(g->tok);
  mxl_model_close(g->model);
  free(g);
}

/* ---------------------------------------------------------------- adapters */

mxl_status mxl_generator_add_adapter(mxl_generator *g, const char *path, float scale,
                                     int *index_out) {
  *index_out = -1;
  if (!isfinite(scale))
    return mxl_errorf(MXL_ERR_ARGUMENT, "%s: scale %g: expected a finite number", path, scale);
  int slot = 0;
  while (slot < MAX_ADAPTERS && g->adapters[slot].lora) slot++;
  if (slot == MAX_ADAPTERS)
    return mxl_errorf(MXL_ERR_ARGUMENT, "%s: at most %d adapters at once", path, MAX_ADAPTERS);
  mxl_adapter *file = NULL;
  overlay *o = &g->adapters[slot];
  mxl_status st = mxl_adapter_open(path, &file);
  if (st == MXL_OK) st = mxl_adapter_load_overlay(file, g->model, g->be, &o->lora);
  if (st == MXL_OK) adapter_id(file, o->id);
  mxl_adapter_close(file);
  if (st == MXL_OK) {
    o->layers = calloc(g->model->config.n_layers, sizeof *o->layers);
    if (!o->layers) st = mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  }
  if (st != MXL_OK) {
    overlay_free(o);
    return st;
  }
  o->view.layers = o->layers;
  o->scale = scale;
  overlay_view(o);
  *index_out = slot;
  return MXL_OK;
}

static overlay *find_overlay(mxl_generator *g, int index) {
  if (index < 0 || index >= MAX_ADAPTERS || !g->adapters[index].lora) return NULL;
  return &g->adapters[index];
}

mxl_status mxl_generator_set_adapter_scale(mxl_generator *g, int index, float scale) {
  overlay *o = find_overlay(g, index);
  if (!o) return mxl_errorf(MXL_ERR_ARGUMENT, "no adapter with index %d", index);
  o->scale = scale;
  overlay_view(o);
  return MXL_OK;
}

mxl_status mxl_generator_remove_adapter(mxl_generator *g, int index) {
  overlay *o = find_overlay(g, index);
  if (!o) return mxl_errorf(MXL_ERR_ARGUMENT, "no adapter with index %d", index);
  overlay_free(o);
  return MXL_OK;
}

/* ---------------------------------------------------------------- prompt */

void mxl_gen_request_defaults(mxl_gen_request *r) {
  memset(r, 0, sizeof *r);
  r->temperature = 1.0f;
  r->top_p = 1.0f;
  r->repetition_penalty = 1.0f;
  r->max_tokens = 256;
}

static mxl_status chat_prompt(const mxl_generator *g, const mxl_gen_request *req,
                              mxl_ids *ids) {
  cJSON *root = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(root, "messages");
  if (req->developer) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "developer");
    cJSON_AddStringToObject(m, "content", req->developer);
    cJSON_AddItemToArray(msgs, m);
  }
  cJSON *u = cJSON_CreateObject();
  cJSON_AddStringToObject(u, "role", "user");
  cJSON_AddStringToObject(u, "content", req->prompt);
  cJSON_AddItemToArray(msgs, u);
  if (req->effort) cJSON_AddStringToObject(root, "reasoning_effort", req->effort);
  if (req->tools) { /* the renderer checks each definition */
    cJSON *tools = cJSON_Parse(req->tools);
    if (!cJSON_IsArray(tools)) {
      cJSON_Delete(tools);
      cJSON_Delete(root);
      return mxl_errorf(MXL_ERR_FORMAT, "tools: expected a JSON list of function tools "
                        "([{\"type\": \"function\", \"function\": {\"name\": ...}}])");
    }
    cJSON_AddItemToObject(root, "tools", tools);
  }
  char *json = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (!json) return mxl_errorf(MXL_ERR_MEMORY, "prompt: out of memory");
  mxl_render_options opts = {0};
  opts.mode = MXL_RENDER_PROMPT;
  mxl_rendered r = {0};
  mxl_status st = mxl_harmony_render_json(g->tok, json, strlen(json), "prompt", &opts, &r);
  free(json);
  for (size_t i = 0; st == MXL_OK && i < r.n; i++) st = mxl_ids_push(ids, r.ids[i]);
  mxl_rendered_free(&r);
  return st;
}

static mxl_status build_prompt(const mxl_generator *g, const mxl_gen_request *req,
                               mxl_ids *ids) {
  if (!req->prompt) return mxl_errorf(MXL_ERR_ARGUMENT, "no prompt given");
  if (req->chat) return chat_prompt(g, req, ids);
  return mxl_tokenizer_encode(g->tok, req->prompt, strlen(req->prompt), req->raw_special, ids);
}

/* ---------------------------------------------------------------- generate */

typedef struct stream_ctx {
  mxl_chat_stream chat;
} stream_ctx;

static int on_token(void *user, int32_t token) {
  mxl_chat_stream_push(&((stream_ctx *)user)->chat, token);
  return 0;
}

/* Chat replies end at <|return|> or <|call|>; raw text at the model's
 * generation_config stop ids that exist in its vocabulary. */
static int stop_ids(const mxl_generator *g, int chat, const mxl_chat_ids *ids, int32_t *out) {
  if (chat) {
    out[0] = ids->ret;
    out[1] = ids->call;
    return 2;
  }
  int n = 0;
  const mxl_config *c = &g->model->config;
  for (int i = 0; i < c->n_stop_ids; i++)
    if (c->stop_ids[i] >= 0 && c->stop_ids[i] < g->engine->w.vocab_rows) out[n++] = c->stop_ids[i];
  return n;
}

static void fill_params(const mxl_gen_request *req, mxl_gen_params *p) {
  memset(p, 0, sizeof *p);
  mxl_sampling_defaults(&p->sampling);
  p->sampling.temperature = req->temperature;
  p->sampling.top_p = req->top_p;
  p->sampling.top_k = req->top_k;
  p->sampling.min_p = req->min_p;
  p->sampling.repetition_penalty = req->repetition_penalty;
  p->sampling.seed = req->seed;
  p->max_tokens = req->max_tokens > 0 ? req->max_tokens : 256;
  p->prefill_chunk = req->prefill_chunk;
}

static mxl_lora_stack active_adapters(const mxl_generator *g, const mxl_lora_view **views) {
  int n = 0;
  for (int i = 0; i < MAX_ADAPTERS; i++)
    if (g->adapters[i].lora && g->adapters[i].scale != 0) views[n++] = &g->adapters[i].view;
  mxl_lora_stack s = {views, n, 0, 0};
  return s;
}

/* What a prompt cache's keys and values depend on: the base model and the
 * adapters in use, in order, with their scales. */
static mxl_status cache_key(const mxl_generator *g, uint8_t key[MXL_SHA256_SIZE]) {
  uint8_t model[MXL_SHA256_SIZE];
  MXL_TRY(mxl_model_fingerprint(g->model, model));
  mxl_sha256_ctx ctx;
  mxl_sha256_init(&ctx);
  mxl_sha256_update(&ctx, "mxlora prompt cache 1", 21);
  mxl_sha256_update(&ctx, model, sizeof model);
  for (int i = 0; i < MAX_ADAPTERS; i++) {
    const overlay *o = &g->adapters[i];
    if (!o->lora || o->scale == 0) continue;
    mxl_sha256_update(&ctx, o->id, sizeof o->id);
    mxl_sha256_update(&ctx, &o->scale, sizeof o->scale);
  }
  mxl_sha256_final(&ctx, key);
  return MXL_OK;
}

static void describe_stop(const mxl_generator *g, const mxl_gen_stats *s, mxl_gen_result *r) {
  static _Thread_local char reason[96];
  if (s->stopped_by < 0) {
    snprintf(reason, sizeof reason, "max tokens");
  } else {
    uint32_t len = 0;
    const uint8_t *name = mxl_tokenizer_token_bytes(g->tok, s->stopped_by, &len);
    snprintf(reason, sizeof reason, "stop token %.*s", (int)len, name ? (const char *)name : "?");
  }
  r->stop_reason = reason;
}

mxl_status mxl_generate(mxl_generator *g, const mxl_gen_request *req, mxl_text_fn on_text,
                        void *user, mxl_gen_result *result) {
  memset(result, 0, sizeof *result);
  if (req->max_tokens < 0)
    return mxl_errorf(MXL_ERR_ARGUMENT, "max_tokens %d: expected 0 (256) or a positive count",
                      req->max_tokens);
  if (req->prefill_chunk < 0)
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "prefill_chunk %d: expected 0 (the default) or a positive count",
                      req->prefill_chunk);
  mxl_chat_ids ids = {0};
  if (req->chat) MXL_TRY(mxl_chat_ids_lookup(g->tok, &ids));
  mxl_ids prompt = {0};
  mxl_status st = build_prompt(g, req, &prompt);
  mxl_gen_params p;
  fill_params(req, &p);
  int32_t stops[MXL_MAX_STOP_IDS];
  p.n_stop = stop_ids(g, req->chat, &ids, stops);
  p.stop_ids = stops;
  p.max_context = g->max_context;
  const size_t V = g->engine->w.vocab_rows;
  if (st == MXL_OK && req->dump_logits) {
    p.prompt_logits = malloc(prompt.n * V * sizeof(float));
    if (!p.prompt_logits) st = mxl_errorf(MXL_ERR_MEMORY, "logits dump: out of memory");
  }
  if (st == MXL_OK && (int)prompt.n + p.max_tokens > g->max_context)
    st = mxl_errorf(MXL_ERR_ARGUMENT, "%zu prompt tokens + %d new exceed the context of %d",
                    prompt.n, p.max_tokens, g->max_context);
  uint8_t key[MXL_SHA256_SIZE];
  if (st == MXL_OK && req->prompt_cache) {
    st = cache_key(g, key);
    p.prompt_cache = req->prompt_cache;
    p.cache_key = key;
  }
  const mxl_lora_view *views[MAX_ADAPTERS];
  mxl_lora_stack lora = active_adapters(g, views);
  stream_ctx ctx;
  mxl_chat_stream_init(&ctx.chat, g->tok, &ids, req->chat, on_text, user);
  if (req->chat && req->on_message) mxl_chat_stream_on_message(&ctx.chat, req->on_message);
  mxl_gen_stats stats = {0};
  if (st == MXL_OK)
    st = mxl_generate_ids(g->engine, &lora, prompt.data, (int)prompt.n, &p, on_token, &ctx,
                          &stats);
  mxl_chat_stream_flush(&ctx.chat);
  if (st == MXL_OK && req->dump_logits)
    st = mxl_npy_write_f32(req->dump_logits, p.prompt_logits, prompt.n, V);
  result->prompt_tokens = stats.prompt_tokens;
  result->cached_tokens = stats.cached_tokens;
  result->generated_tokens = stats.generated_tokens;
  result->prefill_seconds = stats.prefill_seconds;
  result->decode_seconds = stats.decode_seconds;
  describe_stop(g, &stats, result);
  free(p.prompt_logits);
  mxl_ids_free(&prompt);
  return st;
}
