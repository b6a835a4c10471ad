/* adapters/merge: the merged folder's tensors against W + Σ s·B·A computed
 * here in double from the base and the adapter (bf16: every tensor; MXFP4:
 * the adapted experts re-encoded, the rest byte-identical to the base), the
 * folder's files and configs, both layouts, the merged MXFP4 model loading
 * in mxlora, and the failure paths: an existing output, a metal base,
 * another base's adapter, and a merge killed with SIGKILL (nothing under
 * the final name; the next merge cleans the leftovers). */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "adapters/adapter_file.h"
#include "core/bf16.h"
#include "core/fileio.h"
#include "core/json.h"
#include "core/status.h"
#include "kernels/mxfp4.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "test.h"
#include "tests/adapter_fixture.h"

static char dir[64];
static char base_dir[128], other_dir[128], adapter_path[160];

static const char *path_in(const char *name) {
  static char p[4][256];
  static int next;
  char *s = p[next++ % 4];
  snprintf(s, 256, "%s/%s", dir, name);
  return s;
}

/* The adapter: attention on every layer, experts on layer 1 only, so that
 * layers 0 and 2 show the untouched path. */
static int make_inputs(void) {
  mxl_tiny_options opt = {0};
  opt.preset = "test";
  opt.layout = "all";
  opt.seed = 3;
  snprintf(base_dir, sizeof base_dir, "%s/base", dir);
  snprintf(other_dir, sizeof other_dir, "%s/other", dir);
  if (mxl_tiny_write(base_dir, &opt, NULL, NULL) != MXL_OK) return 0;
  opt.seed = 4;
  opt.layout = "hf";
  if (mxl_tiny_write(other_dir, &opt, NULL, NULL) != MXL_OK) return 0;
  mxl_model *m = NULL;
  if (mxl_model_open(base_dir, &m) != MXL_OK) return 0;
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, 4, 8.0f);
  int layer1 = 1;
  mxl_lora *lora = NULL;
  int ok = mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS, NULL, 0, 3) == MXL_OK &&
           mxl_lora_config_add(&lc, MXL_LORA_EXPERT_BITS, &layer1, 1, 3) == MXL_OK &&
           mxl_lora_create(&m->config, &lc, NULL, &lora) == MXL_OK;
  if (ok) {
    /* big enough to move MXFP4 codes, small enough to look trained */
    fixture_fill(lora, 9, 0.05f);
    mxl_adapter_save_options so;
    mxl_adapter_save_options_default(&so);
    snprintf(adapter_path, sizeof adapter_path, "%s/a.mxla", dir);
    ok = mxl_adapter_save(adapter_path, lora, m, &so) == MXL_OK;
  }
  mxl_lora_destroy(lora);
  mxl_model_close(m);
  return ok;
}

/* ------------------------------------------------------------ expected values */

typedef struct inputs {
  mxl_model *m;
  mxl_adapter *a;
  mxl_lora *lora;
} inputs;

static int inputs_open(inputs *in) {
  memset(in, 0, sizeof *in);
  return mxl_model_open(base_dir, &in->m) == MXL_OK &&
         mxl_adapter_open(adapter_path, &in->a) == MXL_OK &&
         mxl_adapter_load(in->a, in->m, &in->lora) == MXL_OK;
}

static void inputs_close(inputs *in) {
  mxl_lora_destroy(in->lora);
  mxl_adapter_close(in->a);
  mxl_model_close(in->m);
}

/* Σ s·B[o,:]·A[:,i] in double (0 when the pair is not adapted). */
static double delta(const inputs *in, int layer, mxl_lora_target t, int e, int o, int i) {
  mxl_lora_pair p;
  if (!mxl_lora_find(in->lora->layout, in->lora->params, layer, t, &p)) return 0;
  const float *A = p.A + (size_t)e * p.rank * p.in, *B = p.B + ((size_t)e * p.out + o) * p.rank;
  double d = 0;
  for (int k = 0; k < p.rank; k++) d += (double)B[k] * A[(size_t)k * p.in + i];
  return d * in->lora->layout->scaling;
}

static float base_expert(const mxl_mxfp4_weight *w, int e, int o, int i) {
  return mxl_mxfp4_decode_at(w->blocks + (size_t)e * w->blocks_stride + (size_t)o * (w->cols / 2),
                             w->scales + (size_t)e * w->scales_stride + (size_t)o * (w->cols / 32),
                             w->scale_bias, i);
}

static float bf16_at(const mxl_st_tensor *t, size_t i) {
  uint16_t h;
  memcpy(&h, t->data + 2 * i, 2);
  return mxl_bf16_to_f32(h);
}

/* |got - want| within one bf16 rounding of want (sums in fp32 vs double). */
static int bf16_close(float got, double want) {
  return fabs(got - want) <= fabs(want) * 0x1p-8 + 1e-7;
}

static const mxl_st_tensor *find(const mxl_safetensors *st, const char *name) {
  const mxl_st_tensor *t = mxl_safetensors_find(st, name);
  MXL_CHECK_MSG(t != NULL, "%s missing", name);
  return t;
}

/* Attention q of every layer: W + ΔW in bf16. */
static void check_attention(const mxl_safetensors *st, const inputs *in, int original) {
  const mxl_config *c = &in->m->config;
  size_t bad = 0;
  for (int l = 0; l < c->n_layers; l++) {
    char name[96];
    snprintf(name, sizeof name, original ? "block.%d.attn.qkv.weight" : "model.layers.%d.self_attn.q_proj.weight", l);
    const mxl_st_tensor *t = find(st, name);
    if (!t) return;
    const mxl_bf16_weight *q = &in->m->w.layers[l].q;
    for (int o = 0; o < q->rows; o++)
      for (int i = 0; i < q->cols; i++) {
        double want = mxl_bf16_to_f32(q->w[(size_t)o * q->cols + i]) + delta(in, l, MXL_LORA_Q, 0, o, i);
        bad += !bf16_close(bf16_at(t, (size_t)o * q->cols + i), want);
      }
  }
  MXL_CHECK_MSG(bad == 0, "%zu attention values off", bad);
}

/* Tensors no adapter touches: the base's bytes. */
static void check_untouched(const mxl_safetensors *st, const mxl_safetensors *base,
                            const char *const *names, int n) {
  for (int i = 0; i < n; i++) {
    const mxl_st_tensor *a = find(st, names[i]), *b = find(base, names[i]);
    MXL_CHECK_MSG(a && b && a->nbytes == b->nbytes && !memcmp(a->data, b->data, a->nbytes),
                  "%s differs from the base", names[i]);
  }
}

static cJSON *read_json(const char *path) {
  cJSON *j = NULL;
  MXL_CHECK_OK(mxl_json_parse_file(path, 1 << 20, &j));
  return j;
}

/* ------------------------------------------------------------ bf16 */

static void test_bf16(void) {
  inputs in;
  MXL_CHECK(inputs_open(&in));
  const char *out = path_in("bf16");
  const char *paths[1] = {adapter_path};
  mxl_merge_options o = {base_dir, paths, NULL, 1, out, 0, 1, 1, 0, NULL, NULL};
  mxl_merge_result r;
  MXL_CHECK_OK(mxl_merge(&o, &r));
  free(r.report_json);
  static const char *const files[] = {"config.json", "generation_config.json", "tokenizer.json",
                                      "tokenizer_config.json", "special_tokens_map.json",
                                      "model.safetensors", "mxlora_merge_report.json",
                                      "original/config.json", "original/dtypes.json",
                                      "original/model.safetensors"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char p[300];
    snprintf(p, sizeof p, "%s/%s", out, files[i]);
    MXL_CHECK_MSG(mxl_path_exists(p), "%s missing", files[i]);
  }
  char p[300];
  snprintf(p, sizeof p, "%s/config.json", out);
  cJSON *cfg = read_json(p);
  MXL_CHECK(cfg && !cJSON_GetObjectItem(cfg, "quantization_config") &&
            cJSON_GetObjectItem(cfg, "model_type"));
  cJSON_Delete(cfg);
  mxl_safetensors *st = NULL, *base = NULL;
  snprintf(p, sizeof p, "%s/model.safetensors", out);
  MXL_CHECK_OK(mxl_safetensors_open(p, &st));
  snprintf(p, sizeof p, "%s/model.safetensors", base_dir);
  MXL_CHECK_OK(mxl_safetensors_open(p, &base));
  if (st && base && in.lora) {
    check_attention(st, &in, 0);
    static const char *const same[] = {"model.embed_tokens.weight", "lm_head.weight",
                                       "model.layers.1.mlp.router.weight",
                                       "model.layers.1.mlp.experts.gate_up_proj_bias",
                                       "model.layers.2.self_attn.sinks"};
    check_untouched(st, base, same, 5);
    /* dense experts, transformers' [E, in, out]: layer 1 with ΔW, layer 0 without */
    const mxl_config *c = &in.m->config;
    size_t bad = 0;
    for (int l = 0; l < 2; l++) {
      char name[96];
      snprintf(name, sizeof name, "model.layers.%d.mlp.experts.gate_up_proj", l);
      const mxl_st_tensor *t = find(st, name);
      if (!t) break;
      MXL_CHECK(t->ndim == 3 && t->shape[0] == c->n_experts && t->shape[1] == c->hidden &&
                t->shape[2] == 2 * c->intermediate && t->dtype == MXL_DT_BF16);
      const mxl_mxfp4_weight *w = &in.m->w.layers[l].gate_up;
      for (int e = 0; e < c->n_experts; e++)
        for (int o = 0; o < w->rows; o++)
          for (int i = 0; i < w->cols; i++) {
            double want = base_expert(w, e, o, i) + delta(&in, l, MXL_LORA_GATE_UP, e, o, i);
            bad += !bf16_close(bf16_at(t, ((size_t)e * w->cols + i) * w->rows + o), want);
          }
    }
    MXL_CHECK_MSG(bad == 0, "%zu expert values off", bad);
    MXL_CHECK(mxl_safetensors_find(st, "model.layers.0.mlp.experts.gate_up_proj_blocks") == NULL);
  }
  mxl_safetensors_close(st);
  /* original/: fused qkv and [E, out, in] experts */
  snprintf(p, sizeof p, "%s/original/model.safetensors", out);
  st = NULL;
  MXL_CHECK_OK(mxl_safetensors_open(p, &st));
  if (st && in.lora) {
    check_attention(st, &in, 1);
    const mxl_st_tensor *t = find(st, "block.1.mlp.mlp2_weight");
    const mxl_mxfp4_weight *w = &in.m->w.layers[1].down;
    size_t bad = 0;
    for (int e = 0; t && e < w->n_experts; e++)
      for (int o = 0; o < w->rows; o++)
        for (int i = 0; i < w->cols; i++)
          bad += !bf16_close(bf16_at(t, ((size_t)e * w->rows + o) * w->cols + i),
                             base_expert(w, e, o, i) + delta(&in, 1, MXL_LORA_DOWN, e, o, i));
    MXL_CHECK_MSG(bad == 0, "%zu original/ expert values off", bad);
  }
  mxl_safetensors_close(st);
  mxl_safetensors_close(base);
  /* mxlora itself runs MXFP4 experts only: the error says what the folder is */
  mxl_model *m = NULL;
  MXL_CHECK(mxl_model_open(out, &m) != MXL_OK);
  inputs_close(&in);
}

/* ------------------------------------------------------------ MXFP4 */

static void test_mxfp4(void) {
  inputs in;
  MXL_CHECK(inputs_open(&in));
  const char *out = path_in("mxfp4");
  const char *paths[1] = {adapter_path};
  const float scales[1] = {0.5f};
  mxl_merge_options o = {base_dir, paths, scales, 1, out, 1, 1, 1, 0, NULL, NULL};
  mxl_merge_result r;
  MXL_CHECK_OK(mxl_merge(&o, &r));
  /* layer 1's two projections were re-encoded; the delta mostly survives */
  MXL_CHECK_MSG(r.tensors == 2, "%d tensors", r.tensors);
  MXL_CHECK_MSG(r.delta_kept > 0.3 && r.delta_kept < 1.3, "delta kept %g", r.delta_kept);
  MXL_CHECK(r.rel_rms_error > 0 && r.rel_rms_error < 0.2);
  cJSON *rep = r.report_json ? cJSON_Parse(r.report_json) : NULL;
  MXL_CHECK(rep && cJSON_GetArraySize(cJSON_GetObjectItem(rep, "tensors")) == 2);
  cJSON_Delete(rep);
  free(r.report_json);
  char p[300];
  snprintf(p, sizeof p, "%s/config.json", out);
  cJSON *cfg = read_json(p);
  cJSON *q = cfg ? cJSON_GetObjectItem(cfg, "quantization_config") : NULL;
  MXL_CHECK(q && !strcmp(cJSON_GetObjectItem(q, "quant_method")->valuestring, "mxfp4"));
  cJSON_Delete(cfg);
  mxl_safetensors *st = NULL, *base = NULL;
  snprintf(p, sizeof p, "%s/model.safetensors", out);
  MXL_CHECK_OK(mxl_safetensors_open(p, &st));
  snprintf(p, sizeof p, "%s/model.safetensors", base_dir);
  MXL_CHECK_OK(mxl_safetensors_open(p, &base));
  if (st && base && in.lora) {
    static const char *const same[] = {"model.layers.0.mlp.experts.gate_up_proj_blocks",
                                       "model.layers.0.mlp.experts.gate_up_proj_scales",
                                       "model.layers.2.mlp.experts.down_proj_blocks",
                                       "model.layers.2.mlp.experts.down_proj_scales",
                                       "model.embed_tokens.weight"};
    check_untouched(st, base, same, 5);
    /* layer 1 gate_up: the codec's encoding of W + 0.5·ΔW, row by row */
    const mxl_st_tensor *bl = find(st, "model.layers.1.mlp.experts.gate_up_proj_blocks");
    const mxl_st_tensor *sc = find(st, "model.layers.1.mlp.experts.gate_up_proj_scales");
    const mxl_mxfp4_weight *w = &in.m->w.layers[1].gate_up;
    float *row = malloc((size_t)w->cols * sizeof *row);
    uint8_t blocks[4096], sbytes[256];
    size_t bad = 0;
    for (int e = 0; bl && sc && e < w->n_experts; e++)
      for (int o = 0; o < w->rows; o++) {
        for (int i = 0; i < w->cols; i++)
          row[i] = (float)(base_expert(w, e, o, i) + 0.5 * delta(&in, 1, MXL_LORA_GATE_UP, e, o, i));
        mxl_mxfp4_encode_rows(row, 1, w->cols, blocks, sbytes, NULL);
        size_t at = (size_t)e * w->rows + o;
        bad += memcmp(bl->data + at * (w->cols / 2), blocks, (size_t)w->cols / 2) != 0;
        bad += memcmp(sc->data + at * (w->cols / 32), sbytes, (size_t)w->cols / 32) != 0;
      }
    free(row);
    /* fp32 sums in another order may flip a rounding tie: allow a handful */
    MXL_CHECK_MSG(bad <= 4, "%zu rows encode differently", bad);
  }
  mxl_safetensors_close(st);
  mxl_safetensors_close(base);
  /* mxlora runs the merged model, from both layouts */
  mxl_model *m = NULL;
  MXL_CHECK_OK(mxl_model_open(out, &m));
  mxl_model_close(m);
  snprintf(p, sizeof p, "%s/original", out);
  MXL_CHECK_OK(mxl_model_open(p, &m));
  mxl_model_close(m);
  inputs_close(&in);
}

/* ------------------------------------------------------------ failures */

static void test_refusals(void) {
  const char *paths[1] = {adapter_path};
  mxl_merge_result r;
  mxl_merge_options o = {base_dir, paths, NULL, 1, path_in("bf16"), 0, 1, 0, 0, NULL, NULL};
  MXL_CHECK_FAILS(mxl_merge(&o, &r), MXL_ERR_ARGUMENT, "already exists");
  char metal[200];
  snprintf(metal, sizeof metal, "%s/metal", base_dir);
  o.model = metal;
  o.out = path_in("from_metal");
  MXL_CHECK_FAILS(mxl_merge(&o, &r), MXL_ERR_UNSUPPORTED, "not metal/model.bin");
  o.model = other_dir;
  o.out = path_in("from_other");
  MXL_CHECK_FAILS(mxl_merge(&o, &r), MXL_ERR_ARGUMENT, "fingerprint");
  MXL_CHECK(!mxl_path_exists(path_in("from_other")));
  const float nan_scale[1] = {NAN};
  o.model = base_dir;
  o.scales = nan_scale;
  MXL_CHECK_FAILS(mxl_merge(&o, &r), MXL_ERR_ARGUMENT, "not finite");
  MXL_CHECK(!mxl_path_exists(path_in("from_other")));
}

/* SIGKILL in the middle: the final name never appears; the next merge into
 * the same place works and removes the dead merge's temporary folder. */
static void test_kill9(void) {
  const char *out = path_in("killed");
  pid_t pid = fork();
  if (pid == 0) {
    execl(MXL_CLI_PATH, "mxlora", "merge", "--model", base_dir, "--adapter", adapter_path,
          "--out", out, "--dtype", "mxfp4", "--layout", "all", (char *)NULL);
    _exit(127);
  }
  MXL_CHECK(pid > 0);
  char tmp[300];
  snprintf(tmp, sizeof tmp, "%s.tmp-merge.%ld", out, (long)pid);
  /* kill as soon as it is writing (or give up after 10 s) */
  for (int i = 0; i < 100000 && !mxl_path_exists(tmp); i++) usleep(100);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFSIGNALED(status)) MXL_SKIP("the merge finished before it could be killed");
  MXL_CHECK(!mxl_path_exists(out));
  MXL_CHECK(mxl_path_exists(tmp));
  const char *paths[1] = {adapter_path};
  mxl_merge_options o = {base_dir, paths, NULL, 1, out, 1, 1, 0, 0, NULL, NULL};
  mxl_merge_result r;
  MXL_CHECK_OK(mxl_merge(&o, &r));
  free(r.report_json);
  MXL_CHECK(mxl_path_exists(out));
  MXL_CHECK_MSG(!mxl_path_exists(tmp), "%s left behind", tmp);
}

/* The commands: export (PEFT, GGUF), import back, inspect of what they
 * wrote; exit status and the lines a user reads. */
static int cli(const char *args, const char *log) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' %s > '%s' 2>&1", MXL_CLI_PATH, args, log);
  int rc = system(cmd);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int log_has(const char *log, const char *needle) {
  char *text = NULL;
  size_t n = 0;
  int yes = mxl_read_file(log, 1 << 20, &text, &n) == MXL_OK && strstr(text, needle);
  if (!yes) fprintf(stderr, "%s lacks \"%s\":\n%s\n", log, needle, text ? text : "");
  free(text);
  return yes;
}

static void test_commands(void) {
  char args[1500], log[300];
  snprintf(log, sizeof log, "%s", path_in("cli.log")); /* path_in's buffers rotate */
  snprintf(args, sizeof args, "export %s --format peft --out %s", adapter_path, path_in("peft"));
  MXL_CHECK(cli(args, log) == 0 && log_has(log, "PEFT adapter folder"));
  snprintf(args, sizeof args, "export %s --format gguf --out %s", adapter_path, path_in("a.gguf"));
  MXL_CHECK(cli(args, log) == 0 && log_has(log, "GGUF LoRA adapter"));
  snprintf(args, sizeof args, "import %s --model %s --out %s", path_in("peft"), base_dir,
           path_in("back.mxla"));
  MXL_CHECK(cli(args, log) == 0 && log_has(log, "PEFT target_parameters"));
  /* the imported file is the same adapter: its PEFT export has the same bytes */
  snprintf(args, sizeof args, "export %s --format peft --out %s", path_in("back.mxla"),
           path_in("peft2"));
  MXL_CHECK(cli(args, log) == 0);
  char *a = NULL, *b = NULL, p1[300], p2[300];
  size_t na = 0, nb = 0;
  snprintf(p1, sizeof p1, "%s/adapter_model.safetensors", path_in("peft"));
  snprintf(p2, sizeof p2, "%s/adapter_model.safetensors", path_in("peft2"));
  MXL_CHECK_OK(mxl_read_file(p1, 1 << 24, &a, &na));
  MXL_CHECK_OK(mxl_read_file(p2, 1 << 24, &b, &nb));
  MXL_CHECK(a && b && na == nb && !memcmp(a, b, na));
  free(a);
  free(b);
  snprintf(args, sizeof args, "inspect %s", path_in("peft"));
  MXL_CHECK(cli(args, log) == 0 && log_has(log, "PEFT adapter folder") &&
            log_has(log, "mxlora import reads this layout"));
  snprintf(args, sizeof args, "inspect %s", path_in("a.gguf"));
  MXL_CHECK(cli(args, log) == 0 && log_has(log, "LoRA pairs, rank 4") &&
            log_has(log, "blk.{i}.ffn_gate_exps.weight.lora_b"));
  snprintf(args, sizeof args, "inspect %s", path_in("mxfp4"));
  MXL_CHECK(cli(args, log) == 0 && log_has(log, "model folder merged by mxlora") &&
            log_has(log, "of the adapters' expert delta survives MXFP4"));
  snprintf(args, sizeof args, "inspect %s", path_in("bf16"));
  MXL_CHECK(cli(args, log) == 0 && log_has(log, "bf16 experts (a merged model)"));
  /* usage errors name the flag */
  snprintf(args, sizeof args, "export %s --format onnx --out x", adapter_path);
  MXL_CHECK(cli(args, log) == 2 && log_has(log, "--format onnx"));
  snprintf(args, sizeof args, "merge --model %s --adapter %s --out %s --dtype fp8", base_dir,
           adapter_path, path_in("fp8"));
  MXL_CHECK(cli(args, log) == 2 && log_has(log, "--dtype fp8"));
  snprintf(args, sizeof args, "merge --model %s --adapter %s --out %s --dtype bf16 --eval x",
           base_dir, adapter_path, path_in("ev"));
  MXL_CHECK(cli(args, log) == 2 && log_has(log, "--eval needs --dtype mxfp4"));
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/mxl_merge_XXXXXX");
  if (!mkdtemp(dir)) return 1;
  if (!make_inputs()) {
    fprintf(stderr, "could not write the tiny models: %s\n", mxl_last_error());
    return 1;
  }
  MXL_RUN(test_bf16);
  MXL_RUN(test_mxfp4);
  MXL_RUN(test_refusals);
  MXL_RUN(test_kill9);
  MXL_RUN(test_commands);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
  return mxl_test_summary("merge");
}
