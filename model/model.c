/* mxl_model_open: finds which layout a path holds and reads it in place. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/json.h"
#include "core/status.h"
#include "model/checkpoint.h"

const char *mxl_layout_name(mxl_layout layout) {
  switch (layout) {
  case MXL_LAYOUT_HF: return "hf";
  case MXL_LAYOUT_ORIGINAL: return "original";
  case MXL_LAYOUT_METAL: return "metal";
  }
  return "unknown";
}

void mxl_model_get_info(const mxl_model *m, mxl_model_info *out) {
  const mxl_config *c = &m->config;
  out->layout = mxl_layout_name(m->layout);
  out->dir = m->dir;
  out->n_layers = c->n_layers;
  out->n_experts = c->n_experts;
  out->experts_per_token = c->experts_per_token;
  out->hidden = c->hidden;
  out->stop_ids = c->stop_ids;
  out->n_stop_ids = c->n_stop_ids;
}

void mxl_model_close(mxl_model *m) {
  if (!m) return;
  mxl_safetensors_close(m->st);
  for (int i = 0; i < m->n_mappings; i++) mxl_mapping_close(&m->mappings[i]);
  free(m->mappings);
  free(m->w.layers);
  free(m->path);
  free(m->dir);
  free(m);
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

static char *join(const char *dir, const char *name) { return mxl_path_join(dir, name); }

static int file_in(const char *dir, const char *name) {
  char *p = join(dir, name);
  int yes = p && mxl_path_exists(p) && !mxl_path_is_dir(p);
  free(p);
  return yes;
}

/* The only *.safetensors file of a folder, or NULL if none or several. */
static char *only_safetensors(const char *dir) {
  DIR *dp = opendir(dir);
  if (!dp) return NULL;
  char *found = NULL;
  int count = 0;
  struct dirent *e;
  while ((e = readdir(dp)) != NULL) {
    if (!ends_with(e->d_name, ".safetensors")) continue;
    if (++count == 1) found = join(dir, e->d_name);
  }
  closedir(dp);
  if (count != 1) {
    free(found);
    return NULL;
  }
  return found;
}

char *mxl_checkpoint_find_weights(const char *dir) {
  if (file_in(dir, "model.safetensors.index.json")) return join(dir, "model.safetensors.index.json");
  if (file_in(dir, "model.safetensors")) return join(dir, "model.safetensors");
  char *one = only_safetensors(dir);
  if (!one)
    mxl_errorf(MXL_ERR_FORMAT,
               "%s: no weights: expected model.safetensors.index.json or model.safetensors", dir);
  return one;
}

/* config.json of the original/ kind names num_experts and rope_ntk_*; the
 * HF one names model_type / num_local_experts. */
static int config_is_original(const char *path) {
  cJSON *root = NULL;
  if (mxl_json_parse_file(path, 1 << 20, &root) != MXL_OK) return 0;
  int original = cJSON_GetObjectItemCaseSensitive(root, "rope_ntk_beta") != NULL &&
                 cJSON_GetObjectItemCaseSensitive(root, "model_type") == NULL;
  cJSON_Delete(root);
  return original;
}

/* Applies generation_config.json from `dir` or its parent, if any. */
static mxl_status apply_generation_config(mxl_model *m, const char *dir) {
  char *p = join(dir, "generation_config.json");
  if (p && !mxl_path_exists(p)) {
    free(p);
    char *parent = join(dir, "..");
    p = parent ? join(parent, "generation_config.json") : NULL;
    free(parent);
  }
  mxl_status st = MXL_OK;
  if (p && mxl_path_exists(p)) st = mxl_config_load_generation(p, &m->config);
  free(p);
  return st;
}

static mxl_status open_safetensors_dir(mxl_model *m, const char *dir, const char *weights_file) {
  char *config = join(dir, "config.json");
  if (!config) return mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  if (!mxl_path_exists(config)) {
    mxl_status st = mxl_errorf(MXL_ERR_FORMAT, "%s: config.json is missing (needed to read %s)",
                               dir, weights_file ? weights_file : "the weights");
    free(config);
    return st;
  }
  int original = config_is_original(config);
  mxl_status st = original ? mxl_config_load_original(config, &m->config)
                           : mxl_config_load_hf(config, &m->config);
  free(config);
  MXL_TRY(st);
  char *weights = weights_file ? strdup(weights_file) : mxl_checkpoint_find_weights(dir);
  if (!weights) return weights_file ? mxl_errorf(MXL_ERR_MEMORY, "out of memory") : MXL_ERR_FORMAT;
  if (original) {
    char *dtypes = join(dir, "dtypes.json");
    st = mxl_checkpoint_read_original(m, weights, dtypes && mxl_path_exists(dtypes) ? dtypes : NULL);
    free(dtypes);
  } else {
    st = mxl_checkpoint_read_hf(m, weights);
  }
  free(weights);
  MXL_TRY(st);
  return apply_generation_config(m, dir);
}

static int has_hf_root(const char *dir) {
  if (!file_in(dir, "config.json")) return 0;
  char *w = mxl_checkpoint_find_weights(dir);
  free(w);
  return w != NULL;
}

static unsigned layouts_in_repo(const char *root) {
  unsigned bits = 0;
  char *orig = join(root, "original"), *metal = join(root, "metal");
  if (has_hf_root(root)) bits |= MXL_LAYOUT_BIT(MXL_LAYOUT_HF);
  if (orig && file_in(orig, "config.json")) bits |= MXL_LAYOUT_BIT(MXL_LAYOUT_ORIGINAL);
  if (metal && file_in(metal, "model.bin")) bits |= MXL_LAYOUT_BIT(MXL_LAYOUT_METAL);
  free(orig);
  free(metal);
  return bits;
}

static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return strdup(".");
  if (slash == path) return strdup("/");
  return strndup(path, (size_t)(slash - path));
}

static mxl_status open_dir(mxl_model *m, const char *path) {
  char *sub = NULL;
  mxl_status st;
  if (file_in(path, "model.bin") && !file_in(path, "config.json")) {
    sub = join(path, "model.bin");
    m->dir = strdup(path);
    st = mxl_checkpoint_read_metal(m, sub);
  } else if (file_in(path, "config.json")) {
    m->dir = strdup(path);
    st = open_safetensors_dir(m, path, NULL);
    /* A repo root: note original/ and metal/ beside the root weights. */
    if (st == MXL_OK && m->layout == MXL_LAYOUT_HF) m->layouts_present = layouts_in_repo(path);
  } else {
    /* A repo root without root weights: original/, then metal/. */
    unsigned bits = layouts_in_repo(path);
    m->layouts_present = bits;
    if (bits & MXL_LAYOUT_BIT(MXL_LAYOUT_ORIGINAL)) {
      m->dir = join(path, "original");
      st = open_safetensors_dir(m, m->dir, NULL);
    } else if (bits & MXL_LAYOUT_BIT(MXL_LAYOUT_METAL)) {
      m->dir = join(path, "metal");
      sub = join(m->dir, "model.bin");
      st = mxl_checkpoint_read_metal(m, sub);
    } else {
      st = mxl_errorf(MXL_ERR_FORMAT,
                      "%s: no gpt-oss checkpoint here: expected config.json with "
                      "model*.safetensors (Hugging Face layout), original/config.json, or "
                      "metal/model.bin",
                      path);
    }
  }
  free(sub);
  return st;
}

static mxl_status open_file(mxl_model *m, const char *path) {
  m->dir = dir_of(path);
  if (!m->dir) return mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  if (ends_with(path, ".bin")) return mxl_checkpoint_read_metal(m, path);
  if (ends_with(path, ".safetensors") || ends_with(path, ".safetensors.index.json"))
    return open_safetensors_dir(m, m->dir, path);
  if (ends_with(path, "config.json")) {
    char *dir = m->dir; /* open_dir sets m->dir itself */
    m->dir = NULL;
    mxl_status st = open_dir(m, dir);
    free(dir);
    return st;
  }
  return mxl_errorf(MXL_ERR_FORMAT,
                    "%s: not a gpt-oss checkpoint file (expected a folder, a .safetensors "
                    "file, model.safetensors.index.json or metal/model.bin)",
                    path);
}

mxl_status mxl_model_open(const char *path, mxl_model **model_out) {
  *model_out = NULL;
  if (!path || !*path) return mxl_errorf(MXL_ERR_ARGUMENT, "mxl_model_open: no path given");
  if (!mxl_path_exists(path)) return mxl_errorf(MXL_ERR_IO, "%s: no such file or folder", path);
  mxl_model *m = calloc(1, sizeof *m);
  if (!m || !(m->path = strdup(path))) {
    free(m);
    return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  }
  mxl_status st = mxl_path_is_dir(path) ? open_dir(m, path) : open_file(m, path);
  if (st == MXL_OK && !m->dir) st = mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  m->layouts_present |= MXL_LAYOUT_BIT(m->layout);
  if (st != MXL_OK) {
    mxl_model_close(m);
    return st;
  }
  *model_out = m;
  return MXL_OK;
}
