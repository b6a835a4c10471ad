/* Typed reads of JSON fields over cJSON, with errors that name the source
 * and the field:
 *
 *   int hidden;
 *   MXL_TRY(mxl_json_get_int(cfg, "hidden_size", &hidden, "config.json"));
 *   -> "config.json: hidden_size: expected an integer, got string"
 *
 * `source` is the prefix of every message: a file name, or a file name and
 * the path of the enclosing object ("config.json: rope_scaling"), which
 * gives "config.json: rope_scaling: factor: ...". Keys are matched exactly
 * (case-sensitive). Getters leave *out untouched on failure (arrays may be
 * partly written). Optional variants (mxl_json_opt_*) store the default
 * when the key is absent or null, and fail like the getters when it is
 * present with the wrong type. */
#ifndef MXL_CORE_JSON_H
#define MXL_CORE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "mxlora.h"

/* Parses `n` bytes of JSON text (no NUL needed). Trailing non-space bytes
 * are an error. A syntax error names the line, column and byte offset:
 * "config.json: line 3, column 7 (byte 41): JSON syntax error". The caller
 * frees *out with cJSON_Delete. */
mxl_status mxl_json_parse(const char *text, size_t n, const char *source, cJSON **out);

/* What went wrong where cJSON stopped (at text[offset]) on text it refused:
 * "JSON nesting too deep (more than 1000 levels of arrays and objects)"
 * when that many arrays and objects are open there (cJSON's limit),
 * otherwise "JSON syntax error". For parsers that call cJSON themselves. */
const char *mxl_json_error_name(const char *text, size_t n, size_t offset);

/* The offset of the first "\u0000" escape in JSON text (cJSON would
 * decode it into a C string cut short there), or SIZE_MAX. */
size_t mxl_json_nul_escape(const char *s, size_t n);

/* Reads and parses a whole file, refusing files over max_bytes. */
mxl_status mxl_json_parse_file(const char *path, size_t max_bytes, cJSON **out);

/* "string", "number", "object", ... for messages; "missing" for NULL. */
const char *mxl_json_type_name(const cJSON *item);

/* Fails if `obj` holds the same key twice (cJSON keeps both copies and
 * lookups would silently see only the first). Not recursive. */
mxl_status mxl_json_check_unique_keys(const cJSON *obj, const char *source);
/* The same for `item` and every object inside it; the message names the
 * path: "data.jsonl:3: messages[1].role: duplicate key". */
mxl_status mxl_json_check_unique_keys_deep(const cJSON *item, const char *source);

/* ---- required fields: a missing key is an error ---- */

/* An integral number representable in an int. */
mxl_status mxl_json_get_int(const cJSON *obj, const char *key, int *out, const char *source);
/* An integral number in [lo, hi] (both must lie within ±2^53, where doubles
 * hold integers exactly). */
mxl_status mxl_json_get_int_range(const cJSON *obj, const char *key, int64_t lo, int64_t hi,
                                  int64_t *out, const char *source);
/* A finite number. */
mxl_status mxl_json_get_double(const cJSON *obj, const char *key, double *out,
                               const char *source);
/* A finite number within float range. */
mxl_status mxl_json_get_float(const cJSON *obj, const char *key, float *out,
                              const char *source);
mxl_status mxl_json_get_bool(const cJSON *obj, const char *key, bool *out, const char *source);
/* The string stays owned by the cJSON tree. */
mxl_status mxl_json_get_string(const cJSON *obj, const char *key, const char **out,
                               const char *source);
mxl_status mxl_json_get_object(const cJSON *obj, const char *key, const cJSON **out,
                               const char *source);
/* An array of at most `capacity` integers, each in [lo, hi]; *count gets
 * its length. Elements are named in errors: "shape[2]: ...". */
mxl_status mxl_json_get_int_array(const cJSON *obj, const char *key, int64_t lo, int64_t hi,
                                  int64_t *out, size_t capacity, size_t *count,
                                  const char *source);

/* Checks an array element or any value already in hand; `what` names it in
 * the message ("shape[2]"). */
mxl_status mxl_json_int_value(const cJSON *item, int64_t lo, int64_t hi, int64_t *out,
                              const char *what, const char *source);

/* ---- optional fields: absent or null gives the default ---- */

mxl_status mxl_json_opt_int(const cJSON *obj, const char *key, int def, int *out,
                            const char *source);
mxl_status mxl_json_opt_int_range(const cJSON *obj, const char *key, int64_t lo, int64_t hi,
                                  int64_t def, int64_t *out, const char *source);
mxl_status mxl_json_opt_double(const cJSON *obj, const char *key, double def, double *out,
                               const char *source);
mxl_status mxl_json_opt_float(const cJSON *obj, const char *key, float def, float *out,
                              const char *source);
mxl_status mxl_json_opt_bool(const cJSON *obj, const char *key, bool def, bool *out,
                             const char *source);
mxl_status mxl_json_opt_string(const cJSON *obj, const char *key, const char *def,
                               const char **out, const char *source);
/* *out is NULL when absent. */
mxl_status mxl_json_opt_object(const cJSON *obj, const char *key, const cJSON **out,
                               const char *source);
/* Absent gives *count = 0. */
mxl_status mxl_json_opt_int_array(const cJSON *obj, const char *key, int64_t lo, int64_t hi,
                                  int64_t *out, size_t capacity, size_t *count,
                                  const char *source);

#endif
