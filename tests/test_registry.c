/* The adapter registry (include/mxlora/registry.h) on a tiny model with
 * adapter files written in the test: load and list; unload while a request
 * holds the adapter (its memory stays valid until released); reload (old
 * holders keep the old version, new ones get the new); LRU eviction under a
 * memory budget, pinning, in-use adapters never evicted, evicted adapters
 * loaded again on acquire; bad files (truncated, corrupted payload, unknown
 * format version, another base model) refused with the error of the same
 * check `generate --adapter` runs, leaving the registry as it was; names;
 * metal's q/k layout; concurrent acquire/release/reload. */
#include <pthread.h>

#include "adapters/adapter_file.h"
#include "adapters/registry_internal.h"
#include "adapter_fixture.h"
#include "core/fileio.h"
#include "model/forward.h"
#include "model_fixture.h"
#include "test.h"

static model_fixture f;     /* the model (all layouts), ref backend */
static char paths[4][128];  /* adapters a, b, c (rank 4, 4, 8), and a retrained a */

static void write_adapter(const char *path, int rank, uint64_t seed) {
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, rank, (float)rank);
  MXL_CHECK_OK(mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS | MXL_LORA_EXPERT_BITS, NULL, 0,
                                   f.model->config.n_layers));
  mxl_lora *lora = NULL;
  MXL_CHECK_OK(mxl_lora_create(&f.model->config, &lc, NULL, &lora));
  if (!lora) return;
  fixture_fill(lora, seed, 0.2f);
  mxl_adapter_save_options opt;
  mxl_adapter_save_options_default(&opt);
  MXL_CHECK_OK(mxl_adapter_save(path, lora, f.model, &opt));
  mxl_lora_destroy(lora);
}

/* The first value of layer 0's q B matrix, as a version sees it. */
static float first_b(const mxl_adapter_ref *ref) {
  return mxl_adapter_ref_view(ref)->layers[0].t[MXL_LORA_Q].B[0];
}

static mxl_registry *make(uint64_t budget) {
  mxl_registry_options opt = {budget};
  mxl_registry *reg = NULL;
  MXL_CHECK_OK(mxl_registry_create(f.model, f.be, &opt, &reg));
  return reg;
}

static mxl_registry_stats stats_of(mxl_registry *reg) {
  mxl_registry_stats s;
  mxl_registry_get_stats(reg, &s);
  return s;
}

static void test_load_list(void) {
  mxl_registry *reg = make(0);
  MXL_CHECK_OK(mxl_registry_load(reg, "b", paths[1]));
  MXL_CHECK_OK(mxl_registry_load(reg, "a", paths[0]));
  MXL_CHECK_FAILS(mxl_registry_load(reg, "a", paths[2]), MXL_ERR_ARGUMENT, "already loaded");
  mxl_registry_entry *list = NULL;
  int n = 0;
  MXL_CHECK_OK(mxl_registry_list(reg, &list, &n));
  MXL_CHECK(n == 2 && list && !strcmp(list[0].name, "a") && !strcmp(list[1].name, "b"));
  if (n == 2) {
    MXL_CHECK(!strcmp(list[0].path, paths[0]) && list[0].version == 1 && list[0].resident);
    MXL_CHECK(list[0].rank == 4 && list[0].bytes > 0 && list[0].in_use == 0);
    MXL_CHECK(strstr(list[0].targets, "gate_up") != NULL);
  }
  mxl_registry_list_free(list);
  mxl_adapter_ref *r1 = NULL, *r2 = NULL;
  MXL_CHECK_OK(mxl_registry_acquire(reg, "a", &r1));
  MXL_CHECK_OK(mxl_registry_acquire(reg, "a", &r2));
  MXL_CHECK(r1 && r1 == r2 && !strcmp(mxl_adapter_ref_name(r1), "a"));
  MXL_CHECK(mxl_adapter_ref_version(r1) == 1 && mxl_adapter_ref_rank(r1) == 4);
  mxl_registry_entry e;
  char *buf = NULL;
  MXL_CHECK_OK(mxl_registry_get(reg, "a", &e, &buf));
  MXL_CHECK(e.in_use == 2 && !strcmp(e.path, paths[0]));
  free(buf);
  mxl_adapter_ref_release(r1);
  mxl_adapter_ref_release(r2);
  MXL_CHECK_FAILS(mxl_registry_acquire(reg, "zz", &r1), MXL_ERR_NOT_FOUND, "zz");
  MXL_CHECK_FAILS(mxl_registry_unload(reg, "zz"), MXL_ERR_NOT_FOUND, "zz");
  MXL_CHECK_FAILS(mxl_registry_reload(reg, "zz", NULL), MXL_ERR_NOT_FOUND, "zz");
  MXL_CHECK_FAILS(mxl_registry_load(reg, "with space", paths[0]), MXL_ERR_ARGUMENT, "byte 4");
  MXL_CHECK_FAILS(mxl_registry_load(reg, "", paths[0]), MXL_ERR_ARGUMENT, "empty");
  char long_name[MXL_REGISTRY_NAME_MAX + 2];
  memset(long_name, 'x', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = 0;
  MXL_CHECK_FAILS(mxl_registry_load(reg, long_name, paths[0]), MXL_ERR_ARGUMENT, "at most");
  MXL_CHECK(stats_of(reg).adapters == 2 && stats_of(reg).loads == 2);
  mxl_registry_destroy(reg);
}

static void test_unload_in_use(void) {
  mxl_registry *reg = make(0);
  MXL_CHECK_OK(mxl_registry_load(reg, "a", paths[0]));
  mxl_adapter_ref *ref = NULL;
  MXL_CHECK_OK(mxl_registry_acquire(reg, "a", &ref));
  if (!ref) return mxl_registry_destroy(reg);
  float before = first_b(ref);
  uint64_t bytes = stats_of(reg).bytes;
  MXL_CHECK_OK(mxl_registry_unload(reg, "a"));
  mxl_adapter_ref *again = NULL;
  MXL_CHECK_FAILS(mxl_registry_acquire(reg, "a", &again), MXL_ERR_NOT_FOUND, "\"a\"");
  /* the request's version is still whole */
  MXL_CHECK(stats_of(reg).adapters == 0 && stats_of(reg).live_versions == 1);
  MXL_CHECK(stats_of(reg).bytes == bytes && first_b(ref) == before);
  /* a new adapter may take the name at once */
  MXL_CHECK_OK(mxl_registry_load(reg, "a", paths[1]));
  mxl_adapter_ref_release(ref);
  MXL_CHECK(stats_of(reg).live_versions == 1 && stats_of(reg).bytes == bytes);
  MXL_CHECK_OK(mxl_registry_unload(reg, "a"));
  MXL_CHECK(stats_of(reg).live_versions == 0 && stats_of(reg).bytes == 0);
  mxl_registry_destroy(reg);
}

static void test_reload(void) {
  char path[160];
  snprintf(path, sizeof path, "%s/live.mxla", f.dir);
  write_adapter(path, 4, 11);
  mxl_registry *reg = make(0);
  MXL_CHECK_OK(mxl_registry_load(reg, "live", path));
  mxl_adapter_ref *old = NULL, *neu = NULL;
  MXL_CHECK_OK(mxl_registry_acquire(reg, "live", &old));
  if (!old) return mxl_registry_destroy(reg);
  float v1 = first_b(old);
  write_adapter(path, 4, 12); /* retrained in place */
  MXL_CHECK_OK(mxl_registry_reload(reg, "live", NULL));
  MXL_CHECK_OK(mxl_registry_acquire(reg, "live", &neu));
  if (neu) {
    MXL_CHECK(mxl_adapter_ref_version(old) == 1 && mxl_adapter_ref_version(neu) == 2);
    MXL_CHECK(first_b(old) == v1 && first_b(neu) != v1);
    MXL_CHECK(stats_of(reg).live_versions == 2);
  }
  mxl_adapter_ref_release(old);
  MXL_CHECK(stats_of(reg).live_versions == 1);
  /* reload from another file: rank 8 */
  MXL_CHECK_OK(mxl_registry_reload(reg, "live", paths[2]));
  mxl_registry_entry e;
  char *buf = NULL;
  MXL_CHECK_OK(mxl_registry_get(reg, "live", &e, &buf));
  MXL_CHECK(e.version == 3 && e.rank == 8 && !strcmp(e.path, paths[2]));
  free(buf);
  mxl_adapter_ref_release(neu);
  MXL_CHECK(stats_of(reg).live_versions == 1 && stats_of(reg).reloads == 2);
  mxl_registry_destroy(reg);
}

static void test_eviction(void) {
  mxl_registry *probe = make(0);
  MXL_CHECK_OK(mxl_registry_load(probe, "a", paths[0]));
  uint64_t one = stats_of(probe).bytes; /* a and b have the same size */
  mxl_registry_destroy(probe);
  mxl_registry *reg = make(2 * one + one / 2);
  mxl_adapter_ref *ref = NULL;
  MXL_CHECK_OK(mxl_registry_load(reg, "a", paths[0]));
  MXL_CHECK_OK(mxl_registry_load(reg, "b", paths[1]));
  MXL_CHECK_OK(mxl_registry_acquire(reg, "a", &ref)); /* a is now the more recent */
  mxl_adapter_ref_release(ref);
  MXL_CHECK_OK(mxl_registry_load(reg, "a2", paths[0])); /* evicts b, the least recent */
  mxl_registry_entry e;
  char *buf = NULL;
  MXL_CHECK_OK(mxl_registry_get(reg, "b", &e, &buf));
  MXL_CHECK(!e.resident && e.bytes == 0);
  free(buf);
  MXL_CHECK(stats_of(reg).evictions == 1 && stats_of(reg).resident == 2);
  MXL_CHECK(stats_of(reg).bytes <= 2 * one + one / 2);

  /* pinned a, in-use a2: loading b back has nothing to evict */
  MXL_CHECK_OK(mxl_registry_pin(reg, "a", 1));
  MXL_CHECK_OK(mxl_registry_acquire(reg, "a2", &ref));
  mxl_adapter_ref *b = NULL;
  MXL_CHECK_FAILS(mxl_registry_acquire(reg, "b", &b), MXL_ERR_BUSY, "budget");
  MXL_CHECK(stats_of(reg).resident == 2 && stats_of(reg).evictions == 1);
  mxl_adapter_ref_release(ref);
  /* a2 is free now: the acquire of b evicts it and loads b from its file */
  MXL_CHECK_OK(mxl_registry_acquire(reg, "b", &b));
  MXL_CHECK_OK(mxl_registry_get(reg, "a2", &e, &buf));
  MXL_CHECK(!e.resident && e.version == 1);
  free(buf);
  MXL_CHECK(b && mxl_adapter_ref_version(b) == 1 && stats_of(reg).evictions == 2);
  mxl_adapter_ref_release(b);
  /* a budget below one adapter refuses at once */
  mxl_registry *tiny = make(one / 2);
  MXL_CHECK_FAILS(mxl_registry_load(tiny, "a", paths[0]), MXL_ERR_BUSY, "budget");
  MXL_CHECK(stats_of(tiny).adapters == 0 && stats_of(tiny).bytes == 0);
  mxl_registry_destroy(tiny);
  mxl_registry_destroy(reg);
}

/* The registry's refusal of `path` names the same problem as the adapter
 * API that `generate --adapter` uses (open, then load onto the model). */
static void check_refused(mxl_registry *reg, const char *path, const char *needle) {
  mxl_adapter *file = NULL;
  mxl_lora *lora = NULL;
  mxl_status want = mxl_adapter_open(path, &file);
  if (want == MXL_OK) want = mxl_adapter_load(file, f.model, &lora);
  char expect[512];
  snprintf(expect, sizeof expect, "%s", mxl_last_error());
  mxl_lora_destroy(lora);
  mxl_adapter_close(file);
  MXL_CHECK_MSG(want != MXL_OK, "%s: the adapter API accepts it", needle);
  mxl_registry_stats before = stats_of(reg);
  MXL_CHECK_FAILS(mxl_registry_load(reg, "bad", path), want, needle);
  MXL_CHECK_MSG(!strcmp(mxl_last_error(), expect), "\"%s\" vs \"%s\"", mxl_last_error(), expect);
  MXL_CHECK_FAILS(mxl_registry_reload(reg, "a", path), want, needle);
  mxl_registry_stats after = stats_of(reg);
  MXL_CHECK(after.adapters == before.adapters && after.bytes == before.bytes &&
            after.live_versions == before.live_versions);
  mxl_adapter_ref *ref = NULL;
  MXL_CHECK_OK(mxl_registry_acquire(reg, "a", &ref)); /* a still serves version 1 */
  MXL_CHECK(ref && mxl_adapter_ref_version(ref) == 1);
  mxl_adapter_ref_release(ref);
}

static void test_bad_files(void) {
  mxl_registry *reg = make(0);
  MXL_CHECK_OK(mxl_registry_load(reg, "a", paths[0]));
  char *data = NULL;
  size_t size = 0;
  MXL_CHECK_OK(mxl_read_file(paths[0], 1 << 26, &data, &size));
  if (!data) return mxl_registry_destroy(reg);
  char path[160];
  snprintf(path, sizeof path, "%s/bad.mxla", f.dir);

  MXL_CHECK_OK(mxl_write_file_atomic(path, data, size / 2));
  check_refused(reg, path, "bad.mxla");
  data[size - 3] ^= 0x5A; /* inside the last payload */
  MXL_CHECK_OK(mxl_write_file_atomic(path, data, size));
  check_refused(reg, path, "bad.mxla");
  data[size - 3] ^= 0x5A;
  data[8] = 99; /* format version */
  MXL_CHECK_OK(mxl_write_file_atomic(path, data, size));
  check_refused(reg, path, "version");
  data[8] = 1;
  free(data);
  snprintf(path, sizeof path, "%s/missing.mxla", f.dir);
  check_refused(reg, path, "missing.mxla");

  /* another base model: same shapes, other weights */
  model_fixture other;
  MXL_CHECK_OK(fixture_open(&other, "test", "hf", 99, "", 1));
  if (other.model) {
    mxl_lora_config lc;
    mxl_lora_config_init(&lc, 4, 4);
    MXL_CHECK_OK(mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS, NULL, 0, other.model->config.n_layers));
    mxl_lora *lora = NULL;
    MXL_CHECK_OK(mxl_lora_create(&other.model->config, &lc, NULL, &lora));
    mxl_adapter_save_options opt;
    mxl_adapter_save_options_default(&opt);
    snprintf(path, sizeof path, "%s/other.mxla", f.dir);
    if (lora) MXL_CHECK_OK(mxl_adapter_save(path, lora, other.model, &opt));
    mxl_lora_destroy(lora);
    check_refused(reg, path, "fingerprint");
  }
  fixture_close(&other);
  MXL_CHECK(stats_of(reg).failed_loads == 10 && stats_of(reg).loads == 1);
  mxl_registry_destroy(reg);
}

/* Logits of a few tokens with registry adapter "a" at `scale`. */
static void logits_with(mxl_engine *e, mxl_registry *reg, float scale, float *out) {
  mxl_adapter_ref *ref = NULL;
  MXL_CHECK_OK(mxl_registry_acquire(reg, "a", &ref));
  if (!ref) return;
  mxl_kv_cache *cache = NULL;
  mxl_forward_state st = {0};
  const int32_t tokens[5] = {3, 14, 15, 92, 65};
  mxl_lora_use use = {mxl_adapter_ref_view(ref), scale};
  MXL_CHECK_OK(mxl_kv_cache_create(e, 8, 8, &cache));
  mxl_fwd_seq seq = {cache, tokens, 5, &use, 1, 0};
  mxl_forward_out o = {0};
  o.logits = out;
  MXL_CHECK_OK(mxl_forward(e, &st, &seq, 1, NULL, &o));
  mxl_forward_state_release(e, &st);
  mxl_kv_cache_destroy(e, cache);
  mxl_adapter_ref_release(ref);
}

/* metal/model.bin keeps q/k rows in its own order and scale: the registry
 * converts the adapter, so the logits match the HF layout's (over the
 * vocabulary rows metal keeps). */
static void test_metal_layout(void) {
  char path[160];
  snprintf(path, sizeof path, "%s/metal", f.dir);
  mxl_model *metal = NULL;
  mxl_engine *me = NULL;
  MXL_CHECK_OK(mxl_model_open(path, &metal));
  if (metal) MXL_CHECK_OK(mxl_engine_create(metal, f.be, &me));
  mxl_registry *hf_reg = make(0), *metal_reg = NULL;
  MXL_CHECK_OK(mxl_registry_create(metal, f.be, NULL, &metal_reg));
  MXL_CHECK_OK(mxl_registry_load(hf_reg, "a", paths[0]));
  MXL_CHECK_OK(mxl_registry_load(metal_reg, "a", paths[0]));
  const size_t V = f.engine->w.vocab_rows;
  float *a = calloc(V, sizeof *a), *b = calloc(V, sizeof *b), *base = calloc(V, sizeof *b);
  if (me && a && b && base) {
    logits_with(f.engine, hf_reg, 0.7f, a);
    logits_with(me, metal_reg, 0.7f, b);
    logits_with(f.engine, hf_reg, 0.0f, base);
    double d = 0, big = 0, moved = 0;
    for (size_t i = 0; i < (size_t)me->w.vocab_rows; i++) { /* metal keeps fewer rows */
      d = fmax(d, fabs((double)a[i] - b[i]));
      moved = fmax(moved, fabs((double)a[i] - base[i]));
      big = fmax(big, fabs((double)a[i]));
    }
    printf("  hf vs metal logits with adapter a at 0.7: max difference %.3g (the adapter moves "
           "them by %.3g, max |logit| %.3g)\n",
           d, moved, big);
    MXL_CHECK(big > 0 && d < 1e-4 * big && moved > 1e-2 * big);
  }
  free(a);
  free(b);
  free(base);
  mxl_registry_destroy(hf_reg);
  mxl_registry_destroy(metal_reg);
  mxl_engine_destroy(me);
  mxl_model_close(metal);
}

/* Requests acquire and release while another thread reloads, unloads and
 * loads again: every reference stays readable until released (ASan checks
 * in CI), and nothing leaks. */
typedef struct hammer_arg {
  mxl_registry *reg;
  int iterations, acquired;
} hammer_arg;

static void *hammer(void *p) {
  hammer_arg *h = p;
  for (int i = 0; i < h->iterations; i++) {
    mxl_adapter_ref *ref = NULL;
    if (mxl_registry_acquire(h->reg, "a", &ref) != MXL_OK) continue;
    volatile float sink = first_b(ref);
    (void)sink;
    h->acquired++;
    mxl_adapter_ref_release(ref);
  }
  return NULL;
}

static void test_threads(void) {
  mxl_registry *reg = make(0);
  MXL_CHECK_OK(mxl_registry_load(reg, "a", paths[0]));
  hammer_arg h = {reg, 2000, 0};
  pthread_t th;
  MXL_CHECK(pthread_create(&th, NULL, hammer, &h) == 0);
  for (int i = 0; i < 20; i++) {
    MXL_CHECK_OK(mxl_registry_reload(reg, "a", i % 2 ? paths[0] : paths[3]));
    if (i % 5 == 4) {
      MXL_CHECK_OK(mxl_registry_unload(reg, "a"));
      MXL_CHECK_OK(mxl_registry_load(reg, "a", paths[1]));
    }
  }
  pthread_join(th, NULL);
  printf("  %d acquisitions during 20 reloads and 4 unloads\n", h.acquired);
  MXL_CHECK(h.acquired > 0);
  MXL_CHECK(stats_of(reg).live_versions == 1);
  mxl_registry_destroy(reg);
}

int main(void) {
  if (fixture_open(&f, "test", "all", 21, "", 1) != MXL_OK) {
    fprintf(stderr, "setup: %s\n", mxl_last_error());
    return 1;
  }
  const char *names[4] = {"a.mxla", "b.mxla", "c.mxla", "a2.mxla"};
  const int ranks[4] = {4, 4, 8, 4};
  for (int i = 0; i < 4; i++) {
    snprintf(paths[i], sizeof paths[i], "%s/%s", f.dir, names[i]);
    write_adapter(paths[i], ranks[i], 1000 + (uint64_t)i);
  }
  MXL_RUN(test_load_list);
  MXL_RUN(test_unload_in_use);
  MXL_RUN(test_reload);
  MXL_RUN(test_eviction);
  MXL_RUN(test_bad_files);
  MXL_RUN(test_metal_layout);
  MXL_RUN(test_threads);
  fixture_close(&f);
  return mxl_test_summary("registry");
}
