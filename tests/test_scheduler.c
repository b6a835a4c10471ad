/* The continuous-batching scheduler (include/mxlora/scheduler.h) on a tiny
 * model, ref backend (bit-exact, so greedy tokens can be compared):
 *   - greedy output of each request is the same alone, batched with others
 *     (different adapters and scales, staggered arrivals: requests join and
 *     leave between decode steps), and through `generate`'s own loop;
 *   - chunked prefill: a long prompt arriving later does not stall the
 *     running decode (one token per step throughout);
 *   - cancellation (by id, queued or running, and by a callback's return)
 *     ends the request with one final event and frees its KV reservation;
 *   - the KV budget: requests wait in the queue while it is full and run
 *     when memory is given back; one that can never fit is refused; a full
 *     queue refuses with MXL_ERR_BUSY; bad requests are refused;
 *   - the engine thread: mxl_scheduler_run on its own thread, submissions
 *     from another, a draining shutdown. */
#include <pthread.h>
#include <unistd.h>

#include "adapter_fixture.h"
#include "adapters/registry_internal.h"
#include "infer/generate.h"
#include "infer/sched_internal.h"
#include "model/forward.h"
#include "model_fixture.h"
#include "test.h"

static model_fixture f;
static char adapter_path[2][128];

enum { MAX_OUT = 64 };

/* What one request received. */
typedef struct got {
  int32_t tokens[MAX_OUT];
  int n, finals;
  int cached; /* the final event's cached_tokens */
  uint64_t step_of[MAX_OUT]; /* the scheduler step count when each token came */
  mxl_finish_reason finish;
  int cancel_after;          /* return 1 after this many tokens (0: never) */
  mxl_scheduler *s;
} got;

static int on_event(void *user, const mxl_request_event *ev) {
  got *g = user;
  if (ev->finish != MXL_FINISH_NONE) {
    g->finals++;
    g->finish = ev->finish;
    g->cached = ev->cached_tokens;
    return 0;
  }
  if (g->n < MAX_OUT) {
    mxl_scheduler_stats st;
    mxl_scheduler_get_stats(g->s, &st);
    g->step_of[g->n] = st.steps;
    g->tokens[g->n++] = ev->token;
  }
  return g->cancel_after && g->n >= g->cancel_after;
}

static int shared_prefix; /* the next make_kept's option (0: the default) */

static mxl_scheduler *make_kept(int max_batch, int chunk, uint64_t kv_memory, int max_queue,
                                int prefix_cache) {
  mxl_scheduler_options o = {0};
  o.prefix_cache = prefix_cache;
  o.shared_prefix = shared_prefix;
  o.backend = "ref";
  o.max_context = 96;
  o.max_batch = max_batch;
  o.prefill_chunk = chunk;
  o.kv_memory = kv_memory;
  o.max_queue = max_queue;
  mxl_scheduler *s = NULL;
  MXL_CHECK_OK(mxl_scheduler_create(f.model, &o, &s));
  return s;
}

static mxl_scheduler *make(int max_batch, int chunk, uint64_t kv_memory, int max_queue) {
  return make_kept(max_batch, chunk, kv_memory, max_queue, 0);
}

typedef struct spec {
  int n_prompt, max_tokens, arrive; /* arrive: steps before submission */
  int adapters[2];                  /* indexes into the registry refs, -1 none */
  float scales[2];
} spec;

static void prompt_of(int i, int n, int32_t *out) {
  uint64_t s = 777 + 31 * (uint64_t)i;
  for (int j = 0; j < n; j++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    out[j] = (int32_t)((s >> 33) % 1000);
  }
}

static mxl_status submit(mxl_scheduler *s, mxl_adapter_ref **refs, const spec *sp, int i, got *g,
                         uint64_t *id) {
  int32_t prompt[64];
  prompt_of(i, sp->n_prompt, prompt);
  mxl_request r;
  mxl_request_defaults(&r);
  r.prompt = prompt;
  r.n_prompt = sp->n_prompt;
  r.temperature = 0;
  r.max_tokens = sp->max_tokens;
  mxl_request_adapter ad[2];
  for (int k = 0; k < 2; k++)
    if (sp->adapters[k] >= 0) ad[r.n_adapters++] = (mxl_request_adapter){refs[sp->adapters[k]], sp->scales[k]};
  r.adapters = ad;
  r.on_event = on_event;
  r.user = g;
  g->s = s;
  return mxl_scheduler_submit(s, &r, id);
}

/* Steps until nothing is left (bounded). */
static void drain(mxl_scheduler *s) {
  for (int i = 0; i < 10000; i++) {
    int progressed = 0;
    MXL_CHECK_OK(mxl_scheduler_step(s, &progressed));
    if (!progressed) return;
  }
  MXL_CHECK_MSG(0, "the scheduler did not finish");
}

/* Runs the specs on one scheduler (arrivals by step) and records them;
 * spec i uses prompt first + i. */
static void run_specs(mxl_scheduler *s, mxl_adapter_ref **refs, const spec *sp, int n, int first,
                      got *out) {
  uint64_t id;
  memset(out, 0, sizeof *out * (size_t)n);
  for (int step = 0; step < 200; step++) {
    for (int i = 0; i < n; i++)
      if (sp[i].arrive == step) MXL_CHECK_OK(submit(s, refs, &sp[i], first + i, &out[i], &id));
    int progressed = 0;
    MXL_CHECK_OK(mxl_scheduler_step(s, &progressed));
  }
  drain(s);
}

static mxl_registry *registry_for(mxl_scheduler *s, mxl_adapter_ref **refs) {
  mxl_registry *reg = NULL;
  MXL_CHECK_OK(mxl_registry_create(f.model, mxl_scheduler_backend(s), NULL, &reg));
  MXL_CHECK_OK(mxl_registry_load(reg, "a", adapter_path[0]));
  MXL_CHECK_OK(mxl_registry_load(reg, "b", adapter_path[1]));
  MXL_CHECK_OK(mxl_registry_acquire(reg, "a", &refs[0]));
  MXL_CHECK_OK(mxl_registry_acquire(reg, "b", &refs[1]));
  return reg;
}

static const spec mixed[] = {
    {7, 12, 0, {-1, -1}, {0, 0}},     {3, 9, 0, {0, -1}, {0.5f, 0}},
    {11, 10, 2, {0, 1}, {1.0f, 2.0f}}, {5, 14, 3, {0, 0}, {0.3f, 1.5f}},
    {20, 6, 5, {1, -1}, {-1.0f, 0}},  {2, 16, 9, {-1, -1}, {0, 0}},
};
enum { N_MIXED = sizeof mixed / sizeof mixed[0] };

static void test_greedy_independent_of_batch(void) {
  got batched[N_MIXED], alone[N_MIXED];
  mxl_scheduler *s = make(4, 4, 0, 0); /* 4 slots: later arrivals wait for one */
  mxl_adapter_ref *refs[2] = {0};
  mxl_registry *reg = s ? registry_for(s, refs) : NULL;
  if (!reg) return;
  run_specs(s, refs, mixed, N_MIXED, 0, batched);
  for (int i = 0; i < N_MIXED; i++) {
    spec one = mixed[i];
    one.arrive = 0;
    run_specs(s, refs, &one, 1, i, &alone[i]);
  }
  int differ_from_base = 0;
  for (int i = 0; i < N_MIXED; i++) {
    MXL_CHECK_MSG(batched[i].finals == 1 && alone[i].finals == 1, "request %d: %d/%d finals", i,
                  batched[i].finals, alone[i].finals);
    MXL_CHECK_MSG(batched[i].n == mixed[i].max_tokens && batched[i].finish == MXL_FINISH_LENGTH,
                  "request %d: %d tokens", i, batched[i].n);
    MXL_CHECK_MSG(batched[i].n == alone[i].n &&
                      !memcmp(batched[i].tokens, alone[i].tokens, sizeof(int32_t) * batched[i].n),
                  "request %d: batched output differs from alone", i);
  }
  /* the adapters act: request 3's prompt with no adapter gives other tokens */
  spec bare = mixed[3];
  bare.arrive = 0;
  bare.adapters[0] = bare.adapters[1] = -1;
  got g;
  run_specs(s, refs, &bare, 1, 3, &g);
  differ_from_base = memcmp(g.tokens, alone[3].tokens, sizeof(int32_t) * g.n) != 0;
  MXL_CHECK_MSG(differ_from_base, "the adapters do not change the greedy output");
  mxl_scheduler_stats st;
  mxl_scheduler_get_stats(s, &st);
  MXL_CHECK(st.running == 0 && st.queued == 0 && st.kv_bytes_used == 0);
  MXL_CHECK(st.completed == 2 * N_MIXED + 1 && st.generated_tokens > 0);
  mxl_adapter_ref_release(refs[0]);
  mxl_adapter_ref_release(refs[1]);
  mxl_scheduler_destroy(s);
  mxl_registry_destroy(reg);
}

/* The same tokens as generate's own loop (infer/generate.c, which the
 * `generate` command runs), for the base model and an adapter at scale 1. */
typedef struct collected {
  int32_t tokens[MAX_OUT];
  int n;
} collected;

static int collect(void *user, int32_t token) {
  collected *c = user;
  if (c->n < MAX_OUT) c->tokens[c->n++] = token;
  return 0;
}

static void test_same_as_generate(void) {
  mxl_scheduler *s = make(8, 256, 0, 0);
  mxl_adapter_ref *refs[2] = {0};
  mxl_registry *reg = s ? registry_for(s, refs) : NULL;
  if (!reg) return;
  for (int with = 0; with < 2; with++) {
    spec sp = {9, 15, 0, {with ? 0 : -1, -1}, {1.0f, 0}};
    got g;
    run_specs(s, refs, &sp, 1, 0, &g);
    int32_t prompt[16];
    prompt_of(0, 9, prompt);
    const mxl_lora_view *views[1] = {mxl_adapter_ref_view(refs[0])};
    mxl_lora_stack stack = {views, with, 0, 0, NULL, 0};
    mxl_gen_params p = {0};
    mxl_sampling_defaults(&p.sampling);
    p.sampling.temperature = 0;
    p.max_tokens = 15;
    collected c = {{0}, 0};
    mxl_gen_stats gs;
    MXL_CHECK_OK(mxl_generate_ids(f.engine, &stack, prompt, 9, &p, collect, &c, &gs));
    MXL_CHECK_MSG(g.n == 15 && c.n == 15 && !memcmp(g.tokens, c.tokens, sizeof(int32_t) * 15),
                  "%s: scheduler and generate differ", with ? "adapter a" : "base");
  }
  mxl_adapter_ref_release(refs[0]);
  mxl_adapter_ref_release(refs[1]);
  mxl_scheduler_destroy(s);
  mxl_registry_destroy(reg);
}

/* A 60-token prompt arriving while another request decodes is prefilled
 * in chunks of 8 over several steps; the decode gets a token every step. */
static void test_chunked_prefill(void) {
  mxl_scheduler *s = make(4, 8, 0, 0);
  if (!s) return;
  spec sp[2] = {{4, 20, 0, {-1, -1}, {0, 0}}, {60, 3, 3, {-1, -1}, {0, 0}}};
  got g[2];
  run_specs(s, NULL, sp, 2, 40, g);
  MXL_CHECK(g[0].n == 20 && g[1].n == 3);
  int gaps = 0;
  for (int i = 1; i < g[0].n; i++) gaps += g[0].step_of[i] != g[0].step_of[i - 1] + 1;
  MXL_CHECK_MSG(gaps == 0, "the decode skipped %d steps", gaps);
  /* the long prompt's first token came after ceil(60/8) = 8 of its steps */
  MXL_CHECK_MSG(g[1].step_of[0] >= g[0].step_of[0] + 8, "first token at step %llu",
                (unsigned long long)g[1].step_of[0]);
  mxl_scheduler_destroy(s);
}

static void test_cancel(void) {
  mxl_scheduler *s = make(1, 8, 0, 0);
  if (!s) return;
  got g[3];
  memset(g, 0, sizeof g);
  uint64_t id[3];
  spec sp = {6, 30, 0, {-1, -1}, {0, 0}};
  MXL_CHECK_OK(submit(s, NULL, &sp, 0, &g[0], &id[0]));
  MXL_CHECK_OK(submit(s, NULL, &sp, 1, &g[1], &id[1])); /* queued: one slot */
  g[2].cancel_after = 4;
  MXL_CHECK_OK(submit(s, NULL, &sp, 2, &g[2], &id[2]));
  for (int i = 0; i < 5; i++) MXL_CHECK_OK(mxl_scheduler_step(s, NULL));
  mxl_scheduler_stats st;
  mxl_scheduler_get_stats(s, &st);
  MXL_CHECK(st.running == 1 && st.queued == 2 && st.kv_bytes_used > 0);
  MXL_CHECK_OK(mxl_scheduler_cancel(s, id[0])); /* running */
  MXL_CHECK_OK(mxl_scheduler_cancel(s, id[1])); /* queued */
  MXL_CHECK_OK(mxl_scheduler_step(s, NULL));
  MXL_CHECK(g[0].finals == 1 && g[0].finish == MXL_FINISH_CANCELLED && g[0].n > 0);
  MXL_CHECK(g[1].finals == 1 && g[1].finish == MXL_FINISH_CANCELLED && g[1].n == 0);
  MXL_CHECK_FAILS(mxl_scheduler_cancel(s, id[0]), MXL_ERR_NOT_FOUND, "request");
  drain(s); /* the third runs and cancels itself from its callback */
  MXL_CHECK(g[2].finals == 1 && g[2].finish == MXL_FINISH_CANCELLED && g[2].n == 4);
  mxl_scheduler_get_stats(s, &st);
  MXL_CHECK(st.running == 0 && st.queued == 0 && st.kv_bytes_used == 0 && st.cancelled == 3);
  /* destroying with work left ends it with final events */
  MXL_CHECK_OK(submit(s, NULL, &sp, 3, &g[0], &id[0]));
  memset(&g[0], 0, sizeof g[0]);
  g[0].s = s;
  MXL_CHECK_OK(mxl_scheduler_step(s, NULL));
  mxl_scheduler_destroy(s);
  MXL_CHECK(g[0].finals == 1 && g[0].finish == MXL_FINISH_CANCELLED);
}

static void test_kv_budget(void) {
  /* a request's reservation: its cache, and for the prefix cache the
   * window before its last prompt token and its first pass (5 rows) */
  uint64_t need = mxl_kv_cache_bytes(&f.model->config, 6 + 10, 8) +
                  mxl_kv_tail_bytes(&f.model->config, 6 + 10) +
                  mxl_kv_tail_rows_bytes(&f.model->config, 5);
  const uint64_t budget = 2 * need + need / 8; /* two requests of 16 positions */
  const uint64_t huge_need = mxl_kv_cache_bytes(&f.model->config, 96, 8) +
                             mxl_kv_tail_bytes(&f.model->config, 96) +
                             mxl_kv_tail_rows_bytes(&f.model->config, 8);
  MXL_CHECK(huge_need > budget);
  mxl_scheduler *s = make(8, 8, budget, 3);
  if (!s) return;
  got g[4];
  memset(g, 0, sizeof g);
  uint64_t id;
  spec sp = {6, 10, 0, {-1, -1}, {0, 0}};
  for (int i = 0; i < 3; i++) MXL_CHECK_OK(submit(s, NULL, &sp, i, &g[i], &id));
  MXL_CHECK_FAILS(submit(s, NULL, &sp, 3, &g[3], &id), MXL_ERR_BUSY, "wait");
  MXL_CHECK_OK(mxl_scheduler_step(s, NULL));
  mxl_scheduler_stats st;
  mxl_scheduler_get_stats(s, &st);
  MXL_CHECK_MSG(st.running == 2 && st.queued == 1, "running %d, queued %d", st.running, st.queued);
  MXL_CHECK(st.kv_bytes_used == 2 * need && st.kv_bytes_used <= st.kv_bytes_total);
  spec huge = {40, 56, 0, {-1, -1}, {0, 0}};
  MXL_CHECK_FAILS(submit(s, NULL, &huge, 0, &g[3], &id), MXL_ERR_ARGUMENT, "KV budget");
  drain(s);
  for (int i = 0; i < 3; i++) MXL_CHECK(g[i].finals == 1 && g[i].n == 10);
  MXL_CHECK(g[2].step_of[0] > g[0].step_of[9]); /* the third waited for memory */
  mxl_scheduler_get_stats(s, &st);
  MXL_CHECK(st.kv_bytes_used == 0 && st.refused == 2 && st.completed == 3);

  /* bad requests */
  int32_t bad[2] = {5, 999999};
  mxl_request r;
  mxl_request_defaults(&r);
  r.on_event = on_event;
  r.user = &g[3];
  r.max_tokens = 5;
  MXL_CHECK_FAILS(mxl_scheduler_submit(s, &r, &id), MXL_ERR_ARGUMENT, "empty");
  r.prompt = bad;
  r.n_prompt = 2;
  MXL_CHECK_FAILS(mxl_scheduler_submit(s, &r, &id), MXL_ERR_ARGUMENT, "999999");
  r.n_prompt = 1;
  r.max_tokens = 200;
  MXL_CHECK_FAILS(mxl_scheduler_submit(s, &r, &id), MXL_ERR_ARGUMENT, "context of 96");
  r.max_tokens = 5;
  r.top_p = 0;
  MXL_CHECK_FAILS(mxl_scheduler_submit(s, &r, &id), MXL_ERR_ARGUMENT, "top-p");
  r.top_p = 1;
  mxl_scheduler_shutdown(s, 1);
  MXL_CHECK_FAILS(mxl_scheduler_submit(s, &r, &id), MXL_ERR_STATE, "shutting down");
  mxl_scheduler_destroy(s);
}

/* The default KV budget holds max_batch requests of the whole context at
 * once, their prefix cache windows included; a prefix_cache below -1 and
 * a negative shared_prefix are refused. */
static void test_default_budget(void) {
  mxl_scheduler_options bad = {0};
  bad.backend = "ref";
  bad.prefix_cache = -2;
  mxl_scheduler *none = NULL;
  MXL_CHECK_FAILS(mxl_scheduler_create(f.model, &bad, &none), MXL_ERR_ARGUMENT, "prefix_cache -2");
  bad.prefix_cache = 0;
  bad.shared_prefix = -1;
  MXL_CHECK_FAILS(mxl_scheduler_create(f.model, &bad, &none), MXL_ERR_ARGUMENT, "shared_prefix -1");
  MXL_CHECK(none == NULL);
  mxl_scheduler *s = make(4, 4, 0, 0);
  if (!s) return;
  got g[4];
  memset(g, 0, sizeof g);
  uint64_t id;
  spec full = {10, 86, 0, {-1, -1}, {0, 0}}; /* 96 positions: max_context */
  for (int i = 0; i < 4; i++) MXL_CHECK_OK(submit(s, NULL, &full, i, &g[i], &id));
  MXL_CHECK_OK(mxl_scheduler_step(s, NULL));
  mxl_scheduler_stats st;
  mxl_scheduler_get_stats(s, &st);
  MXL_CHECK_MSG(st.running == 4 && st.queued == 0, "running %d, queued %d", st.running,
                st.queued);
  mxl_scheduler_destroy(s);
}

/* The prefix cache (ref backend, window 8, chunks of 4: rings of 11
 * slots). A conversation's turns, each prompt repeating the last one and
 * its reply, continue from the kept cache: from the ring when the reply
 * was short, from the prompt's kept window when it was long. Every reply
 * equals the same request's on a scheduler without the cache; other
 * adapters or scales, or another prompt, reuse nothing. */
typedef struct turn {
  int32_t prompt[96];
  int n;
} turn;

static got ask(mxl_scheduler *s, const turn *t, int max_tokens, mxl_adapter_ref *ad, float scale) {
  got g;
  memset(&g, 0, sizeof g);
  g.s = s;
  mxl_request r;
  mxl_request_defaults(&r);
  r.prompt = t->prompt;
  r.n_prompt = t->n;
  r.temperature = 0;
  r.max_tokens = max_tokens;
  mxl_request_adapter one = {ad, scale};
  r.adapters = &one;
  r.n_adapters = ad ? 1 : 0;
  r.on_event = on_event;
  r.user = &g;
  uint64_t id;
  MXL_CHECK_OK(mxl_scheduler_submit(s, &r, &id));
  drain(s);
  MXL_CHECK(g.finals == 1 && g.n == max_tokens);
  return g;
}

/* Appends the reply and `extra` new tokens (a next user message). */
static void next_turn(turn *t, const got *reply, int extra, int seed) {
  for (int i = 0; i < reply->n; i++) t->prompt[t->n++] = reply->tokens[i];
  prompt_of(seed, extra, t->prompt + t->n);
  t->n += extra;
}

static void same_reply(const got *a, const got *b, const char *what) {
  MXL_CHECK_MSG(a->n == b->n && !memcmp(a->tokens, b->tokens, sizeof(int32_t) * a->n),
                "%s: the reply differs from one without the prefix cache", what);
}

static void test_prefix_cache(void) {
  mxl_scheduler *s = make(4, 4, 0, 0), *plain = make_kept(4, 4, 0, 0, -1);
  mxl_adapter_ref *refs[2] = {0};
  mxl_registry *reg = s && plain ? registry_for(s, refs) : NULL;
  if (!reg) return;
  turn t = {.n = 12};
  prompt_of(40, t.n, t.prompt);
  got a = ask(s, &t, 5, NULL, 0), b = ask(plain, &t, 5, NULL, 0);
  same_reply(&a, &b, "turn 1");
  MXL_CHECK(a.cached == 0);
  /* turn 2: the cache holds the prompt and 4 reply tokens (the 5th was
   * never run); the ring still holds that point's window */
  int n1 = t.n;
  next_turn(&t, &a, 3, 41);
  a = ask(s, &t, 20, NULL, 0), b = ask(plain, &t, 20, NULL, 0);
  same_reply(&a, &b, "turn 2");
  MXL_CHECK_MSG(a.cached == n1 + 4 && b.cached == 0, "turn 2 reused %d tokens", a.cached);
  /* turn 3 after a 20-token reply, 19 of them run: 19 positions past turn
   * 2's prompt, so the window kept before its last token serves (that
   * token runs again) */
  int n2 = t.n;
  next_turn(&t, &(got){.n = 0}, 2, 42); /* a prompt that differs at the reply */
  t.prompt[n2] = (a.tokens[0] + 1) % 1000;
  a = ask(s, &t, 6, NULL, 0), b = ask(plain, &t, 6, NULL, 0);
  same_reply(&a, &b, "turn 3");
  MXL_CHECK_MSG(a.cached == n2 - 1, "turn 3 reused %d tokens (its prompt shares %d)", a.cached,
                n2);
  /* the same prompt again (a regenerated reply): all but its last token */
  a = ask(s, &t, 6, NULL, 0);
  same_reply(&a, &b, "turn 3 again");
  MXL_CHECK(a.cached == t.n - 1);
  /* an adapter, then other scales or versions of it: only the same reuses */
  got with = ask(s, &t, 6, refs[0], 0.5f), with_plain = ask(plain, &t, 6, refs[0], 0.5f);
  same_reply(&with, &with_plain, "adapter");
  MXL_CHECK(with.cached == 0);
  with = ask(s, &t, 6, refs[0], 0.5f);
  MXL_CHECK(with.cached == t.n - 1);
  same_reply(&with, &with_plain, "adapter again");
  MXL_CHECK(ask(s, &t, 6, refs[0], 0.25f).cached == 0);
  MXL_CHECK(ask(s, &t, 6, refs[1], 0.5f).cached == 0);
  /* another prompt shares nothing */
  turn other = {.n = 9};
  prompt_of(77, other.n, other.prompt);
  MXL_CHECK(ask(s, &other, 3, NULL, 0).cached == 0);
  mxl_scheduler_stats st;
  mxl_scheduler_get_stats(s, &st);
  MXL_CHECK_MSG(st.prefix_hits == 4 && st.cached_prefixes == 4 && st.prefix_cache == 4,
                "%llu hits, %d kept (of %d)", (unsigned long long)st.prefix_hits,
                st.cached_prefixes, st.prefix_cache);
  MXL_CHECK(st.kv_bytes_used == 0 && st.kv_bytes_cached > 0 &&
            st.kv_bytes_cached <= st.kv_bytes_total);
  mxl_scheduler_get_stats(plain, &st);
  MXL_CHECK(st.prefix_hits == 0 && st.cached_prefixes == 0 && st.kv_bytes_cached == 0 &&
            st.prefix_cache == 0);
  mxl_adapter_ref_release(refs[0]);
  mxl_adapter_ref_release(refs[1]);
  mxl_scheduler_destroy(s);
  mxl_scheduler_destroy(plain);
  mxl_registry_destroy(reg);
}

/* Conversations that share only their beginning (a system prompt): the
 * first pass's rows kept from position 0 let each new one skip it, though
 * the rings of every kept cache moved on long ago (chunks of 16: rings of
 * 23 slots; 24-token prompts, 12-token replies). */
static void test_prefix_cache_shared_start(void) {
  mxl_scheduler *s = make(4, 16, 0, 0), *plain = make_kept(4, 16, 0, 0, -1);
  if (!s || !plain) return;
  turn t[3];
  for (int i = 0; i < 3; i++) {
    t[i].n = 24;
    prompt_of(60, 10, t[i].prompt);          /* the shared start */
    prompt_of(61 + i, 14, t[i].prompt + 10); /* each conversation's own */
  }
  for (int i = 0; i < 3; i++) {
    got a = ask(s, &t[i], 12, NULL, 0), b = ask(plain, &t[i], 12, NULL, 0);
    same_reply(&a, &b, "conversation");
    MXL_CHECK_MSG(a.cached == (i ? 10 : 0), "conversation %d reused %d tokens", i, a.cached);
  }
  mxl_scheduler_destroy(s);
  mxl_scheduler_destroy(plain);
}

/* A shared start longer than one pass (30 tokens, passes of 4, window 8):
 * with shared_prefix 4 the head holds one pass (4 positions reused); with
 * 64, and by default (automatic, the budget having room), it grows pass by
 * pass over the whole prompt, and the next conversations reuse all 30.
 * Replies equal a scheduler's without the cache; a prompt that shares less
 * than one kept head reuses what it shares. shared_prefix stops at the
 * context and reads 0 with the cache off. */
static void test_shared_prefix_beyond_a_pass(void) {
  const int shares[3] = {4, 64, 0};
  for (int c = 0; c < 3; c++) {
    const int share = shares[c];
    shared_prefix = share;
    mxl_scheduler *s = make(4, 4, 0, 0), *plain = make_kept(4, 4, 0, 0, -1);
    shared_prefix = 0;
    if (!s || !plain) return;
    mxl_scheduler_stats st;
    mxl_scheduler_get_stats(s, &st);
    MXL_CHECK_MSG(st.shared_prefix == (share ? share : 4) && st.shared_prefix_auto == !share,
                  "shared_prefix %d: reads %d, automatic %d", share, st.shared_prefix,
                  st.shared_prefix_auto);
    turn t[4];
    for (int i = 0; i < 4; i++) {
      t[i].n = 40;
      prompt_of(70, 30, t[i].prompt);          /* the shared start */
      prompt_of(71 + i, 10, t[i].prompt + 30); /* each conversation's own */
    }
    t[3].prompt[17] ^= 1; /* the last shares 17 tokens only */
    for (int i = 0; i < 4; i++) {
      got a = ask(s, &t[i], 6, NULL, 0), b = ask(plain, &t[i], 6, NULL, 0);
      same_reply(&a, &b, "conversation");
      int want = i == 0 ? 0 : share == 4 ? 4 : i < 3 ? 30 : 17;
      MXL_CHECK_MSG(a.cached == want, "shared_prefix %d: conversation %d reused %d tokens, not %d",
                    share, i, a.cached, want);
    }
    mxl_scheduler_get_stats(s, &st);
    /* automatic: the first; the others claim room beside its kept cache,
     * which they resume from, and a slot's worth for each free one */
    MXL_CHECK_MSG(st.heads_grown == (share ? 0u : 1u), "shared_prefix %d: %llu heads grown", share,
                  (unsigned long long)st.heads_grown);
    mxl_scheduler_destroy(s);
    mxl_scheduler_destroy(plain);
  }
  /* at most the context (96 positions); none reported with the cache off */
  shared_prefix = 500;
  mxl_scheduler *big = make(4, 4, 0, 0), *off = make_kept(4, 4, 0, 0, -1);
  shared_prefix = 0;
  if (!big || !off) return;
  mxl_scheduler_stats st, st_off;
  mxl_scheduler_get_stats(big, &st);
  mxl_scheduler_get_stats(off, &st_off);
  MXL_CHECK_MSG(st.shared_prefix == 96 && st_off.shared_prefix == 0 && !st_off.shared_prefix_auto,
                "shared_prefix %d, off %d (automatic %d)", st.shared_prefix, st_off.shared_prefix,
                st_off.shared_prefix_auto);
  mxl_scheduler_destroy(big);
  mxl_scheduler_destroy(off);
}

/* The kept bytes of one conversation on a fresh scheduler: its
 * reservation, with a head of one pass (shared_prefix 4) or of the whole
 * prompt (automatic, the default budget having room). */
static uint64_t reservation_of(int share, const turn *t, int max_tokens) {
  shared_prefix = share;
  mxl_scheduler *s = make(4, 4, 0, 0);
  shared_prefix = 0;
  if (!s) return 0;
  ask(s, t, max_tokens, NULL, 0);
  mxl_scheduler_stats st;
  mxl_scheduler_get_stats(s, &st);
  mxl_scheduler_destroy(s);
  return st.kv_bytes_cached;
}

/* The automatic shared prefix grows a head only into room no request
 * claims. Two batch slots and a budget of two plain reservations and one
 * head's growth (extra), less a byte or not: the first conversation's head
 * grows only when a request like it still fits in the free slot, and the
 * next one, sharing its 30-token start, reuses 30 tokens or one pass (4).
 * The second never grows: the first's kept cache, which it resumes from,
 * stays. Then two requests submitted together (the second reserving more
 * for 30 tokens out): the first grows only when the queued one's own
 * reservation still fits. Replies equal a scheduler's without the cache. */
static void test_shared_prefix_auto_budget(void) {
  turn t[2];
  for (int i = 0; i < 2; i++) {
    t[i].n = 40;
    prompt_of(80, 30, t[i].prompt); /* the shared start */
    prompt_of(81 + i, 10, t[i].prompt + 30);
  }
  uint64_t plain_bytes = reservation_of(4, &t[0], 6), head_bytes = reservation_of(0, &t[0], 6);
  uint64_t long_bytes = reservation_of(4, &t[1], 30);
  MXL_CHECK_MSG(plain_bytes > 0 && head_bytes > plain_bytes && long_bytes > plain_bytes,
                "reservations %llu, %llu, %llu", (unsigned long long)plain_bytes,
                (unsigned long long)head_bytes, (unsigned long long)long_bytes);
  const uint64_t extra = head_bytes - plain_bytes;
  for (int room = 0; room <= 1; room++) {
    mxl_scheduler *s = make_kept(2, 4, 2 * plain_bytes + extra - 1 + room, 0, 0);
    mxl_scheduler *plain = make_kept(2, 4, 0, 0, -1);
    if (!s || !plain) return;
    for (int i = 0; i < 2; i++) {
      got a = ask(s, &t[i], 6, NULL, 0), b = ask(plain, &t[i], 6, NULL, 0);
      same_reply(&a, &b, "conversation");
      int want = i == 0 ? 0 : room ? 30 : 4;
      MXL_CHECK_MSG(a.cached == want, "room %d: conversation %d reused %d tokens, not %d", room, i,
                    a.cached, want);
    }
    mxl_scheduler_stats st;
    mxl_scheduler_get_stats(s, &st);
    MXL_CHECK_MSG(st.heads_grown == (uint64_t)room, "room %d: %llu heads grown", room,
                  (unsigned long long)st.heads_grown);
    mxl_scheduler_destroy(s);
    mxl_scheduler_destroy(plain);
  }
  for (int room = 0; room <= 1; room++) {
    mxl_scheduler *s = make_kept(2, 4, plain_bytes + extra + long_bytes - 1 + room, 0, 0);
    if (!s) return;
    got g[2];
    memset(g, 0, sizeof g);
    for (int i = 0; i < 2; i++) {
      g[i].s = s;
      mxl_request r;
      mxl_request_defaults(&r);
      r.prompt = t[i].prompt;
      r.n_prompt = t[i].n;
      r.temperature = 0;
      r.max_tokens = i ? 30 : 6;
      r.on_event = on_event;
      r.user = &g[i];
      uint64_t id;
      MXL_CHECK_OK(mxl_scheduler_submit(s, &r, &id));
    }
    drain(s);
    mxl_scheduler_stats st;
    mxl_scheduler_get_stats(s, &st);
    MXL_CHECK_MSG(g[0].finals == 1 && g[1].finals == 1 && st.heads_grown == (uint64_t)room,
                  "queued behind, room %d: %llu heads grown", room,
                  (unsigned long long)st.heads_grown);
    mxl_scheduler_destroy(s);
  }
}

/* A backend that refuses every allocation while `refuse_alloc` is set: the
 * scheduler's path for KV memory the budget allowed and the backend did
 * not give. The scheduler's backend and engine take the wrapped table. */
static int refuse_alloc;
static mxl_ops refusing_ops;
static void *(*real_alloc)(mxl_backend *be, size_t bytes);

static void *refusing_alloc(mxl_backend *be, size_t bytes) {
  return refuse_alloc ? NULL : real_alloc(be, bytes);
}

static void wrap_allocations(mxl_scheduler *s) {
  mxl_backend *be = mxl_scheduler_backend(s);
  refusing_ops = *be->ops;
  real_alloc = be->ops->alloc;
  refusing_ops.alloc = refusing_alloc;
  be->ops = &refusing_ops;
  s->engine->ops = &refusing_ops;
}

/* A request given a head's growth and then refused memory by the backend
 * returns to the queue without the growth, and its next admission decides
 * it again. Three slots; A (3-token prompt, never grows) runs; B (12
 * tokens) is admitted with growth (the free slot is taken to be one like
 * B), its cache allocation fails, it goes back. Then C, reserving more
 * than B and its growth, queues behind it. The budget (A + B + C) holds
 * all three only if B does not grow again: B must start plain and C run
 * beside it, not wait for B to finish. */
static void test_refused_admission_regrows(void) {
  turn ta = {.n = 3}, tb = {.n = 12}, tc = {.n = 40};
  prompt_of(90, ta.n, ta.prompt);
  prompt_of(91, tb.n, tb.prompt);
  prompt_of(92, tc.n, tc.prompt);
  const uint64_t a_bytes = reservation_of(4, &ta, 30), b_bytes = reservation_of(4, &tb, 6);
  const uint64_t grown = reservation_of(0, &tb, 6), c_bytes = reservation_of(4, &tc, 50);
  const uint64_t extra = grown - b_bytes, budget = a_bytes + b_bytes + c_bytes;
  MXL_CHECK_MSG(grown > b_bytes && c_bytes >= b_bytes + extra,
                "reservations: B %llu (grown %llu), C %llu",
                (unsigned long long)b_bytes, (unsigned long long)grown,
                (unsigned long long)c_bytes);
  mxl_scheduler *s = make_kept(3, 4, budget, 0, 0);
  if (!s) return;
  wrap_allocations(s);
  got g[3];
  memset(g, 0, sizeof g);
  const turn *t[3] = {&ta, &tb, &tc};
  const int max_tokens[3] = {30, 6, 50};
  uint64_t id;
  mxl_scheduler_stats st;
  for (int i = 0; i < 3; i++) {
    g[i].s = s;
    mxl_request r;
    mxl_request_defaults(&r);
    r.prompt = t[i]->prompt;
    r.n_prompt = t[i]->n;
    r.temperature = 0;
    r.max_tokens = max_tokens[i];
    r.on_event = on_event;
    r.user = &g[i];
    MXL_CHECK_OK(mxl_scheduler_submit(s, &r, &id));
    if (i == 0) {
      MXL_CHECK_OK(mxl_scheduler_step(s, NULL));
      mxl_scheduler_get_stats(s, &st);
      MXL_CHECK_MSG(st.running == 1 && st.kv_bytes_used == a_bytes, "A alone: %llu bytes",
                    (unsigned long long)st.kv_bytes_used);
    } else if (i == 1) {
      refuse_alloc = 1;
      MXL_CHECK_OK(mxl_scheduler_step(s, NULL));
      refuse_alloc = 0;
      mxl_scheduler_get_stats(s, &st);
      MXL_CHECK_MSG(st.running == 1 && st.queued == 1 && st.kv_bytes_used == a_bytes &&
                        st.heads_grown == 0,
                    "refused B: running %d, queued %d, %llu bytes, %llu heads grown", st.running,
                    st.queued, (unsigned long long)st.kv_bytes_used,
                    (unsigned long long)st.heads_grown);
      MXL_CHECK_MSG(s->queue.n == 1 && s->queue.items[0]->kv_bytes == b_bytes,
                    "refused B reserves %llu bytes, not %llu",
                    s->queue.n ? (unsigned long long)s->queue.items[0]->kv_bytes : 0ull,
                    (unsigned long long)b_bytes);
    }
  }
  MXL_CHECK_OK(mxl_scheduler_step(s, NULL));
  mxl_scheduler_get_stats(s, &st);
  MXL_CHECK_MSG(st.running == 3 && st.kv_bytes_used == budget && st.heads_grown == 0,
                "after the retry: running %d, %llu of %llu bytes, %llu heads grown", st.running,
                (unsigned long long)st.kv_bytes_used, (unsigned long long)budget,
                (unsigned long long)st.heads_grown);
  drain(s);
  for (int i = 0; i < 3; i++)
    MXL_CHECK_MSG(g[i].finals == 1 && g[i].finish == MXL_FINISH_LENGTH && g[i].n == max_tokens[i],
                  "request %d: %d finals, reason %d, %d tokens", i, g[i].finals, (int)g[i].finish,
                  g[i].n);
  mxl_scheduler *plain = make_kept(3, 4, 0, 0, -1);
  if (plain) {
    got b = ask(plain, &tb, 6, NULL, 0);
    same_reply(&g[1], &b, "B after a refused admission");
    mxl_scheduler_destroy(plain);
  }
  mxl_scheduler_destroy(s);
}

/* MemAvailable reads `bytes` (the path is kept by pointer, hence static). */
static void fake_mem_available(uint64_t bytes) {
  static char path[600];
  snprintf(path, sizeof path, "%s/meminfo", f.dir);
  MXL_CHECK(fixture_fake_mem_available(path, bytes));
}

/* The default KV budget (4 requests of 96 positions here) is lowered to
 * 3/4 of MemAvailable when that is smaller, and says so in the stats;
 * requests that fit it run, a longer one is refused naming the budget. A
 * budget the caller chose is kept; with room, the default too. */
static void test_budget_fits_memory(void) {
  mxl_scheduler *s = make(4, 4, 0, 0);
  if (!s) return;
  mxl_scheduler_stats st;
  mxl_scheduler_get_stats(s, &st);
  mxl_scheduler_destroy(s);
  const uint64_t def = st.kv_bytes_total, left = def / 4 / 1024 * 1024; /* one request's */
  MXL_CHECK_MSG(def > 0 && st.kv_bytes_default == 0, "default %llu, lowered from %llu",
                (unsigned long long)def, (unsigned long long)st.kv_bytes_default);
  fake_mem_available(left);
  s = make(4, 4, 0, 0);
  mxl_scheduler *chosen = make(4, 4, def, 0);
  fake_mem_available(2 * def);
  mxl_scheduler *roomy = make(4, 4, 0, 0);
  mxl_mem_available_path_for_tests(NULL);
  if (!s || !chosen || !roomy) return;
  mxl_scheduler_get_stats(s, &st);
  MXL_CHECK_MSG(st.kv_bytes_total == left / 4 * 3 && st.kv_bytes_default == def,
                "lowered: %llu of %llu (want %llu)", (unsigned long long)st.kv_bytes_total,
                (unsigned long long)st.kv_bytes_default, (unsigned long long)(left / 4 * 3));
  turn t = {.n = 10};
  prompt_of(90, 10, t.prompt);
  got a = ask(s, &t, 6, NULL, 0);
  MXL_CHECK(a.finals == 1 && a.n == 6);
  spec longer = {60, 30, 0, {-1, -1}, {0, 0}};
  got g;
  memset(&g, 0, sizeof g);
  uint64_t id;
  MXL_CHECK_FAILS(submit(s, NULL, &longer, 0, &g, &id), MXL_ERR_ARGUMENT, "KV budget");
  mxl_scheduler_get_stats(chosen, &st);
  MXL_CHECK_MSG(st.kv_bytes_total == def && st.kv_bytes_default == 0, "chosen: %llu",
                (unsigned long long)st.kv_bytes_total);
  mxl_scheduler_get_stats(roomy, &st);
  MXL_CHECK_MSG(st.kv_bytes_total == def && st.kv_bytes_default == 0, "roomy: %llu",
                (unsigned long long)st.kv_bytes_total);
  mxl_scheduler_destroy(s);
  mxl_scheduler_destroy(chosen);
  mxl_scheduler_destroy(roomy);
}

/* The engine thread: run() on its own thread, submissions from this one,
 * then a draining shutdown. */
typedef struct waiter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
  got g;
} waiter;

static int on_event_signal(void *user, const mxl_request_event *ev) {
  waiter *w = user;
  on_event(&w->g, ev);
  if (ev->finish != MXL_FINISH_NONE) {
    pthread_mutex_lock(&w->mu);
    w->done++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
  }
  return 0;
}

static void *engine_thread(void *p) {
  mxl_scheduler_run(p);
  return NULL;
}

static void test_run_thread(void) {
  mxl_scheduler *s = make(4, 8, 0, 0);
  if (!s) return;
  pthread_t th;
  MXL_CHECK(pthread_create(&th, NULL, engine_thread, s) == 0);
  waiter w[3];
  int32_t prompt[5] = {1, 2, 3, 4, 5};
  for (int i = 0; i < 3; i++) {
    memset(&w[i], 0, sizeof w[i]);
    pthread_mutex_init(&w[i].mu, NULL);
    pthread_cond_init(&w[i].cv, NULL);
    w[i].g.s = s;
    mxl_request r;
    mxl_request_defaults(&r);
    r.prompt = prompt;
    r.n_prompt = 5;
    r.temperature = 0;
    r.max_tokens = 6 + i;
    r.on_event = on_event_signal;
    r.user = &w[i];
    uint64_t id;
    MXL_CHECK_OK(mxl_scheduler_submit(s, &r, &id));
    if (i == 0) usleep(20000); /* let the first one start before the others join */
  }
  for (int i = 0; i < 3; i++) {
    pthread_mutex_lock(&w[i].mu);
    while (!w[i].done) pthread_cond_wait(&w[i].cv, &w[i].mu);
    pthread_mutex_unlock(&w[i].mu);
    MXL_CHECK(w[i].g.n == 6 + i && w[i].g.finish == MXL_FINISH_LENGTH);
  }
  /* same prompt, greedy: the shorter outputs are prefixes of the longer */
  MXL_CHECK(!memcmp(w[0].g.tokens, w[2].g.tokens, 6 * sizeof(int32_t)));
  mxl_scheduler_shutdown(s, 1);
  pthread_join(th, NULL);
  mxl_scheduler_destroy(s);
}

int main(void) {
  if (fixture_open(&f, "test", "hf", 31, "", 1) != MXL_OK) {
    fprintf(stderr, "setup: %s\n", mxl_last_error());
    return 1;
  }
  for (int i = 0; i < 2; i++) {
    snprintf(adapter_path[i], sizeof adapter_path[i], "%s/%c.mxla", f.dir, 'a' + i);
    mxl_lora_config lc;
    mxl_lora_config_init(&lc, 4 + 4 * i, 8.0f);
    mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS | MXL_LORA_EXPERT_BITS, NULL, 0,
                        f.model->config.n_layers);
    mxl_lora *lora = NULL;
    MXL_CHECK_OK(mxl_lora_create(&f.model->config, &lc, NULL, &lora));
    if (!lora) return 1;
    fixture_fill(lora, 50 + (uint64_t)i, 0.3f);
    mxl_adapter_save_options opt;
    mxl_adapter_save_options_default(&opt);
    MXL_CHECK_OK(mxl_adapter_save(adapter_path[i], lora, f.model, &opt));
    mxl_lora_destroy(lora);
  }
  MXL_RUN(test_greedy_independent_of_batch);
  MXL_RUN(test_same_as_generate);
  MXL_RUN(test_chunked_prefill);
  MXL_RUN(test_cancel);
  MXL_RUN(test_kv_budget);
  MXL_RUN(test_default_budget);
  MXL_RUN(test_prefix_cache);
  MXL_RUN(test_prefix_cache_shared_start);
  MXL_RUN(test_shared_prefix_beyond_a_pass);
  MXL_RUN(test_shared_prefix_auto_budget);
  MXL_RUN(test_refused_admission_regrows);
  MXL_RUN(test_budget_fits_memory);
  MXL_RUN(test_run_thread);
  fixture_close(&f);
  return mxl_test_summary("scheduler");
}
