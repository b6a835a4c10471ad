/* Typed JSON field reads over cJSON. Every failure names the source, the
 * key and what was found instead. */
#include "core/json.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/status.h"

/* Integers up to 2^53 are exact in a double; beyond, JSON numbers parsed by
 * cJSON (as doubles) may have been rounded, so they are refused. */
#define MXL_JSON_EXACT_INT 9007199254740992.0

#define MXL_JSON_STR_(x) #x
#define MXL_JSON_STR(x) MXL_JSON_STR_(x)

static mxl_status syntax_error(const char *text, size_t n, size_t offset, const char *problem,
                               const char *source) {
  if (offset > n) offset = n;
  size_t line = 1, column = 1;
  for (size_t i = 0; i < offset; i++) {
    if (text[i] == '\n') {
      line++;
      column = 1;
    } else {
      column++;
    }
  }
  return mxl_errorf(MXL_ERR_FORMAT, "%s: line %zu, column %zu (byte %zu): %s", source, line,
                    column, offset, problem);
}

static int is_json_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* How many arrays and objects are open at text[offset] (counting one that
 * opens there), strings skipped: cJSON refuses input nested deeper than
 * CJSON_NESTING_LIMIT as if it were a syntax error. */
static size_t depth_at(const char *text, size_t n, size_t offset) {
  size_t depth = 0;
  int in_string = 0;
  for (size_t i = 0; i <= offset && i < n; i++) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') i++;
      else if (c == '"') in_string = 0;
    } else if (c == '"') {
      in_string = 1;
    } else if (c == '[' || c == '{') {
      depth++;
    } else if ((c == ']' || c == '}') && depth) {
      depth--;
    }
  }
  return depth;
}

const char *mxl_json_error_name(const char *text, size_t n, size_t offset) {
  if (depth_at(text, n, offset) > CJSON_NESTING_LIMIT)
    return "JSON nesting too deep (more than " MXL_JSON_STR(CJSON_NESTING_LIMIT)
           " levels of arrays and objects)";
  return "JSON syntax error";
}

size_t mxl_json_nul_escape(const char *s, size_t n) {
  for (size_t i = 0; i + 1 < n; i++) {
    if (s[i] != '\\') continue;
    if (s[i + 1] == 'u' && i + 6 <= n && !memcmp(s + i + 2, "0000", 4)) return i;
    i++; /* skip the escaped character */
  }
  return SIZE_MAX;
}

mxl_status mxl_json_parse(const char *text, size_t n, const char *source, cJSON **out) {
  *out = NULL;
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, 0);
  size_t offset = end ? (size_t)(end - text) : 0;
  if (!root) return syntax_error(text, n, offset, mxl_json_error_name(text, n, offset), source);
  while (offset < n && is_json_space(text[offset])) offset++;
  if (offset < n) {
    cJSON_Delete(root);
    return syntax_error(text, n, offset, "unexpected data after the JSON value", source);
  }
  *out = root;
  return MXL_OK;
}

mxl_status mxl_json_parse_file(const char *path, size_t max_bytes, cJSON **out) {
  *out = NULL;
  char *text = NULL;
  size_t n = 0;
  MXL_TRY(mxl_read_file(path, max_bytes, &text, &n));
  mxl_status st = mxl_json_parse(text, n, path, out);
  free(text);
  return st;
}

const char *mxl_json_type_name(const cJSON *item) {
  if (!item) return "missing";
  if (cJSON_IsString(item)) return "string";
  if (cJSON_IsNumber(item)) return "number";
  if (cJSON_IsBool(item)) return "boolean";
  if (cJSON_IsNull(item)) return "null";
  if (cJSON_IsArray(item)) return "array";
  if (cJSON_IsObject(item)) return "object";
  return "invalid value";
}

static int compare_keys(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sets *dup to a key that `obj` holds twice (NULL when none). */
static mxl_status find_duplicate_key(const cJSON *obj, const char *source, const char **dup) {
  /* Sorting keeps a hostile object with a million keys from taking
   * quadratic time. */
  *dup = NULL;
  size_t n = 0;
  for (const cJSON *e = obj ? obj->child : NULL; e; e = e->next) n += e->string != NULL;
  if (n < 2) return MXL_OK;
  const char **keys = malloc(n * sizeof *keys);
  if (!keys) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", source);
  n = 0;
  for (const cJSON *e = obj->child; e; e = e->next)
    if (e->string) keys[n++] = e->string;
  qsort(keys, n, sizeof *keys, compare_keys);
  for (size_t i = 1; i < n && !*dup; i++)
    if (!strcmp(keys[i - 1], keys[i])) *dup = keys[i];
  free(keys);
  return MXL_OK;
}

mxl_status mxl_json_check_unique_keys(const cJSON *obj, const char *source) {
  const char *dup;
  MXL_TRY(find_duplicate_key(obj, source, &dup));
  if (dup) return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: duplicate key", source, dup);
  return MXL_OK;
}

/* Appends ".key" or "[i]" to a path of `used` bytes (truncated, never
 * overflowing); returns the new length. */
static size_t path_push(char *path, size_t cap, size_t used, const cJSON *item, int index) {
  if (used >= cap) return used;
  int w = item->string ? snprintf(path + used, cap - used, "%s%s", used ? "." : "", item->string)
                       : snprintf(path + used, cap - used, "[%d]", index);
  return w < 0 ? used : used + (size_t)w < cap ? used + (size_t)w : cap - 1;
}

static mxl_status unique_keys_below(const cJSON *item, const char *source, char *path,
                                    size_t cap, size_t used) {
  if (cJSON_IsObject(item)) {
    const char *dup;
    MXL_TRY(find_duplicate_key(item, source, &dup));
    if (dup)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: %s%s%s: duplicate key", source, path,
                        used ? "." : "", dup);
  }
  if (!cJSON_IsObject(item) && !cJSON_IsArray(item)) return MXL_OK;
  int index = 0;
  for (const cJSON *c = item->child; c; c = c->next, index++) {
    size_t n = path_push(path, cap, used, c, index);
    MXL_TRY(unique_keys_below(c, source, path, cap, n));
    path[used] = '\0';
  }
  return MXL_OK;
}

mxl_status mxl_json_check_unique_keys_deep(const cJSON *item, const char *source) {
  char path[512] = "";
  return unique_keys_below(item, source, path, sizeof path, 0);
}

static mxl_status type_error(const cJSON *item, const char *what, const char *expected,
                             const char *source) {
  if (cJSON_IsNumber(item))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: expected %s, got %.17g", source, what, expected,
                      item->valuedouble);
  return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: expected %s, got %s", source, what, expected,
                    mxl_json_type_name(item));
}

/* The value under `key`, or an error saying it is required. */
static mxl_status lookup(const cJSON *obj, const char *key, const cJSON **item,
                         const char *source) {
  *item = NULL;
  if (!cJSON_IsObject(obj))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: expected an object holding \"%s\", got %s", source,
                      key, mxl_json_type_name(obj));
  *item = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!*item) return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: missing required field", source, key);
  return MXL_OK;
}

/* For optional fields: *item is NULL when absent or null. */
static mxl_status lookup_optional(const cJSON *obj, const char *key, const cJSON **item,
                                  const char *source) {
  *item = NULL;
  if (!cJSON_IsObject(obj))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: expected an object holding \"%s\", got %s", source,
                      key, mxl_json_type_name(obj));
  const cJSON *found = cJSON_GetObjectItemCaseSensitive(obj, key);
  *item = cJSON_IsNull(found) ? NULL : found;
  return MXL_OK;
}

mxl_status mxl_json_int_value(const cJSON *item, int64_t lo, int64_t hi, int64_t *out,
                              const char *what, const char *source) {
  if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble) ||
      item->valuedouble != floor(item->valuedouble))
    return type_error(item, what, "an integer", source);
  double v = item->valuedouble;
  if (v < (double)lo || v > (double)hi || fabs(v) >= MXL_JSON_EXACT_INT)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: %.17g is out of range [%" PRId64 ", %" PRId64 "]",
                      source, what, v, lo, hi);
  *out = (int64_t)v;
  return MXL_OK;
}

static mxl_status double_value(const cJSON *item, double *out, const char *what,
                               const char *source) {
  if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble))
    return type_error(item, what, "a finite number", source);
  *out = item->valuedouble;
  return MXL_OK;
}

static mxl_status float_value(const cJSON *item, float *out, const char *what,
                              const char *source) {
  double v = 0;
  MXL_TRY(double_value(item, &v, what, source));
  if (fabs(v) > FLT_MAX)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: %g is out of float range", source, what, v);
  *out = (float)v;
  return MXL_OK;
}

static mxl_status bool_value(const cJSON *item, bool *out, const char *what,
                             const char *source) {
  if (!cJSON_IsBool(item)) return type_error(item, what, "true or false", source);
  *out = cJSON_IsTrue(item);
  return MXL_OK;
}

static mxl_status string_value(const cJSON *item, const char **out, const char *what,
                               const char *source) {
  if (!cJSON_IsString(item) || !item->valuestring)
    return type_error(item, what, "a string", source);
  *out = item->valuestring;
  return MXL_OK;
}

static mxl_status object_value(const cJSON *item, const cJSON **out, const char *what,
                               const char *source) {
  if (!cJSON_IsObject(item)) return type_error(item, what, "an object", source);
  *out = item;
  return MXL_OK;
}

static mxl_status int_array_value(const cJSON *item, int64_t lo, int64_t hi, int64_t *out,
                                  size_t capacity, size_t *count, const char *what,
                                  const char *source) {
  if (!cJSON_IsArray(item)) return type_error(item, what, "an array of integers", source);
  size_t n = 0;
  for (const cJSON *e = item->child; e; e = e->next) n++;
  if (n > capacity)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: %zu elements, at most %zu allowed", source, what,
                      n, capacity);
  size_t i = 0;
  for (const cJSON *e = item->child; e; e = e->next, i++) {
    char element[256];
    snprintf(element, sizeof element, "%s[%zu]", what, i);
    MXL_TRY(mxl_json_int_value(e, lo, hi, &out[i], element, source));
  }
  *count = n;
  return MXL_OK;
}

/* ---- required ---- */

mxl_status mxl_json_get_int_range(const cJSON *obj, const char *key, int64_t lo, int64_t hi,
                                  int64_t *out, const char *source) {
  const cJSON *item = NULL;
  MXL_TRY(lookup(obj, key, &item, source));
  return mxl_json_int_value(item, lo, hi, out, key, source);
}

mxl_status mxl_json_get_int(const cJSON *obj, const char *key, int *out, const char *source) {
  int64_t v = 0;
  MXL_TRY(mxl_json_get_int_range(obj, key, INT32_MIN, INT32_MAX, &v, source));
  *out = (int)v;
  return MXL_OK;
}

mxl_status mxl_json_get_double(const cJSON *obj, const char *key, double *out,
                               const char *source) {
  const cJSON *item = NULL;
  MXL_TRY(lookup(obj, key, &item, source));
  return double_value(item, out, key, source);
}

mxl_status mxl_json_get_float(const cJSON *obj, const char *key, float *out,
                              const char *source) {
  const cJSON *item = NULL;
  MXL_TRY(lookup(obj, key, &item, source));
  return float_value(item, out, key, source);
}

mxl_status mxl_json_get_bool(const cJSON *obj, const char *key, bool *out, const char *source) {
  const cJSON *item = NULL;
  MXL_TRY(lookup(obj, key, &item, source));
  return bool_value(item, out, key, source);
}

mxl_status mxl_json_get_string(const cJSON *obj, const char *key, const char **out,
                               const char *source) {
  const cJSON *item = NULL;
  MXL_TRY(lookup(obj, key, &item, source));
  return string_value(item, out, key, source);
}

mxl_status mxl_json_get_object(const cJSON *obj, const char *key, const cJSON **out,
                               const char *source) {
  const cJSON *item = NULL;
  MXL_TRY(lookup(obj, key, &item, source));
  return object_value(item, out, key, source);
}

mxl_status mxl_json_get_int_array(const cJSON *obj, const char *key, int64_t lo, int64_t hi,
                                  int64_t *out, size_t capacity, size_t *count,
                                  const char *source) {
  const cJSON *item = NULL;
  MXL_TRY(lookup(obj, key, &item, source));
  return int_array_value(item, lo, hi, out, capacity, count, key, source);
}

/* ---- optional ---- */

mxl_status mxl_json_opt_int_range(const cJSON *obj, const char *key, int64_t lo, int64_t hi,
                                  int64_t def, int64_t *out, const char *source) {
  const cJSON *item = NULL;
  MXL_TRY(lookup_optional(obj, key, &item, source));
  if (!item) {
    *out = def;
    return MXL_OK;
  }
  return mxl_json_int_value(item, lo, hi, out, key, source);
}

mxl_status mxl_json_opt_int(const cJSON *obj, const char *key, int def, int *out,
                            const char *source) {
  int64_t v = 0;
  MXL_TRY(mxl_json_opt_int_range(obj, key, INT32_MIN, INT32_MAX, def, &v, source));
  *out = (int)v;
  return MXL_OK;
}

mxl_status mxl_json_opt_double(const cJSON *obj, const char *key, double def, double *out,
                               const char *source) {
  const cJSON *item = NULL;
  MXL_TRY(lookup_optional(obj, key, &item, source));
  if (!item) {
    *out = def;
    return MXL_OK;
  }
  return double_value(item, out, key, source);
}

mxl_status mxl_json_opt_float(const cJSON *obj, const char *key, float def, float *out,
                              const char *source) {
  const cJSON *item = NULL;
  MXL_TRY(lookup_optional(obj, key, &item, source));
  if (!item) {
    *out = def;
    return MXL_OK;
  }
  return float_value(item, out, key, source);
}

mxl_status mxl_json_opt_bool(const cJSON *obj, const char *key, bool def, bool *out,
                             const char *source) {
  const cJSON *item = NULL;
  MXL_TRY(lookup_optional(obj, key, &item, source));
  if (!item) {
    *out = def;
    return MXL_OK;
  }
  return bool_value(item, out, key, source);
}

mxl_status mxl_json_opt_string(const cJSON *obj, const char *key, const char *def,
                               const char **out, const char *source) {
  const cJSON *item = NULL;
  MXL_TRY(lookup_optional(obj, key, &item, source));
  if (!item) {
    *out = def;
    return MXL_OK;
  }
  return string_value(item, out, key, source);
}

mxl_status mxl_json_opt_object(const cJSON *obj, const char *key, const cJSON **out,
                               const char *source) {
  const cJSON *item = NULL;
  MXL_TRY(lookup_optional(obj, key, &item, source));
  if (!item) {
    *out = NULL;
    return MXL_OK;
  }
  return object_value(item, out, key, source);
}

mxl_status mxl_json_opt_int_array(const cJSON *obj, const char *key, int64_t lo, int64_t hi,
                                  int64_t *out, size_t capacity, size_t *count,
                                  const char *source) {
  const cJSON *item = NULL;
  MXL_TRY(lookup_optional(obj, key, &item, source));
  if (!item) {
    *count = 0;
    return MXL_OK;
  }
  return int_array_value(item, lo, hi, out, capacity, count, key, source);
}
