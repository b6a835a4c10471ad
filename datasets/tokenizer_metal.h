/* Private to the tokenizer files: the special-token UUIDs of metal/model.bin
 * (docs/gpt-oss.md §4.2) and the tiktoken tokenizer UUID (docs/gpt-oss.md §4.1, offset 116). */
#ifndef MXL_DATASETS_TOKENIZER_METAL_H
#define MXL_DATASETS_TOKENIZER_METAL_H

#include <stdint.h>

extern const uint8_t mxl_metal_tiktoken_uuid[16];

/* The token name of a known special-token UUID ("<|start|>"), or NULL. */
const char *mxl_metal_special_name(const uint8_t uuid[16]);
/* The UUID of a special-token name, or NULL if metal has none for it. */
const uint8_t *mxl_metal_special_uuid(const char *name);

#endif
