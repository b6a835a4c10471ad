/* Shared by the parity tests (test_hf_parity.c, test_peft_parity.c): reading
 * the fixtures that transformers / PEFT wrote (tools/gen_forward_fixtures.py,
 * tools/gen_peft_fixtures.py), regenerating the very checkpoint they were
 * computed on, and error statistics.
 *
 * A fixture records how its checkpoint was made (metadata "preset", "seed",
 * "sets" = ";"-joined `--set` items) and the sha256 of the checkpoint's
 * model.safetensors. The test writes the checkpoint again with
 * mxl_tiny_write and refuses to compare anything when the bytes differ: a
 * changed tiny generator needs the fixtures regenerated, not looser
 * tolerances. */
#ifndef MXL_TESTS_PARITY_UTIL_H
#define MXL_TESTS_PARITY_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/sha256.h"
#include "core/status.h"
#include "model/safetensors.h"
#include "mxlora.h"

#define PARITY_DIR MXL_SOURCE_DIR "/tests/fixtures/parity/"

enum { PARITY_MAX_SETS = 16 };

/* A temporary folder holding a regenerated checkpoint. */
typedef struct parity_ckpt {
  char dir[64];
} parity_ckpt;

static inline const char *parity_meta(const mxl_safetensors *fx, const char *key) {
  const char *v = mxl_safetensors_metadata(fx, key);
  return v ? v : "";
}

/* Writes the fixture's checkpoint in `layout` ("hf" or "all") into a fresh
 * temporary folder and checks its model.safetensors against the recorded
 * sha256. `script` names the generator to rerun when they differ. */
static inline mxl_status parity_checkpoint(const mxl_safetensors *fx, const char *layout,
                                           const char *script, parity_ckpt *ck) {
  memset(ck, 0, sizeof *ck);
  snprintf(ck->dir, sizeof ck->dir, "/tmp/mxl_parity_XXXXXX");
  if (!mkdtemp(ck->dir)) return mxl_errorf(MXL_ERR_IO, "mkdtemp failed");
  char sets[512];
  snprintf(sets, sizeof sets, "%s", parity_meta(fx, "sets"));
  const char *items[PARITY_MAX_SETS];
  int n = 0;
  for (char *tok = strtok(sets, ";"); tok && n < PARITY_MAX_SETS; tok = strtok(NULL, ";"))
    items[n++] = tok;
  mxl_tiny_options opt = {0};
  opt.preset = parity_meta(fx, "preset");
  opt.layout = layout;
  opt.seed = strtoull(parity_meta(fx, "seed"), NULL, 10);
  opt.set = items;
  opt.n_set = n;
  MXL_TRY(mxl_tiny_write(ck->dir, &opt, NULL, NULL));
  char path[128], hex[MXL_SHA256_HEX_SIZE];
  uint8_t digest[MXL_SHA256_SIZE];
  snprintf(path, sizeof path, "%s/model.safetensors", ck->dir);
  MXL_TRY(mxl_sha256_file(path, digest));
  mxl_sha256_hex(digest, hex);
  if (strcmp(hex, parity_meta(fx, "sha256")) != 0)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "the tiny checkpoint (seed %s, sets \"%s\") has sha256 %s but the fixture "
                      "was computed on %s: the generator changed; rerun %s",
                      parity_meta(fx, "seed"), parity_meta(fx, "sets"), hex,
                      parity_meta(fx, "sha256"), script);
  return MXL_OK;
}

static inline void parity_checkpoint_remove(parity_ckpt *ck) {
  if (!ck->dir[0]) return;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", ck->dir);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", ck->dir);
  ck->dir[0] = 0;
}

/* A copy of fixture tensor `name` (F32 or I32, 4-byte elements), which must
 * hold `count` elements; NULL (with a message) otherwise. Free with free(). */
static inline void *parity_tensor(const mxl_safetensors *fx, const char *name, size_t count) {
  const mxl_st_tensor *t = mxl_safetensors_find(fx, name);
  if (!t) {
    mxl_errorf(MXL_ERR_FORMAT, "fixture: tensor %s missing", name);
    return NULL;
  }
  if ((t->dtype != MXL_DT_F32 && t->dtype != MXL_DT_I32) || t->nbytes != count * 4) {
    mxl_errorf(MXL_ERR_FORMAT, "fixture: tensor %s: %s, %zu bytes, expected %zu 4-byte values",
               name, mxl_dtype_name(t->dtype), t->nbytes, count);
    return NULL;
  }
  void *p = malloc(t->nbytes);
  if (p) memcpy(p, t->data, t->nbytes);
  return p;
}

/* Differences of `got` against the oracle `want`: the largest absolute
 * difference, the largest |want| (the scale), and the largest element-wise
 * relative difference |got − want| / (|want| + floor), where floor keeps
 * entries near zero from dominating. */
typedef struct parity_err {
  double max_abs, scale, max_rel;
} parity_err;

static inline parity_err parity_compare(const float *got, const float *want, size_t n,
                                        double floor) {
  parity_err e = {0, 0, 0};
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)got[i] - want[i]);
    e.max_abs = fmax(e.max_abs, d);
    e.scale = fmax(e.scale, fabs((double)want[i]));
    e.max_rel = fmax(e.max_rel, d / (fabs((double)want[i]) + floor));
  }
  if (isnan(e.max_abs)) e.max_abs = e.max_rel = INFINITY;
  for (size_t i = 0; i < n; i++)
    if (!isfinite(got[i])) e.max_abs = e.max_rel = INFINITY;
  return e;
}

/* max_abs relative to the scale: the figure the tolerances below bound. */
static inline double parity_rel(parity_err e) {
  return e.scale > 0 ? e.max_abs / e.scale : e.max_abs;
}

#endif
