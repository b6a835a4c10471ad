/* Prompt caches on disk (infer/prompt_file.h). */
#include "infer/prompt_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/blob_file.h"
#include "core/json.h"
#include "core/status.h"

const mxl_container_format mxl_prompt_container = {
    .magic = "MXLPROMP",
    .kind = "prompt cache",
    .version = 1,
    .legacy_version = 0,
    .max_header = 1 << 20,
};

/* "SF..": one letter per layer, sliding or full. */
static void layer_types(const mxl_config *cfg, char *out) {
  for (int l = 0; l < cfg->n_layers; l++) out[l] = cfg->layer_sliding[l] ? 'S' : 'F';
  out[cfg->n_layers] = '\0';
}

/* ---------------------------------------------------------------- save */

mxl_status mxl_prompt_file_save(mxl_engine *e, const mxl_kv_cache *c, const int32_t *tokens,
                                const uint8_t key[MXL_SHA256_SIZE], const char *path) {
  const mxl_config *cfg = e->cfg;
  const int n = c->n_past, L = c->n_layers, D = c->kv_dim;
  /* the rows of the last window + slack positions that the rings hold */
  int from = n - (cfg->sliding_window + MXL_PROMPT_FILE_SLACK);
  if (from < mxl_kv_cache_slide_oldest(c)) from = mxl_kv_cache_slide_oldest(c);
  const int slide = n - from;
  mxl_blob *blobs = calloc((size_t)(2 * L + 1), sizeof *blobs);
  char (*names)[16] = calloc((size_t)(2 * L), sizeof *names);
  float **rows = calloc((size_t)(2 * L), sizeof *rows);
  mxl_status st = MXL_OK;
  if (blobs && names && rows) blobs[0] = (mxl_blob){"tokens", tokens, (size_t)n * sizeof(int32_t)};
  else st = mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  for (int i = 0; st == MXL_OK && i < 2 * L; i++) {
    int l = i / 2, sliding = cfg->layer_sliding[l];
    size_t count = (size_t)(sliding ? slide : n) * D;
    rows[i] = malloc(count ? count * sizeof(float) : 1);
    if (!rows[i]) {
      st = mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory for layer %d", path, l);
      break;
    }
    float *src = i % 2 ? c->v[l] : c->k[l];
    if (sliding)
      mxl_kv_ring_transfer(e, src, c->cap_slide, D, from, slide, rows[i], MXL_RING_TO_HOST);
    else if (count) e->ops->download(e->be, rows[i], src, count * sizeof(float));
    snprintf(names[i], sizeof names[i], "%c.%d", i % 2 ? 'v' : 'k', l);
    blobs[i + 1] = (mxl_blob){names[i], rows[i], count * sizeof(float)};
  }
  if (st == MXL_OK) {
    char hex[MXL_SHA256_HEX_SIZE], types[MXL_MAX_LAYERS + 1];
    mxl_sha256_hex(key, hex);
    layer_types(cfg, types);
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "key", hex);
    cJSON_AddNumberToObject(meta, "tokens", n);
    cJSON_AddNumberToObject(meta, "layers", L);
    cJSON_AddNumberToObject(meta, "kv_dim", D);
    cJSON_AddNumberToObject(meta, "window", cfg->sliding_window);
    cJSON_AddStringToObject(meta, "layer_types", types);
    cJSON_AddNumberToObject(meta, "sliding_from", from);
    st = meta ? mxl_blobs_save(&mxl_prompt_container, path, meta, blobs, 2 * L + 1)
              : mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
    cJSON_Delete(meta);
  }
  for (int i = 0; rows && i < 2 * L; i++) free(rows[i]);
  free(rows);
  free(names);
  free(blobs);
  return st;
}

/* ---------------------------------------------------------------- load */

int mxl_prompt_file_foreign(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  char magic[8];
  size_t n = fread(magic, 1, sizeof magic, f);
  fclose(f);
  return n > 0 && (n < sizeof magic || memcmp(magic, mxl_prompt_container.magic, sizeof magic));
}

/* One of the file's blobs, checked to hold `count` values of 4 bytes. */
static mxl_status blob(const mxl_blob_file *f, const char *name, size_t count,
                       const void **out) {
  return mxl_blobs_get(f, name, count * 4, out);
}

/* The meta fields, checked against this model (the key matched, so a
 * difference means a damaged or hand-made file). */
static mxl_status check_meta(const mxl_engine *e, const mxl_blob_file *f,
                             const uint8_t key[MXL_SHA256_SIZE], int *n, int *from) {
  const char *path = f->map.path;
  char where[600];
  snprintf(where, sizeof where, "%.500s: meta", path);
  const mxl_config *cfg = e->cfg;
  const char *hex, *types;
  int64_t tokens, layers, kv_dim, window, sliding_from;
  MXL_TRY(mxl_json_get_string(f->meta, "key", &hex, where));
  uint8_t file_key[MXL_SHA256_SIZE];
  if (!mxl_sha256_parse_hex(hex, file_key))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: key: not 64 lowercase hex digits", where);
  if (memcmp(file_key, key, MXL_SHA256_SIZE))
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "%s: made for another model, other adapters or other scales", path);
  MXL_TRY(mxl_json_get_int_range(f->meta, "tokens", 1, cfg->max_context, &tokens, where));
  MXL_TRY(mxl_json_get_int_range(f->meta, "layers", cfg->n_layers, cfg->n_layers, &layers, where));
  MXL_TRY(mxl_json_get_int_range(f->meta, "kv_dim", (int64_t)cfg->n_kv_heads * cfg->head_dim,
                                 (int64_t)cfg->n_kv_heads * cfg->head_dim, &kv_dim, where));
  MXL_TRY(mxl_json_get_int_range(f->meta, "window", cfg->sliding_window, cfg->sliding_window,
                                 &window, where));
  MXL_TRY(mxl_json_get_int_range(f->meta, "sliding_from", 0, tokens - 1, &sliding_from, where));
  MXL_TRY(mxl_json_get_string(f->meta, "layer_types", &types, where));
  char expect[MXL_MAX_LAYERS + 1];
  layer_types(cfg, expect);
  if (strcmp(types, expect))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: layer_types \"%.80s\", expected \"%s\"", where, types,
                      expect);
  *n = (int)tokens;
  *from = (int)sliding_from;
  return MXL_OK;
}

/* Writes positions [0, r) into dst from the file's rows. */
static mxl_status fill(mxl_engine *e, const mxl_blob_file *f, int n, int from, int r,
                       mxl_kv_cache *dst) {
  const mxl_config *cfg = e->cfg;
  const int D = dst->kv_dim, rows = mxl_kv_cache_window_rows(cfg, r);
  for (int i = 0; i < 2 * dst->n_layers; i++) {
    int l = i / 2, sliding = cfg->layer_sliding[l];
    char name[16];
    snprintf(name, sizeof name, "%c.%d", i % 2 ? 'v' : 'k', l);
    const void *data;
    MXL_TRY(blob(f, name, (size_t)(sliding ? n - from : n) * D, &data));
    float *dev = i % 2 ? dst->v[l] : dst->k[l];
    if (!sliding) {
      e->ops->upload(e->be, dev, data, (size_t)r * D * sizeof(float));
    } else {
      const float *first = (const float *)data + (size_t)(r - rows - from) * D;
      mxl_kv_ring_transfer(e, dev, dst->cap_slide, D, r - rows, rows, (float *)first,
                           MXL_HOST_TO_RING);
    }
  }
  mxl_kv_cache_claim_prefix(e, dst, r);
  return MXL_OK;
}

mxl_status mxl_prompt_file_load(mxl_engine *e, const char *path,
                                const uint8_t key[MXL_SHA256_SIZE], const int32_t *prompt,
                                int n_prompt, mxl_kv_cache *dst, int *reused) {
  *reused = 0;
  struct stat sb;
  if (stat(path, &sb) != 0 && errno == ENOENT) return MXL_OK; /* written after this run */
  if (dst->n_past != 0)
    return mxl_errorf(MXL_ERR_ARGUMENT, "%s: the KV cache to fill is not empty", path);
  mxl_blob_file f;
  MXL_TRY(mxl_blobs_open(&mxl_prompt_container, path, &f));
  int n = 0, from = 0;
  mxl_status st = check_meta(e, &f, key, &n, &from);
  const void *tokens = NULL;
  if (st == MXL_OK) st = blob(&f, "tokens", (size_t)n, &tokens);
  int r = 0;
  if (st == MXL_OK) {
    int limit = n < n_prompt - 1 ? n : n_prompt - 1;
    if (limit > dst->max_context - 1) limit = dst->max_context - 1;
    while (r < limit && ((const int32_t *)tokens)[r] == prompt[r]) r++;
    /* the sliding layers' window before r must be in the file */
    if (r > 0 && r - mxl_kv_cache_window_rows(e->cfg, r) < from) r = 0;
  }
  if (st == MXL_OK && r > 0) st = fill(e, &f, n, from, r, dst);
  if (st == MXL_OK) *reused = r;
  mxl_blobs_close(&f);
  return st;
}
