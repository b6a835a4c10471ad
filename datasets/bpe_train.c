/* A small byte-level BPE vocabulary learned from a corpus, for tiny test
 * models: ids 0..255 are the single bytes, then greedy merges of the most
 * frequent adjacent pair over the corpus's regex pieces.
 *
 * The corpus is reduced to its distinct pieces ("words") with counts. Each
 * pair keeps its total count and the words it occurs in; a max-heap with
 * lazy updates picks the next pair. A merge rewrites only the words that
 * hold the pair, subtracting their old pairs and adding the new ones. */
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "datasets/tokenizer_impl.h"

/* ------------------------------------------------------------ small pieces */

#define GROW(ptr, n, cap, ok)                                                            \
  do {                                                                                   \
    if ((n) == (cap)) {                                                                  \
      size_t c_ = (cap) ? (size_t)(cap) * 2 : 16;                                        \
      void *g_ = realloc((ptr), c_ * sizeof *(ptr));                                     \
      if (!g_) (ok) = 0;                                                                 \
      else (ptr) = g_, (cap) = c_;                                                       \
    }                                                                                    \
  } while (0)

typedef struct word {
  int32_t *ids; /* into trainer.seq */
  int32_t len;
  int64_t count;
} word;

typedef struct pair {
  int32_t left, right;
  int64_t count;
  int32_t *words; /* words that held this pair (may hold stale entries) */
  size_t n_words, cap_words;
  uint32_t stamp; /* merge step that last saved old_count */
  int64_t old_count;
} pair;

typedef struct heap_item {
  int64_t count;
  int32_t left, right, pair;
} heap_item;

typedef struct trainer {
  /* distinct pieces */
  word *words;
  size_t n_words, cap_words;
  uint8_t *piece_bytes; /* the distinct pieces back to back */
  size_t piece_len, piece_cap;
  size_t *piece_off;    /* [n_words] */
  uint64_t *piece_map;  /* hash → word index + 1 (open addressing) */
  size_t piece_mask;
  int32_t *seq;         /* all words' ids */
  /* pairs */
  pair *pairs;
  size_t n_pairs, cap_pairs;
  uint64_t *pair_keys; /* left << 32 | right, 0 = empty (pair 0,0 stored +1) */
  int32_t *pair_vals;
  size_t pair_mask;
  heap_item *heap;
  size_t n_heap, cap_heap;
  /* tokens */
  uint8_t *tok_bytes;
  size_t tok_len, tok_cap;
  size_t *tok_off;
  uint32_t *tok_size;
  int n_tok;
  uint64_t *tok_map; /* hash → id + 1 */
  size_t tok_mask;
  /* the pairs whose count grew during a merge */
  int32_t *touched;
  size_t n_touched, cap_touched;
  uint32_t step;
  int ok; /* 0 once an allocation failed */
} trainer;

static uint64_t pair_key(int32_t l, int32_t r) {
  return ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) + 1;
}

static uint64_t mix(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  return k;
}

/* ------------------------------------------------------------ counting */

static int rehash_pairs(trainer *t) {
  size_t cap = t->pair_mask ? (t->pair_mask + 1) * 2 : 1 << 16;
  uint64_t *keys = calloc(cap, sizeof *keys);
  int32_t *vals = malloc(cap * sizeof *vals);
  if (!keys || !vals) {
    free(keys);
    free(vals);
    return 0;
  }
  for (size_t i = 0; t->pair_mask && i <= t->pair_mask; i++) {
    if (!t->pair_keys[i]) continue;
    size_t j = mix(t->pair_keys[i]) & (cap - 1);
    while (keys[j]) j = (j + 1) & (cap - 1);
    keys[j] = t->pair_keys[i];
    vals[j] = t->pair_vals[i];
  }
  free(t->pair_keys);
  free(t->pair_vals);
  t->pair_keys = keys;
  t->pair_vals = vals;
  t->pair_mask = cap - 1;
  return 1;
}

/* The index of pair (l, r), created with count 0 if new; -1 on OOM. */
static int32_t pair_get(trainer *t, int32_t l, int32_t r) {
  if ((t->n_pairs + 1) * 2 > t->pair_mask + 1 && !rehash_pairs(t)) return -1;
  uint64_t key = pair_key(l, r);
  size_t j = mix(key) & t->pair_mask;
  for (; t->pair_keys[j]; j = (j + 1) & t->pair_mask)
    if (t->pair_keys[j] == key) return t->pair_vals[j];
  int ok = 1;
  GROW(t->pairs, t->n_pairs, t->cap_pairs, ok);
  if (!ok) return -1;
  t->pairs[t->n_pairs] = (pair){.left = l, .right = r};
  t->pair_keys[j] = key;
  t->pair_vals[j] = (int32_t)t->n_pairs;
  return (int32_t)t->n_pairs++;
}

/* Adds `delta` occurrences of the pairs of word w. */
static void count_word(trainer *t, int32_t w, int64_t delta) {
  const word *wd = &t->words[w];
  for (int32_t i = 0; i + 1 < wd->len && t->ok; i++) {
    int32_t p = pair_get(t, wd->ids[i], wd->ids[i + 1]);
    if (p < 0) {
      t->ok = 0;
      return;
    }
    pair *pp = &t->pairs[p];
    if (pp->stamp != t->step) {
      pp->stamp = t->step;
      pp->old_count = pp->count;
      GROW(t->touched, t->n_touched, t->cap_touched, t->ok);
      if (t->ok) t->touched[t->n_touched++] = p;
    }
    pp->count += delta;
    if (delta > 0 && (pp->n_words == 0 || pp->words[pp->n_words - 1] != w)) {
      GROW(pp->words, pp->n_words, pp->cap_words, t->ok);
      if (t->ok) pp->words[pp->n_words++] = w;
    }
  }
}

/* ------------------------------------------------------------ heap */

static int item_before(heap_item a, heap_item b) {
  if (a.count != b.count) return a.count > b.count;
  if (a.left != b.left) return a.left < b.left;
  return a.right < b.right;
}

static void heap_push(trainer *t, int32_t p) {
  GROW(t->heap, t->n_heap, t->cap_heap, t->ok);
  if (!t->ok) return;
  heap_item it = {t->pairs[p].count, t->pairs[p].left, t->pairs[p].right, p};
  size_t i = t->n_heap++;
  while (i > 0 && item_before(it, t->heap[(i - 1) / 2])) {
    t->heap[i] = t->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  t->heap[i] = it;
}

static heap_item heap_pop(trainer *t) {
  heap_item top = t->heap[0], last = t->heap[--t->n_heap];
  size_t i = 0, n = t->n_heap;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && item_before(t->heap[c + 1], t->heap[c])) c++;
    if (!item_before(t->heap[c], last)) break;
    t->heap[i] = t->heap[c];
    i = c;
  }
  t->heap[i] = last;
  return top;
}

/* The most frequent pair (ties: lowest ids), or -1 when none occurs twice.
 * Heap entries may carry an old, higher count: those are re-queued. */
static int32_t best_pair(trainer *t) {
  while (t->n_heap && t->ok) {
    heap_item it = heap_pop(t);
    int64_t now = t->pairs[it.pair].count;
    if (now == it.count) return now >= 2 ? it.pair : -1;
    if (now > 0) heap_push(t, it.pair);
  }
  return -1;
}

/* ------------------------------------------------------------ tokens */

static int32_t token_find(const trainer *t, const uint8_t *p, size_t n, size_t *slot) {
  size_t j = mxl_bytes_hash(p, n) & t->tok_mask;
  for (; t->tok_map[j]; j = (j + 1) & t->tok_mask) {
    int32_t id = (int32_t)(t->tok_map[j] - 1);
    if (t->tok_size[id] == n && !memcmp(t->tok_bytes + t->tok_off[id], p, n)) return id;
  }
  *slot = j;
  return -1;
}

/* The id of bytes a+b, adding a token if they are new. */
static int32_t token_concat(trainer *t, int32_t a, int32_t b) {
  size_t na = t->tok_size[a], nb = t->tok_size[b], slot = 0;
  if (t->tok_len + na + nb > t->tok_cap) {
    size_t cap = t->tok_cap * 2 + na + nb;
    uint8_t *g = realloc(t->tok_bytes, cap);
    if (!g) return t->ok = 0, -1;
    t->tok_bytes = g;
    t->tok_cap = cap;
  }
  uint8_t *dst = t->tok_bytes + t->tok_len;
  memcpy(dst, t->tok_bytes + t->tok_off[a], na);
  memcpy(dst + na, t->tok_bytes + t->tok_off[b], nb);
  int32_t id = token_find(t, dst, na + nb, &slot);
  if (id >= 0) return id;
  id = t->n_tok++;
  t->tok_off[id] = t->tok_len;
  t->tok_size[id] = (uint32_t)(na + nb);
  t->tok_len += na + nb;
  t->tok_map[slot] = (uint64_t)id + 1;
  return id;
}

/* ------------------------------------------------------------ merging */

static int word_has(const word *w, int32_t a, int32_t b) {
  for (int32_t i = 0; i + 1 < w->len; i++)
    if (w->ids[i] == a && w->ids[i + 1] == b) return 1;
  return 0;
}

/* Replaces every (a, b), left to right, in w by c. */
static void word_merge(word *w, int32_t a, int32_t b, int32_t c) {
  int32_t j = 0;
  for (int32_t i = 0; i < w->len; i++) {
    if (i + 1 < w->len && w->ids[i] == a && w->ids[i + 1] == b) {
      w->ids[j++] = c;
      i++;
    } else {
      w->ids[j++] = w->ids[i];
    }
  }
  w->len = j;
}

static void merge_pair(trainer *t, int32_t p, int32_t c) {
  t->step++;
  t->n_touched = 0;
  pair *pp = &t->pairs[p];
  int32_t a = pp->left, b = pp->right;
  int32_t *list = pp->words;
  size_t n = pp->n_words;
  pp->words = NULL;
  pp->n_words = pp->cap_words = 0;
  for (size_t k = 0; k < n && t->ok; k++) {
    word *w = &t->words[list[k]];
    if (!word_has(w, a, b)) continue; /* stale entry */
    count_word(t, list[k], -w->count);
    word_merge(w, a, b, c);
    count_word(t, list[k], w->count);
  }
  free(list);
  /* Pairs whose count grew need a fresh heap entry; the others' entries
   * are at least their count, which best_pair handles. */
  for (size_t k = 0; k < t->n_touched && t->ok; k++) {
    pair *q = &t->pairs[t->touched[k]];
    if (q->count > q->old_count) heap_push(t, t->touched[k]);
  }
}

/* ------------------------------------------------------------ pieces */

static int piece_rehash(trainer *t) {
  size_t cap = t->piece_mask ? (t->piece_mask + 1) * 2 : 1 << 14;
  uint64_t *map = calloc(cap, sizeof *map);
  if (!map) return 0;
  for (size_t w = 0; w < t->n_words; w++) {
    size_t len = (size_t)t->words[w].len;
    size_t j = mxl_bytes_hash(t->piece_bytes + t->piece_off[w], len) & (cap - 1);
    while (map[j]) j = (j + 1) & (cap - 1);
    map[j] = w + 1;
  }
  free(t->piece_map);
  t->piece_map = map;
  t->piece_mask = cap - 1;
  return 1;
}

static mxl_status add_piece(void *user, const uint8_t *p, size_t n) {
  trainer *t = user;
  if (n > INT32_MAX / 2) return mxl_errorf(MXL_ERR_UNSUPPORTED, "bpe train: piece too long");
  if ((t->n_words + 1) * 2 > t->piece_mask + 1 && !piece_rehash(t)) t->ok = 0;
  if (!t->ok) return mxl_errorf(MXL_ERR_MEMORY, "bpe train: out of memory");
  size_t j = mxl_bytes_hash(p, n) & t->piece_mask;
  for (; t->piece_map[j]; j = (j + 1) & t->piece_mask) {
    word *w = &t->words[t->piece_map[j] - 1];
    if ((size_t)w->len == n && !memcmp(t->piece_bytes + t->piece_off[t->piece_map[j] - 1], p, n)) {
      w->count++;
      return MXL_OK;
    }
  }
  size_t old_cap = t->cap_words;
  GROW(t->words, t->n_words, t->cap_words, t->ok);
  if (t->ok && old_cap != t->cap_words) { /* piece_off grows with words */
    size_t *g = realloc(t->piece_off, t->cap_words * sizeof *g);
    if (!g) t->ok = 0;
    else t->piece_off = g;
  }
  if (t->ok && t->piece_len + n > t->piece_cap) {
    size_t cap = t->piece_cap ? t->piece_cap * 2 : 1 << 16;
    while (cap < t->piece_len + n) cap *= 2;
    uint8_t *g = realloc(t->piece_bytes, cap);
    if (!g) t->ok = 0;
    else t->piece_bytes = g, t->piece_cap = cap;
  }
  if (!t->ok) return mxl_errorf(MXL_ERR_MEMORY, "bpe train: out of memory");
  memcpy(t->piece_bytes + t->piece_len, p, n);
  t->piece_off[t->n_words] = t->piece_len;
  t->piece_len += n;
  t->words[t->n_words] = (word){.len = (int32_t)n, .count = 1};
  t->piece_map[j] = ++t->n_words;
  return MXL_OK;
}

/* Turns the distinct pieces into byte-id sequences and counts their pairs. */
static mxl_status init_words(trainer *t) {
  t->seq = malloc((t->piece_len + 1) * sizeof *t->seq);
  if (!t->seq) return mxl_errorf(MXL_ERR_MEMORY, "bpe train: out of memory");
  for (size_t i = 0; i < t->piece_len; i++) t->seq[i] = t->piece_bytes[i];
  for (size_t w = 0; w < t->n_words; w++) t->words[w].ids = t->seq + t->piece_off[w];
  t->step = 1;
  for (size_t w = 0; w < t->n_words && t->ok; w++) count_word(t, (int32_t)w, t->words[w].count);
  for (size_t p = 0; p < t->n_pairs && t->ok; p++) heap_push(t, (int32_t)p);
  return t->ok ? MXL_OK : mxl_errorf(MXL_ERR_MEMORY, "bpe train: out of memory");
}

static mxl_status init_tokens(trainer *t, int n_text) {
  size_t cap = 1024;
  while (cap < (size_t)n_text * 2) cap *= 2;
  t->tok_map = calloc(cap, sizeof *t->tok_map);
  t->tok_mask = cap - 1;
  t->tok_off = malloc((size_t)n_text * sizeof *t->tok_off);
  t->tok_size = malloc((size_t)n_text * sizeof *t->tok_size);
  t->tok_cap = 4096;
  t->tok_bytes = malloc(t->tok_cap);
  if (!t->tok_map || !t->tok_off || !t->tok_size || !t->tok_bytes)
    return mxl_errorf(MXL_ERR_MEMORY, "bpe train: out of memory");
  for (int b = 0; b < 256; b++) {
    uint8_t byte = (uint8_t)b;
    size_t slot = 0;
    token_find(t, &byte, 1, &slot);
    t->tok_bytes[b] = byte;
    t->tok_off[b] = (size_t)b;
    t->tok_size[b] = 1;
    t->tok_map[slot] = (uint64_t)b + 1;
  }
  t->n_tok = 256;
  t->tok_len = 256;
  return MXL_OK;
}

static void trainer_free(trainer *t) {
  for (size_t p = 0; p < t->n_pairs; p++) free(t->pairs[p].words);
  free(t->pairs);
  free(t->pair_keys);
  free(t->pair_vals);
  free(t->heap);
  free(t->words);
  free(t->piece_bytes);
  free(t->piece_off);
  free(t->piece_map);
  free(t->seq);
  free(t->tok_bytes);
  free(t->tok_off);
  free(t->tok_size);
  free(t->tok_map);
  free(t->touched);
}

static mxl_status make_table(const trainer *t, const char *regex, mxl_token_table **out) {
  const uint8_t **text = malloc((size_t)t->n_tok * sizeof *text);
  if (!text) return mxl_errorf(MXL_ERR_MEMORY, "bpe train: out of memory");
  for (int i = 0; i < t->n_tok; i++) text[i] = t->tok_bytes + t->tok_off[i];
  int n_special = 0;
  const char *const *special = mxl_harmony_special_names(&n_special);
  mxl_token_table table = {
      .n_text = t->n_tok,
      .text = text,
      .text_len = t->tok_size,
      .n_special = n_special,
      .special_base = t->n_tok,
      .special = special,
      .regex = regex,
  };
  mxl_status st = mxl_token_table_copy(&table, out);
  free(text);
  return st;
}

mxl_status mxl_bpe_train(const char *corpus, size_t len, const char *regex, int n_text,
                         mxl_token_table **out) {
  *out = NULL;
  if (n_text < 256 || n_text > (1 << 24))
    return mxl_errorf(MXL_ERR_ARGUMENT, "bpe train: n_text %d must be in 256..16777216", n_text);
  if (len && !corpus) return mxl_errorf(MXL_ERR_ARGUMENT, "bpe train: NULL corpus");
  if (!regex) regex = mxl_o200k_regex;
  trainer t = {.ok = 1};
  mxl_pretok pt;
  mxl_status st = mxl_pretok_init(&pt, regex);
  if (st != MXL_OK) return st;
  st = mxl_pretok_split(&pt, (const uint8_t *)corpus, len, add_piece, &t);
  mxl_pretok_free(&pt);
  if (st == MXL_OK) st = init_tokens(&t, n_text);
  if (st == MXL_OK) st = init_words(&t);
  while (st == MXL_OK && t.n_tok < n_text) {
    int32_t p = best_pair(&t);
    if (p < 0) break;
    int32_t c = token_concat(&t, t.pairs[p].left, t.pairs[p].right);
    if (c >= 0) merge_pair(&t, p, c);
    if (!t.ok) st = mxl_errorf(MXL_ERR_MEMORY, "bpe train: out of memory");
  }
  if (st == MXL_OK && !t.ok) st = mxl_errorf(MXL_ERR_MEMORY, "bpe train: out of memory");
  if (st == MXL_OK) st = make_table(&t, regex, out);
  trainer_free(&t);
  return st;
}
