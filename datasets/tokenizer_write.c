/* Writes the Hugging Face tokenizer files for a token table, laid out as
 * the published gpt-oss ones (what transformers' TikTokenConverter and the
 * gpt-oss converter produce), and owns copies of token tables. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/status.h"
#include "core/strbuf.h"
#include "datasets/tokenizer_impl.h"

/* A token's bytes in GPT-2's byte-level alphabet, as a JSON string. Only
 * '"' and '\\' need escaping: control bytes map to letters above U+00FF. */
static void sb_byte_level(mxl_strbuf *b, const uint8_t *p, uint32_t n, const uint32_t cp[256]) {
  char tmp[64];
  size_t k = 0;
  tmp[k++] = '"';
  for (uint32_t i = 0; i < n; i++) {
    if (k + 3 > sizeof tmp) mxl_strbuf_append(b, tmp, k), k = 0;
    uint32_t c = cp[p[i]];
    if (c == '"' || c == '\\') {
      tmp[k++] = '\\';
      tmp[k++] = (char)c;
    } else if (c < 0x80) {
      tmp[k++] = (char)c;
    } else {
      tmp[k++] = (char)(0xc0 | c >> 6);
      tmp[k++] = (char)(0x80 | (c & 0x3f));
    }
  }
  tmp[k++] = '"';
  mxl_strbuf_append(b, tmp, k);
}

static void byte_level_alphabet(uint32_t cp[256]) {
  int n = 0;
  for (int b = 0; b < 256; b++) {
    int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
  }
}

/* ------------------------------------------------------------ tokenizer.json */

static void write_added_tokens(mxl_strbuf *b, const mxl_token_table *t) {
  mxl_strbuf_puts(b, "  \"added_tokens\": [");
  for (int i = 0; i < t->n_special; i++) {
    mxl_strbuf_printf(b, "%s\n    {\n      \"id\": %d,\n      \"content\": ", i ? "," : "",
                      t->special_base + i);
    mxl_strbuf_json_string(b, t->special[i], strlen(t->special[i]));
    mxl_strbuf_puts(b, ",\n      \"single_word\": false,\n      \"lstrip\": false,\n"
                       "      \"rstrip\": false,\n      \"normalized\": false,\n"
                       "      \"special\": true\n    }");
  }
  mxl_strbuf_puts(b, t->n_special ? "\n  ],\n" : "],\n");
}

static void write_pipeline(mxl_strbuf *b, const mxl_token_table *t) {
  mxl_strbuf_puts(b, "  \"normalizer\": null,\n  \"pre_tokenizer\": {\n"
                     "    \"type\": \"Sequence\",\n    \"pretokenizers\": [\n      {\n"
                     "        \"type\": \"Split\",\n        \"pattern\": {\n          \"Regex\": ");
  const char *regex = t->regex ? t->regex : mxl_o200k_regex;
  mxl_strbuf_json_string(b, regex, strlen(regex));
  mxl_strbuf_puts(b, "\n        },\n        \"behavior\": \"Isolated\",\n"
                     "        \"invert\": false\n      },\n      {\n"
                     "        \"type\": \"ByteLevel\",\n        \"add_prefix_space\": false,\n"
                     "        \"trim_offsets\": true,\n        \"use_regex\": false\n      }\n"
                     "    ]\n  },\n  \"post_processor\": {\n    \"type\": \"ByteLevel\",\n"
                     "    \"add_prefix_space\": true,\n    \"trim_offsets\": false,\n"
                     "    \"use_regex\": true\n  },\n  \"decoder\": {\n"
                     "    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": true,\n"
                     "    \"trim_offsets\": true,\n    \"use_regex\": true\n  },\n");
}

typedef struct merge {
  int32_t left, right;
} merge;

static int merge_cmp(const void *a, const void *b) {
  const merge *x = a, *y = b;
  if (x->left != y->left) return x->left < y->left ? -1 : 1;
  return (x->right > y->right) - (x->right < y->right);
}

/* Merges as TikTokenConverter derives them from ranks: for each token in
 * rank order, every split into two tokens, ordered by (left rank, right
 * rank). */
static mxl_status write_merges(mxl_strbuf *b, const mxl_token_table *t, const mxl_rank_map *ranks,
                               const uint32_t cp[256]) {
  mxl_strbuf_puts(b, "    \"merges\": [");
  merge local[1024];
  int first = 1;
  for (int id = 0; id < t->n_text; id++) {
    const uint8_t *p = t->text[id];
    uint32_t n = t->text_len[id];
    if (n > 1024)
      return mxl_errorf(MXL_ERR_UNSUPPORTED, "tokenizer.json: token %d is over 1024 bytes", id);
    int k = 0;
    for (uint32_t s = 1; s < n; s++) {
      int32_t l = mxl_rank_map_get(ranks, p, s), r = mxl_rank_map_get(ranks, p + s, n - s);
      if (l >= 0 && r >= 0) local[k++] = (merge){l, r};
    }
    qsort(local, (size_t)k, sizeof *local, merge_cmp);
    for (int i = 0; i < k; i++) {
      mxl_strbuf_puts(b, first ? "\n      [\n        " : ",\n      [\n        ");
      first = 0;
      sb_byte_level(b, t->text[local[i].left], t->text_len[local[i].left], cp);
      mxl_strbuf_puts(b, ",\n        ");
      sb_byte_level(b, t->text[local[i].right], t->text_len[local[i].right], cp);
      mxl_strbuf_puts(b, "\n      ]");
    }
  }
  mxl_strbuf_puts(b, first ? "]\n" : "\n    ]\n");
  return MXL_OK;
}

static mxl_status write_model(mxl_strbuf *b, const mxl_token_table *t) {
  uint32_t cp[256];
  byte_level_alphabet(cp);
  mxl_rank_map ranks;
  int dup = -1;
  MXL_TRY(mxl_rank_map_init(&ranks, t->text, t->text_len, t->n_text, &dup));
  mxl_status st = MXL_OK;
  if (dup >= 0)
    st = mxl_errorf(MXL_ERR_ARGUMENT, "tokenizer.json: token %d repeats an earlier token", dup);
  mxl_strbuf_puts(b, "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n"
                     "    \"unk_token\": null,\n    \"continuing_subword_prefix\": null,\n"
                     "    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
                     "    \"byte_fallback\": false,\n    \"ignore_merges\": true,\n"
                     "    \"vocab\": {");
  for (int id = 0; id < t->n_text && st == MXL_OK; id++) {
    mxl_strbuf_puts(b, id ? ",\n      " : "\n      ");
    sb_byte_level(b, t->text[id], t->text_len[id], cp);
    mxl_strbuf_printf(b, ": %d", id);
  }
  mxl_strbuf_puts(b, t->n_text ? "\n    },\n" : "},\n");
  if (st == MXL_OK) st = write_merges(b, t, &ranks, cp);
  mxl_strbuf_puts(b, "  }\n}\n");
  mxl_rank_map_free(&ranks);
  return st;
}

static mxl_status tokenizer_json(const mxl_token_table *t, mxl_strbuf *b) {
  mxl_strbuf_puts(b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n");
  write_added_tokens(b, t);
  write_pipeline(b, t);
  return write_model(b, t);
}

/* ------------------------------------------------------------ configs */

static int has_special(const mxl_token_table *t, const char *name) {
  for (int i = 0; i < t->n_special; i++)
    if (!strcmp(t->special[i], name)) return 1;
  return 0;
}

/* bos/eos/pad of the published gpt-oss tokenizer (docs/gpt-oss.md §6.2), when the
 * table has those tokens. */
static const char *const role_key[3] = {"bos_token", "eos_token", "pad_token"};
static const char *const role_name[3] = {"<|startoftext|>", "<|return|>", "<|endoftext|>"};

static void tokenizer_config(const mxl_token_table *t, int64_t max_len, mxl_strbuf *b) {
  mxl_strbuf_puts(b, "{\n  \"added_tokens_decoder\": {");
  for (int i = 0; i < t->n_special; i++) {
    mxl_strbuf_printf(b, "%s\n    \"%d\": {\n      \"content\": ", i ? "," : "",
                      t->special_base + i);
    mxl_strbuf_json_string(b, t->special[i], strlen(t->special[i]));
    mxl_strbuf_puts(b, ",\n      \"lstrip\": false,\n      \"normalized\": false,\n"
                       "      \"rstrip\": false,\n      \"single_word\": false,\n"
                       "      \"special\": true\n    }");
  }
  mxl_strbuf_puts(b, t->n_special ? "\n  },\n" : "},\n");
  for (int r = 0; r < 3; r++)
    if (has_special(t, role_name[r]))
      mxl_strbuf_printf(b, "  \"%s\": \"%s\",\n", role_key[r], role_name[r]);
  mxl_strbuf_printf(b,
                    "  \"clean_up_tokenization_spaces\": false,\n"
                    "  \"extra_special_tokens\": {},\n"
                    "  \"model_input_names\": [\n    \"input_ids\",\n    \"attention_mask\"\n  ],\n"
                    "  \"model_max_length\": %" PRId64 ",\n",
                    max_len);
  mxl_strbuf_puts(b, "  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n");
}

static void special_tokens_map(const mxl_token_table *t, mxl_strbuf *b) {
  mxl_strbuf_puts(b, "{");
  int first = 1;
  for (int r = 0; r < 3; r++) {
    if (!has_special(t, role_name[r])) continue;
    mxl_strbuf_printf(b,
                      "%s\n  \"%s\": {\n    \"content\": \"%s\",\n    \"lstrip\": false,\n"
                      "    \"normalized\": false,\n    \"rstrip\": false,\n"
                      "    \"single_word\": false\n  }",
                      first ? "" : ",", role_key[r], role_name[r]);
    first = 0;
  }
  mxl_strbuf_puts(b, first ? "}\n" : "\n}\n");
}

static mxl_status write_one(const char *dir, const char *name, const mxl_strbuf *b) {
  if (b->failed) return mxl_errorf(MXL_ERR_MEMORY, "%s/%s: out of memory", dir, name);
  char *path = mxl_path_join(dir, name);
  if (!path) return mxl_errorf(MXL_ERR_MEMORY, "%s/%s: out of memory", dir, name);
  mxl_status st = mxl_write_file_atomic(path, b->data, b->len);
  free(path);
  return st;
}

mxl_status mxl_tokenizer_write_hf_ex(const mxl_token_table *table, const char *dir,
                                     int64_t model_max_length) {
  if (table->n_text <= 0 || table->special_base < table->n_text)
    return mxl_errorf(MXL_ERR_ARGUMENT, "tokenizer.json: the table has no ordinary tokens");
  MXL_TRY(mxl_make_dirs(dir));
  mxl_strbuf b = {0};
  mxl_status st = tokenizer_json(table, &b);
  if (st == MXL_OK) st = write_one(dir, "tokenizer.json", &b);
  mxl_strbuf_clear(&b);
  if (st == MXL_OK) {
    tokenizer_config(table, model_max_length, &b);
    st = write_one(dir, "tokenizer_config.json", &b);
  }
  mxl_strbuf_clear(&b);
  if (st == MXL_OK) {
    special_tokens_map(table, &b);
    st = write_one(dir, "special_tokens_map.json", &b);
  }
  mxl_strbuf_free(&b);
  return st;
}

mxl_status mxl_tokenizer_write_hf(const mxl_token_table *table, const char *dir) {
  return mxl_tokenizer_write_hf_ex(table, dir, 131072);
}

mxl_status mxl_tokenizer_save_hf(const mxl_tokenizer *tok, const char *dir) {
  return mxl_tokenizer_write_hf(mxl_tokenizer_table(tok), dir);
}

/* ------------------------------------------------------------ owned tables */

typedef struct owned_table {
  mxl_token_table pub; /* first: the public pointer is the struct's address */
  uint8_t *bytes;
  const uint8_t **text;
  uint32_t *text_len;
  char **special;
  char *regex;
} owned_table;

void mxl_token_table_free(mxl_token_table *table) {
  if (!table) return;
  owned_table *o = (owned_table *)table;
  if (o->special)
    for (int i = 0; i < o->pub.n_special; i++) free(o->special[i]);
  free(o->special);
  free(o->bytes);
  free(o->text);
  free(o->text_len);
  free(o->regex);
  free(o);
}

mxl_status mxl_token_table_copy(const mxl_token_table *t, mxl_token_table **out) {
  *out = NULL;
  owned_table *o = calloc(1, sizeof *o);
  if (!o) return mxl_errorf(MXL_ERR_MEMORY, "token table: out of memory");
  size_t total = 0;
  for (int i = 0; i < t->n_text; i++) total += t->text_len[i];
  o->bytes = malloc(total + 1);
  o->text = malloc(((size_t)t->n_text + 1) * sizeof *o->text);
  o->text_len = malloc(((size_t)t->n_text + 1) * sizeof *o->text_len);
  o->special = calloc((size_t)t->n_special + 1, sizeof *o->special);
  o->regex = strdup(t->regex ? t->regex : mxl_o200k_regex);
  o->pub.n_special = t->n_special;
  int ok = o->bytes && o->text && o->text_len && o->special && o->regex;
  for (int i = 0; ok && i < t->n_special; i++) ok = (o->special[i] = strdup(t->special[i])) != NULL;
  if (!ok) {
    mxl_token_table_free(&o->pub);
    return mxl_errorf(MXL_ERR_MEMORY, "token table: out of memory");
  }
  size_t off = 0;
  for (int i = 0; i < t->n_text; i++) {
    memcpy(o->bytes + off, t->text[i], t->text_len[i]);
    o->text[i] = o->bytes + off;
    o->text_len[i] = t->text_len[i];
    off += t->text_len[i];
  }
  o->pub = (mxl_token_table){
      .n_text = t->n_text,
      .text = o->text,
      .text_len = o->text_len,
      .n_special = t->n_special,
      .special_base = t->special_base,
      .special = (const char *const *)o->special,
      .regex = o->regex,
  };
  *out = &o->pub;
  return MXL_OK;
}
