/* The base-model fingerprint an adapter records, so that it loads on the
 * model it was trained on (whichever of the three layouts holds it) and is
 * refused on any other.
 *
 * fingerprint = SHA-256 of
 *   1. the canonical config text (mxl_fingerprint_config_text): one
 *      "name=value\n" line per field that affects shapes or math, integers
 *      in decimal, floats with 5 significant digits ("%.5g", so that a
 *      value re-derived in float32 by a layout that stores it differently
 *      still reads the same), then "layer_types=" one S/F per layer;
 *   2. for each layer l in order: input norm gain [H], attention sinks [nh],
 *      post-attention norm gain [H], router weight [E, H], router bias [E];
 *      then the final norm gain [H]; all as little-endian bf16 bytes.
 * Those tensors are stored unchanged in the HF root, original/ and
 * metal/model.bin (docs/gpt-oss.md §3.2, §4.3: only q/k rows and expert scales are
 * transformed in metal), so all three layouts give the same digest. The
 * vocabulary size is left out on purpose: metal keeps only 200014 rows. */
#ifndef MXL_ADAPTERS_FINGERPRINT_H
#define MXL_ADAPTERS_FINGERPRINT_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "core/sha256.h"
#include "model/model.h"

enum { MXL_FINGERPRINT_TEXT_SIZE = 1024 };

/* Writes the canonical config text (NUL-terminated, at most
 * MXL_FINGERPRINT_TEXT_SIZE bytes with the NUL). */
void mxl_fingerprint_config_text(const mxl_config *c, char text[MXL_FINGERPRINT_TEXT_SIZE]);

/* Digest of config c and the frozen tensors of w (host memory). Fails with
 * MXL_ERR_ARGUMENT naming the missing tensor when one is NULL. */
mxl_status mxl_fingerprint_compute(const mxl_config *c, const mxl_weights *w,
                                   uint8_t digest[MXL_SHA256_SIZE]);

/* The same for an opened model. */
mxl_status mxl_model_fingerprint(const struct mxl_model *m, uint8_t digest[MXL_SHA256_SIZE]);

/* The fingerprinted config fields as a JSON object (for adapter headers):
 * {"n_layers": 24, ..., "layer_types": "SFSF..."}; NULL when out of memory. */
cJSON *mxl_fingerprint_config_json(const mxl_config *c);

/* Reads such an object back into the matching fields of *out (the others
 * are zeroed); every field is required and range-checked, and errors name
 * it under `source`. */
mxl_status mxl_fingerprint_config_from_json(const cJSON *obj, mxl_config *out,
                                             const char *source);

/* Lists the fingerprinted fields on which a and b differ, as
 * "n_experts 32 vs 128, hidden 2880 vs 1024"; returns the number of
 * differences (0: the canonical texts are equal). */
int mxl_fingerprint_config_diff(const mxl_config *a, const mxl_config *b, char *buf,
                                size_t cap);

#endif
