/* Inference: prefill and incremental decode with a KV cache, several
 * sequences at once, with optional LoRA adapters overlaid (unmerged).
 *
 * Each sequence owns a KV cache. Full-attention layers keep every position
 * (slot = position); sliding-window layers keep a ring of
 * window + max_chunk - 1 slots, enough for a chunk's queries to see their
 * whole window while the chunk's own keys are written. */
#ifndef MXL_MODEL_FORWARD_H
#define MXL_MODEL_FORWARD_H

#include "model/layers.h"

typedef struct mxl_kv_cache {
  int n_layers, kv_dim;
  int cap_full, cap_slide;       /* slots in full / sliding layers */
  int max_context, max_chunk;
  int n_past;                    /* positions already cached */
  int slide_from;                /* the first position the sliding rings were given (0, or
                                    where a resume's window began) */
  float **k, **v;                /* [L] → [cap_l, nkv·d], backend */
  int32_t *pos_full, *seg_full;  /* [cap_full] slot position, segment (-1 = empty), backend */
  int32_t *pos_slide, *seg_slide;/* [cap_slide] */
  int32_t *host_pos_full, *host_seg_full, *host_pos_slide, *host_seg_slide;
} mxl_kv_cache;

mxl_status mxl_kv_cache_create(mxl_engine *e, int max_context, int max_chunk,
                               mxl_kv_cache **out);

/* The backend bytes mxl_kv_cache_create allocates (`mxlora plan`). */
size_t mxl_kv_cache_bytes(const mxl_config *cfg, int max_context, int max_chunk);

/* Forgets every cached position (the next forward starts at position 0). */
void mxl_kv_cache_reset(mxl_engine *e, mxl_kv_cache *c);
void mxl_kv_cache_destroy(mxl_engine *e, mxl_kv_cache *c);

/* Resuming at an earlier position. A cache holds every position of its
 * full-attention layers but only the last cap_slide of its sliding-window
 * layers, so a later sequence can continue from position r of a cache
 * only while the ring still holds positions [r - window, r): less than
 * max_chunk positions behind its end. A tail keeps sliding rows aside
 * before the rings move on: the window before one position (a prompt's
 * last token), or every row from position 0 (a head: the first pass of a
 * prompt, which other prompts may share). */
typedef struct mxl_kv_tail {
  int pos, rows;   /* the sliding layers' rows of positions [pos - rows, pos) */
  int cap;         /* rows allocated (mxl_kv_tail_grow fills up to pos - rows + cap) */
  int n_layers, kv_dim;
  float **k, **v;  /* [L] → [cap, kv_dim] (rows filled), backend; NULL for full-attention
                      layers */
} mxl_kv_tail;

/* The backend bytes of a window tail at most at position max_context - 1
 * (its rows: the window, or fewer positions); of a tail of `rows` rows. */
size_t mxl_kv_tail_bytes(const mxl_config *cfg, int max_context);
size_t mxl_kv_tail_rows_bytes(const mxl_config *cfg, int rows);
/* Copies c's sliding rows of positions [pos - rows, pos) (pos at most
 * c->n_past; the rings must still hold them) into a tail of room for
 * `cap` rows (0: rows). */
mxl_status mxl_kv_tail_take(mxl_engine *e, const mxl_kv_cache *c, int pos, int rows, int cap,
                            mxl_kv_tail **out);
/* The rows of src up to position pos (at most src->pos), with room for
 * `cap` rows (0: those). */
mxl_status mxl_kv_tail_copy(mxl_engine *e, const mxl_kv_tail *src, int pos, int cap,
                            mxl_kv_tail **out);
/* Appends c's sliding rows of positions [t->pos, pos) to t — a head
 * following its prompt pass by pass: pos within t's room and at most
 * c->n_past, and the rings must still hold t->pos. */
mxl_status mxl_kv_tail_grow(mxl_engine *e, const mxl_kv_cache *c, mxl_kv_tail *t, int pos);
void mxl_kv_tail_destroy(mxl_engine *e, mxl_kv_tail *t);

/* 1 when a sequence can continue from position r of `c`: its rings, or
 * `t` (NULL for none), hold the window before r. */
int mxl_kv_cache_resumable(const mxl_config *cfg, const mxl_kv_cache *c, const mxl_kv_tail *t,
                           int r);
/* Fills the empty cache `dst` with positions [0, r) of `src` (full layers:
 * all of them; sliding layers: the window before r, from src's ring when
 * it holds it, else from `t`); the next forward on dst starts at r. dst
 * must be empty with room beyond r; r resumable. */
mxl_status mxl_kv_cache_resume(mxl_engine *e, mxl_kv_cache *dst, const mxl_kv_cache *src,
                               const mxl_kv_tail *t, int r);
/* The sliding layers' rows a continuation from position r reads: those of
 * positions [r - rows, r). */
int mxl_kv_cache_window_rows(const mxl_config *cfg, int r);
/* The oldest position whose sliding-layer rows c holds (they run to
 * n_past): the ring's reach, or where a resume's window began. */
int mxl_kv_cache_slide_oldest(const mxl_kv_cache *c);
/* Copies positions [p0, p0 + n) of a sliding layer between its ring
 * (backend, slot = position mod cap) and contiguous rows (backend or host
 * memory by `dir`), in at most two runs: the ring wraps once. */
typedef enum mxl_ring_dir {
  MXL_RING_TO_ROWS, MXL_ROWS_TO_RING, /* rows in backend memory */
  MXL_RING_TO_HOST, MXL_HOST_TO_RING, /* rows in host memory */
} mxl_ring_dir;
void mxl_kv_ring_transfer(mxl_engine *e, float *ring, int cap, int kv_dim, int p0, int n,
                          float *rows, mxl_ring_dir dir);
/* Marks positions [0, r) of the full layers and the window before r of the
 * sliding layers as filled (their rows written by the caller); the next
 * forward starts at r. */
void mxl_kv_cache_claim_prefix(mxl_engine *e, mxl_kv_cache *c, int r);

/* One sequence's new tokens for this step, and its own adapters (applied
 * after the call's shared stack; a mixed batch gives every sequence its
 * own). */
typedef struct mxl_fwd_seq {
  mxl_kv_cache *cache;
  const int32_t *tokens; /* host [n] */
  int n;
  const mxl_lora_use *lora; /* [n_lora] or NULL */
  int n_lora;
  int no_logits;            /* 1: this sequence needs no logits this step */
} mxl_fwd_seq;

/* Reusable scratch of the forward pass. Zero-initialise, then reuse. */
typedef struct mxl_forward_state {
  mxl_layer_acts acts;
  mxl_buffer x;       /* [n, H] residual stream */
  mxl_buffer ids;     /* [n] token ids */
  mxl_buffer pos;     /* [n] positions */
  mxl_buffer seg;     /* [n] zeros: one segment per cache */
  mxl_buffer rows;    /* [rows, H] rows whose logits are wanted */
  mxl_buffer logits;  /* [rows, vocab_rows] */
  int32_t *host_ids, *host_pos;
  int host_cap;
  mxl_lora_run *runs;  /* host: the batch's runs of rows sharing adapters */
  mxl_lora_use *uses;  /* host: their adapters */
  int runs_cap, uses_cap;
} mxl_forward_state;

typedef struct mxl_forward_out {
  float *logits;  /* host [rows, vocab_rows], rows = the last token of each
                     sequence without no_logits, in order, or every token when
                     all_positions; may be NULL */
  int all_positions;
  float *hidden;  /* host [L+1, n, H] or NULL: the residual stream before each
                     layer and after the last (before the final norm) */
} mxl_forward_out;

/* `lora` (may be NULL) applies to every sequence; sequences add their own.
 * A sequence's results do not depend on the others in the call (on the ref
 * backend bit for bit). */
mxl_status mxl_forward(mxl_engine *e, mxl_forward_state *st, const mxl_fwd_seq *seqs,
                       int n_seq, const mxl_lora_stack *lora, mxl_forward_out *out);
void mxl_forward_state_release(mxl_engine *e, mxl_forward_state *st);

#endif
