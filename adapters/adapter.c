/* The public adapter API (include/mxlora/adapter.h): an opened adapter file
 * is its read-only mapping plus the validated header. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "adapters/adapter_file.h"
#include "adapters/fingerprint.h"
#include "adapters/gguf_export.h"
#include "adapters/peft.h"
#include "core/fileio.h"
#include "core/json.h"
#include "core/status.h"
#include "core/strbuf.h"

struct mxl_adapter {
  mxl_mapping map;
  mxl_adapter_header *h;
  mxl_adapter_info info;
  char targets[MXL_LORA_N_TARGETS * 4 * MXL_MAX_LAYERS];
};

static void fill_info(mxl_adapter *a) {
  const mxl_adapter_header *h = a->h;
  mxl_adapter_info *info = &a->info;
  const mxl_lora_layout *lay = h->layout;
  mxl_adapter_targets_text(&lay->cfg, lay->n_layers, a->targets, sizeof a->targets);
  info->path = a->map.path;
  info->format_version = h->version;
  info->header_checksum = h->header_checked;
  info->fingerprint = h->fingerprint_hex;
  info->base_layers = h->config.n_layers;
  info->base_experts = h->config.n_experts;
  info->base_hidden = h->config.hidden;
  info->rank = lay->cfg.rank;
  info->alpha = lay->cfg.alpha;
  info->scaling = lay->scaling;
  info->rslora = lay->cfg.rslora;
  info->targets = a->targets;
  info->dtype = h->dtype;
  info->n_tensors = lay->n_tensors;
  info->n_params = lay->n_params;
  info->raw_bytes = h->raw_total;
  info->file_bytes = h->file_size;
  info->recipe = h->recipe;
  info->dataset_sha256 = h->dataset_sha256;
  info->created_by = h->created_by;
  info->created_at = h->created_at;
  info->steps = h->steps;
  info->final_loss = h->final_loss;
}

mxl_status mxl_adapter_open(const char *path, mxl_adapter **adapter_out) {
  *adapter_out = NULL;
  mxl_adapter *a = calloc(1, sizeof *a);
  if (!a) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  mxl_status st = mxl_mapping_open(path, &a->map);
  if (st != MXL_OK) {
    free(a);
    return st;
  }
  st = mxl_adapter_header_parse(a->map.data, a->map.size, path, &a->h);
  if (st != MXL_OK) {
    mxl_adapter_close(a);
    return st;
  }
  fill_info(a);
  if (!a->h->header_checked)
    mxl_warnf("%s: adapter format version %u: its header has no checksum, so an edit to its "
              "settings (alpha, rank, targets) would go unnoticed; adapters written by this "
              "mxlora have one",
              path, a->h->version);
  *adapter_out = a;
  return MXL_OK;
}

void mxl_adapter_close(mxl_adapter *a) {
  if (!a) return;
  mxl_adapter_header_destroy(a->h);
  mxl_mapping_close(&a->map);
  free(a);
}

const mxl_adapter_info *mxl_adapter_get_info(const mxl_adapter *a) { return &a->info; }

const mxl_adapter_header *mxl_adapter_header_of(const mxl_adapter *a) { return a->h; }

static size_t max_tensor_count(const mxl_lora_layout *lay) {
  size_t m = 0;
  for (int i = 0; i < lay->n_tensors; i++)
    if (lay->tensors[i].count > m) m = lay->tensors[i].count;
  return m;
}

mxl_status mxl_adapter_verify(const mxl_adapter *a) {
  const mxl_lora_layout *lay = a->h->layout;
  float *buf = malloc(max_tensor_count(lay) * sizeof *buf);
  if (!buf) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", a->map.path);
  mxl_status st = MXL_OK;
  for (int i = 0; i < lay->n_tensors && st == MXL_OK; i++)
    st = mxl_adapter_decode(a->h, a->map.data, i, buf, a->map.path);
  free(buf);
  return st;
}

mxl_status mxl_adapter_check_model(const mxl_adapter *a, const mxl_model *model) {
  uint8_t digest[MXL_SHA256_SIZE];
  MXL_TRY(mxl_model_fingerprint(model, digest));
  return mxl_adapter_check_base_of(a->h, &model->config, digest, a->map.path);
}

mxl_status mxl_adapter_load_on(const mxl_adapter *a, const struct mxl_model *model,
                               mxl_backend *be, mxl_lora **out) {
  *out = NULL;
  MXL_TRY(mxl_adapter_check_model(a, model));
  const mxl_lora_layout *want = a->h->layout;
  mxl_lora *lora = NULL;
  MXL_TRY(mxl_lora_create(&model->config, &want->cfg, be, &lora));
  /* Same fingerprint means same config, hence the same layout; checked
   * anyway because the decode below trusts the counts. */
  mxl_status st = MXL_OK;
  if (lora->layout->n_tensors != want->n_tensors || lora->layout->n_params != want->n_params)
    st = mxl_errorf(MXL_ERR_STATE, "%s: the model's LoRA layout differs from the file's",
                    a->map.path);
  float *buf = NULL;
  if (st == MXL_OK && be) {
    buf = malloc(max_tensor_count(want) * sizeof *buf);
    if (!buf) st = mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", a->map.path);
  }
  for (int i = 0; i < want->n_tensors && st == MXL_OK; i++) {
    float *dst = be ? buf : lora->params + lora->layout->tensors[i].offset;
    st = mxl_adapter_decode(a->h, a->map.data, i, dst, a->map.path);
    if (st == MXL_OK && be) mxl_lora_tensor_write(lora, i, buf);
  }
  free(buf);
  if (st != MXL_OK) {
    mxl_lora_destroy(lora);
    return st;
  }
  *out = lora;
  return MXL_OK;
}

mxl_status mxl_adapter_load(const mxl_adapter *a, const mxl_model *model, mxl_lora **lora_out) {
  return mxl_adapter_load_on(a, model, NULL, lora_out);
}

mxl_status mxl_adapter_save(const char *path, const mxl_lora *lora, const mxl_model *model,
                            const mxl_adapter_save_options *opt) {
  uint8_t digest[MXL_SHA256_SIZE];
  MXL_TRY(mxl_model_fingerprint(model, digest));
  return mxl_adapter_write(path, lora, &model->config, digest, opt);
}

mxl_status mxl_adapter_read_lora(const mxl_adapter *a, mxl_lora **out) {
  *out = NULL;
  mxl_lora *lora = NULL;
  MXL_TRY(mxl_lora_create(&a->h->config, &a->h->layout->cfg, NULL, &lora));
  mxl_status st = MXL_OK;
  for (int i = 0; i < lora->layout->n_tensors && st == MXL_OK; i++)
    st = mxl_adapter_decode(a->h, a->map.data, i, lora->params + lora->layout->tensors[i].offset,
                            a->map.path);
  if (st != MXL_OK) {
    mxl_lora_destroy(lora);
    return st;
  }
  *out = lora;
  return MXL_OK;
}

mxl_status mxl_adapter_export_peft(const mxl_adapter *a, const char *dir) {
  mxl_lora *lora = NULL;
  MXL_TRY(mxl_adapter_read_lora(a, &lora));
  mxl_status st = mxl_peft_export(lora, a->h->dtype, dir);
  mxl_lora_destroy(lora);
  if (st != MXL_OK) mxl_error_prefix(st, "exporting %s to PEFT: ", a->map.path);
  return st;
}

mxl_status mxl_adapter_export_gguf(const mxl_adapter *a, const char *path,
                                   const mxl_gguf_export_options *opt) {
  mxl_lora *lora = NULL;
  MXL_TRY(mxl_adapter_read_lora(a, &lora));
  mxl_status st = mxl_gguf_export(lora, a->h->fingerprint_hex, opt, path);
  mxl_lora_destroy(lora);
  if (st != MXL_OK) mxl_error_prefix(st, "exporting %s to GGUF: ", a->map.path);
  return st;
}

mxl_status mxl_adapter_import_peft(const char *dir, const mxl_model *model, mxl_lora **lora_out) {
  return mxl_peft_import(dir, &model->config, lora_out);
}

mxl_status mxl_adapter_import_peft_report(const char *dir, const mxl_model *model,
                                          mxl_lora **lora_out, char **report_out) {
  return mxl_peft_import_report(dir, &model->config, lora_out, report_out);
}

/* ------------------------------------------------------------ describe */

static const char *or_dash(const char *s) { return s && s[0] ? s : "-"; }

static void describe_text(const mxl_adapter *a, mxl_strbuf *b) {
  const mxl_adapter_info *in = &a->info;
  const mxl_adapter_header *h = a->h;
  mxl_strbuf_printf(b, "adapter: %s\n", in->path);
  mxl_strbuf_printf(b, "format: mxlora adapter v%u%s, %" PRIu64 " bytes (payload %" PRIu64
                       " raw bytes, compressed to %.1f%%)\n",
                    in->format_version, in->header_checksum ? "" : " (header not checksummed)",
                    in->file_bytes, in->raw_bytes,
                    in->raw_bytes ? 100.0 * (double)(in->file_bytes - h->data_start) /
                                        (double)in->raw_bytes
                                  : 0.0);
  mxl_strbuf_printf(b, "base model: fingerprint %s (%d layers, %d experts, hidden %d)\n",
                    in->fingerprint, in->base_layers, in->base_experts, in->base_hidden);
  mxl_strbuf_printf(b,
                    "lora: rank %d, alpha %g, scaling %g%s, %" PRIu64 " parameters, %s payloads\n",
                    in->rank, in->alpha, in->scaling, in->rslora ? " (rsLoRA)" : "", in->n_params,
                    in->dtype == MXL_ADAPTER_BF16 ? "BF16" : "F32");
  mxl_strbuf_printf(b, "targets: %s\n", in->targets);
  mxl_strbuf_printf(b, "provenance: recipe %s, steps %" PRId64 ", final loss ",
                    or_dash(in->recipe), in->steps);
  if (isfinite(in->final_loss)) mxl_strbuf_printf(b, "%.6g", in->final_loss);
  else mxl_strbuf_printf(b, "-");
  mxl_strbuf_printf(b, ", dataset sha256 %s\n", or_dash(in->dataset_sha256));
  mxl_strbuf_printf(b, "created: %s by %s\n", or_dash(in->created_at), or_dash(in->created_by));
  mxl_strbuf_printf(b, "tensors: %d\n", in->n_tensors);
  for (int i = 0; i < h->layout->n_tensors; i++) {
    const mxl_adapter_entry *e = &h->entries[i];
    const mxl_lora_tensor *x = &h->layout->tensors[i];
    char shape[64];
    if (e->ndim == 3)
      snprintf(shape, sizeof shape, "[%d, %d, %d]", x->n_experts, x->rows, x->cols);
    else snprintf(shape, sizeof shape, "[%d, %d]", x->rows, x->cols);
    mxl_strbuf_printf(b, "  %-36s %-16s %-12s %10" PRIu64 " -> %10" PRIu64 " bytes\n", x->name,
                      shape, e->encoding == MXL_ENCODING_SHUFFLE_ZSTD ? "shuffle+zstd" : "zstd",
                      e->raw_size, e->compressed_size);
  }
}

/* JSON: the stored header itself (re-parsed), with the file's path and size. */
static mxl_status describe_json(const mxl_adapter *a, char **out) {
  cJSON *root = NULL;
  MXL_TRY(mxl_json_parse((const char *)a->map.data + a->h->header_start,
                         a->h->header_bytes, a->map.path, &root));
  cJSON *file = cJSON_CreateObject();
  cJSON_AddStringToObject(file, "path", a->map.path);
  cJSON_AddNumberToObject(file, "bytes", (double)a->h->file_size);
  cJSON_AddNumberToObject(file, "raw_bytes", (double)a->h->raw_total);
  cJSON_AddNumberToObject(file, "parameters", (double)a->h->layout->n_params);
  cJSON_AddNumberToObject(file, "scaling", a->h->layout->scaling);
  cJSON_AddItemToObject(root, "file", file);
  *out = cJSON_Print(root);
  cJSON_Delete(root);
  if (!*out) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", a->map.path);
  return MXL_OK;
}

mxl_status mxl_adapter_describe(const mxl_adapter *a, int as_json, char **report_out) {
  *report_out = NULL;
  if (as_json) return describe_json(a, report_out);
  mxl_strbuf b = {0};
  describe_text(a, &b);
  *report_out = mxl_strbuf_take(&b);
  if (!*report_out) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", a->map.path);
  return MXL_OK;
}
