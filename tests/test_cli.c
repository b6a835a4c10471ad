/* The mxlora command end to end: tiny → inspect → generate (all three
 * layouts, logits dump) → train → generate with the adapter → eval →
 * tokenize --chat, and the exit codes and messages of bad invocations. */
#include <stdarg.h>
#include <unistd.h>

#include "core/fileio.h"
#include "test.h"

static char root[64];

/* Runs `mxlora <args>`; captures stdout+stderr into *out (malloc'd). */
__attribute__((format(printf, 2, 3))) static int mxl(char **out, const char *fmt, ...) {
  char args[2048], cmd[4096], log[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(log, sizeof log, "%s/out.txt", root);
  snprintf(cmd, sizeof cmd, "'%s' %s > '%s' 2>&1", MXL_CLI_PATH, args, log);
  int rc = system(cmd);
  rc = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  size_t n = 0;
  if (mxl_read_file(log, 1 << 26, out, &n) != MXL_OK) *out = strdup("");
  return rc;
}

#define EXPECT(rc_expected, needle, ...)                                                     \
  do {                                                                                       \
    char *out_ = NULL;                                                                       \
    int rc_ = mxl(&out_, __VA_ARGS__);                                                       \
    MXL_CHECK_MSG(rc_ == (rc_expected), "exit %d, expected %d: %s", rc_, rc_expected, out_); \
    MXL_CHECK_MSG(strstr(out_, needle) != NULL, "output lacks \"%s\": %s", needle, out_);    \
    free(out_);                                                                              \
  } while (0)

static void test_usage_errors(void) {
  EXPECT(0, "commands:", "--help");
  EXPECT(0, "cpu kernels:", "version");
  EXPECT(2, "unknown command", "nosuch");
  EXPECT(2, "--model DIR is required", "generate --prompt hi");
  EXPECT(2, "unknown option", "train --frobnicate 3");
  EXPECT(2, "not a valid number", "generate --model x --top-k many");
}

/* Out-of-range values are refused naming the flag and the
 * allowed range, numbers are parsed strictly, and every command (train
 * included) takes --opt=value. Each of these ran with a default before. */
static void test_strict_flags(void) {
  EXPECT(2, "--max-tokens 0 is out of range: allowed [1, ", "generate --model x --max-tokens 0");
  EXPECT(2, "--prefix-cache -1: expected 1 or more", "chat --model x --prefix-cache -1");
  EXPECT(2, "--shared-prefix -1: expected 1 or more", "serve --model x --shared-prefix -1");
  EXPECT(2, "--max-tokens -1 is out of range", "generate --model x --max-tokens=-1");
  EXPECT(2, "--context 0 is out of range", "generate --model x --context 0");
  EXPECT(2, "--prefill-chunk 0 is out of range", "generate --model x --prefill-chunk 0");
  EXPECT(2, "--threads -3 is out of range: allowed [0, 4096]", "generate --model x --threads -3");
  EXPECT(2, "--top-p 0 is out of range: allowed (0, 1]", "generate --model x --top-p 0");
  EXPECT(2, "'nan' is not a valid number", "generate --model x --temperature nan");
  EXPECT(2, "'0x10' is not a valid number", "generate --model x --temperature 0x10");
  EXPECT(2, "'5abc' is not a valid number", "generate --model x --max-tokens 5abc");
  EXPECT(2, "'nan' is not a valid scale", "generate --model x --adapter A:nan");
  EXPECT(2, "--batch-size 0 is out of range", "eval --model x --data y --batch-size 0");
  EXPECT(2, "--seq-len -5 is out of range", "eval --model x --data y --seq-len -5");
  EXPECT(2, "--threads -3 is out of range", "eval --model x --data y --threads=-3");
  EXPECT(2, "'inf' is not a valid scale", "eval --model x --data y --adapter A:inf");
  EXPECT(2, "--seq-len 0 is out of range", "data stats y --model x --seq-len 0");
  EXPECT(2, "--limit -2 is out of range", "data show y --model x --limit=-2");
  EXPECT(2, "'1.5' is not a valid number", "tiny x --seed 1.5");
  EXPECT(2, "--json takes no value", "inspect x --json=1");
  EXPECT(0, "\"[0,2]\"", "train --help");
  EXPECT(0, "--name=VALUE", "generate --help");
  EXPECT(2, "expected KEY=VALUE", "train --set rank");
  /* train reads --opt=value (it stopped at "unknown option" before). */
  EXPECT(1, "nosuch-model", "train --model=%s/nosuch-model --data=%s/d --out=%s/r --steps=1",
         root, root, root);
}

static void test_tiny_and_inspect(void) {
  EXPECT(0, "", "tiny %s/m --layout all --seed 2", root);
  EXPECT(0, "Hugging Face layout", "inspect %s/m", root);
  EXPECT(0, "fused qkv", "inspect %s/m/original", root);
  EXPECT(0, "Metal", "inspect %s/m/metal/model.bin", root);
  EXPECT(0, "\"layouts\"", "inspect --json %s/m", root);
  EXPECT(1, "/nonexistent", "inspect /nonexistent/model");
  /* Like fsck: the report, then exit 1 when something in it is broken
   * (inspect exited 0 before). */
  char src[160], dst[160], *cfg = NULL;
  size_t n = 0;
  snprintf(src, sizeof src, "%s/m/config.json", root);
  snprintf(dst, sizeof dst, "%s/broken", root);
  MXL_CHECK_OK(mxl_make_dirs(dst));
  snprintf(dst, sizeof dst, "%s/broken/config.json", root);
  MXL_CHECK_OK(mxl_read_file(src, 1 << 20, &cfg, &n));
  if (cfg) MXL_CHECK_OK(mxl_write_file_atomic(dst, cfg, n));
  free(cfg);
  EXPECT(1, "model configuration (Hugging Face GptOssConfig)", "inspect %s/broken", root);
  EXPECT(1, "1 problem found (listed above)", "inspect %s/broken", root);
  EXPECT(1, "\"problems\":", "inspect --json %s/broken", root);
}

/* Greedy generation is the same from the HF and original/ layouts of one
 * checkpoint (metal/ keeps fewer vocabulary rows, so its argmax may
 * legitimately differ on a random model; its logits are compared in
 * test_forward). */
static void test_generate_all_layouts(void) {
  char *a = NULL, *b = NULL, *c = NULL;
  const char *gen = "generate --prompt 'Hello there' --max-tokens 8 --temperature 0";
  MXL_CHECK(mxl(&a, "%s --model %s/m", gen, root) == 0);
  MXL_CHECK(mxl(&b, "%s --model %s/m/original", gen, root) == 0);
  MXL_CHECK(mxl(&c, "%s --model %s/m/metal", gen, root) == 0);
  /* Compare the generated text (the line before the timing summary). */
  char *ta = strstr(a, "\n["), *tb = strstr(b, "\n["), *tc = strstr(c, "\n[");
  MXL_CHECK(ta && tb && tc);
  if (ta && tb && tc) {
    MXL_CHECK_MSG(ta - a == tb - b && !memcmp(a, b, ta - a), "%s vs %s", a, b);
  }
  MXL_CHECK(strstr(a, "tok/s") != NULL);
  /* the prompt in 2-token passes: the same text as in one pass */
  char *d = NULL;
  MXL_CHECK(mxl(&d, "%s --model %s/m --prefill-chunk 2", gen, root) == 0);
  char *td = d ? strstr(d, "\n[") : NULL;
  MXL_CHECK(td != NULL);
  if (ta && td) MXL_CHECK_MSG(ta - a == td - d && !memcmp(a, d, ta - a), "%s vs %s", a, d);
  free(a), free(b), free(c), free(d);
  /* Two tokens cannot hold a final-channel answer: said, with a hint
   * (it printed nothing before). */
  EXPECT(0, "the model wrote no final answer (2 tokens generated, stopped by max tokens)",
         "generate --model %s/m --chat --prompt hi --max-tokens 2", root);
  EXPECT(0, "hint: --show-analysis shows its reasoning as it is written; --max-tokens (now 2)",
         "generate --model %s/m --chat --prompt hi --max-tokens 2", root);
  EXPECT(0, "tok/s", "generate --model %s/m --prompt 'Hello' --max-tokens 2 --dump-logits %s/l.npy",
         root, root);
  /* Function tools: offered in the chat's prompt (it grows), refused
   * without --chat, when not a list, or missing. (A call's printing:
   * test_chat_stream's message callback; calls end to end: test_server.) */
  char tools[128];
  snprintf(tools, sizeof tools, "%s/tools.json", root);
  FILE *fp = fopen(tools, "w");
  if (fp) {
    fputs("[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": "
          "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}}}]", fp);
    fclose(fp);
  }
  int prompt_tokens[2] = {0, 0};
  for (int with = 0; with < 2; with++) {
    char *out = NULL;
    MXL_CHECK(mxl(&out, "generate --model %s/m --chat --prompt 'Weather?' --max-tokens 1%s%s",
                  root, with ? " --tools " : "", with ? tools : "") == 0);
    const char *stats = out ? strstr(out, "\n[") : NULL;
    MXL_CHECK_MSG(stats && sscanf(stats, "\n[%d prompt tokens", &prompt_tokens[with]) == 1, "%s",
                  out);
    free(out);
  }
  MXL_CHECK_MSG(prompt_tokens[1] > prompt_tokens[0] + 20, "%d vs %d", prompt_tokens[1],
                prompt_tokens[0]);
  EXPECT(2, "tools are offered in a chat: add --chat", "generate --model %s/m --tools %s "
         "--prompt x", root, tools);
  EXPECT(2, "expected a JSON list of function tools", "generate --model %s/m --chat --tools "
         "%s/l.npy --prompt x", root, root);
  EXPECT(1, "--tools /nonexistent.json: No such file", "generate --model %s/m --chat --tools "
         "/nonexistent.json --prompt x", root);
  char path[128], *npy = NULL;
  size_t n = 0;
  snprintf(path, sizeof path, "%s/l.npy", root);
  MXL_CHECK_OK(mxl_read_file(path, 1 << 24, &npy, &n));
  if (npy) {
    MXL_CHECK(!memcmp(npy, "\x93NUMPY\x01\x00", 8));
    size_t header = 10 + (unsigned char)npy[8] + 256u * (unsigned char)npy[9];
    MXL_CHECK(strstr(npy + 10, "'shape': (") != NULL);
    MXL_CHECK((n - header) % (1088 * 4) == 0 && n > header);
  }
  free(npy);
}

/* Changes the digit after the first `key` (e.g. "\"alpha\":") in the file
 * at root/name, as a hand edit would; 0 when the key is not there. */
static int edit_digit(const char *name, const char *key) {
  char path[160], *data = NULL;
  size_t n = 0;
  snprintf(path, sizeof path, "%s/%s", root, name);
  if (mxl_read_file(path, 1 << 26, &data, &n) != MXL_OK) return 0;
  char *hit = memmem(data, n, key, strlen(key));
  int ok = hit && hit + strlen(key) < data + n && hit[strlen(key)] >= '0' &&
           hit[strlen(key)] <= '9';
  if (ok) {
    char *d = hit + strlen(key);
    *d = *d == '9' ? '1' : (char)(*d + 1);
    ok = mxl_write_file_atomic(path, data, n) == MXL_OK;
  }
  free(data);
  return ok;
}

/* The generated text of a generate run's output: after any warning
 * lines, before the summary. */
static const char *text_of(const char *out) {
  while (!strncmp(out, "mxlora: warning:", 16) && strchr(out, '\n')) out = strchr(out, '\n') + 1;
  return out;
}

static int text_len(const char *out) {
  const char *end = strstr(out, "\n[");
  return end ? (int)(end - text_of(out)) : -1;
}

static int cached_of(const char *out) {
  const char *at = strstr(out, " prompt tokens (");
  return at ? atoi(at + strlen(" prompt tokens (")) : -1;
}

/* generate --prompt-cache: the second run of a prompt reads all but its
 * last token from the file and writes the same text; a longer prompt
 * reads its shared beginning; other adapters or scales, a damaged file or
 * one that is no prompt cache are reported, and the text stays right (ref
 * backend: bit-exact). */
static void prompt_cache_checks(void) {
  const char *gen = "generate --backend ref --max-tokens 8 --temperature 0";
  const char *text = "one two three four five six seven eight nine ten eleven twelve";
  char *plain = NULL, *longer_plain = NULL, *out = NULL;
  MXL_CHECK(mxl(&plain, "%s --model %s/m --prompt '%s'", gen, root, text) == 0);
  MXL_CHECK(mxl(&longer_plain, "%s --model %s/m --prompt '%s and more'", gen, root, text) == 0);
  int n = text_len(plain), n_longer = text_len(longer_plain);
  MXL_CHECK(n >= 0 && n_longer >= 0);
  int prompt_tokens = atoi(strstr(plain, "\n[") + 2);
  /* the text of `out` is the reference's, and it read `expect` tokens */
#define SAME_AS(ref, len, expect)                                                        \
  do {                                                                                   \
    MXL_CHECK_MSG(text_len(out) == (len) && !memcmp(text_of(out), ref, (size_t)(len)),   \
                  "text differs:\n%s\n%s", out, ref);                                    \
    MXL_CHECK_MSG(cached_of(out) == (expect), "cached %d, expected %d: %s",             \
                  cached_of(out), expect, out);                                          \
  } while (0)
  for (int run = 0; run < 2; run++) {
    MXL_CHECK(mxl(&out, "%s --model %s/m --prompt '%s' --prompt-cache %s/p.cache", gen, root,
                  text, root) == 0);
    SAME_AS(plain, n, run ? prompt_tokens - 1 : 0);
    free(out);
  }
  MXL_CHECK(mxl(&out, "%s --model %s/m --prompt '%s and more' --prompt-cache %s/p.cache", gen,
                root, text, root) == 0);
  MXL_CHECK_MSG(cached_of(out) >= prompt_tokens - 2 && text_len(out) == n_longer &&
                    !memcmp(text_of(out), longer_plain, (size_t)n_longer),
                "%s\n%s", out, longer_plain);
  free(out);
  /* the file now holds the longer prompt; an adapter changes every key
   * and value after the first layer: not read, replaced */
  MXL_CHECK(mxl(&out, "%s --model %s/m --prompt '%s' --prompt-cache %s/p.cache --adapter "
                "%s/run/adapter.mxla:0.5", gen, root, text, root, root) == 0);
  MXL_CHECK_MSG(strstr(out, "made for another model, other adapters or other scales") &&
                    cached_of(out) == 0, "%s", out);
  free(out);
  MXL_CHECK(mxl(&out, "%s --model %s/m --prompt '%s' --prompt-cache %s/p.cache --adapter "
                "%s/run/adapter.mxla:0.5", gen, root, text, root, root) == 0);
  MXL_CHECK_MSG(cached_of(out) == prompt_tokens - 1, "%s", out);
  free(out);
  /* a flipped byte in the keys and values: reported, recomputed */
  char path[160], *data = NULL;
  size_t size = 0;
  snprintf(path, sizeof path, "%s/p.cache", root);
  MXL_CHECK_OK(mxl_read_file(path, 1 << 26, &data, &size));
  if (data && size > 100) {
    data[size - 5] ^= 0x40;
    MXL_CHECK_OK(mxl_write_file_atomic(path, data, size));
  }
  free(data);
  MXL_CHECK(mxl(&out, "%s --model %s/m --prompt '%s' --prompt-cache %s/p.cache --adapter "
                "%s/run/adapter.mxla:0.5", gen, root, text, root, root) == 0);
  MXL_CHECK_MSG(strstr(out, "prompt cache not used") && strstr(out, "corrupted") &&
                    cached_of(out) == 0, "%s", out);
  free(out);
  /* a file that cannot be written: reported, the text unchanged */
  MXL_CHECK(mxl(&out, "%s --model %s/m --prompt '%s' --prompt-cache %s/no/such/dir/p.cache", gen,
                root, text, root) == 0);
  SAME_AS(plain, n, 0);
  MXL_CHECK_MSG(strstr(out, "prompt cache not written"), "%s", out);
  free(out);
  /* a file that is no prompt cache is neither read nor replaced */
  MXL_CHECK(mxl(&out, "%s --model %s/m --prompt '%s' --prompt-cache %s/d.jsonl", gen, root,
                text, root) == 0);
  SAME_AS(plain, n, 0);
  MXL_CHECK_MSG(strstr(out, "is not a prompt cache: not read, not replaced"), "%s", out);
  free(out);
  char *jsonl = NULL;
  snprintf(path, sizeof path, "%s/d.jsonl", root);
  MXL_CHECK_OK(mxl_read_file(path, 1 << 20, &jsonl, &size));
  MXL_CHECK(jsonl && !strncmp(jsonl, "{\"prompt\":", 10));
  free(jsonl);
#undef SAME_AS
  free(plain), free(longer_plain);
}

static void test_train_generate_eval(void) {
  char data[128];
  snprintf(data, sizeof data, "%s/d.jsonl", root);
  FILE *fp = fopen(data, "w");
  for (int i = 0; i < 12; i++)
    fprintf(fp, "{\"prompt\": \"Say %d\", \"completion\": \"%d!\"}\n", i, i * 7);
  fclose(fp);
  EXPECT(0, "adapter:", "train --model %s/m --data %s --out %s/run --steps 3 --seq-len 192 "
         "--batch-size 2 --set eval_count=2 --rank 4", root, data, root);
  prompt_cache_checks();
  EXPECT(0, "tok/s", "generate --model %s/m --adapter %s/run/adapter.mxla:0.5 --chat "
         "--prompt 'Say 3' --max-tokens 6 --seed 1", root, root);
  EXPECT(0, "with adapter", "eval --model %s/m --data %s --adapter %s/run/adapter.mxla "
         "--seq-len 192", root, data, root);
  EXPECT(0, "rank", "inspect %s/run/adapter.mxla", root);
  EXPECT(1, "expected cuda:N", "generate --model %s/m --prompt x --backend cuda:x", root);
  EXPECT(1, "expected cpu, cuda", "eval --model %s/m --data %s --backend gpu", root, data);
  EXPECT(0, "tok/s", "generate --model %s/m --prompt x --backend auto --max-tokens 1", root);
  EXPECT(1, "nope.mxla", "generate --model %s/m --adapter %s/nope.mxla --prompt x", root, root);
  EXPECT(0, "tok/s", "generate --model %s/m/metal --adapter %s/run/adapter.mxla --prompt x "
         "--max-tokens 2", root, root);
  char chat[128];
  snprintf(chat, sizeof chat, "%s/c.json", root);
  fp = fopen(chat, "w");
  fputs("[{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": "
        "\"Hello\"}]", fp);
  fclose(fp);
  EXPECT(0, "\"trained\":", "tokenize --model %s/m --chat %s", root, chat);
  EXPECT(1, "after the JSON value", "tokenize --model %s/m --chat %s/d.jsonl", root, root);
  /* Hand edits of the adapter's alpha or the checkpoint's step are refused
   * (issues 13 and 14: both loaded silently before the header checksum). */
  MXL_CHECK(edit_digit("run/adapter.mxla", "\"alpha\":"));
  EXPECT(1, "header was edited", "eval --model %s/m --data %s --adapter %s/run/adapter.mxla "
         "--seq-len 192", root, data, root);
  MXL_CHECK(edit_digit("run/checkpoint.mxstate", "\"step\":"));
  EXPECT(1, "header was edited", "train --model %s/m --data %s --out %s/run --steps 4 "
         "--seq-len 192 --batch-size 2 --set eval_count=2 --rank 4 --resume", root, data, root);
}

int main(void) {
  snprintf(root, sizeof root, "/tmp/mxl_cli_XXXXXX");
  if (!mkdtemp(root)) return 1;
  MXL_RUN(test_usage_errors);
  MXL_RUN(test_strict_flags);
  MXL_RUN(test_tiny_and_inspect);
  MXL_RUN(test_generate_all_layouts);
  MXL_RUN(test_train_generate_eval);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
  return mxl_test_summary("cli");
}
