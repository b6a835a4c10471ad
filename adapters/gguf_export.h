/* LoRA sets as GGUF LoRA adapters for llama.cpp (and Ollama, LM Studio)
 * with a gpt-oss base; gguf_export.c lists the facts it follows. */
#ifndef MXL_ADAPTERS_GGUF_EXPORT_H
#define MXL_ADAPTERS_GGUF_EXPORT_H

#include "adapters/lora.h"
#include "mxlora.h"

#define MXL_GGUF_ARCH "gpt-oss" /* llama.cpp's LLM_ARCH_OPENAI_MOE */

/* Writes `lora` to `path` (atomically) as F32 tensors. fingerprint_hex
 * (may be NULL) is recorded as mxlora.base_fingerprint. */
mxl_status mxl_gguf_export(const mxl_lora *lora, const char *fingerprint_hex,
                           const mxl_gguf_export_options *opt, const char *path);

#endif
