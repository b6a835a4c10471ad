/* original/: OpenAI's reference checkpoint (block.N.* names, fused qkv),
 * with dtypes.json checked against what the safetensors files store. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/status.h"
#include "model/checkpoint.h"

enum { MXL_DTYPES_JSON_MAX = 16 << 20 };

/* Every tensor must be listed with the label its kind implies (BF16, FP4
 * for blocks, UE8 for scales), and every listed name must exist. */
static mxl_status check_dtypes(const mxl_safetensors *st, const cJSON *root, const char *path) {
  if (!cJSON_IsObject(root)) return mxl_errorf(MXL_ERR_FORMAT, "%s: not a JSON object", path);
  const cJSON *item;
  int listed = 0;
  cJSON_ArrayForEach(item, root) {
    listed++;
    const mxl_st_tensor *t = mxl_safetensors_find(st, item->string);
    if (!t)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: %s is listed but no such tensor is in the weights",
                        path, item->string);
    if (!cJSON_IsString(item))
      return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: expected a dtype string", path, item->string);
    mxl_tensor_kind kind;
    int layer;
    const char *want = mxl_tensor_name_parse(t->name, &kind, &layer)
                           ? mxl_tensor_kind_original_label(kind)
                           : mxl_dtype_name(t->dtype);
    if (strcmp(item->valuestring, want) != 0)
      return mxl_errorf(MXL_ERR_FORMAT,
                        "%s: %s is \"%s\", but the safetensors file stores it as %s (\"%s\" "
                        "expected)",
                        path, item->string, item->valuestring, mxl_dtype_name(t->dtype), want);
  }
  if (listed != st->n_tensors) {
    for (int i = 0; i < st->n_tensors; i++)
      if (!cJSON_GetObjectItemCaseSensitive(root, st->tensors[i].name))
        return mxl_errorf(MXL_ERR_FORMAT, "%s: tensor %s is not listed", path,
                          st->tensors[i].name);
  }
  return MXL_OK;
}

mxl_status mxl_checkpoint_read_original(mxl_model *m, const char *weights,
                                        const char *dtypes_json) {
  MXL_TRY(mxl_checkpoint_read_original_tensors(m, weights));
  if (!dtypes_json) return MXL_OK;
  cJSON *root = NULL;
  MXL_TRY(mxl_json_parse_file(dtypes_json, MXL_DTYPES_JSON_MAX, &root));
  mxl_status st = mxl_json_check_unique_keys(root, dtypes_json);
  if (st == MXL_OK) st = check_dtypes(m->st, root, dtypes_json);
  cJSON_Delete(root);
  return st;
}
