#include "cli/serving.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/progress.h"

void mxl_serving_opts(mxl_serving_args *a, mxl_opt *o) {
  const mxl_opt opts[MXL_SERVING_N_OPTS] = {
      {"--model", MXL_OPT_STRING, &a->model, "DIR: the gpt-oss checkpoint (any layout)"},
      {"--adapter", MXL_OPT_LIST, &a->adapters,
       "NAME=FILE[:SCALE]: load an adapter under NAME (repeatable; SCALE: its default)"},
      {"--served-model-name", MXL_OPT_STRING, &a->model_id,
       "NAME: the base model's id (default: the checkpoint folder's name)"},
      {"--ctx", MXL_OPT_INT, &a->ctx, "N: positions per request, prompt + output (default 4096)"},
      {"--max-batch", MXL_OPT_INT, &a->max_batch, "N: sequences decoded together (default 32)"},
      {"--max-queue", MXL_OPT_INT, &a->max_queue, "N: requests waiting before 429 (default 256)"},
      {"--prefill-chunk", MXL_OPT_INT, &a->prefill_chunk,
       "N: prompt tokens per sequence per step (default 256; chat: 1024)"},
      {"--kv-memory", MXL_OPT_STRING, &a->kv_memory,
       "SIZE: KV cache budget, e.g. 2G (default: max-batch full contexts, at most 3/4 of the "
       "memory left after the weights)"},
      {"--max-adapter-memory", MXL_OPT_STRING, &a->adapter_memory,
       "SIZE: adapter memory budget with LRU eviction, e.g. 512M (default: none)"},
      {"--default-max-tokens", MXL_OPT_INT, &a->default_max_tokens,
       "N: output tokens when a request names none (default 1024)"},
      {"--backend", MXL_OPT_STRING, &a->backend, "cpu|cuda|cuda:N|auto|ref: compute backend"},
      {"--threads", MXL_OPT_INT, &a->threads, "N: CPU threads (default: all cores)"},
      {"--prefix-cache", MXL_OPT_INT, &a->prefix_cache,
       "N: finished requests' KV caches kept for prompts that repeat them (default: max-batch)"},
      {"--no-prefix-cache", MXL_OPT_FLAG, &a->no_prefix_cache,
       "prefill every prompt whole (no KV cache kept between requests)"},
      {"--shared-prefix", MXL_OPT_INT, &a->shared_prefix,
       "N: prompt tokens from the start that later prompts sharing them reuse, e.g. a long "
       "system prompt, each reserving 48 KB of KV budget on gpt-oss-20b (default, or 0: the "
       "whole prompt while --kv-memory has spare room, else --prefill-chunk)"},
      {"--no-mmap", MXL_OPT_FLAG, &a->no_mmap,
       "copy the weights into 2 MB pages (faster decode; needs their size in free memory)"},
  };
  memcpy(o, opts, sizeof opts);
}

int mxl_parse_size(const char *text, uint64_t *out) {
  char *end = NULL;
  errno = 0;
  double v = strtod(text, &end);
  if (errno || end == text || v < 0 || !isfinite(v)) return -1;
  double unit = 1;
  if (*end) {
    const char *units = "KMGT";
    const char *u = strchr(units, *end >= 'a' ? *end - 32 : *end);
    if (!u || !*u) return -1;
    unit = (double)(1ull << (10 * (u - units + 1)));
    end++;
    if (*end == 'i') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return -1;
  }
  if (v * unit > 1.8e19) return -1;
  *out = (uint64_t)(v * unit);
  return 0;
}

int mxl_adapter_spec(const char *spec, char *name, size_t name_cap, char *path, size_t path_cap,
                     float *scale) {
  const char *eq = strchr(spec, '=');
  const char *file = eq ? eq + 1 : spec;
  const char *colon = strrchr(file, ':');
  size_t file_len = strlen(file);
  *scale = 1.0f;
  if (colon && colon[1]) {
    char *end = NULL;
    float s = strtof(colon + 1, &end);
    if (end && !*end) {
      *scale = s;
      file_len = (size_t)(colon - file);
    }
  }
  if (file_len == 0 || file_len >= path_cap) return -1;
  snprintf(path, path_cap, "%.*s", (int)file_len, file);
  if (eq) {
    if (eq == spec || (size_t)(eq - spec) >= name_cap) return -1;
    snprintf(name, name_cap, "%.*s", (int)(eq - spec), spec);
    return 0;
  }
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  const char *dot = strrchr(base, '.');
  size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
  if (n == 0 || n >= name_cap) return -1;
  snprintf(name, name_cap, "%.*s", (int)n, base);
  return 0;
}

static int size_option(const char *cmd, const char *flag, const char *text, uint64_t *out) {
  *out = 0;
  if (!text) return 0;
  if (mxl_parse_size(text, out) == 0) return 0;
  fprintf(stderr, "mxlora %s: %s '%s': expected a size such as 512M or 2G\n", cmd, flag, text);
  return 2;
}

int mxl_serving_open(const char *cmd, const mxl_serving_args *a, mxl_service **out) {
  *out = NULL;
  if (!a->model) {
    fprintf(stderr, "mxlora %s: --model DIR is required\n", cmd);
    return 2;
  }
  mxl_service_options so = {0};
  so.model = a->model;
  so.model_id = a->model_id;
  so.scheduler.backend = a->backend;
  so.scheduler.threads = a->threads;
  static double copy_clock; /* the service opens once per process */
  so.scheduler.weights = mxl_cli_weight_options(a->no_mmap, &copy_clock);
  so.scheduler.max_context = a->ctx;
  so.scheduler.max_batch = a->max_batch;
  so.scheduler.max_queue = a->max_queue;
  so.scheduler.prefill_chunk = a->prefill_chunk;
  if (a->prefix_cache < 0) {
    fprintf(stderr, "mxlora %s: --prefix-cache %d: expected 1 or more (--no-prefix-cache: none)\n",
            cmd, a->prefix_cache);
    return 2;
  }
  so.scheduler.prefix_cache = a->no_prefix_cache ? -1 : a->prefix_cache;
  if (a->shared_prefix < 0) {
    fprintf(stderr,
            "mxlora %s: --shared-prefix %d: expected 1 or more, or 0 for the automatic default\n",
            cmd, a->shared_prefix);
    return 2;
  }
  so.scheduler.shared_prefix = a->shared_prefix;
  so.default_max_tokens = a->default_max_tokens;
  if (size_option(cmd, "--kv-memory", a->kv_memory, &so.scheduler.kv_memory) ||
      size_option(cmd, "--max-adapter-memory", a->adapter_memory, &so.max_adapter_memory))
    return 2;
  char names[MXL_OPT_LIST_MAX][MXL_REGISTRY_NAME_MAX + 1], paths[MXL_OPT_LIST_MAX][4096];
  float scales[MXL_OPT_LIST_MAX];
  for (int i = 0; i < a->adapters.n; i++)
    if (mxl_adapter_spec(a->adapters.items[i], names[i], sizeof names[i], paths[i],
                         sizeof paths[i], &scales[i])) {
      fprintf(stderr, "mxlora %s: --adapter '%s': expected NAME=FILE[:SCALE]\n", cmd,
              a->adapters.items[i]);
      return 2;
    }
  mxl_service *svc = NULL;
  mxl_status st = mxl_service_open(&so, &svc);
  if (st != MXL_OK) return mxl_cli_fail(cmd, st);
  for (int i = 0; i < a->adapters.n; i++) {
    st = mxl_service_load_adapter(svc, names[i], paths[i], scales[i], 0);
    if (st != MXL_OK) {
      fprintf(stderr, "mxlora %s: adapter %s: %s\n", cmd, names[i], mxl_last_error());
      mxl_service_close(svc);
      return 1;
    }
  }
  *out = svc;
  return 0;
}
