/* The scheduler's prefix cache (infer/prefix_cache.h). Entries are few
 * (at most max_batch by default), so a lookup compares the prompt with
 * each of them. */
#include "infer/prefix_cache.h"

#include <stdlib.h>
#include <string.h>

#include "adapters/registry_internal.h"
#include "core/status.h"

mxl_status mxl_prefix_cache_init(mxl_prefix_cache *pc, int max_entries) {
  memset(pc, 0, sizeof *pc);
  if (max_entries <= 0) return MXL_OK;
  pc->items = calloc((size_t)max_entries, sizeof *pc->items);
  if (!pc->items) return mxl_errorf(MXL_ERR_MEMORY, "prefix cache: out of memory");
  pc->max_entries = max_entries;
  return MXL_OK;
}

void mxl_prefix_cache_release(mxl_engine *e, mxl_prefix_cache *pc) {
  while (pc->n) mxl_prefix_cache_evict(e, pc, pc->n - 1);
  free(pc->items);
  memset(pc, 0, sizeof *pc);
}

/* Same adapter versions at the same scales, in the same order (the order
 * of a sum changes its rounding). */
static int same_adapters(const mxl_prefix_entry *en, const mxl_seq *q) {
  if (en->n_adapters != q->n_adapters) return 0;
  for (int i = 0; i < q->n_adapters; i++)
    if (en->adapter_uids[i] != mxl_adapter_ref_uid(q->refs[i]) ||
        en->scales[i] != q->uses[i].scale)
      return 0;
  return 1;
}

static int common_prefix(const int32_t *a, const int32_t *b, int n) {
  int i = 0;
  while (i < n && a[i] == b[i]) i++;
  return i;
}

/* Where q can continue from one entry, and through which of its kept
 * windows: the longest common prefix if the sliding rings still hold the
 * window before it; else the kept prompt's last token, if the two share
 * it; else as far into the kept first pass (the head) as they share. */
static int resume_point(const mxl_prefix_entry *en, const mxl_config *cfg, const mxl_seq *q,
                        const mxl_kv_tail **via) {
  *via = NULL;
  int limit = q->n_prompt - 1 < en->cache->n_past ? q->n_prompt - 1 : en->cache->n_past;
  int common = common_prefix(en->tokens, q->tokens, limit), best = 0;
  if (common == 0 || mxl_kv_cache_resumable(cfg, en->cache, NULL, common)) return common;
  const mxl_kv_tail *kept[2] = {en->tail, en->head};
  for (int i = 0; i < 2; i++) {
    if (!kept[i]) continue;
    int r = common < kept[i]->pos ? common : kept[i]->pos;
    if (r > best && mxl_kv_cache_resumable(cfg, en->cache, kept[i], r)) best = r, *via = kept[i];
  }
  return best;
}

mxl_prefix_match mxl_prefix_cache_find(const mxl_prefix_cache *pc, const mxl_config *cfg,
                                       const mxl_seq *q) {
  mxl_prefix_match best = {-1, 0, NULL};
  for (int i = 0; i < pc->n; i++) {
    const mxl_prefix_entry *en = &pc->items[i];
    if (!same_adapters(en, q)) continue;
    const mxl_kv_tail *via;
    int pos = resume_point(en, cfg, q, &via);
    if (pos > best.pos) best = (mxl_prefix_match){i, pos, via};
  }
  return best;
}

void mxl_prefix_cache_touch(mxl_prefix_cache *pc, int entry) {
  pc->items[entry].last_used = ++pc->clock;
}

int mxl_prefix_cache_lru(const mxl_prefix_cache *pc, int except) {
  int lru = -1;
  for (int i = 0; i < pc->n; i++)
    if (i != except && (lru < 0 || pc->items[i].last_used < pc->items[lru].last_used)) lru = i;
  return lru;
}

void mxl_prefix_cache_evict(mxl_engine *e, mxl_prefix_cache *pc, int entry) {
  mxl_prefix_entry *en = &pc->items[entry];
  mxl_kv_cache_destroy(e, en->cache);
  mxl_kv_tail_destroy(e, en->tail);
  mxl_kv_tail_destroy(e, en->head);
  free(en->tokens);
  pc->bytes -= en->bytes;
  memmove(en, en + 1, (size_t)(pc->n - entry - 1) * sizeof *en);
  pc->n--;
}

int mxl_prefix_cache_keep(mxl_engine *e, mxl_prefix_cache *pc, mxl_seq *q) {
  if (pc->max_entries == 0 || !q->cache || q->cache->n_past == 0) return 0;
  const int n = q->cache->n_past;
  int32_t *tokens = malloc((size_t)n * sizeof *tokens);
  if (!tokens) return 0;
  memcpy(tokens, q->tokens, (size_t)n * sizeof *tokens);
  if (pc->n == pc->max_entries) mxl_prefix_cache_evict(e, pc, mxl_prefix_cache_lru(pc, -1));
  mxl_prefix_entry *en = &pc->items[pc->n++];
  memset(en, 0, sizeof *en);
  en->tokens = tokens;
  en->cache = q->cache;
  en->tail = q->tail;
  en->head = q->head;
  en->n_adapters = q->n_adapters;
  for (int i = 0; i < q->n_adapters; i++) {
    en->adapter_uids[i] = mxl_adapter_ref_uid(q->refs[i]);
    en->scales[i] = q->uses[i].scale;
  }
  en->bytes = q->kv_bytes;
  en->last_used = ++pc->clock;
  pc->bytes += en->bytes;
  q->cache = NULL;
  q->tail = NULL;
  q->head = NULL;
  return 1;
}
