/* adapters/lora: sizing, lookup, initialisation, PEFT re-indexing. */
#include <math.h>

#include "adapters/lora.h"
#include "core/status.h"
#include "test.h"

/* A small gpt-oss-shaped config whose dimensions are all different, so a
 * swapped in/out shows up; 10 and 6 are not multiples of the alignment. */
static void tiny_config(mxl_config *c) {
  mxl_config_gpt_oss_20b(c);
  c->n_layers = 3;
  c->n_experts = 4;
  c->experts_per_token = 2;
  c->hidden = 10;
  c->intermediate = 6;
  c->head_dim = 4;
  c->n_heads = 3;
  c->n_kv_heads = 1;
}

static void test_target_names(void) {
  unsigned mask = 0;
  MXL_CHECK_OK(mxl_lora_targets_parse("q,v", &mask));
  MXL_CHECK(mask == (MXL_LORA_BIT(MXL_LORA_Q) | MXL_LORA_BIT(MXL_LORA_V)));
  MXL_CHECK_OK(mxl_lora_targets_parse("attn,down", &mask));
  MXL_CHECK(mask == (MXL_LORA_ATTN_BITS | MXL_LORA_BIT(MXL_LORA_DOWN)));
  MXL_CHECK_OK(mxl_lora_targets_parse("all", &mask));
  MXL_CHECK(mask == 0x3f);
  MXL_CHECK_OK(mxl_lora_targets_parse("experts", &mask));
  MXL_CHECK(mask == (MXL_LORA_BIT(MXL_LORA_GATE_UP) | MXL_LORA_BIT(MXL_LORA_DOWN)));
  MXL_CHECK_FAILS(mxl_lora_targets_parse("q,up", &mask), MXL_ERR_ARGUMENT, "\"up\"");
  MXL_CHECK(mask == 0);
  MXL_CHECK_FAILS(mxl_lora_targets_parse("q,,v", &mask), MXL_ERR_ARGUMENT, "empty");
  MXL_CHECK_FAILS(mxl_lora_targets_parse("", &mask), MXL_ERR_ARGUMENT, "empty");
  MXL_CHECK_FAILS(mxl_lora_targets_parse("q,gate_up_and_down_and_everything_else", &mask),
                  MXL_ERR_ARGUMENT, "overlong");
  for (int t = 0; t < MXL_LORA_N_TARGETS; t++)
    MXL_CHECK(mxl_lora_target_parse(mxl_lora_target_name((mxl_lora_target)t)) == t);
  MXL_CHECK(mxl_lora_target_parse("gate") == -1);
  MXL_CHECK(!strcmp(mxl_lora_target_name(MXL_LORA_GATE_UP), "gate_up"));
}

/* docs/gpt-oss.md §8: the cookbook recipe on gpt-oss-20b trains 15,040,512 parameters
 * (165,888 per attention layer × 24 + 3,686,400 per expert layer × 3). */
static void test_cookbook_count(void) {
  mxl_config c;
  mxl_config_gpt_oss_20b(&c);
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, 8, 16.0f);
  MXL_CHECK_OK(mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS, NULL, 0, c.n_layers));
  const int expert_layers[] = {7, 15, 23};
  MXL_CHECK_OK(mxl_lora_config_add(&lc, MXL_LORA_EXPERT_BITS, expert_layers, 3, c.n_layers));
  mxl_lora_layout *lay = NULL;
  MXL_CHECK_OK(mxl_lora_layout_create(&c, &lc, &lay));
  if (!lay) return;
  MXL_CHECK(lay->n_params == 15040512);
  MXL_CHECK(lay->n_floats == lay->n_params); /* every size is a multiple of 16 here */
  MXL_CHECK(lay->n_tensors == 24 * 4 * 2 + 3 * 2 * 2);
  MXL_CHECK_NEAR(lay->scaling, 2.0, 0);
  int i = mxl_lora_tensor_index(lay, "layers.7.experts.gate_up.lora_A");
  MXL_CHECK(i >= 0);
  if (i >= 0) {
    const mxl_lora_tensor *a = &lay->tensors[i], *b = &lay->tensors[i + 1];
    MXL_CHECK(a->n_experts == 32 && a->rows == 8 && a->cols == 2880);
    MXL_CHECK(!strcmp(b->name, "layers.7.experts.gate_up.lora_B"));
    MXL_CHECK(b->n_experts == 32 && b->rows == 5760 && b->cols == 8);
  }
  i = mxl_lora_tensor_index(lay, "layers.0.attn.o.lora_A");
  MXL_CHECK(i >= 0 && lay->tensors[i].rows == 8 && lay->tensors[i].cols == 4096);
  i = mxl_lora_tensor_index(lay, "layers.3.attn.k.lora_B");
  MXL_CHECK(i >= 0 && lay->tensors[i].rows == 512 && lay->tensors[i].cols == 8);
  MXL_CHECK(mxl_lora_tensor_index(lay, "layers.6.experts.down.lora_A") == -1);
  MXL_CHECK(mxl_lora_config_targets(&lc) == 0x3f);
  mxl_lora_layout_destroy(lay);

  /* rsLoRA: alpha/√r. */
  lc.rslora = 1;
  MXL_CHECK_NEAR(mxl_lora_scaling(&lc), 16.0 / sqrt(8.0), 1e-6);
}

static void test_layout_offsets(void) {
  mxl_config c;
  tiny_config(&c);
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, 3, 6.0f);
  const int l1[] = {1};
  MXL_CHECK_OK(mxl_lora_config_add(&lc, MXL_LORA_BIT(MXL_LORA_Q) | MXL_LORA_BIT(MXL_LORA_O),
                                   NULL, 0, c.n_layers));
  MXL_CHECK_OK(mxl_lora_config_add(&lc, MXL_LORA_EXPERT_BITS, l1, 1, c.n_layers));
  mxl_lora_layout *lay = NULL;
  MXL_CHECK_OK(mxl_lora_layout_create(&c, &lc, &lay));
  if (!lay) return;
  /* q: A [3, 10], B [12, 3]; o: A [3, 12], B [10, 3];
   * gate_up: A [4, 3, 10], B [4, 12, 3]; down: A [4, 3, 6], B [4, 10, 3]. */
  size_t expect = 3 * (30 + 36 + 36 + 30) + (120 + 144) + (72 + 120);
  MXL_CHECK(lay->n_params == expect);
  MXL_CHECK(lay->n_tensors == 3 * 4 + 4);
  size_t end = 0;
  for (int i = 0; i < lay->n_tensors; i++) {
    const mxl_lora_tensor *x = &lay->tensors[i];
    MXL_CHECK(x->offset % MXL_LORA_ALIGN == 0);
    MXL_CHECK(x->offset >= end); /* ordered, no overlap */
    end = x->offset + x->count;
  }
  MXL_CHECK(lay->n_floats >= end && lay->n_floats % MXL_LORA_ALIGN == 0);
  MXL_CHECK(lay->n_floats > lay->n_params); /* padding happened */
  /* Order: layer, then target, then A before B. */
  MXL_CHECK(!strcmp(lay->tensors[0].name, "layers.0.attn.q.lora_A"));
  MXL_CHECK(!strcmp(lay->tensors[3].name, "layers.0.attn.o.lora_B"));
  MXL_CHECK(!strcmp(lay->tensors[8].name, "layers.1.experts.gate_up.lora_A"));
  MXL_CHECK(!strcmp(lay->tensors[11].name, "layers.1.experts.down.lora_B"));

  float *block = calloc(lay->n_floats, sizeof *block);
  mxl_lora_pair p;
  MXL_CHECK(mxl_lora_find(lay, block, 1, MXL_LORA_DOWN, &p) == 1);
  MXL_CHECK(p.A == block + lay->tensors[10].offset && p.B == block + lay->tensors[11].offset);
  MXL_CHECK(p.rank == 3 && p.in == 6 && p.out == 10 && p.n_experts == 4);
  MXL_CHECK(mxl_lora_find(lay, block, 0, MXL_LORA_DOWN, &p) == 0 && p.A == NULL);
  MXL_CHECK(mxl_lora_find(lay, block, 2, MXL_LORA_K, &p) == 0);
  MXL_CHECK(mxl_lora_find(lay, block, 3, MXL_LORA_Q, &p) == 0);
  MXL_CHECK(mxl_lora_find(lay, block, 2, MXL_LORA_O, &p) == 1 && p.in == 12 && p.out == 10);

  mxl_lora_layer layers[3];
  mxl_lora_view view = {layers, 0, 0.0f};
  mxl_lora_fill_view(lay, block, 0.5f, &view);
  MXL_CHECK(view.n_layers == 3);
  MXL_CHECK(layers[1].t[MXL_LORA_GATE_UP].A == block + lay->tensors[8].offset);
  MXL_CHECK(layers[1].t[MXL_LORA_GATE_UP].rank == 3);
  MXL_CHECK_NEAR(layers[1].t[MXL_LORA_GATE_UP].scale, 0.5 * 6.0 / 3.0, 1e-7);
  MXL_CHECK(layers[0].t[MXL_LORA_GATE_UP].A == NULL && layers[2].t[MXL_LORA_V].A == NULL);
  free(block);
  mxl_lora_layout_destroy(lay);
}

static void test_config_errors(void) {
  mxl_config c;
  tiny_config(&c);
  mxl_lora_config lc;
  mxl_lora_layout *lay = NULL;
  mxl_lora_config_init(&lc, 4, 8.0f);
  MXL_CHECK_FAILS(mxl_lora_layout_create(&c, &lc, &lay), MXL_ERR_ARGUMENT, "no target");
  MXL_CHECK(lay == NULL);
  const int bad[] = {0, 3};
  MXL_CHECK_FAILS(mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS, bad, 2, c.n_layers),
                  MXL_ERR_ARGUMENT, "layer 3");
  MXL_CHECK_FAILS(mxl_lora_config_add(&lc, 1u << 6, NULL, 0, c.n_layers), MXL_ERR_ARGUMENT,
                  "unknown bits");
  MXL_CHECK_FAILS(mxl_lora_config_add(&lc, 1, NULL, 0, MXL_MAX_LAYERS + 1), MXL_ERR_ARGUMENT,
                  "layer count");
  MXL_CHECK_OK(mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS, NULL, 0, c.n_layers));
  lc.rank = 0;
  MXL_CHECK_FAILS(mxl_lora_layout_create(&c, &lc, &lay), MXL_ERR_ARGUMENT, "rank 0");
  lc.rank = MXL_LORA_MAX_RANK + 1;
  MXL_CHECK_FAILS(mxl_lora_layout_create(&c, &lc, &lay), MXL_ERR_ARGUMENT, "rank");
  lc.rank = 4;
  lc.alpha = NAN;
  MXL_CHECK_FAILS(mxl_lora_layout_create(&c, &lc, &lay), MXL_ERR_ARGUMENT, "alpha");
  lc.alpha = 8.0f;
  /* A config built for a deeper model is refused on a shallower one. */
  lc.layers[MXL_LORA_Q][5] = 1;
  MXL_CHECK_FAILS(mxl_lora_layout_create(&c, &lc, &lay), MXL_ERR_ARGUMENT, "layer 5");
  MXL_CHECK(lay == NULL);
}

/* PEFT's A init is kaiming_uniform_(a=√5): U(-1/√in, 1/√in) (checked
 * against torch by tools/peft_check.py); B starts at zero. */
static void test_init(void) {
  mxl_config c;
  tiny_config(&c);
  c.hidden = 256; /* enough samples for the moment checks */
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, 8, 16.0f);
  MXL_CHECK_OK(mxl_lora_config_add(&lc, MXL_LORA_BIT(MXL_LORA_Q) | MXL_LORA_EXPERT_BITS, NULL,
                                   0, c.n_layers));
  mxl_lora *a = NULL, *b = NULL;
  MXL_CHECK_OK(mxl_lora_create(&c, &lc, NULL, &a));
  if (!a) return;
  MXL_CHECK_OK(mxl_lora_init_peft(a, 42));
  const mxl_lora_layout *lay = a->layout;
  for (int i = 0; i < lay->n_tensors; i++) {
    const mxl_lora_tensor *x = &lay->tensors[i];
    const float *v = a->params + x->offset;
    double bound = 1.0 / sqrt((double)x->cols), sum = 0, sq = 0, maxabs = 0;
    for (size_t j = 0; j < x->count; j++) {
      sum += v[j];
      sq += (double)v[j] * v[j];
      if (fabs(v[j]) > maxabs) maxabs = fabs(v[j]);
    }
    if (x->is_b) {
      MXL_CHECK_MSG(maxabs == 0, "%s not zero", x->name);
      continue;
    }
    double n = (double)x->count, mean = sum / n, var = sq / n - mean * mean;
    MXL_CHECK_MSG(maxabs <= bound && maxabs > 0.95 * bound, "%s: max %g bound %g", x->name,
                  maxabs, bound);
    /* U(-b, b): mean 0 ± b/√(3n)·4, variance b²/3 within 10 %. */
    MXL_CHECK_MSG(fabs(mean) < 4 * bound / sqrt(3 * n), "%s: mean %g", x->name, mean);
    MXL_CHECK_MSG(fabs(var / (bound * bound / 3) - 1) < 0.1, "%s: var %g", x->name, var);
  }
  /* Every expert's A_e differs (not one shared matrix). */
  mxl_lora_pair p;
  MXL_CHECK(mxl_lora_find(lay, a->params, 2, MXL_LORA_GATE_UP, &p));
  MXL_CHECK(memcmp(p.A, p.A + (size_t)p.rank * p.in, (size_t)p.rank * p.in * 4) != 0);
  /* Padding stays zero. */
  for (int i = 0; i + 1 < lay->n_tensors; i++)
    for (size_t j = lay->tensors[i].offset + lay->tensors[i].count;
         j < lay->tensors[i + 1].offset; j++)
      MXL_CHECK(a->params[j] == 0);

  /* Deterministic, seed-dependent, and independent of the other targets. */
  mxl_lora_config only_q;
  mxl_lora_config_init(&only_q, 8, 16.0f);
  MXL_CHECK_OK(mxl_lora_config_add(&only_q, MXL_LORA_BIT(MXL_LORA_Q), NULL, 0, c.n_layers));
  MXL_CHECK_OK(mxl_lora_create(&c, &only_q, NULL, &b));
  if (!b) {
    mxl_lora_destroy(a);
    return;
  }
  MXL_CHECK_OK(mxl_lora_init_peft(b, 42));
  mxl_lora_pair pa, pb;
  mxl_lora_find(a->layout, a->params, 1, MXL_LORA_Q, &pa);
  mxl_lora_find(b->layout, b->params, 1, MXL_LORA_Q, &pb);
  MXL_CHECK(!memcmp(pa.A, pb.A, (size_t)pa.rank * pa.in * 4));
  MXL_CHECK_OK(mxl_lora_init_peft(b, 43));
  mxl_lora_find(b->layout, b->params, 1, MXL_LORA_Q, &pb);
  MXL_CHECK(memcmp(pa.A, pb.A, (size_t)pa.rank * pa.in * 4) != 0);
  mxl_lora_destroy(a);
  mxl_lora_destroy(b);
}

/* The PEFT layout of an expert pair, by docs/gpt-oss.md §8's formula
 *   ΔW[e] = Σ_k B_peft[:, k·E + e] ⊗ A_peft[e·R + k, :]
 * must equal ours, Σ_k B[e][:, k] ⊗ A[e][k, :], after the re-indexing. */
static void test_peft_reindex(void) {
  enum { E = 3, R = 2, IN = 5, OUT = 4 };
  float A[E * R * IN], B[E * OUT * R], Bp[OUT * R * E], back[E * OUT * R];
  for (int i = 0; i < E * R * IN; i++) A[i] = (float)((i * 7) % 11) - 5.0f;
  for (int e = 0; e < E; e++)
    for (int o = 0; o < OUT; o++)
      for (int k = 0; k < R; k++) B[(e * OUT + o) * R + k] = 100.0f * e + 10.0f * o + k;
  mxl_lora_b_to_peft(Bp, B, E, OUT, R);
  /* Hand-checked entries: column k·E + e of row o. */
  MXL_CHECK(Bp[0 * R * E + 0 * E + 2] == 200.0f); /* o 0, k 0, e 2 */
  MXL_CHECK(Bp[3 * R * E + 1 * E + 1] == 131.0f); /* o 3, k 1, e 1 */
  MXL_CHECK(Bp[1 * R * E + 1 * E + 0] == 11.0f);  /* o 1, k 1, e 0 */
  mxl_lora_b_from_peft(back, Bp, E, OUT, R);
  MXL_CHECK(!memcmp(back, B, sizeof B));
  for (int e = 0; e < E; e++)
    for (int o = 0; o < OUT; o++)
      for (int i = 0; i < IN; i++) {
        double ours = 0, peft = 0;
        for (int k = 0; k < R; k++) {
          ours += (double)B[(e * OUT + o) * R + k] * A[(e * R + k) * IN + i];
          peft += (double)Bp[o * R * E + k * E + e] * A[(e * R + k) * IN + i];
        }
        MXL_CHECK(ours == peft);
      }
}

/* A set in backend memory behaves like a host one. */
static void test_backend_set(void) {
  mxl_backend *be = NULL;
  if (mxl_backend_ref_create(&be) != MXL_OK) MXL_SKIP("no reference backend: %s", mxl_last_error());
  mxl_config c;
  tiny_config(&c);
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, 2, 2.0f);
  MXL_CHECK_OK(mxl_lora_config_add(&lc, MXL_LORA_BIT(MXL_LORA_V), NULL, 0, c.n_layers));
  mxl_lora *dev = NULL, *host = NULL;
  MXL_CHECK_OK(mxl_lora_create(&c, &lc, be, &dev));
  MXL_CHECK_OK(mxl_lora_create(&c, &lc, NULL, &host));
  if (dev && host) {
    MXL_CHECK_OK(mxl_lora_init_peft(dev, 7));
    MXL_CHECK_OK(mxl_lora_init_peft(host, 7));
    float buf[64];
    for (int i = 0; i < host->layout->n_tensors; i++) {
      mxl_lora_tensor_read(dev, i, buf);
      MXL_CHECK(!memcmp(buf, host->params + host->layout->tensors[i].offset,
                        host->layout->tensors[i].count * 4));
    }
  }
  mxl_lora_destroy(dev);
  mxl_lora_destroy(host);
  mxl_backend_destroy(be);
}

int main(void) {
  MXL_RUN(test_target_names);
  MXL_RUN(test_cookbook_count);
  MXL_RUN(test_layout_offsets);
  MXL_RUN(test_config_errors);
  MXL_RUN(test_init);
  MXL_RUN(test_peft_reindex);
  MXL_RUN(test_backend_set);
  return mxl_test_summary("lora");
}
