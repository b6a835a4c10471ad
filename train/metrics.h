/* Training records: one JSON object per line in metrics.jsonl, and a
 * loss-curve picture (SVG) at the end of a run. */
#ifndef MXL_TRAIN_METRICS_H
#define MXL_TRAIN_METRICS_H

#include <stdio.h>

#include "mxlora.h"

typedef struct mxl_step_record {
  int step;            /* optimizer steps done */
  double loss;         /* mean loss per trained token this step */
  double lr;
  double grad_norm;    /* before clipping */
  long long tokens;    /* trained tokens this step */
  double tokens_per_s; /* all tokens processed per second this step */
  double elapsed_s;
  int skipped;         /* 1 if the NaN/Inf guard skipped the update */
} mxl_step_record;

typedef struct mxl_metrics {
  FILE *fp;
  char *path;
} mxl_metrics;

/* Opens `path`. A fresh run (append = 0) starts an empty file. A resumed
 * one (append = 1) keeps every line already there, including lines of
 * steps after `resume_step` that an interrupted process wrote, and adds a
 * mark {"resume_from_step": N, "world_size": W, "time": "..."}: readers
 * drop earlier lines of later steps at the mark, as those steps are
 * trained again. Non-finite values are written as null, with their reason
 * in "nonfinite": {"loss": "NaN", ...}, so every line stays JSON. */
mxl_status mxl_metrics_open(mxl_metrics *m, const char *path, int append, int resume_step,
                            int world_size);
mxl_status mxl_metrics_step(mxl_metrics *m, const mxl_step_record *r);
mxl_status mxl_metrics_eval(mxl_metrics *m, int step, double eval_loss, long long tokens);
void mxl_metrics_close(mxl_metrics *m);

/* Tokens per second over the last MXL_RATE_WINDOW steps: what the
 * progress bar shows, steadier than one step's figure. */
enum { MXL_RATE_WINDOW = 20 };
typedef struct mxl_rate {
  double tokens[MXL_RATE_WINDOW], seconds[MXL_RATE_WINDOW];
  int n; /* steps added */
} mxl_rate;

/* Adds a step; returns the rate over the window. */
double mxl_rate_add(mxl_rate *r, double tokens, double seconds);

typedef struct mxl_curve {
  const double *x, *y; /* points */
  int n;
  const char *label;
  const char *color;   /* CSS colour */
  int smooth;          /* 1: faint raw points under a smoothed line (noisy per-step
                          losses); 0: a line with a marker on every point */
} mxl_curve;

/* Draws the curves on shared axes: ticks (one at 0 when the data come
 * close enough to it), "step" and "loss" axis labels, a legend; atomic
 * write. */
mxl_status mxl_curve_svg_write(const char *path, const char *title, const mxl_curve *curves,
                               int n_curves);

#endif
