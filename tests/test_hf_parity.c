/* Forward parity with Hugging Face transformers.
 *
 * tests/fixtures/parity/forward_<name>.safetensors hold what transformers'
 * GptOssForCausalLM (CPU, fp32, eager attention, MXFP4 experts dequantized
 * by transformers) computes on a tiny checkpoint written by `mxlora tiny`
 * (tools/gen_forward_fixtures.py): the logits of every position and every
 * hidden state. Here the same checkpoint is written again by mxl_tiny_write
 * (its model.safetensors must have the recorded sha256), run through
 * mxl_forward, and compared:
 *   - ref backend, HF layout: every hidden state and the logits, fp32 vs
 *     fp32 (tolerance REF_TOL relative to the largest |value|);
 *   - CPU backend, HF layout: the same (CPU_TOL; its GEMMs take bf16
 *     activations on AVX-512 BF16 machines);
 *   - ref backend, original/ and metal/ layouts: the logits (metal keeps
 *     fewer vocabulary rows; its first rows are compared).
 * transformers' hidden_states[l] is the input of layer l for l < L, and its
 * last entry is the output of the FINAL NORM (not the raw residual stream);
 * the fixture also holds the last layer's raw output and the norm weight,
 * so mxl_forward's hidden[L] (before the norm) is compared with the raw
 * output and its RMSNorm (computed here in double) with hidden_states[L]. */
#include "model/forward.h"
#include "model/engine.h"
#include "model/model.h"
#include "parity_util.h"
#include "test.h"

#define SCRIPT "tools/gen_forward_fixtures.py BUILD/mxlora"

/* Largest |ours − transformers| / max |transformers| allowed.
 * ref: fp32 vs fp32, summation order only (measured 4.5e-7).
 * cpu: the CPU backend's GEMMs round their inputs to bf16 (measured 3.1e-3). */
static const double REF_TOL = 5e-6;
static const double CPU_TOL = 1e-2;

typedef struct hf_fixture {
  mxl_safetensors *st;
  int L, H, V, N;
  int normed; /* transformers' last hidden state is after the final norm */
  int32_t *tokens; /* [N] */
  float *logits;   /* [N, V] */
  float *hidden;   /* [L+1, N, H] as transformers returns it */
  float *last;     /* [N, H] layer L-1 output before the final norm */
  float *norm_w;   /* [H] */
} hf_fixture;

static void fixture_free(hf_fixture *f) {
  mxl_safetensors_close(f->st);
  free(f->tokens), free(f->logits), free(f->hidden), free(f->last), free(f->norm_w);
  memset(f, 0, sizeof *f);
}

static mxl_status fixture_load(const char *name, hf_fixture *f) {
  memset(f, 0, sizeof *f);
  char path[512];
  snprintf(path, sizeof path, "%sforward_%s.safetensors", PARITY_DIR, name);
  MXL_TRY(mxl_safetensors_open(path, &f->st));
  f->L = atoi(parity_meta(f->st, "layers"));
  f->H = atoi(parity_meta(f->st, "hidden_size"));
  f->V = atoi(parity_meta(f->st, "vocab_size"));
  f->N = atoi(parity_meta(f->st, "tokens"));
  f->normed = !strcmp(parity_meta(f->st, "last_hidden"), "normed");
  if (f->L <= 0 || f->H <= 0 || f->V <= 0 || f->N <= 0)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: metadata lacks layers/hidden_size/vocab_size/tokens",
                      path);
  size_t L = f->L, H = f->H, V = f->V, N = f->N;
  f->tokens = parity_tensor(f->st, "tokens", N);
  f->logits = parity_tensor(f->st, "logits", N * V);
  f->hidden = parity_tensor(f->st, "hidden", (L + 1) * N * H);
  f->last = parity_tensor(f->st, "last_layer", N * H);
  f->norm_w = parity_tensor(f->st, "norm_weight", H);
  if (!f->tokens || !f->logits || !f->hidden || !f->last || !f->norm_w) return MXL_ERR_FORMAT;
  return MXL_OK;
}

/* An engine on `subdir` of the regenerated checkpoint. */
typedef struct opened {
  mxl_model *model;
  mxl_backend *be;
  mxl_engine *engine;
} opened;

static mxl_status open_layout(const parity_ckpt *ck, const char *subdir, int use_ref,
                              opened *o) {
  memset(o, 0, sizeof *o);
  char path[128];
  snprintf(path, sizeof path, "%s/%s", ck->dir, subdir);
  MXL_TRY(mxl_model_open(path, &o->model));
  MXL_TRY(use_ref ? mxl_backend_ref_create(&o->be) : mxl_backend_cpu_create(0, &o->be));
  return mxl_engine_create(o->model, o->be, &o->engine);
}

static void close_layout(opened *o) {
  mxl_engine_destroy(o->engine);
  mxl_backend_destroy(o->be);
  mxl_model_close(o->model);
  memset(o, 0, sizeof *o);
}

/* Logits [N, vocab_rows] of every position and hidden [L+1, N, H], in one
 * prefill of the fixture's tokens. */
static mxl_status forward(mxl_engine *e, const hf_fixture *f, float *logits, float *hidden) {
  mxl_kv_cache *c = NULL;
  mxl_forward_state st = {0};
  MXL_TRY(mxl_kv_cache_create(e, f->N, f->N, &c));
  mxl_fwd_seq seq = {c, f->tokens, f->N};
  mxl_forward_out out = {logits, 1, hidden};
  mxl_status s = mxl_forward(e, &st, &seq, 1, NULL, &out);
  mxl_forward_state_release(e, &st);
  mxl_kv_cache_destroy(e, c);
  return s;
}

/* RMSNorm in double of x [N, H] with weight w, as transformers' GptOssRMSNorm. */
static void rms_norm(const float *x, const float *w, int N, int H, double eps, float *y) {
  for (int t = 0; t < N; t++) {
    double ss = 0;
    for (int j = 0; j < H; j++) ss += (double)x[t * H + j] * x[t * H + j];
    double r = 1.0 / sqrt(ss / H + eps);
    for (int j = 0; j < H; j++) y[t * H + j] = (float)(x[t * H + j] * r * w[j]);
  }
}

static double worst_seen[3]; /* ref, cpu, other layouts: for the summary line */

/* Compares one backend's hidden states and logits with the fixture. */
static void compare_all(const char *label, const hf_fixture *f, const float *logits,
                        const float *hidden, double eps, double tol, double *worst) {
  const size_t NH = (size_t)f->N * f->H;
  double worst_hidden = 0;
  for (int l = 0; l <= f->L; l++) {
    /* Slot L of ours is before the final norm: compare with the raw output. */
    const float *want = l < f->L ? f->hidden + l * NH : f->last;
    parity_err e = parity_compare(hidden + l * NH, want, NH, 1e-3);
    worst_hidden = fmax(worst_hidden, parity_rel(e));
    MXL_CHECK_MSG(parity_rel(e) <= tol, "%s: hidden state %d: max |diff| %.3g (scale %.3g)",
                  label, l, e.max_abs, e.scale);
  }
  float *normed = malloc(NH * sizeof(float));
  rms_norm(hidden + f->L * NH, f->norm_w, f->N, f->H, eps, normed);
  const float *want_normed = f->normed ? f->hidden + f->L * NH : f->last;
  const float *got_normed = f->normed ? normed : hidden + f->L * NH;
  parity_err en = parity_compare(got_normed, want_normed, NH, 1e-3);
  MXL_CHECK_MSG(parity_rel(en) <= tol, "%s: final-norm output: max |diff| %.3g (scale %.3g)",
                label, en.max_abs, en.scale);
  free(normed);
  parity_err el = parity_compare(logits, f->logits, (size_t)f->N * f->V, 1e-2);
  MXL_CHECK_MSG(parity_rel(el) <= tol, "%s: logits: max |diff| %.3g (scale %.3g)", label,
                el.max_abs, el.scale);
  printf("  %-28s hidden states worst %.3g, final norm %.3g, logits %.3g relative "
         "(max |diff| %.3g of max |logit| %.3g; worst element-wise %.3g)\n",
         label, worst_hidden, parity_rel(en), parity_rel(el), el.max_abs, el.scale, el.max_rel);
  *worst = fmax(*worst, fmax(worst_hidden, fmax(parity_rel(en), parity_rel(el))));
}

static void run_backend(const char *name, const hf_fixture *f, const parity_ckpt *ck, int ref) {
  opened o;
  mxl_status st = open_layout(ck, "", ref, &o);
  MXL_CHECK_OK(st);
  if (st == MXL_OK) {
    const mxl_config *c = &o.model->config;
    MXL_CHECK(c->n_layers == f->L && c->hidden == f->H && o.engine->w.vocab_rows == f->V);
    if (c->n_layers == f->L && c->hidden == f->H && o.engine->w.vocab_rows == f->V) {
      float *logits = malloc((size_t)f->N * f->V * sizeof(float));
      float *hidden = malloc((size_t)(f->L + 1) * f->N * f->H * sizeof(float));
      MXL_CHECK_OK(forward(o.engine, f, logits, hidden));
      char label[64];
      snprintf(label, sizeof label, "%s, %s backend:", name, ref ? "ref" : "cpu");
      compare_all(label, f, logits, hidden, c->rms_eps, ref ? REF_TOL : CPU_TOL,
                  &worst_seen[ref ? 0 : 1]);
      free(logits), free(hidden);
    }
  }
  close_layout(&o);
}

/* original/ and metal/ logits against transformers' (ref backend). */
static void run_layout(const char *name, const hf_fixture *f, const parity_ckpt *ck,
                       const char *subdir) {
  opened o;
  mxl_status st = open_layout(ck, subdir, 1, &o);
  MXL_CHECK_OK(st);
  if (st == MXL_OK) {
    const int Vr = o.engine->w.vocab_rows;
    MXL_CHECK(Vr <= f->V);
    for (int t = 0; t < f->N; t++)
      MXL_CHECK_MSG(f->tokens[t] < Vr, "token %d outside %s's %d rows", f->tokens[t], subdir, Vr);
    float *logits = malloc((size_t)f->N * Vr * sizeof(float));
    float *want = malloc((size_t)f->N * Vr * sizeof(float));
    MXL_CHECK_OK(forward(o.engine, f, logits, NULL));
    for (int t = 0; t < f->N; t++)
      memcpy(want + (size_t)t * Vr, f->logits + (size_t)t * f->V, Vr * sizeof(float));
    parity_err e = parity_compare(logits, want, (size_t)f->N * Vr, 1e-2);
    printf("  %s, %-9s (ref) logits: %.3g relative (max |diff| %.3g, %d of %d rows)\n", name,
           subdir, parity_rel(e), e.max_abs, Vr, f->V);
    MXL_CHECK_MSG(parity_rel(e) <= REF_TOL, "%s %s: logits max |diff| %.3g (scale %.3g)", name,
                  subdir, e.max_abs, e.scale);
    worst_seen[2] = fmax(worst_seen[2], parity_rel(e));
    free(logits), free(want);
  }
  close_layout(&o);
}

static void check_config(const char *name) {
  hf_fixture f;
  mxl_status st = fixture_load(name, &f);
  MXL_CHECK_OK(st);
  parity_ckpt ck = {{0}};
  if (st == MXL_OK) st = parity_checkpoint(f.st, "all", SCRIPT, &ck);
  MXL_CHECK_OK(st);
  if (st == MXL_OK) {
    run_backend(name, &f, &ck, 1);
    run_backend(name, &f, &ck, 0);
    run_layout(name, &f, &ck, "original");
    run_layout(name, &f, &ck, "metal");
  }
  parity_checkpoint_remove(&ck);
  fixture_free(&f);
}

/* The test preset: 3 layers, 4 experts top-2, 4:2 heads, window 8, 20 tokens. */
static void test_preset(void) { check_config("test"); }
/* 4 layers, 6:3 heads, 6 experts top-3, window 5, H 96, I 64, 16 tokens. */
static void test_other_shapes(void) { check_config("shapes"); }
/* head_dim 64, 2:1 heads, 5 experts top-1, window 3, rope_theta 1e4, swiglu_limit 3. */
static void test_mqa_head_dim_64(void) { check_config("mqa"); }
/* head_dim 16, window 1, k = E = 3, swiglu_limit 0.5, rope_theta 5e5. */
static void test_edges(void) { check_config("edge"); }

/* A fixture whose checkpoint no longer matches is refused with a message
 * saying what to rerun; a missing tensor is named. */
static void test_stale_fixture(void) {
  static const char header[] =
      "{\"__metadata__\":{\"preset\":\"test\",\"seed\":\"11\",\"sets\":\"layers=1\","
      "\"sha256\":\"00\"},\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  size_t n = sizeof header - 1;
  uint8_t *buf = calloc(1, 8 + n + 4);
  for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)n >> (8 * i));
  memcpy(buf + 8, header, n);
  mxl_safetensors *st = NULL;
  MXL_CHECK_OK(mxl_safetensors_parse_buffer(buf, 8 + n + 4, "stale", &st));
  if (st) {
    parity_ckpt ck;
    MXL_CHECK_FAILS(parity_checkpoint(st, "hf", SCRIPT, &ck), MXL_ERR_FORMAT,
                    "rerun tools/gen_forward_fixtures.py");
    parity_checkpoint_remove(&ck);
    MXL_CHECK(parity_tensor(st, "logits", 1) == NULL);
    MXL_CHECK(strstr(mxl_last_error(), "logits missing") != NULL);
    MXL_CHECK(parity_tensor(st, "x", 2) == NULL);
    MXL_CHECK(strstr(mxl_last_error(), "expected 2") != NULL);
  }
  mxl_safetensors_close(st);
  free(buf);
}

int main(void) {
  MXL_RUN(test_preset);
  MXL_RUN(test_other_shapes);
  MXL_RUN(test_mqa_head_dim_64);
  MXL_RUN(test_edges);
  MXL_RUN(test_stale_fixture);
  printf("worst relative difference to transformers: ref %.3g (tolerance %.0e), cpu %.3g "
         "(tolerance %.0e), original/metal layouts %.3g\n",
         worst_seen[0], REF_TOL, worst_seen[1], CPU_TOL, worst_seen[2]);
  return mxl_test_summary("hf_parity");
}
