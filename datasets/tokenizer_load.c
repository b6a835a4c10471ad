/* Tokenizer loaders: a .tiktoken rank file (+ the harmony specials), a
 * Hugging Face tokenizer.json, and the table inside metal/model.bin. Each
 * builds an mxl_token_table and hands it to mxl_tokenizer_from_table. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/bytes.h"
#include "core/fileio.h"
#include "core/json.h"
#include "core/status.h"
#include "datasets/tokenizer_impl.h"
#include "datasets/tokenizer_metal.h"

/* Token bytes being collected: one blob plus lengths, indexed by id. */
typedef struct token_list {
  uint8_t *blob;
  size_t blob_len, blob_cap;
  size_t *off;       /* [n] */
  uint32_t *len;     /* [n] */
  int n, cap;
} token_list;

static mxl_status list_add(token_list *l, int id, const uint8_t *p, size_t n) {
  if (id >= l->cap) {
    int cap = l->cap ? l->cap : 1024;
    while (cap <= id) cap *= 2;
    size_t *off = realloc(l->off, (size_t)cap * sizeof *off);
    if (off) l->off = off;
    uint32_t *len = realloc(l->len, (size_t)cap * sizeof *len);
    if (len) l->len = len;
    if (!off || !len) return mxl_errorf(MXL_ERR_MEMORY, "tokenizer: out of memory");
    memset(l->len + l->cap, 0, (size_t)(cap - l->cap) * sizeof *l->len);
    l->cap = cap;
  }
  if (l->blob_len + n > l->blob_cap) {
    size_t cap = l->blob_cap ? l->blob_cap : 65536;
    while (cap < l->blob_len + n) cap *= 2;
    uint8_t *blob = realloc(l->blob, cap);
    if (!blob) return mxl_errorf(MXL_ERR_MEMORY, "tokenizer: out of memory");
    l->blob = blob;
    l->blob_cap = cap;
  }
  memcpy(l->blob + l->blob_len, p, n);
  l->off[id] = l->blob_len;
  l->len[id] = (uint32_t)n;
  l->blob_len += n;
  if (id >= l->n) l->n = id + 1;
  return MXL_OK;
}

static void list_free(token_list *l) {
  free(l->blob);
  free(l->off);
  free(l->len);
  memset(l, 0, sizeof *l);
}

/* Builds the tokenizer from collected tokens 0..n_text-1 and specials. */
static mxl_status build_from_list(const token_list *l, int n_text, const char *const *special,
                                  int n_special, int special_base, const char *regex,
                                  mxl_tokenizer **out) {
  const uint8_t **text = malloc(((size_t)n_text + 1) * sizeof *text);
  if (!text) return mxl_errorf(MXL_ERR_MEMORY, "tokenizer: out of memory");
  for (int i = 0; i < n_text; i++) text[i] = l->blob + l->off[i];
  mxl_token_table t = {
      .n_text = n_text,
      .text = text,
      .text_len = l->len,
      .n_special = n_special,
      .special_base = special_base,
      .special = special,
      .regex = regex,
  };
  mxl_status st = mxl_tokenizer_from_table(&t, out);
  free(text);
  return st;
}

/* ------------------------------------------------------------ .tiktoken */

static int b64_value(uint8_t c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Decodes standard padded base64; returns the byte count or -1. */
static long b64_decode(const char *s, size_t n, uint8_t *out) {
  if (n == 0 || n % 4) return -1;
  long len = 0;
  for (size_t i = 0; i < n; i += 4) {
    int pad = (s[i + 3] == '=') + (s[i + 2] == '=' && s[i + 3] == '=');
    if (pad && i + 4 != n) return -1;
    int v[4];
    for (int k = 0; k < 4 - pad; k++)
      if ((v[k] = b64_value((uint8_t)s[i + k])) < 0) return -1;
    for (int k = 4 - pad; k < 4; k++) v[k] = 0;
    uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
    out[len++] = (uint8_t)(w >> 16);
    if (pad < 2) out[len++] = (uint8_t)(w >> 8);
    if (pad < 1) out[len++] = (uint8_t)w;
  }
  return len;
}

enum { MAX_RANK = 1 << 24 }; /* far above any real vocabulary */

/* Parses one "base64 rank" line into the list. */
static mxl_status tiktoken_line(const char *name, long line_no, const char *line, size_t n,
                                token_list *l, uint8_t *scratch) {
  const char *sp = memchr(line, ' ', n);
  if (!sp)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: line %ld: expected \"base64 rank\"", name, line_no);
  size_t b64_len = (size_t)(sp - line);
  long len = b64_decode(line, b64_len, scratch);
  if (len <= 0)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: line %ld: bad base64 token \"%.*s\"", name, line_no,
                      (int)(b64_len > 60 ? 60 : b64_len), line);
  const char *r = sp + 1, *end = line + n;
  long rank = 0;
  if (r == end) rank = -1;
  for (; r < end && rank >= 0; r++) {
    if (*r < '0' || *r > '9' || rank >= MAX_RANK) rank = -1;
    else rank = rank * 10 + (*r - '0');
  }
  if (rank < 0 || rank >= MAX_RANK)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: line %ld: bad rank \"%.*s\" (need 0..16777215)", name, line_no,
                      (int)(end - sp - 1 > 30 ? 30 : end - sp - 1), sp + 1);
  if (rank < l->cap && l->len[rank])
    return mxl_errorf(MXL_ERR_FORMAT, "%s: line %ld: rank %ld appears twice", name, line_no, rank);
  return list_add(l, (int)rank, scratch, (size_t)len);
}

mxl_status mxl_tokenizer_from_tiktoken(const char *data, size_t size, const char *name,
                                       mxl_tokenizer **out) {
  *out = NULL;
  token_list l = {0};
  mxl_status st = MXL_OK;
  long line_no = 0;
  int count = 0;
  uint8_t *scratch = malloc(size / 4 * 3 + 4);
  if (!scratch) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", name);
  for (size_t pos = 0; pos < size && st == MXL_OK;) {
    const char *nl = memchr(data + pos, '\n', size - pos);
    size_t end = nl ? (size_t)(nl - data) : size, n = end - pos;
    line_no++;
    if (n && data[pos + n - 1] == '\r') n--;
    if (n) {
      st = tiktoken_line(name, line_no, data + pos, n, &l, scratch);
      count++;
    }
    pos = end + 1;
  }
  free(scratch);
  if (st == MXL_OK && count == 0) st = mxl_errorf(MXL_ERR_FORMAT, "%s: no tokens", name);
  if (st == MXL_OK && l.n != count) {
    int missing = 0;
    while (l.len[missing]) missing++;
    st = mxl_errorf(MXL_ERR_FORMAT, "%s: ranks are not 0..%d: rank %d is missing", name,
                    count - 1, missing);
  }
  if (st == MXL_OK) {
    int n_special = 0;
    const char *const *special = mxl_harmony_special_names(&n_special);
    st = build_from_list(&l, count, special, n_special, count, NULL, out);
    if (st != MXL_OK) mxl_error_prefix(st, "%s: ", name);
  }
  list_free(&l);
  return st;
}

/* ------------------------------------------------------------ tokenizer.json */

/* GPT-2's byte-level alphabet: byte b is written as code point cp[b]. */
static void byte_level_alphabet(uint32_t cp[256]) {
  int n = 0;
  for (int b = 0; b < 256; b++) {
    int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
  }
}

/* Decodes a byte-level string (UTF-8 of alphabet code points) to bytes;
 * returns the byte count or -1 if a character is outside the alphabet. */
static long byte_level_decode(const char *s, const int16_t *inverse, uint8_t *out) {
  long n = 0;
  const uint8_t *p = (const uint8_t *)s;
  while (*p) {
    int len = mxl_utf8_char_len(p, strlen((const char *)p));
    if (len == 0 || len > 2) return -1; /* the alphabet is below U+0144 */
    uint32_t c = len == 1 ? p[0] : (uint32_t)(p[0] & 0x1f) << 6 | (p[1] & 0x3f);
    if (c >= 324 || inverse[c] < 0) return -1;
    out[n++] = (uint8_t)inverse[c];
    p += len;
  }
  return n;
}

static void make_inverse(int16_t inverse[324]) {
  uint32_t cp[256];
  byte_level_alphabet(cp);
  for (int i = 0; i < 324; i++) inverse[i] = -1;
  for (int b = 0; b < 256; b++) inverse[cp[b]] = (int16_t)b;
}

/* A JSON member that must be null, absent, or equal to an allowed value. */
static int is_null_or_absent(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return !v || cJSON_IsNull(v);
}

static mxl_status check_model_options(const char *name, const cJSON *model) {
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
  if (!cJSON_IsString(type) || strcmp(type->valuestring, "BPE") != 0)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: model.type: only \"BPE\" is supported (got %s)",
                      name, cJSON_IsString(type) ? type->valuestring : "none");
  static const char *const must_be_null[] = {"dropout", "unk_token"};
  for (int i = 0; i < 2; i++)
    if (!is_null_or_absent(model, must_be_null[i]))
      return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: model.%s: only null is supported", name,
                        must_be_null[i]);
  static const char *const must_be_empty[] = {"continuing_subword_prefix", "end_of_word_suffix"};
  for (int i = 0; i < 2; i++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, must_be_empty[i]);
    if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !v->valuestring[0]))
      return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: model.%s: only null is supported", name,
                        must_be_empty[i]);
  }
  if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback")))
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: model.byte_fallback: only false is supported",
                      name);
  /* Ranks are ids, so a piece that is a whole token is that token
   * (ignore_merges); a file that asks for the opposite means something else. */
  if (cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges")))
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "%s: model.ignore_merges: only true is supported (ranks are ids)", name);
  return MXL_OK;
}

/* pre_tokenizer: Sequence[Split(Regex, Isolated, invert false),
 * ByteLevel(use_regex false)]. Returns the pattern (owned by the JSON). */
static mxl_status pre_tokenizer_regex(const char *name, const cJSON *root, const char **out) {
  const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(pre, "type");
  const cJSON *seq = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
  if (!cJSON_IsString(type) || strcmp(type->valuestring, "Sequence") || !cJSON_IsArray(seq) ||
      cJSON_GetArraySize(seq) != 2)
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "%s: pre_tokenizer: only Sequence[Split(Regex), ByteLevel] is supported",
                      name);
  const cJSON *split = cJSON_GetArrayItem(seq, 0), *bl = cJSON_GetArrayItem(seq, 1);
  const cJSON *stype = cJSON_GetObjectItemCaseSensitive(split, "type");
  const cJSON *regex =
      cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(split, "pattern"), "Regex");
  const cJSON *behavior = cJSON_GetObjectItemCaseSensitive(split, "behavior");
  if (!cJSON_IsString(stype) || strcmp(stype->valuestring, "Split") || !cJSON_IsString(regex) ||
      !cJSON_IsString(behavior) || strcmp(behavior->valuestring, "Isolated") ||
      cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(split, "invert")))
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "%s: pre_tokenizer.pretokenizers[0]: only Split with a Regex pattern, "
                      "behavior Isolated, invert false is supported",
                      name);
  const cJSON *btype = cJSON_GetObjectItemCaseSensitive(bl, "type");
  if (!cJSON_IsString(btype) || strcmp(btype->valuestring, "ByteLevel") ||
      cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bl, "use_regex")) ||
      cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bl, "add_prefix_space")))
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "%s: pre_tokenizer.pretokenizers[1]: only ByteLevel with use_regex and "
                      "add_prefix_space false is supported",
                      name);
  *out = regex->valuestring;
  return MXL_OK;
}

static mxl_status hf_vocab(const char *name, const cJSON *model, token_list *l) {
  const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
  if (!cJSON_IsObject(vocab))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: model.vocab: missing or not an object", name);
  int16_t inverse[324];
  make_inverse(inverse);
  int count = 0;
  for (const cJSON *e = vocab->child; e; e = e->next, count++) {
    double id = e->valuedouble;
    if (!cJSON_IsNumber(e) || id < 0 || id > 16777216 || id != (double)(int)id)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: model.vocab[\"%.40s\"]: id must be an integer",
                        name, e->string);
    uint8_t buf[1024];
    if (strlen(e->string) > sizeof buf)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: model.vocab[\"%.40s...\"]: token too long", name,
                        e->string);
    long n = byte_level_decode(e->string, inverse, buf);
    if (n <= 0)
      return mxl_errorf(MXL_ERR_FORMAT,
                        "%s: model.vocab[\"%.40s\"]: not a byte-level token (empty, or a "
                        "character outside GPT-2's byte alphabet)",
                        name, e->string);
    if ((int)id < l->cap && l->len[(int)id])
      return mxl_errorf(MXL_ERR_FORMAT, "%s: model.vocab: id %d appears twice", name, (int)id);
    MXL_TRY(list_add(l, (int)id, buf, (size_t)n));
  }
  if (l->n != count)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: model.vocab: ids are not 0..%d", name, count - 1);
  return MXL_OK;
}

/* One merge as its two halves, from "a b" or ["a", "b"]. */
static int merge_halves(const cJSON *m, char *left, char *right, size_t cap) {
  if (cJSON_IsString(m)) {
    const char *sp = strchr(m->valuestring, ' ');
    if (!sp || strchr(sp + 1, ' ') || (size_t)(sp - m->valuestring) >= cap ||
        strlen(sp + 1) >= cap)
      return 0;
    memcpy(left, m->valuestring, (size_t)(sp - m->valuestring));
    left[sp - m->valuestring] = '\0';
    strcpy(right, sp + 1);
    return 1;
  }
  const cJSON *a = cJSON_GetArrayItem(m, 0), *b = cJSON_GetArrayItem(m, 1);
  if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) != 2 || !cJSON_IsString(a) ||
      !cJSON_IsString(b) || strlen(a->valuestring) >= cap || strlen(b->valuestring) >= cap)
    return 0;
  strcpy(left, a->valuestring);
  strcpy(right, b->valuestring);
  return 1;
}

/* Using ids as ranks is the same BPE as the file's merges when every merge
 * joins two tokens into a third and the merges come in order of the merged
 * token's id (as TikTokenConverter writes them). Checked here. */
static mxl_status hf_check_merges(const char *name, const cJSON *model, const mxl_tokenizer *tok) {
  const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
  if (!merges) return MXL_OK;
  if (!cJSON_IsArray(merges))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: model.merges: not an array", name);
  int16_t inverse[324];
  make_inverse(inverse);
  char ls[1024], rs[1024];
  uint8_t both[1024];
  int32_t last = -1;
  long i = 0;
  for (const cJSON *m = merges->child; m; m = m->next, i++) {
    if (!merge_halves(m, ls, rs, sizeof ls))
      return mxl_errorf(MXL_ERR_FORMAT, "%s: model.merges[%ld]: expected \"a b\" or [a, b]",
                        name, i);
    long nl = byte_level_decode(ls, inverse, both);
    long nr = nl > 0 ? byte_level_decode(rs, inverse, both + nl) : -1;
    int32_t li = nl > 0 ? mxl_rank_map_get(&tok->ranks, both, (size_t)nl) : -1;
    int32_t ri = nr > 0 ? mxl_rank_map_get(&tok->ranks, both + nl, (size_t)nr) : -1;
    int32_t id = ri >= 0 ? mxl_rank_map_get(&tok->ranks, both, (size_t)(nl + nr)) : -1;
    if (li < 0 || ri < 0 || id < 0)
      return mxl_errorf(MXL_ERR_FORMAT,
                        "%s: model.merges[%ld]: \"%.40s\" + \"%.40s\" is not a merge of two "
                        "vocabulary tokens into a third",
                        name, i, ls, rs);
    if (id < last)
      return mxl_errorf(MXL_ERR_UNSUPPORTED,
                        "%s: model.merges[%ld]: merges are not in the order of token ids, so ids "
                        "are not BPE ranks (not supported)",
                        name, i);
    last = id;
  }
  return MXL_OK;
}

/* added_tokens: specials must follow the vocabulary with consecutive ids. */
static mxl_status hf_added(const char *name, const cJSON *root, int n_text, char ***names_out,
                           int *n_out, int *base_out) {
  const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
  *names_out = NULL;
  *n_out = 0;
  *base_out = n_text;
  int n = cJSON_IsArray(added) ? cJSON_GetArraySize(added) : 0;
  if (added && !cJSON_IsArray(added) && !cJSON_IsNull(added))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: added_tokens: not an array", name);
  if (n == 0) return MXL_OK;
  char **names = calloc((size_t)n, sizeof *names);
  if (!names) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", name);
  int lo = INT32_MAX, i = 0;
  for (const cJSON *a = added->child; a; a = a->next)
    if (cJSON_GetObjectItemCaseSensitive(a, "id") &&
        cJSON_GetObjectItemCaseSensitive(a, "id")->valuedouble < lo)
      lo = (int)cJSON_GetObjectItemCaseSensitive(a, "id")->valuedouble;
  mxl_status st = MXL_OK;
  for (const cJSON *a = added->child; a && st == MXL_OK; a = a->next, i++) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
    if (!cJSON_IsNumber(id) || !cJSON_IsString(content) || !content->valuestring[0])
      st = mxl_errorf(MXL_ERR_FORMAT, "%s: added_tokens[%d]: needs an id and a content", name, i);
    else if (id->valueint < n_text)
      st = mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "%s: added_tokens[%d]: id %d overlaps the vocabulary (0..%d)", name, i,
                      id->valueint, n_text - 1);
    else if (id->valueint - lo >= n || names[id->valueint - lo])
      st = mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "%s: added_tokens[%d]: ids must be consecutive and distinct (id %d)", name,
                      i, id->valueint);
    else if (!(names[id->valueint - lo] = strdup(content->valuestring)))
      st = mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", name);
  }
  if (st != MXL_OK) {
    for (int k = 0; k < n; k++) free(names[k]);
    free(names);
    return st;
  }
  *names_out = names;
  *n_out = n;
  *base_out = lo;
  return MXL_OK;
}

static mxl_status hf_parse(const char *name, const cJSON *root, mxl_tokenizer **out) {
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
  if (!cJSON_IsObject(model))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: model: missing or not an object", name);
  MXL_TRY(check_model_options(name, model));
  if (!is_null_or_absent(root, "normalizer"))
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: normalizer: only null is supported", name);
  const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
  const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(dec, "type");
  if (dec && !cJSON_IsNull(dec) && !(cJSON_IsString(dtype) && !strcmp(dtype->valuestring, "ByteLevel")))
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: decoder.type: only ByteLevel is supported", name);
  const char *regex = NULL;
  MXL_TRY(pre_tokenizer_regex(name, root, &regex));
  token_list l = {0};
  char **names = NULL;
  int n_special = 0, base = 0;
  mxl_status st = hf_vocab(name, model, &l);
  if (st == MXL_OK) st = hf_added(name, root, l.n, &names, &n_special, &base);
  if (st == MXL_OK) {
    st = build_from_list(&l, l.n, (const char *const *)names, n_special, base, regex, out);
    if (st != MXL_OK) mxl_error_prefix(st, "%s: ", name);
  }
  if (st == MXL_OK) {
    st = hf_check_merges(name, model, *out);
    if (st != MXL_OK) {
      mxl_tokenizer_free(*out);
      *out = NULL;
    }
  }
  for (int k = 0; k < n_special; k++) free(names[k]);
  free(names);
  list_free(&l);
  return st;
}

mxl_status mxl_tokenizer_from_hf_json(const char *data, size_t size, const char *name,
                                      mxl_tokenizer **out) {
  *out = NULL;
  cJSON *root = cJSON_ParseWithLength(data, size);
  if (!root) {
    const char *at = cJSON_GetErrorPtr();
    long off = at && at >= data && at <= data + size ? (long)(at - data) : -1;
    return mxl_errorf(MXL_ERR_FORMAT, "%s: not valid JSON: %s near byte %ld", name,
                      mxl_json_error_name(data, size, off >= 0 ? (size_t)off : 0), off);
  }
  mxl_status st = cJSON_IsObject(root)
                      ? hf_parse(name, root, out)
                      : mxl_errorf(MXL_ERR_FORMAT, "%s: the top level is not an object", name);
  cJSON_Delete(root);
  return st;
}

/* ------------------------------------------------------------ metal/model.bin */

/* Names the special slots: UUIDs we know give their token's name; zero
 * UUIDs (unused) get the harmony name of that id offset when it is still
 * free, else "<|reserved_ID|>". */
static mxl_status metal_special_names(const uint8_t *uuids, uint32_t n, uint32_t n_text,
                                      char ***names_out) {
  char **names = calloc((size_t)n + 1, sizeof *names);
  if (!names) return mxl_errorf(MXL_ERR_MEMORY, "metal tokenizer: out of memory");
  *names_out = names;
  static const uint8_t zero[16] = {0};
  for (uint32_t t = 0; t < n; t++) {
    const uint8_t *u = uuids + 16 * (size_t)t;
    if (!memcmp(u, zero, 16)) continue;
    const char *name = mxl_metal_special_name(u);
    if (!name)
      return mxl_errorf(MXL_ERR_UNSUPPORTED,
                        "metal tokenizer: special slot %u (id %u): unknown UUID "
                        "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                        t, n_text + t, u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8],
                        u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
    for (uint32_t k = 0; k < t; k++)
      if (names[k] && !strcmp(names[k], name))
        return mxl_errorf(MXL_ERR_FORMAT,
                          "metal tokenizer: special slots %u and %u have the same UUID (%s)", k,
                          t, name);
    if (!(names[t] = strdup(name)))
      return mxl_errorf(MXL_ERR_MEMORY, "metal tokenizer: out of memory");
  }
  int n_harmony = 0;
  const char *const *harmony = mxl_harmony_special_names(&n_harmony);
  for (uint32_t t = 0; t < n; t++) {
    if (names[t]) continue;
    char buf[48];
    const char *name = NULL;
    if (t < (uint32_t)n_harmony) {
      name = harmony[t];
      for (uint32_t k = 0; k < n && name; k++)
        if (names[k] && !strcmp(names[k], name)) name = NULL;
    }
    if (!name) {
      snprintf(buf, sizeof buf, "<|reserved_%u|>", n_text + t);
      name = buf;
    }
    if (!(names[t] = strdup(name)))
      return mxl_errorf(MXL_ERR_MEMORY, "metal tokenizer: out of memory");
  }
  return MXL_OK;
}

static mxl_status metal_tokens(const uint8_t *p, size_t size, uint32_t n_text, token_list *l) {
  size_t pos = 0;
  for (uint32_t id = 0; id < n_text; id++) {
    if (size - pos < 2)
      return mxl_errorf(MXL_ERR_FORMAT,
                        "metal tokenizer: tokens: token %u's length runs past tokens_size", id);
    uint32_t len = mxl_get_le16(p + pos);
    pos += 2;
    if (len == 0 || size - pos < len)
      return mxl_errorf(MXL_ERR_FORMAT, "metal tokenizer: tokens: token %u (%u bytes) %s", id,
                        len, len ? "runs past tokens_size" : "is empty");
    MXL_TRY(list_add(l, (int)id, p + pos, len));
    pos += len;
  }
  if (pos != size)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "metal tokenizer: tokens: %zu bytes left over after %u tokens", size - pos,
                      n_text);
  return MXL_OK;
}

mxl_status mxl_tokenizer_from_metal_section(const uint8_t *data, size_t size,
                                            mxl_tokenizer **out) {
  *out = NULL;
  if (size < 16)
    return mxl_errorf(MXL_ERR_FORMAT, "metal tokenizer: header: %zu bytes, need 16", size);
  uint32_t n_special = mxl_get_le32(data), n_text = mxl_get_le32(data + 4), regex_size = mxl_get_le32(data + 8),
           tokens_size = mxl_get_le32(data + 12);
  if (n_text == 0 || n_text > (1u << 24) || n_special > 65536)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "metal tokenizer: header: num_text_tokens %u / num_special_tokens %u out "
                      "of range",
                      n_text, n_special);
  uint64_t need = 16 + 16ull * n_special + regex_size + tokens_size;
  if (need > size)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "metal tokenizer: truncated: header announces %llu bytes, %zu present",
                      (unsigned long long)need, size);
  const uint8_t *uuids = data + 16, *regex = uuids + 16 * (size_t)n_special,
                *tokens = regex + regex_size;
  if (regex_size < 2 || regex[regex_size - 1] != 0 || memchr(regex, 0, regex_size - 1))
    return mxl_errorf(MXL_ERR_FORMAT,
                      "metal tokenizer: regex: %u bytes, not one NUL-terminated string",
                      regex_size);
  token_list l = {0};
  char **names = NULL;
  mxl_status st = metal_tokens(tokens, tokens_size, n_text, &l);
  if (st == MXL_OK) st = metal_special_names(uuids, n_special, n_text, &names);
  if (st == MXL_OK)
    st = build_from_list(&l, (int)n_text, (const char *const *)names, (int)n_special,
                         (int)n_text, (const char *)regex, out);
  if (names)
    for (uint32_t t = 0; t < n_special; t++) free(names[t]);
  free(names);
  list_free(&l);
  return st;
}

/* ------------------------------------------------------------ finding */

enum { MAX_TOKENIZER_FILE = 256u << 20 };

static mxl_status load_file_as(const char *path, int kind, mxl_tokenizer **out) {
  if (kind == 'm') {
    mxl_mapping m;
    MXL_TRY(mxl_mapping_open(path, &m));
    mxl_status st;
    if (m.size < 132 + 16 || memcmp(m.data, "GPT-OSS v1.0", 12) != 0)
      st = mxl_errorf(MXL_ERR_FORMAT, "%s: not a metal model.bin (magic \"GPT-OSS v1.0\")",
                      path);
    else if (memcmp(m.data + 116, mxl_metal_tiktoken_uuid, 16) != 0)
      st = mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: tokenizer UUID at offset 116 is not tiktoken's",
                      path);
    else if ((st = mxl_tokenizer_from_metal_section(m.data + 132, m.size - 132, out)) != MXL_OK)
      mxl_error_prefix(st, "%s: ", path);
    mxl_mapping_close(&m);
    return st;
  }
  char *data = NULL;
  size_t size = 0;
  MXL_TRY(mxl_read_file(path, MAX_TOKENIZER_FILE, &data, &size));
  mxl_status st = kind == 'j' ? mxl_tokenizer_from_hf_json(data, size, path, out)
                              : mxl_tokenizer_from_tiktoken(data, size, path, out);
  free(data);
  return st;
}

static int has_suffix(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

/* The alphabetically first *.tiktoken file in dir (malloc'd), or NULL. */
static char *find_tiktoken(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return NULL;
  char *best = NULL;
  for (struct dirent *e; (e = readdir(d));) {
    if (!has_suffix(e->d_name, ".tiktoken") || (best && strcmp(e->d_name, best) >= 0)) continue;
    free(best);
    best = strdup(e->d_name);
  }
  closedir(d);
  if (!best) return NULL;
  char *path = mxl_path_join(dir, best);
  free(best);
  return path;
}

mxl_status mxl_tokenizer_load(const char *path, mxl_tokenizer **out) {
  *out = NULL;
  if (!mxl_path_is_dir(path)) {
    if (!mxl_path_exists(path)) return mxl_errorf(MXL_ERR_IO, "%s: no such file or folder", path);
    int kind = has_suffix(path, ".json") ? 'j' : has_suffix(path, ".tiktoken") ? 't' : 'm';
    return load_file_as(path, kind, out);
  }
  static const struct {
    const char *name;
    int kind;
  } candidates[] = {{"tokenizer.json", 'j'}, {NULL, 't'}, {"metal/model.bin", 'm'},
                    {"model.bin", 'm'}};
  for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
    char *file = candidates[i].name ? mxl_path_join(path, candidates[i].name) : find_tiktoken(path);
    if (file && mxl_path_exists(file)) {
      mxl_status st = load_file_as(file, candidates[i].kind, out);
      free(file);
      return st;
    }
    free(file);
  }
  /* A repository's original/ folder keeps no tokenizer: it is the root's. */
  char *parent = mxl_path_join(path, "../tokenizer.json");
  if (parent && mxl_path_exists(parent)) {
    mxl_status st = load_file_as(parent, 'j', out);
    free(parent);
    return st;
  }
  free(parent);
  return mxl_errorf(MXL_ERR_IO,
                    "%s: no tokenizer here (looked for tokenizer.json, *.tiktoken, "
                    "metal/model.bin, model.bin, ../tokenizer.json)",
                    path);
}
