/* Private to model/tiny*.c: the deterministic weight generator and the
 * per-layout writers of `mxlora tiny`.
 *
 * Every value is a pure function of (seed, tensor, layer, index) — a
 * counter-based hash, no sequential RNG state — so each layout can emit any
 * slice in its own order (metal's per-expert interleaving, its permuted q/k
 * rows, original's fused qkv) and all layouts hold identical weights. */
#ifndef MXL_MODEL_TINY_H
#define MXL_MODEL_TINY_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/mxfp4.h"
#include "model/checkpoint.h"
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

/* bf16 values [start, start + count) of the flattened tensor `kind` of
 * `layer` in the HF/original shapes (QKV kinds map onto q, k and v). */
void mxl_tiny_fill_bf16(mxl_tiny_gen *g, mxl_tensor_kind kind, int layer, int64_t start,
                        int64_t count, uint16_t *out);
/* Bytes [start, start + count) of an MXFP4 blocks or scales tensor
 * ([E, rows, cols/32, 16] or [E, rows, cols/32]), scale bias 127. */
mxl_status mxl_tiny_fill_u8(mxl_tiny_gen *g, mxl_tensor_kind kind, int layer, int64_t start,
                            int64_t count, uint8_t *out);

/* Progress and chunk buffer shared by the writers. */
typedef struct mxl_tiny_writer {
  mxl_tiny_gen *gen;
  const mxl_config *c;
  mxl_progress_fn progress;
  void *user;
  double done, total;
  uint8_t *buf; /* MXL_TINY_CHUNK bytes */
} mxl_tiny_writer;

enum { MXL_TINY_CHUNK = 4 << 20 };
#define MXL_TINY_DEFAULT_SHARD 4800000000ull /* the HF converter's cap */

/* HF root or original/ weights (and, for original/, dtypes.json) into dir.
 * shard_bytes 0 = the default for the layout. */
mxl_status mxl_tiny_write_safetensors(mxl_tiny_writer *w, const char *dir, mxl_layout layout,
                                      uint64_t shard_bytes);
/* Writes `text` (a NUL-terminated string, freed here; NULL means out of
 * memory) to dir/name atomically. */
mxl_status mxl_tiny_write_text(const char *dir, const char *name, char *text);
/* Total tensor bytes of a safetensors layout (for progress). */
uint64_t mxl_tiny_safetensors_bytes(const mxl_config *c, mxl_layout layout);
/* metal/model.bin with the given tokenizer section (from its 16-byte header). */
mxl_status mxl_tiny_write_metal(mxl_tiny_writer *w, const char *path, const uint8_t *tokenizer,
                                size_t tokenizer_size);

/* The built-in English and Russian text the small vocabulary is learnt from. */
extern const char mxl_tiny_corpus[];

#endif
