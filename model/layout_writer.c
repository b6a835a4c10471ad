/* The layout writer (layout_writer.h): HF root and original/ safetensors,
 * original/dtypes.json and metal/model.bin, values from a tensor source. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bf16.h"
#include "core/bytes.h"
#include "core/fileio.h"
#include "core/status.h"
#include "model/layout_writer.h"

/* ------------------------------------------------------------ streaming */

typedef mxl_status (*sink_fn)(void *sink, const void *data, size_t n);

static mxl_status st_sink(void *sink, const void *data, size_t n) {
  return mxl_st_writer_write(sink, data, n);
}

static mxl_status file_sink(void *sink, const void *data, size_t n) {
  return mxl_atomic_file_write(sink, data, n);
}

static void report(mxl_layout_writer *w, const char *what, size_t n) {
  w->done += (double)n;
  if (w->progress) w->progress(w->user, what, w->done, w->total);
}

static int is_u8(mxl_tensor_kind k) {
  return k == MXL_T_GU_BLOCKS || k == MXL_T_GU_SCALES || k == MXL_T_DOWN_BLOCKS ||
         k == MXL_T_DOWN_SCALES;
}

/* Elements [start, start + count) of a logical tensor, through `sink`.
 * scale_add is added to every byte of a scales tensor (metal's +14). */
static mxl_status stream_range(mxl_layout_writer *w, mxl_tensor_kind kind, int layer,
                               int64_t start, int64_t count, int scale_add, sink_fn sink,
                               void *sinkp, const char *what) {
  const int u8 = is_u8(kind);
  const int64_t per_chunk = u8 ? MXL_LAYOUT_CHUNK : MXL_LAYOUT_CHUNK / 2;
  for (int64_t done = 0; done < count;) {
    int64_t n = count - done < per_chunk ? count - done : per_chunk;
    size_t bytes = (size_t)n * (u8 ? 1 : 2);
    if (u8) {
      MXL_TRY(w->src.fill_u8(w->src.self, kind, layer, start + done, n, w->buf));
      for (int64_t i = 0; scale_add && i < n; i++) {
        if (w->buf[i] > 255 - scale_add)
          return mxl_errorf(MXL_ERR_UNSUPPORTED,
                            "%s: layer %d: scale byte %u cannot be stored +%d", what, layer,
                            w->buf[i], scale_add);
        w->buf[i] = (uint8_t)(w->buf[i] + scale_add);
      }
    } else {
      MXL_TRY(w->src.fill_bf16(w->src.self, kind, layer, start + done, n,
                               (uint16_t *)(void *)w->buf));
    }
    MXL_TRY(sink(sinkp, w->buf, bytes));
    report(w, what, bytes);
    done += n;
  }
  return MXL_OK;
}

static int64_t elements(const mxl_tensor_desc *d) {
  int64_t n = 1;
  for (int i = 0; i < d->ndim; i++) n *= d->shape[i];
  return n;
}

/* ------------------------------------------------------------ safetensors */

/* A dense expert tensor in the HF orientation [E, in, out]: the source
 * gives each expert as [out, in]; one expert is held and transposed. */
static mxl_status stream_transposed(mxl_layout_writer *w, const mxl_tensor_desc *d,
                                    mxl_st_writer *sw, const char *path) {
  const int64_t E = d->shape[0], in = d->shape[1], out = d->shape[2];
  const size_t n = (size_t)(in * out);
  uint16_t *src = malloc(2 * n * sizeof *src);
  if (!src) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory for %s", path, d->name);
  uint16_t *dst = src + n;
  mxl_status st = MXL_OK;
  for (int64_t e = 0; e < E && st == MXL_OK; e++) {
    st = w->src.fill_bf16(w->src.self, d->kind, d->layer, e * (int64_t)n, (int64_t)n, src);
    if (st != MXL_OK) break;
    for (int64_t o = 0; o < out; o++)
      for (int64_t i = 0; i < in; i++) dst[i * out + o] = src[o * in + i];
    st = mxl_st_writer_write(sw, dst, n * sizeof *dst);
    if (st == MXL_OK) report(w, path, n * sizeof *dst);
  }
  free(src);
  return st;
}

uint64_t mxl_layout_safetensors_bytes(const mxl_config *c, mxl_layout layout,
                                      int dense_experts) {
  int n = mxl_checkpoint_tensors_ex(c, layout, dense_experts, NULL);
  mxl_tensor_desc *d = malloc((size_t)n * sizeof *d);
  uint64_t total = 0;
  if (!d) return 0;
  mxl_checkpoint_tensors_ex(c, layout, dense_experts, d);
  for (int i = 0; i < n; i++) total += (uint64_t)mxl_tensor_desc_bytes(&d[i]);
  free(d);
  return total;
}

static void shard_name(mxl_layout layout, int index, int n_shards, char *buf, size_t cap) {
  if (n_shards == 1) snprintf(buf, cap, "model.safetensors");
  else if (layout == MXL_LAYOUT_HF) /* 0-based; "of" names the last index */
    snprintf(buf, cap, "model-%05d-of-%05d.safetensors", index, n_shards - 1);
  else /* original/: 1-based, double dash */
    snprintf(buf, cap, "model--%05d-of-%05d.safetensors", index + 1, n_shards);
}

static mxl_status write_shard(mxl_layout_writer *w, const char *path, const mxl_tensor_desc *d,
                              int n) {
  mxl_st_spec *specs = calloc((size_t)n, sizeof *specs);
  if (!specs) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  for (int i = 0; i < n; i++) {
    specs[i].name = d[i].name;
    specs[i].dtype = d[i].dtype;
    specs[i].ndim = d[i].ndim;
    memcpy(specs[i].shape, d[i].shape, sizeof d[i].shape);
  }
  static const char *const meta[] = {"format", "pt"};
  mxl_st_writer *sw = NULL;
  mxl_status st = mxl_st_writer_begin(path, specs, n, meta, 1, &sw);
  free(specs);
  MXL_TRY(st);
  for (int i = 0; i < n && st == MXL_OK; i++) {
    /* HF keeps dense experts as transformers does, [E, in, out] */
    int dense = d[i].kind == MXL_T_GU_W || d[i].kind == MXL_T_DOWN_W;
    if (dense && !strncmp(d[i].name, "model.", 6))
      st = stream_transposed(w, &d[i], sw, path);
    else
      st = stream_range(w, d[i].kind, d[i].layer, 0, elements(&d[i]), 0, st_sink, sw, path);
  }
  if (st != MXL_OK) {
    mxl_st_writer_abort(sw);
    return st;
  }
  return mxl_st_writer_commit(sw);
}

mxl_status mxl_write_text_file(const char *dir, const char *name, char *text) {
  char *path = mxl_path_join(dir, name);
  mxl_status st = text && path ? mxl_write_file_atomic(path, text, strlen(text))
                               : mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", dir);
  free(path);
  free(text);
  return st;
}

/* Writes `root` as indented JSON to dir/name and deletes it. */
static mxl_status write_json(const char *dir, const char *name, cJSON *root) {
  char *text = cJSON_Print(root);
  cJSON_Delete(root);
  return mxl_write_text_file(dir, name, text);
}

static mxl_status write_index(const char *dir, const mxl_tensor_desc *d, const int *shard_of,
                              int n, mxl_layout layout, int n_shards) {
  cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "metadata");
  uint64_t total = 0;
  for (int i = 0; i < n; i++) total += (uint64_t)mxl_tensor_desc_bytes(&d[i]);
  cJSON_AddNumberToObject(meta, "total_size", (double)total);
  cJSON *map = cJSON_AddObjectToObject(root, "weight_map");
  for (int i = 0; i < n; i++) {
    char name[64];
    shard_name(layout, shard_of[i], n_shards, name, sizeof name);
    cJSON_AddStringToObject(map, d[i].name, name);
  }
  return write_json(dir, "model.safetensors.index.json", root);
}

static mxl_status write_dtypes(const char *dir, const mxl_tensor_desc *d, int n) {
  cJSON *root = cJSON_CreateObject();
  for (int i = 0; i < n; i++)
    cJSON_AddStringToObject(root, d[i].name, mxl_tensor_kind_original_label(d[i].kind));
  return write_json(dir, "dtypes.json", root);
}

/* Greedy assignment in file order under the cap (as the HF converter). */
static int assign_shards(const mxl_tensor_desc *d, int n, uint64_t cap, int *shard_of) {
  int shard = 0;
  uint64_t used = 0;
  for (int i = 0; i < n; i++) {
    uint64_t b = (uint64_t)mxl_tensor_desc_bytes(&d[i]);
    if (used > 0 && used + b > cap) shard++, used = 0;
    used += b;
    shard_of[i] = shard;
  }
  return shard + 1;
}

mxl_status mxl_layout_write_safetensors(mxl_layout_writer *w, const char *dir,
                                        mxl_layout layout, uint64_t shard_bytes) {
  const int n = mxl_checkpoint_tensors_ex(w->c, layout, w->dense_experts, NULL);
  mxl_tensor_desc *d = calloc((size_t)n, sizeof *d);
  int *shard_of = calloc((size_t)n, sizeof *shard_of);
  mxl_status st = MXL_OK;
  if (!d || !shard_of) st = mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", dir);
  if (st == MXL_OK) {
    mxl_checkpoint_tensors_ex(w->c, layout, w->dense_experts, d);
    uint64_t cap = shard_bytes ? shard_bytes
                   : layout == MXL_LAYOUT_HF ? MXL_LAYOUT_DEFAULT_SHARD
                                             : UINT64_MAX;
    int n_shards = assign_shards(d, n, cap, shard_of);
    for (int s = 0, first = 0; s < n_shards && st == MXL_OK; s++) {
      int count = 0;
      while (first + count < n && shard_of[first + count] == s) count++;
      char name[64];
      shard_name(layout, s, n_shards, name, sizeof name);
      char *path = mxl_path_join(dir, name);
      st = path ? write_shard(w, path, d + first, count)
                : mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", dir);
      free(path);
      first += count;
    }
    if (st == MXL_OK && n_shards > 1) st = write_index(dir, d, shard_of, n, layout, n_shards);
    if (st == MXL_OK && layout == MXL_LAYOUT_ORIGINAL) st = write_dtypes(dir, d, n);
  }
  free(d);
  free(shard_of);
  return st;
}

/* ------------------------------------------------------------ metal */

typedef struct metal_out {
  mxl_atomic_file f;
  uint64_t pos;
  const char *path;
} metal_out;

static mxl_status put(metal_out *o, const void *data, size_t n) {
  MXL_TRY(mxl_atomic_file_write(&o->f, data, n));
  o->pos += n;
  return MXL_OK;
}

/* Zero padding up to `offset`, which the layout computed. */
static mxl_status pad_to(metal_out *o, uint64_t offset) {
  static const uint8_t zeros[4096];
  if (o->pos > offset)
    return mxl_errorf(MXL_ERR_STATE, "%s: internal layout error at byte %llu (> %llu)", o->path,
                      (unsigned long long)o->pos, (unsigned long long)offset);
  while (o->pos < offset) {
    uint64_t n = offset - o->pos < sizeof zeros ? offset - o->pos : sizeof zeros;
    MXL_TRY(put(o, zeros, (size_t)n));
  }
  return MXL_OK;
}

static mxl_status metal_range(mxl_layout_writer *w, metal_out *o, uint64_t offset,
                              mxl_tensor_kind kind, int layer, int64_t start, int64_t count,
                              int scale_add) {
  MXL_TRY(pad_to(o, offset));
  MXL_TRY(stream_range(w, kind, layer, start, count, scale_add, file_sink, &o->f, o->path));
  o->pos += (uint64_t)count * (is_u8(kind) ? 1 : 2);
  return MXL_OK;
}

/* Source row of metal row m of the fused qkv (docs/gpt-oss.md §4.5): q and k heads
 * interleave their two RoPE halves (new 2j = old j, new 2j+1 = old d/2+j)
 * and are scaled by 0.5 (q) and 0.25 (k); v is unchanged. */
static int64_t metal_qkv_source(const mxl_config *c, int64_t m, float *scale) {
  const int64_t d = c->head_dim, head = m / d, j = m % d;
  if (head >= c->n_heads + c->n_kv_heads) {
    *scale = 1.0f;
    return m;
  }
  *scale = head < c->n_heads ? 0.5f : 0.25f;
  return head * d + (j % 2 == 0 ? j / 2 : d / 2 + j / 2);
}

/* The fused qkv weight (row_len = H) or bias (row_len = 1), transformed. */
static mxl_status metal_qkv(mxl_layout_writer *w, metal_out *o, uint64_t offset, int layer,
                            int weight) {
  const mxl_config *c = w->c;
  const int64_t rows = (int64_t)c->head_dim * (c->n_heads + 2 * c->n_kv_heads);
  const int64_t row_len = weight ? c->hidden : 1;
  const int64_t rows_per_chunk = (MXL_LAYOUT_CHUNK / 2) / row_len;
  uint16_t *buf = (uint16_t *)(void *)w->buf;
  MXL_TRY(pad_to(o, offset));
  for (int64_t r0 = 0; r0 < rows; r0 += rows_per_chunk) {
    int64_t n = rows - r0 < rows_per_chunk ? rows - r0 : rows_per_chunk;
    for (int64_t r = 0; r < n; r++) {
      float scale;
      int64_t src = metal_qkv_source(c, r0 + r, &scale);
      uint16_t *row = buf + r * row_len;
      MXL_TRY(w->src.fill_bf16(w->src.self, weight ? MXL_T_QKV_W : MXL_T_QKV_B, layer,
                               src * row_len, row_len, row));
      for (int64_t i = 0; i < row_len && scale != 1.0f; i++)
        row[i] = mxl_f32_to_bf16(mxl_bf16_to_f32(row[i]) * scale);
    }
    size_t bytes = (size_t)(n * row_len) * 2;
    MXL_TRY(put(o, buf, bytes));
    report(w, o->path, bytes);
  }
  return MXL_OK;
}

static mxl_status metal_block(mxl_layout_writer *w, metal_out *o, const mxl_metal_layout *ml,
                              int l) {
  const mxl_config *c = w->c;
  const int64_t H = c->hidden, E = c->n_experts;
  const int64_t q = (int64_t)c->n_heads * c->head_dim;
  const uint64_t b = ml->block0 + (uint64_t)l * ml->block_stride;
  MXL_TRY(metal_range(w, o, b + ml->attn_norm, MXL_T_ATTN_NORM, l, 0, H, 0));
  MXL_TRY(metal_qkv(w, o, b + ml->qkv_w, l, 1));
  MXL_TRY(metal_qkv(w, o, b + ml->qkv_b, l, 0));
  MXL_TRY(metal_range(w, o, b + ml->sinks, MXL_T_SINKS, l, 0, c->n_heads, 0));
  MXL_TRY(metal_range(w, o, b + ml->out_w, MXL_T_O_W, l, 0, H * q, 0));
  MXL_TRY(metal_range(w, o, b + ml->out_b, MXL_T_O_B, l, 0, H, 0));
  MXL_TRY(metal_range(w, o, b + ml->mlp_norm, MXL_T_MLP_NORM, l, 0, H, 0));
  MXL_TRY(metal_range(w, o, b + ml->gate_w, MXL_T_ROUTER_W, l, 0, E * H, 0));
  return metal_range(w, o, b + ml->gate_b, MXL_T_ROUTER_B, l, 0, E, 0);
}

/* One block's experts, each expert's six items side by side. */
static mxl_status metal_experts(mxl_layout_writer *w, metal_out *o, const mxl_metal_layout *ml,
                                int l) {
  const mxl_config *c = w->c;
  const int64_t H = c->hidden, I = c->intermediate;
  const int64_t gu_blocks = 2 * I * H / 2, gu_scales = 2 * I * H / 32;
  const int64_t dn_blocks = H * I / 2, dn_scales = H * I / 32;
  const uint64_t base = ml->moe0 + (uint64_t)l * ml->moe_block_stride;
  const int add = MXL_METAL_SCALE_OFFSET;
  for (int64_t e = 0; e < c->n_experts; e++) {
    const uint64_t x = base + (uint64_t)e * ml->expert_stride;
    MXL_TRY(metal_range(w, o, x + ml->mlp1_blocks, MXL_T_GU_BLOCKS, l, e * gu_blocks, gu_blocks, 0));
    MXL_TRY(metal_range(w, o, x + ml->mlp1_scales, MXL_T_GU_SCALES, l, e * gu_scales, gu_scales, add));
    MXL_TRY(metal_range(w, o, x + ml->mlp1_bias, MXL_T_GU_BIAS, l, e * 2 * I, 2 * I, 0));
    MXL_TRY(metal_range(w, o, x + ml->mlp2_blocks, MXL_T_DOWN_BLOCKS, l, e * dn_blocks, dn_blocks, 0));
    MXL_TRY(metal_range(w, o, x + ml->mlp2_scales, MXL_T_DOWN_SCALES, l, e * dn_scales, dn_scales, add));
    MXL_TRY(metal_range(w, o, x + ml->mlp2_bias, MXL_T_DOWN_BIAS, l, e * H, H, 0));
  }
  return MXL_OK;
}

static mxl_status metal_header(metal_out *o, const mxl_config *c, const uint8_t *tok,
                               size_t tok_size) {
  uint8_t model[MXL_METAL_MODEL_HEADER_BYTES];
  mxl_config_write_metal(c, model);
  MXL_TRY(put(o, mxl_mbin_magic, 16));
  MXL_TRY(put(o, mxl_mbin_model_uuid, 16));
  MXL_TRY(put(o, model, sizeof model));
  MXL_TRY(put(o, mxl_mbin_layout_uuid, 16));
  MXL_TRY(put(o, mxl_mbin_tokenizer_uuid, 16));
  return put(o, tok, tok_size);
}

static mxl_status write_metal_body(mxl_layout_writer *w, metal_out *o, const mxl_metal_layout *ml) {
  const mxl_config *c = w->c;
  const int64_t H = c->hidden, rows = (int64_t)ml->vocab_rows;
  MXL_TRY(metal_range(w, o, ml->embedding, MXL_T_EMBED, -1, 0, rows * H, 0));
  for (int l = 0; l < c->n_layers; l++) MXL_TRY(metal_block(w, o, ml, l));
  MXL_TRY(metal_range(w, o, ml->final_norm, MXL_T_FINAL_NORM, -1, 0, H, 0));
  MXL_TRY(metal_range(w, o, ml->unembedding, MXL_T_UNEMBED, -1, 0, rows * H, 0));
  for (int l = 0; l < c->n_layers; l++) {
    MXL_TRY(pad_to(o, ml->moe0 + (uint64_t)l * ml->moe_block_stride));
    MXL_TRY(metal_experts(w, o, ml, l));
  }
  if (o->pos != ml->file_size)
    return mxl_errorf(MXL_ERR_STATE, "%s: internal layout error: wrote %llu bytes, expected %llu",
                      o->path, (unsigned long long)o->pos, (unsigned long long)ml->file_size);
  return MXL_OK;
}

mxl_status mxl_layout_write_metal(mxl_layout_writer *w, const char *path, const uint8_t *tok,
                                  size_t tok_size) {
  if (w->dense_experts)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: metal/model.bin holds MXFP4 experts only", path);
  if (tok_size < 16) return mxl_errorf(MXL_ERR_ARGUMENT, "%s: tokenizer section too short", path);
  mxl_metal_layout ml;
  MXL_TRY(mxl_metal_layout_compute(w->c, mxl_get_le32(tok), mxl_get_le32(tok + 4),
                                   mxl_get_le32(tok + 8), mxl_get_le32(tok + 12), path, &ml));
  if (ml.tokenizer_end != 132 + tok_size)
    return mxl_errorf(MXL_ERR_ARGUMENT, "%s: the tokenizer section's header does not match its size",
                      path);
  if (ml.vocab_rows > (uint64_t)w->c->vocab_size)
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "%s: the tokenizer has %llu tokens, more than vocab_size %d", path,
                      (unsigned long long)ml.vocab_rows, w->c->vocab_size);
  metal_out o = {.pos = 0, .path = path};
  MXL_TRY(mxl_atomic_file_begin(path, &o.f));
  mxl_status st = metal_header(&o, w->c, tok, tok_size);
  if (st == MXL_OK) st = write_metal_body(w, &o, &ml);
  if (st != MXL_OK) {
    mxl_atomic_file_abort(&o.f);
    return st;
  }
  return mxl_atomic_file_commit(&o.f);
}
