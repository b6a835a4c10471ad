#include "train/run_match.h"

#include <stdio.h>
#include <string.h>

#include "adapters/adapter_file.h"
#include "core/status.h"

cJSON *mxl_run_lora_json(const mxl_lora_config *lc, int n_layers, const char *adapter_dtype) {
  cJSON *o = cJSON_CreateObject();
  char targets[4096];
  mxl_adapter_targets_text(lc, n_layers, targets, sizeof targets);
  cJSON_AddNumberToObject(o, "rank", lc->rank);
  cJSON_AddNumberToObject(o, "alpha", lc->alpha);
  cJSON_AddBoolToObject(o, "rslora", lc->rslora != 0);
  cJSON_AddStringToObject(o, "targets", targets);
  if (adapter_dtype) cJSON_AddStringToObject(o, "adapter_dtype", adapter_dtype);
  return o;
}

/* The value as the user writes it in a recipe. */
static void value_text(const cJSON *v, char *buf, size_t cap) {
  if (!v) snprintf(buf, cap, "nothing");
  else if (cJSON_IsString(v)) snprintf(buf, cap, "\"%s\"", v->valuestring);
  else if (cJSON_IsBool(v)) snprintf(buf, cap, "%s", cJSON_IsTrue(v) ? "true" : "false");
  else if (cJSON_IsNumber(v)) snprintf(buf, cap, "%g", v->valuedouble);
  else snprintf(buf, cap, "(%s)", "unreadable");
}

static int same_value(const cJSON *a, const cJSON *b) {
  if (!a || !b) return 0;
  if (cJSON_IsNumber(a) && cJSON_IsNumber(b)) return (float)a->valuedouble == (float)b->valuedouble;
  return cJSON_Compare(a, b, 1);
}

mxl_status mxl_run_lora_match(const cJSON *saved, const cJSON *now, const char *source,
                              const char *hint) {
  const cJSON *saved_lora = cJSON_IsObject(saved) ? saved : NULL;
  for (const cJSON *v = now->child; v; v = v->next) {
    const cJSON *s = saved_lora ? cJSON_GetObjectItemCaseSensitive(saved_lora, v->string) : NULL;
    if (same_value(s, v)) continue;
    char was[4200], is[4200];
    value_text(s, was, sizeof was);
    value_text(v, is, sizeof is);
    const char *prefix = strcmp(v->string, "adapter_dtype") ? "lora." : "";
    if (!s)
      return mxl_errorf(MXL_ERR_STATE, "%s: does not record %s%s (written by an older mxlora?); "
                        "%s", source, prefix, v->string, hint);
    return mxl_errorf(MXL_ERR_STATE, "%s: saved with %s%s %s, this run has %s; %s", source,
                      prefix, v->string, was, is, hint);
  }
  return MXL_OK;
}

mxl_status mxl_run_match_string(const cJSON *saved, const char *key, const char *now,
                                const char *what, const char *source, const char *hint) {
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(saved, key);
  if (!cJSON_IsString(s))
    return mxl_errorf(MXL_ERR_STATE, "%s: does not record the %s (written by an older mxlora?); "
                      "%s", source, what, hint);
  if (!strcmp(s->valuestring, now)) return MXL_OK;
  return mxl_errorf(MXL_ERR_STATE, "%s: saved for another %s (%s %.16s..., this run %.16s...); %s",
                    source, what, key, s->valuestring, now, hint);
}
