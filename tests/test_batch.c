/* Batching: packing whole documents into rows with positions, segments,
 * next-token labels and loss weights; truncation; shuffling; grouping by
 * length; and the resumable cursor (N batches in one go equal k batches,
 * cursor saved and restored, then N-k). Uses a byte-level tokenizer so
 * every expected id is a character. */
#include <stdlib.h>
#include <string.h>

#include "mxlora/data.h"
#include "byte_tokenizer.h"
#include "test.h"

static mxl_tokenizer *tok;

/* A dataset of raw text samples, one per string. */
static mxl_dataset *texts(const char *const *docs, int n) {
  FILE *fp = fopen("test_batch_docs.jsonl", "wb");
  for (int i = 0; i < n; i++) fprintf(fp, "{\"text\":\"%s\"}\n", docs[i]);
  fclose(fp);
  mxl_dataset *ds = NULL;
  MXL_CHECK_OK(mxl_dataset_load("test_batch_docs.jsonl", tok, NULL, &ds));
  remove("test_batch_docs.jsonl");
  return ds;
}

/* Row r of a batch as a string of ids ('.' for padding). */
static void row_text(const mxl_batch *b, int r, char *out) {
  for (int t = 0; t < b->seq_len; t++) {
    int k = r * b->seq_len + t;
    out[t] = b->seg[k] < 0 ? '.' : (char)b->ids[k];
  }
  out[b->seq_len] = '\0';
}

static void check_row(const mxl_batch *b, int r, const char *ids, const int *pos,
                      const int *seg, const char *labels, const char *weights) {
  char got[64];
  row_text(b, r, got);
  MXL_CHECK_MSG(!strcmp(got, ids), "row %d ids \"%s\", want \"%s\"", r, got, ids);
  for (int t = 0; t < b->seq_len; t++) {
    int k = r * b->seq_len + t;
    MXL_CHECK_MSG(b->pos[k] == pos[t], "row %d t %d pos %d want %d", r, t, b->pos[k], pos[t]);
    MXL_CHECK_MSG(b->seg[k] == seg[t], "row %d t %d seg %d want %d", r, t, b->seg[k], seg[t]);
    int want_label = labels[t] == '-' ? -1 : labels[t];
    MXL_CHECK_MSG(b->labels[k] == want_label, "row %d t %d label %d want %d", r, t, b->labels[k],
                  want_label);
    MXL_CHECK_MSG(b->weights[k] == (float)(weights[t] - '0'), "row %d t %d weight %g", r, t,
                  (double)b->weights[k]);
  }
}

static const char *const abc[] = {"abc", "defg", "hi", "jklmnop"};

static void test_packing(void) {
  mxl_dataset *ds = texts(abc, 4);
  mxl_batch_options o = {.seq_len = 8, .rows = 2, .pack = 1, .mask = MXL_MASK_ASSISTANT,
                         .pad_id = 1};
  mxl_batcher *b = NULL;
  MXL_CHECK_OK(mxl_batcher_create(ds, &o, &b));
  if (!b) return;
  const mxl_batch *x;
  int done;
  MXL_CHECK_OK(mxl_batcher_next(b, &x, &done));
  MXL_CHECK(!done && x->rows_used == 2 && x->docs == 3);
  /* "abc" and "defg" share row 0; "hi" does not fit after them */
  check_row(x, 0, "abcdefg.", (int[]){0, 1, 2, 0, 1, 2, 3, 0}, (int[]){0, 0, 0, 1, 1, 1, 1, -1},
            "bc-efg--", "11011100");
  check_row(x, 1, "hi......", (int[]){0, 1, 0, 0, 0, 0, 0, 0},
            (int[]){2, 2, -1, -1, -1, -1, -1, -1}, "i-------", "10000000");
  MXL_CHECK(x->ids[7] == 1 && x->trained == 6);
  MXL_CHECK_OK(mxl_batcher_next(b, &x, &done));
  MXL_CHECK(!done && x->rows_used == 1 && x->docs == 1);
  check_row(x, 0, "jklmnop.", (int[]){0, 1, 2, 3, 4, 5, 6, 0}, (int[]){0, 0, 0, 0, 0, 0, 0, -1},
            "klmnop--", "11111100");
  MXL_CHECK_OK(mxl_batcher_next(b, &x, &done));
  MXL_CHECK(done && x == NULL);
  MXL_CHECK_OK(mxl_batcher_next(b, &x, &done));
  MXL_CHECK(done);
  mxl_batcher_destroy(b);
  /* without packing: one document per row */
  o.pack = 0;
  MXL_CHECK_OK(mxl_batcher_create(ds, &o, &b));
  MXL_CHECK_OK(mxl_batcher_next(b, &x, &done));
  MXL_CHECK(x->docs == 2);
  check_row(x, 0, "abc.....", (int[]){0, 1, 2, 0, 0, 0, 0, 0},
            (int[]){0, 0, 0, -1, -1, -1, -1, -1}, "bc------", "11000000");
  check_row(x, 1, "defg....", (int[]){0, 1, 2, 3, 0, 0, 0, 0},
            (int[]){1, 1, 1, 1, -1, -1, -1, -1}, "efg-----", "11100000");
  mxl_batcher_destroy(b);
  mxl_dataset_destroy(ds);
}

static void test_truncation(void) {
  mxl_dataset *ds = texts(abc, 4);
  mxl_batch_options o = {.seq_len = 4, .rows = 1, .pack = 1, .truncation = MXL_TRUNCATE_DROP};
  mxl_batcher *b = NULL;
  MXL_CHECK_OK(mxl_batcher_create(ds, &o, &b));
  mxl_batcher_counts c = mxl_batcher_get_counts(b);
  MXL_CHECK(c.docs == 3 && c.dropped_long == 1 && c.truncated == 0);
  const mxl_batch *x;
  int done, n = 0;
  while (mxl_batcher_next(b, &x, &done) == MXL_OK && !done) n++;
  MXL_CHECK(n == 3); /* abc | defg | hi */
  mxl_batcher_destroy(b);
  o.truncation = MXL_TRUNCATE_CUT;
  MXL_CHECK_OK(mxl_batcher_create(ds, &o, &b));
  c = mxl_batcher_get_counts(b);
  MXL_CHECK(c.docs == 4 && c.dropped_long == 0 && c.truncated == 1);
  for (int i = 0; i < 4; i++) MXL_CHECK_OK(mxl_batcher_next(b, &x, &done));
  check_row(x, 0, "jklm", (int[]){0, 1, 2, 3}, (int[]){0, 0, 0, 0}, "klm-", "1110");
  mxl_batcher_destroy(b);
  mxl_dataset_destroy(ds);
}

static void test_masks_follow_flags(void) {
  /* a chat sample: weights are the flags of the next token */
  FILE *fp = fopen("test_batch_chat.jsonl", "wb");
  fputs("{\"messages\":[{\"role\":\"user\",\"content\":\"Q\"},"
        "{\"role\":\"assistant\",\"thinking\":\"t\",\"content\":\"A\"}]}\n"
        "{\"text\":\"x\"}\n",
        fp);
  fclose(fp);
  mxl_dataset *ds = NULL;
  MXL_CHECK_OK(mxl_dataset_load("test_batch_chat.jsonl", tok, NULL, &ds));
  remove("test_batch_chat.jsonl");
  if (!ds) return;
  mxl_sample_view v;
  mxl_dataset_sample(ds, 0, &v);
  for (int mode = 0; mode < MXL_MASK_COUNT; mode++) {
    mxl_batch_options o = {.seq_len = 512, .rows = 1, .mask = (mxl_loss_mask)mode};
    mxl_batcher *b = NULL;
    MXL_CHECK_OK(mxl_batcher_create(ds, &o, &b));
    if (!b) continue;
    /* the one-token text sample predicts nothing and is left out */
    MXL_CHECK(mxl_batcher_get_counts(b).dropped_untrained == 1);
    const mxl_batch *x;
    int done;
    MXL_CHECK_OK(mxl_batcher_next(b, &x, &done));
    size_t want = 0, agree = 1;
    for (size_t t = 0; t + 1 < v.n; t++) {
      int w = (v.flags[t + 1] >> mode) & 1;
      want += (size_t)w;
      agree &= x->weights[t] == (float)w && x->labels[t] == v.ids[t + 1];
    }
    MXL_CHECK(agree && x->trained == want && x->labels[v.n - 1] == -1);
    MXL_CHECK(mode != MXL_MASK_ALL || want == v.n - 1);
    /* after <|start|>assistant: <|channel|>analysis<|message|>t<|end|> (12),
     * <|start|>assistant (10), <|channel|>final<|message|>A<|return|> (9) */
    MXL_CHECK(mode != MXL_MASK_ASSISTANT || want == 31);
    MXL_CHECK(mode != MXL_MASK_LAST_TURN || want == 31);
    MXL_CHECK(mode != MXL_MASK_FINAL || want == 9);
    mxl_batcher_destroy(b);
  }
  mxl_dataset_destroy(ds);
}

/* ------------------------------------------------------------------ order */

static mxl_dataset *numbered(int n) {
  FILE *fp = fopen("test_batch_num.jsonl", "wb");
  for (int i = 0; i < n; i++) {
    fputs("{\"text\":\"", fp);
    fputc('A' + i % 26, fp);
    for (int k = 0; k < 1 + (i * 7) % 11; k++) fputc('a' + i / 26, fp);
    fputs("\"}\n", fp);
  }
  fclose(fp);
  mxl_dataset *ds = NULL;
  MXL_CHECK_OK(mxl_dataset_load("test_batch_num.jsonl", tok, NULL, &ds));
  remove("test_batch_num.jsonl");
  return ds;
}

/* The documents of one epoch in serving order, by first id and length. */
static int epoch_order(const mxl_dataset *ds, const mxl_batch_options *o, int *first, int *len,
                       int cap) {
  mxl_batcher *b = NULL;
  MXL_CHECK_OK(mxl_batcher_create(ds, o, &b));
  if (!b) return 0;
  int n = 0, done = 0;
  const mxl_batch *x;
  while (mxl_batcher_next(b, &x, &done) == MXL_OK && !done)
    for (int k = 0; k < x->rows * x->seq_len; k++)
      if (x->seg[k] >= 0 && x->pos[k] == 0 && n < cap) {
        first[n] = x->ids[k] * 64 + x->ids[k + 1];
        int l = 0;
        while (k + l < x->rows * x->seq_len && x->seg[k + l] == x->seg[k]) l++;
        len[n++] = l;
      }
  mxl_batcher_destroy(b);
  return n;
}

static void test_shuffle_and_grouping(void) {
  mxl_dataset *ds = numbered(60);
  mxl_batch_options o = {.seq_len = 16, .rows = 2, .pack = 1};
  int plain[64] = {0}, pl[64] = {0}, a[64] = {0}, al[64] = {0}, c[64] = {0}, cl[64] = {0},
      d[64] = {0}, dl[64] = {0};
  int n = epoch_order(ds, &o, plain, pl, 64);
  MXL_CHECK(n == 60);
  o.shuffle = 1;
  o.seed = 11;
  MXL_CHECK(epoch_order(ds, &o, a, al, 64) == 60);
  MXL_CHECK(epoch_order(ds, &o, c, cl, 64) == 60);
  MXL_CHECK(!memcmp(a, c, sizeof a)); /* the same seed, the same order */
  MXL_CHECK(memcmp(a, plain, sizeof a) != 0);
  o.seed = 12;
  epoch_order(ds, &o, d, dl, 64);
  MXL_CHECK(memcmp(a, d, sizeof a) != 0);
  /* a shuffle is a permutation: every document exactly once */
  int sa[60], sp[60];
  memcpy(sa, a, sizeof sa);
  memcpy(sp, plain, sizeof sp);
  int count = 0;
  for (int i = 0; i < 60; i++)
    for (int j = 0; j < 60; j++)
      if (sa[i] == sp[j]) count++;
  MXL_CHECK(count == 60);
  /* grouping: within each window of 64 * rows documents, longest first */
  o.group_by_length = 1;
  o.rows = 1;
  n = epoch_order(ds, &o, d, dl, 64);
  MXL_CHECK(n == 60);
  int sorted = 1;
  for (int i = 1; i < n; i++) sorted &= dl[i] <= dl[i - 1];
  MXL_CHECK(sorted);
  mxl_dataset_destroy(ds);
}

/* ------------------------------------------------------------------ cursor */

static int batches_equal(const mxl_batch *x, const mxl_batch *y) {
  size_t cells = (size_t)x->rows * (size_t)x->seq_len;
  return x->rows == y->rows && x->seq_len == y->seq_len && x->docs == y->docs &&
         x->rows_used == y->rows_used && x->trained == y->trained && x->epoch == y->epoch &&
         !memcmp(x->ids, y->ids, cells * 4) && !memcmp(x->labels, y->labels, cells * 4) &&
         !memcmp(x->weights, y->weights, cells * 4) && !memcmp(x->pos, y->pos, cells * 4) &&
         !memcmp(x->seg, y->seg, cells * 4);
}

static mxl_batch copy_batch(const mxl_batch *x) {
  size_t cells = (size_t)x->rows * (size_t)x->seq_len;
  mxl_batch c = *x;
  c.ids = malloc(cells * 4);
  c.labels = malloc(cells * 4);
  c.weights = malloc(cells * 4);
  c.pos = malloc(cells * 4);
  c.seg = malloc(cells * 4);
  memcpy(c.ids, x->ids, cells * 4);
  memcpy(c.labels, x->labels, cells * 4);
  memcpy(c.weights, x->weights, cells * 4);
  memcpy(c.pos, x->pos, cells * 4);
  memcpy(c.seg, x->seg, cells * 4);
  return c;
}

static void free_batch(mxl_batch *c) {
  free(c->ids);
  free(c->labels);
  free(c->weights);
  free(c->pos);
  free(c->seg);
}

static void test_resume(void) {
  enum { N = 40, K = 17 };
  mxl_dataset *ds = numbered(60);
  mxl_batch_options o = {.seq_len = 24, .rows = 3, .pack = 1, .shuffle = 1, .seed = 2024,
                         .group_by_length = 1, .loop = 1};
  mxl_batcher *b = NULL;
  MXL_CHECK_OK(mxl_batcher_create(ds, &o, &b));
  if (!b) return;
  mxl_batch straight[N];
  const mxl_batch *x;
  int done;
  for (int i = 0; i < N; i++) {
    MXL_CHECK_OK(mxl_batcher_next(b, &x, &done));
    straight[i] = copy_batch(x);
  }
  MXL_CHECK(straight[N - 1].epoch >= 2); /* the run crosses epochs */
  mxl_batcher_destroy(b);
  /* k batches, save the cursor as text, a fresh batcher continues */
  MXL_CHECK_OK(mxl_batcher_create(ds, &o, &b));
  int same = 1;
  for (int i = 0; i < K; i++) {
    MXL_CHECK_OK(mxl_batcher_next(b, &x, &done));
    same &= batches_equal(x, &straight[i]);
  }
  char text[MXL_CURSOR_TEXT_MAX];
  mxl_data_cursor saved = mxl_batcher_cursor(b);
  mxl_data_cursor_format(&saved, text, sizeof text);
  MXL_CHECK(!strncmp(text, "mxl-cursor 1 seed=2024 epoch=", 29));
  mxl_batcher_destroy(b);
  mxl_data_cursor back;
  MXL_CHECK_OK(mxl_data_cursor_parse(text, &back));
  MXL_CHECK(!memcmp(&back, &saved, sizeof back));
  MXL_CHECK_OK(mxl_batcher_create(ds, &o, &b));
  MXL_CHECK_OK(mxl_batcher_seek(b, &back));
  for (int i = K; i < N; i++) {
    MXL_CHECK_OK(mxl_batcher_next(b, &x, &done));
    same &= batches_equal(x, &straight[i]);
  }
  MXL_CHECK(same);
  mxl_batcher_destroy(b);
  /* a cursor refuses other data, another seed, or a tampered epoch */
  mxl_batcher *other = NULL;
  o.seed = 7;
  MXL_CHECK_OK(mxl_batcher_create(ds, &o, &other));
  MXL_CHECK_FAILS(mxl_batcher_seek(other, &back), MXL_ERR_STATE, "saved with seed 2024, now 7");
  mxl_batcher_destroy(other);
  o.seed = 2024;
  o.seq_len = 25;
  MXL_CHECK_OK(mxl_batcher_create(ds, &o, &other));
  MXL_CHECK_FAILS(mxl_batcher_seek(other, &back), MXL_ERR_STATE, "other data or batch options");
  mxl_batcher_destroy(other);
  o.seq_len = 24;
  MXL_CHECK_OK(mxl_batcher_create(ds, &o, &other));
  mxl_data_cursor bad = back;
  bad.epoch++;
  MXL_CHECK_FAILS(mxl_batcher_seek(other, &bad), MXL_ERR_STATE, "inconsistent");
  bad = back;
  bad.index = 1000;
  MXL_CHECK_FAILS(mxl_batcher_seek(other, &bad), MXL_ERR_STATE, "inconsistent");
  mxl_batcher_destroy(other);
  MXL_CHECK_FAILS(mxl_data_cursor_parse("mxl-cursor 2 seed=1", &bad), MXL_ERR_FORMAT,
                  "cannot parse");
  MXL_CHECK_FAILS(mxl_data_cursor_parse(text + 1, &bad), MXL_ERR_FORMAT, "cannot parse");
  char longer[MXL_CURSOR_TEXT_MAX + 8];
  snprintf(longer, sizeof longer, "%s x", text);
  MXL_CHECK_FAILS(mxl_data_cursor_parse(longer, &bad), MXL_ERR_FORMAT, "cannot parse");
  for (int i = 0; i < N; i++) free_batch(&straight[i]);
  mxl_dataset_destroy(ds);
}

/* Rows of batch x from row r on equal the `rows` rows of y. */
static int rows_equal(const mxl_batch *x, int r, const mxl_batch *y) {
  size_t off = (size_t)r * x->seq_len, cells = (size_t)y->rows * y->seq_len;
  return !memcmp(x->ids + off, y->ids, cells * 4) && !memcmp(x->labels + off, y->labels, cells * 4) &&
         !memcmp(x->weights + off, y->weights, cells * 4) &&
         !memcmp(x->pos + off, y->pos, cells * 4) && !memcmp(x->seg + off, y->seg, cells * 4);
}

/* Two shards of 2 rows serve exactly the 4-row batches of one batcher, and
 * every batcher has the same cursor whatever its shard and rows. */
static void test_shards(void) {
  mxl_dataset *ds = numbered(60);
  mxl_batch_options o = {.seq_len = 24, .rows = 4, .pack = 1, .shuffle = 1, .seed = 5,
                         .loop = 1};
  mxl_batcher *whole = NULL, *part[2] = {NULL, NULL};
  MXL_CHECK_OK(mxl_batcher_create(ds, &o, &whole));
  o.rows = 2;
  o.n_shards = 2;
  for (int r = 0; r < 2; r++) {
    o.shard = r;
    MXL_CHECK_OK(mxl_batcher_create(ds, &o, &part[r]));
  }
  if (!whole || !part[0] || !part[1]) return;
  int same = 1, counts = 1;
  for (int step = 0; step < 25; step++) {
    const mxl_batch *w, *a, *b;
    int done;
    MXL_CHECK_OK(mxl_batcher_next(whole, &w, &done));
    MXL_CHECK_OK(mxl_batcher_next(part[0], &a, &done));
    MXL_CHECK_OK(mxl_batcher_next(part[1], &b, &done));
    same &= a->rows == 2 && b->rows == 2 && rows_equal(w, 0, a) && rows_equal(w, 2, b);
    counts &= a->trained + b->trained == w->trained && a->docs + b->docs == w->docs &&
              a->rows_used + b->rows_used == w->rows_used && a->trained > 0;
  }
  MXL_CHECK_MSG(same, "a shard's rows differ from the whole batch's");
  MXL_CHECK_MSG(counts, "shard counts do not add up to the whole batch's");
  mxl_data_cursor cw = mxl_batcher_cursor(whole), c0 = mxl_batcher_cursor(part[0]);
  MXL_CHECK(!memcmp(&cw, &c0, sizeof cw));
  /* A cursor of 2 shards continues in one process (resume 2 -> 1 rank). */
  mxl_batcher *one = NULL;
  o.rows = 4;
  o.n_shards = 1;
  o.shard = 0;
  MXL_CHECK_OK(mxl_batcher_create(ds, &o, &one));
  MXL_CHECK_OK(mxl_batcher_seek(one, &c0));
  const mxl_batch *w, *x;
  int done;
  MXL_CHECK_OK(mxl_batcher_next(whole, &w, &done));
  MXL_CHECK_OK(mxl_batcher_next(one, &x, &done));
  MXL_CHECK(batches_equal(w, x));
  mxl_batcher_destroy(one);
  o.rows = 2;
  o.n_shards = 2;
  o.shard = 2;
  MXL_CHECK_FAILS(mxl_batcher_create(ds, &o, &one), MXL_ERR_ARGUMENT, "shard 2 of 2");
  mxl_batcher_destroy(whole);
  mxl_batcher_destroy(part[0]);
  mxl_batcher_destroy(part[1]);
  mxl_dataset_destroy(ds);
}

static void test_option_errors(void) {
  mxl_dataset *ds = texts(abc, 4);
  mxl_batcher *b = NULL;
  mxl_batch_options o = {.seq_len = 1, .rows = 1};
  MXL_CHECK_FAILS(mxl_batcher_create(ds, &o, &b), MXL_ERR_ARGUMENT, "seq_len 1");
  o = (mxl_batch_options){.seq_len = 8, .rows = 0};
  MXL_CHECK_FAILS(mxl_batcher_create(ds, &o, &b), MXL_ERR_ARGUMENT, "rows 0");
  o = (mxl_batch_options){.seq_len = 8, .rows = 1, .mask = (mxl_loss_mask)9};
  MXL_CHECK_FAILS(mxl_batcher_create(ds, &o, &b), MXL_ERR_ARGUMENT, "unknown loss mask");
  o = (mxl_batch_options){.seq_len = 8, .rows = 1, .truncation = (mxl_truncation)5};
  MXL_CHECK_FAILS(mxl_batcher_create(ds, &o, &b), MXL_ERR_ARGUMENT, "unknown truncation");
  o = (mxl_batch_options){.seq_len = 1 << 20, .rows = 1 << 12};
  MXL_CHECK_FAILS(mxl_batcher_create(ds, &o, &b), MXL_ERR_ARGUMENT, "too large");
  mxl_dataset_destroy(ds);
  ds = texts(abc, 2);
  o = (mxl_batch_options){.seq_len = 2, .rows = 1}; /* every document is longer */
  MXL_CHECK_FAILS(mxl_batcher_create(ds, &o, &b), MXL_ERR_ARGUMENT,
                  "no document to serve: 2 samples, 2 longer than seq_len 2 dropped");
  MXL_CHECK(b == NULL);
  mxl_dataset_destroy(ds);
}

int main(void) {
  tok = byte_tokenizer();
  MXL_RUN(test_packing);
  MXL_RUN(test_truncation);
  MXL_RUN(test_masks_follow_flags);
  MXL_RUN(test_shuffle_and_grouping);
  MXL_RUN(test_resume);
  MXL_RUN(test_shards);
  MXL_RUN(test_option_errors);
  mxl_tokenizer_free(tok);
  return mxl_test_summary("batch");
}
