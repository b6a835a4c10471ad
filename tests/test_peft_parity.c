/* Training parity with transformers + PEFT.
 *
 * tests/fixtures/parity/peft_train.safetensors (tools/gen_peft_fixtures.py)
 * holds what PEFT computes on a tiny checkpoint written by `mxlora tiny`:
 * LoRA r=2 on q/k/v/o (target_modules) and on the experts' gate_up_proj and
 * down_proj (target_parameters) of every layer, every A and B set to
 * non-zero values, a batch of 2 sequences × 12 tokens with masked labels,
 * loss = mean cross-entropy over the unmasked next-token labels, its
 * gradients, and one torch.optim.AdamW step. All tensors are already in
 * mxlora's layout and names (the script maps PEFT's keys and its expert B
 * layout and checks the mapping against PEFT's merged per-expert deltas).
 *
 * Here the same checkpoint is written again (same sha256), the LoRA block
 * (all targets, all layers) is loaded with the initial values, and
 * mxl_train_step runs with weight 1/N on the N unmasked positions; the loss
 * and every gradient tensor are compared, then ops->adamw is applied with
 * the same hyper-parameters and the parameters are compared: once with our
 * gradients (end to end) and once with PyTorch's (the optimizer alone).
 * The inference path gets the same adapter as an overlay: mxl_forward on
 * both sequences at once must give PEFT's logits.
 * The ref backend shows fp32 parity; the CPU backend, whose GEMMs round
 * their inputs to bf16, is held to a looser bound. */
#include "adapters/lora.h"
#include "model/engine.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/train_step.h"
#include "parity_util.h"
#include "test.h"

#define FIXTURE PARITY_DIR "peft_train.safetensors"
#define SCRIPT "tools/gen_peft_fixtures.py BUILD/mxlora"

/* Bounds, per tensor. */
typedef struct tolerances {
  double loss;    /* |ours − PEFT| / PEFT */
  double logits;  /* mxl_forward with the adapter: max |diff| / max |PEFT logit| */
  double grad;    /* max |ours − PyTorch| / max |PyTorch| of each gradient tensor */
  double updated; /* parameters after AdamW on our gradients: max |ours − PyTorch| / lr.
                     Step 1 of Adam moves each parameter by about lr·g/(|g| + eps), so a
                     gradient error δg moves it by up to lr·δg/eps: the bound is in
                     units of one step, lr */
  double adamw;   /* parameters after AdamW on PyTorch's gradients (the optimizer
                     alone): max |ours − PyTorch| / max |PyTorch| */
} tolerances;

/* Measured: ref loss 2.1e-8, logits 1.2e-6, gradients 3.2e-6, updated
 * 1.8e-4 lr, AdamW 1.2e-7; cpu loss 4.1e-5, logits 5.1e-3, gradients
 * 1.5e-2, updated 0.81 lr (gradient entries below eps carry bf16 errors of
 * the size of eps), AdamW 1.2e-7. */
static const tolerances REF_TOL = {1e-6, 5e-6, 3e-5, 2e-3, 1e-6};
static const tolerances CPU_TOL = {1e-3, 1e-2, 5e-2, 1.5, 1e-6};

typedef struct peft_fixture {
  mxl_safetensors *st;
  int B, T, rank;
  float alpha, lr, beta1, beta2, eps, wd;
  double loss;
  int32_t *ids, *labels; /* [B, T] */
  float *logits;         /* [B, T, V] */
} peft_fixture;

static double meta_num(const peft_fixture *f, const char *key) {
  return strtod(parity_meta(f->st, key), NULL);
}

static mxl_status fixture_load(peft_fixture *f) {
  memset(f, 0, sizeof *f);
  MXL_TRY(mxl_safetensors_open(FIXTURE, &f->st));
  f->B = atoi(parity_meta(f->st, "batch"));
  f->T = atoi(parity_meta(f->st, "seq_len"));
  f->rank = atoi(parity_meta(f->st, "rank"));
  f->alpha = (float)meta_num(f, "alpha");
  f->lr = (float)meta_num(f, "lr");
  f->beta1 = (float)meta_num(f, "beta1");
  f->beta2 = (float)meta_num(f, "beta2");
  f->eps = (float)meta_num(f, "eps");
  f->wd = (float)meta_num(f, "weight_decay");
  f->loss = meta_num(f, "loss");
  if (f->B <= 0 || f->T <= 1 || f->rank <= 0 || !(f->lr > 0) || !(f->loss > 0))
    return mxl_errorf(MXL_ERR_FORMAT, FIXTURE ": metadata lacks batch/seq_len/rank/lr/loss");
  f->ids = parity_tensor(f->st, "input_ids", (size_t)f->B * f->T);
  f->labels = parity_tensor(f->st, "labels", (size_t)f->B * f->T);
  const mxl_st_tensor *lg = mxl_safetensors_find(f->st, "logits");
  if (!lg || lg->ndim != 3)
    return mxl_errorf(MXL_ERR_FORMAT, FIXTURE ": tensor logits [B, T, V] missing");
  f->logits = parity_tensor(f->st, "logits", (size_t)f->B * f->T * lg->shape[2]);
  return f->ids && f->labels && f->logits ? MXL_OK : MXL_ERR_FORMAT;
}

static void fixture_free(peft_fixture *f) {
  mxl_safetensors_close(f->st);
  free(f->ids), free(f->labels), free(f->logits);
  memset(f, 0, sizeof *f);
}

/* Fixture tensor "<prefix>.<name>" of LoRA tensor i, or NULL (with a check
 * failure naming it). */
static float *lora_fixture_tensor(const peft_fixture *f, const mxl_lora_layout *lay, int i,
                                  const char *prefix) {
  char name[96];
  snprintf(name, sizeof name, "%s.%s", prefix, lay->tensors[i].name);
  float *p = parity_tensor(f->st, name, lay->tensors[i].count);
  MXL_CHECK_MSG(p != NULL, "%s", mxl_last_error());
  return p;
}

/* Copies every "<prefix>.*" fixture tensor into a whole block laid out by
 * `lay` (padding zero). Returns 0 when one is missing or misshapen. */
static int load_block(const peft_fixture *f, const mxl_lora_layout *lay, const char *prefix,
                      float *block) {
  memset(block, 0, lay->n_floats * sizeof(float));
  for (int i = 0; i < lay->n_tensors; i++) {
    float *p = lora_fixture_tensor(f, lay, i, prefix);
    if (!p) return 0;
    memcpy(block + lay->tensors[i].offset, p, lay->tensors[i].count * sizeof(float));
    free(p);
  }
  /* Nothing in the fixture that the layout does not have. */
  int n = 0;
  size_t plen = strlen(prefix);
  for (int i = 0; i < f->st->n_tensors; i++)
    n += !strncmp(f->st->tensors[i].name, prefix, plen) && f->st->tensors[i].name[plen] == '.';
  MXL_CHECK_MSG(n == lay->n_tensors, "fixture has %d %s.* tensors, the layout %d", n, prefix,
                lay->n_tensors);
  return n == lay->n_tensors;
}

/* Worst per-tensor difference of `got` against `want` (two whole blocks):
 * max |diff| / unit, or relative to the tensor's max |want| when unit is 0;
 * checks each tensor against `tol`. */
static double compare_blocks(const char *what, const mxl_lora_layout *lay, const float *got,
                             const float *want, double unit, double tol, double *worst_abs) {
  double worst = 0;
  for (int i = 0; i < lay->n_tensors; i++) {
    const mxl_lora_tensor *t = &lay->tensors[i];
    parity_err e = parity_compare(got + t->offset, want + t->offset, t->count, 1e-6);
    double r = unit > 0 ? e.max_abs / unit : parity_rel(e);
    MXL_CHECK_MSG(e.scale > 0, "%s %s: all zero in the fixture", what, t->name);
    MXL_CHECK_MSG(r <= tol, "%s %s: max |diff| %.3g of max %.3g (%.3g > %.2g)", what, t->name,
                  e.max_abs, e.scale, r, tol);
    worst = fmax(worst, r);
    *worst_abs = fmax(*worst_abs, e.max_abs);
  }
  return worst;
}

/* Next-token targets from HF-style labels: row b·T + t predicts
 * labels[b, t+1]; weight 1/N on the N rows whose label is not -100. */
static int make_batch(const peft_fixture *f, int32_t *targets, float *weights, int32_t *pos,
                      int32_t *seg) {
  int n = 0;
  for (int b = 0; b < f->B; b++)
    for (int t = 0; t + 1 < f->T; t++) n += f->labels[b * f->T + t + 1] != -100;
  for (int b = 0; b < f->B; b++)
    for (int t = 0; t < f->T; t++) {
      int i = b * f->T + t;
      int next = t + 1 < f->T ? f->labels[i + 1] : -100;
      targets[i] = next == -100 ? -1 : next;
      weights[i] = next == -100 ? 0.0f : 1.0f / (float)n;
      pos[i] = t, seg[i] = 0;
    }
  return n;
}

/* The adapter as an inference overlay: every position of both sequences in
 * one mxl_forward call; returns max |diff| / max |PEFT logit|. */
static double check_overlay(mxl_engine *e, const peft_fixture *f, const mxl_lora_stack *stack,
                            double tol) {
  const int V = e->w.vocab_rows, n = f->B * f->T;
  mxl_kv_cache *c[2] = {NULL, NULL};
  mxl_forward_state st = {0};
  float *logits = malloc((size_t)n * V * sizeof(float));
  parity_err err = {INFINITY, 1, INFINITY};
  MXL_CHECK(f->B == 2);
  MXL_CHECK_OK(mxl_kv_cache_create(e, f->T, f->T, &c[0]));
  MXL_CHECK_OK(mxl_kv_cache_create(e, f->T, f->T, &c[1]));
  if (f->B == 2 && c[0] && c[1]) {
    mxl_fwd_seq seqs[2] = {{c[0], f->ids, f->T}, {c[1], f->ids + f->T, f->T}};
    mxl_forward_out out = {logits, 1, NULL};
    mxl_status s = mxl_forward(e, &st, seqs, 2, stack, &out);
    MXL_CHECK_OK(s);
    if (s == MXL_OK) err = parity_compare(logits, f->logits, (size_t)n * V, 1e-2);
  }
  MXL_CHECK_MSG(parity_rel(err) <= tol, "logits with the adapter: max |diff| %.3g of max %.3g",
                err.max_abs, err.scale);
  mxl_forward_state_release(e, &st);
  mxl_kv_cache_destroy(e, c[0]), mxl_kv_cache_destroy(e, c[1]);
  free(logits);
  return parity_rel(err);
}

static void run_backend(const peft_fixture *f, const parity_ckpt *ck, int use_ref) {
  const char *label = use_ref ? "ref" : "cpu";
  const tolerances *tol = use_ref ? &REF_TOL : &CPU_TOL;
  mxl_model *model = NULL;
  mxl_backend *be = NULL;
  mxl_engine *e = NULL;
  mxl_lora *lora = NULL, *grad = NULL;
  mxl_lora_layer *vl = NULL, *gl = NULL;
  mxl_train_state ts = {0};
  float *want_grad = NULL, *want_upd = NULL, *init = NULL, *m = NULL, *v = NULL, *p2 = NULL;
  const int n = f->B * f->T;
  int32_t *targets = malloc(n * sizeof(int32_t)), *pos = malloc(n * sizeof(int32_t));
  int32_t *seg = malloc(n * sizeof(int32_t));
  float *weights = malloc(n * sizeof(float));

  mxl_status st = mxl_model_open(ck->dir, &model);
  if (st == MXL_OK) st = use_ref ? mxl_backend_ref_create(&be) : mxl_backend_cpu_create(0, &be);
  if (st == MXL_OK) st = mxl_engine_create(model, be, &e);
  MXL_CHECK_OK(st);
  if (st != MXL_OK) goto done;
  const mxl_config *c = &model->config;
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, f->rank, f->alpha);
  MXL_CHECK_OK(mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS | MXL_LORA_EXPERT_BITS, NULL, 0,
                                   c->n_layers));
  MXL_CHECK_OK(mxl_lora_create(c, &lc, NULL, &lora));
  MXL_CHECK_OK(mxl_lora_create(c, &lc, NULL, &grad));
  if (!lora || !grad) goto done;
  const mxl_lora_layout *lay = lora->layout;
  MXL_CHECK_NEAR(lay->scaling, meta_num(f, "scaling"), 1e-7);
  size_t nf = lay->n_floats;
  want_grad = malloc(nf * sizeof(float)), want_upd = malloc(nf * sizeof(float));
  init = malloc(nf * sizeof(float)), p2 = malloc(nf * sizeof(float));
  m = calloc(nf, sizeof(float)), v = calloc(nf, sizeof(float));
  if (!load_block(f, lay, "init", init) || !load_block(f, lay, "grad", want_grad) ||
      !load_block(f, lay, "updated", want_upd))
    goto done;
  memcpy(lora->params, init, nf * sizeof(float));

  vl = calloc(c->n_layers, sizeof *vl), gl = calloc(c->n_layers, sizeof *gl);
  mxl_lora_view view = {vl, c->n_layers, 0.0f}, gview = {gl, c->n_layers, 0.0f};
  mxl_lora_fill_view(lay, lora->params, 1.0f, &view);
  mxl_lora_fill_view(lay, grad->params, 1.0f, &gview);
  const mxl_lora_view *views[] = {&view};
  mxl_lora_stack overlay = {views, 1, 0, 0};
  double logits_rel = check_overlay(e, f, &overlay, tol->logits);
  mxl_lora_stack stack = {views, 1, 1, 0};
  int trained = make_batch(f, targets, weights, pos, seg);
  mxl_train_batch batch = {f->B, f->T, f->ids, targets, weights, pos, seg, NULL, NULL};
  double loss = 0;
  MXL_CHECK_OK(mxl_train_step(e, &ts, &batch, &stack, &gview, &loss));
  double loss_rel = fabs(loss - f->loss) / f->loss;
  MXL_CHECK_MSG(loss_rel <= tol->loss, "%s: loss %.9g, PEFT %.9g", label, loss, f->loss);

  double abs_g = 0, abs_u = 0, abs_a = 0;
  double wg = compare_blocks("gradient", lay, grad->params, want_grad, 0, tol->grad, &abs_g);

  /* AdamW step 1 on our gradients: the end-to-end result. */
  const mxl_ops *ops = e->ops;
  ops->adamw(be, lora->params, grad->params, m, v, nf, f->lr, f->beta1, f->beta2, f->eps, f->wd,
             1, 1.0f);
  double wu = compare_blocks("updated", lay, lora->params, want_upd, f->lr, tol->updated,
                             &abs_u);
  /* The same step on PyTorch's gradients: the optimizer alone. */
  memcpy(p2, init, nf * sizeof(float));
  memset(m, 0, nf * sizeof(float)), memset(v, 0, nf * sizeof(float));
  ops->adamw(be, p2, want_grad, m, v, nf, f->lr, f->beta1, f->beta2, f->eps, f->wd, 1, 1.0f);
  double wa = compare_blocks("adamw", lay, p2, want_upd, 0, tol->adamw, &abs_a);
  printf("  %s backend: logits with the adapter %.3g relative; loss %.7f vs PEFT %.7f "
         "(relative %.2g) over %d targets; gradients: "
         "worst tensor %.3g relative (max |diff| %.3g) over %d tensors; AdamW: on our "
         "gradients %.3g lr (max |diff| %.3g), on PyTorch's %.3g relative (max |diff| %.3g)\n",
         label, logits_rel, loss, f->loss, loss_rel, trained, wg, abs_g, lay->n_tensors, wu,
         abs_u, wa, abs_a);
done:
  mxl_train_state_release(e, &ts);
  mxl_lora_destroy(lora), mxl_lora_destroy(grad);
  free(vl), free(gl), free(want_grad), free(want_upd), free(init), free(m), free(v), free(p2);
  free(targets), free(pos), free(seg), free(weights);
  mxl_engine_destroy(e);
  mxl_backend_destroy(be);
  mxl_model_close(model);
}

static void test_peft_training_step(void) {
  peft_fixture f;
  mxl_status st = fixture_load(&f);
  MXL_CHECK_OK(st);
  parity_ckpt ck = {{0}};
  if (st == MXL_OK) st = parity_checkpoint(f.st, "hf", SCRIPT, &ck);
  MXL_CHECK_OK(st);
  if (st == MXL_OK) {
    run_backend(&f, &ck, 1);
    run_backend(&f, &ck, 0);
  }
  parity_checkpoint_remove(&ck);
  fixture_free(&f);
}

int main(void) {
  MXL_RUN(test_peft_training_step);
  return mxl_test_summary("peft_parity");
}
