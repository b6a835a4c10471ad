/* The o200k_harmony tokenizer: parity with tiktoken on a committed corpus
 * (tools/gen_tokenizer_fixtures.py), docs/gpt-oss.md §6.5 vectors, streaming decode,
 * the tokenizer.json and metal writers/readers, BPE training, the CLI, and
 * every loader's error paths. Tests that need the real vocabulary read
 * MXL_SHARED_DIR/data/o200k_base.tiktoken and skip when it is absent. */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/sha256.h"
#include "datasets/tokenizer.h"
#include "test.h"

#define VOCAB_PATH MXL_SHARED_DIR "/data/o200k_base.tiktoken"
#define CORPUS_PATH MXL_SOURCE_DIR "/tests/fixtures/tokenizer/o200k_corpus.txt"

static mxl_tokenizer *o200k; /* loaded once; NULL when the vocabulary is absent */
static char tmp_dir[64];

/* ------------------------------------------------------------ helpers */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static char *tmp_path(const char *name) { return mxl_path_join(tmp_dir, name); }

static void write_bytes(const char *path, const void *data, size_t n) {
  MXL_CHECK_OK(mxl_write_file_atomic(path, data, n));
}

static int b64v(char c) {
  const char *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const char *p = c ? strchr(abc, c) : NULL;
  return p ? (int)(p - abc) : -1;
}

/* Test-side base64 decoder (independent of the library's). */
static size_t b64dec(const char *s, size_t n, uint8_t *out) {
  size_t len = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n && s[i] != '='; i++) {
    acc = acc << 6 | (uint32_t)b64v(s[i]);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[len++] = (uint8_t)(acc >> bits);
    }
  }
  return len;
}

static int ids_equal(const mxl_ids *a, const int32_t *b, size_t n) {
  return a->n == n && (n == 0 || memcmp(a->data, b, n * sizeof *b) == 0);
}

static mxl_ids encode(const mxl_tokenizer *tok, const char *s, int special) {
  mxl_ids ids = {0};
  MXL_CHECK_OK(mxl_tokenizer_encode(tok, s, strlen(s), special, &ids));
  return ids;
}

static void check_encode(const mxl_tokenizer *tok, const char *s, int special,
                         const int32_t *want, size_t n) {
  mxl_ids ids = encode(tok, s, special);
  MXL_CHECK_MSG(ids_equal(&ids, want, n), "\"%s\": got %zu ids (first %d)", s, ids.n,
                ids.n ? ids.data[0] : -1);
  mxl_ids_free(&ids);
}

/* A corpus case: mode 'o' or 's', the text, the expected ids. */
typedef struct corpus_case {
  char mode;
  uint8_t *text;
  size_t len;
  int32_t *ids;
  size_t n_ids;
} corpus_case;

static corpus_case *corpus;
static size_t n_corpus;

static void load_corpus(void) {
  char *data = NULL;
  size_t size = 0;
  MXL_CHECK_OK(mxl_read_file(CORPUS_PATH, 8u << 20, &data, &size));
  if (!data) return;
  size_t cap = 0;
  for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
    if (line[0] == '#') continue;
    if (n_corpus == cap) {
      cap = cap ? cap * 2 : 1024;
      corpus = realloc(corpus, cap * sizeof *corpus);
    }
    corpus_case *c = &corpus[n_corpus++];
    c->mode = line[0];
    char *b64 = line + 2, *sp = strchr(b64, ' ');
    size_t b64_len = sp ? (size_t)(sp - b64) : strlen(b64);
    c->text = malloc(b64_len + 1);
    c->len = b64dec(b64, b64_len, c->text);
    c->ids = malloc((strlen(line) / 2 + 1) * sizeof *c->ids);
    c->n_ids = 0;
    for (char *p = sp; p && *p;) {
      char *end;
      long v = strtol(p, &end, 10);
      if (end == p) break;
      c->ids[c->n_ids++] = (int32_t)v;
      p = end;
    }
  }
  free(data);
}

/* Encodes every corpus case with tok and compares with tiktoken's ids. */
static void check_corpus(const mxl_tokenizer *tok, const char *what, int with_special) {
  size_t bad = 0, n_ids = 0, n_special = 0, n_strings = 0;
  for (size_t i = 0; i < n_corpus; i++) {
    const corpus_case *c = &corpus[i];
    if (c->mode == 's' && !with_special) continue;
    mxl_ids ids = {0};
    MXL_CHECK_OK(mxl_tokenizer_encode(tok, (const char *)c->text, c->len, c->mode == 's', &ids));
    n_ids += c->n_ids;
    n_strings++;
    n_special += c->mode == 's';
    if (!ids_equal(&ids, c->ids, c->n_ids) && bad++ < 5) {
      size_t k = 0;
      while (k < ids.n && k < c->n_ids && ids.data[k] == c->ids[k]) k++;
      MXL_CHECK_MSG(0, "%s: corpus case %zu (%zu bytes): first difference at id %zu: %d vs %d",
                    what, i, c->len, k, k < ids.n ? ids.data[k] : -1,
                    k < c->n_ids ? c->ids[k] : -1);
    }
    mxl_ids_free(&ids);
  }
  MXL_CHECK_MSG(bad == 0, "%s: %zu corpus strings differ", what, bad);
  fprintf(stderr, "%s: %zu strings (%zu with specials allowed), %zu ids compared, %zu differ\n",
          what, n_strings, n_special, n_ids, bad);
}

/* ------------------------------------------------------------ the vocabulary */

static int vocab_ok(void) {
  if (!mxl_path_exists(VOCAB_PATH)) return 0;
  uint8_t digest[MXL_SHA256_SIZE];
  char hex[MXL_SHA256_HEX_SIZE], *want = NULL;
  MXL_CHECK_OK(mxl_sha256_file(VOCAB_PATH, digest));
  mxl_sha256_hex(digest, hex);
  MXL_CHECK_OK(mxl_read_file(VOCAB_PATH ".sha256", 4096, &want, NULL));
  int ok = want && strncmp(want, hex, 64) == 0;
  MXL_CHECK_MSG(ok, "%s: SHA-256 %s does not match %s.sha256", VOCAB_PATH, hex, VOCAB_PATH);
  free(want);
  return ok;
}

static void test_load_o200k(void) {
  if (!vocab_ok()) MXL_SKIP("%s is absent", VOCAB_PATH);
  MXL_CHECK_OK(mxl_tokenizer_load(VOCAB_PATH, &o200k));
  if (!o200k) return;
  const mxl_token_table *t = mxl_tokenizer_table(o200k);
  MXL_CHECK(t->n_text == 199998);
  MXL_CHECK(t->n_special == 21 && t->special_base == 199998);
  MXL_CHECK(mxl_tokenizer_n_tokens(o200k) == 200019);
  size_t total = 0;
  uint32_t longest = 0;
  for (int i = 0; i < t->n_text; i++) {
    total += t->text_len[i];
    if (t->text_len[i] > longest) longest = t->text_len[i];
  }
  MXL_CHECK(total == 1397670); /* docs/gpt-oss.md §6.1 */
  MXL_CHECK(longest == 128);
  MXL_CHECK(strlen(t->regex) == 274);
  MXL_CHECK(mxl_tokenizer_special(o200k, "<|startoftext|>") == 199998);
  MXL_CHECK(mxl_tokenizer_special(o200k, "<|return|>") == 200002);
  MXL_CHECK(mxl_tokenizer_special(o200k, "<|start|>") == 200006);
  MXL_CHECK(mxl_tokenizer_special(o200k, "<|endofprompt|>") == 200018);
  MXL_CHECK(mxl_tokenizer_special(o200k, "<|nope|>") == -1);
  uint32_t len = 0;
  const uint8_t *b = mxl_tokenizer_token_bytes(o200k, 200007, &len);
  MXL_CHECK(b && len == 7 && !memcmp(b, "<|end|>", 7));
  MXL_CHECK(mxl_tokenizer_token_bytes(o200k, 200019, &len) == NULL && len == 0);
  MXL_CHECK(mxl_tokenizer_token_bytes(o200k, -1, NULL) == NULL);
}

static void test_spec_vectors(void) {
  if (!o200k) MXL_SKIP("no vocabulary");
  check_encode(o200k, "hello world", 0, (const int32_t[]){24912, 2375}, 2);
  check_encode(o200k, "Hello World", 0, (const int32_t[]){13225, 5922}, 2);
  const char *chat = "<|startoftext|><|start|><|message|>Hello World<|end|><|endoftext|>";
  check_encode(o200k, chat, 1,
               (const int32_t[]){199998, 200006, 200008, 13225, 5922, 200007, 199999}, 7);
  static const struct {
    const char *s;
    int32_t id;
  } single[] = {{"user", 1428},       {"assistant", 173781}, {"system", 17360},
                {"developer", 77944}, {"analysis", 35644},   {"final", 17196},
                {" to", 316},         {"=", 28},             {"functions", 44580},
                {"json", 4108},       {" json", 5701}};
  for (size_t i = 0; i < sizeof single / sizeof single[0]; i++)
    check_encode(o200k, single[i].s, 0, &single[i].id, 1);
  check_encode(o200k, "commentary", 0, (const int32_t[]){12606, 815}, 2);
  check_encode(o200k, "What is 2 + 2?", 0,
               (const int32_t[]){4827, 382, 220, 17, 659, 220, 17, 30}, 8);
  /* Without allow_special, special names are text. */
  mxl_ids ids = encode(o200k, "<|start|>", 0);
  MXL_CHECK(ids.n > 1);
  for (size_t i = 0; i < ids.n; i++) MXL_CHECK(ids.data[i] < 199998);
  mxl_ids_free(&ids);
  check_encode(o200k, "", 1, NULL, 0);
}

static void test_corpus_parity(void) {
  if (!o200k) MXL_SKIP("no vocabulary");
  MXL_CHECK(n_corpus >= 3000);
  check_corpus(o200k, "tiktoken file", 1);
}

/* decode(encode(x)) == x for every corpus case, and the streaming decoder
 * gives the same bytes without ever splitting a character of valid text. */
static int valid_utf8(const char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    size_t k = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
    if (!k || i + k > n) return 0;
    uint32_t cp = k == 1 ? c : (uint32_t)(c & (0x7f >> k));
    for (size_t j = 1; j < k; j++) {
      if (((unsigned char)s[i + j] & 0xc0) != 0x80) return 0;
      cp = cp << 6 | ((unsigned char)s[i + j] & 0x3f);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    i += k;
  }
  return 1;
}

static void test_decode_and_stream(void) {
  if (!o200k) MXL_SKIP("no vocabulary");
  size_t bad = 0, split = 0;
  for (size_t i = 0; i < n_corpus; i++) {
    const corpus_case *c = &corpus[i];
    char *text = NULL;
    size_t len = 0;
    MXL_CHECK_OK(mxl_tokenizer_decode(o200k, c->ids, c->n_ids, &text, &len));
    if (!text || len != c->len || memcmp(text, c->text, len)) bad++;
    free(text);
    char *acc = malloc(c->len + 64), chunk[256];
    size_t n = 0;
    mxl_decode_stream s = {0};
    int valid = valid_utf8((const char *)c->text, c->len);
    for (size_t k = 0; k < c->n_ids; k++) {
      int got = mxl_decode_stream_push(o200k, &s, c->ids[k], chunk, sizeof chunk);
      MXL_CHECK(got >= 0);
      if (got < 0) break;
      if (valid && !valid_utf8(chunk, (size_t)got)) split++;
      memcpy(acc + n, chunk, (size_t)got);
      n += (size_t)got;
    }
    int got = mxl_decode_stream_flush(&s, chunk, sizeof chunk);
    MXL_CHECK(got >= 0 && (!valid || got == 0));
    if (got > 0) memcpy(acc + n, chunk, (size_t)got), n += (size_t)got;
    if (n != c->len || memcmp(acc, c->text, n)) bad++;
    free(acc);
  }
  MXL_CHECK_MSG(bad == 0, "%zu round trips differ", bad);
  MXL_CHECK_MSG(split == 0, "%zu streamed chunks split a character", split);
  int32_t bad_id = 250000;
  char *text = NULL;
  MXL_CHECK_FAILS(mxl_tokenizer_decode(o200k, &bad_id, 1, &text, NULL), MXL_ERR_ARGUMENT,
                  "position 0");
}

/* The streaming decoder byte by byte: o200k's single-byte tokens are found
 * by encoding the lone bytes. */
static void test_stream_exact(void) {
  if (!o200k) MXL_SKIP("no vocabulary");
  mxl_ids e = encode(o200k, "\xc3", 0), a = encode(o200k, "\xa9", 0);
  MXL_CHECK(e.n == 1 && a.n == 1);
  mxl_decode_stream s = {0};
  char out[256];
  if (e.n == 1 && a.n == 1) {
    MXL_CHECK(mxl_decode_stream_push(o200k, &s, e.data[0], out, sizeof out) == 0);
    MXL_CHECK(mxl_decode_stream_push(o200k, &s, a.data[0], out, sizeof out) == 2 &&
              !memcmp(out, "\xc3\xa9", 2));
    /* An invalid continuation releases the held byte at once. */
    MXL_CHECK(mxl_decode_stream_push(o200k, &s, e.data[0], out, sizeof out) == 0);
    mxl_ids x = encode(o200k, "x", 0);
    MXL_CHECK(mxl_decode_stream_push(o200k, &s, x.data[0], out, sizeof out) == 2 &&
              !memcmp(out, "\xc3x", 2));
    mxl_ids_free(&x);
    /* A special token flushes what is held. */
    MXL_CHECK(mxl_decode_stream_push(o200k, &s, e.data[0], out, sizeof out) == 0);
    MXL_CHECK(mxl_decode_stream_push(o200k, &s, 200007, out, sizeof out) == 8 &&
              !memcmp(out, "\xc3<|end|>", 8));
    MXL_CHECK(mxl_decode_stream_push(o200k, &s, e.data[0], out, sizeof out) == 0);
    MXL_CHECK(mxl_decode_stream_flush(&s, out, 0) == -1);
    MXL_CHECK(mxl_decode_stream_flush(&s, out, sizeof out) == 1 && out[0] == '\xc3');
  }
  mxl_ids_free(&e);
  mxl_ids_free(&a);
}

/* Pieces over 128 bytes go through the heap merge (the corpus holds such
 * pieces, checked against tiktoken there); here: very long pieces stay
 * exact and fast. */
static void test_long_pieces(void) {
  if (!o200k) MXL_SKIP("no vocabulary");
  char buf[4096];
  memset(buf, ' ', sizeof buf);
  mxl_ids ids = {0};
  MXL_CHECK_OK(mxl_tokenizer_encode(o200k, buf, sizeof buf, 0, &ids));
  char *text = NULL;
  size_t len = 0;
  MXL_CHECK_OK(mxl_tokenizer_decode(o200k, ids.data, ids.n, &text, &len));
  MXL_CHECK(len == sizeof buf && text && !memcmp(text, buf, len));
  free(text);
  mxl_ids_free(&ids);
  /* 1 MB of whitespace and newlines: one regex piece, must stay fast and exact. */
  size_t big = 1 << 20;
  char *ws = malloc(big);
  for (size_t i = 0; i < big; i++) ws[i] = " \t\n"[i % 7 == 0 ? 2 : i % 3 == 0];
  MXL_CHECK_OK(mxl_tokenizer_encode(o200k, ws, big, 0, &ids));
  MXL_CHECK_OK(mxl_tokenizer_decode(o200k, ids.data, ids.n, &text, &len));
  MXL_CHECK(len == big && text && !memcmp(text, ws, len));
  free(text);
  free(ws);
  mxl_ids_free(&ids);
}

/* ------------------------------------------------------------ writers */

static void test_hf_roundtrip(void) {
  if (!o200k) MXL_SKIP("no vocabulary");
  char *dir = tmp_path("hf");
  MXL_CHECK_OK(mxl_tokenizer_write_hf(mxl_tokenizer_table(o200k), dir));
  mxl_tokenizer *hf = NULL;
  MXL_CHECK_OK(mxl_tokenizer_load(dir, &hf));
  if (hf) {
    const mxl_token_table *a = mxl_tokenizer_table(o200k), *b = mxl_tokenizer_table(hf);
    MXL_CHECK(a->n_text == b->n_text && a->n_special == b->n_special &&
              a->special_base == b->special_base && !strcmp(a->regex, b->regex));
    int same = 1;
    for (int i = 0; i < a->n_text && same; i++)
      same = a->text_len[i] == b->text_len[i] && !memcmp(a->text[i], b->text[i], a->text_len[i]);
    for (int i = 0; i < a->n_special && same; i++) same = !strcmp(a->special[i], b->special[i]);
    MXL_CHECK_MSG(same, "tokenizer.json does not give back the table");
    check_corpus(hf, "tokenizer.json written by mxlora", 1);
    mxl_tokenizer_free(hf);
  }
  char *cfg_path = mxl_path_join(dir, "tokenizer_config.json"), *cfg = NULL;
  MXL_CHECK_OK(mxl_read_file(cfg_path, 1 << 20, &cfg, NULL));
  MXL_CHECK(cfg && strstr(cfg, "\"bos_token\": \"<|startoftext|>\"") &&
            strstr(cfg, "\"eos_token\": \"<|return|>\"") &&
            strstr(cfg, "\"pad_token\": \"<|endoftext|>\"") &&
            strstr(cfg, "\"tokenizer_class\": \"PreTrainedTokenizerFast\"") &&
            strstr(cfg, "\"model_max_length\": 131072") && strstr(cfg, "\"200018\""));
  free(cfg);
  free(cfg_path);
  char *map_path = mxl_path_join(dir, "special_tokens_map.json"), *map = NULL;
  MXL_CHECK_OK(mxl_read_file(map_path, 1 << 20, &map, NULL));
  MXL_CHECK(map && strstr(map, "\"pad_token\"") && strstr(map, "<|return|>"));
  free(map);
  free(map_path);
  free(dir);
}

static void test_metal_roundtrip(void) {
  if (!o200k) MXL_SKIP("no vocabulary");
  uint8_t *sec = NULL;
  size_t size = 0;
  MXL_CHECK_OK(mxl_tokenizer_metal_section(mxl_tokenizer_table(o200k), &sec, &size));
  if (!sec) return;
  /* docs/gpt-oss.md §4.1: 16 specials, 199998 tokens, regex 275 bytes, tokens 1,797,666. */
  uint32_t h[4];
  memcpy(h, sec, 16);
  MXL_CHECK(h[0] == 16 && h[1] == 199998 && h[2] == 275 && h[3] == 1797666);
  MXL_CHECK(size == 16 + 16 * 16 + 275 + 1797666);
  MXL_CHECK(132 + size <= 1802240 && 132 + size > 1802240 - 16384); /* weights at 110 x 16 KiB */
  /* Slot 8 (id 200006) holds <|start|>'s UUID 55a77c2f-...; slot 0 is zero. */
  static const uint8_t start_uuid[4] = {0x55, 0xa7, 0x7c, 0x2f};
  static const uint8_t zero[16] = {0};
  MXL_CHECK(!memcmp(sec + 16 + 16 * 8, start_uuid, 4));
  MXL_CHECK(!memcmp(sec + 16, zero, 16) && !memcmp(sec + 16 + 16 * 3, zero, 16));
  mxl_tokenizer *m = NULL;
  MXL_CHECK_OK(mxl_tokenizer_from_metal_section(sec, size, &m));
  if (m) {
    MXL_CHECK(mxl_tokenizer_special(m, "<|start|>") == 200006);
    MXL_CHECK(mxl_tokenizer_special(m, "<|message|>") == 200008);
    MXL_CHECK(mxl_tokenizer_special(m, "<|return|>") == 200002);
    MXL_CHECK(mxl_tokenizer_special(m, "<|call|>") == 200012);
    MXL_CHECK(mxl_tokenizer_special(m, "<|untrusted|>") == 200000);
    MXL_CHECK(mxl_tokenizer_special(m, "<|refusal|>") == 200013);
    MXL_CHECK(mxl_tokenizer_special(m, "<|endoftext|>") == 199999);
    MXL_CHECK(mxl_tokenizer_special(m, "<|reserved_200001|>") == 200001);
    MXL_CHECK(mxl_tokenizer_n_tokens(m) == 200014);
    /* 16 specials only (no <|reserved_200014|>..): ordinary cases. */
    check_corpus(m, "metal section written by mxlora", 0);
    mxl_tokenizer_free(m);
  }
  /* The same through a model.bin file found in a model folder. */
  char *dir = tmp_path("metalmodel"), *metal = mxl_path_join(dir, "metal");
  MXL_CHECK_OK(mxl_make_dirs(metal));
  char *bin = mxl_path_join(metal, "model.bin");
  uint8_t *file = calloc(1, 132 + size);
  memcpy(file, "GPT-OSS v1.0", 12);
  static const uint8_t tiktoken_uuid[16] = {0x74, 0x01, 0xad, 0xed, 0x2a, 0x95, 0x40, 0xcb,
                                            0xb7, 0x82, 0x9c, 0xce, 0xba, 0xaf, 0xe7, 0x2b};
  memcpy(file + 116, tiktoken_uuid, 16);
  memcpy(file + 132, sec, size);
  write_bytes(bin, file, 132 + size);
  MXL_CHECK_OK(mxl_tokenizer_load(dir, &m));
  MXL_CHECK(m && mxl_tokenizer_special(m, "<|end|>") == 200007);
  mxl_tokenizer_free(m);
  file[116] ^= 1;
  write_bytes(bin, file, 132 + size);
  MXL_CHECK_FAILS(mxl_tokenizer_load(bin, &m), MXL_ERR_UNSUPPORTED, "tokenizer UUID");
  file[0] = 'X';
  write_bytes(bin, file, 132 + size);
  MXL_CHECK_FAILS(mxl_tokenizer_load(bin, &m), MXL_ERR_FORMAT, "GPT-OSS v1.0");
  free(file);
  free(bin);
  free(metal);
  free(dir);
  free(sec);
}

/* ------------------------------------------------------------ small tables */

/* A table of the 256 bytes plus a few merges, built by hand. */
static const char *const small_merges[] = {"ab", "abc", " a", "bc"};

static void small_table(mxl_token_table *t, const uint8_t **text, uint32_t *len,
                        uint8_t bytes[256], const char *const *special, int n_special) {
  for (int b = 0; b < 256; b++) bytes[b] = (uint8_t)b, text[b] = bytes + b, len[b] = 1;
  for (int i = 0; i < 4; i++) {
    text[256 + i] = (const uint8_t *)small_merges[i];
    len[256 + i] = (uint32_t)strlen(small_merges[i]);
  }
  *t = (mxl_token_table){.n_text = 260, .text = text, .text_len = len, .n_special = n_special,
                         .special_base = 260, .special = special, .regex = NULL};
}

static void test_small_table(void) {
  const uint8_t *text[260];
  uint32_t len[260];
  uint8_t bytes[256];
  const char *const special[] = {"<|a|>", "<|ab|>"};
  mxl_token_table t;
  small_table(&t, text, len, bytes, special, 2);
  mxl_tokenizer *tok = NULL;
  MXL_CHECK_OK(mxl_tokenizer_from_table(&t, &tok));
  if (!tok) return;
  /* "abc" is a whole token. " abc": pairs " a"=258, "ab"=256, "bc"=259;
   * ab first, then ab+c=257; " abc" is no token, so [' ', 257]. */
  check_encode(tok, "abc", 0, (const int32_t[]){257}, 1);
  check_encode(tok, " abc", 0, (const int32_t[]){' ', 257}, 2);
  check_encode(tok, "abbc", 0, (const int32_t[]){256, 259}, 2);
  /* Specials split out; "<|a" alone is text. */
  check_encode(tok, "x<|ab|><|a|><|a", 1,
               (const int32_t[]){'x', 261, 260, '<', '|', 'a'}, 6);
  MXL_CHECK(mxl_tokenizer_special(tok, "<|ab|>") == 261);
  mxl_tokenizer_free(tok);

  /* Errors: a repeated token, a missing byte, a bad regex, no names. */
  text[259] = (const uint8_t *)"ab";
  len[259] = 2;
  MXL_CHECK_FAILS(mxl_tokenizer_from_table(&t, &tok), MXL_ERR_FORMAT, "token 259 repeats");
  small_table(&t, text, len, bytes, special, 2);
  t.regex = "(unclosed";
  MXL_CHECK_FAILS(mxl_tokenizer_from_table(&t, &tok), MXL_ERR_FORMAT, "tokenizer regex");
  t.regex = NULL;
  const char *const dup[] = {"<|a|>", "<|a|>"};
  t.special = dup;
  MXL_CHECK_FAILS(mxl_tokenizer_from_table(&t, &tok), MXL_ERR_ARGUMENT, "appears twice");
  small_table(&t, text, len, bytes, special, 2);
  t.special_base = 10;
  MXL_CHECK_FAILS(mxl_tokenizer_from_table(&t, &tok), MXL_ERR_ARGUMENT, "special_base");
  small_table(&t, text, len, bytes, special, 2);
  /* Bytes 0x00 and 0xff without a token of their own. */
  text[0] = (const uint8_t *)"zz";
  len[0] = 2;
  text[255] = (const uint8_t *)"zzz";
  len[255] = 3;
  MXL_CHECK_OK(mxl_tokenizer_from_table(&t, &tok));
  if (tok) {
    mxl_ids ids = {0};
    MXL_CHECK_FAILS(mxl_tokenizer_encode(tok, "a\xff", 2, 0, &ids), MXL_ERR_UNSUPPORTED,
                    "byte 0xff");
    MXL_CHECK_FAILS(mxl_tokenizer_encode(tok, "\x01\x00", 2, 0, &ids), MXL_ERR_UNSUPPORTED,
                    "byte 0x00");
    mxl_ids_free(&ids);
    mxl_tokenizer_free(tok);
  }
}

/* Hand-worked BPE training (the counts are in the comments). */
static void test_bpe_train(void) {
  mxl_token_table *t = NULL;
  /* Pieces "ab", " ab", " ab", " cd": (a,b) x3 -> "ab"; then (' ',ab) x2
   * -> " ab"; nothing occurs twice after that. */
  const char *c1 = "ab ab ab cd";
  MXL_CHECK_OK(mxl_bpe_train(c1, strlen(c1), NULL, 300, &t));
  if (t) {
    MXL_CHECK(t->n_text == 258 && t->special_base == 258 && t->n_special == 21);
    MXL_CHECK(t->text_len[256] == 2 && !memcmp(t->text[256], "ab", 2));
    MXL_CHECK(t->text_len[257] == 3 && !memcmp(t->text[257], " ab", 3));
    for (int b = 0; b < 256; b++) MXL_CHECK(t->text_len[b] == 1 && t->text[b][0] == b);
    MXL_CHECK(!strcmp(t->special[8], "<|start|>"));
    mxl_token_table_free(t);
  }
  /* Pieces "ba", " ba", " ab", " ab": (b,a), (' ',a) and (a,b) occur twice
   * each; ties go to the lowest (left, right) ids: (' ',a)=(32,97) -> " a".
   * Then (b,a)=(98,97) beats (" a",b)=(256,98) -> "ba"; then " ab". */
  const char *c2 = "ba ba ab ab";
  MXL_CHECK_OK(mxl_bpe_train(c2, strlen(c2), NULL, 300, &t));
  if (t) {
    MXL_CHECK(t->n_text == 259);
    MXL_CHECK(t->text_len[256] == 2 && !memcmp(t->text[256], " a", 2));
    MXL_CHECK(t->text_len[257] == 2 && !memcmp(t->text[257], "ba", 2));
    MXL_CHECK(t->text_len[258] == 3 && !memcmp(t->text[258], " ab", 3));
    mxl_token_table_free(t);
  }
  /* The n_text limit, and a corpus with invalid UTF-8: it encodes and
   * decodes itself exactly with the learned table. */
  char corpus[6000];
  size_t n = 0;
  while (n + 60 < sizeof corpus)
    n += (size_t)snprintf(corpus + n, sizeof corpus - n, "the cat sat on the mat %zu \xff\xfe ", n % 97);
  MXL_CHECK_OK(mxl_bpe_train(corpus, n, NULL, 280, &t));
  if (t) {
    MXL_CHECK(t->n_text == 280);
    mxl_tokenizer *tok = NULL;
    MXL_CHECK_OK(mxl_tokenizer_from_table(t, &tok));
    if (tok) {
      mxl_ids ids = {0};
      MXL_CHECK_OK(mxl_tokenizer_encode(tok, corpus, n, 0, &ids));
      MXL_CHECK(ids.n < n / 2);
      char *back = NULL;
      size_t len = 0;
      MXL_CHECK_OK(mxl_tokenizer_decode(tok, ids.data, ids.n, &back, &len));
      MXL_CHECK(len == n && back && !memcmp(back, corpus, n));
      free(back);
      mxl_ids_free(&ids);
      /* The writers accept a trained table; tokenizer.json loads back. */
      char *dir = tmp_path("trained");
      MXL_CHECK_OK(mxl_tokenizer_write_hf_ex(t, dir, 4096));
      mxl_tokenizer *hf = NULL;
      MXL_CHECK_OK(mxl_tokenizer_load(dir, &hf));
      MXL_CHECK(hf && mxl_tokenizer_n_tokens(hf) == 301);
      mxl_tokenizer_free(hf);
      free(dir);
      mxl_tokenizer_free(tok);
    }
    mxl_token_table_free(t);
  }
  MXL_CHECK_FAILS(mxl_bpe_train("x", 1, NULL, 100, &t), MXL_ERR_ARGUMENT, "n_text");
  MXL_CHECK_FAILS(mxl_bpe_train("x", 1, "(", 300, &t), MXL_ERR_FORMAT, "regex");
}

/* ------------------------------------------------------------ error paths */

static void expect_tiktoken_error(const char *text, mxl_status st, const char *needle) {
  mxl_tokenizer *tok = NULL;
  MXL_CHECK_FAILS(mxl_tokenizer_from_tiktoken(text, strlen(text), "x.tiktoken", &tok), st, needle);
  MXL_CHECK(tok == NULL);
}

static void test_tiktoken_errors(void) {
  /* A valid 256-byte file first: "AA== 0" ... */
  char *good = malloc(256 * 16), *p = good;
  for (int b = 0; b < 256; b++) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    p += sprintf(p, "%c%c== %d\r\n", abc[b >> 2], abc[(b & 3) << 4], 255 - b);
  }
  mxl_tokenizer *tok = NULL;
  MXL_CHECK_OK(mxl_tokenizer_from_tiktoken(good, strlen(good), "good.tiktoken", &tok));
  if (tok) {
    MXL_CHECK(mxl_tokenizer_n_tokens(tok) == 256 + 21);
    check_encode(tok, "A", 0, (const int32_t[]){255 - 'A'}, 1);
    mxl_tokenizer_free(tok);
  }
  free(good);
  expect_tiktoken_error("QQ== 0\nQg= 1\n", MXL_ERR_FORMAT, "line 2: bad base64");
  expect_tiktoken_error("QQ== 0\nQ!== 1\n", MXL_ERR_FORMAT, "line 2: bad base64");
  expect_tiktoken_error("QQ== 0\n\nQg== x1\n", MXL_ERR_FORMAT, "line 3: bad rank");
  expect_tiktoken_error("QQ== 0\nQg== \n", MXL_ERR_FORMAT, "line 2: bad rank");
  expect_tiktoken_error("QQ== 0\nQg== 99999999999\n", MXL_ERR_FORMAT, "line 2: bad rank");
  expect_tiktoken_error("QQ==0\n", MXL_ERR_FORMAT, "line 1: expected");
  expect_tiktoken_error("QQ== 0\nQg== 0\n", MXL_ERR_FORMAT, "line 2: rank 0 appears twice");
  expect_tiktoken_error("QQ== 0\nQg== 2\n", MXL_ERR_FORMAT, "rank 1 is missing");
  expect_tiktoken_error("QQ== 0\nQQ== 1\n", MXL_ERR_FORMAT, "token 1 repeats");
  expect_tiktoken_error("\n\n", MXL_ERR_FORMAT, "no tokens");
}

static void expect_metal_error(const uint8_t *data, size_t size, mxl_status st,
                               const char *needle) {
  mxl_tokenizer *tok = NULL;
  MXL_CHECK_FAILS(mxl_tokenizer_from_metal_section(data, size, &tok), st, needle);
  MXL_CHECK(tok == NULL);
}

static void test_metal_errors(void) {
  /* A small section: 2 specials, 256 byte tokens, regex "." */
  const uint8_t *text[260];
  uint32_t len[260];
  uint8_t bytes[256];
  const char *const special[] = {"<|start|>", "<|whatever|>"};
  mxl_token_table t;
  small_table(&t, text, len, bytes, special, 2);
  uint8_t *sec = NULL;
  size_t size = 0;
  MXL_CHECK_OK(mxl_tokenizer_metal_section(&t, &sec, &size));
  if (!sec) return;
  mxl_tokenizer *tok = NULL;
  MXL_CHECK_OK(mxl_tokenizer_from_metal_section(sec, size, &tok));
  MXL_CHECK(tok && mxl_tokenizer_special(tok, "<|start|>") == 260);
  /* slot 1 had no UUID: it gets the harmony name of offset 1 */
  MXL_CHECK(tok && mxl_tokenizer_special(tok, "<|endoftext|>") == 261);
  mxl_tokenizer_free(tok);
  /* Every truncation is caught. */
  for (size_t cut = 0; cut < size; cut += (cut < 64 ? 1 : 97)) {
    mxl_status st = mxl_tokenizer_from_metal_section(sec, cut, &tok);
    MXL_CHECK_MSG(st == MXL_ERR_FORMAT && !tok, "cut at %zu: %s", cut, mxl_status_name(st));
  }
  expect_metal_error(sec, 10, MXL_ERR_FORMAT, "header");
  expect_metal_error(sec, size - 1, MXL_ERR_FORMAT, "truncated");
  uint8_t *bad = malloc(size + 8);
  /* unknown UUID in slot 1 */
  memcpy(bad, sec, size);
  bad[16 + 16 + 5] = 0x42;
  expect_metal_error(bad, size, MXL_ERR_UNSUPPORTED, "slot 1 (id 261): unknown UUID");
  /* the same known UUID twice */
  memcpy(bad, sec, size);
  memcpy(bad + 32, bad + 16, 16);
  expect_metal_error(bad, size, MXL_ERR_FORMAT, "same UUID");
  /* regex without its NUL */
  memcpy(bad, sec, size);
  size_t regex_at = 16 + 32, regex_size = bad[8] | (size_t)bad[9] << 8;
  bad[regex_at + regex_size - 1] = 'x';
  expect_metal_error(bad, size, MXL_ERR_FORMAT, "regex");
  /* an empty token, and a length that runs past tokens_size */
  memcpy(bad, sec, size);
  size_t tok_at = regex_at + regex_size;
  bad[tok_at] = 0;
  expect_metal_error(bad, size, MXL_ERR_FORMAT, "token 0 (0 bytes) is empty");
  memcpy(bad, sec, size);
  bad[tok_at] = 0xff;
  bad[tok_at + 1] = 0xff;
  expect_metal_error(bad, size, MXL_ERR_FORMAT, "token 0 (65535 bytes) runs past");
  /* tokens_size larger than the tokens: bytes left over */
  memcpy(bad, sec, size);
  memset(bad + size, 0, 8);
  uint32_t ts;
  memcpy(&ts, bad + 12, 4);
  ts += 8;
  memcpy(bad + 12, &ts, 4);
  expect_metal_error(bad, size + 8, MXL_ERR_FORMAT, "8 bytes left over");
  /* absurd counts */
  memcpy(bad, sec, size);
  memset(bad + 4, 0, 4);
  expect_metal_error(bad, size, MXL_ERR_FORMAT, "num_text_tokens 0");
  free(bad);
  free(sec);
  /* The writer refuses a token the u16 length cannot hold. */
  uint8_t *huge = calloc(1, 70000);
  text[259] = huge;
  len[259] = 70000;
  MXL_CHECK_FAILS(mxl_tokenizer_metal_section(&t, &sec, &size), MXL_ERR_UNSUPPORTED,
                  "token 259 has 70000 bytes");
  free(huge);
}

/* A minimal valid tokenizer.json with the 256 bytes and one merge, then
 * variations that must be refused with the field named. */
static char *hf_json(const char *model_extra, const char *merges, const char *added,
                     const char *pre) {
  static const char *const default_pre =
      "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
      "\"\\\\s+|\\\\S+\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\","
      "\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]}";
  size_t cap = 1 << 16, n = 0;
  char *s = malloc(cap);
  n += (size_t)snprintf(s + n, cap - n,
                        "{\"version\":\"1.0\",\"added_tokens\":%s,\"normalizer\":null,"
                        "\"pre_tokenizer\":%s,\"decoder\":{\"type\":\"ByteLevel\"},"
                        "\"model\":{\"type\":\"BPE\",%s\"vocab\":{",
                        added, pre ? pre : default_pre, model_extra);
  /* GPT-2 byte-level names: printable bytes are themselves, others U+0100+ */
  int k = 0;
  for (int b = 0; b < 256; b++) {
    int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    unsigned cp = printable ? (unsigned)b : 256u + (unsigned)k++;
    const char *q = b == '"' ? "\\\"" : b == '\\' ? "\\\\" : NULL;
    if (q) n += (size_t)snprintf(s + n, cap - n, "\"%s\":%d,", q, b);
    else n += (size_t)snprintf(s + n, cap - n, "\"\\u%04x\":%d,", cp, b);
  }
  n += (size_t)snprintf(s + n, cap - n, "\"ab\":256},\"merges\":%s}}", merges);
  return s;
}

static void expect_hf(const char *json, mxl_status st, const char *needle) {
  mxl_tokenizer *tok = NULL;
  if (st == MXL_OK) {
    MXL_CHECK_OK(mxl_tokenizer_from_hf_json(json, strlen(json), "t.json", &tok));
    MXL_CHECK(tok && mxl_tokenizer_n_tokens(tok) == 258);
    if (tok) check_encode(tok, "ab <|x|>", 1, (const int32_t[]){256, ' ', 257}, 3);
    mxl_tokenizer_free(tok);
    return;
  }
  MXL_CHECK_FAILS(mxl_tokenizer_from_hf_json(json, strlen(json), "t.json", &tok), st, needle);
  MXL_CHECK(tok == NULL);
}

static void test_hf_errors(void) {
  const char *added = "[{\"id\":257,\"content\":\"<|x|>\",\"special\":true}]";
  struct {
    const char *extra, *merges, *added, *pre;
    mxl_status st;
    const char *needle;
  } cases[] = {
      {"\"ignore_merges\":true,", "[\"a b\"]", added, NULL, MXL_OK, ""},
      {"", "[[\"a\",\"b\"]]", added, NULL, MXL_OK, ""},
      {"\"dropout\":0.1,", "[]", added, NULL, MXL_ERR_UNSUPPORTED, "model.dropout"},
      {"\"unk_token\":\"a\",", "[]", added, NULL, MXL_ERR_UNSUPPORTED, "model.unk_token"},
      {"\"continuing_subword_prefix\":\"##\",", "[]", added, NULL, MXL_ERR_UNSUPPORTED,
       "model.continuing_subword_prefix"},
      {"\"byte_fallback\":true,", "[]", added, NULL, MXL_ERR_UNSUPPORTED, "model.byte_fallback"},
      {"\"ignore_merges\":false,", "[]", added, NULL, MXL_ERR_UNSUPPORTED, "model.ignore_merges"},
      {"", "[\"a c\"]", added, NULL, MXL_ERR_FORMAT, "model.merges[0]"},
      {"", "[\"ab\"]", added, NULL, MXL_ERR_FORMAT, "model.merges[0]"},
      {"", "[\"a b\", \"a b\", \"c d\"]", added, NULL, MXL_ERR_FORMAT, "model.merges[2]"},
      {"", "[\"a b\"]", "[{\"id\":5,\"content\":\"<|x|>\"}]", NULL, MXL_ERR_UNSUPPORTED,
       "added_tokens[0]: id 5 overlaps"},
      {"", "[\"a b\"]",
       "[{\"id\":257,\"content\":\"<|x|>\"},{\"id\":259,\"content\":\"<|y|>\"}]", NULL,
       MXL_ERR_UNSUPPORTED, "added_tokens[1]: ids must be consecutive"},
      {"", "[\"a b\"]", "[{\"id\":257}]", NULL, MXL_ERR_FORMAT, "added_tokens[0]: needs"},
      {"", "[\"a b\"]", added, "{\"type\":\"ByteLevel\",\"use_regex\":true}", MXL_ERR_UNSUPPORTED,
       "pre_tokenizer"},
      {"", "[\"a b\"]", added,
       "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"String\":"
       "\" \"},\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\"}]}",
       MXL_ERR_UNSUPPORTED, "pre_tokenizer.pretokenizers[0]"},
      {"", "[\"a b\"]", added,
       "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
       "\" \"},\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\",\"use_regex\":true}]}",
       MXL_ERR_UNSUPPORTED, "pre_tokenizer.pretokenizers[1]"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *json = hf_json(cases[i].extra, cases[i].merges, cases[i].added, cases[i].pre);
    expect_hf(json, cases[i].st, cases[i].needle);
    free(json);
  }
  /* Field-level edits of the good file. */
  char *json = hf_json("", "[]", added, NULL), *p;
  p = strstr(json, "\"BPE\"");
  memcpy(p, "\"BPX\"", 5);
  expect_hf(json, MXL_ERR_UNSUPPORTED, "model.type");
  free(json);
  json = hf_json("", "[]", added, NULL);
  p = strstr(json, "\"ab\":256");
  memcpy(p, "\"ab\":255", 8);
  expect_hf(json, MXL_ERR_FORMAT, "model.vocab: id 255 appears twice");
  free(json);
  json = hf_json("", "[]", added, NULL);
  p = strstr(json, "\"ab\":256");
  memcpy(p, "\" b\":256", 8); /* a raw space is not in the byte-level alphabet */
  expect_hf(json, MXL_ERR_FORMAT, "not a byte-level token");
  free(json);
  json = hf_json("", "[]", added, NULL);
  p = strstr(json, "\"normalizer\":null");
  memcpy(p, "\"normalizer\":true", 17);
  expect_hf(json, MXL_ERR_UNSUPPORTED, "normalizer");
  free(json);
  json = hf_json("", "[]", added, NULL);
  p = strstr(json, "{\"type\":\"ByteLevel\"}");
  memcpy(p, "{\"type\":\"Metaspace\"}", 20);
  expect_hf(json, MXL_ERR_UNSUPPORTED, "decoder.type");
  free(json);
  expect_hf("{\"model\": [1,", MXL_ERR_FORMAT, "not valid JSON");
  expect_hf("[1]", MXL_ERR_FORMAT, "top level");
  expect_hf("{\"normalizer\":null}", MXL_ERR_FORMAT, "model: missing");
}

static void test_load_errors(void) {
  mxl_tokenizer *tok = NULL;
  MXL_CHECK_FAILS(mxl_tokenizer_load("/nonexistent/mxlora/tok", &tok), MXL_ERR_IO,
                  "no such file");
  char *empty = tmp_path("empty");
  MXL_CHECK_OK(mxl_make_dirs(empty));
  MXL_CHECK_FAILS(mxl_tokenizer_load(empty, &tok), MXL_ERR_IO, "no tokenizer here");
  /* A folder with a .tiktoken file (errors carry the file name). */
  char *bad = mxl_path_join(empty, "v.tiktoken");
  write_bytes(bad, "QQ== 0\nnot-base64 1\n", 20);
  MXL_CHECK_FAILS(mxl_tokenizer_load(empty, &tok), MXL_ERR_FORMAT, "v.tiktoken: line 2");
  char *json = mxl_path_join(empty, "tokenizer.json");
  write_bytes(json, "{", 1);
  MXL_CHECK_FAILS(mxl_tokenizer_load(empty, &tok), MXL_ERR_FORMAT, "tokenizer.json: not valid JSON");
  char *bin = mxl_path_join(empty, "model.bin");
  write_bytes(bin, "GPT-OSS v1.0", 12);
  MXL_CHECK_FAILS(mxl_tokenizer_load(bin, &tok), MXL_ERR_FORMAT, "not a metal model.bin");
  free(bin);
  free(json);
  free(bad);
  free(empty);
}

/* ------------------------------------------------------------ CLI */

static char *run_cli(const char *args, const char *input) {
  char cmd[2048];
  char *in = tmp_path("cli_in");
  write_bytes(in, input ? input : "", input ? strlen(input) : 0);
  snprintf(cmd, sizeof cmd, "'%s' tokenize %s < '%s' 2>&1", MXL_CLI_PATH, args, in);
  free(in);
  FILE *p = popen(cmd, "r");
  if (!p) return NULL;
  char *out = calloc(1, 1 << 16);
  size_t n = fread(out, 1, (1 << 16) - 1, p);
  out[n] = '\0';
  pclose(p);
  return out;
}

static void test_cli(void) {
  if (!o200k) MXL_SKIP("no vocabulary");
  char *out = run_cli("--model '" VOCAB_PATH "' 'hello world'", NULL);
  MXL_CHECK_MSG(out && !strcmp(out, "[24912, 2375]\n"), "got %s", out);
  free(out);
  out = run_cli("--model '" VOCAB_PATH "' --special", "<|start|>Hello World<|end|>");
  MXL_CHECK_MSG(out && !strcmp(out, "[200006, 13225, 5922, 200007]\n"), "got %s", out);
  free(out);
  out = run_cli("--model '" VOCAB_PATH "' --decode", "[200006, 13225, 5922, 200007]");
  MXL_CHECK_MSG(out && !strcmp(out, "<|start|>Hello World<|end|>"), "got %s", out);
  free(out);
  out = run_cli("--model '" VOCAB_PATH "' --decode '24912 2375'", NULL);
  MXL_CHECK_MSG(out && !strcmp(out, "hello world"), "got %s", out);
  free(out);
  out = run_cli("--model '" VOCAB_PATH "' --decode '1 x'", NULL);
  MXL_CHECK_MSG(out && strstr(out, "not a token id"), "got %s", out);
  free(out);
  out = run_cli("--model '" VOCAB_PATH "' --decode '[300000]'", NULL);
  MXL_CHECK_MSG(out && strstr(out, "position 0"), "got %s", out);
  free(out);
  out = run_cli("'hello'", NULL);
  MXL_CHECK_MSG(out && strstr(out, "--model is required"), "got %s", out);
  free(out);
}

int main(void) {
  if (!mkdtemp(strcpy(tmp_dir, "tokenizer_test_XXXXXX"))) {
    perror("mkdtemp");
    return 1;
  }
  load_corpus();
  MXL_RUN(test_load_o200k);
  MXL_RUN(test_spec_vectors);
  MXL_RUN(test_corpus_parity);
  MXL_RUN(test_decode_and_stream);
  MXL_RUN(test_stream_exact);
  MXL_RUN(test_long_pieces);
  MXL_RUN(test_hf_roundtrip);
  MXL_RUN(test_metal_roundtrip);
  MXL_RUN(test_small_table);
  MXL_RUN(test_bpe_train);
  MXL_RUN(test_tiktoken_errors);
  MXL_RUN(test_metal_errors);
  MXL_RUN(test_hf_errors);
  MXL_RUN(test_load_errors);
  MXL_RUN(test_cli);
  mxl_tokenizer_free(o200k);
  for (size_t i = 0; i < n_corpus; i++) free(corpus[i].text), free(corpus[i].ids);
  free(corpus);
  nftw(tmp_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  return mxl_test_summary("tokenizer");
}
