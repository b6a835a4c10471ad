/* What a checkpoint (resume) or an adapter (init_adapter) must share with
 * the run that continues from it, and the messages that name the setting
 * that differs. */
#ifndef MXL_TRAIN_RUN_MATCH_H
#define MXL_TRAIN_RUN_MATCH_H

#include <cjson/cJSON.h>

#include "adapters/lora.h"

/* {"rank": 8, "alpha": 16, "rslora": false, "targets": "q:0-2 k:0-2 ...",
 * "adapter_dtype": "f32"}; dtype is left out when NULL. NULL when out of
 * memory. */
cJSON *mxl_run_lora_json(const mxl_lora_config *lc, int n_layers, const char *adapter_dtype);

/* Fails with MXL_ERR_STATE naming the first setting of `now` that `saved`
 * records differently (or does not record): "SOURCE: saved with lora.rank
 * 8, this run has 12; HINT". */
mxl_status mxl_run_lora_match(const cJSON *saved, const cJSON *now, const char *source,
                              const char *hint);

/* Compares one recorded string (a fingerprint, a data hash) with the
 * run's: "SOURCE: saved for another WHAT (KEY abc..., this run def...)". */
mxl_status mxl_run_match_string(const cJSON *saved, const char *key, const char *now,
                                const char *what, const char *source, const char *hint);

#endif
