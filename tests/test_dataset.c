/* Dataset loading: JSONL and JSON arrays, every malformed case with its
 * file:line and field, skipping bad lines, the train/eval split, stats and
 * show. Most tests use a byte-level tokenizer (token = byte, harmony
 * special tokens after the 256 bytes) so that expected ids and lengths can
 * be written by hand; the parity test uses o200k and openai-harmony's ids. */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/fileio.h"
#include "mxlora/data.h"
#include "byte_tokenizer.h"
#include "test.h"

/* ------------------------------------------------------------------ helpers */

/* ids of byte_tokenizer.h's special tokens */
enum { RETURN = 260, CHANNEL = 263, START = 264, END = 265, MESSAGE = 266 };

static mxl_tokenizer *bytes_tok;

/* Writes a scratch file in the build directory and returns its path. */
static const char *scratch(const char *name, const char *data, size_t n) {
  static char path[256];
  snprintf(path, sizeof path, "test_dataset_%s", name);
  FILE *fp = fopen(path, "wb");
  MXL_CHECK(fp != NULL);
  if (fp) {
    fwrite(data, 1, n, fp);
    fclose(fp);
  }
  return path;
}

static const char *scratch_str(const char *name, const char *data) {
  return scratch(name, data, strlen(data));
}

static mxl_status load(const char *path, mxl_bad_line policy, mxl_dataset **ds) {
  mxl_data_options o = {.on_bad_line = policy};
  return mxl_dataset_load(path, bytes_tok, &o, ds);
}

/* Loading fails with `status` and a message containing `needle`. */
static void expect_load_error(const char *name, const char *data, size_t n, mxl_status status,
                              const char *needle) {
  const char *path = scratch(name, data, n);
  mxl_dataset *ds = (mxl_dataset *)1;
  MXL_CHECK_FAILS(load(path, MXL_BAD_LINE_ERROR, &ds), status, needle);
  MXL_CHECK(ds == NULL);
  remove(path);
}

#define BAD(name, text, needle)                                                           \
  expect_load_error(name, text, sizeof(text) - 1, MXL_ERR_FORMAT, needle)

/* ------------------------------------------------------------------ malformed input */

static void test_bad_lines(void) {
  BAD("syntax.jsonl", "{\"text\":\"a\"}\n\n{\"text\":\"b\"\n",
      "test_dataset_syntax.jsonl:3: JSON syntax error");
  BAD("utf8.jsonl", "{\"text\":\"a\"}\n{\"text\":\"\xc3\x28\"}\n",
      "test_dataset_utf8.jsonl:2: invalid UTF-8 at byte 10");
  BAD("nul.jsonl", "{\"text\":\"a\"}\n{\"text\":\"a\0b\"}\n",
      "test_dataset_nul.jsonl:2: the line contains a NUL byte");
  BAD("nulesc.jsonl", "{\"text\":\"a\\u0000b\"}\n", "nulesc.jsonl:1: a string contains \\u0000");
  BAD("role.jsonl", "{\"text\":\"a\"}\n{\"text\":\"b\"}\n{\"text\":\"c\"}\n"
      "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"robot\",\"content\":\"x\"}]}\n",
      "test_dataset_role.jsonl:4: messages[1].role: unknown role 'robot'");
  BAD("content.jsonl", "{\"messages\":[{\"role\":\"user\",\"content\":{\"a\":1}}]}\n",
      "content.jsonl:1: messages[0].content: expected a string or a list of text parts, got object");
  BAD("thinking.jsonl", "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
      "{\"role\":\"assistant\",\"content\":\"a\",\"thinking\":[1]}]}\n",
      "thinking.jsonl:1: messages[1].thinking: expected a string, got array");
  BAD("notobj.jsonl", "{\"text\":\"a\"}\n[1]\n",
      "notobj.jsonl:2: messages[0]: expected a message object, got number");
  BAD("scalar.jsonl", "{\"text\":\"a\"}\n42\n", "scalar.jsonl:2: expected a JSON object, got number");
  BAD("nofield.jsonl", "{\"question\":\"a\",\"answer\":\"b\"}\n",
      "nofield.jsonl:1: expected a \"messages\", \"prompt\"/\"completion\" or \"text\" field");
  BAD("emptytext.jsonl", "{\"text\":\"\"}\n", "emptytext.jsonl:1: the sample renders to no tokens");
  BAD("trailing.jsonl", "{\"text\":\"a\"} {\"text\":\"b\"}\n",
      "trailing.jsonl:1: unexpected text after the JSON value");
  BAD("completion.jsonl", "{\"prompt\":\"a\",\"completion\":7}\n",
      "completion.jsonl:1: completion: expected a string or a list of messages, got number");
  BAD("empty.jsonl", "", "test_dataset_empty.jsonl: no samples");
  BAD("blank.jsonl", "\n  \n\r\n", "blank.jsonl: no samples");
  /* JSON arrays: syntax and UTF-8 errors by line, bad elements by index */
  BAD("syntax.json", "[\n{\"text\":\"a\"},\n{\"text\" \"b\"}\n]\n", "test_dataset_syntax.json:3: JSON syntax error");
  BAD("utf8.json", "[\n{\"text\":\"a\"},\n{\"text\":\"\xff\"}]\n", "test_dataset_utf8.json:3: invalid UTF-8");
  BAD("nul.json", "[\n\n{\"text\":\"\\u0000\"}]\n", "test_dataset_nul.json:3: a string contains \\u0000");
  BAD("element.json", "[{\"text\":\"a\"},{\"messages\":[{\"role\":\"user\"}]}]",
      "test_dataset_element.json: element 2: messages[0].content: missing");
  /* a system message without content: the error names its path */
  BAD("nosystem.jsonl",
      "{\"messages\":[{\"role\":\"system\"},{\"role\":\"user\",\"content\":\"a\"}]}\n",
      "messages[0].content: missing");
  BAD("after.json", "[{\"text\":\"a\"}]\n]\n", "after.json:2: unexpected text after the JSON array");
  /* Duplicate keys were read silently (the first copy won). */
  BAD("dupkey.jsonl", "{\"text\":\"a\"}\n{\"prompt\":\"a\",\"completion\":\"b\",\"prompt\":\"c\"}\n",
      "test_dataset_dupkey.jsonl:2: prompt: duplicate key");
  BAD("dupmsg.jsonl", "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
      "{\"role\":\"assistant\",\"content\":\"a\",\"content\":\"b\"}]}\n",
      "test_dataset_dupmsg.jsonl:1: messages[1].content: duplicate key");
  BAD("dupkey.json", "[{\"text\":\"a\"},{\"text\":\"a\",\"text\":\"b\"}]",
      "test_dataset_dupkey.json: element 2: text: duplicate key");
  /* Deep nesting is named as such, not as a syntax error at byte 1001. */
  {
    enum { DEPTH = 1200 };
    char line[2 * DEPTH + 64];
    int n = snprintf(line, sizeof line, "{\"text\":");
    for (int i = 0; i < DEPTH; i++) line[n++] = '[';
    for (int i = 0; i < DEPTH; i++) line[n++] = ']';
    n += snprintf(line + n, sizeof line - (size_t)n, "}\n");
    expect_load_error("deep.jsonl", line, (size_t)n, MXL_ERR_FORMAT,
                      "test_dataset_deep.jsonl:1: JSON nesting too deep");
    line[0] = '[';                               /* as a JSON array: [[[...]]] */
    memcpy(line + 1, "   \"x\",", 8);
    expect_load_error("deep.json", line, (size_t)n - 2, MXL_ERR_FORMAT,
                      "test_dataset_deep.json:1: JSON nesting too deep");
  }
  BAD("emptyarr.json", "  [ ]", "emptyarr.json: no samples");
}

static void test_limits_and_files(void) {
  /* a line over max_line_bytes is a bad line; the next line still loads */
  const char *path = scratch_str("long.jsonl", "{\"text\":\"0123456789012345678901234567890123456789\"}\n"
                                               "{\"text\":\"short\"}\n");
  mxl_data_options o = {.max_line_bytes = 32};
  mxl_dataset *ds = NULL;
  MXL_CHECK_FAILS(mxl_dataset_load(path, bytes_tok, &o, &ds), MXL_ERR_FORMAT,
                  "test_dataset_long.jsonl:1: line longer than 32 bytes");
  o.on_bad_line = MXL_BAD_LINE_SKIP;
  MXL_CHECK_OK(mxl_dataset_load(path, bytes_tok, &o, &ds));
  MXL_CHECK(mxl_dataset_size(ds) == 1 && mxl_dataset_skipped(ds) == 1);
  mxl_sample_view v;
  MXL_CHECK_OK(mxl_dataset_sample(ds, 0, &v));
  MXL_CHECK(v.n == 5 && v.line == 2 && v.ids[0] == 's');
  mxl_dataset_destroy(ds);
  remove(path);
  /* a long line bigger than the read buffer is skipped while streaming */
  FILE *fp = fopen("test_dataset_huge.jsonl", "wb");
  fputs("{\"text\":\"", fp);
  for (int i = 0; i < 300000; i++) fputc('a' + i % 26, fp);
  fputs("\"}\n{\"text\":\"after\"}\n", fp);
  fclose(fp);
  o = (mxl_data_options){.max_line_bytes = 1000, .on_bad_line = MXL_BAD_LINE_SKIP};
  MXL_CHECK_OK(mxl_dataset_load("test_dataset_huge.jsonl", bytes_tok, &o, &ds));
  MXL_CHECK(mxl_dataset_size(ds) == 1 && mxl_dataset_skipped(ds) == 1);
  MXL_CHECK(strstr(mxl_dataset_first_skip(ds), "huge.jsonl:1: line longer than 1000 bytes"));
  MXL_CHECK_OK(mxl_dataset_sample(ds, 0, &v));
  MXL_CHECK(v.n == 5 && v.line == 2 && v.ids[0] == 'a');
  mxl_dataset_destroy(ds);
  o.max_line_bytes = 0; /* the default (64 MiB) takes it */
  MXL_CHECK_OK(mxl_dataset_load("test_dataset_huge.jsonl", bytes_tok, &o, &ds));
  MXL_CHECK(mxl_dataset_size(ds) == 2 && mxl_dataset_skipped(ds) == 0);
  MXL_CHECK_OK(mxl_dataset_sample(ds, 0, &v));
  MXL_CHECK(v.n == 300000 && v.ids[299999] == 'a' + 299999 % 26);
  mxl_dataset_destroy(ds);
  remove("test_dataset_huge.jsonl");
  /* a JSON array over max_array_bytes is refused with advice */
  path = scratch_str("big.json", "[{\"text\":\"a\"},{\"text\":\"b\"}]");
  o = (mxl_data_options){.max_array_bytes = 8};
  MXL_CHECK_FAILS(mxl_dataset_load(path, bytes_tok, &o, &ds), MXL_ERR_UNSUPPORTED,
                  "convert it to JSONL");
  remove(path);
  MXL_CHECK_FAILS(load("test_dataset_missing.jsonl", MXL_BAD_LINE_ERROR, &ds), MXL_ERR_IO,
                  "test_dataset_missing.jsonl: cannot open");
  MXL_CHECK_FAILS(load(".", MXL_BAD_LINE_ERROR, &ds), MXL_ERR_IO, ".: is a directory");
  MXL_CHECK_FAILS(mxl_dataset_load("x.jsonl", NULL, NULL, &ds), MXL_ERR_ARGUMENT,
                  "needs a tokenizer");
  MXL_CHECK_FAILS(mxl_dataset_sample(NULL, 0, &v), MXL_ERR_ARGUMENT, "out of range");
}

static void test_skip_policy(void) {
  const char data[] = "{\"text\":\"one\"}\n"
                      "{bad json\n"
                      "{\"messages\":[{\"role\":\"bot\",\"content\":\"x\"}]}\n"
                      "\n"
                      "{\"text\":\"four\"}\n"
                      "{\"text\":\"\xe2\x82\"}\n";
  const char *path = scratch("skip.jsonl", data, sizeof data - 1);
  mxl_dataset *ds = NULL;
  MXL_CHECK_FAILS(load(path, MXL_BAD_LINE_ERROR, &ds), MXL_ERR_FORMAT, "skip.jsonl:2: JSON syntax");
  MXL_CHECK_OK(load(path, MXL_BAD_LINE_SKIP, &ds));
  MXL_CHECK(mxl_dataset_size(ds) == 2);
  MXL_CHECK(mxl_dataset_skipped(ds) == 3);
  MXL_CHECK(strstr(mxl_dataset_first_skip(ds), "skip.jsonl:2: JSON syntax error") != NULL);
  mxl_sample_view v;
  MXL_CHECK_OK(mxl_dataset_sample(ds, 1, &v));
  MXL_CHECK(v.line == 5 && v.n == 4 && !memcmp((int32_t[]){'f', 'o', 'u', 'r'}, v.ids, 16));
  MXL_CHECK_FAILS(mxl_dataset_sample(ds, 2, &v), MXL_ERR_ARGUMENT, "sample 2 out of range");
  mxl_dataset_destroy(ds);
  /* nothing valid at all */
  path = scratch_str("allbad.jsonl", "x\ny\n");
  MXL_CHECK_FAILS(load(path, MXL_BAD_LINE_SKIP, &ds), MXL_ERR_FORMAT,
                  "no valid sample (2 bad, first: test_dataset_allbad.jsonl:1: JSON syntax");
  remove(path);
  remove("test_dataset_skip.jsonl");
}

/* ------------------------------------------------------------------ good input */

static void test_formats_and_ids(void) {
  /* BOM, CRLF, Multilingual-Thinking style (system + "thinking": null),
   * prompt/completion, raw text */
  const char data[] =
      "\xEF\xBB\xBF{\"text\":\"hi\"}\r\n"
      "{\"reasoning_language\":\"French\",\"messages\":[{\"role\":\"system\",\"content\":\"S\","
      "\"thinking\":null},{\"role\":\"user\",\"content\":\"A\",\"thinking\":null},"
      "{\"role\":\"assistant\",\"content\":\"B\",\"thinking\":null}]}\r\n"
      "{\"prompt\":\"A\",\"completion\":\"B\"}\n";
  const char *path = scratch("formats.jsonl", data, sizeof data - 1);
  mxl_dataset *ds = NULL;
  MXL_CHECK_OK(load(path, MXL_BAD_LINE_ERROR, &ds));
  if (!ds) return;
  MXL_CHECK(mxl_dataset_size(ds) == 3);
  mxl_sample_view v;
  MXL_CHECK_OK(mxl_dataset_sample(ds, 0, &v));
  MXL_CHECK(v.kind == MXL_SAMPLE_TEXT && v.n == 2 && v.ids[0] == 'h' && v.ids[1] == 'i');
  MXL_CHECK(v.flags[0] == 0x0F && v.flags[1] == 0x0F);
  MXL_CHECK_OK(mxl_dataset_sample(ds, 1, &v));
  MXL_CHECK(v.kind == MXL_SAMPLE_CHAT && v.line == 2);
  /* the sample ends "<|start|>assistant<|channel|>final<|message|>B<|return|>";
   * the trained part is the 9 tokens after "assistant" */
  int32_t tail[] = {CHANNEL, 'f', 'i', 'n', 'a', 'l', MESSAGE, 'B', RETURN};
  MXL_CHECK(v.n > 20 && !memcmp(v.ids + v.n - 9, tail, sizeof tail));
  MXL_CHECK(v.ids[v.n - 19] == START && !memcmp(v.ids + v.n - 18, (int32_t[]){'a', 's'}, 8));
  size_t trained = 0;
  for (size_t i = 0; i < v.n; i++) trained += (v.flags[i] & MXL_MASK_BIT(MXL_MASK_ASSISTANT)) != 0;
  MXL_CHECK(trained == 9);
  for (size_t i = v.n - 9; i < v.n; i++)
    MXL_CHECK(v.flags[i] == (MXL_MASK_BIT(MXL_MASK_ASSISTANT) | MXL_MASK_BIT(MXL_MASK_LAST_TURN) |
                             MXL_MASK_BIT(MXL_MASK_FINAL) | MXL_MASK_BIT(MXL_MASK_ALL)));
  /* the system message text went to the developer instructions */
  const int32_t dev[] = {'#', ' ', 'I', 'n', 's', 't', 'r', 'u', 'c', 't', 'i', 'o', 'n', 's',
                         '\n', '\n', 'S', END};
  int found = 0;
  for (size_t i = 0; i + 18 <= v.n; i++) found |= !memcmp(v.ids + i, dev, sizeof dev);
  MXL_CHECK(found);
  size_t chat_n = v.n;
  MXL_CHECK_OK(mxl_dataset_sample(ds, 2, &v));
  MXL_CHECK(v.kind == MXL_SAMPLE_CHAT && v.line == 3);
  /* no developer message: <|start|> developer <|message|> (11) + 18 */
  MXL_CHECK(v.n == chat_n - 29);
  mxl_dataset_destroy(ds);
  remove(path);
}

static void test_array_equals_jsonl(void) {
  const char *lines = "{\"text\":\"abc\"}\n{\"prompt\":\"x\",\"completion\":\"y\"}\n";
  const char *array = "[{\"text\":\"abc\"},\n {\"prompt\":\"x\",\"completion\":\"y\"}]";
  mxl_dataset *a = NULL, *b = NULL;
  MXL_CHECK_OK(load(scratch_str("same.jsonl", lines), MXL_BAD_LINE_ERROR, &a));
  MXL_CHECK_OK(load(scratch_str("same.json", array), MXL_BAD_LINE_ERROR, &b));
  if (!a || !b) return;
  MXL_CHECK(mxl_dataset_size(a) == 2 && mxl_dataset_size(b) == 2);
  for (size_t i = 0; i < 2; i++) {
    mxl_sample_view x, y;
    mxl_dataset_sample(a, i, &x);
    mxl_dataset_sample(b, i, &y);
    MXL_CHECK(x.n == y.n && !memcmp(x.ids, y.ids, x.n * 4) && !memcmp(x.flags, y.flags, x.n));
    MXL_CHECK(y.line == (int64_t)i + 1);
  }
  mxl_dataset_destroy(a);
  mxl_dataset_destroy(b);
  remove("test_dataset_same.jsonl");
  remove("test_dataset_same.json");
}

/* The loader's default rendering (earlier-turns, training) reproduces
 * openai-harmony's ids for every fixture case rendered that way. */
static void test_openai_harmony_ids(void) {
  const char *vocab = MXL_SHARED_DIR "/data/o200k_base.tiktoken";
  if (!mxl_path_exists(vocab)) MXL_SKIP("%s absent", vocab);
  mxl_tokenizer *tok = NULL;
  MXL_CHECK_OK(mxl_tokenizer_load(vocab, &tok));
  char *data = NULL;
  size_t size = 0;
  MXL_CHECK_OK(mxl_read_file(MXL_SOURCE_DIR "/tests/fixtures/harmony/cases.jsonl", 1 << 22,
                             &data, &size));
  if (!tok || !data) return;
  FILE *fp = fopen("test_dataset_parity.jsonl", "wb");
  cJSON *want[64];
  int n = 0;
  for (char *line = strtok(data, "\n"); line && n < 64; line = strtok(NULL, "\n")) {
    cJSON *c = cJSON_Parse(line);
    const char *rule = cJSON_GetStringValue(cJSON_GetObjectItem(c, "analysis"));
    const char *mode = cJSON_GetStringValue(cJSON_GetObjectItem(c, "mode"));
    if ((rule && strcmp(rule, "earlier-turns")) || (mode && strcmp(mode, "train")) ||
        cJSON_GetObjectItem(c, "options")) {
      cJSON_Delete(c);
      continue;
    }
    char *conv = cJSON_PrintUnformatted(cJSON_GetObjectItem(c, "conversation"));
    fprintf(fp, "%s\n", conv);
    free(conv);
    want[n++] = c;
  }
  fclose(fp);
  mxl_dataset *ds = NULL;
  MXL_CHECK_OK(mxl_dataset_load("test_dataset_parity.jsonl", tok, NULL, &ds));
  MXL_CHECK(n >= 8 && mxl_dataset_size(ds) == (size_t)n);
  for (int i = 0; ds && i < n; i++) {
    mxl_sample_view v;
    mxl_dataset_sample(ds, (size_t)i, &v);
    const cJSON *ids = cJSON_GetObjectItem(want[i], "ids");
    int same = (int)v.n == cJSON_GetArraySize(ids);
    for (size_t t = 0; same && t < v.n; t++) same = v.ids[t] == cJSON_GetArrayItem(ids, (int)t)->valueint;
    MXL_CHECK_MSG(same, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(want[i], "name")));
  }
  printf("dataset loader vs openai-harmony: %d samples compared\n", n);
  for (int i = 0; i < n; i++) cJSON_Delete(want[i]);
  mxl_dataset_destroy(ds);
  mxl_tokenizer_free(tok);
  free(data);
  remove("test_dataset_parity.jsonl");
}

/* ------------------------------------------------------------------ split, stats, show */

static mxl_dataset *texts(int n) {
  FILE *fp = fopen("test_dataset_texts.jsonl", "wb");
  for (int i = 0; i < n; i++) fprintf(fp, "{\"text\":\"%0*d\"}\n", 1 + i % 40, i);
  fclose(fp);
  mxl_dataset *ds = NULL;
  MXL_CHECK_OK(load("test_dataset_texts.jsonl", MXL_BAD_LINE_ERROR, &ds));
  remove("test_dataset_texts.jsonl");
  return ds;
}

static void test_split(void) {
  mxl_dataset *ds = texts(100), *tr = NULL, *ev = NULL, *tr2 = NULL, *ev2 = NULL;
  if (!ds) return;
  MXL_CHECK_OK(mxl_dataset_split(ds, 0.1, 0, 7, &tr, &ev));
  MXL_CHECK(mxl_dataset_size(tr) == 90 && mxl_dataset_size(ev) == 10);
  MXL_CHECK_OK(mxl_dataset_split(ds, 0.0, 10, 7, &tr2, &ev2));
  mxl_dataset_destroy(ds); /* the parts keep the storage alive */
  int seen[101] = {0}, same = 1;
  int64_t prev = 0;
  for (size_t i = 0; i < 10; i++) {
    mxl_sample_view a, b;
    mxl_dataset_sample(ev, i, &a);
    mxl_dataset_sample(ev2, i, &b);
    same &= a.line == b.line;
    MXL_CHECK(a.line > prev); /* file order */
    prev = a.line;
    seen[a.line]++;
  }
  MXL_CHECK(same); /* the same seed and data give the same split */
  for (size_t i = 0; i < 90; i++) {
    mxl_sample_view a;
    mxl_dataset_sample(tr, i, &a);
    seen[a.line]++;
  }
  int all_once = 1;
  for (int l = 1; l <= 100; l++) all_once &= seen[l] == 1;
  MXL_CHECK(all_once);
  mxl_dataset_destroy(tr2);
  mxl_dataset_destroy(ev2);
  MXL_CHECK_OK(mxl_dataset_split(tr, 0.5, 0, 8, &tr2, &ev2)); /* a split of a split */
  MXL_CHECK(mxl_dataset_size(tr2) == 45 && mxl_dataset_size(ev2) == 45);
  mxl_dataset_destroy(tr2);
  mxl_dataset_destroy(ev2);
  /* another seed picks other samples */
  MXL_CHECK_OK(mxl_dataset_split(tr, 0.2, 0, 99, &tr2, &ev2));
  mxl_dataset_destroy(tr2);
  mxl_dataset_destroy(ev2);
  MXL_CHECK_FAILS(mxl_dataset_split(tr, 1.5, 0, 1, &tr2, &ev2), MXL_ERR_ARGUMENT, "[0, 1)");
  MXL_CHECK_FAILS(mxl_dataset_split(tr, 0, 90, 1, &tr2, &ev2), MXL_ERR_ARGUMENT,
                  "nothing to train on");
  MXL_CHECK_FAILS(mxl_dataset_split(tr, 0, 0, 1, &tr2, &ev2), MXL_ERR_ARGUMENT,
                  "eval part");
  MXL_CHECK(tr2 == NULL && ev2 == NULL);
  mxl_dataset_destroy(tr);
  mxl_dataset_destroy(ev);
}

static void test_stats(void) {
  const char *path = scratch_str(
      "stats.jsonl", "{\"text\":\"ab\"}\n{\"text\":\"abcdefghijklmnopq\"}\n{\"text\":\"abcd\"}\n"
                     "{\"messages\":[{\"role\":\"user\",\"content\":\"A\"},"
                     "{\"role\":\"assistant\",\"content\":\"B\"}]}\n");
  mxl_dataset *ds = NULL;
  MXL_CHECK_OK(load(path, MXL_BAD_LINE_ERROR, &ds));
  remove(path);
  if (!ds) return;
  mxl_sample_view chat;
  mxl_dataset_sample(ds, 3, &chat);
  mxl_data_stats s;
  MXL_CHECK_OK(mxl_dataset_stats(ds, 16, &s));
  MXL_CHECK(s.samples == 4 && s.text_samples == 3 && s.chat_samples == 1 && s.skipped == 0);
  MXL_CHECK(s.tokens == 2 + 17 + 4 + chat.n);
  MXL_CHECK(s.min_len == 2 && s.max_len == chat.n && s.median_len == 4 && s.p95_len == chat.n);
  MXL_CHECK_NEAR(s.mean_len, (23.0 + (double)chat.n) / 4, 1e-12);
  MXL_CHECK(s.bin_upper[0] == 16 && s.bin_upper[1] == 32 && s.bin_count[0] == 2);
  MXL_CHECK(s.over_seq_len == 2 && s.over_seq_len_tokens == 1 + chat.n - 16);
  MXL_CHECK(s.trained[MXL_MASK_ALL] == s.tokens);
  MXL_CHECK(s.trained[MXL_MASK_ASSISTANT] == 23 + 9 && s.trained[MXL_MASK_FINAL] == 23 + 9);
  MXL_CHECK(s.untrained_samples[MXL_MASK_ASSISTANT] == 0);
  size_t binned = 0;
  for (int b = 0; b < MXL_STATS_BINS; b++) binned += s.bin_count[b];
  MXL_CHECK(binned == 4);
  /* show: runs alternate, the trained run is the answer */
  mxl_text_run *runs = NULL;
  size_t n = 0;
  MXL_CHECK_OK(mxl_dataset_show(ds, bytes_tok, 3, MXL_MASK_ASSISTANT, &runs, &n));
  MXL_CHECK(n == 2 && !runs[0].trained && runs[1].trained);
  if (n == 2) {
    MXL_CHECK(!strcmp(runs[1].text, "<|channel|>final<|message|>B<|return|>"));
    MXL_CHECK(strstr(runs[0].text, "<|start|>user<|message|>A<|end|><|start|>assistant") != NULL);
  }
  mxl_text_runs_free(runs, n);
  MXL_CHECK_OK(mxl_dataset_show(ds, bytes_tok, 0, MXL_MASK_FINAL, &runs, &n));
  MXL_CHECK(n == 1 && runs[0].trained && !strcmp(runs[0].text, "ab"));
  mxl_text_runs_free(runs, n);
  MXL_CHECK_FAILS(mxl_dataset_show(ds, bytes_tok, 4, MXL_MASK_ALL, &runs, &n), MXL_ERR_ARGUMENT,
                  "out of range");
  mxl_dataset_destroy(ds);
}

static int progress_calls;
static void on_progress(void *user, uint64_t done, uint64_t total) {
  (void)user;
  MXL_CHECK(done <= total);
  progress_calls++;
}

static void test_streaming_many_lines(void) {
  /* 5000 lines: streamed, progress reported, line numbers kept */
  FILE *fp = fopen("test_dataset_many.jsonl", "wb");
  for (int i = 0; i < 5000; i++) fprintf(fp, "{\"text\":\"line %d\"}\n", i + 1);
  fclose(fp);
  mxl_data_options o = {.progress = on_progress};
  mxl_dataset *ds = NULL;
  MXL_CHECK_OK(mxl_dataset_load("test_dataset_many.jsonl", bytes_tok, &o, &ds));
  MXL_CHECK(mxl_dataset_size(ds) == 5000 && progress_calls >= 4);
  mxl_sample_view v;
  MXL_CHECK_OK(mxl_dataset_sample(ds, 4999, &v));
  MXL_CHECK(v.line == 5000 && v.n == 9);
  mxl_dataset_destroy(ds);
  remove("test_dataset_many.jsonl");
}


/* ------------------------------------------------------------------ bundled samples, CLI */

static void test_bundled_samples(void) {
  mxl_dataset *train = NULL, *eval = NULL;
  MXL_CHECK_OK(load(MXL_SOURCE_DIR "/datasets/samples/train.jsonl", MXL_BAD_LINE_ERROR, &train));
  MXL_CHECK_OK(load(MXL_SOURCE_DIR "/datasets/samples/eval.jsonl", MXL_BAD_LINE_ERROR, &eval));
  if (!train || !eval) return;
  MXL_CHECK(mxl_dataset_size(train) == 338 && mxl_dataset_size(eval) == 36);
  mxl_data_stats s;
  MXL_CHECK_OK(mxl_dataset_stats(train, 0, &s));
  MXL_CHECK(s.chat_samples == 338);
  for (int m = 0; m < MXL_MASK_COUNT; m++) MXL_CHECK(s.untrained_samples[m] == 0);
  /* no eval conversation is also a training one */
  int overlap = 0;
  for (size_t i = 0; i < mxl_dataset_size(eval); i++) {
    mxl_sample_view e, t;
    mxl_dataset_sample(eval, i, &e);
    for (size_t j = 0; j < mxl_dataset_size(train); j++) {
      mxl_dataset_sample(train, j, &t);
      overlap += e.n == t.n && !memcmp(e.ids, t.ids, e.n * sizeof *e.ids);
    }
  }
  MXL_CHECK(overlap == 0);
  mxl_dataset_destroy(train);
  mxl_dataset_destroy(eval);
}

/* Runs the CLI; returns its exit status and its output (stdout + stderr). */
static int run_cli(const char *args, char *out, size_t cap) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "%s %s 2>&1", MXL_CLI_PATH, args);
  FILE *p = popen(cmd, "r");
  if (!p) return -1;
  size_t n = fread(out, 1, cap - 1, p);
  out[n] = '\0';
  int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_cli(void) {
  static char out[1 << 16];
  MXL_CHECK(run_cli("data stats", out, sizeof out) == 2);
  MXL_CHECK(strstr(out, "expected 'stats FILE' or 'show FILE'") != NULL);
  MXL_CHECK(run_cli("data stats x.jsonl", out, sizeof out) == 2);
  MXL_CHECK(strstr(out, "--model DIR is required") != NULL);
  MXL_CHECK(run_cli("data show x.jsonl --model m --color pink", out, sizeof out) == 2);
  MXL_CHECK(run_cli("data --help", out, sizeof out) == 0 && strstr(out, "--on-bad-line"));
  const char *vocab = MXL_SHARED_DIR "/data/o200k_base.tiktoken";
  if (!mxl_path_exists(vocab)) MXL_SKIP("%s absent", vocab);
  char args[1024];
  snprintf(args, sizeof args, "data stats %s/datasets/samples/train.jsonl --model %s --seq-len 80",
           MXL_SOURCE_DIR, vocab);
  MXL_CHECK(run_cli(args, out, sizeof out) == 0);
  MXL_CHECK(strstr(out, "train.jsonl: 338 samples (338 chat, 0 text)") != NULL);
  MXL_CHECK(strstr(out, "seq-len 80:") != NULL && strstr(out, "last-turn") != NULL);
  snprintf(args, sizeof args,
           "data show %s/datasets/samples/eval.jsonl --model %s --limit 2 --mask final",
           MXL_SOURCE_DIR, vocab);
  MXL_CHECK(run_cli(args, out, sizeof out) == 0);
  MXL_CHECK(strstr(out, "--- sample 1 (line 2, chat,") != NULL && !strstr(out, "sample 2 "));
  MXL_CHECK(strstr(out, "[[<|channel|>final<|message|>") != NULL && !strstr(out, "\033["));
  const char *bad = scratch_str("cli_bad.jsonl", "{\"text\":\"a\"}\n{\"messages\":3}\n");
  snprintf(args, sizeof args, "data stats %s --model %s", bad, vocab);
  MXL_CHECK(run_cli(args, out, sizeof out) == 1);
  MXL_CHECK(strstr(out, "test_dataset_cli_bad.jsonl:2: messages: expected a list of messages") != NULL);
  snprintf(args, sizeof args, "data stats %s --model %s --on-bad-line skip", bad, vocab);
  MXL_CHECK(run_cli(args, out, sizeof out) == 0);
  MXL_CHECK(strstr(out, "1 samples (0 chat, 1 text), 1 bad lines skipped") != NULL);
  remove(bad);
}

int main(void) {
  bytes_tok = byte_tokenizer();
  MXL_RUN(test_bad_lines);
  MXL_RUN(test_limits_and_files);
  MXL_RUN(test_skip_policy);
  MXL_RUN(test_formats_and_ids);
  MXL_RUN(test_array_equals_jsonl);
  MXL_RUN(test_openai_harmony_ids);
  MXL_RUN(test_split);
  MXL_RUN(test_stats);
  MXL_RUN(test_streaming_many_lines);
  MXL_RUN(test_bundled_samples);
  MXL_RUN(test_cli);
  mxl_tokenizer_free(bytes_tok);
  return mxl_test_summary("dataset");
}
