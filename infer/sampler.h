/* Next-token sampling: repetition penalty, temperature, top-k, top-p,
 * min-p, then a draw from a seeded generator (greedy at temperature 0).
 * Applied in that order, as Hugging Face's logits processors do. */
#ifndef MXL_INFER_SAMPLER_H
#define MXL_INFER_SAMPLER_H

#include <stdint.h>

#include "mxlora.h"

typedef struct mxl_sampling {
  float temperature;        /* 0 = greedy (argmax) */
  int top_k;                /* 0 = off */
  float top_p;              /* 1 = off */
  float min_p;              /* 0 = off: drop tokens with p < min_p·p_max */
  float repetition_penalty; /* 1 = off: logit/θ if > 0, else logit·θ, for seen tokens */
  int penalty_last_n;       /* how far back "seen" looks; 0 = whole history */
  uint64_t seed;
} mxl_sampling;

void mxl_sampling_defaults(mxl_sampling *p); /* temperature 1, top_p 1, others off */
mxl_status mxl_sampling_validate(const mxl_sampling *p);

typedef struct mxl_sampler {
  mxl_sampling p;
  uint64_t state;  /* xoshiro-style generator state, advanced per draw */
  int vocab;
  float *prob;     /* [vocab] scratch */
  int32_t *index;  /* [vocab] scratch */
} mxl_sampler;

mxl_status mxl_sampler_init(mxl_sampler *s, const mxl_sampling *p, int vocab);
void mxl_sampler_free(mxl_sampler *s);

/* Picks the next token from logits [vocab] (modified in place), given the
 * tokens so far (for the repetition penalty). */
int32_t mxl_sampler_next(mxl_sampler *s, float *logits, const int32_t *history, int n_history);

/* A uniform double in [0, 1) from a 64-bit state (splitmix64 step). */
double mxl_uniform01(uint64_t *state);

#endif
