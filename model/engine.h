/* An engine binds a loaded model to a compute backend: the weights as the
 * backend sees them, the YaRN frequency table, and reusable scratch memory.
 * Inference (model/forward.h) and training (model/train_step.h) both run on it. */
#ifndef MXL_MODEL_ENGINE_H
#define MXL_MODEL_ENGINE_H

#include "kernels/ops.h"
#include "model/model.h"

typedef struct mxl_engine {
  const mxl_model *model;
  const mxl_config *cfg;
  mxl_backend *be;
  const mxl_ops *ops;
  mxl_weights w;         /* backend-resident view (the mapping itself on CPU backends) */
  float *inv_freq;       /* [d/2] YaRN inverse frequencies, backend memory */
  float concentration;   /* YaRN attention factor applied to cos and sin */
  /* Backends without host memory (CUDA) get a device copy of every mapped
   * file (less the host tensors: pieces, 3 per file), and w points into
   * those copies; so does a CPU backend under --no-mmap, whole files in 2 MB
   * pages (huge_bytes: each copy's size, else NULL). */
  void **device_files;   /* [n_device_files] pieces of the files (NULL: empty) */
  size_t *huge_bytes;    /* [n_device_files] or NULL */
  size_t huge_2mb;       /* bytes of those copies found on 2 MB pages after the copy */
  int n_device_files;
  mxl_layer_weights *device_layers; /* [n_layers] the rebased layer views */
  /* 1: the token embedding stays in the host mapping (device backends):
   * mxl_engine_embed gathers a step's rows on the host and uploads them. */
  int embed_on_host;
  float *embed_rows;     /* host [embed_rows_cap] staging of gathered rows */
  size_t embed_rows_cap;
} mxl_engine;

/* The YaRN table of docs/gpt-oss.md §5.3, computed in double: inv_freq [d/2] and the
 * concentration 0.1·ln(factor) + 1 (1 when factor <= 1). */
void mxl_yarn_table(const mxl_config *c, float *inv_freq, float *concentration);

mxl_status mxl_engine_create(const mxl_model *model, mxl_backend *be, mxl_engine **out);
/* mxl_engine_create_opts with only `weights` (may be NULL): on a backend with
 * host memory, no_mmap copies the weight files into 2 MB pages. */
mxl_status mxl_engine_create_with(const mxl_model *model, mxl_backend *be,
                                  const mxl_weight_options *weights, mxl_engine **out);

typedef struct mxl_engine_options {
  /* A backend without host memory leaves the unembedding in host memory
   * (e->w.unembed.host): only the training step's loss (unembed_xent)
   * takes such a weight, uploading it chunk by chunk; an engine that
   * generates must keep it on the device (matmul_bf16 reads it there). */
  int unembed_on_host;
  const mxl_weight_options *weights; /* NULL: the defaults (mapped in place) */
} mxl_engine_options;

/* mxl_engine_create with options (NULL: the defaults, all 0). */
mxl_status mxl_engine_create_opts(const mxl_model *model, mxl_backend *be,
                                  const mxl_engine_options *opts, mxl_engine **out);

/* The backend bytes mxl_engine_create(_opts) allocates on a backend without
 * host memory: every weight file less the token embedding, which stays in
 * host memory (its rows are gathered per step), less the unembedding when
 * it stays there too, and the RoPE table (`mxlora plan`). */
size_t mxl_engine_device_bytes(const mxl_model *model, int unembed_on_host);
/* The bytes left in host memory there: which 0 the embedding, 1 the
 * unembedding. */
size_t mxl_engine_host_bytes(const mxl_model *model, int unembed_on_host, int which);

/* x [n, H] (backend memory) = the embedding rows of tokens ids_host [n]
 * (host) / ids [n] (the same ids in backend memory): the embed op where the
 * embedding is on the backend, else a gather on the host and one upload. */
mxl_status mxl_engine_embed(mxl_engine *e, float *x, const int32_t *ids_host,
                            const int32_t *ids, int n);
void mxl_engine_destroy(mxl_engine *e);

/* Drops layer `layer`'s projection weights (MXFP4 experts, bf16 q/k/v/o;
 * layer -1: the unembedding) from the process's resident set, on backends
 * that read the mapped files in place: a pass that reads the whole model
 * once (training) would otherwise keep all of it resident (13 GB for
 * gpt-oss-20b). The pages stay in the page cache and come back through
 * minor faults. Only ranges inside the mapped files are touched. */
void mxl_engine_drop_pages(const mxl_engine *e, int layer);
/* Maps the same pages back in one pass (instead of a page fault per 64 KB
 * as the ops touch them), before a pass over a dropped layer. */
void mxl_engine_map_pages(const mxl_engine *e, int layer);

/* A growable backend buffer, for scratch that is reused across calls. */
typedef struct mxl_buffer {
  void *ptr;
  size_t bytes;
} mxl_buffer;

/* Hands out 64-byte aligned pieces of one allocation. With base == NULL it
 * only counts, so the same code first sizes and then carves a block. */
typedef struct mxl_carver {
  char *base;
  size_t used;
} mxl_carver;

static inline void *mxl_carve(mxl_carver *c, size_t count, size_t elem_bytes) {
  size_t bytes = (count * elem_bytes + 63) & ~(size_t)63;
  void *p = c->base ? c->base + c->used : NULL;
  c->used += bytes;
  return p;
}

/* Ensures buf holds at least `bytes` (contents are not kept on growth). */
mxl_status mxl_buffer_reserve(mxl_backend *be, mxl_buffer *buf, size_t bytes);
void mxl_buffer_release(mxl_backend *be, mxl_buffer *buf);

#endif
