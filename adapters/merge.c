/* mxl_merge (include/mxlora/adapter.h): a complete model folder with the
 * adapters folded in, written through the layout writer from the merge
 * source (merge.h), atomically (a temporary folder renamed at the end). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <dirent.h>

#include "adapters/adapter_file.h"
#include "adapters/merge.h"
#include "core/fileio.h"
#include "core/status.h"
#include "model/layout_writer.h"

#define TMP_TAG ".tmp-merge."
enum { MAX_TEXT_FILE = 64 << 20 };

/* ------------------------------------------------------------ folders */

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

static void remove_tree(const char *path) {
  (void)nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Leftovers of merges into the same folder whose process is gone (killed
 * or crashed): "<out>.tmp-merge.<pid>". */
static void remove_stale(const char *out) {
  char *copy = strdup(out), *copy2 = strdup(out);
  if (!copy || !copy2) goto done;
  const char *dir = dirname(copy), *base = basename(copy2);
  DIR *dp = opendir(dir);
  if (!dp) goto done;
  size_t n = strlen(base);
  struct dirent *e;
  while ((e = readdir(dp)) != NULL) {
    if (strncmp(e->d_name, base, n) || strncmp(e->d_name + n, TMP_TAG, strlen(TMP_TAG))) continue;
    char *end = NULL;
    long pid = strtol(e->d_name + n + strlen(TMP_TAG), &end, 10);
    if (!end || *end || pid <= 0 || pid == (long)getpid()) continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive, or not ours to judge */
    char *path = mxl_path_join(dir, e->d_name);
    if (path) remove_tree(path);
    free(path);
  }
  closedir(dp);
done:
  free(copy);
  free(copy2);
}

static mxl_status sync_dir(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return mxl_errorf(MXL_ERR_IO, "%s: %s", path, strerror(errno));
  int rc = fsync(fd);
  close(fd);
  return rc == 0 ? MXL_OK : mxl_errorf(MXL_ERR_IO, "%s: fsync: %s", path, strerror(errno));
}

/* The repository root of the base: original/'s parent, else its folder. */
static char *repo_root(const mxl_model *m) {
  char *dir = strdup(m->dir);
  if (!dir) return NULL;
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/') dir[--n] = '\0';
  if (m->layout == MXL_LAYOUT_ORIGINAL && n >= 8 && !strcmp(dir + n - 8, "original")) {
    if (n == 8) {
      free(dir);
      return strdup(".");
    }
    dir[n - 9] = '\0';
  }
  return dir;
}

/* Copies root/name to dir/name when it exists; 1 if copied. */
static mxl_status copy_if_present(const char *root, const char *dir, const char *name,
                                  int *copied) {
  *copied = 0;
  char *src = mxl_path_join(root, name);
  if (!src) return mxl_errorf(MXL_ERR_MEMORY, "merge: out of memory");
  mxl_status st = MXL_OK;
  if (mxl_path_exists(src)) {
    char *text = NULL;
    size_t n = 0;
    st = mxl_read_file(src, MAX_TEXT_FILE, &text, &n);
    char *dst = st == MXL_OK ? mxl_path_join(dir, name) : NULL;
    if (st == MXL_OK) st = dst ? mxl_write_file_atomic(dst, text, n)
                               : mxl_errorf(MXL_ERR_MEMORY, "merge: out of memory");
    *copied = st == MXL_OK;
    free(dst);
    free(text);
  }
  free(src);
  return st;
}

/* ------------------------------------------------------------ configs */

/* Removes the top-level member "key": {...} from JSON text in place (the
 * text is edited, not re-printed, so that every number keeps its spelling:
 * transformers refuses "swiglu_limit": 7 where it expects a float). */
static void remove_object_member(char *text, const char *key) {
  char quoted[64];
  snprintf(quoted, sizeof quoted, "\"%s\"", key);
  char *start = strstr(text, quoted), *p = start ? strchr(start, '{') : NULL;
  if (!p) return;
  int depth = 0, in_string = 0;
  for (; *p; p++) {
    if (in_string) {
      if (*p == '\\' && p[1]) p++;
      else if (*p == '"') in_string = 0;
    } else if (*p == '"') in_string = 1;
    else if (*p == '{') depth++;
    else if (*p == '}' && --depth == 0) break;
  }
  if (!*p) return;
  char *end = p + 1;
  while (*end == ' ' || *end == '\n' || *end == '\t' || *end == '\r') end++;
  if (*end == ',') end++; /* the member's own comma */
  else {                  /* the last member: drop the comma before it */
    char *q = start;
    while (q > text && q[-1] != ',' && q[-1] != '{') q--;
    if (q > text && q[-1] == ',') start = q - 1;
  }
  memmove(start, end, strlen(end) + 1);
}

/* The base's config.json when it has one (copied as it is: every field and
 * number it carries kept), else ours; quantization_config present exactly
 * for MXFP4 experts. */
static mxl_status write_hf_config(const mxl_model *m, const char *root, const char *dir,
                                  int mxfp4) {
  char *path = mxl_path_join(root, "config.json");
  char *text = NULL;
  size_t n = 0;
  int has = path && m->layout == MXL_LAYOUT_HF &&
            mxl_read_file(path, 1 << 20, &text, &n) == MXL_OK;
  free(path);
  if (has && mxfp4 && !strstr(text, "\"quantization_config\"")) {
    free(text);
    has = 0;
  }
  if (!has) text = mxl_config_to_hf_json(&m->config); /* carries quantization_config */
  if (!text) return mxl_errorf(MXL_ERR_MEMORY, "merge: out of memory");
  if (!mxfp4) remove_object_member(text, "quantization_config");
  return mxl_write_text_file(dir, "config.json", text);
}

static mxl_status write_side_files(const mxl_model *m, const char *root, const char *dir) {
  static const char *const names[] = {"tokenizer.json", "tokenizer_config.json",
                                      "special_tokens_map.json", "chat_template.jinja"};
  int copied;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    MXL_TRY(copy_if_present(root, dir, names[i], &copied));
  MXL_TRY(copy_if_present(root, dir, "generation_config.json", &copied));
  if (!copied)
    MXL_TRY(mxl_write_text_file(dir, "generation_config.json",
                                mxl_config_to_generation_json(&m->config)));
  return MXL_OK;
}

/* ------------------------------------------------------------ report */

static double ratio(double num, double den) { return den > 0 ? sqrt(num / den) : 0.0; }

static cJSON *stats_json(const mxl_merge_stats *r) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "values", (double)r->values);
  cJSON_AddNumberToObject(o, "rel_rms_error", ratio(r->sq_requant_error, r->sq_merged));
  cJSON_AddNumberToObject(o, "delta_kept", r->sq_delta > 0 ? r->dot_kept_delta / r->sq_delta : 0);
  cJSON_AddNumberToObject(o, "delta_norm_ratio", ratio(r->sq_kept, r->sq_delta));
  cJSON_AddNumberToObject(o, "delta_rel_error", ratio(r->sq_delta_error, r->sq_delta));
  cJSON_AddNumberToObject(o, "delta_rms", r->values ? sqrt(r->sq_delta / (double)r->values) : 0);
  cJSON_AddNumberToObject(o, "weight_rms",
                          r->values ? sqrt(r->sq_merged / (double)r->values) : 0);
  return o;
}

static void fill_report(const mxl_merge_source *s, const mxl_merge_options *opt,
                        mxl_merge_result *res) {
  const mxl_config *c = &s->model->config;
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "dtype", opt->mxfp4 ? "mxfp4" : "bf16");
  cJSON_AddStringToObject(root, "base", opt->model);
  cJSON *ads = cJSON_AddArrayToObject(root, "adapters");
  for (int a = 0; a < opt->n_adapters; a++) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", opt->adapters[a]);
    cJSON_AddNumberToObject(o, "scale", opt->scales ? opt->scales[a] : 1.0);
    cJSON_AddItemToArray(ads, o);
  }
  cJSON_AddStringToObject(root, "definitions",
                          "M = W + dW (the float merge), Q = its MXFP4 encoding, W = the base "
                          "(MXFP4 already, so Q(W) = W). rel_rms_error = |Q - M| / |M|; "
                          "delta_kept = <Q - W, dW> / |dW|^2 (1: all of the adapter's delta "
                          "survives, 0: none); delta_norm_ratio = |Q - W| / |dW|; "
                          "delta_rel_error = |Q - W - dW| / |dW|");
  cJSON *tensors = cJSON_AddArrayToObject(root, "tensors");
  mxl_merge_stats all = {0};
  for (int l = 0; l < c->n_layers && opt->mxfp4; l++)
    for (int k = 0; k < 2; k++) {
      const mxl_merge_stats *r = &s->stats[l * 2 + k];
      if (!r->values) continue;
      cJSON *o = stats_json(r);
      char name[96];
      snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%s", l,
               k ? "down_proj" : "gate_up_proj");
      cJSON_AddItemToObjectCS(o, "name", cJSON_CreateString(name));
      cJSON_AddNumberToObject(o, "layer", l);
      cJSON_AddItemToArray(tensors, o);
      res->tensors++;
      if (r->sq_delta > 0 && r->dot_kept_delta / r->sq_delta < 0.5) res->tensors_mostly_lost++;
      all.sq_merged += r->sq_merged, all.sq_requant_error += r->sq_requant_error;
      all.sq_delta += r->sq_delta, all.dot_kept_delta += r->dot_kept_delta;
      all.sq_kept += r->sq_kept, all.sq_delta_error += r->sq_delta_error;
      all.values += r->values;
    }
  res->rel_rms_error = ratio(all.sq_requant_error, all.sq_merged);
  res->delta_kept = all.sq_delta > 0 ? all.dot_kept_delta / all.sq_delta : 0;
  res->delta_norm_ratio = ratio(all.sq_kept, all.sq_delta);
  res->delta_rel_error = ratio(all.sq_delta_error, all.sq_delta);
  cJSON *sum = stats_json(&all);
  cJSON_AddNumberToObject(sum, "tensors", res->tensors);
  cJSON_AddNumberToObject(sum, "tensors_mostly_lost", res->tensors_mostly_lost);
  if (res->tensors && res->delta_kept < 0.5)
    cJSON_AddStringToObject(sum, "warning",
                            "most of the adapters' expert delta is lost to 4-bit rounding: "
                            "serve the adapter unmerged, or merge to bf16");
  cJSON_AddItemToObject(root, "summary", sum);
  res->report_json = cJSON_Print(root);
  cJSON_Delete(root);
}

/* ------------------------------------------------------------ merge */

typedef struct merge_job {
  const mxl_merge_options *opt;
  mxl_model *model;
  mxl_adapter **files;
  mxl_lora **loras;
  float *scales;
  char *tmp, *root;
} merge_job;

static mxl_status load_inputs(merge_job *j) {
  const mxl_merge_options *o = j->opt;
  MXL_TRY(mxl_model_open(o->model, &j->model));
  if (j->model->layout == MXL_LAYOUT_METAL)
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "%s: merge reads the Hugging Face root or original/ layout, not "
                      "metal/model.bin (give the repository root)", o->model);
  j->files = calloc((size_t)o->n_adapters, sizeof *j->files);
  j->loras = calloc((size_t)o->n_adapters, sizeof *j->loras);
  j->scales = malloc((size_t)o->n_adapters * sizeof *j->scales);
  if (!j->files || !j->loras || !j->scales) return mxl_errorf(MXL_ERR_MEMORY, "merge: out of memory");
  for (int a = 0; a < o->n_adapters; a++) {
    j->scales[a] = o->scales ? o->scales[a] : 1.0f;
    if (!isfinite(j->scales[a]))
      return mxl_errorf(MXL_ERR_ARGUMENT, "merge: adapter %s: scale %g is not finite",
                        o->adapters[a], (double)j->scales[a]);
    MXL_TRY(mxl_adapter_open(o->adapters[a], &j->files[a]));
    MXL_TRY(mxl_adapter_load(j->files[a], j->model, &j->loras[a]));
  }
  return MXL_OK;
}

static mxl_status write_layouts(merge_job *j, mxl_merge_source *src, mxl_merge_result *res) {
  const mxl_merge_options *o = j->opt;
  const mxl_config *c = &j->model->config;
  const int hf = o->hf || !o->original, dense = !o->mxfp4;
  uint8_t *buf = malloc(MXL_LAYOUT_CHUNK);
  if (!buf) return mxl_errorf(MXL_ERR_MEMORY, "merge: out of memory");
  mxl_layout_writer w = {.c = c, .src = mxl_merge_tensor_source(src), .dense_experts = dense,
                         .progress = o->progress, .user = o->progress_user, .buf = buf};
  w.total = (hf ? (double)mxl_layout_safetensors_bytes(c, MXL_LAYOUT_HF, dense) : 0) +
            (o->original ? (double)mxl_layout_safetensors_bytes(c, MXL_LAYOUT_ORIGINAL, dense) : 0);
  mxl_status st = MXL_OK;
  if (hf) {
    st = write_hf_config(j->model, j->root, j->tmp, o->mxfp4);
    if (st == MXL_OK) st = mxl_layout_write_safetensors(&w, j->tmp, MXL_LAYOUT_HF, o->shard_bytes);
  }
  if (st == MXL_OK && o->original) {
    char *dir = mxl_path_join(j->tmp, "original"), *cfg = mxl_path_join(j->root, "original");
    int copied = 0;
    st = dir && cfg ? mxl_make_dirs(dir) : mxl_errorf(MXL_ERR_MEMORY, "merge: out of memory");
    if (st == MXL_OK) st = copy_if_present(cfg, dir, "config.json", &copied);
    if (st == MXL_OK && !copied)
      st = mxl_write_text_file(dir, "config.json", mxl_config_to_original_json(c));
    if (st == MXL_OK) st = mxl_layout_write_safetensors(&w, dir, MXL_LAYOUT_ORIGINAL, o->shard_bytes);
    free(dir);
    free(cfg);
  }
  res->bytes_written = (uint64_t)w.done;
  free(buf);
  return st;
}

static mxl_status run(merge_job *j, mxl_merge_result *res) {
  const mxl_merge_options *o = j->opt;
  MXL_TRY(load_inputs(j));
  j->root = repo_root(j->model);
  char pid[32];
  snprintf(pid, sizeof pid, "%s%ld", TMP_TAG, (long)getpid());
  size_t n = strlen(o->out);
  j->tmp = malloc(n + sizeof pid);
  if (!j->root || !j->tmp) return mxl_errorf(MXL_ERR_MEMORY, "merge: out of memory");
  snprintf(j->tmp, n + sizeof pid, "%s%s", o->out, pid);
  remove_stale(o->out);
  MXL_TRY(mxl_make_dirs(j->tmp));
  mxl_merge_source src;
  MXL_TRY(mxl_merge_source_init(&src, j->model, j->loras, j->scales, o->n_adapters));
  mxl_status st = write_layouts(j, &src, res);
  if (st == MXL_OK) st = write_side_files(j->model, j->root, j->tmp);
  if (st == MXL_OK) fill_report(&src, o, res);
  mxl_merge_source_free(&src);
  if (st == MXL_OK)
    st = res->report_json ? mxl_write_text_file(j->tmp, "mxlora_merge_report.json",
                                                strdup(res->report_json))
                          : mxl_errorf(MXL_ERR_MEMORY, "merge: out of memory");
  if (st != MXL_OK) return st;
  if (mxl_path_exists(o->out))
    return mxl_errorf(MXL_ERR_IO, "%s: appeared while merging; the merge is left in %s", o->out,
                      j->tmp);
  if (rename(j->tmp, o->out) != 0)
    return mxl_errorf(MXL_ERR_IO, "renaming %s to %s: %s", j->tmp, o->out, strerror(errno));
  char *copy = strdup(o->out);
  st = copy ? sync_dir(dirname(copy)) : MXL_OK;
  free(copy);
  return st;
}

mxl_status mxl_merge(const mxl_merge_options *opt, mxl_merge_result *result) {
  memset(result, 0, sizeof *result);
  if (!opt || !opt->model || !opt->out || !*opt->out || opt->n_adapters < 1)
    return mxl_errorf(MXL_ERR_ARGUMENT, "merge: a base model, at least one adapter and an "
                      "output folder are needed");
  if (mxl_path_exists(opt->out))
    return mxl_errorf(MXL_ERR_ARGUMENT, "%s already exists; merge writes a new folder", opt->out);
  merge_job j = {.opt = opt};
  mxl_status st = run(&j, result);
  if (st != MXL_OK) {
    if (j.tmp && mxl_path_exists(j.tmp) && !strstr(mxl_last_error(), "the merge is left in"))
      remove_tree(j.tmp);
    free(result->report_json);
    result->report_json = NULL;
  }
  for (int a = 0; j.files && a < opt->n_adapters; a++) {
    if (j.loras) mxl_lora_destroy(j.loras[a]);
    mxl_adapter_close(j.files[a]);
  }
  free(j.files);
  free(j.loras);
  free(j.scales);
  free(j.tmp);
  free(j.root);
  mxl_model_close(j.model);
  return st;
}
