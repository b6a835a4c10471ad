/* Private to repo/tiny*.c: the deterministic weight generator of
 * `mxlora tiny`, a tensor source for the layout writer
 * (model/layout_writer.h).
 *
 * Every value is a pure function of (seed, tensor, layer, index) — a
 * counter-based hash, no sequential RNG state — so each layout can emit any
 * slice in its own order (metal's per-expert interleaving, its permuted q/k
 * rows, original's fused qkv) and all layouts hold identical weights. */
#ifndef MXL_REPO_TINY_H
#define MXL_REPO_TINY_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/mxfp4.h"
#include "model/checkpoint.h"
#include "model/layout_writer.h"
#include "mxlora.h"

/* One expert tensor (all experts of a layer) encoded once and kept, so the
 * blocks and scales of every layout come from a single encoding. */
typedef struct mxl_tiny_encoded {
  mxl_tensor_kind kind; /* MXL_T_GU_BLOCKS or MXL_T_DOWN_BLOCKS */
  int layer;
  uint8_t *blocks, *scales;
} mxl_tiny_encoded;

enum { MXL_TINY_CACHE_BUDGET = 256 << 20 }; /* bytes of encoded experts kept */

typedef struct mxl_tiny_gen {
  const mxl_config *c;
  uint64_t seed;
  /* 1: expert codes and scales are drawn directly (full-size shapes);
   * 0: expert weights are drawn as floats and encoded by the codec. */
  int direct_mxfp4;
  /* Codec statistics: every cached tensor counts once; tensors too large to
   * cache are encoded row by row and count while collect_stats is set (one
   * layout's pass). */
  int collect_stats;
  mxl_mxfp4_error_stats stats;
  mxl_tiny_encoded *cache;
  int n_cache;
  size_t cache_bytes;
} mxl_tiny_gen;

void mxl_tiny_gen_free(mxl_tiny_gen *g);

/* The generator as a tensor source: bf16 values of any tensor (QKV kinds
 * map onto q, k and v), MXFP4 blocks and scales (bias 127). */
mxl_tensor_source mxl_tiny_source(mxl_tiny_gen *g);

/* The built-in English and Russian text the small vocabulary is learnt from. */
extern const char mxl_tiny_corpus[];

#endif
