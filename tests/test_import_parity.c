/* mxlora import against PEFT: tests/fixtures/import/ holds
 * adapters that transformers + PEFT trained on a tiny checkpoint in the three
 * gpt-oss expert layouts (PEFT's fused target_parameters, Unsloth's
 * gate_up_projs.N modules with rsLoRA, per-expert gate/up/down modules with
 * rank_pattern and alpha_pattern) and PEFT's logits with each
 * (tools/gen_import_fixtures.py). The checkpoint is written again (same
 * sha256), each folder imported with mxl_peft_import, saved and reopened as
 * an .mxla (what generate/eval/merge/train --init-adapter read), and
 * mxl_forward with the adapter overlaid must give PEFT's logits: the ref
 * backend to fp32 rounding. */
#include "adapters/adapter_file.h"
#include "adapters/peft.h"
#include "model/engine.h"
#include "model/forward.h"
#include "model/model.h"
#include "parity_util.h"
#include "test.h"

#define IMPORT_DIR MXL_SOURCE_DIR "/tests/fixtures/import/"
#define SCRIPT "tools/gen_import_fixtures.py BUILD/mxlora"

/* max |diff| / max |PEFT logit|; measured 2.1e-7 .. 2.4e-7 on the ref backend */
static const double TOL = 5e-6;

static double forward_rel(mxl_engine *e, const mxl_lora *lora, const int32_t *ids, int T,
                          const float *want) {
  const mxl_config *c = &e->model->config;
  const int V = e->w.vocab_rows;
  mxl_lora_layer *vl = calloc((size_t)c->n_layers, sizeof *vl);
  float *logits = malloc((size_t)T * V * sizeof *logits);
  mxl_kv_cache *kv = NULL;
  mxl_forward_state st = {0};
  parity_err err = {INFINITY, 1, INFINITY};
  MXL_CHECK_OK(mxl_kv_cache_create(e, T, T, &kv));
  if (vl && logits && kv) {
    mxl_lora_view view = {vl, c->n_layers, 0.0f};
    mxl_lora_fill_view(lora->layout, lora->params, 1.0f, &view);
    const mxl_lora_view *views[] = {&view};
    mxl_lora_stack stack = {views, 1, 0, 0};
    mxl_fwd_seq seq = {kv, ids, T};
    mxl_forward_out out = {logits, 1, NULL};
    mxl_status s = mxl_forward(e, &st, &seq, 1, &stack, &out);
    MXL_CHECK_OK(s);
    if (s == MXL_OK) err = parity_compare(logits, want, (size_t)T * V, 1e-2);
  }
  mxl_forward_state_release(e, &st);
  mxl_kv_cache_destroy(e, kv);
  free(vl);
  free(logits);
  return parity_rel(err);
}

static void test_import_parity(void) {
  mxl_safetensors *fx = NULL;
  MXL_CHECK_OK(mxl_safetensors_open(IMPORT_DIR "logits.safetensors", &fx));
  if (!fx) return;
  parity_ckpt ck;
  mxl_status st = parity_checkpoint(fx, "hf", SCRIPT, &ck);
  MXL_CHECK_OK(st);
  mxl_model *model = NULL;
  mxl_backend *be = NULL;
  mxl_engine *e = NULL;
  if (st == MXL_OK) st = mxl_model_open(ck.dir, &model);
  if (st == MXL_OK) st = mxl_backend_ref_create(&be);
  if (st == MXL_OK) st = mxl_engine_create(model, be, &e);
  MXL_CHECK_OK(st);
  const mxl_st_tensor *idt = mxl_safetensors_find(fx, "input_ids");
  const int T = idt ? (int)idt->shape[0] : 0;
  int32_t *ids = idt ? parity_tensor(fx, "input_ids", (size_t)T) : NULL;
  static const struct {
    const char *name;
    int rank; /* of the imported set */
  } variants[] = {{"fused", 4}, {"unsloth", 4}, {"per_expert", 8}};
  for (size_t v = 0; st == MXL_OK && ids && v < sizeof variants / sizeof variants[0]; v++) {
    char dir[512], key[64], file[600];
    snprintf(dir, sizeof dir, IMPORT_DIR "%s", variants[v].name);
    snprintf(key, sizeof key, "logits.%s", variants[v].name);
    float *want = parity_tensor(fx, key, (size_t)T * e->w.vocab_rows);
    mxl_lora *lora = NULL, *back = NULL;
    MXL_CHECK_OK(mxl_peft_import(dir, &model->config, &lora));
    if (!want || !lora) {
      free(want);
      mxl_lora_destroy(lora);
      continue;
    }
    /* per_expert: separate gate and up pairs of rank 4 side by side */
    MXL_CHECK_MSG(lora->layout->cfg.rank == variants[v].rank, "%s: rank %d", variants[v].name,
                  lora->layout->cfg.rank);
    double rel = forward_rel(e, lora, ids, T, want);
    MXL_CHECK_MSG(rel <= TOL, "%s: logits %.3g relative to PEFT's", variants[v].name, rel);
    /* the saved .mxla loads back onto the model and gives the same logits */
    snprintf(file, sizeof file, "%s/%s.mxla", ck.dir, variants[v].name);
    mxl_adapter_save_options so;
    mxl_adapter_save_options_default(&so);
    mxl_adapter *a = NULL;
    MXL_CHECK_OK(mxl_adapter_save(file, lora, model, &so));
    MXL_CHECK_OK(mxl_adapter_open(file, &a));
    if (a) MXL_CHECK_OK(mxl_adapter_load(a, model, &back));
    double rel2 = back ? forward_rel(e, back, ids, T, want) : INFINITY;
    MXL_CHECK_MSG(rel2 <= TOL, "%s: reopened .mxla: logits %.3g relative", variants[v].name, rel2);
    printf("  %-10s rank %d: logits %.3g relative to PEFT's (reopened .mxla %.3g)\n",
           variants[v].name, lora->layout->cfg.rank, rel, rel2);
    mxl_adapter_close(a);
    mxl_lora_destroy(back);
    mxl_lora_destroy(lora);
    free(want);
  }
  free(ids);
  mxl_engine_destroy(e);
  mxl_backend_destroy(be);
  mxl_model_close(model);
  parity_checkpoint_remove(&ck);
  mxl_safetensors_close(fx);
}

int main(void) {
  MXL_RUN(test_import_parity);
  return mxl_test_summary("import_parity");
}
