/* The adapter file format: writer, validating parser, payload decoder.
 * docs/adapter-format.md describes every byte. */
#include "adapters/adapter_file.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <zstd.h>

#include "adapters/fingerprint.h"
#include "core/bf16.h"
#include "core/container.h"
#include "core/fileio.h"
#include "core/json.h"
#include "core/status.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "adapter payloads are little-endian and copied as is: port the byte swaps first"
#endif

/* JSON numbers are doubles: integers are exact up to 2^53. */
#define MXL_ZSTD_MAX_RATIO 32768u
#define MAX_JSON_INT ((int64_t)1 << 53)

const mxl_container_format mxl_adapter_container = {
    .magic = MXL_ADAPTER_MAGIC,
    .kind = "adapter",
    .version = MXL_ADAPTER_VERSION,
    .legacy_version = MXL_ADAPTER_LEGACY_VERSION,
    .max_header = MXL_ADAPTER_MAX_HEADER,
};

static const char *const encoding_names[] = {"zstd", "shuffle+zstd"};
static const char *const dtype_names[] = {"F32", "BF16"};

static size_t dtype_bytes(mxl_adapter_dtype dt) { return dt == MXL_ADAPTER_BF16 ? 2 : 4; }

/* ------------------------------------------------------------ small helpers */


void mxl_byte_shuffle(uint8_t *dst, const uint8_t *src, size_t n, size_t width) {
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < width; j++) dst[j * n + i] = src[i * width + j];
}

void mxl_byte_unshuffle(uint8_t *dst, const uint8_t *src, size_t n, size_t width) {
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < width; j++) dst[i * width + j] = src[j * n + i];
}

/* "0-23" for a full run, else "7,15,23" (ranges of 3 or more collapse). */
static void format_layer_list(const uint8_t *on, int n_layers, char *buf, size_t cap) {
  size_t used = 0;
  buf[0] = '\0';
  for (int l = 0; l < n_layers && used < cap; l++) {
    if (!on[l]) continue;
    int end = l;
    while (end + 1 < n_layers && on[end + 1]) end++;
    int w;
    if (end - l >= 2) w = snprintf(buf + used, cap - used, "%s%d-%d", used ? "," : "", l, end);
    else {
      w = snprintf(buf + used, cap - used, "%s%d", used ? "," : "", l);
      end = l;
    }
    if (w > 0) used += (size_t)w;
    l = end;
  }
}

void mxl_adapter_targets_text(const mxl_lora_config *lc, int n_layers, char *buf, size_t cap) {
  size_t used = 0;
  buf[0] = '\0';
  for (int t = 0; t < MXL_LORA_N_TARGETS && used < cap; t++) {
    char list[4 * MXL_MAX_LAYERS];
    format_layer_list(lc->layers[t], n_layers, list, sizeof list);
    if (!list[0]) continue;
    int w = snprintf(buf + used, cap - used, "%s%s:%s", used ? " " : "",
                     mxl_lora_target_name((mxl_lora_target)t), list);
    if (w > 0) used += (size_t)w;
  }
}

/* ------------------------------------------------------------ writer */

typedef struct save_text {
  char created_by[MXL_ADAPTER_TEXT_SIZE], created_at[MXL_ADAPTER_TEXT_SIZE];
} save_text;

void mxl_adapter_save_options_default(mxl_adapter_save_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->dtype = MXL_ADAPTER_F32;
  opt->zstd_level = 3;
  opt->provenance.final_loss = NAN;
}

static mxl_status check_text(const char *s, const char *field) {
  if (s && strlen(s) >= MXL_ADAPTER_TEXT_SIZE)
    return mxl_errorf(MXL_ERR_ARGUMENT, "adapter: provenance %s is longer than %d bytes", field,
                      MXL_ADAPTER_TEXT_SIZE - 1);
  return MXL_OK;
}

static mxl_status check_options(const mxl_adapter_save_options *opt, save_text *txt) {
  if (opt->dtype != MXL_ADAPTER_F32 && opt->dtype != MXL_ADAPTER_BF16)
    return mxl_errorf(MXL_ERR_ARGUMENT, "adapter: unknown payload dtype %d", (int)opt->dtype);
  if (opt->zstd_level < 0 || opt->zstd_level > ZSTD_maxCLevel())
    return mxl_errorf(MXL_ERR_ARGUMENT, "adapter: zstd level %d outside 1..%d", opt->zstd_level,
                      ZSTD_maxCLevel());
  const mxl_adapter_provenance *p = &opt->provenance;
  MXL_TRY(check_text(p->recipe, "recipe"));
  MXL_TRY(check_text(p->created_by, "created_by"));
  MXL_TRY(check_text(p->created_at, "created_at"));
  if (p->dataset_sha256 && !mxl_sha256_parse_hex(p->dataset_sha256, NULL))
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "adapter: provenance dataset_sha256 \"%.80s\" is not 64 lowercase hex "
                      "digits",
                      p->dataset_sha256);
  if (p->steps < 0 || p->steps >= MAX_JSON_INT)
    return mxl_errorf(MXL_ERR_ARGUMENT, "adapter: provenance steps %" PRId64 " out of range",
                      p->steps);
  if (p->created_by) snprintf(txt->created_by, sizeof txt->created_by, "%s", p->created_by);
  else snprintf(txt->created_by, sizeof txt->created_by, "mxlora %s", mxl_version_string());
  if (p->created_at) {
    snprintf(txt->created_at, sizeof txt->created_at, "%s", p->created_at);
  } else {
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(txt->created_at, sizeof txt->created_at, "%Y-%m-%dT%H:%M:%SZ", &tm);
  }
  return MXL_OK;
}

static cJSON *lora_json(const mxl_lora_layout *lay) {
  cJSON *lora = cJSON_CreateObject();
  cJSON *targets = cJSON_AddArrayToObject(lora, "targets");
  cJSON *layers = cJSON_AddObjectToObject(lora, "layers");
  cJSON_AddNumberToObject(lora, "rank", lay->cfg.rank);
  cJSON_AddNumberToObject(lora, "alpha", lay->cfg.alpha);
  cJSON_AddBoolToObject(lora, "rslora", lay->cfg.rslora != 0);
  for (int t = 0; t < MXL_LORA_N_TARGETS; t++) {
    cJSON *list = NULL;
    for (int l = 0; l < lay->n_layers; l++) {
      if (!lay->cfg.layers[t][l]) continue;
      if (!list) {
        const char *name = mxl_lora_target_name((mxl_lora_target)t);
        cJSON_AddItemToArray(targets, cJSON_CreateString(name));
        list = cJSON_AddArrayToObject(layers, name);
      }
      cJSON_AddItemToArray(list, cJSON_CreateNumber(l));
    }
  }
  return lora;
}

static cJSON *provenance_json(const mxl_adapter_provenance *p, const save_text *txt) {
  cJSON *o = cJSON_CreateObject();
  if (p->recipe) cJSON_AddStringToObject(o, "recipe", p->recipe);
  else cJSON_AddNullToObject(o, "recipe");
  if (p->dataset_sha256) cJSON_AddStringToObject(o, "dataset_sha256", p->dataset_sha256);
  else cJSON_AddNullToObject(o, "dataset_sha256");
  cJSON_AddNumberToObject(o, "steps", (double)p->steps);
  if (isfinite(p->final_loss)) cJSON_AddNumberToObject(o, "final_loss", p->final_loss);
  else cJSON_AddNullToObject(o, "final_loss");
  cJSON_AddStringToObject(o, "created_by", txt->created_by);
  cJSON_AddStringToObject(o, "created_at", txt->created_at);
  return o;
}

/* One directory entry; with e == NULL the numbers are placeholders at least
 * as long as any real value, which sizes the header before the payloads are
 * known. */
static cJSON *entry_json(const mxl_lora_tensor *x, mxl_adapter_dtype dt,
                         const mxl_adapter_entry *e) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "name", x->name);
  cJSON_AddStringToObject(o, "dtype", dtype_names[dt]);
  cJSON *shape = cJSON_AddArrayToObject(o, "shape");
  if (mxl_lora_target_is_expert(x->target))
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(x->n_experts));
  cJSON_AddItemToArray(shape, cJSON_CreateNumber(x->rows));
  cJSON_AddItemToArray(shape, cJSON_CreateNumber(x->cols));
  double big = (double)(MAX_JSON_INT - 1);
  char hex[MXL_SHA256_HEX_SIZE];
  if (e) {
    mxl_sha256_hex(e->sha256, hex);
  } else {
    memset(hex, '0', 64);
    hex[64] = '\0';
  }
  cJSON_AddNumberToObject(o, "offset", e ? (double)e->offset : big);
  cJSON_AddNumberToObject(o, "compressed_size", e ? (double)e->compressed_size : big);
  cJSON_AddNumberToObject(o, "raw_size", e ? (double)e->raw_size : big);
  cJSON_AddStringToObject(o, "sha256", hex);
  cJSON_AddStringToObject(o, "encoding", encoding_names[e ? e->encoding : 1]);
  return o;
}

static char *header_text(const mxl_lora_layout *lay, const mxl_config *c,
                         const uint8_t fingerprint[MXL_SHA256_SIZE],
                         const mxl_adapter_save_options *opt, const save_text *txt,
                         const mxl_adapter_entry *entries) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "format", "mxlora-adapter");
  cJSON_AddNumberToObject(root, "format_version", MXL_ADAPTER_VERSION);
  cJSON *base = cJSON_AddObjectToObject(root, "base_model");
  char hex[MXL_SHA256_HEX_SIZE];
  mxl_sha256_hex(fingerprint, hex);
  cJSON_AddStringToObject(base, "fingerprint", hex);
  cJSON_AddItemToObject(base, "config", mxl_fingerprint_config_json(c));
  cJSON_AddItemToObject(root, "lora", lora_json(lay));
  cJSON_AddStringToObject(root, "dtype", dtype_names[opt->dtype]);
  cJSON_AddItemToObject(root, "provenance", provenance_json(&opt->provenance, txt));
  cJSON *tensors = cJSON_AddArrayToObject(root, "tensors");
  for (int i = 0; i < lay->n_tensors; i++)
    cJSON_AddItemToArray(tensors,
                         entry_json(&lay->tensors[i], opt->dtype, entries ? &entries[i] : NULL));
  /* cJSON returns NULL from printing if any allocation above failed. */
  char *text = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  return text;
}

/* Scratch for one tensor at a time: memory stays bounded by the largest. */
typedef struct encoder {
  float *f32;          /* [max_count] */
  uint8_t *raw, *shuf; /* [max_count · 4] */
  uint8_t *c1, *c2;    /* compressBound(max raw) */
  size_t cap;
  ZSTD_CCtx *cctx;
} encoder;

static void encoder_free(encoder *enc) {
  free(enc->f32);
  free(enc->raw);
  free(enc->shuf);
  free(enc->c1);
  free(enc->c2);
  ZSTD_freeCCtx(enc->cctx);
}

static mxl_status encoder_init(encoder *enc, const mxl_lora_layout *lay) {
  memset(enc, 0, sizeof *enc);
  size_t max_count = 0;
  for (int i = 0; i < lay->n_tensors; i++)
    if (lay->tensors[i].count > max_count) max_count = lay->tensors[i].count;
  enc->cap = ZSTD_compressBound(max_count * 4);
  enc->f32 = malloc(max_count * 4);
  enc->raw = malloc(max_count * 4);
  enc->shuf = malloc(max_count * 4);
  enc->c1 = malloc(enc->cap);
  enc->c2 = malloc(enc->cap);
  enc->cctx = ZSTD_createCCtx();
  if (!enc->f32 || !enc->raw || !enc->shuf || !enc->c1 || !enc->c2 || !enc->cctx) {
    encoder_free(enc);
    return mxl_errorf(MXL_ERR_MEMORY, "adapter: out of memory for %zu-element buffers",
                      max_count);
  }
  return MXL_OK;
}

static mxl_status compress(encoder *enc, uint8_t *dst, const uint8_t *src, size_t n, int level,
                           size_t *out) {
  size_t r = ZSTD_compressCCtx(enc->cctx, dst, enc->cap, src, n, level);
  if (ZSTD_isError(r))
    return mxl_errorf(MXL_ERR_MEMORY, "adapter: zstd compression failed: %s",
                      ZSTD_getErrorName(r));
  *out = r;
  return MXL_OK;
}

/* Encodes tensor i: raw bytes, checksum, the smaller of plain and
 * byte-shuffled zstd. *payload points into the encoder. */
static mxl_status encode_tensor(encoder *enc, const mxl_lora *lora, int i,
                                const mxl_adapter_save_options *opt, mxl_adapter_entry *e,
                                const uint8_t **payload) {
  const mxl_lora_tensor *x = &lora->layout->tensors[i];
  mxl_lora_tensor_read(lora, i, enc->f32);
  for (size_t j = 0; j < x->count; j++)
    if (!isfinite(enc->f32[j]))
      return mxl_errorf(MXL_ERR_NUMERIC, "adapter: %s[%zu] is %g; refusing to save", x->name,
                        j, (double)enc->f32[j]);
  size_t width = dtype_bytes(opt->dtype), raw = x->count * width;
  if (opt->dtype == MXL_ADAPTER_BF16) {
    uint16_t *h = (uint16_t *)(void *)enc->raw;
    for (size_t j = 0; j < x->count; j++) h[j] = mxl_f32_to_bf16(enc->f32[j]);
  } else {
    memcpy(enc->raw, enc->f32, raw);
  }
  mxl_sha256(enc->raw, raw, e->sha256);
  mxl_byte_shuffle(enc->shuf, enc->raw, x->count, width);
  int level = opt->zstd_level ? opt->zstd_level : 3;
  size_t n1 = 0, n2 = 0;
  MXL_TRY(compress(enc, enc->c1, enc->raw, raw, level, &n1));
  MXL_TRY(compress(enc, enc->c2, enc->shuf, raw, level, &n2));
  e->raw_size = raw;
  e->encoding = n2 < n1 ? MXL_ENCODING_SHUFFLE_ZSTD : MXL_ENCODING_ZSTD;
  e->compressed_size = n2 < n1 ? n2 : n1;
  *payload = n2 < n1 ? enc->c2 : enc->c1;
  return MXL_OK;
}

/* The header is reserved with placeholder numbers at least as long as the
 * real ones (the payloads' compressed sizes are known only once they are
 * written), then written for real, space-padded, by the commit. */
static mxl_status write_body(const char *path, const mxl_lora *lora, const mxl_config *c,
                             const uint8_t fingerprint[MXL_SHA256_SIZE],
                             const mxl_adapter_save_options *opt, const save_text *txt,
                             mxl_adapter_entry *entries) {
  const mxl_lora_layout *lay = lora->layout;
  char *text = header_text(lay, c, fingerprint, opt, txt, NULL);
  if (!text) return mxl_errorf(MXL_ERR_MEMORY, "adapter: out of memory for the header");
  size_t reserved = strlen(text);
  free(text);
  mxl_container_writer w;
  MXL_TRY(mxl_container_begin(&mxl_adapter_container, path, reserved, &w));
  encoder enc;
  mxl_status st = encoder_init(&enc, lay);
  if (st != MXL_OK) {
    mxl_container_abort(&w);
    return st;
  }
  for (int i = 0; i < lay->n_tensors && st == MXL_OK; i++) {
    const uint8_t *payload = NULL;
    st = encode_tensor(&enc, lora, i, opt, &entries[i], &payload);
    if (st == MXL_OK)
      st = mxl_container_append(&w, payload, entries[i].compressed_size, 1, &entries[i].offset);
    if (opt->progress) opt->progress(opt->progress_user, "saving", i + 1, lay->n_tensors);
  }
  encoder_free(&enc);
  text = st == MXL_OK ? header_text(lay, c, fingerprint, opt, txt, entries) : NULL;
  if (st == MXL_OK && !text) st = mxl_errorf(MXL_ERR_MEMORY, "adapter: out of memory");
  if (st != MXL_OK) {
    mxl_container_abort(&w);
    return st;
  }
  st = mxl_container_commit(&w, text);
  free(text);
  return st;
}

/* The set must have been built for this config. */
static mxl_status check_lora_matches(const mxl_lora_layout *lay, const mxl_config *c) {
  int same = c->n_layers == lay->n_layers;
  for (int t = 0; t < MXL_LORA_N_TARGETS && same; t++) {
    mxl_lora_dims d = mxl_lora_target_dims(c, (mxl_lora_target)t);
    same = d.in == lay->dims[t].in && d.out == lay->dims[t].out &&
           d.n_experts == lay->dims[t].n_experts;
  }
  if (!same)
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "adapter: the LoRA set was built for another model shape than the one "
                      "given");
  return MXL_OK;
}

mxl_status mxl_adapter_write(const char *path, const mxl_lora *lora, const mxl_config *config,
                             const uint8_t fingerprint[MXL_SHA256_SIZE],
                             const mxl_adapter_save_options *opt) {
  mxl_adapter_save_options defaults;
  if (!opt) {
    mxl_adapter_save_options_default(&defaults);
    opt = &defaults;
  }
  save_text txt;
  MXL_TRY(check_options(opt, &txt));
  MXL_TRY(check_lora_matches(lora->layout, config));
  mxl_adapter_entry *entries = calloc((size_t)lora->layout->n_tensors, sizeof *entries);
  if (!entries) return mxl_errorf(MXL_ERR_MEMORY, "adapter: out of memory");
  mxl_status st = write_body(path, lora, config, fingerprint, opt, &txt, entries);
  free(entries);
  if (st != MXL_OK) mxl_error_prefix(st, "saving adapter %s: ", path);
  return st;
}

/* ------------------------------------------------------------ parser */

void mxl_adapter_header_destroy(mxl_adapter_header *h) {
  if (!h) return;
  mxl_lora_layout_destroy(h->layout);
  free(h->entries);
  free(h);
}

static mxl_status parse_text(const cJSON *obj, const char *key, char *out, size_t cap,
                             const char *src) {
  const char *s;
  MXL_TRY(mxl_json_opt_string(obj, key, "", &s, src));
  if (strlen(s) >= cap)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: longer than %zu bytes", src, key, cap - 1);
  snprintf(out, cap, "%s", s);
  return MXL_OK;
}

static mxl_status parse_provenance(const cJSON *root, const char *src, mxl_adapter_header *h) {
  char where[512];
  snprintf(where, sizeof where, "%s: provenance", src);
  const cJSON *p;
  MXL_TRY(mxl_json_get_object(root, "provenance", &p, src));
  MXL_TRY(mxl_json_check_unique_keys(p, where));
  MXL_TRY(parse_text(p, "recipe", h->recipe, sizeof h->recipe, where));
  MXL_TRY(parse_text(p, "created_by", h->created_by, sizeof h->created_by, where));
  MXL_TRY(parse_text(p, "created_at", h->created_at, sizeof h->created_at, where));
  MXL_TRY(parse_text(p, "dataset_sha256", h->dataset_sha256, sizeof h->dataset_sha256, where));
  if (h->dataset_sha256[0] && !mxl_sha256_parse_hex(h->dataset_sha256, NULL))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: dataset_sha256: not 64 lowercase hex digits",
                      where);
  MXL_TRY(mxl_json_opt_int_range(p, "steps", 0, MAX_JSON_INT, 0, &h->steps, where));
  return mxl_json_opt_double(p, "final_loss", NAN, &h->final_loss, where);
}

/* lora.targets + lora.layers -> a LoRA config over config->n_layers. */
static mxl_status parse_lora(const cJSON *root, const char *src, int n_layers,
                             mxl_lora_config *lc) {
  char where[512], list_src[600];
  snprintf(where, sizeof where, "%s: lora", src);
  const cJSON *lo, *layers;
  MXL_TRY(mxl_json_get_object(root, "lora", &lo, src));
  MXL_TRY(mxl_json_check_unique_keys(lo, where));
  int64_t rank;
  MXL_TRY(mxl_json_get_int_range(lo, "rank", 1, MXL_LORA_MAX_RANK, &rank, where));
  float alpha;
  MXL_TRY(mxl_json_get_float(lo, "alpha", &alpha, where));
  bool rslora;
  MXL_TRY(mxl_json_get_bool(lo, "rslora", &rslora, where));
  mxl_lora_config_init(lc, (int)rank, alpha);
  lc->rslora = rslora;
  const cJSON *targets = cJSON_GetObjectItemCaseSensitive(lo, "targets");
  if (!cJSON_IsArray(targets) || cJSON_GetArraySize(targets) < 1)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: targets: expected a non-empty array of names, got %s",
                      where, mxl_json_type_name(targets));
  MXL_TRY(mxl_json_get_object(lo, "layers", &layers, where));
  MXL_TRY(mxl_json_check_unique_keys(layers, where));
  unsigned seen = 0;
  int index = 0;
  for (const cJSON *t = targets->child; t; t = t->next, index++) {
    int target = cJSON_IsString(t) ? mxl_lora_target_parse(t->valuestring) : -1;
    if (target < 0)
      return mxl_errorf(MXL_ERR_FORMAT,
                        "%s: targets[%d]: expected one of q, k, v, o, gate_up, down", where,
                        index);
    if (seen & MXL_LORA_BIT(target))
      return mxl_errorf(MXL_ERR_FORMAT, "%s: targets[%d]: \"%s\" listed twice", where, index,
                        t->valuestring);
    seen |= MXL_LORA_BIT(target);
    int64_t list[MXL_MAX_LAYERS];
    size_t count = 0;
    snprintf(list_src, sizeof list_src, "%s: layers", where);
    MXL_TRY(mxl_json_get_int_array(layers, t->valuestring, 0, n_layers - 1, list,
                                   MXL_MAX_LAYERS, &count, list_src));
    if (count == 0)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: empty layer list", list_src, t->valuestring);
    for (size_t i = 0; i < count; i++) {
      if (i && list[i] <= list[i - 1])
        return mxl_errorf(MXL_ERR_FORMAT, "%s: %s[%zu]: layers must be strictly increasing",
                          list_src, t->valuestring, i);
      lc->layers[target][list[i]] = 1;
    }
  }
  for (const cJSON *l = layers->child; l; l = l->next) {
    int target = mxl_lora_target_parse(l->string);
    if (target < 0 || !(seen & MXL_LORA_BIT(target)))
      return mxl_errorf(MXL_ERR_FORMAT, "%s: layers: \"%s\" is not in lora.targets", where,
                        l->string);
  }
  return MXL_OK;
}

static mxl_status parse_entry(const cJSON *item, int i, const mxl_lora_tensor *x,
                              mxl_adapter_dtype dt, const char *src, mxl_adapter_entry *e) {
  char where[600];
  snprintf(where, sizeof where, "%s: tensors[%d]", src, i);
  if (!cJSON_IsObject(item))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: expected an object, got %s", where,
                      mxl_json_type_name(item));
  MXL_TRY(mxl_json_check_unique_keys(item, where));
  const char *name, *dtype, *hex, *encoding;
  MXL_TRY(mxl_json_get_string(item, "name", &name, where));
  if (strcmp(name, x->name))
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: name: \"%.80s\", but the declared targets, rank and layers put "
                      "\"%s\" here",
                      where, name, x->name);
  snprintf(where, sizeof where, "%s: tensors[%d] (%s)", src, i, x->name);
  MXL_TRY(mxl_json_get_string(item, "dtype", &dtype, where));
  if (strcmp(dtype, dtype_names[dt]))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: dtype: \"%.20s\", but the file's dtype is %s",
                      where, dtype, dtype_names[dt]);
  int64_t shape[4];
  size_t ndim = 0;
  MXL_TRY(mxl_json_get_int_array(item, "shape", 1, INT32_MAX, shape, 4, &ndim, where));
  int expert = mxl_lora_target_is_expert(x->target);
  int64_t want[3] = {x->n_experts, x->rows, x->cols};
  const int64_t *w = expert ? want : want + 1;
  size_t want_ndim = expert ? 3 : 2;
  if (ndim != want_ndim || memcmp(shape, w, want_ndim * sizeof *w))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: shape does not match the expected %s", where,
                      expert ? "[E, rows, cols]" : "[rows, cols]");
  e->ndim = (int)ndim;
  memcpy(e->shape, w, want_ndim * sizeof *w);
  int64_t v;
  MXL_TRY(mxl_json_get_int_range(item, "offset", 0, MAX_JSON_INT, &v, where));
  e->offset = (uint64_t)v;
  MXL_TRY(mxl_json_get_int_range(item, "compressed_size", 1, MAX_JSON_INT, &v, where));
  e->compressed_size = (uint64_t)v;
  MXL_TRY(mxl_json_get_int_range(item, "raw_size", 1, MAX_JSON_INT, &v, where));
  e->raw_size = (uint64_t)v;
  /* A zstd block of at most 128 KiB costs at least 4 bytes (an RLE block),
   * so no frame expands more than 32768-fold; this bounds what a small
   * file can make a reader allocate. */
  if (e->raw_size / MXL_ZSTD_MAX_RATIO > e->compressed_size)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: raw_size %" PRIu64 " cannot come from a %" PRIu64 "-byte zstd frame",
                      where, e->raw_size, e->compressed_size);
  if (e->raw_size != (uint64_t)x->count * dtype_bytes(dt))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: raw_size %" PRIu64 " is not %zu elements × %zu bytes",
                      where, e->raw_size, x->count, dtype_bytes(dt));
  MXL_TRY(mxl_json_get_string(item, "sha256", &hex, where));
  if (!mxl_sha256_parse_hex(hex, e->sha256))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: sha256: not 64 lowercase hex digits", where);
  MXL_TRY(mxl_json_get_string(item, "encoding", &encoding, where));
  if (!strcmp(encoding, encoding_names[0])) e->encoding = MXL_ENCODING_ZSTD;
  else if (!strcmp(encoding, encoding_names[1])) e->encoding = MXL_ENCODING_SHUFFLE_ZSTD;
  else
    return mxl_errorf(MXL_ERR_FORMAT, "%s: encoding: \"%.40s\" is not zstd or shuffle+zstd",
                      where, encoding);
  return MXL_OK;
}

/* Payloads lie back to back in directory order and end the file. */
static mxl_status check_payload_places(const mxl_adapter_header *h, const char *src) {
  uint64_t area = h->file_size - h->data_start, expect = 0;
  for (int i = 0; i < h->layout->n_tensors; i++) {
    const mxl_adapter_entry *e = &h->entries[i];
    const char *name = h->layout->tensors[i].name;
    if (e->offset < expect)
      return mxl_errorf(MXL_ERR_FORMAT,
                        "%s: tensors[%d] (%s): payload at %" PRIu64
                        " overlaps the previous one (ends at %" PRIu64 ")",
                        src, i, name, e->offset, expect);
    if (e->offset > expect)
      return mxl_errorf(MXL_ERR_FORMAT,
                        "%s: tensors[%d] (%s): payload at %" PRIu64 " leaves a gap after %" PRIu64,
                        src, i, name, e->offset, expect);
    if (e->compressed_size > area - e->offset)
      return mxl_errorf(MXL_ERR_FORMAT,
                        "%s: tensors[%d] (%s): payload [%" PRIu64 ", +%" PRIu64
                        ") runs past the end of the file (truncated?)",
                        src, i, name, e->offset, e->compressed_size);
    expect = e->offset + e->compressed_size;
  }
  if (expect != area)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %" PRIu64 " bytes after the last payload", src,
                      area - expect);
  return MXL_OK;
}

static mxl_status parse_tensors(const cJSON *root, const char *src, mxl_adapter_header *h) {
  const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(root, "tensors");
  if (!cJSON_IsArray(tensors))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: tensors: expected an array, got %s", src,
                      mxl_json_type_name(tensors));
  int n = cJSON_GetArraySize(tensors);
  if (n != h->layout->n_tensors)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: tensors: %d entries, but the declared targets, rank and layers "
                      "make %d",
                      src, n, h->layout->n_tensors);
  h->entries = calloc((size_t)n, sizeof *h->entries);
  if (!h->entries) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", src);
  int i = 0;
  for (const cJSON *item = tensors->child; item; item = item->next, i++) {
    MXL_TRY(parse_entry(item, i, &h->layout->tensors[i], h->dtype, src, &h->entries[i]));
    h->raw_total += h->entries[i].raw_size;
  }
  return check_payload_places(h, src);
}

static mxl_status parse_root(const cJSON *root, const char *src, mxl_adapter_header *h) {
  if (!cJSON_IsObject(root))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: expected a JSON object, got %s", src,
                      mxl_json_type_name(root));
  MXL_TRY(mxl_json_check_unique_keys(root, src));
  const char *format, *hex, *dtype;
  MXL_TRY(mxl_json_get_string(root, "format", &format, src));
  if (strcmp(format, "mxlora-adapter"))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: format: \"%.40s\", expected \"mxlora-adapter\"",
                      src, format);
  int64_t version;
  MXL_TRY(mxl_json_get_int_range(root, "format_version", 0, UINT32_MAX, &version, src));
  if (version != h->version)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: format_version %" PRId64 " disagrees with the file "
                      "prefix's version %u", src, version, h->version);
  char where[512];
  snprintf(where, sizeof where, "%s: base_model", src);
  const cJSON *base, *config;
  MXL_TRY(mxl_json_get_object(root, "base_model", &base, src));
  MXL_TRY(mxl_json_check_unique_keys(base, where));
  MXL_TRY(mxl_json_get_string(base, "fingerprint", &hex, where));
  if (!mxl_sha256_parse_hex(hex, h->fingerprint))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: fingerprint: not 64 lowercase hex digits", where);
  mxl_sha256_hex(h->fingerprint, h->fingerprint_hex);
  MXL_TRY(mxl_json_get_object(base, "config", &config, where));
  snprintf(where, sizeof where, "%s: base_model: config", src);
  MXL_TRY(mxl_json_check_unique_keys(config, where));
  MXL_TRY(mxl_fingerprint_config_from_json(config, &h->config, where));
  MXL_TRY(mxl_json_get_string(root, "dtype", &dtype, src));
  if (!strcmp(dtype, "F32")) h->dtype = MXL_ADAPTER_F32;
  else if (!strcmp(dtype, "BF16")) h->dtype = MXL_ADAPTER_BF16;
  else return mxl_errorf(MXL_ERR_FORMAT, "%s: dtype: \"%.20s\" is not F32 or BF16", src, dtype);
  mxl_lora_config lc;
  MXL_TRY(parse_lora(root, src, h->config.n_layers, &lc));
  MXL_TRY(parse_provenance(root, src, h));
  mxl_status st = mxl_lora_layout_create(&h->config, &lc, &h->layout);
  if (st != MXL_OK) return mxl_error_prefix(MXL_ERR_FORMAT, "%s: ", src);
  return parse_tensors(root, src, h);
}

mxl_status mxl_adapter_header_parse(const uint8_t *data, size_t size, const char *source,
                                    mxl_adapter_header **out) {
  *out = NULL;
  mxl_adapter_header *h = calloc(1, sizeof *h);
  if (!h) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", source);
  mxl_container c;
  mxl_status st = mxl_container_parse(&mxl_adapter_container, data, size, source, &c);
  cJSON *root = NULL;
  char src[400];
  snprintf(src, sizeof src, "%s: header", source);
  if (st == MXL_OK) {
    h->version = c.version;
    h->header_checked = c.header_checked;
    h->header_start = (uint64_t)((const uint8_t *)c.header - data);
    h->header_bytes = c.header_bytes;
    h->data_start = c.data_start;
    h->file_size = size;
    st = mxl_json_parse(c.header, c.header_bytes, src, &root);
  }
  if (st == MXL_OK) st = parse_root(root, src, h);
  cJSON_Delete(root);
  if (st != MXL_OK) {
    mxl_adapter_header_destroy(h);
    return st;
  }
  *out = h;
  return MXL_OK;
}

/* ------------------------------------------------------------ payloads */

mxl_status mxl_adapter_decode(const mxl_adapter_header *h, const uint8_t *data, int i,
                              float *dst, const char *source) {
  const mxl_adapter_entry *e = &h->entries[i];
  const mxl_lora_tensor *x = &h->layout->tensors[i];
  const uint8_t *payload = data + h->data_start + e->offset;
  size_t csize = (size_t)e->compressed_size, raw = (size_t)e->raw_size;
  unsigned long long frame = ZSTD_getFrameContentSize(payload, csize);
  if (frame == ZSTD_CONTENTSIZE_ERROR || frame == ZSTD_CONTENTSIZE_UNKNOWN)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: payload is not a zstd frame with a known size",
                      source, x->name);
  if (frame != raw)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: zstd frame holds %llu bytes, directory says %zu",
                      source, x->name, frame, raw);
  /* F32 without shuffle decompresses straight into dst; otherwise through
   * scratch: packed[raw] (as stored), bytes[raw] (unshuffled). */
  int direct = h->dtype == MXL_ADAPTER_F32 && e->encoding == MXL_ENCODING_ZSTD;
  uint8_t *packed = direct ? (uint8_t *)dst : malloc(raw);
  uint8_t *bytes = NULL;
  if (!packed)
    return mxl_errorf(MXL_ERR_MEMORY, "%s: %s: out of memory for %zu bytes", source, x->name,
                      raw);
  mxl_status st = MXL_OK;
  size_t got = ZSTD_decompress(packed, raw, payload, csize);
  if (ZSTD_isError(got))
    st = mxl_errorf(MXL_ERR_FORMAT, "%s: %s: corrupt payload: %s", source, x->name,
                    ZSTD_getErrorName(got));
  else if (got != raw)
    st = mxl_errorf(MXL_ERR_FORMAT, "%s: %s: payload decompressed to %zu bytes, expected %zu",
                    source, x->name, got, raw);
  size_t width = dtype_bytes(h->dtype);
  if (st == MXL_OK && e->encoding == MXL_ENCODING_SHUFFLE_ZSTD) {
    bytes = h->dtype == MXL_ADAPTER_F32 ? (uint8_t *)dst : malloc(raw);
    if (!bytes) st = mxl_errorf(MXL_ERR_MEMORY, "%s: %s: out of memory", source, x->name);
    else mxl_byte_unshuffle(bytes, packed, x->count, width);
  } else {
    bytes = packed;
  }
  if (st == MXL_OK) {
    uint8_t digest[MXL_SHA256_SIZE];
    mxl_sha256(bytes, raw, digest);
    if (memcmp(digest, e->sha256, sizeof digest))
      st = mxl_errorf(MXL_ERR_FORMAT, "%s: %s: SHA-256 of the decompressed bytes does not "
                      "match the directory (corrupted file)", source, x->name);
  }
  if (st == MXL_OK && h->dtype == MXL_ADAPTER_BF16) {
    const uint16_t *v = (const uint16_t *)(const void *)bytes;
    for (size_t j = 0; j < x->count; j++) dst[j] = mxl_bf16_to_f32(v[j]);
  }
  if (bytes != packed && bytes != (uint8_t *)dst) free(bytes);
  if (packed != (uint8_t *)dst) free(packed);
  return st;
}

/* ------------------------------------------------------------ base check */

mxl_status mxl_adapter_check_base_of(const mxl_adapter_header *h, const mxl_config *config,
                                     const uint8_t fingerprint[MXL_SHA256_SIZE],
                                     const char *source) {
  if (!memcmp(h->fingerprint, fingerprint, MXL_SHA256_SIZE)) return MXL_OK;
  char model_hex[MXL_SHA256_HEX_SIZE], diff[1024];
  mxl_sha256_hex(fingerprint, model_hex);
  int n = mxl_fingerprint_config_diff(&h->config, config, diff, sizeof diff);
  if (n)
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "%s: trained on another base model: adapter base fingerprint %s, this "
                      "model %s; config differs (adapter vs model): %s",
                      source, h->fingerprint_hex, model_hex, diff);
  return mxl_errorf(MXL_ERR_ARGUMENT,
                    "%s: trained on another base model: adapter base fingerprint %s, this "
                    "model %s; same architecture, different weights (norms or router)",
                    source, h->fingerprint_hex, model_hex);
}
