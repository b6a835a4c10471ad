/* Public API: the adapter registry — LoRA adapters loaded, reloaded,
 * unloaded and listed by name while requests run (mxlora serve, chat).
 *
 * One registry serves one base model on one compute backend: the
 * scheduler's (mxl_scheduler_backend in mxlora/scheduler.h), so adapters
 * live where the forward pass reads them.
 *
 * Versions and references. Every load or reload makes a new immutable
 * version of the named adapter. A request takes a reference to the current
 * version (mxl_registry_acquire) and releases it when it finishes, so
 *   - a request in flight keeps the version it started with;
 *   - unload and reload never free memory that a request still reads: the
 *     old version is freed when its last reference is released;
 *   - requests acquired after a reload returns see the new version.
 *
 * Checks. Loading runs the same checks as `generate --adapter` (format
 * version, header, tensor directory, every payload's SHA-256, the base
 * model's fingerprint). A file that fails any of them is refused with that
 * check's message and the registry stays exactly as it was (a failed
 * reload keeps the old version serving).
 *
 * Memory budget. `max_memory` bounds the bytes of adapter parameters on the
 * backend, counting every live version. A load that would exceed it first
 * evicts least-recently-acquired adapters that are neither pinned nor in
 * use; an evicted adapter stays registered (resident = 0) and the next
 * acquire loads it again from its file. When nothing more can be evicted,
 * the load (or acquire) fails with MXL_ERR_BUSY and changes nothing.
 *
 * Threads: every function may be called from any thread; the registry
 * serialises them internally (file reading and decompression happen
 * outside its lock). The backend's alloc/upload/free are called from the
 * calling thread (thread-safe on the cpu, ref and cuda backends).
 *
 * Statuses: MXL_ERR_NOT_FOUND for an unknown name, MXL_ERR_ARGUMENT for a
 * bad name or a name already loaded, MXL_ERR_BUSY when the memory budget is
 * full of pinned or in-use adapters; file problems keep the status of the
 * check that failed (MXL_ERR_IO, MXL_ERR_FORMAT, MXL_ERR_UNSUPPORTED,
 * MXL_ERR_ARGUMENT for another base model). */
#ifndef MXLORA_REGISTRY_H
#define MXLORA_REGISTRY_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mxl_model mxl_model;
/* A compute backend (opaque here): the scheduler's, see mxlora/scheduler.h. */
typedef struct mxl_backend mxl_backend;
typedef struct mxl_registry mxl_registry;
/* A reference to one version of a loaded adapter. */
typedef struct mxl_adapter_ref mxl_adapter_ref;

/* Names: 1..MXL_REGISTRY_NAME_MAX bytes of printable ASCII without spaces,
 * quotes or backslashes (they become model ids in the HTTP API). */
enum { MXL_REGISTRY_NAME_MAX = 128 };

typedef struct mxl_registry_options {
  uint64_t max_memory; /* bytes of adapter parameters on the backend; 0: no limit */
} mxl_registry_options;

/* `model` and `be` must outlive the registry. opt may be NULL (no limit). */
mxl_status mxl_registry_create(const mxl_model *model, mxl_backend *be,
                               const mxl_registry_options *opt, mxl_registry **out);
/* Frees every version. Call it after every reference has been released
 * (after the scheduler that holds references is destroyed). NULL is fine. */
void mxl_registry_destroy(mxl_registry *reg);

/* Loads the adapter file `path` under a new `name`. */
mxl_status mxl_registry_load(mxl_registry *reg, const char *name, const char *path);
/* Loads a new version of `name` from `path` (NULL: the file it was loaded
 * from, e.g. after it was retrained) and makes it current. The pinned flag
 * is kept. On failure the current version stays. */
mxl_status mxl_registry_reload(mxl_registry *reg, const char *name, const char *path);
/* Forgets `name`; its memory is freed once no request holds it. */
mxl_status mxl_registry_unload(mxl_registry *reg, const char *name);
/* A pinned adapter is never evicted. */
mxl_status mxl_registry_pin(mxl_registry *reg, const char *name, int pinned);

/* A new reference to the current version of `name` (loading it again if it
 * was evicted); marks it most recently used. */
mxl_status mxl_registry_acquire(mxl_registry *reg, const char *name, mxl_adapter_ref **out);
/* Another reference to the same version (for a second holder). */
mxl_adapter_ref *mxl_adapter_ref_retain(mxl_adapter_ref *ref);
/* Drops a reference; the last one of a version that is no longer current
 * (or whose adapter was unloaded) frees it. NULL is fine. */
void mxl_adapter_ref_release(mxl_adapter_ref *ref);
/* The registered name and version number of a reference (valid while it
 * is held). */
const char *mxl_adapter_ref_name(const mxl_adapter_ref *ref);
uint64_t mxl_adapter_ref_version(const mxl_adapter_ref *ref);

/* One registered adapter, as listed. */
typedef struct mxl_registry_entry {
  char name[MXL_REGISTRY_NAME_MAX + 1];
  const char *path;     /* the file of the current version */
  uint64_t version;     /* 1 at the first load, +1 per reload */
  uint64_t bytes;       /* parameter bytes of the current version (0: evicted) */
  int resident;         /* 1: in memory; 0: evicted, loaded again on acquire */
  int pinned;
  int in_use;           /* references held to the current version */
  int rank;
  double alpha, scaling; /* lora_alpha, and alpha/rank (or alpha/√rank) */
  const char *targets;  /* "q:0-23 k:0-23 ... gate_up:7,15,23" */
  double idle_seconds;  /* since the last acquire (or load) */
} mxl_registry_entry;

/* Every registered adapter, sorted by name, in one allocation that
 * mxl_registry_list_free releases (strings included). */
mxl_status mxl_registry_list(mxl_registry *reg, mxl_registry_entry **entries_out, int *n_out);
void mxl_registry_list_free(mxl_registry_entry *entries);

/* One adapter by name; path and targets point into *buf, a string the
 * caller frees with free(). */
mxl_status mxl_registry_get(mxl_registry *reg, const char *name, mxl_registry_entry *entry,
                            char **buf);

typedef struct mxl_registry_stats {
  int adapters;          /* registered */
  int resident;          /* of those, in memory */
  int live_versions;     /* versions in memory, old ones still in use included */
  uint64_t bytes;        /* parameter bytes of every live version */
  uint64_t max_memory;   /* the budget (0: none) */
  uint64_t loads, reloads, unloads, evictions, failed_loads; /* since creation */
} mxl_registry_stats;

void mxl_registry_get_stats(mxl_registry *reg, mxl_registry_stats *out);

#ifdef __cplusplus
}
#endif

#endif
