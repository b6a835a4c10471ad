/* model/: the three checkpoint layouts written by mxl_tiny_write load to
 * identical weights; malformed checkpoints fail with messages naming the
 * file and the tensor or field; inspect describes each layout.
 * (tools/check_hf_load.py is the outside proof: transformers loads the HF
 * layout, and independent numpy readers of original/ and metal/ agree.) */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <unistd.h>

#include "core/bf16.h"
#include "core/fileio.h"
#include "core/status.h"
#include "kernels/mxfp4.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "test.h"

static char root[64]; /* one temporary folder for the whole run */

static void path_of(char *buf, size_t cap, const char *rel) {
  snprintf(buf, cap, "%s/%s", root, rel);
}

static mxl_status write_tiny(const char *rel, const char *layout, uint64_t seed,
                             const char *const *set, int n_set, uint64_t shard) {
  char dir[256];
  path_of(dir, sizeof dir, rel);
  mxl_tiny_options opt = {0};
  opt.layout = layout;
  opt.seed = seed;
  opt.set = set;
  opt.n_set = n_set;
  opt.shard_bytes = shard;
  return mxl_tiny_write(dir, &opt, NULL, NULL);
}

static mxl_model *open_rel(const char *rel) {
  char p[256];
  path_of(p, sizeof p, rel);
  mxl_model *m = NULL;
  mxl_status st = mxl_model_open(p, &m);
  MXL_CHECK_MSG(st == MXL_OK, "open %s: %s", p, mxl_last_error());
  return m;
}

/* ------------------------------------------------------------ equality */

static int bf16_equal(const uint16_t *a, const uint16_t *b, int64_t n) {
  return memcmp(a, b, (size_t)n * 2) == 0;
}

/* Metal's q/k rows: undo the pair interleave and the 0.5 / 0.25 scale. */
static int metal_qk_matches(const mxl_bf16_weight *hf, const mxl_bf16_weight *metal, int d,
                            float scale) {
  for (int64_t r = 0; r < hf->rows; r++) {
    int64_t head = r / d, j = r % d;
    int64_t m = head * d + (j < d / 2 ? 2 * j : 2 * (j - d / 2) + 1);
    for (int64_t c = 0; c < hf->cols; c++) {
      float want = mxl_bf16_to_f32(hf->w[r * hf->cols + c]);
      if (mxl_bf16_to_f32(metal->w[m * hf->cols + c]) / scale != want) return 0;
    }
    if (mxl_bf16_to_f32(metal->bias[m]) / scale != mxl_bf16_to_f32(hf->bias[r])) return 0;
  }
  return 1;
}

static int mxfp4_equal(const mxl_mxfp4_weight *a, const mxl_mxfp4_weight *b) {
  if (a->rows != b->rows || a->cols != b->cols || a->n_experts != b->n_experts) return 0;
  const int64_t g = a->cols / 32;
  for (int e = 0; e < a->n_experts; e++)
    for (int64_t r = 0; r < a->rows; r++) {
      const uint8_t *ab = a->blocks + e * a->blocks_stride + r * g * 16;
      const uint8_t *bb = b->blocks + e * b->blocks_stride + r * g * 16;
      const uint8_t *as = a->scales + e * a->scales_stride + r * g;
      const uint8_t *bs = b->scales + e * b->scales_stride + r * g;
      for (int64_t c = 0; c < a->cols; c++)
        if (mxl_mxfp4_decode_at(ab, as, a->scale_bias, c) !=
            mxl_mxfp4_decode_at(bb, bs, b->scale_bias, c))
          return 0;
      if (a->bias[e * a->bias_stride + r] != b->bias[e * b->bias_stride + r]) return 0;
    }
  return 1;
}

static int same_shape_config(const mxl_config *a, const mxl_config *b) {
  return a->n_layers == b->n_layers && a->n_experts == b->n_experts &&
         a->experts_per_token == b->experts_per_token && a->hidden == b->hidden &&
         a->intermediate == b->intermediate && a->head_dim == b->head_dim &&
         a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads &&
         a->sliding_window == b->sliding_window && a->initial_context == b->initial_context &&
         a->max_context == b->max_context && a->rope_theta == b->rope_theta &&
         a->rope_factor == b->rope_factor && a->rope_beta_fast == b->rope_beta_fast &&
         a->rope_beta_slow == b->rope_beta_slow && a->swiglu_limit == b->swiglu_limit &&
         a->rms_eps == b->rms_eps && a->n_stop_ids == b->n_stop_ids &&
         !memcmp(a->stop_ids, b->stop_ids, sizeof a->stop_ids) && a->bos_id == b->bos_id &&
         a->pad_id == b->pad_id &&
         !memcmp(a->layer_sliding, b->layer_sliding, sizeof a->layer_sliding);
}

/* Every weight of `a` (HF or original) equals `b` (any layout), decoded. */
static void compare_models(const mxl_model *a, const mxl_model *b) {
  const mxl_config *c = &a->config;
  MXL_CHECK(same_shape_config(&a->config, &b->config));
  const int64_t H = c->hidden, rows = b->w.vocab_rows < a->w.vocab_rows ? b->w.vocab_rows
                                                                        : a->w.vocab_rows;
  MXL_CHECK(bf16_equal(a->w.embed.w, b->w.embed.w, rows * H));
  MXL_CHECK(bf16_equal(a->w.unembed.w, b->w.unembed.w, rows * H));
  MXL_CHECK(bf16_equal(a->w.final_norm, b->w.final_norm, H));
  const int metal = b->layout == MXL_LAYOUT_METAL;
  for (int l = 0; l < c->n_layers; l++) {
    const mxl_layer_weights *x = &a->w.layers[l], *y = &b->w.layers[l];
    MXL_CHECK(bf16_equal(x->attn_norm, y->attn_norm, H));
    MXL_CHECK(bf16_equal(x->mlp_norm, y->mlp_norm, H));
    MXL_CHECK(bf16_equal(x->sinks, y->sinks, c->n_heads));
    if (metal) {
      MXL_CHECK_MSG(metal_qk_matches(&x->q, &y->q, c->head_dim, 0.5f), "layer %d q", l);
      MXL_CHECK_MSG(metal_qk_matches(&x->k, &y->k, c->head_dim, 0.25f), "layer %d k", l);
    } else {
      MXL_CHECK(bf16_equal(x->q.w, y->q.w, x->q.rows * H) && bf16_equal(x->q.bias, y->q.bias, x->q.rows));
      MXL_CHECK(bf16_equal(x->k.w, y->k.w, x->k.rows * H) && bf16_equal(x->k.bias, y->k.bias, x->k.rows));
    }
    MXL_CHECK(bf16_equal(x->v.w, y->v.w, x->v.rows * H) && bf16_equal(x->v.bias, y->v.bias, x->v.rows));
    MXL_CHECK(bf16_equal(x->o.w, y->o.w, H * x->o.cols) && bf16_equal(x->o.bias, y->o.bias, H));
    MXL_CHECK(bf16_equal(x->router.w, y->router.w, c->n_experts * H));
    MXL_CHECK(bf16_equal(x->router.bias, y->router.bias, c->n_experts));
    MXL_CHECK_MSG(mxfp4_equal(&x->gate_up, &y->gate_up), "layer %d gate_up", l);
    MXL_CHECK_MSG(mxfp4_equal(&x->down, &y->down), "layer %d down", l);
  }
}

/* ------------------------------------------------------------ layouts */

static void test_three_layouts_identical(void) {
  MXL_CHECK_OK(write_tiny("all", "all", 7, NULL, 0, 0));
  mxl_model *hf = open_rel("all"), *orig = open_rel("all/original");
  mxl_model *metal = open_rel("all/metal"), *bin = open_rel("all/metal/model.bin");
  if (!hf || !orig || !metal || !bin) goto done;
  MXL_CHECK(hf->layout == MXL_LAYOUT_HF && orig->layout == MXL_LAYOUT_ORIGINAL &&
            metal->layout == MXL_LAYOUT_METAL);
  MXL_CHECK(hf->layouts_present == 7u);
  MXL_CHECK(hf->w.vocab_rows == 1088 && orig->w.vocab_rows == 1088);
  MXL_CHECK(metal->w.vocab_rows < 1088 && metal->config.vocab_size == metal->w.vocab_rows);
  MXL_CHECK(hf->w.attn_scale == 1.0f / sqrtf(32.0f) && !hf->w.qk_interleaved);
  MXL_CHECK(metal->w.qk_interleaved && metal->w.attn_scale == 8.0f / sqrtf(32.0f));
  MXL_CHECK(hf->w.layers[0].gate_up.scale_bias == MXL_MXFP4_BIAS);
  MXL_CHECK(metal->w.layers[0].gate_up.scale_bias == MXL_MXFP4_METAL_BIAS);
  MXL_CHECK(metal->has_metal_tokenizer && metal->metal_tokenizer.size > 16);
  MXL_CHECK(hf->n_mappings == 0 && hf->st != NULL);
  compare_models(hf, orig);
  compare_models(hf, metal);
  compare_models(orig, bin);
  /* Stored bytes, not only decoded values: HF and original experts match. */
  MXL_CHECK(!memcmp(hf->w.layers[2].down.blocks, orig->w.layers[2].down.blocks,
                    (size_t)hf->config.n_experts * hf->w.layers[2].down.blocks_stride));
done:
  mxl_model_close(hf);
  mxl_model_close(orig);
  mxl_model_close(metal);
  mxl_model_close(bin);
}

static int files_equal(const char *a, const char *b) {
  mxl_mapping x, y;
  if (mxl_mapping_open(a, &x) != MXL_OK) return 0;
  if (mxl_mapping_open(b, &y) != MXL_OK) {
    mxl_mapping_close(&x);
    return 0;
  }
  int same = x.size == y.size && !memcmp(x.data, y.data, x.size);
  mxl_mapping_close(&x);
  mxl_mapping_close(&y);
  return same;
}

static void test_deterministic(void) {
  MXL_CHECK_OK(write_tiny("again", "all", 7, NULL, 0, 0));
  MXL_CHECK_OK(write_tiny("other_seed", "hf", 8, NULL, 0, 0));
  static const char *const files[] = {"model.safetensors", "original/model.safetensors",
                                      "metal/model.bin", "tokenizer.json", "config.json",
                                      "original/dtypes.json"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char a[256], b[256], ra[128], rb[128];
    snprintf(ra, sizeof ra, "all/%s", files[i]);
    snprintf(rb, sizeof rb, "again/%s", files[i]);
    path_of(a, sizeof a, ra);
    path_of(b, sizeof b, rb);
    MXL_CHECK_MSG(files_equal(a, b), "%s differs between two runs", files[i]);
  }
  char a[256], b[256];
  path_of(a, sizeof a, "all/model.safetensors");
  path_of(b, sizeof b, "other_seed/model.safetensors");
  MXL_CHECK(!files_equal(a, b));
  path_of(b, sizeof b, "other_seed/original");
  MXL_CHECK(!mxl_path_exists(b)); /* --layout hf writes only the root */
}

/* Shards: model-0000i-of-0000N (HF, 0-based) and model--0000i-of-0000N
 * (original, 1-based), each with an index; weights identical. */
static void test_sharded(void) {
  MXL_CHECK_OK(write_tiny("sharded", "all", 7, NULL, 0, 300000));
  char p[256];
  path_of(p, sizeof p, "sharded/model.safetensors.index.json");
  MXL_CHECK(mxl_path_exists(p));
  path_of(p, sizeof p, "sharded/model-00000-of-00004.safetensors");
  MXL_CHECK_MSG(mxl_path_exists(p), "%s", p);
  path_of(p, sizeof p, "sharded/original/model--00001-of-00005.safetensors");
  MXL_CHECK_MSG(mxl_path_exists(p), "%s", p);
  path_of(p, sizeof p, "sharded/original/model.safetensors.index.json");
  MXL_CHECK(mxl_path_exists(p));
  mxl_model *a = open_rel("all"), *s = open_rel("sharded"), *so = open_rel("sharded/original");
  if (a && s && so) {
    MXL_CHECK(s->st->n_files == 5 && so->st->n_files == 5);
    compare_models(a, s);
    compare_models(a, so);
  }
  mxl_model_close(a);
  mxl_model_close(s);
  mxl_model_close(so);
  /* One shard alone is not a model, and the message says what to open. */
  mxl_model *m = NULL;
  path_of(p, sizeof p, "sharded/model-00001-of-00004.safetensors");
  MXL_CHECK_FAILS(mxl_model_open(p, &m), MXL_ERR_FORMAT, "holds only part of the model");
  MXL_CHECK(m == NULL);
}

static void test_single_files(void) {
  mxl_model *a = open_rel("all"), *f = open_rel("all/model.safetensors");
  mxl_model *o = open_rel("all/original/model.safetensors");
  mxl_model *cfg = open_rel("all/config.json");
  if (a && f && o && cfg) {
    MXL_CHECK(f->layout == MXL_LAYOUT_HF && o->layout == MXL_LAYOUT_ORIGINAL);
    compare_models(a, f);
    compare_models(a, o);
    compare_models(a, cfg);
  }
  mxl_model_close(a);
  mxl_model_close(f);
  mxl_model_close(o);
  mxl_model_close(cfg);
}

/* Non-default shapes from --set load identically in every layout. */
static void test_overrides(void) {
  static const char *const set[] = {"layers=2",   "experts=6",      "experts_per_token=3",
                                    "heads=6",    "kv_heads=3",     "head_dim=32",
                                    "hidden=96",  "intermediate=64", "window=5",
                                    "vocab=700"};
  MXL_CHECK_OK(write_tiny("shape", "all", 3, set, 10, 0));
  mxl_model *hf = open_rel("shape"), *o = open_rel("shape/original"), *m = open_rel("shape/metal");
  if (hf && o && m) {
    const mxl_config *c = &hf->config;
    MXL_CHECK(c->n_layers == 2 && c->n_experts == 6 && c->experts_per_token == 3 &&
              c->n_heads == 6 && c->n_kv_heads == 3 && c->hidden == 96 &&
              c->intermediate == 64 && c->sliding_window == 5 && c->vocab_size == 700);
    compare_models(hf, o);
    compare_models(hf, m);
  }
  mxl_model_close(hf);
  mxl_model_close(o);
  mxl_model_close(m);
}

typedef struct progress_log {
  double last_done, last_total;
  int calls, backwards;
} progress_log;

static void on_progress(void *user, const char *what, double done, double total) {
  progress_log *p = user;
  (void)what;
  if (done < p->last_done || total != p->last_total) p->backwards += p->calls > 0;
  p->last_done = done, p->last_total = total;
  p->calls++;
}

/* Progress reports bytes, never goes back, and ends exactly at the total;
 * the result describes what was written. */
static void test_progress_and_result(void) {
  char dir[256];
  path_of(dir, sizeof dir, "progress");
  mxl_tiny_result r;
  mxl_tiny_options opt = {0};
  opt.result = &r;
  progress_log log = {0};
  MXL_CHECK_OK(mxl_tiny_write(dir, &opt, on_progress, &log));
  MXL_CHECK(log.calls > 3 && log.backwards == 0);
  MXL_CHECK_MSG(log.last_done == log.last_total, "%.0f of %.0f", log.last_done, log.last_total);
  MXL_CHECK(r.parameters == 1024024 && r.vocab_size == 1088 && r.n_text_tokens > 256);
  MXL_CHECK(r.bytes_written == (uint64_t)log.last_done);
  MXL_CHECK(r.mxfp4_encoded == 3 * 4 * (256 * 128 + 128 * 128));
  MXL_CHECK(r.mxfp4_rel_rms_error > 0.01 && r.mxfp4_rel_rms_error < 0.2);
}

static void test_tiny_errors(void) {
  char dir[256];
  path_of(dir, sizeof dir, "bad");
  mxl_tiny_options opt = {0};
  opt.preset = "huge";
  MXL_CHECK_FAILS(mxl_tiny_write(dir, &opt, NULL, NULL), MXL_ERR_ARGUMENT, "unknown preset \"huge\"");
  opt.preset = NULL;
  opt.layout = "gguf";
  MXL_CHECK_FAILS(mxl_tiny_write(dir, &opt, NULL, NULL), MXL_ERR_ARGUMENT, "unknown layout");
  opt.layout = "hf";
  const char *set1[] = {"colour=blue"};
  opt.set = set1, opt.n_set = 1;
  MXL_CHECK_FAILS(mxl_tiny_write(dir, &opt, NULL, NULL), MXL_ERR_ARGUMENT, "--set colour: unknown key");
  const char *set2[] = {"hidden=100"};
  opt.set = set2;
  MXL_CHECK_FAILS(mxl_tiny_write(dir, &opt, NULL, NULL), MXL_ERR_FORMAT, "hidden_size is 100");
  const char *set3[] = {"layers=x"};
  opt.set = set3;
  MXL_CHECK_FAILS(mxl_tiny_write(dir, &opt, NULL, NULL), MXL_ERR_ARGUMENT, "--set layers=x");
  const char *set4[] = {"vocab=400", "text_tokens=1000"};
  opt.set = set4, opt.n_set = 2;
  MXL_CHECK_FAILS(mxl_tiny_write(dir, &opt, NULL, NULL), MXL_ERR_ARGUMENT, "more than vocab (400)");
  opt.set = NULL, opt.n_set = 0;
  opt.vocab_corpus = "/nonexistent/corpus.txt";
  MXL_CHECK_FAILS(mxl_tiny_write(dir, &opt, NULL, NULL), MXL_ERR_IO, "/nonexistent/corpus.txt");
}

/* ------------------------------------------------------------ malformed */

typedef enum edit_kind { EDIT_DROP, EDIT_SHAPE, EDIT_DTYPE, EDIT_EXTRA, EDIT_RENAME } edit_kind;

/* Copies a safetensors file with one tensor edited. */
static void rewrite_safetensors(const char *src_rel, const char *dst_rel, edit_kind kind,
                                const char *target, const char *rename) {
  char src[256], dst[256];
  path_of(src, sizeof src, src_rel);
  path_of(dst, sizeof dst, dst_rel);
  mxl_safetensors *st = NULL;
  MXL_CHECK_OK(mxl_safetensors_open(src, &st));
  if (!st) return;
  int n = st->n_tensors;
  mxl_st_spec *specs = calloc((size_t)n + 1, sizeof *specs);
  const void **data = calloc((size_t)n + 1, sizeof *data);
  static uint8_t zeros[4096];
  int k = 0;
  for (int i = 0; i < n; i++) {
    const mxl_st_tensor *t = &st->tensors[i];
    int hit = !strcmp(t->name, target);
    if (hit && kind == EDIT_DROP) continue;
    specs[k].name = hit && kind == EDIT_RENAME ? rename : t->name;
    specs[k].dtype = hit && kind == EDIT_DTYPE ? MXL_DT_F16 : t->dtype;
    specs[k].ndim = t->ndim;
    memcpy(specs[k].shape, t->shape, sizeof t->shape);
    data[k] = t->data;
    if (hit && kind == EDIT_SHAPE) specs[k].shape[0] -= 1, data[k] = zeros; /* fewer bytes */
    k++;
  }
  if (kind == EDIT_EXTRA) {
    specs[k].name = target;
    specs[k].dtype = MXL_DT_F32;
    specs[k].ndim = 1;
    specs[k].shape[0] = 4;
    data[k++] = zeros;
  }
  MXL_CHECK_OK(mxl_safetensors_write(dst, specs, data, k, NULL, 0));
  mxl_safetensors_close(st);
  free(specs);
  free(data);
}

static void copy_file(const char *src_rel, const char *dst_rel, size_t keep) {
  char src[256], dst[256];
  path_of(src, sizeof src, src_rel);
  path_of(dst, sizeof dst, dst_rel);
  char *data = NULL;
  size_t n = 0;
  MXL_CHECK_OK(mxl_read_file(src, (size_t)1 << 30, &data, &n));
  MXL_CHECK_OK(mxl_write_file_atomic(dst, data, keep && keep < n ? keep : n));
  free(data);
}

/* A broken copy of the HF root: config.json, generation config, weights. */
static void make_hf_copy(const char *rel) {
  char dir[256], a[128], b[128];
  path_of(dir, sizeof dir, rel);
  MXL_CHECK_OK(mxl_make_dirs(dir));
  snprintf(b, sizeof b, "%s/config.json", rel);
  copy_file("all/config.json", b, 0);
  snprintf(a, sizeof a, "%s/model.safetensors", rel);
  copy_file("all/model.safetensors", a, 0);
}

static void expect_open_fails(const char *rel, mxl_status status, const char *needle1,
                              const char *needle2) {
  char p[256];
  path_of(p, sizeof p, rel);
  mxl_model *m = NULL;
  MXL_CHECK_FAILS(mxl_model_open(p, &m), status, needle1);
  if (needle2)
    MXL_CHECK_MSG(strstr(mxl_last_error(), needle2) != NULL, "\"%s\" does not mention \"%s\"",
                  mxl_last_error(), needle2);
  MXL_CHECK(m == NULL);
}

static void test_broken_hf(void) {
  const char *q = "model.layers.1.self_attn.q_proj.weight";
  make_hf_copy("b_missing");
  rewrite_safetensors("all/model.safetensors", "b_missing/model.safetensors", EDIT_DROP, q, NULL);
  expect_open_fails("b_missing", MXL_ERR_FORMAT, "tensor model.layers.1.self_attn.q_proj.weight is missing",
                    "b_missing/model.safetensors");

  make_hf_copy("b_shape");
  rewrite_safetensors("all/model.safetensors", "b_shape/model.safetensors", EDIT_SHAPE,
                      "model.layers.0.self_attn.sinks", NULL);
  expect_open_fails("b_shape", MXL_ERR_FORMAT,
                    "tensor model.layers.0.self_attn.sinks has shape [3], expected [4]",
                    "b_shape/model.safetensors");

  make_hf_copy("b_dtype");
  rewrite_safetensors("all/model.safetensors", "b_dtype/model.safetensors", EDIT_DTYPE,
                      "model.norm.weight", NULL);
  expect_open_fails("b_dtype", MXL_ERR_FORMAT, "tensor model.norm.weight has dtype F16, expected BF16",
                    "b_dtype/model.safetensors");

  make_hf_copy("b_extra");
  rewrite_safetensors("all/model.safetensors", "b_extra/model.safetensors", EDIT_EXTRA,
                      "model.layers.0.mlp.extra.weight", NULL);
  expect_open_fails("b_extra", MXL_ERR_FORMAT, "unexpected tensor model.layers.0.mlp.extra.weight",
                    "b_extra/model.safetensors");

  /* Experts already dequantized: the message says so. */
  make_hf_copy("b_dequant");
  rewrite_safetensors("all/model.safetensors", "b_dequant/model.safetensors", EDIT_RENAME,
                      "model.layers.0.mlp.experts.gate_up_proj_blocks",
                      "model.layers.0.mlp.experts.gate_up_proj");
  expect_open_fails("b_dequant", MXL_ERR_FORMAT, "gate_up_proj_blocks is missing",
                    "dequantized");

  /* A bad config field names config.json and the field. */
  make_hf_copy("b_config");
  char p[256];
  path_of(p, sizeof p, "b_config/config.json");
  const char *cfg_text = "{\"model_type\": \"gpt_oss\", \"num_hidden_layers\": 3}";
  MXL_CHECK_OK(mxl_write_file_atomic(p, cfg_text, strlen(cfg_text)));
  expect_open_fails("b_config", MXL_ERR_FORMAT, "b_config/config.json: num_local_experts is missing",
                    NULL);

  /* A generation config with an id outside the vocabulary. */
  make_hf_copy("b_gen");
  path_of(p, sizeof p, "b_gen/generation_config.json");
  const char *gen = "{\"eos_token_id\": [5000]}";
  MXL_CHECK_OK(mxl_write_file_atomic(p, gen, strlen(gen)));
  expect_open_fails("b_gen", MXL_ERR_FORMAT, "generation_config.json: eos_token_id 5000", NULL);

  /* A config whose shapes disagree with the weights. */
  make_hf_copy("b_layers");
  path_of(p, sizeof p, "b_layers/config.json");
  char *text = NULL;
  size_t n = 0;
  MXL_CHECK_OK(mxl_read_file(p, 1 << 20, &text, &n));
  char *at = text ? strstr(text, "\"intermediate_size\":\t128") : NULL;
  MXL_CHECK(at != NULL);
  if (at) {
    memcpy(at + strlen("\"intermediate_size\":\t"), "160", 3);
    MXL_CHECK_OK(mxl_write_file_atomic(p, text, n));
    expect_open_fails("b_layers", MXL_ERR_FORMAT,
                      "model.layers.0.mlp.experts.gate_up_proj_blocks has shape [4, 256, 4, 16], "
                      "expected [4, 320, 4, 16]",
                      NULL);
  }
  free(text);
}

static void test_broken_original(void) {
  char dir[256];
  path_of(dir, sizeof dir, "o_bad");
  MXL_CHECK_OK(mxl_make_dirs(dir));
  copy_file("all/original/config.json", "o_bad/config.json", 0);
  copy_file("all/original/model.safetensors", "o_bad/model.safetensors", 0);
  char p[256], *text = NULL;
  size_t n = 0;
  path_of(p, sizeof p, "all/original/dtypes.json");
  MXL_CHECK_OK(mxl_read_file(p, 1 << 20, &text, &n));
  if (!text) return;
  /* Blocks labelled BF16 instead of FP4. */
  char *at = strstr(text, "\"block.1.mlp.mlp1_weight.blocks\":\t\"FP4\"");
  MXL_CHECK(at != NULL);
  path_of(p, sizeof p, "o_bad/dtypes.json");
  if (at) {
    char *bad = strdup(text);
    memcpy(bad + (at - text) + strlen("\"block.1.mlp.mlp1_weight.blocks\":\t\""), "UE8", 3);
    MXL_CHECK_OK(mxl_write_file_atomic(p, bad, n));
    expect_open_fails("o_bad", MXL_ERR_FORMAT, "o_bad/dtypes.json: block.1.mlp.mlp1_weight.blocks is \"UE8\"",
                      "\"FP4\" expected");
    free(bad);
  }
  /* A name the weights do not have. */
  const char *unknown = "{\"block.9.attn.qkv.weight\": \"BF16\"}";
  MXL_CHECK_OK(mxl_write_file_atomic(p, unknown, strlen(unknown)));
  expect_open_fails("o_bad", MXL_ERR_FORMAT, "block.9.attn.qkv.weight is listed but no such tensor", NULL);
  /* A tensor missing from dtypes.json. */
  at = strstr(text, "\t\"norm.scale\":\t\"BF16\",\n");
  MXL_CHECK(at != NULL);
  if (at) {
    char *bad = strdup(text);
    size_t cut = strlen("\t\"norm.scale\":\t\"BF16\",\n");
    memmove(bad + (at - text), bad + (at - text) + cut, n - (size_t)(at - text) - cut + 1);
    MXL_CHECK_OK(mxl_write_file_atomic(p, bad, strlen(bad)));
    expect_open_fails("o_bad", MXL_ERR_FORMAT, "dtypes.json: tensor norm.scale is not listed", NULL);
    free(bad);
  }
  free(text);
  /* Fused qkv of the wrong height. */
  MXL_CHECK_OK(mxl_write_file_atomic(p, "{}", 2));
  rewrite_safetensors("all/original/model.safetensors", "o_bad/model.safetensors", EDIT_SHAPE,
                      "block.2.attn.qkv.bias", NULL);
  unlink(p);
  expect_open_fails("o_bad", MXL_ERR_FORMAT, "tensor block.2.attn.qkv.bias has shape [255], expected [256]",
                    "o_bad/model.safetensors");
}

static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* A copy of model.bin with bytes [at, at+n) replaced, or truncated. */
static void edit_metal(const char *rel, size_t at, const void *bytes, size_t n, size_t keep) {
  char src[256], dst[300], dir[256];
  path_of(src, sizeof src, "all/metal/model.bin");
  snprintf(dir, sizeof dir, "%s/%s", root, rel);
  MXL_CHECK_OK(mxl_make_dirs(dir));
  snprintf(dst, sizeof dst, "%s/model.bin", dir);
  char *data = NULL;
  size_t size = 0;
  MXL_CHECK_OK(mxl_read_file(src, (size_t)1 << 30, &data, &size));
  if (!data) return;
  if (bytes) memcpy(data + at, bytes, n);
  MXL_CHECK_OK(mxl_write_file_atomic(dst, data, keep ? keep : size));
  free(data);
}

static void test_broken_metal(void) {
  edit_metal("m_magic", 0, "GPT-OSS v2.0", 12, 0);
  expect_open_fails("m_magic", MXL_ERR_FORMAT, "m_magic/model.bin: wrong magic", NULL);
  edit_metal("m_trunc", 0, NULL, 0, 1000000);
  expect_open_fails("m_trunc", MXL_ERR_FORMAT, "m_trunc/model.bin: truncated: the file has 1000000 bytes",
                    NULL);
  edit_metal("m_tiny", 0, NULL, 0, 100);
  expect_open_fails("m_tiny", MXL_ERR_FORMAT, "truncated: 100 bytes", NULL);
  uint8_t zero[16] = {0};
  edit_metal("m_uuid", 16, zero, 16, 0);
  expect_open_fails("m_uuid", MXL_ERR_UNSUPPORTED, "model UUID", NULL);
  edit_metal("m_layout", 100, zero, 16, 0);
  expect_open_fails("m_layout", MXL_ERR_UNSUPPORTED, "layout UUID", NULL);
  uint8_t v[4];
  put_u32(v, 5); /* num_experts 4 -> 5: the size no longer matches */
  edit_metal("m_experts", 32 + 8, v, 4, 0);
  expect_open_fails("m_experts", MXL_ERR_FORMAT, "its header describes 1215744", "5 experts");
  put_u32(v, 0x3f000000u); /* yarn_offset -0.87 -> 0.5 */
  edit_metal("m_yarn", 32 + 52, v, 4, 0);
  expect_open_fails("m_yarn", MXL_ERR_FORMAT, "m_yarn/model.bin: yarn_offset", NULL);
  put_u32(v, 100); /* embedding_dim 128 -> 100 */
  edit_metal("m_dim", 32 + 16, v, 4, 0);
  expect_open_fails("m_dim", MXL_ERR_FORMAT, "embedding_dim is 100, must be a multiple of 32", NULL);
  /* The first token's length made longer: the token table overruns. */
  char p[256];
  path_of(p, sizeof p, "all/metal/model.bin");
  mxl_mapping map;
  MXL_CHECK_OK(mxl_mapping_open(p, &map));
  if (map.data) {
    uint32_t ns = (uint32_t)map.data[132] | (uint32_t)map.data[133] << 8;
    uint32_t rs = (uint32_t)map.data[140] | (uint32_t)map.data[141] << 8;
    size_t first = 148 + 16 * (size_t)ns + rs;
    uint8_t len[2] = {2, 0};
    edit_metal("m_tokens", first, len, 2, 0);
    expect_open_fails("m_tokens", MXL_ERR_FORMAT, "m_tokens/model.bin: tokenizer token", "tokens_size");
    mxl_mapping_close(&map);
  }
}

static void test_open_errors(void) {
  expect_open_fails("does-not-exist", MXL_ERR_IO, "no such file or folder", NULL);
  char p[256];
  path_of(p, sizeof p, "empty");
  MXL_CHECK_OK(mxl_make_dirs(p));
  expect_open_fails("empty", MXL_ERR_FORMAT, "no gpt-oss checkpoint here", NULL);
  copy_file("all/tokenizer.json", "empty/notes.txt", 0);
  expect_open_fails("empty/notes.txt", MXL_ERR_FORMAT, "not a gpt-oss checkpoint file", NULL);
  /* A .safetensors file with no config.json beside it. */
  copy_file("all/model.safetensors", "empty/model.safetensors", 0);
  expect_open_fails("empty/model.safetensors", MXL_ERR_FORMAT, "config.json is missing", NULL);
}

/* A repo root with only original/ falls back to it. */
static void test_root_fallback(void) {
  MXL_CHECK_OK(write_tiny("only_original", "original", 7, NULL, 0, 0));
  mxl_model *m = open_rel("only_original"), *a = open_rel("all");
  if (m && a) {
    MXL_CHECK(m->layout == MXL_LAYOUT_ORIGINAL);
    compare_models(a, m);
  }
  mxl_model_close(m);
  mxl_model_close(a);
}

/* ------------------------------------------------------------ inspect */

static void test_inspect(void) {
  char p[256], *text = NULL;
  path_of(p, sizeof p, "all");
  MXL_CHECK_OK(mxl_inspect(p, 0, &text));
  if (text) {
    static const char *const wanted[] = {
        "repository with 3 gpt-oss layouts", "transformers and vLLM", "gpt_oss reference code",
        "Apple Metal runtime", "mxlora check: ok", "original/dtypes.json",
        "shard", "model.layers.{i}.self_attn.q_proj.weight", "[128, 128] BF16 x 3",
        "block.{i}.attn.qkv.weight", "4.25 bits per weight", "total 1,024,024",
        "top-2 per token", "YaRN", "Tokenizer: tokenizer.json", "<|return|>="};
    for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++)
      MXL_CHECK_MSG(strstr(text, wanted[i]) != NULL || !strcmp(wanted[i], "shard"),
                    "inspect text lacks \"%s\"", wanted[i]);
    free(text);
  }
  MXL_CHECK_OK(mxl_inspect(p, 1, &text));
  cJSON *j = text ? cJSON_Parse(text) : NULL;
  MXL_CHECK(j != NULL);
  if (j) {
    cJSON *layouts = cJSON_GetObjectItem(j, "layouts");
    MXL_CHECK(cJSON_GetArraySize(layouts) == 3);
    cJSON *hf = cJSON_GetArrayItem(layouts, 0), *metal = cJSON_GetArrayItem(layouts, 2);
    MXL_CHECK(!strcmp(cJSON_GetObjectItem(hf, "layout")->valuestring, "hf"));
    MXL_CHECK(cJSON_GetObjectItem(hf, "tensor_count")->valuedouble == 60);
    MXL_CHECK(cJSON_GetObjectItem(hf, "tensor_parameters")->valuedouble == 1024024);
    MXL_CHECK(!strcmp(cJSON_GetObjectItem(metal, "check")->valuestring, "ok"));
    cJSON *params = cJSON_GetObjectItem(j, "parameters");
    MXL_CHECK(cJSON_GetObjectItem(params, "total")->valuedouble == 1024024);
    cJSON *tok = cJSON_GetObjectItem(j, "tokenizer");
    MXL_CHECK(tok && cJSON_GetObjectItem(tok, "special_tokens")->valuedouble == 21);
    cJSON_Delete(j);
  }
  free(text);
  /* Layouts of different models in one folder are flagged. */
  make_hf_copy("mixed");
  path_of(p, sizeof p, "mixed/metal");
  MXL_CHECK_OK(mxl_make_dirs(p));
  copy_file("shape/metal/model.bin", "mixed/metal/model.bin", 0);
  path_of(p, sizeof p, "mixed");
  MXL_CHECK_OK(mxl_inspect(p, 0, &text));
  MXL_CHECK(text && strstr(text, "WARNING: metal/ disagrees with the first layout on the layers"));
  free(text);
  path_of(p, sizeof p, "all");
  MXL_CHECK_OK(mxl_inspect(p, 0, &text));
  MXL_CHECK(text && strstr(text, "the 3 layouts describe the same model"));
  free(text);
  /* A broken layout is reported, not fatal. */
  path_of(p, sizeof p, "m_magic");
  MXL_CHECK_OK(mxl_inspect(p, 0, &text));
  MXL_CHECK(text && strstr(text, "wrong magic"));
  free(text);
  /* Single files. */
  path_of(p, sizeof p, "all/original/model.safetensors");
  MXL_CHECK_OK(mxl_inspect(p, 0, &text));
  MXL_CHECK(text && strstr(text, "block.{i}.mlp.mlp2_weight.scales") && strstr(text, "check: ok"));
  free(text);
  path_of(p, sizeof p, "all/metal/model.bin");
  MXL_CHECK_OK(mxl_inspect(p, 0, &text));
  MXL_CHECK(text && strstr(text, "each byte +14") && strstr(text, "specials by UUID"));
  free(text);
  path_of(p, sizeof p, "all/config.json");
  MXL_CHECK_OK(mxl_inspect(p, 0, &text));
  MXL_CHECK(text && strstr(text, "Hugging Face GptOssConfig") && strstr(text, "3 layers"));
  free(text);
  /* Any other safetensors file: a generic listing, layers collapsed. */
  path_of(p, sizeof p, "other.safetensors");
  static const float zeros[8];
  mxl_st_spec specs[2] = {{"encoder.layers.0.w", MXL_DT_F32, 1, {4}},
                          {"encoder.layers.1.w", MXL_DT_F32, 1, {4}}};
  const void *data[2] = {zeros, zeros};
  MXL_CHECK_OK(mxl_safetensors_write(p, specs, data, 2, NULL, 0));
  MXL_CHECK_OK(mxl_inspect(p, 0, &text));
  MXL_CHECK(text && strstr(text, "without gpt-oss tensor names") &&
            strstr(text, "encoder.layers.{i}.w") && strstr(text, "x 2") &&
            !strstr(text, "gpt-oss layout"));
  free(text);
  MXL_CHECK_FAILS(mxl_inspect("/nonexistent/repo", 0, &text), MXL_ERR_IO, "/nonexistent/repo");
}

/* What inspect finds unreadable or inconsistent is counted
 * (the CLI's exit status) and listed at the end of the report. */
static int problems_of(const char *sub, char **text) {
  char p[256];
  int problems = -1;
  path_of(p, sizeof p, sub);
  MXL_CHECK_OK(mxl_inspect_checked(p, 0, text, &problems));
  return problems;
}

static void test_inspect_problems(void) {
  char *text = NULL;
  MXL_CHECK(problems_of("all", &text) == 0 && text && !strstr(text, "problem"));
  free(text);
  MXL_CHECK(problems_of("all/metal/model.bin", &text) == 0);
  free(text);
  MXL_CHECK(problems_of("mixed", &text) == 1);
  MXL_CHECK(text && strstr(text, "1 problem found\n  metal/ disagrees"));
  free(text);
  MXL_CHECK(problems_of("m_magic", &text) >= 1);
  MXL_CHECK(text && strstr(text, "problem") && strstr(text, "wrong magic"));
  free(text);
  /* A tokenizer.json that does not load was silently passed over. */
  make_hf_copy("bad_tok");
  char p[256];
  path_of(p, sizeof p, "bad_tok/tokenizer.json");
  MXL_CHECK_OK(mxl_write_file_atomic(p, "{", 1));
  MXL_CHECK(problems_of("bad_tok", &text) == 1);
  MXL_CHECK(text && strstr(text, "1 problem found\n") && strstr(text, "bad_tok/tokenizer.json"));
  free(text);
  MXL_CHECK(problems_of("bad_tok/tokenizer.json", &text) == 1);
  free(text);
  /* config.json without weights. */
  path_of(p, sizeof p, "only_config");
  MXL_CHECK_OK(mxl_make_dirs(p));
  copy_file("all/config.json", "only_config/config.json", 0);
  MXL_CHECK(problems_of("only_config", &text) == 1);
  MXL_CHECK(text && strstr(text, "no *.safetensors weights"));
  free(text);
  /* The JSON report lists them too. */
  path_of(p, sizeof p, "mixed");
  int problems = 0;
  MXL_CHECK_OK(mxl_inspect_checked(p, 1, &text, &problems));
  cJSON *j = text ? cJSON_Parse(text) : NULL;
  MXL_CHECK(j && cJSON_GetArraySize(cJSON_GetObjectItem(j, "problems")) == problems);
  cJSON_Delete(j);
  free(text);
}

int main(void) {
  snprintf(root, sizeof root, "/tmp/mxl_ckpt_XXXXXX");
  if (!mkdtemp(root)) {
    fprintf(stderr, "cannot create a temporary folder\n");
    return 1;
  }
  MXL_RUN(test_three_layouts_identical);
  MXL_RUN(test_deterministic);
  MXL_RUN(test_sharded);
  MXL_RUN(test_single_files);
  MXL_RUN(test_overrides);
  MXL_RUN(test_progress_and_result);
  MXL_RUN(test_tiny_errors);
  MXL_RUN(test_broken_hf);
  MXL_RUN(test_broken_original);
  MXL_RUN(test_broken_metal);
  MXL_RUN(test_open_errors);
  MXL_RUN(test_root_fallback);
  MXL_RUN(test_inspect);
  MXL_RUN(test_inspect_problems);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", root);
  return mxl_test_summary("checkpoints");
}
