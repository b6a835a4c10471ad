/* mxl_tiny_write: a deterministic gpt-oss-architecture checkpoint from a
 * seed, in the published layouts (see tiny.h for how values are drawn). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "core/fileio.h"
#include "core/status.h"
#include "datasets/tokenizer.h"
#include "repo/tiny.h"

enum { MXL_TINY_MAX_CORPUS = 256 << 20, MXL_TINY_MAX_TIKTOKEN = 64 << 20 };

/* ------------------------------------------------------------ presets */

typedef struct tiny_plan {
  mxl_config c;
  int text_tokens;   /* ordinary tokens asked of the BPE trainer */
  int vocab_set;     /* vocab_size given by --set */
  int direct_mxfp4;  /* full-size shapes draw codes directly */
  int want_hf, want_original, want_metal;
} tiny_plan;

static void small_config(mxl_config *c, int L, int H, int I, int E, int k, int nh, int nkv,
                         int d, int window, int vocab) {
  mxl_config_gpt_oss_20b(c);
  c->n_layers = L, c->hidden = H, c->intermediate = I, c->n_experts = E;
  c->experts_per_token = k, c->n_heads = nh, c->n_kv_heads = nkv, c->head_dim = d;
  c->sliding_window = window, c->vocab_size = vocab;
  for (int i = 0; i < MXL_MAX_LAYERS; i++) c->layer_sliding[i] = (uint8_t)(i < L && i % 2 == 0);
}

static mxl_status apply_preset(const char *preset, tiny_plan *p) {
  if (!preset || !strcmp(preset, "test")) {
    /* ~1M parameters; head_dim 32 keeps YaRN's 0 < low < high < d/2 - 1. */
    small_config(&p->c, 3, 128, 128, 4, 2, 4, 2, 32, 8, 1088);
    p->text_tokens = 1024;
  } else if (!strcmp(preset, "bench")) {
    small_config(&p->c, 6, 768, 512, 8, 2, 12, 4, 64, 128, 4160);
    p->text_tokens = 4096;
  } else if (!strcmp(preset, "gpt-oss-20b")) {
    mxl_config_gpt_oss_20b(&p->c);
    p->text_tokens = 4096, p->direct_mxfp4 = 1;
  } else if (!strcmp(preset, "gpt-oss-120b")) {
    mxl_config_gpt_oss_120b(&p->c);
    p->text_tokens = 4096, p->direct_mxfp4 = 1;
  } else {
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "tiny: unknown preset \"%s\" (test, bench, gpt-oss-20b, gpt-oss-120b)",
                      preset);
  }
  return MXL_OK;
}

static mxl_status parse_int(const char *key, const char *v, int lo, int hi, int *out) {
  char *end = NULL;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || end == v || *end || x < lo || x > hi)
    return mxl_errorf(MXL_ERR_ARGUMENT, "tiny: --set %s=%s: expected an integer in [%d, %d]", key,
                      v, lo, hi);
  *out = (int)x;
  return MXL_OK;
}

static mxl_status parse_float(const char *key, const char *v, float *out) {
  char *end = NULL;
  errno = 0;
  float x = strtof(v, &end);
  if (errno || end == v || *end || !isfinite(x))
    return mxl_errorf(MXL_ERR_ARGUMENT, "tiny: --set %s=%s: expected a number", key, v);
  *out = x;
  return MXL_OK;
}

static mxl_status apply_set(tiny_plan *p, const char *item) {
  const char *eq = strchr(item, '=');
  if (!eq) return mxl_errorf(MXL_ERR_ARGUMENT, "tiny: --set %s: expected key=value", item);
  char key[32];
  snprintf(key, sizeof key, "%.*s", (int)(eq - item), item);
  const char *v = eq + 1;
  mxl_config *c = &p->c;
  static const struct {
    const char *key;
    size_t offset;
  } ints[] = {
      {"layers", offsetof(mxl_config, n_layers)},
      {"experts", offsetof(mxl_config, n_experts)},
      {"experts_per_token", offsetof(mxl_config, experts_per_token)},
      {"heads", offsetof(mxl_config, n_heads)},
      {"kv_heads", offsetof(mxl_config, n_kv_heads)},
      {"head_dim", offsetof(mxl_config, head_dim)},
      {"hidden", offsetof(mxl_config, hidden)},
      {"intermediate", offsetof(mxl_config, intermediate)},
      {"window", offsetof(mxl_config, sliding_window)},
      {"initial_context", offsetof(mxl_config, initial_context)},
  };
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
    if (!strcmp(key, ints[i].key))
      return parse_int(key, v, 1, 1 << 20, (int *)(void *)((char *)c + ints[i].offset));
  if (!strcmp(key, "vocab")) {
    p->vocab_set = 1;
    MXL_TRY(parse_int(key, v, 300, 1 << 22, &c->vocab_size));
    p->text_tokens = c->vocab_size - 64;
    return MXL_OK;
  }
  if (!strcmp(key, "text_tokens")) return parse_int(key, v, 256, 1 << 22, &p->text_tokens);
  if (!strcmp(key, "rope_theta")) return parse_float(key, v, &c->rope_theta);
  if (!strcmp(key, "rope_factor")) return parse_float(key, v, &c->rope_factor);
  if (!strcmp(key, "beta_fast")) return parse_float(key, v, &c->rope_beta_fast);
  if (!strcmp(key, "beta_slow")) return parse_float(key, v, &c->rope_beta_slow);
  if (!strcmp(key, "swiglu_limit")) return parse_float(key, v, &c->swiglu_limit);
  if (!strcmp(key, "rms_eps")) return parse_float(key, v, &c->rms_eps);
  return mxl_errorf(MXL_ERR_ARGUMENT,
                    "tiny: --set %s: unknown key (layers, experts, experts_per_token, heads, "
                    "kv_heads, head_dim, hidden, intermediate, window, vocab, text_tokens, "
                    "initial_context, rope_theta, rope_factor, beta_fast, beta_slow, "
                    "swiglu_limit, rms_eps)",
                    key);
}

static mxl_status plan_layouts(const char *layout, tiny_plan *p) {
  if (!layout || !strcmp(layout, "all")) p->want_hf = p->want_original = p->want_metal = 1;
  else if (!strcmp(layout, "hf")) p->want_hf = 1;
  else if (!strcmp(layout, "original")) p->want_original = 1;
  else if (!strcmp(layout, "metal")) p->want_metal = 1;
  else
    return mxl_errorf(MXL_ERR_ARGUMENT, "tiny: unknown layout \"%s\" (hf, original, metal, all)",
                      layout);
  return MXL_OK;
}

static mxl_status make_plan(const mxl_tiny_options *opt, tiny_plan *p) {
  memset(p, 0, sizeof *p);
  MXL_TRY(apply_preset(opt->preset, p));
  for (int i = 0; i < opt->n_set; i++) MXL_TRY(apply_set(p, opt->set[i]));
  mxl_config *c = &p->c;
  if (c->n_layers > MXL_MAX_LAYERS)
    return mxl_errorf(MXL_ERR_ARGUMENT, "tiny: layers %d is more than %d", c->n_layers,
                      MXL_MAX_LAYERS);
  for (int i = 0; i < MXL_MAX_LAYERS; i++)
    c->layer_sliding[i] = (uint8_t)(i < c->n_layers && i % 2 == 0);
  c->max_context = (int)fmin((double)c->initial_context * c->rope_factor, (double)INT_MAX);
  return plan_layouts(opt->layout, p);
}

/* ------------------------------------------------------------ vocabulary */

typedef struct tiny_vocab {
  mxl_token_table *owned;   /* from the BPE trainer */
  mxl_tokenizer *tok;       /* from a .tiktoken file */
  const mxl_token_table *table;
} tiny_vocab;

static void vocab_free(tiny_vocab *v) {
  mxl_token_table_free(v->owned);
  mxl_tokenizer_free(v->tok);
  memset(v, 0, sizeof *v);
}

static mxl_status load_vocab(const mxl_tiny_options *opt, tiny_plan *p, tiny_vocab *v) {
  memset(v, 0, sizeof *v);
  char *data = NULL;
  size_t n = 0;
  mxl_status st;
  if (opt->vocab) {
    MXL_TRY(mxl_read_file(opt->vocab, MXL_TINY_MAX_TIKTOKEN, &data, &n));
    st = mxl_tokenizer_from_tiktoken(data, n, opt->vocab, &v->tok);
    free(data);
    MXL_TRY(st);
    v->table = mxl_tokenizer_table(v->tok);
    /* The published padding: 201088 rows for 199998 + 21 tokens. */
    if (!p->vocab_set) p->c.vocab_size = v->table->n_text + 1090;
    return MXL_OK;
  }
  const char *corpus = mxl_tiny_corpus;
  n = strlen(mxl_tiny_corpus);
  if (opt->vocab_corpus) {
    MXL_TRY(mxl_read_file(opt->vocab_corpus, MXL_TINY_MAX_CORPUS, &data, &n));
    corpus = data;
  }
  st = mxl_bpe_train(corpus, n, NULL, p->text_tokens, &v->owned);
  free(data);
  MXL_TRY(st);
  v->table = v->owned;
  return MXL_OK;
}

static int special_id(const mxl_token_table *t, const char *name) {
  for (int i = 0; i < t->n_special; i++)
    if (!strcmp(t->special[i], name)) return t->special_base + i;
  return -1;
}

/* bos/pad/stop ids from the vocabulary's special tokens, as published:
 * eos = <|return|>, <|endoftext|>, <|call|>. */
static mxl_status set_token_ids(mxl_config *c, const mxl_token_table *t) {
  int ret = special_id(t, "<|return|>"), eot = special_id(t, "<|endoftext|>");
  int call = special_id(t, "<|call|>");
  if (ret < 0 || eot < 0 || call < 0)
    return mxl_errorf(MXL_ERR_FORMAT, "tiny: the vocabulary lacks the harmony special tokens");
  int last = t->special_base + t->n_special;
  if (last > c->vocab_size)
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "tiny: the vocabulary has %d tokens, more than vocab (%d); raise --set "
                      "vocab or lower text_tokens",
                      last, c->vocab_size);
  c->bos_id = special_id(t, "<|startoftext|>");
  c->pad_id = eot;
  c->n_stop_ids = 3;
  c->stop_ids[0] = ret, c->stop_ids[1] = eot, c->stop_ids[2] = call;
  return MXL_OK;
}

/* ------------------------------------------------------------ files */

static mxl_status write_original(mxl_layout_writer *w, const char *out, uint64_t shard_bytes) {
  char *dir = mxl_path_join(out, "original");
  if (!dir) return mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  mxl_status st = mxl_make_dirs(dir);
  if (st == MXL_OK) st = mxl_write_text_file(dir, "config.json", mxl_config_to_original_json(w->c));
  if (st == MXL_OK) st = mxl_layout_write_safetensors(w, dir, MXL_LAYOUT_ORIGINAL, shard_bytes);
  free(dir);
  return st;
}

static mxl_status write_metal(mxl_layout_writer *w, const char *out, const uint8_t *section,
                              size_t size) {
  char *dir = mxl_path_join(out, "metal");
  char *path = dir ? mxl_path_join(dir, "model.bin") : NULL;
  mxl_status st = path ? mxl_make_dirs(dir) : mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  if (st == MXL_OK) st = mxl_layout_write_metal(w, path, section, size);
  free(path);
  free(dir);
  return st;
}

/* The weight bytes the metal writer streams (for progress): every item
 * unpadded, the vocabulary cut to the tokenizer's rows. */
static uint64_t metal_bytes(const mxl_config *c, const uint8_t *section) {
  /* The section starts with the special and the text token counts. */
  const uint64_t H = (uint64_t)c->hidden, I = (uint64_t)c->intermediate, E = (uint64_t)c->n_experts;
  const uint64_t q = (uint64_t)c->n_heads * c->head_dim, kv = (uint64_t)c->n_kv_heads * c->head_dim;
  const uint64_t rows = (uint64_t)mxl_get_le32(section) + mxl_get_le32(section + 4);
  const uint64_t block = 2 * (H + (q + 2 * kv) * (H + 1) + (uint64_t)c->n_heads + H * q + 2 * H +
                              E * (H + 1));
  const uint64_t expert = I * H + I * H / 16 + 4 * I + H * I / 2 + H * I / 32 + 2 * H;
  return 2 * rows * H * 2 + 2 * H + (uint64_t)c->n_layers * (block + E * expert);
}

static mxl_status write_all(const char *out, const mxl_tiny_options *opt, tiny_plan *p,
                            const mxl_token_table *t, mxl_layout_writer *w, mxl_tiny_gen *gen) {
  const mxl_config *c = &p->c;
  uint8_t *section = NULL;
  size_t size = 0;
  MXL_TRY(mxl_make_dirs(out));
  if (p->want_metal) MXL_TRY(mxl_tokenizer_metal_section(t, &section, &size));
  w->total = (p->want_hf ? (double)mxl_layout_safetensors_bytes(c, MXL_LAYOUT_HF, 0) : 0.0) +
             (p->want_original ? (double)mxl_layout_safetensors_bytes(c, MXL_LAYOUT_ORIGINAL, 0) : 0.0) +
             (section && size >= 16 ? (double)metal_bytes(c, section) : 0.0);
  /* The codec's statistics come from the first layout written. */
  gen->collect_stats = 1;
  mxl_status st = MXL_OK;
  if (p->want_hf) {
    st = mxl_write_text_file(out, "config.json", mxl_config_to_hf_json(c));
    if (st == MXL_OK) st = mxl_layout_write_safetensors(w, out, MXL_LAYOUT_HF, opt->shard_bytes);
    gen->collect_stats = 0;
  }
  if (st == MXL_OK && p->want_original) {
    st = write_original(w, out, opt->shard_bytes);
    gen->collect_stats = 0;
  }
  if (st == MXL_OK && p->want_metal) st = write_metal(w, out, section, size);
  free(section);
  MXL_TRY(st);
  MXL_TRY(mxl_write_text_file(out, "generation_config.json", mxl_config_to_generation_json(c)));
  return mxl_tokenizer_write_hf_ex(t, out, c->max_context);
}

static void fill_result(mxl_tiny_result *r, const tiny_plan *p, const mxl_token_table *t,
                        const mxl_layout_writer *w, const mxl_tiny_gen *gen) {
  mxl_param_counts pc;
  mxl_config_param_counts(&p->c, &pc);
  memset(r, 0, sizeof *r);
  r->parameters = pc.total;
  r->n_text_tokens = t->n_text;
  r->vocab_size = p->c.vocab_size;
  r->bytes_written = (uint64_t)w->done;
  mxl_mxfp4_error_stats s = gen->stats;
  mxl_mxfp4_error_stats_finish(&s);
  r->mxfp4_encoded = s.n_values;
  r->mxfp4_saturated = s.n_saturated;
  r->mxfp4_rel_rms_error = s.rel_rms_error;
  r->mxfp4_max_abs_error = s.max_abs_error;
}

mxl_status mxl_tiny_write(const char *out_dir, const mxl_tiny_options *opt,
                          mxl_progress_fn progress, void *user) {
  static const mxl_tiny_options defaults = {0};
  if (!out_dir || !*out_dir) return mxl_errorf(MXL_ERR_ARGUMENT, "tiny: no output folder given");
  if (!opt) opt = &defaults;
  tiny_plan p;
  MXL_TRY(make_plan(opt, &p));
  tiny_vocab v;
  MXL_TRY(load_vocab(opt, &p, &v));
  mxl_status st = set_token_ids(&p.c, v.table);
  if (st == MXL_OK) st = mxl_config_validate(&p.c, "tiny");
  mxl_tiny_gen gen = {.c = &p.c, .seed = opt->seed, .direct_mxfp4 = p.direct_mxfp4};
  gen.stats.first_bad = -1;
  mxl_layout_writer w = {.c = &p.c, .src = mxl_tiny_source(&gen), .progress = progress,
                         .user = user};
  if (st == MXL_OK) {
    w.buf = malloc(MXL_LAYOUT_CHUNK);
    if (!w.buf) st = mxl_errorf(MXL_ERR_MEMORY, "tiny: out of memory");
  }
  if (st == MXL_OK) st = write_all(out_dir, opt, &p, v.table, &w, &gen);
  if (st == MXL_OK && opt->result) fill_result(opt->result, &p, v.table, &w, &gen);
  free(w.buf);
  mxl_tiny_gen_free(&gen);
  vocab_free(&v);
  return st;
}
