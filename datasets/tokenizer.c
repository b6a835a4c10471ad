/* The tokenizer object: building it from a table, encoding (regex pieces,
 * then byte-level BPE by rank, docs/gpt-oss.md §6.4), decoding and streaming decode. */
#include "datasets/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "datasets/tokenizer_impl.h"

/* ------------------------------------------------------------ ids */

mxl_status mxl_ids_push(mxl_ids *ids, int32_t id) {
  if (ids->n == ids->cap) {
    size_t cap = ids->cap ? ids->cap * 2 : 64;
    int32_t *grown = realloc(ids->data, cap * sizeof *grown);
    if (!grown) return mxl_errorf(MXL_ERR_MEMORY, "token ids: out of memory");
    ids->data = grown;
    ids->cap = cap;
  }
  ids->data[ids->n++] = id;
  return MXL_OK;
}

void mxl_ids_free(mxl_ids *ids) {
  if (!ids) return;
  free(ids->data);
  memset(ids, 0, sizeof *ids);
}

/* ------------------------------------------------------------ names */

static const char *const harmony_names[MXL_HARMONY_N_SPECIAL] = {
    "<|startoftext|>",     "<|endoftext|>",       "<|reserved_200000|>",
    "<|reserved_200001|>", "<|return|>",          "<|constrain|>",
    "<|reserved_200004|>", "<|channel|>",         "<|start|>",
    "<|end|>",             "<|message|>",         "<|reserved_200009|>",
    "<|reserved_200010|>", "<|reserved_200011|>", "<|call|>",
    "<|reserved_200013|>", "<|reserved_200014|>", "<|reserved_200015|>",
    "<|reserved_200016|>", "<|reserved_200017|>", "<|endofprompt|>",
};

const char *const *mxl_harmony_special_names(int *n_out) {
  if (n_out) *n_out = MXL_HARMONY_N_SPECIAL;
  return harmony_names;
}

/* ------------------------------------------------------------ rank map */

mxl_status mxl_rank_map_init(mxl_rank_map *m, const uint8_t *const *keys,
                             const uint32_t *key_len, int n, int *dup_out) {
  memset(m, 0, sizeof *m);
  *dup_out = -1;
  uint64_t size = 1024;
  while (size < (uint64_t)n * 2) size *= 2; /* load factor at most 1/2 */
  m->slots = calloc(size, sizeof *m->slots);
  if (!m->slots) return mxl_errorf(MXL_ERR_MEMORY, "tokenizer: out of memory");
  m->mask = size - 1;
  m->keys = keys;
  m->key_len = key_len;
  for (int id = 0; id < n; id++) {
    if (mxl_rank_map_get(m, keys[id], key_len[id]) >= 0) {
      *dup_out = id;
      continue;
    }
    uint64_t h = mxl_bytes_hash(keys[id], key_len[id]);
    uint64_t i = h & m->mask;
    while (m->slots[i]) i = (i + 1) & m->mask;
    m->slots[i] = (h >> 32) << 32 | (uint64_t)(id + 1);
  }
  return MXL_OK;
}

void mxl_rank_map_free(mxl_rank_map *m) {
  if (!m) return;
  free(m->slots);
  memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------ building */

void mxl_tokenizer_free(mxl_tokenizer *tok) {
  if (!tok) return;
  mxl_pretok_free(&tok->pretok);
  mxl_rank_map_free(&tok->ranks);
  if (tok->special)
    for (int i = 0; i < tok->table.n_special; i++) free(tok->special[i]);
  free(tok->special);
  free(tok->special_len);
  free(tok->bytes);
  free(tok->text);
  free(tok->text_len);
  free(tok->regex);
  free(tok);
}

/* Checks what the encoder relies on: non-empty tokens and names, ids that
 * fit, no duplicates (checked later, with the hash map). */
static mxl_status check_table(const mxl_token_table *t) {
  if (t->n_text < 0 || t->n_special < 0 || (t->n_text > 0 && (!t->text || !t->text_len)) ||
      (t->n_special > 0 && !t->special))
    return mxl_errorf(MXL_ERR_ARGUMENT, "token table: missing arrays or negative counts");
  if (t->special_base < t->n_text || (int64_t)t->special_base + t->n_special > INT32_MAX)
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "token table: special_base %d must be at least n_text %d and fit",
                      t->special_base, t->n_text);
  for (int i = 0; i < t->n_text; i++)
    if (t->text_len[i] == 0 || !t->text[i])
      return mxl_errorf(MXL_ERR_ARGUMENT, "token table: token %d is empty", i);
  for (int i = 0; i < t->n_special; i++) {
    if (!t->special[i] || !t->special[i][0])
      return mxl_errorf(MXL_ERR_ARGUMENT, "token table: special token %d has no name",
                        t->special_base + i);
    for (int j = 0; j < i; j++)
      if (!strcmp(t->special[i], t->special[j]))
        return mxl_errorf(MXL_ERR_ARGUMENT, "token table: special token \"%s\" appears twice",
                          t->special[i]);
  }
  return MXL_OK;
}

static mxl_status copy_text(mxl_tokenizer *tok, const mxl_token_table *t) {
  size_t total = 0;
  for (int i = 0; i < t->n_text; i++) total += t->text_len[i];
  tok->bytes = malloc(total ? total : 1);
  tok->text = malloc(((size_t)t->n_text + 1) * sizeof *tok->text);
  tok->text_len = malloc(((size_t)t->n_text + 1) * sizeof *tok->text_len);
  if (!tok->bytes || !tok->text || !tok->text_len)
    return mxl_errorf(MXL_ERR_MEMORY, "tokenizer: out of memory");
  size_t off = 0;
  for (int i = 0; i < t->n_text; i++) {
    memcpy(tok->bytes + off, t->text[i], t->text_len[i]);
    tok->text[i] = tok->bytes + off;
    tok->text_len[i] = t->text_len[i];
    off += t->text_len[i];
  }
  return MXL_OK;
}

static mxl_status copy_specials(mxl_tokenizer *tok, const mxl_token_table *t) {
  size_t n = (size_t)t->n_special;
  tok->special = calloc(n + 1, sizeof *tok->special);
  tok->special_len = calloc(n + 1, sizeof *tok->special_len);
  if (!tok->special || !tok->special_len)
    return mxl_errorf(MXL_ERR_MEMORY, "tokenizer: out of memory");
  for (size_t i = 0; i < n; i++) {
    tok->special[i] = strdup(t->special[i]);
    if (!tok->special[i]) return mxl_errorf(MXL_ERR_MEMORY, "tokenizer: out of memory");
    tok->special_len[i] = (uint32_t)strlen(t->special[i]);
  }
  return MXL_OK;
}

static mxl_status build(mxl_tokenizer *tok, const mxl_token_table *t) {
  MXL_TRY(check_table(t));
  MXL_TRY(copy_text(tok, t));
  MXL_TRY(copy_specials(tok, t));
  tok->regex = strdup(t->regex ? t->regex : mxl_o200k_regex);
  if (!tok->regex) return mxl_errorf(MXL_ERR_MEMORY, "tokenizer: out of memory");
  tok->table = (mxl_token_table){
      .n_text = t->n_text,
      .text = tok->text,
      .text_len = tok->text_len,
      .n_special = t->n_special,
      .special_base = t->special_base,
      .special = (const char *const *)tok->special,
      .regex = tok->regex,
  };
  int dup = -1;
  MXL_TRY(mxl_rank_map_init(&tok->ranks, tok->text, tok->text_len, t->n_text, &dup));
  if (dup >= 0)
    return mxl_errorf(MXL_ERR_FORMAT, "token table: token %d repeats the bytes of token %d",
                      dup, mxl_rank_map_get(&tok->ranks, tok->text[dup], tok->text_len[dup]));
  tok->have_all_bytes = 1;
  for (int b = 0; b < 256; b++) {
    uint8_t byte = (uint8_t)b;
    tok->byte_id[b] = mxl_rank_map_get(&tok->ranks, &byte, 1);
    if (tok->byte_id[b] < 0) tok->have_all_bytes = 0;
  }
  return mxl_pretok_init(&tok->pretok, tok->regex);
}

mxl_status mxl_tokenizer_from_table(const mxl_token_table *table, mxl_tokenizer **out) {
  *out = NULL;
  mxl_tokenizer *tok = calloc(1, sizeof *tok);
  if (!tok) return mxl_errorf(MXL_ERR_MEMORY, "tokenizer: out of memory");
  mxl_status st = build(tok, table);
  if (st != MXL_OK) {
    tok->table.n_special = tok->special ? table->n_special : 0;
    mxl_tokenizer_free(tok);
    return st;
  }
  *out = tok;
  return MXL_OK;
}

const mxl_token_table *mxl_tokenizer_table(const mxl_tokenizer *tok) { return &tok->table; }

int32_t mxl_tokenizer_n_tokens(const mxl_tokenizer *tok) {
  return tok->table.special_base + tok->table.n_special;
}

int32_t mxl_tokenizer_special(const mxl_tokenizer *tok, const char *name) {
  for (int i = 0; i < tok->table.n_special; i++)
    if (!strcmp(tok->special[i], name)) return tok->table.special_base + i;
  return -1;
}

const uint8_t *mxl_tokenizer_token_bytes(const mxl_tokenizer *tok, int32_t id,
                                         uint32_t *len_out) {
  if (len_out) *len_out = 0;
  if (id >= 0 && id < tok->table.n_text) {
    if (len_out) *len_out = tok->text_len[id];
    return tok->text[id];
  }
  int32_t s = id - tok->table.special_base;
  if (id >= 0 && s >= 0 && s < tok->table.n_special) {
    if (len_out) *len_out = tok->special_len[s];
    return (const uint8_t *)tok->special[s];
  }
  return NULL;
}

/* ------------------------------------------------------------ BPE */

enum { SMALL_PIECE = 128 };

static inline uint32_t pair_rank(const mxl_tokenizer *tok, const uint8_t *p, size_t n) {
  int32_t id = mxl_rank_map_get(&tok->ranks, p, n);
  return id < 0 ? UINT32_MAX : (uint32_t)id;
}

/* Emits the parts delimited by start[0..m] (start[m] = piece length). */
static mxl_status emit_parts(const mxl_tokenizer *tok, const uint8_t *p, const uint32_t *start,
                             size_t m, mxl_ids *out) {
  for (size_t i = 0; i < m; i++) {
    int32_t id = mxl_rank_map_get(&tok->ranks, p + start[i], start[i + 1] - start[i]);
    if (id < 0)
      return mxl_errorf(MXL_ERR_UNSUPPORTED,
                        "tokenizer: byte 0x%02x has no token in this vocabulary", p[start[i]]);
    MXL_TRY(mxl_ids_push(out, id));
  }
  return MXL_OK;
}

/* tiktoken's merge loop as written there: repeatedly merge the leftmost
 * adjacent pair of lowest rank. O(n^2), fastest for short pieces. */
static mxl_status bpe_small(const mxl_tokenizer *tok, const uint8_t *p, size_t n,
                            mxl_ids *out) {
  uint32_t start[SMALL_PIECE + 1], rank[SMALL_PIECE]; /* rank[i]: parts i and i+1 */
  size_t m = n;
  for (size_t i = 0; i <= n; i++) start[i] = (uint32_t)i;
  for (size_t i = 0; i + 1 < m; i++) rank[i] = pair_rank(tok, p + i, 2);
  for (;;) {
    uint32_t best = UINT32_MAX;
    size_t at = 0;
    for (size_t i = 0; i + 1 < m; i++)
      if (rank[i] < best) best = rank[i], at = i;
    if (best == UINT32_MAX) break;
    /* Parts at and at+1 become one: drop boundary at+1 and its pair. */
    memmove(start + at + 1, start + at + 2, (m - at - 1) * sizeof *start);
    if (at + 3 < m) memmove(rank + at + 1, rank + at + 2, (m - at - 3) * sizeof *rank);
    m--;
    if (at + 1 < m) rank[at] = pair_rank(tok, p + start[at], start[at + 2] - start[at]);
    if (at > 0) rank[at - 1] = pair_rank(tok, p + start[at - 1], start[at + 1] - start[at - 1]);
  }
  return emit_parts(tok, p, start, m, out);
}

/* The same merges for long pieces in O(n log n): a heap of candidate pairs
 * ordered by (rank, position) and a linked list of parts. Equal ranks pop
 * leftmost first, which is exactly tiktoken's choice. */
typedef struct pair_entry {
  uint32_t rank, left, end; /* the pair spans bytes [left, end) */
} pair_entry;

static int entry_less(pair_entry a, pair_entry b) {
  return a.rank < b.rank || (a.rank == b.rank && a.left < b.left);
}

static void heap_push(pair_entry *h, size_t *n, pair_entry e) {
  size_t i = (*n)++;
  while (i > 0 && entry_less(e, h[(i - 1) / 2])) {
    h[i] = h[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h[i] = e;
}

static pair_entry heap_pop(pair_entry *h, size_t *n) {
  pair_entry top = h[0], last = h[--*n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= *n) break;
    if (c + 1 < *n && entry_less(h[c + 1], h[c])) c++;
    if (!entry_less(h[c], last)) break;
    h[i] = h[c];
    i = c;
  }
  h[i] = last;
  return top;
}

static mxl_status bpe_large(const mxl_tokenizer *tok, const uint8_t *p, size_t n,
                            mxl_ids *out) {
  /* next[i]: where the part starting at i ends (n+1 entries); alive[i]: a
   * part starts at i. Each merge pushes at most two pairs: heap <= 3n. */
  uint32_t *next = malloc((n + 1) * sizeof *next), *prev = malloc((n + 1) * sizeof *prev);
  uint8_t *alive = malloc(n + 1);
  pair_entry *heap = malloc(3 * n * sizeof *heap);
  mxl_status st = MXL_OK;
  if (!next || !prev || !alive || !heap) {
    st = mxl_errorf(MXL_ERR_MEMORY, "tokenizer: out of memory");
    goto done;
  }
  size_t hn = 0;
  for (size_t i = 0; i <= n; i++) next[i] = (uint32_t)i + 1, prev[i] = (uint32_t)i - 1, alive[i] = 1;
  for (size_t i = 0; i + 1 < n; i++) {
    uint32_t r = pair_rank(tok, p + i, 2);
    if (r != UINT32_MAX) heap_push(heap, &hn, (pair_entry){r, (uint32_t)i, (uint32_t)i + 2});
  }
  while (hn) {
    pair_entry e = heap_pop(heap, &hn);
    uint32_t l = e.left, r = next[l];
    if (!alive[l] || r >= n || next[r] != e.end) continue; /* stale */
    next[l] = e.end;
    prev[e.end] = l;
    alive[r] = 0;
    if (l > 0) {
      uint32_t pl = prev[l];
      uint32_t rk = pair_rank(tok, p + pl, e.end - pl);
      if (rk != UINT32_MAX) heap_push(heap, &hn, (pair_entry){rk, pl, e.end});
    }
    if (e.end < n) {
      uint32_t rk = pair_rank(tok, p + l, next[e.end] - l);
      if (rk != UINT32_MAX) heap_push(heap, &hn, (pair_entry){rk, l, next[e.end]});
    }
  }
  /* Collect the part starts into prev[] (reused) and emit. */
  size_t m = 0;
  for (uint32_t i = 0; i < n; i = next[i]) prev[m++] = i;
  prev[m] = (uint32_t)n;
  st = emit_parts(tok, p, prev, m, out);
done:
  free(next);
  free(prev);
  free(alive);
  free(heap);
  return st;
}

mxl_status mxl_bpe_piece(const mxl_tokenizer *tok, const uint8_t *p, size_t n, mxl_ids *out) {
  if (n == 0) return MXL_OK;
  int32_t id = mxl_rank_map_get(&tok->ranks, p, n);
  if (id >= 0) return mxl_ids_push(out, id);
  if (n == 1)
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "tokenizer: byte 0x%02x has no token in this vocabulary", p[0]);
  if (n >= UINT32_MAX / 4)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "tokenizer: a single %zu-byte piece is too long", n);
  return n <= SMALL_PIECE ? bpe_small(tok, p, n, out) : bpe_large(tok, p, n, out);
}

/* ------------------------------------------------------------ encode */

/* Pieces that need merging recur (words of a language), so a long input
 * keeps a small direct-mapped cache of their ids for the duration of one
 * encode call. Entries point into the caller's text, valid for the call. */
enum { CACHE_SLOTS = 4096, CACHE_IDS = 14, CACHE_MIN_INPUT = 4096 };

typedef struct cache_entry {
  const uint8_t *piece;
  uint32_t len, n_ids;
  int32_t ids[CACHE_IDS];
} cache_entry;

typedef struct encode_ctx {
  const mxl_tokenizer *tok;
  mxl_ids *out;
  cache_entry *cache; /* [CACHE_SLOTS] or NULL */
} encode_ctx;

static mxl_status encode_piece(void *user, const uint8_t *piece, size_t n) {
  encode_ctx *c = user;
  int32_t id = mxl_rank_map_get(&c->tok->ranks, piece, n);
  if (id >= 0) return mxl_ids_push(c->out, id);
  if (!c->cache || n < 2) return mxl_bpe_piece(c->tok, piece, n, c->out);
  cache_entry *e = &c->cache[mxl_bytes_hash(piece, n) & (CACHE_SLOTS - 1)];
  if (e->len == n && memcmp(e->piece, piece, n) == 0) {
    for (uint32_t i = 0; i < e->n_ids; i++) MXL_TRY(mxl_ids_push(c->out, e->ids[i]));
    return MXL_OK;
  }
  size_t before = c->out->n;
  MXL_TRY(mxl_bpe_piece(c->tok, piece, n, c->out));
  size_t k = c->out->n - before;
  if (k <= CACHE_IDS && n <= UINT32_MAX) {
    e->piece = piece;
    e->len = (uint32_t)n;
    e->n_ids = (uint32_t)k;
    memcpy(e->ids, c->out->data + before, k * sizeof *e->ids);
  }
  return MXL_OK;
}

static mxl_status encode_ordinary(const mxl_tokenizer *tok, const uint8_t *text, size_t len,
                                  mxl_ids *out) {
  encode_ctx c = {tok, out, NULL};
  if (len >= CACHE_MIN_INPUT) c.cache = calloc(CACHE_SLOTS, sizeof *c.cache); /* NULL: no cache */
  mxl_status st = mxl_pretok_split(&tok->pretok, text, len, encode_piece, &c);
  free(c.cache);
  return st;
}

/* The longest special token starting at text[0..len), or -1. */
static int special_at(const mxl_tokenizer *tok, const uint8_t *text, size_t len) {
  int best = -1;
  for (int i = 0; i < tok->table.n_special; i++) {
    uint32_t n = tok->special_len[i];
    if (n <= len && text[0] == (uint8_t)tok->special[i][0] &&
        memcmp(text, tok->special[i], n) == 0 && (best < 0 || n > tok->special_len[best]))
      best = i;
  }
  return best;
}

mxl_status mxl_tokenizer_encode(const mxl_tokenizer *tok, const char *text, size_t len,
                                int allow_special, mxl_ids *out) {
  const uint8_t *t = (const uint8_t *)text;
  if (len && !text) return mxl_errorf(MXL_ERR_ARGUMENT, "tokenizer: NULL text");
  if (!allow_special || tok->table.n_special == 0) return encode_ordinary(tok, t, len, out);
  uint8_t first[256] = {0};
  for (int i = 0; i < tok->table.n_special; i++) first[(uint8_t)tok->special[i][0]] = 1;
  size_t seg = 0;
  for (size_t pos = 0; pos < len; pos++) {
    if (!first[t[pos]]) continue;
    int s = special_at(tok, t + pos, len - pos);
    if (s < 0) continue;
    MXL_TRY(encode_ordinary(tok, t + seg, pos - seg, out));
    MXL_TRY(mxl_ids_push(out, tok->table.special_base + s));
    pos += tok->special_len[s] - 1;
    seg = pos + 1;
  }
  return encode_ordinary(tok, t + seg, len - seg, out);
}

/* ------------------------------------------------------------ decode */

mxl_status mxl_tokenizer_decode(const mxl_tokenizer *tok, const int32_t *ids, size_t n,
                                char **text_out, size_t *len_out) {
  *text_out = NULL;
  if (len_out) *len_out = 0;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t len;
    if (!mxl_tokenizer_token_bytes(tok, ids[i], &len))
      return mxl_errorf(MXL_ERR_ARGUMENT, "decode: id %ld at position %zu is not a token",
                        (long)ids[i], i);
    total += len;
  }
  char *buf = malloc(total + 1);
  if (!buf) return mxl_errorf(MXL_ERR_MEMORY, "decode: out of memory");
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t len;
    const uint8_t *b = mxl_tokenizer_token_bytes(tok, ids[i], &len);
    memcpy(buf + off, b, len);
    off += len;
  }
  buf[off] = '\0';
  *text_out = buf;
  if (len_out) *len_out = off;
  return MXL_OK;
}

/* Where an incomplete but still completable UTF-8 character starts at the
 * end of buf[0..n), or n if the buffer ends on a boundary. */
static size_t incomplete_tail(const uint8_t *buf, size_t n) {
  for (size_t back = 1; back <= 3 && back <= n; back++) {
    uint8_t c = buf[n - back];
    if ((c & 0xc0) == 0x80) continue; /* a continuation byte: look further back */
    size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    if (need <= back) return n;
    /* Completable only if what is there is a valid prefix: test it padded
     * with the smallest continuation bytes that the lead byte accepts. */
    uint8_t probe[4] = {c, 0x80, 0x80, 0x80};
    memcpy(probe, buf + n - back, back);
    if (back == 1) {
      if (c == 0xe0) probe[1] = 0xa0;
      if (c == 0xf0) probe[1] = 0x90;
    }
    return mxl_utf8_char_len(probe, need) ? n - back : n;
  }
  return n;
}

int mxl_decode_stream_push(const mxl_tokenizer *tok, mxl_decode_stream *s, int32_t id,
                           char *out, size_t cap) {
  uint32_t len;
  const uint8_t *b = mxl_tokenizer_token_bytes(tok, id, &len);
  if (!b || (size_t)s->n_pending + len > cap) return -1;
  memcpy(out, s->pending, (size_t)s->n_pending);
  memcpy(out + s->n_pending, b, len);
  size_t n = (size_t)s->n_pending + len;
  size_t keep = id >= tok->table.n_text ? n : incomplete_tail((const uint8_t *)out, n);
  s->n_pending = (int)(n - keep);
  memcpy(s->pending, out + keep, (size_t)s->n_pending);
  return (int)keep;
}

int mxl_decode_stream_flush(mxl_decode_stream *s, char *out, size_t cap) {
  if ((size_t)s->n_pending > cap) return -1;
  int n = s->n_pending;
  memcpy(out, s->pending, (size_t)n);
  s->n_pending = 0;
  return n;
}
