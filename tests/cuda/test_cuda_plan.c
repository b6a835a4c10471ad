/* test_cuda_plan: `mxlora plan`'s accounting (include/mxlora/plan.h)
 * against the bytes the emulated CUDA backend actually allocates, and the
 * GPU recipes against the GPUs they are written for.
 *
 * A tiny gpt-oss is bound to the emulated backend (device memory: the
 * engine uploads every weight file; attention through cuDNN's graph, as a
 * device runs it, against the stand-ins), a LoRA set and its AdamW state are
 * allocated as the trainer does, and one training step runs; the backend's
 * peak must equal the plan's allocated bytes exactly, for two shapes of
 * step (the scratch and the activations scale differently). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/lora.h"
#include "model/train_step.h"
#include "model_fixture.h"
#include "ops_util.h"
#include "test.h"
#include "tests/cuda/cuda_emu_backend.h"

static model_fixture f;

/* One training step of n_seq x seq_len tokens with rank-`rank` LoRA on
 * every attention and expert projection, the state's options `opts`
 * (moe_chunk, keep_inputs), on a fresh emulated backend; returns its peak
 * device bytes. */
static size_t measured_peak(int n_seq, int seq_len, int rank, mxl_train_state opts,
                            int unembed_on_host) {
  const mxl_config *c = &f.model->config;
  mxl_backend *emu = NULL;
  mxl_engine *e = NULL;
  mxl_lora *params = NULL, *grads = NULL;
  float *m = NULL, *v = NULL;
  size_t now = 0, peak = 0;
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, rank, 2.0f * rank);
  MXL_CHECK_OK(
      mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS | MXL_LORA_EXPERT_BITS, NULL, 0, c->n_layers));
  MXL_CHECK_OK(mxl_backend_cuda_emu_create(0, &emu));
  /* attention through cuDNN, as on a device (the stand-ins of cudnn_standin.cpp) */
  if (emu) MXL_CHECK_OK(mxl_cuda_emu_use_cudnn(emu));
  const mxl_engine_options eo = {.unembed_on_host = unembed_on_host};
  MXL_CHECK_OK(mxl_engine_create_opts(f.model, emu, &eo, &e));
  MXL_CHECK_OK(mxl_lora_create(c, &lc, emu, &params));
  MXL_CHECK_OK(mxl_lora_create(c, &lc, emu, &grads));
  if (!e || !params || !grads) goto done;
  size_t bytes = params->layout->n_floats * sizeof(float);
  m = emu->ops->alloc(emu, bytes);
  v = emu->ops->alloc(emu, bytes);

  const int n = n_seq * seq_len;
  int32_t *tokens = calloc(n, 4), *targets = calloc(n, 4), *pos = calloc(n, 4), *seg = calloc(n, 4);
  float *weights = calloc(n, 4);
  test_rng r = {9};
  for (int i = 0; i < n; i++) {
    tokens[i] = rng_int(&r, f.model->w.vocab_rows);
    targets[i] = rng_int(&r, f.model->w.vocab_rows);
    pos[i] = i % seq_len;
    weights[i] = 1.0f / n;
  }
  mxl_train_batch b = {n_seq, seq_len, tokens, targets, weights, pos, seg, NULL, NULL};
  mxl_lora_layer *pl = calloc(c->n_layers, sizeof *pl), *gl = calloc(c->n_layers, sizeof *gl);
  mxl_lora_view pv = {pl, c->n_layers, 0}, gv = {gl, c->n_layers, 0};
  mxl_lora_fill_view(params->layout, params->params, 1.0f, &pv);
  mxl_lora_fill_view(grads->layout, grads->params, 1.0f, &gv);
  const mxl_lora_view *views[] = {&pv};
  mxl_lora_stack stack = {views, 1, 1, 5};
  mxl_train_state st = opts;
  double loss = 0;
  MXL_CHECK_OK(mxl_train_step(e, &st, &b, &stack, &gv, &loss));
  mxl_cuda_emu_memory(emu, &now, &peak);
  mxl_train_state_release(e, &st);
  free(pl), free(gl), free(tokens), free(targets), free(pos), free(seg), free(weights);
done:
  if (emu) {
    emu->ops->free(emu, m);
    emu->ops->free(emu, v);
  }
  mxl_lora_destroy(params);
  mxl_lora_destroy(grads);
  mxl_engine_destroy(e);
  mxl_backend_destroy(emu);
  return peak;
}

/* Steps of several shapes: the defaults (layer inputs offloaded, experts
 * in chunks of 1024 tokens: one chunk here), experts in chunks of 16
 * tokens, every layer's input kept on the device (with the activations
 * recomputed, and kept: all routed rows, and in chunks), the unembedding
 * in host memory. The emulated backend cannot say how much memory it has
 * left, so auto would recompute there: the kept cases ask for true. */
static void test_plan_matches_allocations(void) {
  const struct {
    int n_seq, seq_len, rank, moe_chunk, keep_inputs, unembed_on_host, keep;
  } steps[] = {{2, 13, 2, 0, 0, 0, MXL_KEEP_AUTO},
               {1, 70, 4, 0, 0, 0, MXL_KEEP_AUTO},
               {1, 70, 4, 16, 0, 0, MXL_KEEP_AUTO},
               {2, 13, 2, 0, 1, 0, MXL_KEEP_OFF},
               {2, 13, 2, 0, 1, 0, MXL_KEEP_ON},
               {2, 13, 2, 16, 1, 0, MXL_KEEP_ON},
               {1, 70, 4, 16, 0, 1, MXL_KEEP_AUTO}};
  for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
    mxl_plan_request req = {0};
    req.model = f.dir;
    req.gpu_bytes = (uint64_t)1 << 30;
    req.seq_len = steps[i].seq_len;
    req.batch = steps[i].n_seq;
    req.rank = steps[i].rank;
    req.targets = "attn,experts";
    req.moe_chunk = steps[i].moe_chunk;
    req.keep_inputs = steps[i].keep_inputs;
    req.unembed_on_host = steps[i].unembed_on_host;
    req.keep_activations = mxl_keep_mode_name(steps[i].keep);
    mxl_plan p;
    MXL_CHECK_OK(mxl_plan_compute(&req, &p));
    mxl_train_state opts = {.moe_chunk = steps[i].moe_chunk,
                            .keep_inputs = steps[i].keep_inputs,
                            .keep_activations = steps[i].keep};
    size_t peak = measured_peak(steps[i].n_seq, steps[i].seq_len, steps[i].rank, opts,
                                steps[i].unembed_on_host);
    printf("  %d x %d tokens, rank %d, MoE chunk %d, inputs %s, activations %s, unembedding "
           "%s: plan %llu bytes, emulated backend peak %zu bytes\n",
           steps[i].n_seq, steps[i].seq_len, steps[i].rank, p.moe_chunk,
           p.offload ? "offloaded" : "kept", p.keeps ? "kept" : "recomputed",
           p.host_unembed ? "on the host" : "on the device", (unsigned long long)p.allocated,
           peak);
    MXL_CHECK(p.keeps == (steps[i].keep == MXL_KEEP_ON));
    MXL_CHECK_MSG(p.allocated == peak, "plan %llu vs allocated %zu (difference %lld)",
                  (unsigned long long)p.allocated, peak, (long long)p.allocated - (long long)peak);
    MXL_CHECK(p.fits && p.total == p.allocated + MXL_PLAN_RUNTIME_RESERVE);
    MXL_CHECK(p.offload == !steps[i].keep_inputs);
    /* the token embedding stays in host memory */
    const mxl_config *c = &f.model->config;
    MXL_CHECK(p.host_embed == (uint64_t)f.model->w.vocab_rows * c->hidden * 2);
    MXL_CHECK(p.host_unembed == (steps[i].unembed_on_host ? p.host_embed : 0));
  }
}

/* The GPU recipes fit the smallest GPU they are written for, at their
 * sequence length, within issue 10's goals: gpt-oss-20b LoRA on attention
 * and every expert at rank 8 and 4096 tokens in 14 GiB, gpt-oss-120b in 72
 * (recipes/README.md holds the plans). */
static void test_recipes_fit(void) {
  const struct {
    const char *recipe, *shape, *gpu, *goal;
  } cases[] = {{"gpt-oss-20b-gpu.json", "gpt-oss-20b", "16GB", "14GB"},
               {"gpt-oss-120b-gpu.json", "gpt-oss-120b", "80GB", "72GB"}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char path[512];
    snprintf(path, sizeof path, "%s/recipes/%s", MXL_SOURCE_DIR, cases[i].recipe);
    mxl_plan_request req = {0};
    req.shape = cases[i].shape;
    req.recipe = path;
    MXL_CHECK_OK(mxl_plan_parse_bytes(cases[i].gpu, &req.gpu_bytes));
    mxl_plan p;
    MXL_CHECK_OK(mxl_plan_compute(&req, &p));
    printf("  %s: %.2f GiB of %s, seq %d (longest %d)\n", cases[i].recipe,
           (double)p.total / 1073741824.0, cases[i].gpu, p.seq_len, p.longest_seq);
    MXL_CHECK_MSG(p.fits, "%s does not fit %s", cases[i].recipe, cases[i].gpu);
    uint64_t goal = 0;
    MXL_CHECK_OK(mxl_plan_parse_bytes(cases[i].goal, &goal));
    MXL_CHECK_MSG(p.total <= goal, "%s: %.2f GiB, more than %s", cases[i].recipe,
                  (double)p.total / 1073741824.0, cases[i].goal);
    /* every layer's experts, rank 8, 4096 tokens */
    MXL_CHECK(p.rank == 8 && p.seq_len == 4096 && p.expert_layers == p.n_layers);
  }
}

static void test_bad_requests(void) {
  mxl_plan_request req = {0};
  mxl_plan p;
  uint64_t bytes;
  req.shape = "gpt-oss-7b";
  MXL_CHECK_FAILS(mxl_plan_compute(&req, &p), MXL_ERR_ARGUMENT, "gpt-oss-7b");
  req.shape = "gpt-oss-20b";
  req.expert_layers = "1,99";
  MXL_CHECK_FAILS(mxl_plan_compute(&req, &p), MXL_ERR_ARGUMENT, "expert layers");
  req.expert_layers = NULL;
  req.seq_len = 1 << 20;
  MXL_CHECK_FAILS(mxl_plan_compute(&req, &p), MXL_ERR_ARGUMENT, "seq");
  MXL_CHECK_FAILS(mxl_plan_parse_bytes("lots", &bytes), MXL_ERR_ARGUMENT, "lots");
  MXL_CHECK_OK(mxl_plan_parse_bytes("24GB", &bytes));
  MXL_CHECK(bytes == (uint64_t)24 << 30);
  MXL_CHECK_OK(mxl_plan_parse_bytes("1536MiB", &bytes));
  MXL_CHECK(bytes == (uint64_t)1536 << 20);
}

int main(void) {
  if (fixture_open(&f, "test", "hf", 3, "", 1) != MXL_OK) {
    fprintf(stderr, "setup: %s\n", mxl_last_error());
    return 1;
  }
  MXL_RUN(test_plan_matches_allocations);
  MXL_RUN(test_recipes_fit);
  MXL_RUN(test_bad_requests);
  fixture_close(&f);
  return mxl_test_summary("cuda_plan");
}
