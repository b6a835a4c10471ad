#include "infer/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

void mxl_sampling_defaults(mxl_sampling *p) {
  memset(p, 0, sizeof *p);
  p->temperature = 1.0f;
  p->top_p = 1.0f;
  p->repetition_penalty = 1.0f;
  p->seed = 0;
}

mxl_status mxl_sampling_validate(const mxl_sampling *p) {
  if (!(p->temperature >= 0) || !isfinite(p->temperature))
    return mxl_errorf(MXL_ERR_ARGUMENT, "temperature %g must be >= 0", p->temperature);
  if (p->top_k < 0) return mxl_errorf(MXL_ERR_ARGUMENT, "top-k %d must be >= 0", p->top_k);
  if (!(p->top_p > 0 && p->top_p <= 1))
    return mxl_errorf(MXL_ERR_ARGUMENT, "top-p %g must be in (0, 1]", p->top_p);
  if (!(p->min_p >= 0 && p->min_p < 1))
    return mxl_errorf(MXL_ERR_ARGUMENT, "min-p %g must be in [0, 1)", p->min_p);
  if (!(p->repetition_penalty > 0) || !isfinite(p->repetition_penalty))
    return mxl_errorf(MXL_ERR_ARGUMENT, "repetition penalty %g must be > 0",
                      p->repetition_penalty);
  if (p->penalty_last_n < 0)
    return mxl_errorf(MXL_ERR_ARGUMENT, "penalty window %d must be >= 0", p->penalty_last_n);
  return MXL_OK;
}

double mxl_uniform01(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

mxl_status mxl_sampler_init(mxl_sampler *s, const mxl_sampling *p, int vocab) {
  memset(s, 0, sizeof *s);
  MXL_TRY(mxl_sampling_validate(p));
  s->p = *p;
  s->state = p->seed;
  s->vocab = vocab;
  s->prob = malloc((size_t)vocab * sizeof *s->prob);
  s->index = malloc((size_t)vocab * sizeof *s->index);
  if (!s->prob || !s->index) {
    mxl_sampler_free(s);
    return mxl_errorf(MXL_ERR_MEMORY, "sampler: out of memory for %d tokens", vocab);
  }
  return MXL_OK;
}

void mxl_sampler_free(mxl_sampler *s) {
  free(s->prob);
  free(s->index);
  memset(s, 0, sizeof *s);
}

static void apply_repetition_penalty(const mxl_sampler *s, float *logits,
                                     const int32_t *history, int n_history) {
  float theta = s->p.repetition_penalty;
  if (theta == 1.0f) return;
  int first = s->p.penalty_last_n && n_history > s->p.penalty_last_n
                  ? n_history - s->p.penalty_last_n
                  : 0;
  /* A token seen twice is penalised once: mark visited by flipping into prob[]. */
  for (int i = first; i < n_history; i++) s->prob[history[i]] = 0;
  for (int i = first; i < n_history; i++) {
    int32_t t = history[i];
    if (t < 0 || t >= s->vocab || s->prob[t] != 0) continue;
    s->prob[t] = 1;
    logits[t] = logits[t] > 0 ? logits[t] / theta : logits[t] * theta;
  }
}

static int32_t argmax(const float *x, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best]) best = i;
  return best;
}

static const float *sort_key;
static int by_prob_desc(const void *a, const void *b) {
  float x = sort_key[*(const int32_t *)a], y = sort_key[*(const int32_t *)b];
  if (x != y) return x < y ? 1 : -1;
  return *(const int32_t *)a - *(const int32_t *)b;
}

/* Softmax of logits/temperature into prob; returns the candidate count
 * (indices of candidates in s->index, sorted by probability when a cut
 * needs the order). */
static int softmax_candidates(mxl_sampler *s, const float *logits) {
  const int V = s->vocab;
  float max = logits[argmax(logits, V)];
  double sum = 0;
  for (int i = 0; i < V; i++) {
    s->prob[i] = expf((logits[i] - max) / s->p.temperature);
    sum += s->prob[i];
  }
  /* Candidates: everything that could survive the cuts. Tokens below 1e-9
   * of the top one cannot matter to any top-p < 1 or draw in practice. */
  const int cut = s->p.top_k > 0 || s->p.top_p < 1.0f;
  const float floor = cut ? 1e-9f * (float)(1.0 / sum) : -1.0f;
  int n = 0;
  for (int i = 0; i < V; i++) {
    s->prob[i] = (float)(s->prob[i] / sum);
    if (s->prob[i] > floor) s->index[n++] = i;
  }
  if (cut) {
    sort_key = s->prob;
    qsort(s->index, n, sizeof *s->index, by_prob_desc);
  }
  return n;
}

int32_t mxl_sampler_next(mxl_sampler *s, float *logits, const int32_t *history,
                         int n_history) {
  apply_repetition_penalty(s, logits, history, n_history);
  if (s->p.temperature == 0) return argmax(logits, s->vocab);
  int n = softmax_candidates(s, logits);
  if (s->p.top_k > 0 && s->p.top_k < n) n = s->p.top_k;
  if (s->p.top_p < 1.0f) {
    double cum = 0;
    int keep = 0;
    while (keep < n && cum < s->p.top_p) cum += s->prob[s->index[keep++]];
    n = keep;
  }
  float pmax = 0;
  for (int i = 0; i < n; i++)
    if (s->prob[s->index[i]] > pmax) pmax = s->prob[s->index[i]];
  double total = 0;
  int kept = 0;
  for (int i = 0; i < n; i++) {
    float p = s->prob[s->index[i]];
    if (p < s->p.min_p * pmax) continue;
    s->index[kept++] = s->index[i];
    total += p;
  }
  double r = mxl_uniform01(&s->state) * total;
  for (int i = 0; i < kept; i++) {
    r -= s->prob[s->index[i]];
    if (r < 0) return s->index[i];
  }
  return s->index[kept - 1];
}
