/* The adapter registry (include/mxlora/registry.h): named entries, each
 * pointing at its current version; versions are reference counted.
 *
 * Locking: one mutex guards the entry table, every reference count and the
 * byte accounting. Reading and decoding a file happens outside it, after
 * the bytes it will need have been reserved under it, so the budget holds
 * even while several loads run at once. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapters/adapter_file.h"
#include "adapters/lora.h"
#include "adapters/registry_internal.h"
#include "core/status.h"

typedef struct entry entry;

/* One version of one adapter: what a reference points at. */
struct mxl_adapter_ref {
  mxl_registry *reg;
  char name[MXL_REGISTRY_NAME_MAX + 1];
  uint64_t version;
  uint64_t uid;      /* unique in the process: no two versions (of any registry) share it */
  int refs;          /* holders, the registry's own while current included */
  uint64_t bytes;    /* reserved for it in the budget */
  mxl_lora *lora;    /* parameters in backend memory (host memory on host backends) */
  mxl_lora_layer *layers;
  mxl_lora_view view;
  int max_rank;
};

struct entry {
  char name[MXL_REGISTRY_NAME_MAX + 1];
  char *path;
  mxl_adapter_ref *current; /* NULL: evicted */
  uint64_t version;
  int pinned;
  double last_used;
  int rank;
  double alpha, scaling;
  char *targets;
};

struct mxl_registry {
  const mxl_model *model;
  mxl_backend *be;
  pthread_mutex_t mu;
  entry **entries; /* sorted by name */
  int n, cap;
  uint64_t bytes, max_memory;
  int live_versions;
  uint64_t loads, reloads, unloads, evictions, failed_loads;
};

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double mib(uint64_t bytes) { return (double)bytes / (1024.0 * 1024.0); }

/* ---------------------------------------------------------------- versions */

/* Frees a version's memory (registry lock held, or no other thread). */
static void version_free(mxl_adapter_ref *v) {
  mxl_registry *reg = v->reg;
  reg->bytes -= v->bytes;
  reg->live_versions--;
  mxl_lora_destroy(v->lora);
  free(v->layers);
  free(v);
}

/* Drops one reference (lock held); the last one frees the version. */
static void version_unref(mxl_adapter_ref *v) {
  if (--v->refs == 0) version_free(v);
}

/* Reads and checks the file (as generate --adapter does), then places the
 * parameters on the backend and builds the view. */
static mxl_status version_build(mxl_registry *reg, const mxl_adapter *file, mxl_adapter_ref *v) {
  mxl_lora *lora = NULL;
  /* No sync of the backend: the engine thread owns its error state. */
  MXL_TRY(mxl_adapter_load_overlay(file, reg->model, reg->be, &lora));
  v->layers = calloc((size_t)lora->layout->n_layers, sizeof *v->layers);
  if (!v->layers) {
    mxl_lora_destroy(lora);
    return mxl_errorf(MXL_ERR_MEMORY, "adapter %s: out of memory", v->name);
  }
  v->lora = lora;
  v->view.layers = v->layers;
  mxl_lora_fill_view(lora->layout, lora->params, 1.0f, &v->view);
  v->max_rank = lora->layout->cfg.rank;
  return MXL_OK;
}

/* ---------------------------------------------------------------- entries */

static int find_index(const mxl_registry *reg, const char *name, int *found) {
  int lo = 0, hi = reg->n;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    int c = strcmp(reg->entries[mid]->name, name);
    if (c == 0) {
      *found = 1;
      return mid;
    }
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  *found = 0;
  return lo;
}

static entry *find_entry(const mxl_registry *reg, const char *name) {
  int found;
  int i = find_index(reg, name, &found);
  return found ? reg->entries[i] : NULL;
}

static void entry_free(entry *en) {
  if (!en) return;
  free(en->path);
  free(en->targets);
  free(en);
}

static mxl_status check_name(const char *name) {
  if (!name || !name[0]) return mxl_errorf(MXL_ERR_ARGUMENT, "adapter name: empty");
  size_t len = strlen(name);
  if (len > MXL_REGISTRY_NAME_MAX)
    return mxl_errorf(MXL_ERR_ARGUMENT, "adapter name: %zu bytes (at most %d)", len,
                      MXL_REGISTRY_NAME_MAX);
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)name[i];
    if (ch <= ' ' || ch >= 0x7f || ch == '"' || ch == '\\')
      return mxl_errorf(MXL_ERR_ARGUMENT,
                        "adapter name \"%.*s\": byte %zu (0x%02x) is not allowed (printable "
                        "ASCII without spaces, quotes or backslashes)",
                        (int)len, name, i, ch);
  }
  return MXL_OK;
}

static mxl_status not_found(const char *name) {
  return mxl_errorf(MXL_ERR_NOT_FOUND, "no adapter named \"%s\" is loaded", name);
}

/* ---------------------------------------------------------------- budget */

/* Makes room for `bytes` more (lock held): evicts least recently used
 * entries that are resident, unpinned, unused and not `keep`. Reserves the
 * bytes on success; changes nothing on failure. */
static mxl_status reserve(mxl_registry *reg, uint64_t bytes, const entry *keep, const char *name) {
  if (reg->max_memory == 0 || reg->bytes + bytes <= reg->max_memory) {
    reg->bytes += bytes;
    return MXL_OK;
  }
  uint64_t freeable = 0;
  for (int i = 0; i < reg->n; i++) {
    const entry *en = reg->entries[i];
    if (en != keep && en->current && !en->pinned && en->current->refs == 1)
      freeable += en->current->bytes;
  }
  if (bytes > reg->max_memory || reg->bytes - freeable + bytes > reg->max_memory)
    return mxl_errorf(MXL_ERR_BUSY,
                      "adapter %s needs %.1f MiB: the adapter memory budget of %.1f MiB holds "
                      "%.1f MiB, of which %.1f MiB is pinned, in use or loading",
                      name, mib(bytes), mib(reg->max_memory), mib(reg->bytes),
                      mib(reg->bytes - freeable));
  while (reg->bytes + bytes > reg->max_memory) {
    entry *lru = NULL;
    for (int i = 0; i < reg->n; i++) {
      entry *en = reg->entries[i];
      if (en != keep && en->current && !en->pinned && en->current->refs == 1 &&
          (!lru || en->last_used < lru->last_used))
        lru = en;
    }
    mxl_adapter_ref *v = lru->current;
    lru->current = NULL;
    reg->evictions++;
    version_unref(v);
  }
  reg->bytes += bytes;
  return MXL_OK;
}

/* ---------------------------------------------------------------- loading */

typedef struct loaded {
  mxl_adapter_ref *v;
  int rank;
  double alpha, scaling;
  char *targets;
} loaded;

/* Opens `path`, reserves its bytes (evicting for it, never `keep`), builds
 * a version. On failure nothing stays reserved or allocated. */
static mxl_status load_file(mxl_registry *reg, const char *name, const char *path,
                            const entry *keep, loaded *out) {
  memset(out, 0, sizeof *out);
  mxl_adapter *file = NULL;
  mxl_status st = mxl_adapter_open(path, &file);
  if (st != MXL_OK) return st;
  const mxl_adapter_info *info = mxl_adapter_get_info(file);
  const mxl_lora_layout *lay = mxl_adapter_header_of(file)->layout;
  mxl_adapter_ref *v = calloc(1, sizeof *v);
  out->targets = strdup(info->targets);
  if (!v || !out->targets) {
    free(v);
    free(out->targets);
    mxl_adapter_close(file);
    return mxl_errorf(MXL_ERR_MEMORY, "adapter %s: out of memory", name);
  }
  static atomic_uint_fast64_t next_uid = 1;
  v->reg = reg;
  v->uid = atomic_fetch_add(&next_uid, 1);
  snprintf(v->name, sizeof v->name, "%s", name);
  v->bytes = lay->n_floats * sizeof(float);
  out->rank = info->rank;
  out->alpha = info->alpha;
  out->scaling = info->scaling;
  pthread_mutex_lock(&reg->mu);
  st = reserve(reg, v->bytes, keep, name);
  pthread_mutex_unlock(&reg->mu);
  if (st == MXL_OK) {
    st = version_build(reg, file, v);
    if (st != MXL_OK) {
      pthread_mutex_lock(&reg->mu);
      reg->bytes -= v->bytes;
      pthread_mutex_unlock(&reg->mu);
    }
  }
  mxl_adapter_close(file);
  if (st != MXL_OK) {
    free(v);
    free(out->targets);
    out->targets = NULL;
    return st;
  }
  v->refs = 1; /* the registry's */
  pthread_mutex_lock(&reg->mu);
  reg->live_versions++;
  pthread_mutex_unlock(&reg->mu);
  out->v = v;
  return MXL_OK;
}

/* Frees a version that was built but not installed (lock held). */
static void discard(loaded *l) {
  version_unref(l->v);
  free(l->targets);
  memset(l, 0, sizeof *l);
}

static void install(entry *en, loaded *l, uint64_t version) {
  en->current = l->v;
  l->v->version = version;
  en->version = version;
  en->rank = l->rank;
  en->alpha = l->alpha;
  en->scaling = l->scaling;
  free(en->targets);
  en->targets = l->targets;
  en->last_used = now_seconds();
  memset(l, 0, sizeof *l);
}

mxl_status mxl_registry_create(const mxl_model *model, mxl_backend *be,
                               const mxl_registry_options *opt, mxl_registry **out) {
  *out = NULL;
  if (!model || !be) return mxl_errorf(MXL_ERR_ARGUMENT, "registry: no model or backend");
  mxl_registry *reg = calloc(1, sizeof *reg);
  if (!reg) return mxl_errorf(MXL_ERR_MEMORY, "registry: out of memory");
  reg->model = model;
  reg->be = be;
  reg->max_memory = opt ? opt->max_memory : 0;
  pthread_mutex_init(&reg->mu, NULL);
  *out = reg;
  return MXL_OK;
}

void mxl_registry_destroy(mxl_registry *reg) {
  if (!reg) return;
  for (int i = 0; i < reg->n; i++) {
    entry *en = reg->entries[i];
    if (en->current) version_unref(en->current);
    entry_free(en);
  }
  free(reg->entries);
  pthread_mutex_destroy(&reg->mu);
  free(reg);
}

static mxl_status insert_entry(mxl_registry *reg, entry *en) {
  int found;
  int at = find_index(reg, en->name, &found);
  if (found)
    return mxl_errorf(MXL_ERR_ARGUMENT, "an adapter named \"%s\" is already loaded (reload it)",
                      en->name);
  if (reg->n == reg->cap) {
    int cap = reg->cap ? 2 * reg->cap : 16;
    entry **grown = realloc(reg->entries, (size_t)cap * sizeof *grown);
    if (!grown) return mxl_errorf(MXL_ERR_MEMORY, "registry: out of memory");
    reg->entries = grown;
    reg->cap = cap;
  }
  memmove(reg->entries + at + 1, reg->entries + at, (size_t)(reg->n - at) * sizeof *reg->entries);
  reg->entries[at] = en;
  reg->n++;
  return MXL_OK;
}

mxl_status mxl_registry_load(mxl_registry *reg, const char *name, const char *path) {
  MXL_TRY(check_name(name));
  if (!path || !path[0]) return mxl_errorf(MXL_ERR_ARGUMENT, "adapter %s: no file given", name);
  pthread_mutex_lock(&reg->mu);
  int exists = find_entry(reg, name) != NULL;
  pthread_mutex_unlock(&reg->mu);
  if (exists)
    return mxl_errorf(MXL_ERR_ARGUMENT, "an adapter named \"%s\" is already loaded (reload it)",
                      name);
  loaded l;
  entry *en = calloc(1, sizeof *en);
  char *path_copy = strdup(path);
  if (!en || !path_copy) {
    free(en);
    free(path_copy);
    return mxl_errorf(MXL_ERR_MEMORY, "adapter %s: out of memory", name);
  }
  snprintf(en->name, sizeof en->name, "%s", name);
  en->path = path_copy;
  mxl_status st = load_file(reg, name, path, NULL, &l);
  pthread_mutex_lock(&reg->mu);
  if (st == MXL_OK) {
    install(en, &l, 1);
    st = insert_entry(reg, en); /* a concurrent load of the same name may have won */
    if (st != MXL_OK) {
      version_unref(en->current);
      en->current = NULL;
    } else {
      reg->loads++;
    }
  }
  if (st != MXL_OK) reg->failed_loads++;
  pthread_mutex_unlock(&reg->mu);
  if (st != MXL_OK) entry_free(en);
  return st;
}

mxl_status mxl_registry_reload(mxl_registry *reg, const char *name, const char *path) {
  MXL_TRY(check_name(name));
  pthread_mutex_lock(&reg->mu);
  entry *en = find_entry(reg, name);
  char *file = en ? strdup(path ? path : en->path) : NULL;
  pthread_mutex_unlock(&reg->mu);
  if (!en) return not_found(name);
  if (!file) return mxl_errorf(MXL_ERR_MEMORY, "adapter %s: out of memory", name);
  loaded l;
  mxl_status st = load_file(reg, name, file, en, &l);
  pthread_mutex_lock(&reg->mu);
  if (st == MXL_OK && find_entry(reg, name) != en) { /* unloaded meanwhile */
    discard(&l);
    st = not_found(name);
  } else if (st == MXL_OK) {
    mxl_adapter_ref *old = en->current;
    install(en, &l, en->version + 1);
    if (old) version_unref(old); /* freed now, or when its last request ends */
    free(en->path);
    en->path = file;
    file = NULL;
    reg->reloads++;
  }
  if (st != MXL_OK) reg->failed_loads++;
  pthread_mutex_unlock(&reg->mu);
  free(file);
  return st;
}

mxl_status mxl_registry_unload(mxl_registry *reg, const char *name) {
  pthread_mutex_lock(&reg->mu);
  int found;
  int i = find_index(reg, name ? name : "", &found);
  if (!found) {
    pthread_mutex_unlock(&reg->mu);
    return not_found(name ? name : "");
  }
  entry *en = reg->entries[i];
  memmove(reg->entries + i, reg->entries + i + 1, (size_t)(reg->n - i - 1) * sizeof *reg->entries);
  reg->n--;
  if (en->current) version_unref(en->current);
  reg->unloads++;
  pthread_mutex_unlock(&reg->mu);
  entry_free(en);
  return MXL_OK;
}

mxl_status mxl_registry_pin(mxl_registry *reg, const char *name, int pinned) {
  pthread_mutex_lock(&reg->mu);
  entry *en = find_entry(reg, name ? name : "");
  if (en) en->pinned = pinned != 0;
  pthread_mutex_unlock(&reg->mu);
  return en ? MXL_OK : not_found(name ? name : "");
}

/* ---------------------------------------------------------------- references */

mxl_status mxl_registry_acquire(mxl_registry *reg, const char *name, mxl_adapter_ref **out) {
  *out = NULL;
  pthread_mutex_lock(&reg->mu);
  entry *en = find_entry(reg, name ? name : "");
  if (en && en->current) {
    en->current->refs++;
    en->last_used = now_seconds();
    *out = en->current;
  }
  char *path = en && !en->current ? strdup(en->path) : NULL;
  pthread_mutex_unlock(&reg->mu);
  if (!en) return not_found(name ? name : "");
  if (*out) return MXL_OK;
  if (!path) return mxl_errorf(MXL_ERR_MEMORY, "adapter %s: out of memory", name);

  /* Evicted: load it again from its file. */
  loaded l;
  mxl_status st = load_file(reg, name, path, en, &l);
  free(path);
  pthread_mutex_lock(&reg->mu);
  if (st == MXL_OK) {
    if (find_entry(reg, name) != en) {
      discard(&l);
      st = not_found(name);
    } else if (en->current) { /* another acquire restored it first */
      discard(&l);
    } else {
      install(en, &l, en->version);
      reg->loads++;
    }
  }
  if (st == MXL_OK) {
    en->current->refs++;
    en->last_used = now_seconds();
    *out = en->current;
  } else {
    reg->failed_loads++;
  }
  pthread_mutex_unlock(&reg->mu);
  return st;
}

mxl_adapter_ref *mxl_adapter_ref_retain(mxl_adapter_ref *ref) {
  if (!ref) return NULL;
  pthread_mutex_lock(&ref->reg->mu);
  ref->refs++;
  pthread_mutex_unlock(&ref->reg->mu);
  return ref;
}

void mxl_adapter_ref_release(mxl_adapter_ref *ref) {
  if (!ref) return;
  mxl_registry *reg = ref->reg;
  pthread_mutex_lock(&reg->mu);
  version_unref(ref);
  pthread_mutex_unlock(&reg->mu);
}

const char *mxl_adapter_ref_name(const mxl_adapter_ref *ref) { return ref->name; }
uint64_t mxl_adapter_ref_version(const mxl_adapter_ref *ref) { return ref->version; }
uint64_t mxl_adapter_ref_uid(const mxl_adapter_ref *ref) { return ref->uid; }
const mxl_lora_view *mxl_adapter_ref_view(const mxl_adapter_ref *ref) { return &ref->view; }
int mxl_adapter_ref_rank(const mxl_adapter_ref *ref) { return ref->max_rank; }

/* ---------------------------------------------------------------- listing */

/* The entry's fields (lock held); strings are copied into `strings` at
 * *used when it is not NULL, else only counted. */
static void describe(const entry *en, double now, mxl_registry_entry *out, char *strings,
                     size_t *used) {
  const char *texts[2] = {en->path, en->targets ? en->targets : ""};
  const char **dst[2] = {&out->path, &out->targets};
  memset(out, 0, sizeof *out);
  snprintf(out->name, sizeof out->name, "%s", en->name);
  for (int i = 0; i < 2; i++) {
    size_t len = strlen(texts[i]) + 1;
    if (strings) {
      memcpy(strings + *used, texts[i], len);
      *dst[i] = strings + *used;
    }
    *used += len;
  }
  out->version = en->version;
  out->bytes = en->current ? en->current->bytes : 0;
  out->resident = en->current != NULL;
  out->pinned = en->pinned;
  out->in_use = en->current ? en->current->refs - 1 : 0;
  out->rank = en->rank;
  out->alpha = en->alpha;
  out->scaling = en->scaling;
  out->idle_seconds = now - en->last_used;
}

mxl_status mxl_registry_list(mxl_registry *reg, mxl_registry_entry **entries_out, int *n_out) {
  *entries_out = NULL;
  *n_out = 0;
  pthread_mutex_lock(&reg->mu);
  double now = now_seconds();
  size_t strings = 0;
  mxl_registry_entry scratch;
  for (int i = 0; i < reg->n; i++) describe(reg->entries[i], now, &scratch, NULL, &strings);
  size_t head = (size_t)(reg->n ? reg->n : 1) * sizeof(mxl_registry_entry);
  mxl_registry_entry *list = malloc(head + strings);
  if (!list) {
    pthread_mutex_unlock(&reg->mu);
    return mxl_errorf(MXL_ERR_MEMORY, "registry list: out of memory");
  }
  size_t used = 0;
  for (int i = 0; i < reg->n; i++)
    describe(reg->entries[i], now, &list[i], (char *)list + head, &used);
  *n_out = reg->n;
  pthread_mutex_unlock(&reg->mu);
  *entries_out = list;
  return MXL_OK;
}

void mxl_registry_list_free(mxl_registry_entry *entries) { free(entries); }

mxl_status mxl_registry_get(mxl_registry *reg, const char *name, mxl_registry_entry *out,
                            char **buf) {
  *buf = NULL;
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&reg->mu);
  entry *en = find_entry(reg, name ? name : "");
  mxl_status st = MXL_OK;
  if (!en) {
    st = not_found(name ? name : "");
  } else {
    size_t used = 0;
    describe(en, now_seconds(), out, NULL, &used);
    *buf = malloc(used);
    if (!*buf) st = mxl_errorf(MXL_ERR_MEMORY, "registry: out of memory");
    used = 0;
    if (*buf) describe(en, now_seconds(), out, *buf, &used);
  }
  pthread_mutex_unlock(&reg->mu);
  return st;
}

void mxl_registry_get_stats(mxl_registry *reg, mxl_registry_stats *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&reg->mu);
  out->adapters = reg->n;
  for (int i = 0; i < reg->n; i++) out->resident += reg->entries[i]->current != NULL;
  out->live_versions = reg->live_versions;
  out->bytes = reg->bytes;
  out->max_memory = reg->max_memory;
  out->loads = reg->loads;
  out->reloads = reg->reloads;
  out->unloads = reg->unloads;
  out->evictions = reg->evictions;
  out->failed_loads = reg->failed_loads;
  pthread_mutex_unlock(&reg->mu);
}
