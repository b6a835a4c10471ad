#include "model/forward.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"

/* ---------------------------------------------------------------- KV placement */

typedef struct cache_run {
  const mxl_fwd_seq *seqs;
  int n_seq;
  const int32_t *pos; /* backend [n] */
  const int32_t *seg; /* backend [n] zeros */
} cache_run;

static int slot_of(const mxl_kv_cache *c, int sliding, int position) {
  return sliding ? position % c->cap_slide : position;
}

/* Copies rows [row0, row0+n) of k/v into the cache slots of positions
 * n_past.., in at most two contiguous runs (the ring wraps once). */
static void store_kv(mxl_engine *e, const mxl_kv_cache *c, int layer, const mxl_layer_acts *a,
                     int row0, int n) {
  const int sliding = e->cfg->layer_sliding[layer];
  const int cap = sliding ? c->cap_slide : c->cap_full;
  const size_t row_bytes = (size_t)c->kv_dim * sizeof(float);
  int done = 0;
  while (done < n) {
    int slot = slot_of(c, sliding, c->n_past + done);
    int run = cap - slot < n - done ? cap - slot : n - done;
    size_t src = (size_t)(row0 + done) * c->kv_dim, dst = (size_t)slot * c->kv_dim;
    e->ops->copy(e->be, c->k[layer] + dst, a->k + src, run * row_bytes);
    e->ops->copy(e->be, c->v[layer] + dst, a->v + src, run * row_bytes);
    done += run;
  }
}

static mxl_status attend_with_cache(void *user, mxl_engine *e, int layer, mxl_layer_acts *a) {
  const cache_run *run = user;
  const int sliding = e->cfg->layer_sliding[layer];
  int row0 = 0;
  for (int s = 0; s < run->n_seq; s++) {
    const mxl_kv_cache *c = run->seqs[s].cache;
    const int n = run->seqs[s].n;
    store_kv(e, c, layer, a, row0, n);
    int cached = c->n_past + n;
    mxl_attn_group g = {
        .q_row0 = row0,
        .nq = n,
        .k = c->k[layer],
        .v = c->v[layer],
        .nk = sliding ? (cached < c->cap_slide ? cached : c->cap_slide) : cached,
        .mask = {.q_pos = run->pos + row0,
                 .q_seg = run->seg + row0,
                 .k_pos = sliding ? c->pos_slide : c->pos_full,
                 .k_seg = sliding ? c->seg_slide : c->seg_full,
                 .window = sliding ? e->cfg->sliding_window : 0},
    };
    mxl_attend_group(e, layer, a, &g);
    row0 += n;
  }
  return MXL_OK;
}

/* Marks the slots the new positions will occupy, before any layer runs:
 * slot metadata is shared by all layers of a kind. */
static void claim_slots(mxl_engine *e, mxl_kv_cache *c, int n) {
  for (int j = 0; j < n; j++) {
    int p = c->n_past + j;
    c->host_pos_full[p] = p;
    c->host_seg_full[p] = 0;
    int s = p % c->cap_slide;
    c->host_pos_slide[s] = p;
    c->host_seg_slide[s] = 0;
  }
  e->ops->upload(e->be, c->pos_full, c->host_pos_full, (c->n_past + n) * sizeof(int32_t));
  e->ops->upload(e->be, c->seg_full, c->host_seg_full, (c->n_past + n) * sizeof(int32_t));
  e->ops->upload(e->be, c->pos_slide, c->host_pos_slide, c->cap_slide * sizeof(int32_t));
  e->ops->upload(e->be, c->seg_slide, c->host_seg_slide, c->cap_slide * sizeof(int32_t));
}

/* ---------------------------------------------------------------- forward */

static mxl_status check_sequences(const mxl_fwd_seq *seqs, int n_seq, int *n_total) {
  *n_total = 0;
  for (int s = 0; s < n_seq; s++) {
    const mxl_kv_cache *c = seqs[s].cache;
    if (seqs[s].n <= 0 || seqs[s].n > c->max_chunk)
      return mxl_errorf(MXL_ERR_ARGUMENT, "sequence %d: %d tokens (1..%d per step)", s,
                        seqs[s].n, c->max_chunk);
    if (c->n_past + seqs[s].n > c->max_context)
      return mxl_errorf(MXL_ERR_ARGUMENT,
                        "sequence %d: context full (%d cached + %d new > %d positions)", s,
                        c->n_past, seqs[s].n, c->max_context);
    *n_total += seqs[s].n;
  }
  return MXL_OK;
}

static mxl_status reserve_state(mxl_engine *e, mxl_forward_state *st, int n, int rows,
                                int rank) {
  const size_t H = e->cfg->hidden, V = e->w.vocab_rows;
  MXL_TRY(mxl_layer_acts_reserve(e, &st->acts, n, 0, rank, 0));
  MXL_TRY(mxl_buffer_reserve(e->be, &st->x, n * H * sizeof(float)));
  MXL_TRY(mxl_buffer_reserve(e->be, &st->ids, n * sizeof(int32_t)));
  MXL_TRY(mxl_buffer_reserve(e->be, &st->pos, n * sizeof(int32_t)));
  if (st->seg.bytes < n * sizeof(int32_t)) {
    MXL_TRY(mxl_buffer_reserve(e->be, &st->seg, n * sizeof(int32_t)));
    e->ops->zero(e->be, st->seg.ptr, st->seg.bytes);
  }
  MXL_TRY(mxl_buffer_reserve(e->be, &st->rows, rows * H * sizeof(float)));
  MXL_TRY(mxl_buffer_reserve(e->be, &st->logits, rows * V * sizeof(float)));
  if (st->host_cap < n) {
    int32_t *ids = realloc(st->host_ids, n * sizeof(int32_t));
    if (ids) st->host_ids = ids;
    int32_t *pos = realloc(st->host_pos, n * sizeof(int32_t));
    if (pos) st->host_pos = pos;
    if (!ids || !pos) return mxl_errorf(MXL_ERR_MEMORY, "forward: out of memory");
    st->host_cap = n;
  }
  return MXL_OK;
}

static int same_uses(const mxl_lora_run *a, const mxl_lora_use *uses, int n) {
  if (a->n_uses != n) return 0;
  for (int u = 0; u < n; u++)
    if (a->uses[u].view != uses[u].view || a->uses[u].scale != uses[u].scale) return 0;
  return 1;
}

/* The adapters of the batch as runs of rows (mixed batches): each sequence
 * gets the shared stack's views, then its own; consecutive sequences with
 * the same list share a run. Returns 0 in `*eff` (the shared stack as it
 * is) when no sequence brings adapters of its own. */
static mxl_status batch_lora(mxl_forward_state *st, const mxl_fwd_seq *seqs, int n_seq,
                             const mxl_lora_stack *shared, mxl_lora_stack *eff) {
  int own = 0, n_uses = 0, n_shared = shared && !shared->runs ? shared->n : 0;
  for (int s = 0; s < n_seq; s++) {
    own |= seqs[s].n_lora > 0;
    n_uses += n_shared + seqs[s].n_lora;
  }
  memset(eff, 0, sizeof *eff);
  if (!own) {
    if (shared) *eff = *shared;
    return MXL_OK;
  }
  if (shared && (shared->runs || shared->train))
    return mxl_errorf(MXL_ERR_ARGUMENT, "forward: per-sequence adapters with a training stack");
  if (st->runs_cap < n_seq) {
    mxl_lora_run *runs = realloc(st->runs, (size_t)n_seq * sizeof *runs);
    if (!runs) return mxl_errorf(MXL_ERR_MEMORY, "forward: out of memory");
    st->runs = runs;
    st->runs_cap = n_seq;
  }
  if (st->uses_cap < n_uses) {
    mxl_lora_use *uses = realloc(st->uses, (size_t)n_uses * sizeof *uses);
    if (!uses) return mxl_errorf(MXL_ERR_MEMORY, "forward: out of memory");
    st->uses = uses;
    st->uses_cap = n_uses;
  }
  int n_runs = 0, row = 0, used = 0;
  for (int s = 0; s < n_seq; s++) {
    mxl_lora_use *mine = st->uses + used;
    int n = 0;
    for (int u = 0; u < n_shared; u++) mine[n++] = (mxl_lora_use){shared->views[u], 1.0f};
    for (int u = 0; u < seqs[s].n_lora; u++) mine[n++] = seqs[s].lora[u];
    mxl_lora_run *last = n_runs ? &st->runs[n_runs - 1] : NULL;
    if (last && last->row0 + last->rows == row && same_uses(last, mine, n)) {
      last->rows += seqs[s].n;
    } else if (n > 0) {
      st->runs[n_runs++] = (mxl_lora_run){row, seqs[s].n, mine, n};
      used += n;
    }
    row += seqs[s].n;
  }
  eff->runs = st->runs;
  eff->n_runs = n_runs;
  return MXL_OK;
}

static mxl_status check_token_ids(const mxl_engine *e, const mxl_fwd_seq *seqs, int n_seq) {
  for (int s = 0; s < n_seq; s++)
    for (int j = 0; j < seqs[s].n; j++)
      if (seqs[s].tokens[j] < 0 || seqs[s].tokens[j] >= e->w.vocab_rows)
        return mxl_errorf(MXL_ERR_ARGUMENT, "sequence %d, token %d: id %d outside 0..%d", s, j,
                          seqs[s].tokens[j], e->w.vocab_rows - 1);
  return MXL_OK;
}

static int logit_rows(const mxl_fwd_seq *seqs, int n_seq, int n_total,
                      const mxl_forward_out *out) {
  if (out->all_positions) return n_total;
  int rows = 0;
  for (int s = 0; s < n_seq; s++) rows += !seqs[s].no_logits;
  return rows;
}

/* Final norm and unembedding of the wanted rows into out->logits. */
static mxl_status compute_logits(mxl_engine *e, mxl_forward_state *st, const mxl_fwd_seq *seqs,
                                 int n_seq, int n_total, const mxl_forward_out *out) {
  const mxl_ops *ops = e->ops;
  const size_t H = e->cfg->hidden, V = e->w.vocab_rows;
  const float *x = st->x.ptr;
  float *rows = st->rows.ptr;
  int n_rows = logit_rows(seqs, n_seq, n_total, out);
  if (out->all_positions) {
    ops->copy(e->be, rows, x, n_total * H * sizeof(float));
  } else {
    int end = 0, r = 0;
    for (int s = 0; s < n_seq; s++) {
      end += seqs[s].n;
      if (seqs[s].no_logits) continue;
      ops->copy(e->be, rows + r * H, x + (end - 1) * H, H * sizeof(float));
      r++;
    }
  }
  if (n_rows == 0) return ops->sync(e->be);
  ops->rmsnorm(e->be, rows, NULL, rows, e->w.final_norm, n_rows, (int)H, e->cfg->rms_eps);
  ops->matmul_bf16(e->be, st->logits.ptr, rows, &e->w.unembed, n_rows);
  ops->download(e->be, out->logits, st->logits.ptr, n_rows * V * sizeof(float));
  return ops->sync(e->be);
}

mxl_status mxl_forward(mxl_engine *e, mxl_forward_state *st, const mxl_fwd_seq *seqs,
                       int n_seq, const mxl_lora_stack *shared, mxl_forward_out *out) {
  const mxl_ops *ops = e->ops;
  const size_t H = e->cfg->hidden;
  int n = 0;
  MXL_TRY(check_sequences(seqs, n_seq, &n));
  MXL_TRY(check_token_ids(e, seqs, n_seq));
  mxl_lora_stack lora_all;
  MXL_TRY(batch_lora(st, seqs, n_seq, shared, &lora_all));
  const mxl_lora_stack *lora = &lora_all;
  int rows = logit_rows(seqs, n_seq, n, out);
  MXL_TRY(reserve_state(e, st, n, rows > 0 ? rows : 1, mxl_lora_stack_rank(lora)));

  int row = 0;
  for (int s = 0; s < n_seq; s++) {
    for (int j = 0; j < seqs[s].n; j++, row++) {
      st->host_ids[row] = seqs[s].tokens[j];
      st->host_pos[row] = seqs[s].cache->n_past + j;
    }
    claim_slots(e, seqs[s].cache, seqs[s].n);
  }
  ops->upload(e->be, st->ids.ptr, st->host_ids, n * sizeof(int32_t));
  ops->upload(e->be, st->pos.ptr, st->host_pos, n * sizeof(int32_t));

  float *x = st->x.ptr;
  MXL_TRY(mxl_engine_embed(e, x, st->host_ids, st->ids.ptr, n));
  cache_run run = {seqs, n_seq, st->pos.ptr, st->seg.ptr};
  for (int l = 0; l < e->cfg->n_layers; l++) {
    if (out->hidden) ops->download(e->be, out->hidden + (size_t)l * n * H, x, n * H * sizeof(float));
    MXL_TRY(mxl_attention_half(e, l, lora, x, st->pos.ptr, &st->acts, attend_with_cache, &run));
    MXL_TRY(mxl_moe_half(e, l, lora, &st->acts, x));
  }
  if (out->hidden)
    ops->download(e->be, out->hidden + (size_t)e->cfg->n_layers * n * H, x, n * H * sizeof(float));
  for (int s = 0; s < n_seq; s++) seqs[s].cache->n_past += seqs[s].n;
  if (out->logits) return compute_logits(e, st, seqs, n_seq, n, out);
  return ops->sync(e->be);
}

void mxl_forward_state_release(mxl_engine *e, mxl_forward_state *st) {
  mxl_layer_acts_release(e, &st->acts);
  mxl_buffer *bufs[] = {&st->x, &st->ids, &st->pos, &st->seg, &st->rows, &st->logits};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) mxl_buffer_release(e->be, bufs[i]);
  free(st->host_ids);
  free(st->host_pos);
  free(st->runs);
  free(st->uses);
  memset(st, 0, sizeof *st);
}
