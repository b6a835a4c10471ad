/* The tensor catalogue of the HF and original layouts (docs/gpt-oss.md §2.2, §3.2) and
 * the metal/model.bin offsets (docs/gpt-oss.md §4.1-§4.4). */
#include <stdio.h>
#include <string.h>

#include "core/status.h"
#include "model/checkpoint.h"

/* ------------------------------------------------------------ names */

typedef struct kind_info {
  const char *hf;       /* name after "model.layers.{i}." (or the full name) */
  const char *original; /* name after "block.{n}." (or the full name) */
  mxl_tensor_role role;
} kind_info;

static const kind_info kinds[MXL_T_COUNT] = {
    [MXL_T_EMBED] = {"model.embed_tokens.weight", "embedding.weight", MXL_ROLE_EMBEDDING},
    [MXL_T_ATTN_NORM] = {"input_layernorm.weight", "attn.norm.scale", MXL_ROLE_NORM},
    [MXL_T_Q_W] = {"self_attn.q_proj.weight", NULL, MXL_ROLE_ATTENTION},
    [MXL_T_Q_B] = {"self_attn.q_proj.bias", NULL, MXL_ROLE_ATTENTION},
    [MXL_T_K_W] = {"self_attn.k_proj.weight", NULL, MXL_ROLE_ATTENTION},
    [MXL_T_K_B] = {"self_attn.k_proj.bias", NULL, MXL_ROLE_ATTENTION},
    [MXL_T_V_W] = {"self_attn.v_proj.weight", NULL, MXL_ROLE_ATTENTION},
    [MXL_T_V_B] = {"self_attn.v_proj.bias", NULL, MXL_ROLE_ATTENTION},
    [MXL_T_QKV_W] = {NULL, "attn.qkv.weight", MXL_ROLE_ATTENTION},
    [MXL_T_QKV_B] = {NULL, "attn.qkv.bias", MXL_ROLE_ATTENTION},
    [MXL_T_SINKS] = {"self_attn.sinks", "attn.sinks", MXL_ROLE_ATTENTION},
    [MXL_T_O_W] = {"self_attn.o_proj.weight", "attn.out.weight", MXL_ROLE_ATTENTION},
    [MXL_T_O_B] = {"self_attn.o_proj.bias", "attn.out.bias", MXL_ROLE_ATTENTION},
    [MXL_T_MLP_NORM] = {"post_attention_layernorm.weight", "mlp.norm.scale", MXL_ROLE_NORM},
    [MXL_T_ROUTER_W] = {"mlp.router.weight", "mlp.gate.weight", MXL_ROLE_ROUTER},
    [MXL_T_ROUTER_B] = {"mlp.router.bias", "mlp.gate.bias", MXL_ROLE_ROUTER},
    [MXL_T_GU_BLOCKS] = {"mlp.experts.gate_up_proj_blocks", "mlp.mlp1_weight.blocks",
                         MXL_ROLE_EXPERTS},
    [MXL_T_GU_SCALES] = {"mlp.experts.gate_up_proj_scales", "mlp.mlp1_weight.scales",
                         MXL_ROLE_EXPERTS},
    [MXL_T_GU_BIAS] = {"mlp.experts.gate_up_proj_bias", "mlp.mlp1_bias", MXL_ROLE_EXPERT_BIAS},
    [MXL_T_DOWN_BLOCKS] = {"mlp.experts.down_proj_blocks", "mlp.mlp2_weight.blocks",
                           MXL_ROLE_EXPERTS},
    [MXL_T_DOWN_SCALES] = {"mlp.experts.down_proj_scales", "mlp.mlp2_weight.scales",
                           MXL_ROLE_EXPERTS},
    [MXL_T_DOWN_BIAS] = {"mlp.experts.down_proj_bias", "mlp.mlp2_bias", MXL_ROLE_EXPERT_BIAS},
    [MXL_T_FINAL_NORM] = {"model.norm.weight", "norm.scale", MXL_ROLE_NORM},
    [MXL_T_UNEMBED] = {"lm_head.weight", "unembedding.weight", MXL_ROLE_UNEMBEDDING},
    [MXL_T_GU_W] = {"mlp.experts.gate_up_proj", "mlp.mlp1_weight", MXL_ROLE_EXPERTS_DENSE},
    [MXL_T_DOWN_W] = {"mlp.experts.down_proj", "mlp.mlp2_weight", MXL_ROLE_EXPERTS_DENSE},
};

static int kind_is_global(mxl_tensor_kind k) {
  return k == MXL_T_EMBED || k == MXL_T_FINAL_NORM || k == MXL_T_UNEMBED;
}

mxl_tensor_role mxl_tensor_kind_role(mxl_tensor_kind kind) { return kinds[kind].role; }

const char *mxl_tensor_role_name(mxl_tensor_role role) {
  switch (role) {
  case MXL_ROLE_EMBEDDING: return "embedding";
  case MXL_ROLE_ATTENTION: return "attention";
  case MXL_ROLE_NORM: return "norms";
  case MXL_ROLE_ROUTER: return "router";
  case MXL_ROLE_EXPERTS: return "experts (MXFP4)";
  case MXL_ROLE_EXPERT_BIAS: return "expert biases";
  case MXL_ROLE_UNEMBEDDING: return "unembedding";
  case MXL_ROLE_EXPERTS_DENSE: return "experts (BF16)";
  case MXL_ROLE_COUNT: break;
  }
  return "other";
}

const char *mxl_tensor_kind_original_label(mxl_tensor_kind kind) {
  if (kind == MXL_T_GU_BLOCKS || kind == MXL_T_DOWN_BLOCKS) return "FP4";
  if (kind == MXL_T_GU_SCALES || kind == MXL_T_DOWN_SCALES) return "UE8";
  return "BF16";
}

static void shape_of(const mxl_config *c, mxl_layout layout, mxl_tensor_kind k,
                     mxl_tensor_desc *d) {
  const int hf = layout == MXL_LAYOUT_HF;
  const int64_t H = c->hidden, I = c->intermediate, E = c->n_experts, V = c->vocab_size;
  const int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
  int64_t s[4] = {0, 0, 0, 0};
  int n = 1;
  d->dtype = MXL_DT_BF16;
  switch (k) {
  case MXL_T_EMBED:
  case MXL_T_UNEMBED: n = 2, s[0] = V, s[1] = H; break;
  case MXL_T_ATTN_NORM:
  case MXL_T_MLP_NORM:
  case MXL_T_FINAL_NORM:
  case MXL_T_O_B: s[0] = H; break;
  case MXL_T_Q_W: n = 2, s[0] = q, s[1] = H; break;
  case MXL_T_Q_B: s[0] = q; break;
  case MXL_T_K_W:
  case MXL_T_V_W: n = 2, s[0] = kv, s[1] = H; break;
  case MXL_T_K_B:
  case MXL_T_V_B: s[0] = kv; break;
  case MXL_T_QKV_W: n = 2, s[0] = q + 2 * kv, s[1] = H; break;
  case MXL_T_QKV_B: s[0] = q + 2 * kv; break;
  case MXL_T_SINKS: s[0] = c->n_heads; break;
  case MXL_T_O_W: n = 2, s[0] = H, s[1] = q; break;
  case MXL_T_ROUTER_W: n = 2, s[0] = E, s[1] = H; break;
  case MXL_T_ROUTER_B: s[0] = E; break;
  case MXL_T_GU_BLOCKS: n = 4, s[0] = E, s[1] = 2 * I, s[2] = H / 32, s[3] = 16; break;
  case MXL_T_GU_SCALES: n = 3, s[0] = E, s[1] = 2 * I, s[2] = H / 32; break;
  case MXL_T_GU_BIAS: n = 2, s[0] = E, s[1] = 2 * I; break;
  case MXL_T_DOWN_BLOCKS: n = 4, s[0] = E, s[1] = H, s[2] = I / 32, s[3] = 16; break;
  case MXL_T_DOWN_SCALES: n = 3, s[0] = E, s[1] = H, s[2] = I / 32; break;
  case MXL_T_DOWN_BIAS: n = 2, s[0] = E, s[1] = H; break;
  case MXL_T_GU_W: n = 3, s[0] = E, s[1] = hf ? H : 2 * I, s[2] = hf ? 2 * I : H; break;
  case MXL_T_DOWN_W: n = 3, s[0] = E, s[1] = hf ? I : H, s[2] = hf ? H : I; break;
  case MXL_T_COUNT: break;
  }
  if (k == MXL_T_GU_BLOCKS || k == MXL_T_GU_SCALES || k == MXL_T_DOWN_BLOCKS ||
      k == MXL_T_DOWN_SCALES)
    d->dtype = MXL_DT_U8;
  d->ndim = n;
  memcpy(d->shape, s, sizeof s);
}

static void make_desc(const mxl_config *c, mxl_layout layout, mxl_tensor_kind k, int layer,
                      mxl_tensor_desc *d) {
  memset(d, 0, sizeof *d);
  d->kind = k;
  d->layer = layer;
  shape_of(c, layout, k, d);
  const char *base = layout == MXL_LAYOUT_HF ? kinds[k].hf : kinds[k].original;
  if (kind_is_global(k)) snprintf(d->name, sizeof d->name, "%s", base);
  else if (layout == MXL_LAYOUT_HF)
    snprintf(d->name, sizeof d->name, "model.layers.%d.%s", layer, base);
  else snprintf(d->name, sizeof d->name, "block.%d.%s", layer, base);
}

/* The MXFP4 kinds of an expert projection, or their dense replacement. */
static mxl_tensor_kind expert_kind(mxl_tensor_kind k, int dense) {
  if (!dense) return k;
  if (k == MXL_T_GU_BLOCKS) return MXL_T_GU_W;
  if (k == MXL_T_DOWN_BLOCKS) return MXL_T_DOWN_W;
  if (k == MXL_T_GU_SCALES || k == MXL_T_DOWN_SCALES) return MXL_T_COUNT; /* dropped */
  return k;
}

int mxl_checkpoint_tensors(const mxl_config *c, mxl_layout layout, mxl_tensor_desc *out) {
  return mxl_checkpoint_tensors_ex(c, layout, 0, out);
}

int mxl_checkpoint_tensors_ex(const mxl_config *c, mxl_layout layout, int dense_experts,
                              mxl_tensor_desc *out) {
  static const mxl_tensor_kind hf_block[] = {
      MXL_T_ATTN_NORM, MXL_T_Q_W,      MXL_T_Q_B,        MXL_T_K_W,        MXL_T_K_B,
      MXL_T_V_W,       MXL_T_V_B,      MXL_T_O_W,        MXL_T_O_B,        MXL_T_SINKS,
      MXL_T_MLP_NORM,  MXL_T_ROUTER_W, MXL_T_ROUTER_B,   MXL_T_GU_BLOCKS,  MXL_T_GU_SCALES,
      MXL_T_GU_BIAS,   MXL_T_DOWN_BLOCKS, MXL_T_DOWN_SCALES, MXL_T_DOWN_BIAS};
  static const mxl_tensor_kind original_block[] = {
      MXL_T_ATTN_NORM, MXL_T_QKV_W,     MXL_T_QKV_B,    MXL_T_SINKS,      MXL_T_O_W,
      MXL_T_O_B,       MXL_T_MLP_NORM,  MXL_T_ROUTER_W, MXL_T_ROUTER_B,   MXL_T_GU_BLOCKS,
      MXL_T_GU_SCALES, MXL_T_GU_BIAS,   MXL_T_DOWN_BLOCKS, MXL_T_DOWN_SCALES, MXL_T_DOWN_BIAS};
  const mxl_tensor_kind *block = layout == MXL_LAYOUT_HF ? hf_block : original_block;
  int per_block = layout == MXL_LAYOUT_HF ? (int)(sizeof hf_block / sizeof hf_block[0])
                                          : (int)(sizeof original_block / sizeof original_block[0]);
  int n = 0;
  if (out) make_desc(c, layout, MXL_T_EMBED, -1, &out[n]);
  n++;
  for (int l = 0; l < c->n_layers; l++)
    for (int j = 0; j < per_block; j++) {
      mxl_tensor_kind k = expert_kind(block[j], dense_experts);
      if (k == MXL_T_COUNT) continue;
      if (out) make_desc(c, layout, k, l, &out[n]);
      n++;
    }
  if (out) make_desc(c, layout, MXL_T_FINAL_NORM, -1, &out[n]);
  n++;
  if (out) make_desc(c, layout, MXL_T_UNEMBED, -1, &out[n]);
  n++;
  return n;
}

int64_t mxl_tensor_desc_bytes(const mxl_tensor_desc *d) {
  int64_t n = (int64_t)mxl_dtype_size(d->dtype);
  for (int i = 0; i < d->ndim; i++) n *= d->shape[i];
  return n;
}

/* Matches "<prefix><digits>.<rest>" and returns rest, or NULL. */
static const char *after_layer(const char *name, const char *prefix, int *layer) {
  size_t n = strlen(prefix);
  if (strncmp(name, prefix, n) != 0) return NULL;
  const char *p = name + n;
  long v = 0;
  int digits = 0;
  while (*p >= '0' && *p <= '9' && digits < 6) v = v * 10 + (*p++ - '0'), digits++;
  if (!digits || *p != '.') return NULL;
  *layer = (int)v;
  return p + 1;
}

int mxl_tensor_name_parse(const char *name, mxl_tensor_kind *kind, int *layer) {
  for (int k = 0; k < MXL_T_COUNT; k++) {
    if (!kind_is_global((mxl_tensor_kind)k)) continue;
    if ((kinds[k].hf && !strcmp(name, kinds[k].hf)) ||
        (kinds[k].original && !strcmp(name, kinds[k].original))) {
      *kind = (mxl_tensor_kind)k;
      *layer = -1;
      return 1;
    }
  }
  int l = -1;
  const char *rest = after_layer(name, "model.layers.", &l);
  int hf = rest != NULL;
  if (!rest) rest = after_layer(name, "block.", &l);
  if (!rest) return 0;
  for (int k = 0; k < MXL_T_COUNT; k++) {
    const char *base = hf ? kinds[k].hf : kinds[k].original;
    if (!kind_is_global((mxl_tensor_kind)k) && base && !strcmp(rest, base)) {
      *kind = (mxl_tensor_kind)k;
      *layer = l;
      return 1;
    }
  }
  return 0;
}

/* ------------------------------------------------------------ metal layout */

const uint8_t mxl_mbin_magic[16] = {'G', 'P', 'T', '-', 'O', 'S', 'S', ' ',
                                     'v', '1', '.', '0', 0,   0,   0,   0};
const uint8_t mxl_mbin_model_uuid[16] = {0xdf, 0x52, 0xdc, 0x86, 0x17, 0x89, 0x4e, 0xd0,
                                          0xa2, 0x95, 0x66, 0xf1, 0x05, 0x08, 0x14, 0x5b};
const uint8_t mxl_mbin_layout_uuid[16] = {0x22, 0x91, 0x77, 0xa8, 0x57, 0x75, 0x42, 0x68,
                                           0xbf, 0xd8, 0xd5, 0x88, 0xb3, 0x51, 0xc5, 0x6d};
const uint8_t mxl_mbin_tokenizer_uuid[16] = {0x74, 0x01, 0xad, 0xed, 0x2a, 0x95, 0x40, 0xcb,
                                             0xb7, 0x82, 0x9c, 0xce, 0xba, 0xaf, 0xe7, 0x2b};
const uint8_t mxl_mbin_return_uuid[16] = {0xf7, 0x99, 0xff, 0x69, 0x19, 0x92, 0x43, 0xc4,
                                           0xa3, 0xd8, 0xd8, 0x31, 0xf4, 0x75, 0xdc, 0x75};
const uint8_t mxl_mbin_call_uuid[16] = {0x12, 0x20, 0xf7, 0x96, 0xe3, 0x88, 0x4d, 0xe5,
                                         0xb4, 0x87, 0xfe, 0x2e, 0xb5, 0xfe, 0x03, 0xc0};

/* Checked arithmetic: any overflow sets *bad and the result is garbage. */
static uint64_t mul(uint64_t a, uint64_t b, int *bad) {
  if (a && b > UINT64_MAX / a) *bad = 1;
  return a * b;
}

static uint64_t add(uint64_t a, uint64_t b, int *bad) {
  if (b > UINT64_MAX - a) *bad = 1;
  return a + b;
}

static uint64_t round_up(uint64_t v, uint64_t to, int *bad) {
  return mul((add(v, to - 1, bad)) / to, to, bad);
}

/* Size of one item as the reader counts it: bytes rounded up to 16. */
static uint64_t item(uint64_t a, uint64_t b, uint64_t elem, int *bad) {
  return round_up(mul(mul(a, b, bad), elem, bad), MXL_METAL_ALIGN, bad);
}

static void metal_block_offsets(const mxl_config *c, mxl_metal_layout *m, int *bad) {
  const uint64_t H = (uint64_t)c->hidden, E = (uint64_t)c->n_experts;
  const uint64_t qkv = (uint64_t)c->head_dim * (uint64_t)(c->n_heads + 2 * c->n_kv_heads);
  const uint64_t q = (uint64_t)c->head_dim * (uint64_t)c->n_heads;
  uint64_t off = 0;
  m->attn_norm = off, off = add(off, item(H, 1, 2, bad), bad);
  m->qkv_w = off, off = add(off, item(qkv, H, 2, bad), bad);
  m->qkv_b = off, off = add(off, item(qkv, 1, 2, bad), bad);
  m->sinks = off, off = add(off, item((uint64_t)c->n_heads, 1, 2, bad), bad);
  m->out_w = off, off = add(off, item(H, q, 2, bad), bad);
  m->out_b = off, off = add(off, item(H, 1, 2, bad), bad);
  m->mlp_norm = off, off = add(off, item(H, 1, 2, bad), bad);
  m->gate_w = off, off = add(off, item(E, H, 2, bad), bad);
  m->gate_b = off, off = add(off, item(E, 1, 2, bad), bad);
  m->block_stride = off;
}

static void metal_expert_offsets(const mxl_config *c, mxl_metal_layout *m, int *bad) {
  const uint64_t H = (uint64_t)c->hidden, I = (uint64_t)c->intermediate;
  uint64_t off = 0;
  m->mlp1_blocks = off, off = add(off, item(2 * I, H / 2, 1, bad), bad);
  m->mlp1_scales = off, off = add(off, item(2 * I, H / 32, 1, bad), bad);
  m->mlp1_bias = off, off = add(off, item(2 * I, 1, 2, bad), bad);
  m->mlp2_blocks = off, off = add(off, item(H, I / 2, 1, bad), bad);
  m->mlp2_scales = off, off = add(off, item(H, I / 32, 1, bad), bad);
  m->mlp2_bias = off, off = add(off, item(H, 1, 2, bad), bad);
  m->expert_stride = off;
}

mxl_status mxl_metal_layout_compute(const mxl_config *c, uint32_t num_special,
                                    uint32_t num_text, uint32_t regex_size,
                                    uint32_t tokens_size, const char *source,
                                    mxl_metal_layout *m) {
  memset(m, 0, sizeof *m);
  int bad = 0;
  m->num_special = num_special, m->num_text = num_text;
  m->regex_size = regex_size, m->tokens_size = tokens_size;
  uint64_t end = add(MXL_METAL_HEADER_BYTES, mul(16, num_special, &bad), &bad);
  end = add(add(end, regex_size, &bad), tokens_size, &bad);
  m->tokenizer_end = end;
  m->vocab_rows = (uint64_t)num_text + num_special;
  const uint64_t H = (uint64_t)c->hidden, L = (uint64_t)c->n_layers;
  m->embedding = round_up(end, MXL_METAL_PAGE, &bad);
  metal_block_offsets(c, m, &bad);
  m->block0 = add(m->embedding, item(m->vocab_rows, H, 2, &bad), &bad);
  m->final_norm = add(m->block0, mul(L, m->block_stride, &bad), &bad);
  m->unembedding = add(m->final_norm, item(H, 1, 2, &bad), &bad);
  uint64_t shared_end = add(m->unembedding, item(m->vocab_rows, H, 2, &bad), &bad);
  m->moe0 = round_up(shared_end, MXL_METAL_PAGE, &bad);
  metal_expert_offsets(c, m, &bad);
  uint64_t experts = mul((uint64_t)c->n_experts, m->expert_stride, &bad);
  m->moe_block_stride = round_up(experts, MXL_METAL_PAGE, &bad);
  m->file_size = add(add(m->moe0, mul(L - 1, m->moe_block_stride, &bad), &bad), experts, &bad);
  if (bad || c->n_layers < 1)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: the model header describes a file too large to "
                      "address", source);
  return MXL_OK;
}
