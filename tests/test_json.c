/* core/json: typed field reads and the messages they give on bad input. */
#include <unistd.h>

#include "core/fileio.h"
#include "core/json.h"
#include "test.h"

static const char *src = "config.json";

static cJSON *parse(const char *text) {
  cJSON *root = NULL;
  MXL_CHECK_OK(mxl_json_parse(text, strlen(text), src, &root));
  return root;
}

static void test_required_fields(void) {
  cJSON *o = parse("{\"hidden_size\": 2880, \"eps\": 1e-5, \"tie\": false, \"name\": \"gpt\","
                   " \"big\": 4294967296, \"rope\": {\"factor\": 32.0}}");
  if (!o) return;
  int i = 0;
  int64_t big = 0;
  double d = 0;
  float f = 0;
  bool b = true;
  const char *s = NULL;
  const cJSON *sub = NULL;
  MXL_CHECK_OK(mxl_json_get_int(o, "hidden_size", &i, src));
  MXL_CHECK(i == 2880);
  MXL_CHECK_OK(mxl_json_get_int_range(o, "big", 0, INT64_C(1) << 40, &big, src));
  MXL_CHECK(big == INT64_C(4294967296));
  MXL_CHECK_OK(mxl_json_get_double(o, "eps", &d, src));
  MXL_CHECK(d == 1e-5);
  MXL_CHECK_OK(mxl_json_get_float(o, "eps", &f, src));
  MXL_CHECK(f == 1e-5f);
  MXL_CHECK_OK(mxl_json_get_bool(o, "tie", &b, src));
  MXL_CHECK(!b);
  MXL_CHECK_OK(mxl_json_get_string(o, "name", &s, src));
  MXL_CHECK(s && !strcmp(s, "gpt"));
  MXL_CHECK_OK(mxl_json_get_object(o, "rope", &sub, src));
  MXL_CHECK_OK(mxl_json_get_double(sub, "factor", &d, "config.json: rope"));
  MXL_CHECK(d == 32.0);
  cJSON_Delete(o);
}

static void test_type_errors(void) {
  cJSON *o = parse("{\"hidden_size\": \"2880\", \"half\": 1.5, \"flag\": 1, \"n\": 3,"
                   " \"huge\": 1e300, \"list\": [1]}");
  if (!o) return;
  int i = 7;
  int64_t v;
  double d;
  float f;
  bool b;
  const char *s;
  const cJSON *sub;
  MXL_CHECK_FAILS(mxl_json_get_int(o, "hidden_size", &i, src), MXL_ERR_FORMAT,
                  "config.json: hidden_size: expected an integer, got string");
  MXL_CHECK(i == 7);
  MXL_CHECK_FAILS(mxl_json_get_int(o, "half", &i, src), MXL_ERR_FORMAT,
                  "config.json: half: expected an integer, got 1.5");
  MXL_CHECK_FAILS(mxl_json_get_int(o, "missing", &i, src), MXL_ERR_FORMAT,
                  "config.json: missing: missing required field");
  MXL_CHECK_FAILS(mxl_json_get_int(o, "huge", &i, src), MXL_ERR_FORMAT,
                  "config.json: huge: 1.0000000000000001e+300 is out of range");
  MXL_CHECK_FAILS(mxl_json_get_int_range(o, "n", 4, 10, &v, src), MXL_ERR_FORMAT,
                  "config.json: n: 3 is out of range [4, 10]");
  MXL_CHECK_FAILS(mxl_json_get_double(o, "list", &d, src), MXL_ERR_FORMAT,
                  "config.json: list: expected a finite number, got array");
  MXL_CHECK_FAILS(mxl_json_get_float(o, "huge", &f, src), MXL_ERR_FORMAT,
                  "config.json: huge: 1e+300 is out of float range");
  MXL_CHECK_FAILS(mxl_json_get_bool(o, "flag", &b, src), MXL_ERR_FORMAT,
                  "config.json: flag: expected true or false, got 1");
  MXL_CHECK_FAILS(mxl_json_get_string(o, "n", &s, src), MXL_ERR_FORMAT,
                  "config.json: n: expected a string, got 3");
  MXL_CHECK_FAILS(mxl_json_get_object(o, "list", &sub, src), MXL_ERR_FORMAT,
                  "config.json: list: expected an object, got array");
  cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "list");
  MXL_CHECK_FAILS(mxl_json_get_int(arr, "x", &i, src), MXL_ERR_FORMAT,
                  "config.json: expected an object holding \"x\", got array");
  cJSON_Delete(o);
}

static void test_int_overflow_range(void) {
  cJSON *o = parse("{\"a\": 2147483648, \"b\": -2147483648, \"c\": 9007199254740993}");
  if (!o) return;
  int i;
  int64_t v;
  MXL_CHECK_FAILS(mxl_json_get_int(o, "a", &i, src), MXL_ERR_FORMAT, "a: 2147483648 is out of");
  MXL_CHECK_OK(mxl_json_get_int(o, "b", &i, src));
  MXL_CHECK(i == INT32_MIN);
  /* Beyond 2^53 a double cannot hold the integer exactly: refused. */
  MXL_CHECK_FAILS(mxl_json_get_int_range(o, "c", 0, INT64_MAX, &v, src), MXL_ERR_FORMAT,
                  "c: 9007199254740992 is out of range");
  cJSON_Delete(o);
}

static void test_optional_fields(void) {
  cJSON *o = parse("{\"present\": 5, \"nul\": null, \"s\": \"x\", \"bad\": \"y\","
                   " \"sub\": {}, \"arr\": [1, 2]}");
  if (!o) return;
  int i = 0;
  int64_t v = 0, arr[4];
  size_t count = 9;
  double d = 0;
  float f = 0;
  bool b = false;
  const char *s = NULL;
  const cJSON *sub = o;
  MXL_CHECK_OK(mxl_json_opt_int(o, "present", 1, &i, src));
  MXL_CHECK(i == 5);
  MXL_CHECK_OK(mxl_json_opt_int(o, "absent", 1, &i, src));
  MXL_CHECK(i == 1);
  MXL_CHECK_OK(mxl_json_opt_int(o, "nul", 2, &i, src));
  MXL_CHECK(i == 2);
  MXL_CHECK_OK(mxl_json_opt_int_range(o, "absent", 0, 9, 4, &v, src));
  MXL_CHECK(v == 4);
  MXL_CHECK_OK(mxl_json_opt_double(o, "absent", 0.5, &d, src));
  MXL_CHECK(d == 0.5);
  MXL_CHECK_OK(mxl_json_opt_float(o, "absent", 0.25f, &f, src));
  MXL_CHECK(f == 0.25f);
  MXL_CHECK_OK(mxl_json_opt_bool(o, "absent", true, &b, src));
  MXL_CHECK(b);
  MXL_CHECK_OK(mxl_json_opt_string(o, "s", "d", &s, src));
  MXL_CHECK(s && !strcmp(s, "x"));
  MXL_CHECK_OK(mxl_json_opt_string(o, "absent", "d", &s, src));
  MXL_CHECK(s && !strcmp(s, "d"));
  MXL_CHECK_OK(mxl_json_opt_object(o, "absent", &sub, src));
  MXL_CHECK(sub == NULL);
  MXL_CHECK_OK(mxl_json_opt_object(o, "sub", &sub, src));
  MXL_CHECK(sub != NULL);
  MXL_CHECK_OK(mxl_json_opt_int_array(o, "absent", 0, 9, arr, 4, &count, src));
  MXL_CHECK(count == 0);
  MXL_CHECK_OK(mxl_json_opt_int_array(o, "arr", 0, 9, arr, 4, &count, src));
  MXL_CHECK(count == 2 && arr[0] == 1 && arr[1] == 2);
  /* Present with the wrong type is an error, not the default. */
  MXL_CHECK_FAILS(mxl_json_opt_int(o, "bad", 1, &i, src), MXL_ERR_FORMAT,
                  "config.json: bad: expected an integer, got string");
  MXL_CHECK_FAILS(mxl_json_opt_double(o, "bad", 1, &d, src), MXL_ERR_FORMAT, "bad: expected");
  MXL_CHECK_FAILS(mxl_json_opt_float(o, "bad", 1, &f, src), MXL_ERR_FORMAT, "bad: expected");
  MXL_CHECK_FAILS(mxl_json_opt_bool(o, "bad", 1, &b, src), MXL_ERR_FORMAT, "bad: expected");
  MXL_CHECK_FAILS(mxl_json_opt_string(o, "present", "", &s, src), MXL_ERR_FORMAT,
                  "present: expected a string");
  MXL_CHECK_FAILS(mxl_json_opt_object(o, "bad", &sub, src), MXL_ERR_FORMAT,
                  "bad: expected an object");
  MXL_CHECK_FAILS(mxl_json_opt_int_array(o, "bad", 0, 9, arr, 4, &count, src),
                  MXL_ERR_FORMAT, "bad: expected an array of integers, got string");
  cJSON_Delete(o);
}

static void test_int_arrays(void) {
  cJSON *o = parse("{\"shape\": [2, 3, 4], \"bad\": [1, \"x\"], \"neg\": [1, -1],"
                   " \"long\": [1, 2, 3, 4, 5]}");
  if (!o) return;
  int64_t out[4];
  size_t n = 0;
  MXL_CHECK_OK(mxl_json_get_int_array(o, "shape", 0, 100, out, 4, &n, src));
  MXL_CHECK(n == 3 && out[0] == 2 && out[1] == 3 && out[2] == 4);
  MXL_CHECK_FAILS(mxl_json_get_int_array(o, "bad", 0, 100, out, 4, &n, src), MXL_ERR_FORMAT,
                  "config.json: bad[1]: expected an integer, got string");
  MXL_CHECK_FAILS(mxl_json_get_int_array(o, "neg", 0, 100, out, 4, &n, src), MXL_ERR_FORMAT,
                  "config.json: neg[1]: -1 is out of range [0, 100]");
  MXL_CHECK_FAILS(mxl_json_get_int_array(o, "long", 0, 100, out, 4, &n, src), MXL_ERR_FORMAT,
                  "config.json: long: 5 elements, at most 4 allowed");
  MXL_CHECK_FAILS(mxl_json_get_int_array(o, "absent", 0, 100, out, 4, &n, src),
                  MXL_ERR_FORMAT, "absent: missing required field");
  cJSON_Delete(o);
}

static void test_syntax_errors(void) {
  cJSON *o = (cJSON *)1;
  const char *bad = "{\n  \"a\": 1,\n  \"b\": tru\n}";
  MXL_CHECK_FAILS(mxl_json_parse(bad, strlen(bad), src, &o), MXL_ERR_FORMAT,
                  "config.json: line 3, column");
  MXL_CHECK(o == NULL);
  MXL_CHECK_FAILS(mxl_json_parse("{} x", 4, src, &o), MXL_ERR_FORMAT,
                  "config.json: line 1, column 4 (byte 3): unexpected data after the JSON value");
  MXL_CHECK_FAILS(mxl_json_parse("", 0, src, &o), MXL_ERR_FORMAT, "config.json: line 1");
  /* The length bounds parsing: the bytes after it are never read. */
  MXL_CHECK_OK(mxl_json_parse("{}garbage", 2, src, &o));
  cJSON_Delete(o);
  MXL_CHECK_OK(mxl_json_parse("  [1]\n\t ", 8, src, &o));
  cJSON_Delete(o);
}

static void test_duplicate_keys(void) {
  cJSON *o = parse("{\"a\": 1, \"b\": 2, \"a\": 3}");
  if (!o) return;
  MXL_CHECK_FAILS(mxl_json_check_unique_keys(o, src), MXL_ERR_FORMAT,
                  "config.json: a: duplicate key");
  cJSON_Delete(o);
  o = parse("{\"a\": 1, \"b\": {\"a\": 2}}");
  MXL_CHECK_OK(mxl_json_check_unique_keys(o, src));
  cJSON_Delete(o);
}

static void test_duplicate_keys_deep(void) {
  cJSON *o = parse("{\"a\": 1, \"m\": [{\"r\": 1}, {\"r\": 2, \"c\": {\"x\": 1, \"x\": 2}}]}");
  if (!o) return;
  MXL_CHECK_OK(mxl_json_check_unique_keys(o, src));
  MXL_CHECK_FAILS(mxl_json_check_unique_keys_deep(o, src), MXL_ERR_FORMAT,
                  "config.json: m[1].c.x: duplicate key");
  cJSON_Delete(o);
  o = parse("{\"a\": 1, \"a\": 2}");
  MXL_CHECK_FAILS(mxl_json_check_unique_keys_deep(o, src), MXL_ERR_FORMAT,
                  "config.json: a: duplicate key");
  cJSON_Delete(o);
  o = parse("[[{\"k\": 1}], {\"k\": {\"k\": 2}}]");
  MXL_CHECK_OK(mxl_json_check_unique_keys_deep(o, src));
  cJSON_Delete(o);
}

/* cJSON stops at 1000 levels; that is not a syntax error. */
static void test_nesting_too_deep(void) {
  enum { DEPTH = 1500 };
  char *text = malloc(2 * DEPTH + 1);
  memset(text, '[', DEPTH);
  memset(text + DEPTH, ']', DEPTH);
  text[2 * DEPTH] = '\0';
  cJSON *o = (cJSON *)1;
  MXL_CHECK_FAILS(mxl_json_parse(text, 2 * DEPTH, src, &o), MXL_ERR_FORMAT,
                  "JSON nesting too deep (more than 1000 levels");
  MXL_CHECK(o == NULL);
  /* 1000 levels parse; a real syntax error deep down is still one. */
  MXL_CHECK_OK(mxl_json_parse(text + DEPTH - 1000, 2000, src, &o));
  cJSON_Delete(o);
  text[DEPTH - 500 + 700] = 'x';
  MXL_CHECK_FAILS(mxl_json_parse(text + DEPTH - 500, 1000, src, &o), MXL_ERR_FORMAT,
                  "JSON syntax error");
  /* Brackets inside strings do not count. */
  free(text);
  text = malloc(4 * DEPTH);
  size_t n = 0;
  text[n++] = '[';
  text[n++] = '"';
  for (int i = 0; i < DEPTH; i++) text[n++] = '[';
  text[n++] = '"';
  text[n++] = ',';
  text[n++] = 'x';
  text[n++] = ']';
  MXL_CHECK_FAILS(mxl_json_parse(text, n, src, &o), MXL_ERR_FORMAT, "JSON syntax error");
  free(text);
}

static void test_parse_file(void) {
  char path[] = "/tmp/mxl_json_XXXXXX";
  int fd = mkstemp(path);
  MXL_CHECK(fd >= 0);
  if (fd < 0) return;
  const char *text = "{\"x\": [1,\n 2,, 3]}";
  MXL_CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
  close(fd);
  cJSON *o = NULL;
  MXL_CHECK_FAILS(mxl_json_parse_file(path, 1 << 20, &o), MXL_ERR_FORMAT, path);
  MXL_CHECK_FAILS(mxl_json_parse_file(path, 1 << 20, &o), MXL_ERR_FORMAT, "line 2");
  MXL_CHECK_FAILS(mxl_json_parse_file(path, 4, &o), MXL_ERR_FORMAT, "limit");
  MXL_CHECK(mxl_write_file_atomic(path, "{\"x\": 1}", 8) == MXL_OK);
  MXL_CHECK_OK(mxl_json_parse_file(path, 8, &o));
  int x = 0;
  MXL_CHECK_OK(mxl_json_get_int(o, "x", &x, path));
  MXL_CHECK(x == 1);
  cJSON_Delete(o);
  unlink(path);
  MXL_CHECK_FAILS(mxl_json_parse_file(path, 10, &o), MXL_ERR_IO, path);
}

int main(void) {
  MXL_RUN(test_required_fields);
  MXL_RUN(test_type_errors);
  MXL_RUN(test_int_overflow_range);
  MXL_RUN(test_optional_fields);
  MXL_RUN(test_int_arrays);
  MXL_RUN(test_syntax_errors);
  MXL_RUN(test_duplicate_keys);
  MXL_RUN(test_duplicate_keys_deep);
  MXL_RUN(test_nesting_too_deep);
  MXL_RUN(test_parse_file);
  return mxl_test_summary("json");
}
