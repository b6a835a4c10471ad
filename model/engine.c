#include "model/engine.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/bf16.h"
#include "core/fileio.h"
#include "core/hugemem.h"
#include "core/status.h"
#include "model/safetensors.h"

void mxl_yarn_table(const mxl_config *c, float *inv_freq, float *concentration) {
  const int half = c->head_dim / 2;
  const double theta = c->rope_theta, factor = c->rope_factor;
  const double two_pi = 2.0 * 3.14159265358979323846;
  /* Correction range (docs/gpt-oss.md §5.3), without truncation. */
  double low = half * log(c->initial_context / (c->rope_beta_fast * two_pi)) / log(theta);
  double high = half * log(c->initial_context / (c->rope_beta_slow * two_pi)) / log(theta);
  if (low < 0) low = 0;
  if (high > c->head_dim - 1) high = c->head_dim - 1;
  if (high == low) high += 0.001;
  for (int i = 0; i < half; i++) {
    double base_freq = pow(theta, 2.0 * i / c->head_dim);
    double extrapolated = 1.0 / base_freq;
    double interpolated = factor > 1 ? 1.0 / (factor * base_freq) : extrapolated;
    double ramp = (i - low) / (high - low);
    ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
    inv_freq[i] = (float)(interpolated * ramp + extrapolated * (1.0 - ramp));
  }
  *concentration = factor > 1 ? (float)(0.1 * log(factor) + 1.0) : 1.0f;
}

/* ---------------------------------------------------------------- device copies */

/* The files the weights point into: metal's mapping, or the safetensors
 * shards. Nothing else holds weights. */
static int weight_files(const mxl_model *m, const mxl_mapping **files, int cap) {
  int n = 0;
  for (int i = 0; i < m->n_mappings && n < cap; i++) files[n++] = &m->mappings[i];
  for (int i = 0; m->st && i < m->st->n_files && n < cap; i++) files[n++] = &m->st->files[i];
  return n;
}

/* Weights a device backend leaves in host memory: the token embedding
 * (1.08 GiB on gpt-oss; the training step and the forward gather the rows
 * of their tokens on the host and upload only those, mxl_engine_embed)
 * unless it is also the unembedding, and the unembedding when the options
 * ask (a training step's loss uploads it chunk by chunk, ops.h). Tensors
 * under MXL_HOST_TENSOR_MIN bytes stay on the device. */
enum { MXL_DEVICE_PIECE_ALIGN = 256, MXL_HOST_TENSOR_MIN = 4 * MXL_DEVICE_PIECE_ALIGN };

typedef struct host_tensors {
  const uint8_t *p[2];
  size_t bytes[2];
  int n;
  int embed, unembed; /* which ones are there */
} host_tensors;

static size_t bf16_bytes(const mxl_bf16_weight *w) {
  return (size_t)w->rows * (size_t)w->cols * sizeof(uint16_t);
}

static host_tensors host_tensors_of(const mxl_model *m, int unembed_on_host) {
  host_tensors h = {{NULL, NULL}, {0, 0}, 0, 0, 0};
  const mxl_bf16_weight *emb = &m->w.embed, *un = &m->w.unembed;
  if (emb->w && emb->w != un->w && bf16_bytes(emb) >= MXL_HOST_TENSOR_MIN) {
    h.p[h.n] = (const uint8_t *)emb->w, h.bytes[h.n++] = bf16_bytes(emb);
    h.embed = 1;
  }
  /* its bias (none on gpt-oss) would stay on the device: not worth a piece */
  if (unembed_on_host && un->w && !un->bias && bf16_bytes(un) >= MXL_HOST_TENSOR_MIN) {
    h.p[h.n] = (const uint8_t *)un->w, h.bytes[h.n++] = bf16_bytes(un);
    h.unembed = 1;
  }
  return h;
}

/* A file's device copy: up to three pieces [from, to) around the host
 * tensors in it, each piece after a host tensor starting at its end rounded
 * down to the device alignment, so that every tensor keeps its alignment
 * (offsets are kept modulo MXL_DEVICE_PIECE_ALIGN). */
typedef struct file_pieces {
  size_t from[3], to[3];
  int n;
} file_pieces;

static file_pieces pieces_of(const mxl_mapping *file, const host_tensors *h) {
  size_t lo[2], hi[2];
  int k = 0;
  for (int i = 0; i < h->n; i++)
    if (h->p[i] >= file->data && h->p[i] + h->bytes[i] <= file->data + file->size) {
      lo[k] = (size_t)(h->p[i] - file->data);
      hi[k] = lo[k] + h->bytes[i];
      k++;
    }
  if (k == 2 && lo[1] < lo[0]) {
    size_t t = lo[0];
    lo[0] = lo[1], lo[1] = t;
    t = hi[0], hi[0] = hi[1], hi[1] = t;
  }
  file_pieces fp = {{0}, {0}, 0};
  size_t cursor = 0;
  for (int i = 0; i <= k; i++) {
    size_t end = i < k ? lo[i] : file->size;
    if (end > cursor) {
      fp.from[fp.n] = cursor;
      fp.to[fp.n++] = end;
    }
    if (i < k) cursor = hi[i] & ~(size_t)(MXL_DEVICE_PIECE_ALIGN - 1);
  }
  return fp;
}

static size_t pieces_bytes(const file_pieces *fp) {
  size_t bytes = 0;
  for (int i = 0; i < fp->n; i++) bytes += fp->to[i] - fp->from[i];
  return bytes;
}

typedef struct rebase {
  const mxl_mapping **files;
  void **device; /* [3 n]: each file's pieces */
  const file_pieces *pieces;
  int n;
  int missed; /* a pointer outside every file: a bug in the weights view */
} rebase;

static const void *rebased(rebase *r, const void *p) {
  if (!p) return NULL;
  const uint8_t *b = p;
  for (int i = 0; i < r->n; i++) {
    if (b < r->files[i]->data || b >= r->files[i]->data + r->files[i]->size) continue;
    size_t off = (size_t)(b - r->files[i]->data);
    const file_pieces *fp = &r->pieces[i];
    for (int j = 0; j < fp->n; j++)
      if (off >= fp->from[j] && off < fp->to[j])
        return (uint8_t *)r->device[3 * i + j] + (off - fp->from[j]);
    break; /* in a host tensor: nothing on the device points there */
  }
  r->missed = 1;
  return p;
}

static void rebase_bf16(rebase *r, mxl_bf16_weight *w) {
  w->w = rebased(r, w->w);
  w->bias = rebased(r, w->bias);
}

static void rebase_mxfp4(rebase *r, mxl_mxfp4_weight *w) {
  w->blocks = rebased(r, w->blocks);
  w->scales = rebased(r, w->scales);
  w->bias = rebased(r, w->bias);
}

static void rebase_layer(rebase *r, mxl_layer_weights *l) {
  l->attn_norm = rebased(r, l->attn_norm);
  l->sinks = rebased(r, l->sinks);
  l->mlp_norm = rebased(r, l->mlp_norm);
  rebase_bf16(r, &l->q), rebase_bf16(r, &l->k), rebase_bf16(r, &l->v), rebase_bf16(r, &l->o);
  rebase_bf16(r, &l->router);
  rebase_mxfp4(r, &l->gate_up), rebase_mxfp4(r, &l->down);
}

/* The copy's progress across the files, for mxl_weight_options.progress. */
typedef struct copy_progress {
  const mxl_weight_options *o;
  size_t done, total;
} copy_progress;

static void on_copied(void *user, size_t bytes) {
  copy_progress *c = user;
  c->done += bytes;
  if (c->o->progress)
    c->o->progress(c->o->progress_user, "weights", (double)c->done, (double)c->total);
}

/* Refuses a copy that MemAvailable cannot hold, before any of it is made:
 * running out halfway would end in the OOM killer, not an error. Sets
 * *drop_cache when MemAvailable cannot hold both the copy and the files'
 * page cache: the cache is then dropped behind the copy, so that the copy
 * takes its 2 MB pages from the memory the cache gives back (the kernel
 * would reclaim it anyway, but leaving the copy fragments: beside a cached
 * 20b checkpoint on 24 GB, 15 % of the copy fell back to 4 KB pages). */
static mxl_status check_room(const mxl_mapping **files, int n, size_t *total, int *drop_cache) {
  size_t pages = 0;
  *total = 0;
  for (int i = 0; i < n; i++) *total += files[i]->size, pages += mxl_huge_round(files[i]->size);
  uint64_t avail = 0;
  MXL_TRY(mxl_mem_available(&avail));
  if (pages > avail)
    return mxl_errorf(MXL_ERR_MEMORY,
                      "--no-mmap: copying the weights needs %.2f GB but MemAvailable is %.2f GB "
                      "(%s); run without --no-mmap to read the mapped files in place",
                      pages / 1e9, avail / 1e9, files[0]->path);
  *drop_cache = (uint64_t)pages + *total > avail;
  return MXL_OK;
}

/* Sets e->huge_2mb to what the process's 2 MB pages grew by over the copy
 * (AnonHugePages; `before` when it began), and warns when less than 90 % of
 * the copy's `pages` bytes got 2 MB pages: the rest streams slower. */
static void note_huge_share(mxl_engine *e, uint64_t before, size_t pages) {
  uint64_t after = 0;
  if (mxl_anon_huge_bytes(&after) != MXL_OK) { /* no smaps_rollup: nothing to say */
    mxl_error_clear();
    return;
  }
  e->huge_2mb = after > before ? (size_t)(after - before) : 0;
  if (e->huge_2mb < pages / 10 * 9)
    mxl_warnf("--no-mmap: only %.2f of the %.2f GB of weights copied are on 2 MB pages, the rest "
              "on 4 KB pages, which decode reads slower (transparent huge pages off in "
              "/sys/kernel/mm/transparent_hugepage/enabled, or memory fragmented)",
              e->huge_2mb / 1e9, pages / 1e9);
}

/* Uploads bytes [from, to) of `file` into a new device piece. */
static mxl_status upload_piece(mxl_engine *e, const mxl_mapping *file, size_t from, size_t to,
                               void **out) {
  *out = e->ops->alloc(e->be, to - from);
  if (!*out)
    return mxl_errorf(MXL_ERR_MEMORY, "%s: cannot allocate %zu bytes of %s memory", file->path,
                      to - from, e->ops->name);
  e->ops->upload(e->be, *out, file->data + from, to - from);
  return MXL_OK;
}

/* Copies every weight file and points e->w into the copies: on a backend
 * without host memory to device memory, less the host tensors (their rows
 * are used from the mapping); with `huge` (--no-mmap on a backend with host
 * memory) whole, into 2 MB pages. */
static mxl_status copy_weights(mxl_engine *e, int huge, int unembed_on_host,
                               const mxl_weight_options *o) {
  const mxl_mapping *files[64];
  file_pieces pieces[64];
  int n = weight_files(e->model, files, 64);
  size_t total = 0;
  int drop_cache = 0;
  if (huge && n > 0) MXL_TRY(check_room(files, n, &total, &drop_cache));
  copy_progress progress = {o, 0, total};
  /* The files are read anew with pread, which copies from the page cache in
   * the kernel: through the mapping, each 4 KB page would first be faulted
   * in (about 1 GB/s here). */
  const mxl_huge_read how = {0, drop_cache, on_copied, &progress};
  uint64_t anon_huge0 = 0;
  size_t pages = 0;
  for (int i = 0; huge && i < n; i++) pages += mxl_huge_round(files[i]->size);
  if (huge && mxl_anon_huge_bytes(&anon_huge0) != MXL_OK) mxl_error_clear();
  /* 2 MB pages are host memory: every tensor is copied, none stays behind */
  const host_tensors none = {{NULL, NULL}, {0, 0}, 0, 0, 0};
  host_tensors h = huge ? none : host_tensors_of(e->model, unembed_on_host);
  e->device_files = calloc(3 * (size_t)n, sizeof *e->device_files);
  e->device_layers = malloc(e->cfg->n_layers * sizeof *e->device_layers);
  if (huge) e->huge_bytes = calloc(3 * (size_t)n, sizeof *e->huge_bytes);
  if (!e->device_files || !e->device_layers || (huge && !e->huge_bytes))
    return mxl_errorf(MXL_ERR_MEMORY, "engine: out of memory");
  e->n_device_files = 3 * n;
  for (int i = 0; i < n; i++) {
    pieces[i] = pieces_of(files[i], &h);
    if (huge) { /* one piece: the whole file */
      e->huge_bytes[3 * i] = files[i]->size; /* what mxl_engine_destroy frees */
      MXL_TRY(mxl_huge_read_file(files[i]->path, files[i]->size, &how, &e->device_files[3 * i]));
      continue;
    }
    for (int j = 0; j < pieces[i].n; j++)
      MXL_TRY(upload_piece(e, files[i], pieces[i].from[j], pieces[i].to[j],
                           &e->device_files[3 * i + j]));
  }
  if (huge) note_huge_share(e, anon_huge0, pages);
  rebase r = {files, e->device_files, pieces, n, 0};
  memcpy(e->device_layers, e->w.layers, e->cfg->n_layers * sizeof *e->device_layers);
  e->w.layers = e->device_layers;
  for (int l = 0; l < e->cfg->n_layers; l++) rebase_layer(&r, &e->w.layers[l]);
  e->w.final_norm = rebased(&r, e->w.final_norm);
  /* the host tensors keep the mapping's pointers */
  e->embed_on_host = h.embed;
  if (!h.embed) rebase_bf16(&r, &e->w.embed);
  e->w.unembed.host = h.unembed;
  if (!h.unembed) rebase_bf16(&r, &e->w.unembed);
  if (r.missed)
    return mxl_errorf(MXL_ERR_STATE, "engine: a weight lies outside the model's files");
  return e->ops->sync(e->be);
}

/* ---------------------------------------------------------------- op table */

typedef void (*any_op)(void);
#define OP(name) {#name, (any_op)ops->name}

/* Every op the model code may call, so that a backend with a hole fails
 * here, naming the op, instead of crashing on a NULL call mid-step. */
static mxl_status check_ops(const mxl_ops *ops) {
  const struct {
    const char *name;
    any_op fn;
  } table[] = {
      OP(destroy), OP(alloc), OP(free), OP(upload), OP(download), OP(copy), OP(zero), OP(sync),
      OP(embed), OP(rmsnorm), OP(matmul_bf16), OP(gemm_f32), OP(rope), OP(attention),
      OP(router_topk), OP(moe_plan), OP(moe_gather), OP(mxfp4_matmul), OP(swiglu),
      OP(moe_combine), OP(add), OP(dropout), OP(unembed_xent), OP(lora), OP(lora_bwd),
      OP(rmsnorm_bwd), OP(matmul_bf16_dx), OP(attention_bwd), OP(router_bwd), OP(moe_gather_bwd),
      OP(mxfp4_matmul_dx), OP(swiglu_bwd), OP(moe_combine_bwd), OP(adamw), OP(sum_squares),
  };
  enum { N_OPS = sizeof table / sizeof table[0] };
  /* A new op in kernels/ops.h must be listed above (docs/adding-an-op.md). */
  _Static_assert(sizeof(mxl_ops) == offsetof(mxl_ops, destroy) + N_OPS * sizeof(any_op),
                 "mxl_ops has an op that check_ops() in model/engine.c does not list");
  for (int i = 0; i < N_OPS; i++)
    if (!table[i].fn)
      return mxl_errorf(MXL_ERR_UNSUPPORTED, "backend '%s' lacks the op '%s'",
                        ops->name ? ops->name : "?", table[i].name);
  return MXL_OK;
}

#undef OP

/* ---------------------------------------------------------------- engine */

size_t mxl_engine_device_bytes(const mxl_model *model, int unembed_on_host) {
  const mxl_mapping *files[64];
  int n = weight_files(model, files, 64);
  host_tensors h = host_tensors_of(model, unembed_on_host);
  size_t bytes = (size_t)(model->config.head_dim / 2) * sizeof(float);
  for (int i = 0; i < n; i++) {
    file_pieces fp = pieces_of(files[i], &h);
    bytes += pieces_bytes(&fp);
  }
  return bytes;
}

size_t mxl_engine_host_bytes(const mxl_model *model, int unembed_on_host, int which) {
  host_tensors h = host_tensors_of(model, unembed_on_host);
  size_t bytes = 0;
  for (int i = 0; i < h.n; i++) {
    int is_embed = h.p[i] == (const uint8_t *)model->w.embed.w;
    if (which == (is_embed ? 0 : 1)) bytes += h.bytes[i];
  }
  return bytes;
}

mxl_status mxl_engine_embed(mxl_engine *e, float *x, const int32_t *ids_host,
                            const int32_t *ids, int n) {
  const size_t H = (size_t)e->cfg->hidden;
  if (!e->embed_on_host) {
    e->ops->embed(e->be, x, e->w.embed.w, ids, n, (int)H);
    return MXL_OK;
  }
  if ((size_t)n * H > e->embed_rows_cap) {
    float *rows = realloc(e->embed_rows, (size_t)n * H * sizeof(float));
    if (!rows) return mxl_errorf(MXL_ERR_MEMORY, "embedding %d tokens: out of host memory", n);
    e->embed_rows = rows;
    e->embed_rows_cap = (size_t)n * H;
  }
  /* bf16 to fp32 is exact: the same values the device embed op writes. */
  for (int t = 0; t < n; t++) {
    const uint16_t *row = e->w.embed.w + (size_t)ids_host[t] * H;
    for (size_t j = 0; j < H; j++) e->embed_rows[(size_t)t * H + j] = mxl_bf16_to_f32(row[j]);
  }
  /* upload has read the host rows when it returns (ops.h), so they may be
   * reused by the next call */
  e->ops->upload(e->be, x, e->embed_rows, (size_t)n * H * sizeof(float));
  return MXL_OK;
}

mxl_status mxl_engine_create(const mxl_model *model, mxl_backend *be, mxl_engine **out) {
  return mxl_engine_create_opts(model, be, NULL, out);
}

mxl_status mxl_engine_create_with(const mxl_model *model, mxl_backend *be,
                                  const mxl_weight_options *weights, mxl_engine **out) {
  mxl_engine_options o = {.weights = weights};
  return mxl_engine_create_opts(model, be, &o, out);
}

mxl_status mxl_engine_create_opts(const mxl_model *model, mxl_backend *be,
                                  const mxl_engine_options *opts, mxl_engine **out) {
  const mxl_weight_options *weights = opts ? opts->weights : NULL;
  *out = NULL;
  MXL_TRY(check_ops(be->ops));
  mxl_engine *e = calloc(1, sizeof *e);
  if (!e) return mxl_errorf(MXL_ERR_MEMORY, "engine: out of memory");
  e->model = model;
  e->cfg = &model->config;
  e->be = be;
  e->ops = be->ops;
  e->w = model->w;
  int half = e->cfg->head_dim / 2;
  float table[512];
  if (half > (int)(sizeof table / sizeof table[0])) {
    free(e);
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "head_dim %d is larger than supported (1024)",
                      model->config.head_dim);
  }
  mxl_yarn_table(e->cfg, table, &e->concentration);
  e->inv_freq = e->ops->alloc(be, half * sizeof(float));
  if (!e->inv_freq) {
    free(e);
    return mxl_errorf(MXL_ERR_MEMORY, "engine: cannot allocate the RoPE table");
  }
  e->ops->upload(be, e->inv_freq, table, half * sizeof(float));
  int huge = weights && weights->no_mmap && be->ops->host_memory;
  if (!be->ops->host_memory || huge) {
    mxl_status st = copy_weights(e, huge, opts && opts->unembed_on_host, weights);
    if (st != MXL_OK) {
      mxl_engine_destroy(e);
      return st;
    }
  }
  *out = e;
  return MXL_OK;
}

void mxl_engine_destroy(mxl_engine *e) {
  if (!e) return;
  e->ops->free(e->be, e->inv_freq);
  for (int i = 0; i < e->n_device_files; i++)
    if (e->huge_bytes) {
      if (e->device_files[i]) mxl_huge_free(e->device_files[i], e->huge_bytes[i]);
    } else {
      e->ops->free(e->be, e->device_files[i]);
    }
  free(e->huge_bytes);
  free(e->device_files);
  free(e->device_layers);
  free(e->embed_rows);
  free(e);
}

/* ---------------------------------------------------------------- resident pages */

/* The advice for [p, p + n) when it lies in one mapped file. */
typedef void (*page_advice)(const void *p, size_t n);

static void advise_mapped(const mxl_mapping **files, int n_files, page_advice advise,
                          const void *p, size_t n) {
  const uint8_t *b = p;
  for (int i = 0; b && i < n_files; i++)
    if (b >= files[i]->data && b + n <= files[i]->data + files[i]->size) {
      advise(p, n);
      return;
    }
}

static void advise_mx(const mxl_mapping **files, int n_files, page_advice advise,
                      const mxl_mxfp4_weight *w) {
  size_t row_blocks = (size_t)(w->cols / 32), E = (size_t)w->n_experts, rows = (size_t)w->rows;
  advise_mapped(files, n_files, advise, w->blocks,
                (E - 1) * w->blocks_stride + rows * row_blocks * 16);
  advise_mapped(files, n_files, advise, w->scales, (E - 1) * w->scales_stride + rows * row_blocks);
}

/* The advice on layer `layer`'s projection weights (-1: the unembedding). */
static void advise_layer(const mxl_engine *e, int layer, page_advice advise) {
  if (!e->ops->host_memory) return;
  const mxl_mapping *files[64];
  int n = weight_files(e->model, files, 64);
  if (layer < 0) {
    advise_mapped(files, n, advise, e->w.unembed.w,
                  (size_t)e->w.unembed.rows * e->w.unembed.cols * 2);
    return;
  }
  const mxl_layer_weights *w = &e->w.layers[layer];
  advise_mx(files, n, advise, &w->gate_up);
  advise_mx(files, n, advise, &w->down);
  const mxl_bf16_weight *bf[4] = {&w->q, &w->k, &w->v, &w->o};
  for (int i = 0; i < 4; i++)
    advise_mapped(files, n, advise, bf[i]->w, (size_t)bf[i]->rows * bf[i]->cols * 2);
}

void mxl_engine_drop_pages(const mxl_engine *e, int layer) {
  advise_layer(e, layer, mxl_mapping_drop_pages);
}

void mxl_engine_map_pages(const mxl_engine *e, int layer) {
  advise_layer(e, layer, mxl_mapping_map_pages);
}

mxl_status mxl_buffer_reserve(mxl_backend *be, mxl_buffer *buf, size_t bytes) {
  if (buf->bytes >= bytes) return MXL_OK;
  be->ops->free(be, buf->ptr);
  buf->ptr = be->ops->alloc(be, bytes);
  buf->bytes = buf->ptr ? bytes : 0;
  if (!buf->ptr) return mxl_errorf(MXL_ERR_MEMORY, "cannot allocate %zu bytes of scratch", bytes);
  return MXL_OK;
}

void mxl_buffer_release(mxl_backend *be, mxl_buffer *buf) {
  if (buf->ptr) be->ops->free(be, buf->ptr);
  buf->ptr = NULL;
  buf->bytes = 0;
}
