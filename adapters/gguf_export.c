/* A LoRA set as a GGUF LoRA adapter for llama.cpp's gpt-oss (gguf_export.h).
 *
 * The facts it follows (llama.cpp's loader, src/llama-adapter.cpp, and its
 * converter for the base, convert_hf_to_gguf.py GptOssModel):
 *   - metadata general.type "adapter", adapter.type "lora",
 *     adapter.lora.alpha (f32), general.architecture "gpt-oss";
 *   - every pair is "<base tensor name>.lora_a" / ".lora_b" with
 *     a.ne = {in, r[, E]}, b.ne = {r, out[, E]}: ne[0] of A and the base
 *     agree, ne[1] of B and the base agree, and A's ne[1] is B's ne[0];
 *     row-major that is A [E, r, in] and B [E, out, r], our own layout;
 *   - the runtime scale is alpha / r (r = B's ne[0]) times the user's
 *     scale, so alpha is written as our scaling · r (rsLoRA included);
 *   - base names: blk.N.attn_q / attn_k / attn_v / attn_output,
 *     blk.N.ffn_down_exps, and the HF gate_up rows de-interleaved as the
 *     converter splits the base: even rows (gate) into ffn_gate_exps, odd
 *     rows (up) into ffn_up_exps, or, for a base converted with fused
 *     gate/up, ffn_gate_up_exps holding the gate rows then the up rows. */
#include "adapters/gguf_export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/gguf.h"
#include "core/fileio.h"
#include "core/status.h"

/* Which rows of a B a GGUF tensor takes. */
typedef enum rows_of {
  ROWS_ALL,         /* B as it is */
  ROWS_EVEN,        /* gate: HF rows 0, 2, 4, ... */
  ROWS_ODD,         /* up: HF rows 1, 3, 5, ... */
  ROWS_DEINTERLEAVE /* fused: even rows, then odd rows */
} rows_of;

typedef struct gguf_item {
  char name[96];
  int tensor; /* index in the LoRA layout */
  rows_of rows;
  int n_dims;
  int64_t ne[3];
} gguf_item;

static const char *const attn_names[4] = {"attn_q", "attn_k", "attn_v", "attn_output"};

/* The base tensor a (layer, target[, gate/up part]) pair adapts. */
static void base_name(int layer, mxl_lora_target t, rows_of part, char *buf, size_t cap) {
  if (t <= MXL_LORA_O) snprintf(buf, cap, "blk.%d.%s.weight", layer, attn_names[t]);
  else if (t == MXL_LORA_DOWN) snprintf(buf, cap, "blk.%d.ffn_down_exps.weight", layer);
  else
    snprintf(buf, cap, "blk.%d.%s.weight", layer,
             part == ROWS_EVEN   ? "ffn_gate_exps"
             : part == ROWS_ODD ? "ffn_up_exps"
                                : "ffn_gate_up_exps");
}

static void add_pair(gguf_item *items, int *n, const mxl_lora_layout *lay, int a_index,
                     rows_of part) {
  const mxl_lora_tensor *A = &lay->tensors[a_index], *B = &lay->tensors[a_index + 1];
  char base[80];
  base_name(A->layer, A->target, part, base, sizeof base);
  const int expert = mxl_lora_target_is_expert(A->target);
  const int out_rows = part == ROWS_EVEN || part == ROWS_ODD ? B->rows / 2 : B->rows;
  gguf_item *a = &items[(*n)++], *b = &items[(*n)++];
  snprintf(a->name, sizeof a->name, "%s.lora_a", base);
  snprintf(b->name, sizeof b->name, "%s.lora_b", base);
  a->tensor = a_index, a->rows = ROWS_ALL;
  b->tensor = a_index + 1, b->rows = part;
  a->n_dims = b->n_dims = expert ? 3 : 2;
  a->ne[0] = A->cols, a->ne[1] = A->rows, a->ne[2] = A->n_experts;
  b->ne[0] = B->cols, b->ne[1] = out_rows, b->ne[2] = B->n_experts;
}

/* Every GGUF tensor, in layer order; returns the count. */
static int plan(const mxl_lora_layout *lay, int fused, gguf_item *items) {
  int n = 0;
  for (int i = 0; i < lay->n_tensors; i++) {
    const mxl_lora_tensor *x = &lay->tensors[i];
    if (x->is_b) continue;
    if (x->target == MXL_LORA_GATE_UP && !fused) {
      add_pair(items, &n, lay, i, ROWS_EVEN);
      add_pair(items, &n, lay, i, ROWS_ODD);
    } else {
      add_pair(items, &n, lay, i, x->target == MXL_LORA_GATE_UP ? ROWS_DEINTERLEAVE : ROWS_ALL);
    }
  }
  return n;
}

/* B [E, out, r] -> the rows `part` asks for, per expert. */
static void take_rows(const float *src, float *dst, int n_experts, int out, int rank,
                      rows_of part) {
  const size_t row = (size_t)rank;
  size_t o = 0;
  for (int e = 0; e < n_experts; e++) {
    const float *b = src + (size_t)e * out * row;
    if (part == ROWS_EVEN || part == ROWS_DEINTERLEAVE)
      for (int r = 0; r < out; r += 2, o += row) memcpy(dst + o, b + r * row, row * sizeof *b);
    if (part == ROWS_ODD || part == ROWS_DEINTERLEAVE)
      for (int r = 1; r < out; r += 2, o += row) memcpy(dst + o, b + r * row, row * sizeof *b);
  }
}

/* ------------------------------------------------------------ base check */

static mxl_status open_base(const char *path, mxl_mapping *map, mxl_gguf **g) {
  MXL_TRY(mxl_mapping_open(path, map));
  mxl_status st = mxl_gguf_parse(map->data, map->size, path, 1, g);
  if (st != MXL_OK) mxl_mapping_close(map);
  return st;
}

/* Every target must exist in the base with the shapes the pair implies. */
static mxl_status check_against_base(const mxl_gguf *base, const char *path,
                                     const gguf_item *items, int n) {
  const mxl_gguf_kv *arch = mxl_gguf_find_kv(base, "general.architecture");
  if (!arch || !arch->str || strcmp(arch->str, MXL_GGUF_ARCH))
    return mxl_errorf(MXL_ERR_ARGUMENT, "%s: general.architecture is \"%s\", not \"%s\"", path,
                      arch && arch->str ? arch->str : "(missing)", MXL_GGUF_ARCH);
  for (int i = 0; i < n; i += 2) {
    char name[96];
    snprintf(name, sizeof name, "%.*s", (int)(strlen(items[i].name) - strlen(".lora_a")),
             items[i].name);
    const mxl_gguf_tensor *t = mxl_gguf_find_tensor(base, name);
    if (!t)
      return mxl_errorf(MXL_ERR_ARGUMENT,
                        "%s: the base has no tensor %s, which the adapter adapts (a base of "
                        "another shape, or gate/up stored the other way?)",
                        path, name);
    const gguf_item *a = &items[i], *b = &items[i + 1];
    if (t->ne[0] != a->ne[0] || t->ne[1] != b->ne[1] || (a->n_dims == 3 && t->ne[2] != a->ne[2]))
      return mxl_errorf(MXL_ERR_ARGUMENT,
                        "%s: %s is [%lld, %lld, %lld] (ne), the adapter needs in %lld, out %lld%s",
                        path, name, (long long)t->ne[0], (long long)t->ne[1],
                        (long long)t->ne[2], (long long)a->ne[0], (long long)b->ne[1],
                        a->n_dims == 3 ? " per expert" : "");
  }
  return MXL_OK;
}

/* fused = 1 when the base stores ffn_gate_up_exps, 0 for split; -1 when it
 * has neither (no expert tensors to go by). */
static int base_gate_up(const mxl_gguf *base) {
  for (int i = 0; i < base->n_tensors; i++) {
    if (strstr(base->tensors[i].name, ".ffn_gate_up_exps.")) return 1;
    if (strstr(base->tensors[i].name, ".ffn_gate_exps.")) return 0;
  }
  return -1;
}

/* ------------------------------------------------------------ write */

static void metadata(mxl_gguf_writer *w, const mxl_lora_layout *lay, const char *fingerprint,
                     int fused) {
  mxl_gguf_add_string(w, "general.architecture", MXL_GGUF_ARCH);
  mxl_gguf_add_string(w, "general.type", "adapter");
  mxl_gguf_add_string(w, "general.name", "mxlora LoRA adapter");
  mxl_gguf_add_u32(w, "general.alignment", MXL_GGUF_ALIGNMENT);
  mxl_gguf_add_string(w, "adapter.type", "lora");
  /* llama.cpp scales by alpha / r: alpha = scaling · r keeps our scaling,
   * rsLoRA's alpha/√r included */
  mxl_gguf_add_f32(w, "adapter.lora.alpha", lay->scaling * (float)lay->cfg.rank);
  mxl_gguf_add_u32(w, "mxlora.rank", (uint32_t)lay->cfg.rank);
  mxl_gguf_add_f32(w, "mxlora.alpha", lay->cfg.alpha);
  mxl_gguf_add_bool(w, "mxlora.rslora", lay->cfg.rslora);
  mxl_gguf_add_string(w, "mxlora.gate_up", fused ? "fused" : "split");
  if (fingerprint) mxl_gguf_add_string(w, "mxlora.base_fingerprint", fingerprint);
}

static mxl_status write_items(mxl_gguf_writer *w, const mxl_lora *lora, const gguf_item *items,
                              int n, const char *path) {
  const mxl_lora_layout *lay = lora->layout;
  size_t max_count = 0;
  for (int i = 0; i < lay->n_tensors; i++)
    if (lay->tensors[i].count > max_count) max_count = lay->tensors[i].count;
  float *tmp = malloc(2 * max_count * sizeof *tmp);
  if (!tmp) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  mxl_status st = MXL_OK;
  for (int i = 0; i < n && st == MXL_OK; i++) {
    const mxl_lora_tensor *x = &lay->tensors[items[i].tensor];
    mxl_lora_tensor_read(lora, items[i].tensor, tmp);
    const float *src = tmp;
    size_t count = x->count;
    if (items[i].rows != ROWS_ALL) {
      take_rows(tmp, tmp + max_count, x->n_experts, x->rows, x->cols, items[i].rows);
      src = tmp + max_count;
      if (items[i].rows != ROWS_DEINTERLEAVE) count /= 2;
    }
    st = mxl_gguf_writer_write(w, src, count * sizeof *src);
  }
  free(tmp);
  return st;
}

mxl_status mxl_gguf_export(const mxl_lora *lora, const char *fingerprint_hex,
                           const mxl_gguf_export_options *opt, const char *path) {
  const mxl_lora_layout *lay = lora->layout;
  int fused = opt && opt->gate_up_fused;
  mxl_mapping map = {0};
  mxl_gguf *base = NULL;
  if (opt && opt->match_base) {
    MXL_TRY(open_base(opt->match_base, &map, &base));
    int b = base_gate_up(base);
    if (b >= 0) fused = b;
  }
  gguf_item *items = calloc((size_t)lay->n_tensors * 2, sizeof *items);
  mxl_status st = items ? MXL_OK : mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  int n = items ? plan(lay, fused, items) : 0;
  if (st == MXL_OK && base) st = check_against_base(base, opt->match_base, items, n);
  mxl_gguf_free(base);
  mxl_mapping_close(&map);
  mxl_gguf_writer *w = NULL;
  if (st == MXL_OK) st = mxl_gguf_writer_create(path, &w);
  if (st == MXL_OK) {
    metadata(w, lay, fingerprint_hex, fused);
    for (int i = 0; i < n; i++)
      mxl_gguf_add_tensor(w, items[i].name, items[i].n_dims, items[i].ne, MXL_GGML_F32);
    st = mxl_gguf_writer_begin_data(w);
  }
  if (st == MXL_OK) st = write_items(w, lora, items, n, path);
  if (st == MXL_OK) st = mxl_gguf_writer_commit(w);
  else mxl_gguf_writer_abort(w);
  free(items);
  return st;
}
