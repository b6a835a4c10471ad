/* The one writer of the published checkpoint layouts: HF root and original/
 * safetensors (sharded like the published repos, with the shard index and
 * original/dtypes.json) and metal/model.bin exactly as create-local-model.py
 * lays it out (docs/gpt-oss.md §4).
 *
 * The writer knows names, shapes, order, sharding and byte layout; the
 * values come from a tensor source. The tiny generator (repo/tiny_gen.c) is
 * one source, "base model + merged adapter deltas" (adapters/merge.c)
 * another. Everything is streamed in MXL_LAYOUT_CHUNK pieces, so memory
 * stays bounded whatever the model size. */
#ifndef MXL_MODEL_LAYOUT_WRITER_H
#define MXL_MODEL_LAYOUT_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "model/checkpoint.h"
#include "mxlora.h"

/* Where the values come from. Ranges index the flattened tensor in the
 * catalogue's HF/original shapes, with two conventions:
 *   - the fused qkv kinds (MXL_T_QKV_W, MXL_T_QKV_B) are q, k then v rows;
 *   - the dense expert kinds (MXL_T_GU_W, MXL_T_DOWN_W) are asked for in
 *     the [E, out, in] orientation of original/ whatever the layout (the
 *     writer transposes them for the HF layout).
 * Both return MXL_OK or an error with its message set. */
typedef struct mxl_tensor_source {
  void *self;
  mxl_status (*fill_bf16)(void *self, mxl_tensor_kind kind, int layer, int64_t start,
                          int64_t count, uint16_t *out);
  /* MXFP4 blocks ([E, rows, cols/32, 16]) or scales ([E, rows, cols/32],
   * bias 127) bytes. */
  mxl_status (*fill_u8)(void *self, mxl_tensor_kind kind, int layer, int64_t start,
                        int64_t count, uint8_t *out);
} mxl_tensor_source;

enum { MXL_LAYOUT_CHUNK = 4 << 20 };
#define MXL_LAYOUT_DEFAULT_SHARD 4800000000ull /* the HF converter's cap */

typedef struct mxl_layout_writer {
  const mxl_config *c;
  mxl_tensor_source src;
  int dense_experts;        /* 1: experts as bf16 tensors (MXL_T_GU_W, MXL_T_DOWN_W) */
  mxl_progress_fn progress; /* may be NULL: (user, file, bytes done, bytes total) */
  void *user;
  double done, total;       /* bytes; the caller sets total */
  uint8_t *buf;             /* MXL_LAYOUT_CHUNK bytes, the caller's */
} mxl_layout_writer;

/* HF root or original/ weights into dir (and, for original/, dtypes.json).
 * shard_bytes 0 = the published default: HF shards at 4.8e9 bytes,
 * original/ one file. A shard index is written when there are several. */
mxl_status mxl_layout_write_safetensors(mxl_layout_writer *w, const char *dir,
                                        mxl_layout layout, uint64_t shard_bytes);
/* Total tensor bytes of a safetensors layout (for progress). */
uint64_t mxl_layout_safetensors_bytes(const mxl_config *c, mxl_layout layout,
                                      int dense_experts);
/* metal/model.bin with the given tokenizer section (from its 16-byte
 * header); MXFP4 experts only. */
mxl_status mxl_layout_write_metal(mxl_layout_writer *w, const char *path,
                                  const uint8_t *tokenizer, size_t tokenizer_size);

/* Writes `text` (a NUL-terminated string, freed here; NULL means out of
 * memory) to dir/name atomically. */
mxl_status mxl_write_text_file(const char *dir, const char *name, char *text);

#endif
