/* Shared by model-level tests: a tiny checkpoint written by `mxlora tiny`'s
 * library call into a temporary folder, opened, and bound to a backend. */
#ifndef MXL_TESTS_MODEL_FIXTURE_H
#define MXL_TESTS_MODEL_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/hugemem.h"
#include "core/status.h"
#include "model/engine.h"
#include "model/model.h"

typedef struct model_fixture {
  char dir[64];
  mxl_model *model;
  mxl_backend *be;
  mxl_engine *engine;
} model_fixture;

/* Writes preset `preset` (seed, with n_set "key=value" config overrides as
 * `mxlora tiny --set`) in `layout` under a fresh temporary folder and opens
 * `subdir` of it ("" for the root). */
static inline mxl_status fixture_open_set(model_fixture *f, const char *preset,
                                          const char *layout, uint64_t seed, const char *subdir,
                                          int use_ref, const char *const *set, int n_set) {
  memset(f, 0, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/mxl_model_XXXXXX");
  if (!mkdtemp(f->dir)) return MXL_ERR_IO;
  mxl_tiny_options opt = {0};
  opt.preset = preset;
  opt.layout = layout;
  opt.seed = seed;
  opt.set = set;
  opt.n_set = n_set;
  mxl_status st = mxl_tiny_write(f->dir, &opt, NULL, NULL);
  if (st != MXL_OK) return st;
  char path[256];
  snprintf(path, sizeof path, "%s/%s", f->dir, subdir);
  st = mxl_model_open(path, &f->model);
  if (st != MXL_OK) return st;
  st = use_ref ? mxl_backend_ref_create(&f->be) : mxl_backend_cpu_create(0, &f->be);
  if (st != MXL_OK) return st;
  return mxl_engine_create(f->model, f->be, &f->engine);
}

static inline mxl_status fixture_open(model_fixture *f, const char *preset, const char *layout,
                                      uint64_t seed, const char *subdir, int use_ref) {
  return fixture_open_set(f, preset, layout, seed, subdir, use_ref, NULL, 0);
}

/* Writes a meminfo file at `path` whose MemAvailable is `bytes` (whole kB)
 * and points the library's MemAvailable reads at it. The library keeps
 * `path` by pointer: it must outlive its use (NULL to
 * mxl_mem_available_path_for_tests restores /proc/meminfo). 0 when the
 * file cannot be written. */
static inline int fixture_fake_mem_available(const char *path, uint64_t bytes) {
  FILE *fp = fopen(path, "w");
  if (!fp) return 0;
  fprintf(fp, "MemTotal: 99999999 kB\nMemAvailable: %llu kB\n",
          (unsigned long long)(bytes / 1024));
  fclose(fp);
  mxl_mem_available_path_for_tests(path);
  return 1;
}

static inline void fixture_close(model_fixture *f) {
  mxl_engine_destroy(f->engine);
  mxl_backend_destroy(f->be);
  mxl_model_close(f->model);
  if (f->dir[0]) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", f->dir);
  }
  memset(f, 0, sizeof *f);
}

#endif
