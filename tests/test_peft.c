/* PEFT interchange against PEFT itself: tests/fixtures/adapter/peft_tiny
 * was written by PEFT (tools/peft_fixture.py) for a tiny GptOss model with
 * the shape of tests/adapter_fixture.h. Importing it must reproduce PEFT's
 * own ΔW for every module; exporting must give back PEFT's file, key for
 * key and byte for byte.
 *
 * With MXL_PEFT_EXPORT_DIR set, the export is also left there for
 * tools/peft_check.py to load with PEFT. */
#include <inttypes.h>
#include <unistd.h>

#include "adapters/adapter_file.h"
#include "adapters/peft.h"
#include "core/fileio.h"
#include "core/json.h"
#include "core/status.h"
#include "model/safetensors.h"
#include "test.h"
#include "tests/adapter_fixture.h"

#define FIXTURE MXL_SOURCE_DIR "/tests/fixtures/adapter/peft_tiny"

static char tmp_dir[64];

static const char *tmp_path(const char *name) {
  static char path[4][160];
  static int next;
  char *p = path[next++ % 4];
  snprintf(p, 160, "%s/%s", tmp_dir, name);
  return p;
}

static mxl_lora *import_fixture(void) {
  mxl_config c;
  fake_config(&c);
  mxl_lora *lora = NULL;
  MXL_CHECK_OK(mxl_peft_import(FIXTURE, &c, &lora));
  return lora;
}

static void test_import_targets(void) {
  mxl_lora *lora = import_fixture();
  if (!lora) return;
  const mxl_lora_config *lc = &lora->layout->cfg;
  MXL_CHECK(lc->rank == 4 && lc->alpha == 8.0f && lc->rslora == 0);
  const char *expect[MXL_LORA_N_TARGETS] = {"111", "101", "111", "010", "110", "011"};
  for (int t = 0; t < MXL_LORA_N_TARGETS; t++)
    for (int l = 0; l < 3; l++)
      MXL_CHECK_MSG(lc->layers[t][l] == (expect[t][l] == '1'), "%s layer %d",
                    mxl_lora_target_name((mxl_lora_target)t), l);
  MXL_CHECK(lora->layout->n_tensors == 26);
  mxl_lora_destroy(lora);
}

/* ΔW from our tensors, in PEFT's orientation: attention [out, in], experts
 * [E, in, out]. */
static void our_delta(const mxl_lora *lora, int layer, mxl_lora_target t, float *out) {
  mxl_lora_pair p;
  mxl_lora_find(lora->layout, lora->params, layer, t, &p);
  int expert = mxl_lora_target_is_expert(t);
  for (int e = 0; e < p.n_experts; e++) {
    const float *A = p.A + (size_t)e * p.rank * p.in, *B = p.B + (size_t)e * p.out * p.rank;
    for (int o = 0; o < p.out; o++)
      for (int i = 0; i < p.in; i++) {
        double s = 0;
        for (int k = 0; k < p.rank; k++) s += (double)B[o * p.rank + k] * A[k * p.in + i];
        size_t at = expert ? ((size_t)e * p.in + i) * p.out + o : (size_t)o * p.in + i;
        out[at] = (float)(s * lora->layout->scaling);
      }
  }
}

/* The re-indexing is right if our ΔW equals PEFT's get_delta_weight. */
static void test_delta_matches_peft(void) {
  mxl_lora *lora = import_fixture();
  mxl_safetensors *st = NULL;
  MXL_CHECK_OK(mxl_safetensors_open(FIXTURE "/delta.safetensors", &st));
  if (!lora || !st) goto done;
  MXL_CHECK(st->n_tensors == 13);
  for (int j = 0; j < st->n_tensors; j++) {
    const mxl_st_tensor *d = &st->tensors[j];
    int layer = -1;
    char kind[16], target[16];
    MXL_CHECK(sscanf(d->name, "layers.%d.%15[a-z].%15[a-z_]", &layer, kind, target) == 3);
    int t = mxl_lora_target_parse(target);
    mxl_lora_pair p;
    MXL_CHECK_MSG(t >= 0 && mxl_lora_find(lora->layout, lora->params, layer,
                                          (mxl_lora_target)t, &p),
                  "%s not adapted", d->name);
    if (t < 0 || !p.A) continue;
    size_t n = (size_t)p.n_experts * p.in * p.out;
    MXL_CHECK(d->dtype == MXL_DT_F32 && d->nbytes == n * 4);
    if (mxl_lora_target_is_expert((mxl_lora_target)t))
      MXL_CHECK(d->ndim == 3 && d->shape[0] == p.n_experts && d->shape[1] == p.in &&
                d->shape[2] == p.out);
    else MXL_CHECK(d->ndim == 2 && d->shape[0] == p.out && d->shape[1] == p.in);
    float *ours = malloc(n * sizeof *ours);
    our_delta(lora, layer, (mxl_lora_target)t, ours);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
      float peft;
      memcpy(&peft, d->data + 4 * i, 4);
      double err = fabs((double)peft - ours[i]) / (1e-3 + fabs((double)peft));
      if (err > worst) worst = err;
    }
    MXL_CHECK_MSG(worst < 1e-4, "%s: worst relative error %g", d->name, worst);
    free(ours);
  }
done:
  mxl_safetensors_close(st);
  mxl_lora_destroy(lora);
}

/* Export = PEFT's file: same keys, shapes, dtypes and bytes. */
static void test_export_equals_peft(void) {
  mxl_lora *lora = import_fixture();
  if (!lora) return;
  const char *env = getenv("MXL_PEFT_EXPORT_DIR");
  const char *dir = env && *env ? env : tmp_path("export");
  MXL_CHECK_OK(mxl_peft_export(lora, MXL_ADAPTER_F32, dir));
  char path[512];
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
  mxl_safetensors *ours = NULL, *peft = NULL;
  MXL_CHECK_OK(mxl_safetensors_open(path, &ours));
  MXL_CHECK_OK(mxl_safetensors_open(FIXTURE "/adapter_model.safetensors", &peft));
  if (ours && peft) {
    MXL_CHECK(ours->n_tensors == peft->n_tensors);
    for (int j = 0; j < peft->n_tensors; j++) {
      const mxl_st_tensor *p = &peft->tensors[j];
      const mxl_st_tensor *o = mxl_safetensors_find(ours, p->name);
      MXL_CHECK_MSG(o != NULL, "export lacks %s", p->name);
      if (!o) continue;
      MXL_CHECK(o->dtype == p->dtype && o->ndim == p->ndim && o->nbytes == p->nbytes);
      MXL_CHECK_MSG(o->ndim == 2 && o->shape[0] == p->shape[0] && o->shape[1] == p->shape[1],
                    "%s shape", p->name);
      MXL_CHECK_MSG(o->nbytes == p->nbytes && !memcmp(o->data, p->data, p->nbytes),
                    "%s bytes differ", p->name);
    }
    MXL_CHECK(mxl_safetensors_metadata(ours, "format") &&
              !strcmp(mxl_safetensors_metadata(ours, "format"), "pt"));
  }
  /* The keys and shapes PEFT listed (expect.json) are exactly ours. */
  cJSON *expect = NULL;
  MXL_CHECK_OK(mxl_json_parse_file(FIXTURE "/expect.json", 1 << 20, &expect));
  const cJSON *keys = cJSON_GetObjectItemCaseSensitive(expect, "keys");
  MXL_CHECK(ours && cJSON_GetArraySize(keys) == ours->n_tensors);
  for (const cJSON *k = keys ? keys->child : NULL; k && ours; k = k->next) {
    const mxl_st_tensor *o = mxl_safetensors_find(ours, k->string);
    MXL_CHECK_MSG(o && o->ndim == 2 &&
                      o->shape[0] == cJSON_GetArrayItem(k, 0)->valuedouble &&
                      o->shape[1] == cJSON_GetArrayItem(k, 1)->valuedouble,
                  "%s", k->string);
  }
  cJSON_Delete(expect);
  /* Our adapter_config.json describes the same adapter. */
  mxl_config c;
  fake_config(&c);
  mxl_lora *again = NULL;
  MXL_CHECK_OK(mxl_peft_import(dir, &c, &again));
  if (again) {
    MXL_CHECK(!memcmp(&again->layout->cfg, &lora->layout->cfg, sizeof lora->layout->cfg));
    MXL_CHECK(!memcmp(again->params, lora->params, lora->layout->n_floats * 4));
  }
  cJSON *cfg = NULL;
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  MXL_CHECK_OK(mxl_json_parse_file(path, 1 << 20, &cfg));
  char *modules = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(cfg, "target_modules"));
  char *params = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(cfg, "target_parameters"));
  MXL_CHECK_MSG(modules && !strcmp(modules, "[\"q_proj\",\"model.layers.0.self_attn.k_proj\","
                                            "\"model.layers.2.self_attn.k_proj\",\"v_proj\","
                                            "\"model.layers.1.self_attn.o_proj\"]"),
                "%s", modules);
  MXL_CHECK_MSG(params && !strcmp(params, "[\"0.mlp.experts.gate_up_proj\","
                                          "\"1.mlp.experts.gate_up_proj\","
                                          "\"1.mlp.experts.down_proj\","
                                          "\"2.mlp.experts.down_proj\"]"),
                "%s", params);
  free(modules);
  free(params);
  cJSON_Delete(cfg);
  mxl_lora_destroy(again);
  mxl_safetensors_close(ours);
  mxl_safetensors_close(peft);
  mxl_lora_destroy(lora);
}

/* Our A bound is PEFT's kaiming_uniform_(a=√5) bound, measured by PEFT. */
static void test_init_bound_matches_peft(void) {
  cJSON *expect = NULL;
  MXL_CHECK_OK(mxl_json_parse_file(FIXTURE "/expect.json", 1 << 20, &expect));
  const cJSON *bounds = cJSON_GetObjectItemCaseSensitive(expect, "init_bounds");
  int n = 0;
  for (const cJSON *b = bounds ? bounds->child : NULL; b; b = b->next, n++) {
    int fan_in = atoi(b->string);
    double max_abs = cJSON_GetObjectItemCaseSensitive(b, "max_abs")->valuedouble;
    double ours = mxl_lora_init_bound(fan_in);
    MXL_CHECK_MSG(max_abs <= ours * (1 + 1e-6) && max_abs > ours * 0.999,
                  "fan-in %d: PEFT's max |A| %g, our bound %g", fan_in, max_abs, ours);
  }
  MXL_CHECK(n == 5);
  cJSON_Delete(expect);
}

/* The OpenAI cookbook recipe on gpt-oss-20b: our keys and shapes are the
 * ones PEFT gives (on a meta-device model), and so is the parameter count,
 * 15,040,512 (docs/gpt-oss.md §8). */
static void test_cookbook_keys(void) {
  mxl_config c;
  mxl_config_gpt_oss_20b(&c);
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, 8, 16.0f);
  MXL_CHECK_OK(mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS, NULL, 0, c.n_layers));
  const int layers[] = {7, 15, 23};
  MXL_CHECK_OK(mxl_lora_config_add(&lc, MXL_LORA_EXPERT_BITS, layers, 3, c.n_layers));
  mxl_lora_layout *lay = NULL;
  MXL_CHECK_OK(mxl_lora_layout_create(&c, &lc, &lay));
  cJSON *expect = NULL;
  MXL_CHECK_OK(mxl_json_parse_file(FIXTURE "/expect.json", 1 << 20, &expect));
  const cJSON *cook = cJSON_GetObjectItemCaseSensitive(expect, "cookbook_20b");
  const cJSON *keys = cJSON_GetObjectItemCaseSensitive(cook, "keys");
  if (!lay || !keys) goto done;
  MXL_CHECK(cJSON_GetObjectItemCaseSensitive(cook, "params")->valuedouble == 15040512.0);
  MXL_CHECK(lay->n_params == 15040512);
  MXL_CHECK(cJSON_GetArraySize(keys) == lay->n_tensors);
  for (int i = 0; i < lay->n_tensors; i++) {
    char key[128];
    mxl_peft_key(lay, i, key, sizeof key);
    const mxl_lora_tensor *x = &lay->tensors[i];
    int expert = mxl_lora_target_is_expert(x->target);
    double rows = x->is_b ? x->rows : (double)x->n_experts * x->rows;
    double cols = x->is_b ? (expert ? (double)x->n_experts * x->cols : x->cols) : x->cols;
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(keys, key);
    MXL_CHECK_MSG(shape && cJSON_GetArrayItem(shape, 0)->valuedouble == rows &&
                      cJSON_GetArrayItem(shape, 1)->valuedouble == cols,
                  "%s: PEFT has no such key or another shape", key);
  }
done:
  cJSON_Delete(expect);
  mxl_lora_layout_destroy(lay);
}

static void test_bf16_and_public_api(void) {
  mxl_config c;
  fake_config(&c);
  fake_model fm;
  MXL_CHECK(fake_model_init(&fm, &c, 1));
  mxl_lora *lora = import_fixture(), *back = NULL;
  if (!lora) return;
  mxl_adapter_save_options opt;
  mxl_adapter_save_options_default(&opt);
  opt.dtype = MXL_ADAPTER_BF16;
  const char *file = tmp_path("a.mxla");
  MXL_CHECK_OK(mxl_adapter_save(file, lora, &fm.m, &opt));
  mxl_adapter *a = NULL;
  MXL_CHECK_OK(mxl_adapter_open(file, &a));
  if (a) MXL_CHECK_OK(mxl_adapter_export_peft(a, tmp_path("bf16")));
  mxl_adapter_close(a);
  char path[512];
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", tmp_path("bf16"));
  mxl_safetensors *st = NULL;
  MXL_CHECK_OK(mxl_safetensors_open(path, &st));
  MXL_CHECK(st && st->n_tensors == 26 && st->tensors[0].dtype == MXL_DT_BF16);
  mxl_safetensors_close(st);
  MXL_CHECK_OK(mxl_adapter_import_peft(tmp_path("bf16"), &fm.m, &back));
  if (back) {
    size_t bad = 0;
    for (size_t i = 0; i < lora->layout->n_floats; i++)
      bad += back->params[i] != mxl_bf16_to_f32(mxl_f32_to_bf16(lora->params[i]));
    MXL_CHECK_MSG(bad == 0, "%zu values", bad);
  }
  mxl_lora_destroy(back);
  mxl_lora_destroy(lora);
  fake_model_free(&fm);
}

/* Copies the fixture to dir, with adapter_config.json's first `from`
 * replaced by `to`. */
static int fixture_with_config(const char *dir, const char *from, const char *to) {
  char *text = NULL, *st_data = NULL, path[512];
  size_t n = 0, st_n = 0;
  if (mxl_make_dirs(dir) != MXL_OK) return 0;
  if (mxl_read_file(FIXTURE "/adapter_config.json", 1 << 20, &text, &n) != MXL_OK) return 0;
  if (mxl_read_file(FIXTURE "/adapter_model.safetensors", 1 << 24, &st_data, &st_n) != MXL_OK)
    return 0;
  char *hit = strstr(text, from);
  int ok = hit != NULL;
  if (ok) {
    size_t head = (size_t)(hit - text);
    char *edited = malloc(n + strlen(to) + 1);
    memcpy(edited, text, head);
    strcpy(edited + head, to);
    strcat(edited, hit + strlen(from));
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    ok = mxl_write_file_atomic(path, edited, strlen(edited)) == MXL_OK;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    ok = ok && mxl_write_file_atomic(path, st_data, st_n) == MXL_OK;
    free(edited);
  }
  free(text);
  free(st_data);
  return ok;
}

static void test_import_errors(void) {
  mxl_config c;
  fake_config(&c);
  mxl_lora *lora = NULL;
  static const struct {
    const char *from, *to;
    mxl_status status;
    const char *needle;
  } cases[] = {
      {"\"r\": 4", "\"r\": 2", MXL_ERR_FORMAT, "expected [8, 24] for rank 2 (r)"},
      {"\"r\": 4", "\"r\": \"4\"", MXL_ERR_FORMAT, "adapter_config.json: r"},
      {"\"lora_alpha\": 8", "\"lora_alpha\": null", MXL_ERR_FORMAT, "lora_alpha"},
      {"\"use_dora\": false", "\"use_dora\": true", MXL_ERR_UNSUPPORTED, "use_dora"},
      {"\"lora_bias\": false", "\"lora_bias\": true", MXL_ERR_UNSUPPORTED, "lora_bias"},
      {"\"fan_in_fan_out\": false", "\"fan_in_fan_out\": true", MXL_ERR_UNSUPPORTED,
       "fan_in_fan_out"},
      {"{", "[{", MXL_ERR_FORMAT, "adapter_config.json"},
      /* rank_pattern is honoured: a pattern the file's shapes contradict is named */
      {"\"rank_pattern\": {}", "\"rank_pattern\": {\"q_proj\": 2}", MXL_ERR_FORMAT,
       "q_proj.lora_A.weight: a 2-D tensor [4, 24], expected [2, 24] for rank 2 (rank_pattern)"},
      {"\"peft_type\": \"LORA\"", "\"peft_type\": \"IA3\"", MXL_ERR_UNSUPPORTED, "IA3"},
      {"\"2.mlp.experts.down_proj\"", "\"2.mlp.experts.up_proj\"", MXL_ERR_UNSUPPORTED,
       "target_parameters[3]"},
      /* Without layer 2's down in target_parameters its tensors are unknown. */
      {",\n    \"2.mlp.experts.down_proj\"", "", MXL_ERR_FORMAT,
       "layers.2.mlp.experts.lora_A.weight: expert LoRA for layer 2, but"},
      /* Layer 1 with only gate_up declared: PEFT would not have nested. */
      {"\"1.mlp.experts.down_proj\",", "", MXL_ERR_FORMAT,
       "layers.1.mlp.experts.base_layer.lora_A.weight: a nested (base_layer) expert pair"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    char dir[160];
    snprintf(dir, sizeof dir, "%s/bad%zu", tmp_dir, k);
    MXL_CHECK_MSG(fixture_with_config(dir, cases[k].from, cases[k].to), "case %zu", k);
    mxl_status st = mxl_peft_import(dir, &c, &lora);
    MXL_CHECK_MSG(st == cases[k].status, "case %zu: %s: %s", k, mxl_status_name(st),
                  mxl_last_error());
    MXL_CHECK_MSG(strstr(mxl_last_error(), cases[k].needle) != NULL,
                  "case %zu: \"%s\" lacks \"%s\"", k, mxl_last_error(), cases[k].needle);
    MXL_CHECK(lora == NULL);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    MXL_CHECK(system(cmd) == 0);
  }
  /* Another model shape: the shapes name the mismatch. */
  mxl_config wide = c;
  wide.hidden = 32;
  MXL_CHECK_FAILS(mxl_peft_import(FIXTURE, &wide, &lora), MXL_ERR_FORMAT, "expected [16, 32]");
  MXL_CHECK_FAILS(mxl_peft_import(tmp_path("nothing"), &c, &lora), MXL_ERR_IO,
                  "adapter_config.json");
  /* An extra tensor (a LoRA on lm_head) is refused by name. */
  const char *dir = tmp_path("extra");
  MXL_CHECK(fixture_with_config(dir, "\"r\"", "\"r\""));
  mxl_safetensors *st = NULL;
  MXL_CHECK_OK(mxl_safetensors_open(FIXTURE "/adapter_model.safetensors", &st));
  if (st) {
    int n = st->n_tensors + 1;
    mxl_st_spec *specs = calloc((size_t)n, sizeof *specs);
    const void **data = calloc((size_t)n, sizeof *data);
    float extra[4 * 24] = {0};
    for (int j = 0; j < st->n_tensors; j++) {
      specs[j].name = st->tensors[j].name;
      specs[j].dtype = st->tensors[j].dtype;
      specs[j].ndim = st->tensors[j].ndim;
      memcpy(specs[j].shape, st->tensors[j].shape, sizeof specs[j].shape);
      data[j] = st->tensors[j].data;
    }
    specs[n - 1] = (mxl_st_spec){"base_model.model.lm_head.lora_A.weight", MXL_DT_F32, 2, {4, 24}};
    data[n - 1] = extra;
    char path[512];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    MXL_CHECK_OK(mxl_safetensors_write(path, specs, data, n, NULL, 0));
    MXL_CHECK_FAILS(mxl_peft_import(dir, &c, &lora), MXL_ERR_UNSUPPORTED, "lm_head.lora_A");
    free(specs);
    free(data);
  }
  mxl_safetensors_close(st);
}

/* Copies the fixture to dir, its tensors as F16 when to_f16, leaving out
 * the key `skip` (NULL: none). */
static int rewrite_fixture(const char *dir, int to_f16, const char *skip) {
  mxl_safetensors *st = NULL;
  if (!fixture_with_config(dir, "\"r\"", "\"r\"")) return 0;
  if (mxl_safetensors_open(FIXTURE "/adapter_model.safetensors", &st) != MXL_OK) return 0;
  int n = 0;
  mxl_st_spec *specs = calloc((size_t)st->n_tensors, sizeof *specs);
  const void **data = calloc((size_t)st->n_tensors, sizeof *data);
  uint16_t **halves = calloc((size_t)st->n_tensors, sizeof *halves);
  for (int j = 0; j < st->n_tensors; j++) {
    const mxl_st_tensor *t = &st->tensors[j];
    if (skip && !strcmp(t->name, skip)) continue;
    specs[n].name = t->name;
    specs[n].dtype = to_f16 ? MXL_DT_F16 : t->dtype;
    specs[n].ndim = t->ndim;
    memcpy(specs[n].shape, t->shape, sizeof specs[n].shape);
    data[n] = t->data;
    if (to_f16) {
      /* Values of N(0, 0.1²) as IEEE half, by truncation of the float's bits
       * (enough here: the check compares against the same rounding). */
      size_t count = t->nbytes / 4;
      halves[n] = malloc(count * 2);
      for (size_t i = 0; i < count; i++) {
        float f;
        memcpy(&f, t->data + 4 * i, 4);
        uint32_t b;
        memcpy(&b, &f, 4);
        int e = (int)((b >> 23) & 255) - 127 + 15;
        uint16_t h = (uint16_t)((b >> 16) & 0x8000);
        if (e > 0 && e < 31) h |= (uint16_t)(e << 10 | ((b >> 13) & 1023));
        halves[n][i] = h;
      }
      data[n] = halves[n];
    }
    n++;
  }
  char path[512];
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
  int ok = mxl_safetensors_write(path, specs, data, n, NULL, 0) == MXL_OK;
  for (int j = 0; j < st->n_tensors; j++) free(halves[j]);
  free(halves);
  free(specs);
  free(data);
  mxl_safetensors_close(st);
  return ok;
}

static float half_to_float(uint16_t h) {
  int e = (h >> 10) & 31, m = h & 1023;
  float v = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(m | 1024), e - 25);
  return h & 0x8000 ? -v : v;
}

static void test_import_f16_and_missing(void) {
  mxl_config c;
  fake_config(&c);
  mxl_lora *ref = import_fixture(), *lora = NULL;
  const char *dir = tmp_path("f16");
  MXL_CHECK(rewrite_fixture(dir, 1, NULL));
  MXL_CHECK_OK(mxl_peft_import(dir, &c, &lora));
  if (ref && lora) {
    size_t bad = 0;
    for (size_t i = 0; i < ref->layout->n_floats; i++) {
      float f = ref->params[i];
      uint32_t b;
      memcpy(&b, &f, 4);
      int e = (int)((b >> 23) & 255) - 127 + 15;
      uint16_t h = (uint16_t)((b >> 16) & 0x8000);
      if (e > 0 && e < 31) h |= (uint16_t)(e << 10 | ((b >> 13) & 1023));
      bad += lora->params[i] != half_to_float(h);
    }
    MXL_CHECK_MSG(bad == 0, "%zu values", bad);
  }
  mxl_lora_destroy(lora);
  lora = NULL;
  dir = tmp_path("nob");
  MXL_CHECK(rewrite_fixture(dir, 0,
                            "base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight"));
  MXL_CHECK_FAILS(mxl_peft_import(dir, &c, &lora), MXL_ERR_FORMAT,
                  "layers.1.self_attn.o_proj.lora_A.weight without its lora_B");
  MXL_CHECK(lora == NULL);
  dir = tmp_path("noexpert");
  MXL_CHECK(rewrite_fixture(dir, 0,
                            "base_model.model.model.layers.1.mlp.experts.base_layer.lora_B.weight"));
  MXL_CHECK_FAILS(mxl_peft_import(dir, &c, &lora), MXL_ERR_FORMAT,
                  "layers.1.mlp.experts.base_layer.lora_A.weight without its lora_B");
  mxl_lora_destroy(ref);
}

int main(void) {
  snprintf(tmp_dir, sizeof tmp_dir, "/tmp/mxl_peft_XXXXXX");
  if (!mkdtemp(tmp_dir)) return 1;
  MXL_RUN(test_import_targets);
  MXL_RUN(test_delta_matches_peft);
  MXL_RUN(test_export_equals_peft);
  MXL_RUN(test_init_bound_matches_peft);
  MXL_RUN(test_cookbook_keys);
  MXL_RUN(test_bf16_and_public_api);
  MXL_RUN(test_import_errors);
  MXL_RUN(test_import_f16_and_missing);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
  return mxl_test_summary("peft");
}
