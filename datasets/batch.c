/* Batches of fixed-length rows from tokenized documents.
 *
 * Every document stays whole inside one row (packing never splits one
 * across rows); several fit in a row when packing is on, each with its own
 * segment id and positions from 0, so attention never crosses documents.
 * Documents are served in a per-epoch order that is a pure function of
 * (seed, epoch): a cursor of (epoch, index) is therefore enough to continue
 * a run exactly where it stopped.
 *
 * Data-parallel ranks each build the same global batch (n_shards·rows
 * rows) and keep their own rows of it: the documents a step trains are
 * those of one process with the global batch, whatever the world size, and
 * the cursor is global. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"
#include "core/rng.h"
#include "core/status.h"
#include "datasets/dataset.h"

struct mxl_batcher {
  const mxl_dataset *ds;
  mxl_batch_options o;
  size_t n;          /* documents served */
  uint32_t *doc;     /* [n] sample index in the dataset */
  uint32_t *len;     /* [n] tokens used (after cutting) */
  uint32_t *order;   /* [n] this epoch's order: positions into doc/len */
  uint64_t epoch, index, fingerprint;
  int global_rows;   /* rows · n_shards */
  mxl_batcher_counts counts;
  mxl_batch batch;   /* the global batch */
  mxl_batch shard;   /* this shard's rows of it (n_shards > 1) */
};

/* ------------------------------------------------------------------ epoch order */

/* The shuffle seed of an epoch; also what the cursor records as rng. */
static uint64_t epoch_rng(uint64_t seed, uint64_t epoch) {
  uint64_t state = seed ^ ((epoch + 1) * 0xD1B54A32D192ED03ull);
  return mxl_splitmix64(&state);
}

typedef struct by_len {
  uint32_t len, pos, value;
} by_len;

/* Longest first; ties keep their shuffled order. */
static int cmp_by_len(const void *a, const void *b) {
  const by_len *x = a, *y = b;
  if (x->len != y->len) return x->len < y->len ? 1 : -1;
  return (x->pos > y->pos) - (x->pos < y->pos);
}

static mxl_status make_order(mxl_batcher *b) {
  for (size_t i = 0; i < b->n; i++) b->order[i] = (uint32_t)i;
  if (b->o.shuffle) mxl_shuffle_u32(b->order, b->n, epoch_rng(b->o.seed, b->epoch));
  if (!b->o.group_by_length) return MXL_OK;
  size_t window = (size_t)64 * (size_t)b->global_rows;
  by_len *tmp = malloc((window < b->n ? window : b->n) * sizeof *tmp + 1);
  if (!tmp) return mxl_errorf(MXL_ERR_MEMORY, "batcher: out of memory");
  for (size_t w = 0; w < b->n; w += window) {
    size_t m = b->n - w < window ? b->n - w : window;
    for (size_t i = 0; i < m; i++)
      tmp[i] = (by_len){b->len[b->order[w + i]], (uint32_t)i, b->order[w + i]};
    qsort(tmp, m, sizeof *tmp, cmp_by_len);
    for (size_t i = 0; i < m; i++) b->order[w + i] = tmp[i].value;
  }
  free(tmp);
  return MXL_OK;
}

/* ------------------------------------------------------------------ create */

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  return mxl_splitmix64(&h);
}

/* Identifies the document sequence a cursor indexes: the documents served,
 * their lengths and the order options. Rows per batch only count when they
 * shape the order (group_by_length), so a run can resume with another
 * world size or batch size. */
static uint64_t fingerprint(const mxl_batcher *b) {
  const mxl_batch_options *o = &b->o;
  uint64_t h = mix(0, b->n);
  h = mix(h, (uint64_t)o->seq_len);
  if (o->group_by_length) h = mix(h, (uint64_t)b->global_rows);
  h = mix(h, (uint64_t)(o->pack != 0) | (uint64_t)o->truncation << 1 | (uint64_t)o->mask << 3 |
                 (uint64_t)(o->shuffle != 0) << 6 | (uint64_t)(o->group_by_length != 0) << 7);
  h = mix(h, o->seed);
  for (size_t i = 0; i < b->n; i++) h = mix(h, (uint64_t)b->doc[i] << 32 | b->len[i]);
  return h;
}

/* Does the document train anything: a target (tokens 1..len-1) with the
 * mask's flag? Token 0 is never a target. */
static int has_target(const mxl_sample_view *v, size_t len, mxl_loss_mask mask) {
  for (size_t t = 1; t < len; t++)
    if (v->flags[t] & MXL_MASK_BIT(mask)) return 1;
  return 0;
}

static mxl_status check_options(const mxl_batch_options *o) {
  if (o->seq_len < 2)
    return mxl_errorf(MXL_ERR_ARGUMENT, "batch: seq_len %d: expected at least 2", o->seq_len);
  if (o->rows < 1)
    return mxl_errorf(MXL_ERR_ARGUMENT, "batch: rows %d: expected at least 1", o->rows);
  if (o->n_shards < 0 || o->n_shards > 65536 || o->shard < 0 ||
      o->shard >= (o->n_shards > 1 ? o->n_shards : 1))
    return mxl_errorf(MXL_ERR_ARGUMENT, "batch: shard %d of %d: expected 0 <= shard < shards",
                      o->shard, o->n_shards);
  int64_t rows = (int64_t)o->rows * (o->n_shards > 1 ? o->n_shards : 1);
  if ((int64_t)o->seq_len * rows > (int64_t)1 << 31)
    return mxl_errorf(MXL_ERR_ARGUMENT, "batch: %lld rows of %d tokens is too large",
                      (long long)rows, o->seq_len);
  if ((unsigned)o->mask >= MXL_MASK_COUNT)
    return mxl_errorf(MXL_ERR_ARGUMENT, "batch: unknown loss mask %d", (int)o->mask);
  if (o->truncation != MXL_TRUNCATE_DROP && o->truncation != MXL_TRUNCATE_CUT)
    return mxl_errorf(MXL_ERR_ARGUMENT, "batch: unknown truncation %d", (int)o->truncation);
  return MXL_OK;
}

static mxl_status alloc_batch(mxl_batcher *b) {
  size_t cells = (size_t)b->global_rows * (size_t)b->o.seq_len;
  mxl_batch *x = &b->batch;
  x->rows = b->global_rows;
  x->seq_len = b->o.seq_len;
  x->ids = malloc(cells * sizeof *x->ids);
  x->labels = malloc(cells * sizeof *x->labels);
  x->weights = malloc(cells * sizeof *x->weights);
  x->pos = malloc(cells * sizeof *x->pos);
  x->seg = malloc(cells * sizeof *x->seg);
  if (!x->ids || !x->labels || !x->weights || !x->pos || !x->seg)
    return mxl_errorf(MXL_ERR_MEMORY, "batch: out of memory for %d x %d tokens",
                      b->global_rows, b->o.seq_len);
  return MXL_OK;
}

/* Chooses the documents to serve: long ones dropped or cut, and those with
 * nothing to train under the mask left out. */
static mxl_status select_docs(mxl_batcher *b) {
  size_t n = mxl_dataset_size(b->ds);
  b->doc = malloc((n ? n : 1) * sizeof *b->doc);
  b->len = malloc((n ? n : 1) * sizeof *b->len);
  b->order = malloc((n ? n : 1) * sizeof *b->order);
  if (!b->doc || !b->len || !b->order) return mxl_errorf(MXL_ERR_MEMORY, "batcher: out of memory");
  size_t T = (size_t)b->o.seq_len;
  for (size_t i = 0; i < n; i++) {
    mxl_sample_view v;
    MXL_TRY(mxl_dataset_sample(b->ds, i, &v));
    size_t len = v.n;
    if (len > T) {
      if (b->o.truncation == MXL_TRUNCATE_DROP) {
        b->counts.dropped_long++;
        continue;
      }
      b->counts.truncated++;
      len = T;
    }
    if (!has_target(&v, len, b->o.mask)) {
      b->counts.dropped_untrained++;
      continue;
    }
    b->doc[b->n] = (uint32_t)i;
    b->len[b->n] = (uint32_t)len;
    b->n++;
  }
  b->counts.docs = b->n;
  if (b->n == 0)
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "batch: no document to serve: %zu samples, %zu longer than seq_len %d "
                      "dropped, %zu with nothing to train under mask '%s'",
                      n, b->counts.dropped_long, b->o.seq_len, b->counts.dropped_untrained,
                      mxl_loss_mask_name(b->o.mask));
  return MXL_OK;
}

mxl_status mxl_batcher_create(const mxl_dataset *ds, const mxl_batch_options *opts,
                              mxl_batcher **out) {
  *out = NULL;
  MXL_TRY(check_options(opts));
  mxl_batcher *b = calloc(1, sizeof *b);
  if (!b) return mxl_errorf(MXL_ERR_MEMORY, "batcher: out of memory");
  b->ds = ds;
  b->o = *opts;
  b->global_rows = opts->rows * (opts->n_shards > 1 ? opts->n_shards : 1);
  mxl_status st = select_docs(b);
  if (st == MXL_OK) st = alloc_batch(b);
  if (st == MXL_OK) st = make_order(b);
  if (st != MXL_OK) {
    mxl_batcher_destroy(b);
    return st;
  }
  b->fingerprint = fingerprint(b);
  *out = b;
  return MXL_OK;
}

void mxl_batcher_destroy(mxl_batcher *b) {
  if (!b) return;
  free(b->doc);
  free(b->len);
  free(b->order);
  free(b->batch.ids);
  free(b->batch.labels);
  free(b->batch.weights);
  free(b->batch.pos);
  free(b->batch.seg);
  free(b);
}

mxl_batcher_counts mxl_batcher_get_counts(const mxl_batcher *b) { return b->counts; }

/* ------------------------------------------------------------------ batches */

static void clear_batch(mxl_batcher *b) {
  mxl_batch *x = &b->batch;
  size_t cells = (size_t)x->rows * (size_t)x->seq_len;
  for (size_t k = 0; k < cells; k++) {
    x->ids[k] = b->o.pad_id;
    x->labels[k] = -1;
    x->weights[k] = 0.0f;
    x->pos[k] = 0;
    x->seg[k] = -1;
  }
  x->rows_used = 0;
  x->docs = 0;
  x->trained = 0;
  x->epoch = b->epoch;
}

/* Writes document `d` (len tokens) at row/col as segment `seg`. */
static void place(mxl_batcher *b, uint32_t d, int row, int col, int32_t seg) {
  mxl_sample_view v;
  mxl_dataset_sample(b->ds, b->doc[d], &v);
  mxl_batch *x = &b->batch;
  size_t len = b->len[d], base = (size_t)row * (size_t)x->seq_len + (size_t)col;
  MXL_ASSERT(row < x->rows && (size_t)col + len <= (size_t)x->seq_len); /* packing fits */
  uint8_t bit = MXL_MASK_BIT(b->o.mask);
  for (size_t t = 0; t < len; t++) {
    size_t k = base + t;
    x->ids[k] = v.ids[t];
    x->pos[k] = (int32_t)t;
    x->seg[k] = seg;
    if (t + 1 < len) {
      x->labels[k] = v.ids[t + 1];
      x->weights[k] = (v.flags[t + 1] & bit) ? 1.0f : 0.0f;
      x->trained += (v.flags[t + 1] & bit) != 0;
    }
  }
}

/* This rank's rows of the global batch, with their own counts. */
static const mxl_batch *shard_of(mxl_batcher *b) {
  const mxl_batch *g = &b->batch;
  mxl_batch *v = &b->shard;
  const int rows = b->o.rows, first = b->o.shard * rows;
  const size_t off = (size_t)first * (size_t)g->seq_len, cells = (size_t)rows * g->seq_len;
  v->rows = rows;
  v->seq_len = g->seq_len;
  v->ids = g->ids + off;
  v->labels = g->labels + off;
  v->weights = g->weights + off;
  v->pos = g->pos + off;
  v->seg = g->seg + off;
  v->epoch = g->epoch;
  int used = g->rows_used - first;
  v->rows_used = used < 0 ? 0 : used > rows ? rows : used;
  v->docs = v->trained = 0;
  for (size_t k = 0; k < cells; k++) {
    v->docs += v->seg[k] >= 0 && v->pos[k] == 0;
    v->trained += v->weights[k] > 0;
  }
  return v;
}

mxl_status mxl_batcher_next(mxl_batcher *b, const mxl_batch **batch_out, int *done) {
  *batch_out = NULL;
  *done = 0;
  if (b->index >= b->n && !b->o.loop) {
    *done = 1;
    return MXL_OK;
  }
  clear_batch(b);
  mxl_batch *x = &b->batch;
  int T = x->seq_len, B = x->rows, row = 0, col = 0;
  for (;;) {
    if (b->index >= b->n) {
      if (!b->o.loop) break;
      b->epoch++;
      b->index = 0;
      MXL_TRY(make_order(b));
    }
    uint32_t d = b->order[b->index];
    int len = (int)b->len[d];
    if (col > 0 && (!b->o.pack || col + len > T)) {
      row++;
      col = 0;
    }
    if (row == B) break;
    place(b, d, row, col, (int32_t)x->docs);
    col += len;
    x->docs++;
    b->index++;
  }
  x->rows_used = row == B ? B : row + (col > 0);
  *batch_out = b->o.n_shards > 1 ? shard_of(b) : x;
  return MXL_OK;
}

/* ------------------------------------------------------------------ cursor */

mxl_data_cursor mxl_batcher_cursor(const mxl_batcher *b) {
  mxl_data_cursor c = {b->o.seed, b->epoch, b->index, epoch_rng(b->o.seed, b->epoch),
                       b->fingerprint};
  return c;
}

mxl_status mxl_batcher_seek(mxl_batcher *b, const mxl_data_cursor *c) {
  if (c->seed != b->o.seed)
    return mxl_errorf(MXL_ERR_STATE, "data cursor: saved with seed %" PRIu64 ", now %" PRIu64,
                      c->seed, b->o.seed);
  if (c->fingerprint != b->fingerprint)
    return mxl_errorf(MXL_ERR_STATE,
                      "data cursor: saved for other data or batch options (fingerprint "
                      "%016" PRIx64 ", now %016" PRIx64 ")",
                      c->fingerprint, b->fingerprint);
  if (c->rng != epoch_rng(c->seed, c->epoch) || c->index > b->n)
    return mxl_errorf(MXL_ERR_STATE, "data cursor: inconsistent (epoch %" PRIu64
                      ", index %" PRIu64 " of %zu documents)", c->epoch, c->index, b->n);
  b->epoch = c->epoch;
  b->index = c->index;
  return make_order(b);
}

void mxl_data_cursor_format(const mxl_data_cursor *c, char *buf, size_t cap) {
  snprintf(buf, cap,
           "mxl-cursor 1 seed=%" PRIu64 " epoch=%" PRIu64 " index=%" PRIu64 " rng=%016" PRIx64
           " fp=%016" PRIx64,
           c->seed, c->epoch, c->index, c->rng, c->fingerprint);
}

mxl_status mxl_data_cursor_parse(const char *text, mxl_data_cursor *out) {
  mxl_data_cursor c;
  int end = -1;
  if (sscanf(text, "mxl-cursor 1 seed=%" SCNu64 " epoch=%" SCNu64 " index=%" SCNu64
                   " rng=%" SCNx64 " fp=%" SCNx64 "%n",
             &c.seed, &c.epoch, &c.index, &c.rng, &c.fingerprint, &end) != 5 ||
      end < 0 || (text[end] != '\0' && text[end] != '\n'))
    return mxl_errorf(MXL_ERR_FORMAT,
                      "data cursor: cannot parse '%.100s' (expected \"mxl-cursor 1 seed=N "
                      "epoch=N index=N rng=HEX fp=HEX\")",
                      text);
  *out = c;
  return MXL_OK;
}
