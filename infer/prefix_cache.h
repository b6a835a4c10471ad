/* The scheduler's prefix cache: finished requests' KV caches, kept so that
 * a later request whose prompt starts with the same tokens (and uses the
 * same adapters at the same scales) continues from them instead of
 * prefilling that prefix again — a chat's next turn, a shared system
 * prompt, a regenerated reply. Engine thread only; the scheduler accounts
 * the entries' bytes inside its KV budget and evicts them, least recently
 * used first, whenever a running request needs the memory. */
#ifndef MXL_INFER_PREFIX_CACHE_H
#define MXL_INFER_PREFIX_CACHE_H

#include "infer/sched_internal.h"

typedef struct mxl_prefix_entry {
  int32_t *tokens;     /* the cached positions' tokens [cache->n_past] */
  mxl_kv_cache *cache;
  mxl_kv_tail *tail;   /* the prompt's end, or NULL */
  mxl_kv_tail *head;   /* the prompt's first positions (its request's head_want), or NULL */
  int n_adapters;
  uint64_t adapter_uids[MXL_REQUEST_MAX_ADAPTERS];
  float scales[MXL_REQUEST_MAX_ADAPTERS];
  uint64_t bytes;      /* its share of the KV budget */
  uint64_t last_used;
} mxl_prefix_entry;

typedef struct mxl_prefix_cache {
  mxl_prefix_entry *items;
  int n, max_entries; /* max_entries 0: the cache is off */
  uint64_t bytes, clock;
} mxl_prefix_cache;

/* The entry a sequence continues from, and where. */
typedef struct mxl_prefix_match {
  int entry; /* -1: none */
  int pos;   /* positions reused: q's first `pos` tokens */
  const mxl_kv_tail *via; /* the entry's tail or head that holds the window, or NULL (its rings) */
} mxl_prefix_match;

mxl_status mxl_prefix_cache_init(mxl_prefix_cache *pc, int max_entries);
/* Frees every entry. */
void mxl_prefix_cache_release(mxl_engine *e, mxl_prefix_cache *pc);

/* The longest reusable prefix of q's prompt (at most n_prompt - 1
 * positions: the last prompt token runs, for its logits). */
mxl_prefix_match mxl_prefix_cache_find(const mxl_prefix_cache *pc, const mxl_config *cfg,
                                       const mxl_seq *q);
/* Marks an entry used now (the least recently used go first). */
void mxl_prefix_cache_touch(mxl_prefix_cache *pc, int entry);
/* The least recently used entry other than `except` (-1: none). */
int mxl_prefix_cache_lru(const mxl_prefix_cache *pc, int except);
/* Frees one entry; later entries move down by one. */
void mxl_prefix_cache_evict(mxl_engine *e, mxl_prefix_cache *pc, int entry);
/* Takes a finished sequence's cache, tail and head (q keeps none) as a new
 * entry of q->kv_bytes, evicting the least recently used entry when the
 * cache is full. Returns 0 (q unchanged) when off or out of host memory. */
int mxl_prefix_cache_keep(mxl_engine *e, mxl_prefix_cache *pc, mxl_seq *q);

#endif
