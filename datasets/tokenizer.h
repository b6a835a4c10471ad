/* The o200k_harmony tokenizer (docs/gpt-oss.md §6): byte-level BPE over the o200k
 * pre-tokenization regex (PCRE2), plus special tokens.
 *
 * Sources, found automatically by mxl_tokenizer_load from a model folder:
 * tokenizer.json (Hugging Face), a .tiktoken rank file plus the harmony
 * special tokens, or the table embedded in metal/model.bin.
 *
 * The public API (load, encode, decode, streaming decode, mxl_ids, save as
 * Hugging Face files) is declared in include/mxlora/tokenizer.h, which
 * mxlora.h brings in; this header adds what only the library and its tests
 * use: the token table, other constructors and the file writers. */
#ifndef MXL_DATASETS_TOKENIZER_H
#define MXL_DATASETS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "mxlora.h"

/* The vocabulary as a plain table: ordinary tokens (id = BPE rank) then
 * special tokens. This is what tokenizer files are written from (the tiny
 * model writer) and what every loader produces. */
typedef struct mxl_token_table {
  int n_text;                   /* ordinary tokens, ids 0..n_text-1 */
  const uint8_t *const *text;   /* [n_text] token bytes */
  const uint32_t *text_len;     /* [n_text] */
  int n_special;                /* special tokens, ids special_base.. */
  int special_base;             /* = n_text for gpt-oss (199998) */
  const char *const *special;   /* [n_special] names, e.g. "<|start|>" */
  const char *regex;            /* pre-tokenization pattern (docs/gpt-oss.md §6.3) */
} mxl_token_table;

/* Parses the tokenizer section of a metal/model.bin (from its 16-byte
 * tokenizer header at file offset 132 through the last token); special
 * tokens are identified by their UUIDs, not by slot. */
mxl_status mxl_tokenizer_from_metal_section(const uint8_t *data, size_t size,
                                            mxl_tokenizer **out);
/* Builds from a table (copied). */
mxl_status mxl_tokenizer_from_table(const mxl_token_table *table, mxl_tokenizer **out);

/* The tokenizer's table (valid while tok lives). */
const mxl_token_table *mxl_tokenizer_table(const mxl_tokenizer *tok);

/* Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json
 * for `table` into dir, in the layout of the published gpt-oss files. */
mxl_status mxl_tokenizer_write_hf(const mxl_token_table *table, const char *dir);

/* Serializes the metal/model.bin tokenizer section (docs/gpt-oss.md §4.1: the 16-byte
 * tokenizer header, special-token UUIDs, regex + NUL, u16-length-prefixed
 * tokens) into a malloc'd buffer, without the padding to 16 KiB. */
mxl_status mxl_tokenizer_metal_section(const mxl_token_table *table, uint8_t **data_out,
                                       size_t *size_out);

/* ---- added by the tokenizer module ---- */

/* The 21 harmony special-token names of the Hugging Face gpt-oss tokenizer
 * (docs/gpt-oss.md §6.2), in id order: "<|startoftext|>" (n_text+0) ..
 * "<|endofprompt|>" (n_text+20). Returns the static array; *n_out = 21. */
const char *const *mxl_harmony_special_names(int *n_out);
enum { MXL_HARMONY_N_SPECIAL = 21 };

/* Parses a .tiktoken rank file held in memory (`name` is for messages):
 * one "base64(token) rank" per line, ranks a permutation of 0..n-1. The 21
 * harmony special tokens follow at ids n..n+20. */
mxl_status mxl_tokenizer_from_tiktoken(const char *data, size_t size, const char *name,
                                       mxl_tokenizer **out);
/* Parses a Hugging Face tokenizer.json held in memory (NUL-terminated or
 * not; `name` is for messages). Only what the converted o200k tokenizer
 * uses is supported: byte-level BPE whose merges agree with ranks = ids. */
mxl_status mxl_tokenizer_from_hf_json(const char *data, size_t size, const char *name,
                                      mxl_tokenizer **out);

/* Like mxl_tokenizer_write_hf (which uses 131072, the gpt-oss context), with
 * the tokenizer_config.json model_max_length given. */
mxl_status mxl_tokenizer_write_hf_ex(const mxl_token_table *table, const char *dir,
                                     int64_t model_max_length);

/* Learns a small byte-level BPE vocabulary from `corpus` (any bytes):
 * ids 0..255 are the single bytes in byte order, then merges chosen greedily
 * by pair count over the regex pieces of the corpus (ties: the pair with the
 * lowest left id, then lowest right id), until n_text ordinary tokens exist
 * or no pair occurs at least twice. Specials: the 21 harmony names right
 * after the ordinary tokens (special_base = the table's n_text, which is
 * less than asked when the corpus runs out of pairs). regex NULL = o200k. */
mxl_status mxl_bpe_train(const char *corpus, size_t len, const char *regex, int n_text,
                         mxl_token_table **out);
/* Frees a table returned by mxl_bpe_train or mxl_token_table_copy. */
void mxl_token_table_free(mxl_token_table *table);
/* A deep copy of any table (owned; free with mxl_token_table_free). */
mxl_status mxl_token_table_copy(const mxl_token_table *table, mxl_token_table **out);

/* The o200k pre-tokenization regex (docs/gpt-oss.md §6.3). */
extern const char mxl_o200k_regex[];

#endif
