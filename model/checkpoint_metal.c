/* metal/model.bin (docs/gpt-oss.md §4): OpenAI's Apple Metal runtime file. The header
 * carries the config and the tokenizer; the weights follow at offsets fixed
 * by the config, so the file size must match the computed layout exactly.
 * q/k rows are stored permuted into adjacent RoPE pairs and pre-scaled
 * (q by 0.5, k by 0.25), expert scale bytes are stored +14; the view
 * records both instead of undoing them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "core/status.h"
#include "kernels/mxfp4.h"
#include "model/checkpoint.h"

static mxl_status check_ids(const uint8_t *d, const char *path) {
  if (memcmp(d, mxl_mbin_magic, 12) != 0)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: wrong magic (expected \"GPT-OSS v1.0\"): not a gpt-oss metal/model.bin",
                      path);
  if (mxl_get_le32(d + 12) != 0)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: unknown format version field %u after the magic",
                      path, mxl_get_le32(d + 12));
  if (memcmp(d + 16, mxl_mbin_model_uuid, 16) != 0)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: model UUID is not gpt-oss's (df52dc86-...)", path);
  if (memcmp(d + 100, mxl_mbin_layout_uuid, 16) != 0)
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "%s: layout UUID is not the Apple GPU layout (229177a8-...)", path);
  if (memcmp(d + 116, mxl_mbin_tokenizer_uuid, 16) != 0)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: tokenizer UUID is not tiktoken (7401aded-...)",
                      path);
  return MXL_OK;
}

/* The regex must end in its NUL and the tokens must fill tokens_size
 * exactly: num_text entries of u16 length + bytes. */
static mxl_status check_tokenizer(const uint8_t *d, const mxl_metal_layout *ml, const char *path) {
  uint64_t regex = MXL_METAL_HEADER_BYTES + 16ull * ml->num_special;
  if (ml->regex_size == 0 || d[regex + ml->regex_size - 1] != 0)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: the tokenizer regex (%u bytes) does not end in NUL",
                      path, ml->regex_size);
  uint64_t p = regex + ml->regex_size, end = p + ml->tokens_size;
  for (uint32_t t = 0; t < ml->num_text; t++) {
    if (p + 2 > end)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: tokenizer token %u runs past tokens_size (%u)", path,
                        t, ml->tokens_size);
    p += 2 + (uint64_t)mxl_get_le16(d + p);
  }
  if (p != end)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: the %u tokens take %llu bytes, tokens_size says %u", path,
                      ml->num_text, (unsigned long long)(p - regex - ml->regex_size),
                      ml->tokens_size);
  return MXL_OK;
}

/* Token ids from the special-token UUID table (located by UUID, not slot):
 * stops = <|return|>, <|endoftext|> (num_text + 1), <|call|>. */
static void set_token_ids(mxl_config *c, const uint8_t *d, const mxl_metal_layout *ml) {
  int ret = -1, call = -1;
  for (uint32_t t = 0; t < ml->num_special; t++) {
    const uint8_t *u = d + MXL_METAL_HEADER_BYTES + 16ull * t;
    if (!memcmp(u, mxl_mbin_return_uuid, 16)) ret = (int)(ml->num_text + t);
    if (!memcmp(u, mxl_mbin_call_uuid, 16)) call = (int)(ml->num_text + t);
  }
  c->n_stop_ids = 0;
  if (ret >= 0) c->stop_ids[c->n_stop_ids++] = ret;
  if (ml->num_special >= 2) {
    c->bos_id = (int)ml->num_text;
    c->pad_id = (int)ml->num_text + 1;
    c->stop_ids[c->n_stop_ids++] = c->pad_id;
  }
  if (call >= 0) c->stop_ids[c->n_stop_ids++] = call;
}

static void assign_weights(mxl_model *m, const uint8_t *d, const mxl_metal_layout *ml) {
  const mxl_config *c = &m->config;
  mxl_weights *w = &m->w;
  const size_t H = (size_t)c->hidden;
  const size_t q = (size_t)c->n_heads * c->head_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
#define BF(off) ((const uint16_t *)(const void *)(d + (off)))
  w->embed.w = BF(ml->embedding);
  w->final_norm = BF(ml->final_norm);
  w->unembed.w = BF(ml->unembedding);
  for (int l = 0; l < c->n_layers; l++) {
    mxl_layer_weights *lw = &w->layers[l];
    const uint64_t b = ml->block0 + (uint64_t)l * ml->block_stride;
    lw->attn_norm = BF(b + ml->attn_norm);
    const uint16_t *qkv = BF(b + ml->qkv_w), *qkv_b = BF(b + ml->qkv_b);
    lw->q.w = qkv, lw->k.w = qkv + q * H, lw->v.w = qkv + (q + kv) * H;
    lw->q.bias = qkv_b, lw->k.bias = qkv_b + q, lw->v.bias = qkv_b + q + kv;
    lw->sinks = BF(b + ml->sinks);
    lw->o.w = BF(b + ml->out_w), lw->o.bias = BF(b + ml->out_b);
    lw->mlp_norm = BF(b + ml->mlp_norm);
    lw->router.w = BF(b + ml->gate_w), lw->router.bias = BF(b + ml->gate_b);
    const uint64_t e0 = ml->moe0 + (uint64_t)l * ml->moe_block_stride;
    mxl_mxfp4_weight *gu = &lw->gate_up, *dn = &lw->down;
    gu->blocks = d + e0 + ml->mlp1_blocks, gu->scales = d + e0 + ml->mlp1_scales;
    gu->bias = BF(e0 + ml->mlp1_bias);
    dn->blocks = d + e0 + ml->mlp2_blocks, dn->scales = d + e0 + ml->mlp2_scales;
    dn->bias = BF(e0 + ml->mlp2_bias);
    gu->blocks_stride = gu->scales_stride = dn->blocks_stride = dn->scales_stride =
        ml->expert_stride;
    gu->bias_stride = dn->bias_stride = ml->expert_stride / 2;
    gu->scale_bias = dn->scale_bias = MXL_MXFP4_METAL_BIAS;
  }
#undef BF
  w->vocab_rows = (int)ml->vocab_rows;
  w->qk_interleaved = 1;
  /* q·0.5 and k·0.25 fold 1/8 = 1/sqrt(64) into the weights; other head
   * sizes need the remaining factor. */
  w->attn_scale = 8.0f / sqrtf((float)c->head_dim);
}

mxl_status mxl_checkpoint_read_metal_buffer(mxl_model *m, const uint8_t *d, size_t size,
                                            const char *path) {
  if (size < MXL_METAL_HEADER_BYTES || !d)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: truncated: %zu bytes, the header alone needs %d",
                      path, size, MXL_METAL_HEADER_BYTES);
  MXL_TRY(check_ids(d, path));
  MXL_TRY(mxl_config_parse_metal(d + 32, path, &m->config));
  uint32_t ns = mxl_get_le32(d + 132), nt = mxl_get_le32(d + 136);
  uint32_t rs = mxl_get_le32(d + 140), ts = mxl_get_le32(d + 144);
  if ((uint64_t)nt + ns > 0x7fffffff)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: num_text_tokens %u + num_special_tokens %u is too large",
                      path, nt, ns);
  m->config.vocab_size = (int)(nt + ns);
  MXL_TRY(mxl_config_validate(&m->config, path));
  mxl_metal_layout ml;
  MXL_TRY(mxl_metal_layout_compute(&m->config, ns, nt, rs, ts, path, &ml));
  if (size != ml.file_size)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: %s: the file has %zu bytes, its header describes %llu (%d layers, %d "
                      "experts, %llu vocabulary rows)",
                      path, size < ml.file_size ? "truncated" : "wrong size", size,
                      (unsigned long long)ml.file_size, m->config.n_layers, m->config.n_experts,
                      (unsigned long long)ml.vocab_rows);
  MXL_TRY(check_tokenizer(d, &ml, path));
  set_token_ids(&m->config, d, &ml);
  m->w.layers = calloc((size_t)m->config.n_layers, sizeof *m->w.layers);
  if (!m->w.layers) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  assign_weights(m, d, &ml);
  mxl_model_set_dims(m);
  m->has_metal_tokenizer = 1;
  m->metal_tokenizer.data = d + 132;
  m->metal_tokenizer.size = ml.tokenizer_end - 132;
  m->layout = MXL_LAYOUT_METAL;
  return MXL_OK;
}

mxl_status mxl_checkpoint_read_metal(mxl_model *m, const char *path) {
  m->mappings = calloc(1, sizeof *m->mappings);
  if (!m->mappings) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  MXL_TRY(mxl_mapping_open(path, &m->mappings[0]));
  m->n_mappings = 1;
  return mxl_checkpoint_read_metal_buffer(m, m->mappings[0].data, m->mappings[0].size,
                                          m->mappings[0].path);
}
