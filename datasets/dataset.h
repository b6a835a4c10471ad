/* Internal helpers shared by the dataset loader, the renderer entry points
 * and the batcher. */
#ifndef MXL_DATASETS_DATASET_H
#define MXL_DATASETS_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "datasets/tokenizer.h"
#include "mxlora/data.h"

/* Parses one JSON value from s[0..n): UTF-8 is checked, a "\u0000" escape
 * (which would cut a C string short) is refused, trailing bytes other than
 * whitespace are an error. Errors are prefixed with `where`. */
mxl_status mxl_parse_json_text(const char *s, size_t n, const char *where, cJSON **out);

/* Renders a parsed sample (object or bare message array) into ids and
 * flags appended to *ids / *flags (flags_cap as in mxl_harmony_tokenize);
 * with tok == NULL only fills `text_out` (the rendered text and per-byte
 * flags, optional: may be NULL). *kind_out tells chat from raw text. */
mxl_status mxl_render_sample(const cJSON *item, const char *where, const mxl_tokenizer *tok,
                             const mxl_render_options *opts, mxl_ids *ids, uint8_t **flags,
                             size_t *flags_cap, mxl_rendered *text_out,
                             mxl_sample_kind *kind_out);

/* Fisher-Yates shuffle of idx[0..n) with a generator seeded from `seed`. */
void mxl_shuffle_u32(uint32_t *idx, size_t n, uint64_t seed);

#endif
