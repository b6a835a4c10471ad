/* infer/sampler: each cut and the draw's distribution. */
#include "infer/sampler.h"
#include "test.h"

enum { V = 8 };
static const float base_logits[V] = {2.0f, 1.0f, 0.5f, 3.0f, -1.0f, 0.0f, 2.5f, -2.0f};

static int draw(mxl_sampler *s, const int32_t *hist, int nh) {
  float logits[V];
  memcpy(logits, base_logits, sizeof logits);
  return mxl_sampler_next(s, logits, hist, nh);
}

static void test_greedy_and_top_k1(void) {
  mxl_sampling p;
  mxl_sampling_defaults(&p);
  p.temperature = 0;
  mxl_sampler s;
  MXL_CHECK_OK(mxl_sampler_init(&s, &p, V));
  MXL_CHECK(draw(&s, NULL, 0) == 3);
  mxl_sampler_free(&s);
  mxl_sampling_defaults(&p);
  p.top_k = 1;
  MXL_CHECK_OK(mxl_sampler_init(&s, &p, V));
  for (int i = 0; i < 50; i++) MXL_CHECK(draw(&s, NULL, 0) == 3);
  mxl_sampler_free(&s);
}

/* With no cuts, draw frequencies follow softmax(logits / T). */
static void test_distribution(void) {
  mxl_sampling p;
  mxl_sampling_defaults(&p);
  p.temperature = 0.7f;
  p.seed = 42;
  mxl_sampler s;
  MXL_CHECK_OK(mxl_sampler_init(&s, &p, V));
  int count[V] = {0};
  const int draws = 200000;
  for (int i = 0; i < draws; i++) count[draw(&s, NULL, 0)]++;
  double z = 0, expect[V];
  for (int i = 0; i < V; i++) z += exp(base_logits[i] / 0.7);
  for (int i = 0; i < V; i++) {
    expect[i] = exp(base_logits[i] / 0.7) / z;
    double sd = sqrt(expect[i] * (1 - expect[i]) / draws);
    MXL_CHECK_MSG(fabs((double)count[i] / draws - expect[i]) < 5 * sd + 1e-6,
                  "token %d: %g vs %g", i, (double)count[i] / draws, expect[i]);
  }
  mxl_sampler_free(&s);
}

static void test_top_p_and_min_p(void) {
  mxl_sampling p;
  mxl_sampling_defaults(&p);
  p.top_p = 0.5f; /* softmax: token 3 ≈ 0.42, token 6 ≈ 0.26: both needed to pass 0.5 */
  p.seed = 1;
  mxl_sampler s;
  MXL_CHECK_OK(mxl_sampler_init(&s, &p, V));
  int seen[V] = {0};
  for (int i = 0; i < 2000; i++) seen[draw(&s, NULL, 0)] = 1;
  MXL_CHECK(seen[3] && seen[6]);
  for (int t = 0; t < V; t++)
    if (t != 3 && t != 6) MXL_CHECK_MSG(!seen[t], "token %d outside top-p", t);
  mxl_sampler_free(&s);

  mxl_sampling_defaults(&p);
  p.min_p = 0.5f; /* keeps tokens with p >= 0.5·p_max: logits >= 3 - ln 2 */
  MXL_CHECK_OK(mxl_sampler_init(&s, &p, V));
  memset(seen, 0, sizeof seen);
  for (int i = 0; i < 2000; i++) seen[draw(&s, NULL, 0)] = 1;
  MXL_CHECK(seen[3] && seen[6]);
  for (int t = 0; t < V; t++)
    if (t != 3 && t != 6) MXL_CHECK_MSG(!seen[t], "token %d below min-p", t);
  mxl_sampler_free(&s);
}

static void test_repetition_penalty(void) {
  mxl_sampling p;
  mxl_sampling_defaults(&p);
  p.temperature = 0;
  p.repetition_penalty = 2.0f;
  mxl_sampler s;
  MXL_CHECK_OK(mxl_sampler_init(&s, &p, V));
  int32_t hist[] = {3, 3, 4};
  float logits[V];
  memcpy(logits, base_logits, sizeof logits);
  MXL_CHECK(mxl_sampler_next(&s, logits, hist, 3) == 6); /* 3.0/2 = 1.5 < 2.5 */
  MXL_CHECK(logits[3] == 1.5f);                          /* penalised once, not twice */
  MXL_CHECK(logits[4] == -2.0f);                         /* negative logits multiply */
  mxl_sampler_free(&s);
  p.penalty_last_n = 1; /* only token 4 counts as seen */
  MXL_CHECK_OK(mxl_sampler_init(&s, &p, V));
  MXL_CHECK(draw(&s, hist, 3) == 3);
  mxl_sampler_free(&s);
}

static void test_seed_determinism_and_validation(void) {
  mxl_sampling p;
  mxl_sampling_defaults(&p);
  p.seed = 7;
  mxl_sampler a, b;
  MXL_CHECK_OK(mxl_sampler_init(&a, &p, V));
  MXL_CHECK_OK(mxl_sampler_init(&b, &p, V));
  int same = 1;
  for (int i = 0; i < 100; i++) same &= draw(&a, NULL, 0) == draw(&b, NULL, 0);
  MXL_CHECK(same);
  mxl_sampler_free(&a);
  mxl_sampler_free(&b);
  p.top_p = 0;
  MXL_CHECK_FAILS(mxl_sampler_init(&a, &p, V), MXL_ERR_ARGUMENT, "top-p");
  mxl_sampling_defaults(&p);
  p.temperature = -1;
  MXL_CHECK_FAILS(mxl_sampler_init(&a, &p, V), MXL_ERR_ARGUMENT, "temperature");
}

int main(void) {
  MXL_RUN(test_greedy_and_top_k1);
  MXL_RUN(test_distribution);
  MXL_RUN(test_top_p_and_min_p);
  MXL_RUN(test_repetition_penalty);
  MXL_RUN(test_seed_determinism_and_validation);
  return mxl_test_summary("sampler");
}
