/* Private to repo/inspect*.c: the report parts for PEFT adapter folders,
 * merged model folders and GGUF files (inspect_more.c), added to the JSON
 * tree that inspect.c builds and renders. */
#ifndef MXL_REPO_INSPECT_H
#define MXL_REPO_INSPECT_H

#include <cjson/cJSON.h>

#include "core/strbuf.h"
#include "mxlora.h"

/* report.peft when dir holds adapter_config.json. */
void mxl_inspect_add_peft(const char *dir, cJSON *report);
/* report.merged when dir holds mxlora_merge_report.json. */
void mxl_inspect_add_merge(const char *dir, cJSON *report);
/* report.gguf for a .gguf file (its problems go into report.gguf.check). */
mxl_status mxl_inspect_gguf(const char *path, cJSON *report);
/* The problems those parts found (an unreadable PEFT folder or GGUF file):
 * up to cap messages into what; returns their count. */
int mxl_inspect_more_problems(const cJSON *report, const char **what, int cap);
/* The text of those parts. */
void mxl_inspect_text_more(mxl_strbuf *b, const cJSON *report);

#endif
