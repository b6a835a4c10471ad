/* adapters/: GGUF export (tensor by tensor against the LoRA set, split and
 * fused gate/up, alpha, --match against a base GGUF), the GGUF reader on
 * malformed files, and PEFT import in every expert layout (Unsloth's
 * gate_up_projs.N, per-expert gate/up/down modules, rank and alpha
 * patterns): the imported set's deltas equal the ones the file describes,
 * computed here from the file's own tensors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adapters/gguf.h"
#include "adapters/gguf_export.h"
#include "adapters/peft.h"
#include "core/fileio.h"
#include "core/status.h"
#include "model/safetensors.h"
#include "test.h"
#include "tests/adapter_fixture.h"

static char tmp_dir[64];

static const char *tmp_path(const char *name) {
  static char path[4][200];
  static int next;
  char *p = path[next++ % 4];
  snprintf(p, 200, "%s/%s", tmp_dir, name);
  return p;
}

static mxl_lora *make_lora(const mxl_config *c, int rank, float alpha, int rslora,
                           unsigned targets, uint64_t seed) {
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, rank, alpha);
  lc.rslora = rslora;
  if (mxl_lora_config_add(&lc, targets, NULL, 0, c->n_layers) != MXL_OK) return NULL;
  mxl_lora *lora = NULL;
  if (mxl_lora_create(c, &lc, NULL, &lora) != MXL_OK) return NULL;
  fixture_fill(lora, seed, 0.5f);
  return lora;
}

/* ------------------------------------------------------------ GGUF */

typedef struct gguf_file {
  mxl_mapping map;
  mxl_gguf *g;
} gguf_file;

static int gguf_open(const char *path, gguf_file *f) {
  memset(f, 0, sizeof *f);
  if (mxl_mapping_open(path, &f->map) != MXL_OK) return 0;
  return mxl_gguf_parse(f->map.data, f->map.size, path, 0, &f->g) == MXL_OK;
}

static void gguf_close(gguf_file *f) {
  mxl_gguf_free(f->g);
  mxl_mapping_close(&f->map);
}

static const float *tensor_f32(const mxl_gguf *g, const char *name) {
  const mxl_gguf_tensor *t = mxl_gguf_find_tensor(g, name);
  return t && t->type == MXL_GGML_F32 ? (const float *)(const void *)t->data : NULL;
}

/* Every GGUF tensor holds the set's numbers in llama.cpp's orientation. */
static void check_gguf_values(const mxl_gguf *g, const mxl_lora *lora, int fused) {
  const mxl_lora_layout *lay = lora->layout;
  static const char *const attn[4] = {"attn_q", "attn_k", "attn_v", "attn_output"};
  size_t bad = 0, checked = 0;
  for (int l = 0; l < lay->n_layers; l++)
    for (int t = 0; t < MXL_LORA_N_TARGETS; t++) {
      mxl_lora_pair p;
      if (!mxl_lora_find(lay, lora->params, l, (mxl_lora_target)t, &p)) continue;
      const int parts = t == MXL_LORA_GATE_UP && !fused ? 2 : 1;
      for (int part = 0; part < parts; part++) {
        char base[80], name[96];
        if (t <= MXL_LORA_O) snprintf(base, sizeof base, "blk.%d.%s.weight", l, attn[t]);
        else if (t == MXL_LORA_DOWN) snprintf(base, sizeof base, "blk.%d.ffn_down_exps.weight", l);
        else
          snprintf(base, sizeof base, "blk.%d.%s.weight", l,
                   fused ? "ffn_gate_up_exps" : part ? "ffn_up_exps" : "ffn_gate_exps");
        snprintf(name, sizeof name, "%s.lora_a", base);
        const mxl_gguf_tensor *ta = mxl_gguf_find_tensor(g, name);
        const float *a = tensor_f32(g, name);
        snprintf(name, sizeof name, "%s.lora_b", base);
        const mxl_gguf_tensor *tb = mxl_gguf_find_tensor(g, name);
        const float *b = tensor_f32(g, name);
        MXL_CHECK_MSG(a && b, "%s", base);
        if (!a || !b) continue;
        /* llama.cpp's checks: A ne[0] = in, B ne[1] = out, A ne[1] = B ne[0] = r */
        const int rows = parts == 2 ? p.out / 2 : p.out;
        MXL_CHECK(ta->ne[0] == p.in && ta->ne[1] == p.rank && tb->ne[0] == p.rank &&
                  tb->ne[1] == rows && ta->ne[2] == p.n_experts && tb->ne[2] == p.n_experts);
        for (int e = 0; e < p.n_experts; e++) {
          const float *A = p.A + (size_t)e * p.rank * p.in, *B = p.B + (size_t)e * p.out * p.rank;
          for (size_t i = 0; i < (size_t)p.rank * p.in; i++, checked++)
            bad += a[(size_t)e * p.rank * p.in + i] != A[i];
          for (int o = 0; o < rows; o++) {
            /* split: gate = HF even rows, up = odd; fused: even rows then odd rows */
            int src = parts == 2 ? 2 * o + part
                      : t == MXL_LORA_GATE_UP ? (o < rows / 2 ? 2 * o : 2 * (o - rows / 2) + 1)
                                              : o;
            for (int k = 0; k < p.rank; k++, checked++)
              bad += b[((size_t)e * rows + o) * p.rank + k] != B[(size_t)src * p.rank + k];
          }
        }
      }
    }
  MXL_CHECK_MSG(bad == 0 && checked > 0, "%zu of %zu values differ", bad, checked);
}

static void test_gguf_export(void) {
  mxl_config c;
  fake_config(&c);
  c.intermediate = 32; /* gate/up halves of 32 rows each */
  for (int fused = 0; fused < 2; fused++) {
    mxl_lora *lora = make_lora(&c, 3, 5.0f, 1, MXL_LORA_ATTN_BITS | MXL_LORA_EXPERT_BITS, 7);
    MXL_CHECK(lora != NULL);
    if (!lora) return;
    const char *path = tmp_path(fused ? "fused.gguf" : "split.gguf");
    mxl_gguf_export_options o = {fused, NULL};
    MXL_CHECK_OK(mxl_gguf_export(lora, "ab12", &o, path));
    gguf_file f;
    MXL_CHECK(gguf_open(path, &f));
    if (f.g) {
      const mxl_gguf_kv *kv = mxl_gguf_find_kv(f.g, "general.type");
      MXL_CHECK(kv && kv->type == MXL_GGUF_STRING && !strcmp(kv->str, "adapter"));
      kv = mxl_gguf_find_kv(f.g, "general.architecture");
      MXL_CHECK(kv && !strcmp(kv->str, "gpt-oss"));
      kv = mxl_gguf_find_kv(f.g, "adapter.type");
      MXL_CHECK(kv && !strcmp(kv->str, "lora"));
      /* llama.cpp scales by alpha / r: rsLoRA's 5/√3 must come out */
      kv = mxl_gguf_find_kv(f.g, "adapter.lora.alpha");
      MXL_CHECK(kv && kv->type == MXL_GGUF_FLOAT32);
      if (kv) MXL_CHECK_NEAR(kv->number / 3.0, 5.0 / sqrt(3.0), 1e-6);
      MXL_CHECK(f.g->alignment == 32 && f.g->data_start % 32 == 0);
      for (int i = 0; i < f.g->n_tensors; i++) MXL_CHECK(f.g->tensors[i].offset % 32 == 0);
      /* 3 layers × (4 attention + down + gate/up as 1 or 2) pairs */
      MXL_CHECK(f.g->n_tensors == 3 * 2 * (fused ? 6 : 7));
      check_gguf_values(f.g, lora, fused);
    }
    gguf_close(&f);
    mxl_lora_destroy(lora);
  }
}

/* A base GGUF of the fake shape: names and ne only (its data is zeros). */
static void write_base(const char *path, const mxl_config *c, int fused, int drop_layer) {
  mxl_gguf_writer *w = NULL;
  MXL_CHECK_OK(mxl_gguf_writer_create(path, &w));
  if (!w) return;
  mxl_gguf_add_string(w, "general.architecture", "gpt-oss");
  mxl_gguf_add_string(w, "general.type", "model");
  const int64_t H = c->hidden, I = c->intermediate, E = c->n_experts;
  const int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
  size_t bytes = 0;
  for (int l = 0; l < c->n_layers; l++) {
    if (l == drop_layer) continue;
    char name[80];
    const struct {
      const char *n;
      int64_t ne[3];
      int nd;
    } t[] = {{"attn_q", {H, q, 1}, 2},          {"attn_k", {H, kv, 1}, 2},
             {"attn_v", {H, kv, 1}, 2},         {"attn_output", {q, H, 1}, 2},
             {"ffn_down_exps", {I, H, E}, 3},   {"ffn_gate_exps", {H, I, E}, 3},
             {"ffn_up_exps", {H, I, E}, 3},     {"ffn_gate_up_exps", {H, 2 * I, E}, 3}};
    for (int i = 0; i < 8; i++) {
      if (fused ? i == 5 || i == 6 : i == 7) continue;
      snprintf(name, sizeof name, "blk.%d.%s.weight", l, t[i].n);
      mxl_gguf_add_tensor(w, name, t[i].nd, t[i].ne, MXL_GGML_F32);
      bytes += 4 * (size_t)(t[i].ne[0] * t[i].ne[1] * t[i].ne[2]);
    }
  }
  MXL_CHECK_OK(mxl_gguf_writer_begin_data(w));
  float zeros[1024] = {0};
  /* tensors are padded by the writer: feed each tensor's bytes in turn */
  while (bytes > 0) {
    size_t n = bytes < sizeof zeros ? bytes : sizeof zeros;
    if (mxl_gguf_writer_write(w, zeros, n) != MXL_OK) break;
    bytes -= n;
  }
  MXL_CHECK_OK(mxl_gguf_writer_commit(w));
}

static void test_gguf_match_base(void) {
  mxl_config c;
  fake_config(&c);
  mxl_lora *lora = make_lora(&c, 2, 4.0f, 0, MXL_LORA_ATTN_BITS | MXL_LORA_EXPERT_BITS, 3);
  if (!lora) return;
  const char *base = tmp_path("base_fused.gguf");
  write_base(base, &c, 1, -1);
  mxl_gguf_export_options o = {0, base};
  const char *out = tmp_path("matched.gguf");
  MXL_CHECK_OK(mxl_gguf_export(lora, NULL, &o, out));
  gguf_file f;
  MXL_CHECK(gguf_open(out, &f));
  /* the base stores gate/up fused, so the adapter follows it */
  if (f.g) {
    MXL_CHECK(mxl_gguf_find_tensor(f.g, "blk.1.ffn_gate_up_exps.weight.lora_b") != NULL);
    MXL_CHECK(mxl_gguf_find_tensor(f.g, "blk.1.ffn_gate_exps.weight.lora_b") == NULL);
    check_gguf_values(f.g, lora, 1);
  }
  gguf_close(&f);
  /* a base without layer 2: the first tensor it lacks is named */
  base = tmp_path("base_short.gguf");
  write_base(base, &c, 0, 2);
  o.match_base = base;
  MXL_CHECK_FAILS(mxl_gguf_export(lora, NULL, &o, tmp_path("x.gguf")), MXL_ERR_ARGUMENT,
                  "the base has no tensor blk.2.attn_q.weight");
  MXL_CHECK(!mxl_path_exists(tmp_path("x.gguf")));
  /* a base of another width */
  mxl_config wide = c;
  wide.hidden = 32;
  base = tmp_path("base_wide.gguf");
  write_base(base, &wide, 0, -1);
  o.match_base = base;
  MXL_CHECK_FAILS(mxl_gguf_export(lora, NULL, &o, tmp_path("x.gguf")), MXL_ERR_ARGUMENT,
                  "blk.0.attn_q.weight is [32, 32, 1] (ne), the adapter needs in 24, out 32");
  mxl_lora_destroy(lora);
}

/* The reader refuses every damaged file with a message naming the fault. */
static void test_gguf_malformed(void) {
  mxl_config c;
  fake_config(&c);
  mxl_lora *lora = make_lora(&c, 2, 4.0f, 0, MXL_LORA_BIT(MXL_LORA_Q), 5);
  if (!lora) return;
  const char *path = tmp_path("small.gguf");
  MXL_CHECK_OK(mxl_gguf_export(lora, NULL, NULL, path));
  mxl_lora_destroy(lora);
  char *data = NULL;
  size_t n = 0;
  MXL_CHECK_OK(mxl_read_file(path, 1 << 20, &data, &n));
  if (!data) return;
  mxl_gguf *g = NULL;
  uint8_t *copy = malloc(n);
  /* truncated anywhere: header, metadata, tensor infos, data */
  size_t cuts[] = {3, 10, 30, 200, n / 2, n - 1};
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    mxl_status st = mxl_gguf_parse((const uint8_t *)data, cuts[i], "cut.gguf", 0, &g);
    MXL_CHECK_MSG(st == MXL_ERR_FORMAT && strstr(mxl_last_error(), "cut.gguf"),
                  "cut at %zu: %s", cuts[i], mxl_last_error());
    MXL_CHECK(g == NULL);
  }
  memcpy(copy, data, n);
  copy[0] = 'X';
  MXL_CHECK_FAILS(mxl_gguf_parse(copy, n, "m.gguf", 0, &g), MXL_ERR_FORMAT, "no \"GGUF\" magic");
  memcpy(copy, data, n);
  copy[4] = 9;
  MXL_CHECK_FAILS(mxl_gguf_parse(copy, n, "v.gguf", 0, &g), MXL_ERR_UNSUPPORTED, "version 9");
  memcpy(copy, data, n);
  copy[16] = 0xff, copy[17] = 0xff, copy[18] = 0xff; /* metadata count */
  MXL_CHECK_FAILS(mxl_gguf_parse(copy, n, "k.gguf", 0, &g), MXL_ERR_FORMAT, "cannot fit");
  /* the first key's length made huge */
  memcpy(copy, data, n);
  copy[24 + 6] = 0x7f;
  MXL_CHECK_FAILS(mxl_gguf_parse(copy, n, "s.gguf", 0, &g), MXL_ERR_FORMAT, "metadata key 0");
  free(copy);
  free(data);
}

/* ------------------------------------------------------------ PEFT layouts */

/* One pair as a PEFT file stores it. */
typedef struct pair_spec {
  char key[160];       /* without ".lora_A.weight" */
  int layer, target, expert; /* expert -1: attention */
  int part;            /* 0 all rows, 1 gate (even HF rows), 2 up (odd) */
  int rank, in, out;   /* out: rows of this B */
  float scaling;
  float *A, *B;
} pair_spec;

typedef struct peft_file {
  pair_spec p[256];
  int n;
} peft_file;

static pair_spec *add_spec(peft_file *f, const char *key, int layer, int target, int expert,
                           int part, int rank, int in, int out, float scaling, uint64_t *seed) {
  pair_spec *p = &f->p[f->n++];
  snprintf(p->key, sizeof p->key, "base_model.model.%s", key);
  p->layer = layer, p->target = target, p->expert = expert, p->part = part;
  p->rank = rank, p->in = in, p->out = out, p->scaling = scaling;
  p->A = malloc((size_t)rank * in * sizeof *p->A);
  p->B = malloc((size_t)out * rank * sizeof *p->B);
  for (int i = 0; i < rank * in; i++) p->A[i] = fixture_normal(seed) * 0.3f;
  for (int i = 0; i < out * rank; i++) p->B[i] = fixture_normal(seed) * 0.3f;
  return p;
}

static void free_specs(peft_file *f) {
  for (int i = 0; i < f->n; i++) free(f->p[i].A), free(f->p[i].B);
  f->n = 0;
}

static int write_peft(const char *dir, const peft_file *f, const char *config) {
  char path[256], names[512][180];
  mxl_st_spec specs[512];
  const void *data[512];
  int n = 0;
  if (mxl_make_dirs(dir) != MXL_OK) return 0;
  for (int i = 0; i < f->n; i++)
    for (int ab = 0; ab < 2; ab++) {
      snprintf(names[n], sizeof names[n], "%s.lora_%c.weight", f->p[i].key, ab ? 'B' : 'A');
      memset(&specs[n], 0, sizeof specs[n]);
      specs[n].name = names[n];
      specs[n].dtype = MXL_DT_F32;
      specs[n].ndim = 2;
      specs[n].shape[0] = ab ? f->p[i].out : f->p[i].rank;
      specs[n].shape[1] = ab ? f->p[i].rank : f->p[i].in;
      data[n] = ab ? (const void *)f->p[i].B : (const void *)f->p[i].A;
      n++;
    }
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
  if (mxl_safetensors_write(path, specs, data, n, NULL, 0) != MXL_OK) return 0;
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  return mxl_write_file_atomic(path, config, strlen(config)) == MXL_OK;
}

/* ΔW of (layer, target, expert) [out, in] from the file's pairs... */
static void file_delta(const peft_file *f, const mxl_config *c, int layer, int target, int expert,
                       double *d) {
  mxl_lora_dims dims = mxl_lora_target_dims(c, (mxl_lora_target)target);
  memset(d, 0, (size_t)dims.out * dims.in * sizeof *d);
  for (int i = 0; i < f->n; i++) {
    const pair_spec *p = &f->p[i];
    if (p->layer != layer || p->target != target || p->expert != expert) continue;
    for (int o = 0; o < p->out; o++) {
      int row = p->part == 0 ? o : 2 * o + (p->part == 2);
      for (int k = 0; k < p->rank; k++)
        for (int j = 0; j < p->in; j++)
          d[(size_t)row * dims.in + j] += (double)p->scaling * p->B[o * p->rank + k] * p->A[k * p->in + j];
    }
  }
}

/* ...and from the imported set. */
static void set_delta(const mxl_lora *lora, int layer, int target, int expert, double *d,
                      int out, int in) {
  memset(d, 0, (size_t)out * in * sizeof *d);
  mxl_lora_pair p;
  if (!mxl_lora_find(lora->layout, lora->params, layer, (mxl_lora_target)target, &p)) return;
  const int e = expert < 0 ? 0 : expert;
  const float *A = p.A + (size_t)e * p.rank * in, *B = p.B + (size_t)e * out * p.rank;
  for (int o = 0; o < out; o++)
    for (int k = 0; k < p.rank; k++)
      for (int j = 0; j < in; j++)
        d[(size_t)o * in + j] += (double)lora->layout->scaling * B[o * p.rank + k] * A[k * in + j];
}

static void check_deltas(const peft_file *f, const mxl_lora *lora, const mxl_config *c) {
  double worst = 0;
  for (int l = 0; l < c->n_layers; l++)
    for (int t = 0; t < MXL_LORA_N_TARGETS; t++) {
      mxl_lora_dims dims = mxl_lora_target_dims(c, (mxl_lora_target)t);
      int experts = mxl_lora_target_is_expert((mxl_lora_target)t) ? c->n_experts : 1;
      double *want = malloc((size_t)dims.out * dims.in * sizeof *want);
      double *got = malloc((size_t)dims.out * dims.in * sizeof *got);
      for (int e = 0; e < experts; e++) {
        file_delta(f, c, l, t, experts > 1 ? e : -1, want);
        set_delta(lora, l, t, e, got, dims.out, dims.in);
        for (int i = 0; i < dims.out * dims.in; i++) {
          double err = fabs(want[i] - got[i]) / (1e-3 + fabs(want[i]));
          if (err > worst) worst = err;
        }
      }
      free(want);
      free(got);
    }
  /* fp32 products, B rescaled in fp32: a few ulps */
  MXL_CHECK_MSG(worst < 1e-4, "largest relative delta error %g", worst);
}

static const char *config_json(int r, double alpha, const char *extra) {
  static char text[1024];
  snprintf(text, sizeof text,
           "{\"peft_type\": \"LORA\", \"r\": %d, \"lora_alpha\": %g, \"use_rslora\": false,"
           " \"target_modules\": [\"q_proj\", \"v_proj\", \"gate_up_projs\", \"down_projs\"]%s}",
           r, alpha, extra);
  return text;
}

/* Unsloth's per-expert nn.Linear modules, and attention. */
static void test_import_unsloth(void) {
  mxl_config c;
  fake_config(&c);
  peft_file f = {0};
  uint64_t seed = 11;
  const int r = 3;
  const float s = 6.0f / r;
  char key[160];
  for (int l = 0; l < c.n_layers; l++) {
    snprintf(key, sizeof key, "model.layers.%d.self_attn.q_proj", l);
    add_spec(&f, key, l, MXL_LORA_Q, -1, 0, r, c.hidden, c.n_heads * c.head_dim, s, &seed);
    for (int e = 0; e < c.n_experts; e++) {
      if (l == 1 && e == 2) continue; /* an expert without LoRA stays zero */
      snprintf(key, sizeof key, "model.layers.%d.mlp.experts.gate_up_projs.%d", l, e);
      add_spec(&f, key, l, MXL_LORA_GATE_UP, e, 0, r, c.hidden, 2 * c.intermediate, s, &seed);
      snprintf(key, sizeof key, "model.layers.%d.mlp.experts.down_projs.%d", l, e);
      add_spec(&f, key, l, MXL_LORA_DOWN, e, 0, r, c.intermediate, c.hidden, s, &seed);
    }
  }
  const char *dir = tmp_path("unsloth");
  MXL_CHECK(write_peft(dir, &f, config_json(r, 6.0, "")));
  mxl_lora *lora = NULL;
  char *report = NULL;
  MXL_CHECK_OK(mxl_peft_import_report(dir, &c, &lora, &report));
  if (lora) {
    MXL_CHECK(lora->layout->cfg.rank == r && lora->layout->cfg.alpha == 6.0f);
    check_deltas(&f, lora, &c);
  }
  MXL_CHECK(report && strstr(report, "Unsloth per-expert modules"));
  free(report);
  mxl_lora_destroy(lora);
  /* an expert index the model does not have */
  snprintf(f.p[1].key, sizeof f.p[1].key, "base_model.model.model.layers.0.mlp.experts.gate_up_projs.9");
  MXL_CHECK(write_peft(tmp_path("unsloth9"), &f, config_json(r, 6.0, "")));
  MXL_CHECK_FAILS(mxl_peft_import(tmp_path("unsloth9"), &c, &lora), MXL_ERR_ARGUMENT,
                  "gate_up_projs.9.lora_A.weight: expert 9, the model has 4");
  free_specs(&f);
}

/* Per-expert gate_proj / up_proj / down_proj modules (separate gate and up
 * LoRAs stack into one gate_up pair of twice the rank), with rank_pattern
 * and alpha_pattern on top. */
static void test_import_per_expert_patterns(void) {
  mxl_config c;
  fake_config(&c);
  peft_file f = {0};
  uint64_t seed = 12;
  const int r = 2;
  char key[160];
  const int I = c.intermediate, H = c.hidden;
  for (int l = 0; l < c.n_layers; l++) {
    /* v_proj: rank 4 by rank_pattern; k_proj: alpha 7 by alpha_pattern */
    snprintf(key, sizeof key, "model.layers.%d.self_attn.v_proj", l);
    add_spec(&f, key, l, MXL_LORA_V, -1, 0, 4, H, c.n_kv_heads * c.head_dim, 4.0f / 4, &seed);
    snprintf(key, sizeof key, "model.layers.%d.self_attn.k_proj", l);
    add_spec(&f, key, l, MXL_LORA_K, -1, 0, r, H, c.n_kv_heads * c.head_dim, 7.0f / r, &seed);
    for (int e = 0; e < c.n_experts; e++) {
      snprintf(key, sizeof key, "model.layers.%d.mlp.experts.%d.gate_proj", l, e);
      add_spec(&f, key, l, MXL_LORA_GATE_UP, e, 1, r, H, I, 4.0f / r, &seed);
      snprintf(key, sizeof key, "model.layers.%d.mlp.experts.%d.up_proj", l, e);
      add_spec(&f, key, l, MXL_LORA_GATE_UP, e, 2, r, H, I, 4.0f / r, &seed);
      snprintf(key, sizeof key, "model.layers.%d.mlp.experts.%d.down_proj", l, e);
      add_spec(&f, key, l, MXL_LORA_DOWN, e, 0, r, I, H, 4.0f / r, &seed);
    }
  }
  const char *dir = tmp_path("per_expert");
  MXL_CHECK(write_peft(dir, &f, config_json(r, 4.0, ", \"rank_pattern\": {\"v_proj\": 4},"
                                                    " \"alpha_pattern\": {\"k_pr.j\": 7}")));
  mxl_lora *lora = NULL;
  char *report = NULL;
  MXL_CHECK_OK(mxl_peft_import_report(dir, &c, &lora, &report));
  if (lora) {
    /* gate and up (2 + 2) side by side: rank 4, the widest pair */
    MXL_CHECK_MSG(lora->layout->cfg.rank == 4, "rank %d", lora->layout->cfg.rank);
    check_deltas(&f, lora, &c);
  }
  MXL_CHECK(report && strstr(report, "per-expert modules") && strstr(report, "stacked") &&
            strstr(report, "folded in"));
  free(report);
  mxl_lora_destroy(lora);
  /* a rank_pattern the shapes contradict names the key and the pattern */
  MXL_CHECK(write_peft(tmp_path("bad_pattern"), &f,
                       config_json(r, 4.0, ", \"rank_pattern\": {\"v_proj\": 3}")));
  MXL_CHECK_FAILS(mxl_peft_import(tmp_path("bad_pattern"), &c, &lora), MXL_ERR_FORMAT,
                  "v_proj.lora_A.weight: a 2-D tensor [4, 24], expected [3, 24] for rank 3 "
                  "(rank_pattern)");
  MXL_CHECK(write_peft(tmp_path("bad_regex"), &f,
                       config_json(r, 4.0, ", \"alpha_pattern\": {\"(\": 3}")));
  MXL_CHECK_FAILS(mxl_peft_import(tmp_path("bad_regex"), &c, &lora), MXL_ERR_FORMAT,
                  "pattern \"(\" is not a regular expression");
  free_specs(&f);
  /* one expert adapted in two layouts at once is refused */
  seed = 13;
  add_spec(&f, "model.layers.0.mlp.experts.1.gate_up_proj", 0, MXL_LORA_GATE_UP, 1, 0, r, H,
           2 * I, 2.0f, &seed);
  add_spec(&f, "model.layers.0.mlp.experts.1.gate_proj", 0, MXL_LORA_GATE_UP, 1, 1, r, H, I,
           2.0f, &seed);
  MXL_CHECK(write_peft(tmp_path("twice"), &f, config_json(r, 4.0, "")));
  MXL_CHECK_FAILS(mxl_peft_import(tmp_path("twice"), &c, &lora), MXL_ERR_FORMAT,
                  "layer 0's gate_up is adapted twice");
  free_specs(&f);
  /* a truncated tensor file */
  add_spec(&f, "model.layers.0.self_attn.q_proj", 0, MXL_LORA_Q, -1, 0, r, H, 32, 2.0f, &seed);
  MXL_CHECK(write_peft(tmp_path("trunc"), &f, config_json(r, 4.0, "")));
  char *data = NULL, path[256];
  size_t n = 0;
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", tmp_path("trunc"));
  MXL_CHECK_OK(mxl_read_file(path, 1 << 20, &data, &n));
  if (data) MXL_CHECK_OK(mxl_write_file_atomic(path, data, n - 9));
  free(data);
  MXL_CHECK_FAILS(mxl_peft_import(tmp_path("trunc"), &c, &lora), MXL_ERR_FORMAT,
                  "adapter_model.safetensors");
  free_specs(&f);
}

/* PEFT's own fused layout with an alpha_pattern naming one expert
 * parameter exactly: that pair's delta doubles, the others stay. */
static void test_import_fused_pattern(void) {
  mxl_config c;
  fake_config(&c);
  mxl_lora *lora = make_lora(&c, 2, 4.0f, 0, MXL_LORA_ATTN_BITS | MXL_LORA_EXPERT_BITS, 21);
  if (!lora) return;
  const char *dir = tmp_path("fused_pattern");
  MXL_CHECK_OK(mxl_peft_export(lora, MXL_ADAPTER_F32, dir));
  char path[256], *text = NULL;
  size_t n = 0;
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  MXL_CHECK_OK(mxl_read_file(path, 1 << 20, &text, &n));
  /* the empty object as cJSON prints it: "alpha_pattern":\t{\n\t} */
  char *at = text ? strstr(text, "\"alpha_pattern\":") : NULL;
  char *end = at ? strchr(at, '}') : NULL;
  MXL_CHECK(at && end);
  if (at && end) {
    char edited[8192];
    snprintf(edited, sizeof edited, "%.*s\"alpha_pattern\": {\"model.layers.1.mlp.experts."
             "gate_up_proj\": 8}%s", (int)(at - text), text, end + 1);
    MXL_CHECK_OK(mxl_write_file_atomic(path, edited, strlen(edited)));
  }
  free(text);
  mxl_lora *back = NULL;
  MXL_CHECK_OK(mxl_peft_import(dir, &c, &back));
  for (int l = 0; back && l < c.n_layers; l++)
    for (int t = 0; t < MXL_LORA_N_TARGETS; t++) {
      mxl_lora_dims d = mxl_lora_target_dims(&c, (mxl_lora_target)t);
      double *want = malloc((size_t)d.out * d.in * sizeof *want);
      double *got = malloc((size_t)d.out * d.in * sizeof *got);
      double factor = l == 1 && t == MXL_LORA_GATE_UP ? 2.0 : 1.0, worst = 0;
      for (int e = 0; e < d.n_experts; e++) {
        set_delta(lora, l, t, e, want, d.out, d.in);
        set_delta(back, l, t, e, got, d.out, d.in);
        for (int i = 0; i < d.out * d.in; i++)
          worst = fmax(worst, fabs(factor * want[i] - got[i]) / (1e-3 + fabs(factor * want[i])));
      }
      MXL_CHECK_MSG(worst < 1e-5, "layer %d %s: %g", l, mxl_lora_target_name((mxl_lora_target)t),
                    worst);
      free(want);
      free(got);
    }
  mxl_lora_destroy(back);
  mxl_lora_destroy(lora);
}

int main(void) {
  snprintf(tmp_dir, sizeof tmp_dir, "/tmp/mxl_export_XXXXXX");
  if (!mkdtemp(tmp_dir)) return 1;
  MXL_RUN(test_gguf_export);
  MXL_RUN(test_gguf_match_base);
  MXL_RUN(test_gguf_malformed);
  MXL_RUN(test_import_unsloth);
  MXL_RUN(test_import_per_expert_patterns);
  MXL_RUN(test_import_fused_pattern);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmp_dir);
  return mxl_test_summary("export");
}
