/* Private to the tokenizer files (datasets/tokenizer*.c, datasets/bpe*.c):
 * the tokenizer object, the rank hash map and the pre-tokenizer. */
#ifndef MXL_DATASETS_TOKENIZER_IMPL_H
#define MXL_DATASETS_TOKENIZER_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/utf8.h"
#include "datasets/tokenizer.h"

/* Maps token bytes to ids with open addressing. Each slot holds a 32-bit
 * tag (high bits of the hash) and id+1 (0 = empty), so most misses and
 * collisions are settled without touching the token bytes. */
typedef struct mxl_rank_map {
  uint64_t *slots;      /* [mask+1]: tag << 32 | (id + 1) */
  uint64_t mask;
  const uint8_t *const *keys; /* [n] token bytes, borrowed */
  const uint32_t *key_len;    /* [n] */
} mxl_rank_map;

/* A fast hash of short byte strings (tokens are at most a few hundred bytes). */
static inline uint64_t mxl_bytes_hash(const uint8_t *p, size_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ ((uint64_t)n * 0xff51afd7ed558ccdull);
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 29;
  }
  if (n) {
    uint64_t v = 0;
    memcpy(&v, p, n);
    h = (h ^ v) * 0x94d049bb133111ebull;
  }
  h ^= h >> 32;
  h *= 0xd6e8feb86659fd93ull;
  return h ^ (h >> 32);
}

mxl_status mxl_rank_map_init(mxl_rank_map *m, const uint8_t *const *keys,
                             const uint32_t *key_len, int n, int *dup_out);
void mxl_rank_map_free(mxl_rank_map *m);

/* The id of these bytes, or -1. */
static inline int32_t mxl_rank_map_get(const mxl_rank_map *m, const uint8_t *p, size_t n) {
  uint64_t h = mxl_bytes_hash(p, n);
  uint32_t tag = (uint32_t)(h >> 32);
  for (uint64_t i = h & m->mask;; i = (i + 1) & m->mask) {
    uint64_t s = m->slots[i];
    if (!s) return -1;
    if ((uint32_t)(s >> 32) != tag) continue;
    uint32_t id = (uint32_t)s - 1;
    if (m->key_len[id] == n && memcmp(m->keys[id], p, n) == 0) return (int32_t)id;
  }
}

/* The pre-tokenizer: the regex compiled for PCRE2 (UTF + UCP, JIT when
 * available), with \s and \S rewritten to Unicode White_Space, which is
 * what tiktoken's regex engine means by them (PCRE2 also counts U+180E). */
typedef struct mxl_pretok {
  pcre2_code *re;     /* PCRE2's own Unicode tables: exact unless the text has newer characters */
  pcre2_code *re_new; /* with the newer code points added (slower); NULL if the same */
  int jit, jit_new;
} mxl_pretok;

mxl_status mxl_pretok_init(mxl_pretok *pt, const char *regex);

/* Code points of general category `name` ("L", "Lu", "Ll", "Lt", "Lm",
 * "Lo", "M", "N") that tiktoken's Unicode has and PCRE2's lacks, as the body
 * of a PCRE2 character class; NULL for other names (tokenizer_unicode.c). */
const char *mxl_unicode_extra(const char *name, size_t len);
/* Whether cp is one of those code points. */
int mxl_unicode_is_newer(uint32_t cp);
void mxl_pretok_free(mxl_pretok *pt);

/* Called for each piece; a non-OK status stops the split. */
typedef mxl_status (*mxl_piece_fn)(void *user, const uint8_t *piece, size_t n);

/* Splits `text` into pieces: maximal invalid-UTF-8 runs are pieces of their
 * own; valid runs are split by the regex (bytes the regex skips become
 * pieces too, so no byte is lost). */
mxl_status mxl_pretok_split(const mxl_pretok *pt, const uint8_t *text, size_t len,
                            mxl_piece_fn fn, void *user);


struct mxl_tokenizer {
  mxl_token_table table;  /* views into the storage below */
  uint8_t *bytes;         /* all ordinary tokens back to back */
  const uint8_t **text;   /* [n_text] into bytes */
  uint32_t *text_len;     /* [n_text] */
  char **special;         /* [n_special] owned names */
  uint32_t *special_len;  /* [n_special] */
  char *regex;
  mxl_rank_map ranks;     /* ordinary tokens */
  mxl_pretok pretok;
  int32_t byte_id[256];   /* id of each single byte, -1 if none */
  int have_all_bytes;
};

/* Encodes one piece (tiktoken's byte_pair_encode), appending ids. Fails
 * with MXL_ERR_UNSUPPORTED when a byte has no token. */
mxl_status mxl_bpe_piece(const mxl_tokenizer *tok, const uint8_t *p, size_t n, mxl_ids *out);

#endif
