/* Public API: o200k_harmony tokenizer and harmony chat rendering. */
#ifndef MXLORA_TOKENIZER_H
#define MXLORA_TOKENIZER_H

#ifdef __cplusplus
extern "C" {
#endif

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ tokenizer
 *
 * Byte-level BPE over the o200k pre-tokenization regex, with the harmony
 * special tokens; token-for-token identical to tiktoken's o200k_harmony on
 * valid UTF-8.
 *
 * Invalid UTF-8 (tiktoken only takes valid text): the input is split into
 * maximal runs of valid UTF-8 and maximal runs of bytes that are not part of
 * a valid character. Valid runs are pre-tokenized by the regex as usual;
 * each invalid run is one BPE piece (tiktoken's byte_pair_encode of those
 * bytes). Nothing is replaced, so decode(encode(x)) == x for every x. */

/* An opaque tokenizer; safe to use from several threads at once. */
typedef struct mxl_tokenizer mxl_tokenizer;

/* A growable array of token ids; encode functions append to it. Zero
 * initialise, release with mxl_ids_free. */
typedef struct mxl_ids {
  int32_t *data;
  size_t n, cap;
} mxl_ids;
mxl_status mxl_ids_push(mxl_ids *ids, int32_t id);
void mxl_ids_free(mxl_ids *ids);

/* Loads from a model folder (tokenizer.json, then *.tiktoken plus the
 * harmony special tokens, then metal/model.bin) or from one such file. */
mxl_status mxl_tokenizer_load(const char *path, mxl_tokenizer **out);
/* Accepts NULL. */
void mxl_tokenizer_free(mxl_tokenizer *tok);

/* Number of ids the tokenizer knows: ordinary tokens plus special tokens. */
int32_t mxl_tokenizer_n_tokens(const mxl_tokenizer *tok);

/* Encodes `len` bytes of text, appending ids to `out`. With allow_special,
 * special-token strings in the text become their ids (Hugging Face
 * behaviour); without, they are ordinary text (harmony's encode_ordinary). */
mxl_status mxl_tokenizer_encode(const mxl_tokenizer *tok, const char *text, size_t len,
                                int allow_special, mxl_ids *out);

/* The id of a special token by name ("<|start|>"), or -1. */
int32_t mxl_tokenizer_special(const mxl_tokenizer *tok, const char *name);

/* The bytes of one token (special tokens: their name); not NUL-terminated.
 * NULL if the id is out of range. */
const uint8_t *mxl_tokenizer_token_bytes(const mxl_tokenizer *tok, int32_t id,
                                         uint32_t *len_out);

/* Decodes ids to bytes (malloc'd, NUL-terminated; len excludes the NUL).
 * Fails with MXL_ERR_ARGUMENT naming the position of an id out of range. */
mxl_status mxl_tokenizer_decode(const mxl_tokenizer *tok, const int32_t *ids, size_t n,
                                char **text_out, size_t *len_out);

/* Streaming decode: push one id, get the bytes that now form complete UTF-8
 * characters; an incomplete tail is held back until the next push or flush
 * (invalid sequences are released once they cannot complete). Zero
 * initialise the state. */
typedef struct mxl_decode_stream {
  uint8_t pending[8];
  int n_pending;
} mxl_decode_stream;
/* Writes at most cap bytes to out; returns the count, or -1 if cap is too
 * small or the id is out of range (cap >= 136 always suffices for ordinary
 * tokens; a special token needs its name's length + 8). */
int mxl_decode_stream_push(const mxl_tokenizer *tok, mxl_decode_stream *s, int32_t id,
                           char *out, size_t cap);
/* Releases whatever is held back (an incomplete character at the end). */
int mxl_decode_stream_flush(mxl_decode_stream *s, char *out, size_t cap);

/* Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json
 * for this tokenizer into dir (created if missing), in the layout of the
 * published gpt-oss files; e.g. to convert a .tiktoken file. */
mxl_status mxl_tokenizer_save_hf(const mxl_tokenizer *tok, const char *dir);

#ifdef __cplusplus
}
#endif

#endif
