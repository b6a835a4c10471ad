/* Inference forward pass on tiny checkpoints: decode token by token equals
 * prefill; chunked prefill with sliding-window rings that wrap equals one
 * pass; several sequences at once equal one at a time; all three layouts
 * give the same logits; the inference path and the training path agree on
 * the loss; the CPU backend agrees with the reference backend. */
#include "adapters/lora.h"
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/hugemem.h"
#include "model/forward.h"
#include "model/safetensors.h"
#include "model/train_step.h"
#include "model_fixture.h"
#include "test.h"

enum { N = 21 }; /* > 2 × the test preset's window of 8 */

static int32_t tokens[N];

static void make_tokens(int vocab) {
  uint64_t s = 99;
  for (int i = 0; i < N; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    tokens[i] = (int32_t)((s >> 33) % (uint64_t)vocab);
  }
}

/* Logits of every position, fed in chunks of `chunk` tokens, with an
 * optional adapter view. */
static mxl_status run_lora(mxl_engine *e, int chunk, float *logits, const mxl_lora_view *view) {
  mxl_kv_cache *c = NULL;
  mxl_forward_state st = {0};
  MXL_TRY(mxl_kv_cache_create(e, 64, chunk, &c));
  const size_t V = e->w.vocab_rows;
  mxl_status s = MXL_OK;
  for (int done = 0; s == MXL_OK && done < N; done += chunk) {
    int n = N - done < chunk ? N - done : chunk;
    mxl_fwd_seq seq = {c, tokens + done, n};
    mxl_forward_out out = {logits + done * V, 1, NULL};
    const mxl_lora_view *views[] = {view};
    mxl_lora_stack stack = {views, view ? 1 : 0, 0, 0};
    s = mxl_forward(e, &st, &seq, 1, &stack, &out);
  }
  mxl_forward_state_release(e, &st);
  mxl_kv_cache_destroy(e, c);
  return s;
}

static mxl_status run(mxl_engine *e, int chunk, float *logits) {
  return run_lora(e, chunk, logits, NULL);
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
  return m;
}

static void test_decode_equals_prefill(void) {
  model_fixture f;
  MXL_CHECK_OK(fixture_open(&f, "test", "hf", 3, "", 1));
  if (!f.engine) return fixture_close(&f);
  make_tokens(f.engine->w.vocab_rows);
  const size_t V = f.engine->w.vocab_rows;
  float *one = malloc(N * V * 4), *chunked = malloc(N * V * 4), *decode = malloc(N * V * 4);
  MXL_CHECK_OK(run(f.engine, N, one));
  MXL_CHECK_OK(run(f.engine, 5, chunked)); /* ring of 8+5-1 slots wraps */
  MXL_CHECK_OK(run(f.engine, 1, decode));
  double d1 = max_abs_diff(one, chunked, N * V), d2 = max_abs_diff(one, decode, N * V);
  printf("  prefill vs chunks of 5: %.3g, vs token by token: %.3g\n", d1, d2);
  MXL_CHECK(d1 < 1e-4 && d2 < 1e-4);
  double spread = 0;
  for (size_t i = 0; i < V; i++) spread = fmax(spread, fabs(one[i] - one[V + i]));
  MXL_CHECK_MSG(spread > 1e-3, "logits do not depend on the input (spread %g)", spread);
  free(one), free(chunked), free(decode);
  fixture_close(&f);
}

static void test_batched_sequences(void) {
  model_fixture f;
  MXL_CHECK_OK(fixture_open(&f, "test", "hf", 3, "", 1));
  if (!f.engine) return fixture_close(&f);
  make_tokens(f.engine->w.vocab_rows);
  mxl_engine *e = f.engine;
  const size_t V = e->w.vocab_rows;
  float *alone = malloc(N * V * 4), *together = malloc(2 * V * 4);
  MXL_CHECK_OK(run(e, N, alone));
  mxl_kv_cache *a = NULL, *b = NULL;
  mxl_forward_state st = {0};
  MXL_CHECK_OK(mxl_kv_cache_create(e, 64, 16, &a));
  MXL_CHECK_OK(mxl_kv_cache_create(e, 64, 16, &b));
  /* Sequence A: the first 7 tokens; sequence B: the first 12, in one call;
   * then both continue by one token each. */
  mxl_fwd_seq seqs[2] = {{a, tokens, 7}, {b, tokens, 12}};
  mxl_forward_out out = {together, 0, NULL};
  MXL_CHECK_OK(mxl_forward(e, &st, seqs, 2, NULL, &out));
  MXL_CHECK(max_abs_diff(together, alone + 6 * V, V) < 1e-4);
  MXL_CHECK(max_abs_diff(together + V, alone + 11 * V, V) < 1e-4);
  mxl_fwd_seq next[2] = {{a, tokens + 7, 1}, {b, tokens + 12, 1}};
  MXL_CHECK_OK(mxl_forward(e, &st, next, 2, NULL, &out));
  MXL_CHECK(max_abs_diff(together, alone + 7 * V, V) < 1e-4);
  MXL_CHECK(max_abs_diff(together + V, alone + 12 * V, V) < 1e-4);
  /* Errors: a chunk over the limit; a full context. */
  mxl_fwd_seq big = {a, tokens, 17};
  MXL_CHECK_FAILS(mxl_forward(e, &st, &big, 1, NULL, &out), MXL_ERR_ARGUMENT, "1..16");
  int32_t bad = 1 << 30;
  mxl_fwd_seq oob = {a, &bad, 1};
  MXL_CHECK_FAILS(mxl_forward(e, &st, &oob, 1, NULL, &out), MXL_ERR_ARGUMENT, "outside");
  mxl_forward_state_release(e, &st);
  mxl_kv_cache_destroy(e, a);
  mxl_kv_cache_destroy(e, b);
  free(alone), free(together);
  fixture_close(&f);
}

static void test_layouts_agree(void) {
  model_fixture hf, orig, metal;
  MXL_CHECK_OK(fixture_open(&hf, "test", "all", 5, "", 1));
  MXL_CHECK_OK(fixture_open(&orig, "test", "all", 5, "original", 1));
  MXL_CHECK_OK(fixture_open(&metal, "test", "all", 5, "metal", 1));
  if (!hf.engine || !orig.engine || !metal.engine) goto done;
  make_tokens(metal.engine->w.vocab_rows);
  const size_t V = hf.engine->w.vocab_rows, Vm = metal.engine->w.vocab_rows;
  float *a = malloc(N * V * 4), *b = malloc(N * V * 4), *c = malloc(N * Vm * 4);
  MXL_CHECK_OK(run(hf.engine, N, a));
  MXL_CHECK_OK(run(orig.engine, N, b));
  MXL_CHECK_OK(run(metal.engine, 4, c));
  MXL_CHECK(max_abs_diff(a, b, N * V) == 0);
  double worst = 0;
  for (int t = 0; t < N; t++) worst = fmax(worst, max_abs_diff(a + t * V, c + t * Vm, Vm));
  printf("  hf vs original: identical; hf vs metal (first %zu of %zu rows): %.3g\n", Vm, V, worst);
  MXL_CHECK(worst < 1e-4);
  free(a), free(b), free(c);
done:
  fixture_close(&hf), fixture_close(&orig), fixture_close(&metal);
}

/* An adapter trained on the HF layout adds the same on metal/, whose q/k
 * rows are permuted and pre-scaled (mxl_lora_view_to_layout). */
static void test_adapter_on_metal(void) {
  model_fixture hf, metal;
  MXL_CHECK_OK(fixture_open(&hf, "test", "all", 5, "", 1));
  MXL_CHECK_OK(fixture_open(&metal, "test", "all", 5, "metal", 1));
  if (!hf.engine || !metal.engine) goto done;
  const mxl_config *c = &hf.model->config;
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, 3, 6.0f);
  MXL_CHECK_OK(mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS | MXL_LORA_EXPERT_BITS, NULL, 0,
                                   c->n_layers));
  mxl_lora *lora = NULL;
  MXL_CHECK_OK(mxl_lora_create(c, &lc, NULL, &lora));
  uint64_t rng = 5;
  for (size_t i = 0; lora && i < lora->layout->n_floats; i++)
    lora->params[i] = (mxl_splitmix_uniform(&rng) - 0.5f) * 0.4f;
  mxl_lora_layer *l1 = calloc(c->n_layers, sizeof *l1), *l2 = calloc(c->n_layers, sizeof *l2);
  mxl_lora_view v1 = {l1, c->n_layers, 0}, v2 = {l2, c->n_layers, 0};
  float *copy = NULL;
  if (lora) {
    mxl_lora_fill_view(lora->layout, lora->params, 1.0f, &v1);
    mxl_lora_fill_view(lora->layout, lora->params, 1.0f, &v2);
    MXL_CHECK_OK(mxl_lora_view_to_layout(&metal.model->w, &metal.model->config, &v2, &copy));
    MXL_CHECK(copy != NULL);
  }
  make_tokens(metal.engine->w.vocab_rows);
  const size_t V = hf.engine->w.vocab_rows, Vm = metal.engine->w.vocab_rows;
  float *a = malloc(N * V * 4), *b = malloc(N * Vm * 4), *base = malloc(N * V * 4);
  MXL_CHECK_OK(run_lora(hf.engine, N, a, &v1));
  MXL_CHECK_OK(run_lora(metal.engine, N, b, &v2));
  MXL_CHECK_OK(run(hf.engine, N, base));
  double worst = 0, moved = 0;
  for (int t = 0; t < N; t++) {
    worst = fmax(worst, max_abs_diff(a + t * V, b + t * Vm, Vm));
    moved = fmax(moved, max_abs_diff(a + t * V, base + t * V, V));
  }
  printf("  adapter: hf vs metal %.3g (the adapter moves logits by %.3g)\n", worst, moved);
  MXL_CHECK(worst < 1e-4 && moved > 1e-2);
  free(a), free(b), free(base), free(copy), free(l1), free(l2);
  mxl_lora_destroy(lora);
done:
  fixture_close(&hf), fixture_close(&metal);
}

/* The training path's loss equals cross-entropy of the inference logits. */
static void test_inference_and_training_agree(void) {
  model_fixture f;
  MXL_CHECK_OK(fixture_open(&f, "test", "hf", 3, "", 1));
  if (!f.engine) return fixture_close(&f);
  make_tokens(f.engine->w.vocab_rows);
  const size_t V = f.engine->w.vocab_rows;
  float *logits = malloc(N * V * 4);
  MXL_CHECK_OK(run(f.engine, N, logits));
  double expected = 0;
  int32_t targets[N], pos[N], seg[N];
  float weights[N];
  for (int t = 0; t < N; t++) {
    targets[t] = t + 1 < N ? tokens[t + 1] : -1;
    weights[t] = t + 1 < N ? 1.0f / (N - 1) : 0.0f;
    pos[t] = t, seg[t] = 0;
    if (t + 1 == N) continue;
    double m = -INFINITY, z = 0;
    for (size_t v = 0; v < V; v++) m = fmax(m, logits[t * V + v]);
    for (size_t v = 0; v < V; v++) z += exp(logits[t * V + v] - m);
    expected += (m + log(z) - logits[t * V + targets[t]]) / (N - 1);
  }
  mxl_lora_layer *layers = calloc(f.model->config.n_layers, sizeof *layers);
  mxl_lora_view view = {layers, f.model->config.n_layers, 0};
  const mxl_lora_view *views[] = {&view};
  mxl_lora_stack stack = {views, 1, 0, 0};
  mxl_train_batch b = {1, N, tokens, targets, weights, pos, seg, NULL, NULL};
  mxl_train_state st = {0};
  double loss = 0;
  MXL_CHECK_OK(mxl_train_step(f.engine, &st, &b, &stack, NULL, &loss));
  printf("  loss: training path %.7f, inference logits %.7f\n", loss, expected);
  MXL_CHECK_NEAR(loss, expected, 1e-5);
  mxl_train_state_release(f.engine, &st);
  free(layers);
  free(logits);
  fixture_close(&f);
}

static void test_cpu_matches_ref(void) {
  model_fixture ref, cpu;
  MXL_CHECK_OK(fixture_open(&ref, "test", "hf", 3, "", 1));
  MXL_CHECK_OK(fixture_open(&cpu, "test", "hf", 3, "", 0));
  if (ref.engine && cpu.engine) {
    make_tokens(ref.engine->w.vocab_rows);
    const size_t V = ref.engine->w.vocab_rows;
    float *a = malloc(N * V * 4), *b = malloc(N * V * 4);
    MXL_CHECK_OK(run(ref.engine, N, a));
    MXL_CHECK_OK(run(cpu.engine, 7, b));
    double d = max_abs_diff(a, b, N * V), scale = 0;
    for (size_t i = 0; i < N * V; i++) scale = fmax(scale, fabs(a[i]));
    printf("  cpu vs ref logits: max difference %.3g (max |logit| %.3g)\n", d, scale);
    MXL_CHECK(d < 0.02 * scale);
    free(a), free(b);
  }
  fixture_close(&ref), fixture_close(&cpu);
}

/* Feeds tokens [from, to) into c in chunks of `chunk`; logits of each
 * position land at logits + position × V (NULL: none). */
static mxl_status feed(mxl_engine *e, mxl_forward_state *st, mxl_kv_cache *c, int from, int to,
                       int chunk, float *logits) {
  const size_t V = e->w.vocab_rows;
  for (int done = from; done < to; done += chunk) {
    int n = to - done < chunk ? to - done : chunk;
    mxl_fwd_seq seq = {c, tokens + done, n};
    mxl_forward_out out = {logits ? logits + done * V : NULL, 1, NULL};
    MXL_TRY(mxl_forward(e, st, &seq, 1, NULL, &out));
  }
  return MXL_OK;
}

/* A new cache continues from position r of another (the prefix cache):
 * from the ring while it still holds the window before r, from a tail kept
 * at r after it moved on; either way the logits after r are those of one
 * pass over the whole sequence. Positions whose window the ring lost are
 * refused. On each backend (window 8; rings of 8 + 3 - 1 slots wrap). */
static void resume_on(int use_ref, double tol) {
  model_fixture f;
  MXL_CHECK_OK(fixture_open(&f, "test", "hf", 3, "", use_ref));
  if (!f.engine) return fixture_close(&f);
  mxl_engine *e = f.engine;
  make_tokens(e->w.vocab_rows);
  const size_t V = e->w.vocab_rows;
  float *one = malloc(N * V * 4), *got = calloc(N * V, 4);
  MXL_CHECK_OK(run(e, N, one));
  mxl_forward_state st = {0};
  mxl_kv_cache *src = NULL;
  mxl_kv_tail *tail = NULL, *head = NULL;
  MXL_CHECK_OK(mxl_kv_cache_create(e, 64, 3, &src));
  /* a head grown pass by pass: every sliding row of [0, 9), room for 9 */
  MXL_CHECK_OK(feed(e, &st, src, 0, 3, 3, NULL));
  MXL_CHECK_FAILS(mxl_kv_tail_take(e, src, 3, -1, 0, &head), MXL_ERR_ARGUMENT, "-1 rows");
  MXL_CHECK_OK(mxl_kv_tail_take(e, src, 3, 3, 9, &head));
  for (int p = 6; p <= 9; p += 3) {
    MXL_CHECK_OK(feed(e, &st, src, p - 3, p, 3, NULL));
    if (p < 9) MXL_CHECK_FAILS(mxl_kv_tail_grow(e, src, head, p + 1), MXL_ERR_ARGUMENT, "do not hold");
    MXL_CHECK_OK(mxl_kv_tail_grow(e, src, head, p));
  }
  MXL_CHECK(head->pos == 9 && head->rows == 9 && head->cap == 9);
  MXL_CHECK_OK(feed(e, &st, src, 9, 12, 3, NULL)); /* the ring holds [2, 12) */
  MXL_CHECK_FAILS(mxl_kv_tail_grow(e, src, head, 10), MXL_ERR_ARGUMENT, "outside 9..9");
  MXL_CHECK_FAILS(mxl_kv_tail_take(e, src, 9, 8, 0, &tail), MXL_ERR_ARGUMENT, "positions 1..8");
  MXL_CHECK_OK(mxl_kv_tail_take(e, src, 10, 8, 0, &tail)); /* the sliding layers' [2, 10) */
  MXL_CHECK(tail && tail->pos == 10 && tail->rows == 8);
  mxl_kv_tail *beyond = NULL, *part = NULL;
  MXL_CHECK_FAILS(mxl_kv_tail_copy(e, head, 10, 0, &beyond), MXL_ERR_ARGUMENT, "outside 0..9");
  MXL_CHECK(beyond == NULL);
  MXL_CHECK_OK(feed(e, &st, src, 12, N, 3, NULL)); /* the ring now holds [11, 21) */
  /* a copy of the head's first 5 rows with room for 12 grows no further:
   * the ring lost position 5 */
  MXL_CHECK_OK(mxl_kv_tail_copy(e, head, 5, 12, &part));
  MXL_CHECK(part->pos == 5 && part->rows == 5 && part->cap == 12);
  MXL_CHECK_FAILS(mxl_kv_tail_grow(e, src, part, 8), MXL_ERR_ARGUMENT, "positions 5..7");
  mxl_kv_tail_destroy(e, part);
  const int from_ring = N - 2; /* its window [11, 19) is in the ring */
  const struct { int r; const mxl_kv_tail *t; int ok; } cases[] = {
      {from_ring, NULL, 1}, {N, NULL, 1},    {10, tail, 1}, {10, NULL, 0},
      {from_ring - 1, NULL, 0}, {5, tail, 0}, {N + 1, NULL, 0},
      {5, head, 1},         {9, head, 1},    {10, head, 0}, {1, head, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int r = cases[i].r;
    MXL_CHECK_MSG(mxl_kv_cache_resumable(&f.model->config, src, cases[i].t, r) == cases[i].ok,
                  "position %d %s tail", r, cases[i].t ? "with" : "without");
    if (!cases[i].ok || r >= N) continue;
    mxl_kv_cache *dst = NULL;
    MXL_CHECK_OK(mxl_kv_cache_create(e, 64, 4, &dst));
    MXL_CHECK_OK(feed(e, &st, dst, 0, 2, 2, NULL)); /* a used cache must be refused */
    MXL_CHECK_FAILS(mxl_kv_cache_resume(e, dst, src, cases[i].t, r), MXL_ERR_ARGUMENT,
                    "cannot resume");
    mxl_kv_cache_reset(e, dst);
    MXL_CHECK_OK(mxl_kv_cache_resume(e, dst, src, cases[i].t, r));
    MXL_CHECK_OK(feed(e, &st, dst, r, N, 4, got));
    double d = max_abs_diff(one + r * V, got + r * V, (N - r) * V);
    printf("  resumed at %d (%s): logits after it differ from one pass by %.3g\n", r,
           cases[i].t == head ? "head" : cases[i].t ? "tail" : "ring", d);
    MXL_CHECK(d < tol);
    /* the resumed cache holds its sliding rows from r - 8 on only (and its
     * ring of 8 + 4 - 1 slots the last 11): a later continuation from it
     * cannot start where its window reaches before */
    int oldest = r - 8 > N - 11 ? r - 8 : N - 11;
    MXL_CHECK_MSG(mxl_kv_cache_slide_oldest(dst) == oldest &&
                      !mxl_kv_cache_resumable(&f.model->config, dst, NULL, oldest + 7) &&
                      mxl_kv_cache_resumable(&f.model->config, dst, NULL, oldest + 8),
                  "resumed at %d: oldest sliding row %d", r, mxl_kv_cache_slide_oldest(dst));
    mxl_kv_cache_destroy(e, dst);
  }
  mxl_kv_cache *dst = NULL;
  MXL_CHECK_OK(mxl_kv_cache_create(e, 64, 4, &dst));
  MXL_CHECK_FAILS(mxl_kv_cache_resume(e, dst, src, NULL, 12), MXL_ERR_ARGUMENT, "position 12");
  mxl_kv_cache_destroy(e, dst);
  mxl_kv_tail_destroy(e, tail);
  mxl_kv_tail_destroy(e, head);
  mxl_kv_cache_destroy(e, src);
  mxl_forward_state_release(e, &st);
  free(one), free(got);
  fixture_close(&f);
}

static void test_resume_from_cache(void) {
  resume_on(1, 1e-4);
  resume_on(0, 2e-2);
}

/* Sets the protection of a mapped file but the pages of the token
 * embedding, which stays in host memory by design (mxl_engine_embed gathers
 * a step's rows from it). */
static void protect_but_embedding(const mxl_model *m, const mxl_mapping *file, int prot) {
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  uintptr_t start = (uintptr_t)file->data, end = start + file->size;
  uintptr_t lo = (uintptr_t)m->w.embed.w, hi = lo + (size_t)m->w.embed.rows * m->w.embed.cols * 2;
  if (lo < start || hi > end) lo = hi = end;
  lo &= ~(uintptr_t)(page - 1);
  hi = (hi + page - 1) & ~(uintptr_t)(page - 1);
  if (lo > start) mprotect((void *)start, lo - start, prot);
  if (end > hi) mprotect((void *)hi, end - hi, prot);
}

/* Opens the 3-layer test model (`device`: fixture_open's flag) and puts the
 * mapped weights' logits of the test tokens into a new *a; *b gets room for
 * another engine's. Leaves f->engine NULL when the model cannot be made. */
static mxl_status logits_of_test_model(model_fixture *f, int device, float **a, float **b) {
  *a = *b = NULL;
  MXL_TRY(fixture_open(f, "test", "hf", 3, "", device));
  if (!f->engine) return MXL_OK;
  make_tokens(f->engine->w.vocab_rows);
  const size_t V = f->engine->w.vocab_rows;
  *a = malloc(N * V * 4), *b = malloc(N * V * 4);
  if (!*a || !*b) return mxl_errorf(MXL_ERR_MEMORY, "test_forward: logits of %zu rows", V);
  return run(f->engine, N, *a);
}

/* A backend without host memory (as CUDA) gets its own copy of the weights
 * but the token embedding: with the files' other pages made unreadable
 * after the upload, the forward pass still runs and gives the same logits,
 * so no pointer was left behind. */
static void test_device_copy_of_weights(void) {
  model_fixture f;
  float *a, *b;
  MXL_CHECK_OK(logits_of_test_model(&f, 1, &a, &b));
  if (!f.engine) return fixture_close(&f);
  const size_t V = f.engine->w.vocab_rows;
  static mxl_ops device_like;
  device_like = *f.be->ops;
  device_like.host_memory = 0;
  const mxl_ops *saved = f.be->ops;
  f.be->ops = &device_like;
  mxl_engine *dev = NULL;
  MXL_CHECK_OK(mxl_engine_create(f.model, f.be, &dev));
  MXL_CHECK(dev && dev->embed_on_host && dev->w.embed.w == f.model->w.embed.w);
  const mxl_safetensors *st = f.model->st;
  for (int i = 0; st && i < st->n_files; i++)
    protect_but_embedding(f.model, &st->files[i], PROT_NONE);
  if (dev) MXL_CHECK_OK(run(dev, N, b));
  for (int i = 0; st && i < st->n_files; i++)
    protect_but_embedding(f.model, &st->files[i], PROT_READ);
  MXL_CHECK(dev && max_abs_diff(a, b, N * V) == 0);
  mxl_engine_destroy(dev);
  f.be->ops = saved;
  free(a), free(b);
  fixture_close(&f);
}

static double copied_bytes, copy_total;
static void on_copy(void *user, const char *what, double done, double total) {
  (void)user;
  MXL_CHECK(strcmp(what, "weights") == 0 && done > copied_bytes && done <= total);
  copied_bytes = done, copy_total = total;
}

/* --no-mmap: the CPU engine copies the weight files into 2 MB-aligned
 * anonymous memory and reads them there. With the files' pages made
 * unreadable, the logits are bitwise those of the mapped weights. */
static void test_weights_in_huge_pages(void) {
  model_fixture f;
  float *a, *b;
  MXL_CHECK_OK(logits_of_test_model(&f, 0, &a, &b));
  if (!f.engine) return fixture_close(&f);
  const size_t V = f.engine->w.vocab_rows;
  mxl_weight_options w = {1, on_copy, NULL};
  mxl_engine *copy = NULL;
  MXL_CHECK_OK(mxl_engine_create_with(f.model, f.be, &w, &copy));
  const mxl_safetensors *st = f.model->st;
  size_t file_bytes = 0;
  for (int i = 0; st && i < st->n_files; i++) file_bytes += st->files[i].size;
  /* three slots per file (device backends copy pieces); --no-mmap fills the first */
  MXL_CHECK(copy && copy->huge_bytes && copy->n_device_files == 3 * st->n_files);
  MXL_CHECK(copied_bytes == (double)file_bytes && copy_total == (double)file_bytes);
  for (int i = 0; copy && i < copy->n_device_files; i++)
    MXL_CHECK(i % 3 == 0 ? copy->device_files[i] && (uintptr_t)copy->device_files[i] % (2 << 20) == 0
                         : copy->device_files[i] == NULL);
  for (int i = 0; st && i < st->n_files; i++)
    mprotect((void *)st->files[i].data, st->files[i].size, PROT_NONE);
  if (copy) MXL_CHECK_OK(run(copy, N, b));
  for (int i = 0; st && i < st->n_files; i++)
    mprotect((void *)st->files[i].data, st->files[i].size, PROT_READ);
  MXL_CHECK(copy && memcmp(a, b, N * V * 4) == 0);
  mxl_engine_destroy(copy);
  free(a), free(b);
  fixture_close(&f);
}

static void fake_mem_available(const char *path, uint64_t bytes) {
  MXL_CHECK(fixture_fake_mem_available(path, bytes));
}

/* --no-mmap under a small MemAvailable: refused before anything is copied,
 * naming the option and the checkpoint, when the copy does not fit; when
 * the copy fits but the files' page cache does not fit beside it, the cache
 * is dropped behind the copy, and the logits are still bitwise those of the
 * mapped weights. */
static void test_no_mmap_memory(void) {
  model_fixture f;
  float *a, *b;
  MXL_CHECK_OK(logits_of_test_model(&f, 0, &a, &b));
  if (!f.engine) return fixture_close(&f);
  const size_t V = f.engine->w.vocab_rows;
  const mxl_safetensors *st = f.model->st;
  uint64_t pages = 0, bytes = 0;
  for (int i = 0; st && i < st->n_files; i++)
    pages += mxl_huge_round(st->files[i].size), bytes += st->files[i].size;
  char meminfo[96];
  snprintf(meminfo, sizeof meminfo, "%s/meminfo", f.dir);
  mxl_weight_options w = {1, NULL, NULL};
  mxl_engine *copy = NULL;
  fake_mem_available(meminfo, pages - 1024);
  MXL_CHECK_FAILS(mxl_engine_create_with(f.model, f.be, &w, &copy), MXL_ERR_MEMORY,
                  "--no-mmap: copying the weights needs");
  MXL_CHECK(copy == NULL && strstr(mxl_last_error(), f.dir) != NULL);
  fake_mem_available(meminfo, pages + bytes - 1024); /* the copy, not the cache beside it */
  MXL_CHECK_OK(mxl_engine_create_with(f.model, f.be, &w, &copy));
  mxl_mem_available_path_for_tests(NULL);
  if (copy) MXL_CHECK_OK(run(copy, N, b));
  MXL_CHECK(copy && memcmp(a, b, N * V * 4) == 0);
  mxl_engine_destroy(copy);
  unlink(meminfo);
  free(a), free(b);
  fixture_close(&f);
}

/* A backend with a hole in its op table is refused when the engine is made,
 * naming the op, instead of crashing at the first call. Each
 * op is removed in turn, so a new op left out of model/engine.c's list
 * shows up here too (beside the static assertion there). */
static void test_missing_op_refused(void) {
  model_fixture f;
  MXL_CHECK_OK(fixture_open(&f, "test", "hf", 3, "", 1));
  if (!f.engine) return fixture_close(&f);
  const mxl_ops *saved = f.be->ops;
  static mxl_ops holed;
  typedef void (*any_op)(void);
  const size_t first = offsetof(mxl_ops, destroy);
  const size_t n_ops = (sizeof(mxl_ops) - first) / sizeof(any_op);
  int refused = 0;
  for (size_t i = 0; i < n_ops; i++) {
    holed = *saved;
    memset((char *)&holed + first + i * sizeof(any_op), 0, sizeof(any_op));
    f.be->ops = &holed;
    mxl_engine *e = (mxl_engine *)1;
    mxl_status st = mxl_engine_create(f.model, f.be, &e);
    refused += st == MXL_ERR_UNSUPPORTED && e == NULL &&
               strstr(mxl_last_error(), "' lacks the op '") != NULL;
    if (st == MXL_OK) mxl_engine_destroy(e);
  }
  MXL_CHECK_MSG(refused == (int)n_ops, "%d of %zu missing ops refused", refused, n_ops);
  holed = *saved;
  holed.attention_bwd = NULL;
  f.be->ops = &holed;
  mxl_engine *e = NULL;
  MXL_CHECK_FAILS(mxl_engine_create(f.model, f.be, &e), MXL_ERR_UNSUPPORTED,
                  "lacks the op 'attention_bwd'");
  f.be->ops = saved;
  fixture_close(&f);
}

/* mxl_generate's prompt passes: a negative count is refused, naming the
 * field; 3-token passes give the same logits of every prompt position as
 * the default pass (the sliding-window ring sized for the pass). */
static void test_generate_prompt_passes(void) {
  model_fixture f;
  MXL_CHECK_OK(fixture_open(&f, "test", "hf", 3, "", 1));
  if (!f.engine) return fixture_close(&f);
  mxl_generator_options opt = {.backend = "ref", .max_context = 64};
  mxl_generator *g = NULL;
  MXL_CHECK_OK(mxl_generator_open(f.dir, &opt, &g));
  if (!g) return fixture_close(&f);
  mxl_gen_request req;
  mxl_gen_request_defaults(&req);
  req.prompt = "Hello world, hello again and again";
  req.temperature = 0;
  req.max_tokens = 1;
  mxl_gen_result res;
  req.prefill_chunk = -1;
  MXL_CHECK_FAILS(mxl_generate(g, &req, NULL, NULL, &res), MXL_ERR_ARGUMENT, "prefill_chunk -1");
  req.prefill_chunk = 0;
  req.chat = 1, req.tools = "{\"name\": \"f\"}"; /* tools must be a list */
  MXL_CHECK_FAILS(mxl_generate(g, &req, NULL, NULL, &res), MXL_ERR_FORMAT, "tools: expected a JSON list");
  req.chat = 0, req.tools = NULL;
  char npy[2][128];
  for (int i = 0; i < 2; i++) {
    snprintf(npy[i], sizeof npy[i], "%s/logits%d.npy", f.dir, i);
    req.prefill_chunk = i ? 3 : 0;
    req.dump_logits = npy[i];
    MXL_CHECK_OK(mxl_generate(g, &req, NULL, NULL, &res));
  }
  MXL_CHECK(res.prompt_tokens > 3);
  FILE *a = fopen(npy[0], "rb"), *b = fopen(npy[1], "rb");
  MXL_CHECK(a && b);
  size_t same = 0, total = 0;
  for (int ca, cb; a && b && (ca = fgetc(a)) != EOF && (cb = fgetc(b)) != EOF; total++)
    same += ca == cb;
  MXL_CHECK_MSG(total > 0 && same == total, "%zu of %zu logit bytes equal", same, total);
  if (a) fclose(a);
  if (b) fclose(b);
  mxl_generator_close(g);
  fixture_close(&f);
}

int main(void) {
  MXL_RUN(test_decode_equals_prefill);
  MXL_RUN(test_batched_sequences);
  MXL_RUN(test_layouts_agree);
  MXL_RUN(test_adapter_on_metal);
  MXL_RUN(test_inference_and_training_agree);
  MXL_RUN(test_cpu_matches_ref);
  MXL_RUN(test_resume_from_cache);
  MXL_RUN(test_device_copy_of_weights);
  MXL_RUN(test_weights_in_huge_pages);
  MXL_RUN(test_no_mmap_memory);
  MXL_RUN(test_missing_op_refused);
  MXL_RUN(test_generate_prompt_passes);
  return mxl_test_summary("forward");
}
