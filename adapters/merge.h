/* Private to adapters/merge*.c: merged weights as a tensor source for the
 * layout writer, and the per-tensor sums of the MXFP4 report.
 *
 * Values: W + Σ_a scale_a · B_a·A_a (scale_a = the adapter's LoRA scaling
 * times the user's scale), per expert for the expert projections, added in
 * fp32 to the base decoded to fp32, then rounded to bf16 or re-encoded to
 * MXFP4 with the codec's error-minimising encoder (kernels/mxfp4.h). One
 * expert's matrices are held at a time (with every expert's scales of the
 * projection being written), whatever the model size. */
#ifndef MXL_ADAPTERS_MERGE_H
#define MXL_ADAPTERS_MERGE_H

#include <stdint.h>

#include "adapters/lora.h"
#include "model/layout_writer.h"
#include "model/model.h"

/* Sums over one layer's expert projection (all experts), M = W + ΔW the
 * float merge, Q its MXFP4 encoding, W the base (already MXFP4, so the
 * encoder gives it back unchanged: Q(W) = W). */
typedef struct mxl_merge_stats {
  double sq_merged;        /* Σ M² */
  double sq_requant_error; /* Σ (Q − M)² */
  double sq_delta;         /* Σ ΔW² */
  double dot_kept_delta;   /* Σ (Q − W)·ΔW */
  double sq_kept;          /* Σ (Q − W)² */
  double sq_delta_error;   /* Σ (Q − W − ΔW)² */
  int64_t values;
} mxl_merge_stats;

typedef struct mxl_merge_source {
  const mxl_model *model;
  mxl_lora **loras;
  float *scales; /* per adapter: LoRA scaling × user scale */
  int n_loras;
  float *row;                   /* one attention row's delta */
  float *merged, *delta, *quant; /* one expert [rows, cols] */
  mxl_lora_target cur_target;
  int cur_layer, cur_expert;    /* what merged/delta hold */
  uint8_t *enc_blocks, *enc_scales; /* one expert's encoding */
  mxl_lora_target enc_target;
  int enc_layer, enc_expert;
  uint8_t *all_scales, *scales_have; /* every expert's scales of one projection */
  mxl_lora_target scales_target;
  int scales_layer;
  mxl_merge_stats *stats; /* [n_layers][2]: gate_up, down */
} mxl_merge_source;

mxl_status mxl_merge_source_init(mxl_merge_source *s, const mxl_model *model, mxl_lora **loras,
                                 const float *scales, int n_loras);
void mxl_merge_source_free(mxl_merge_source *s);
mxl_tensor_source mxl_merge_tensor_source(mxl_merge_source *s);
/* 1 when some adapter adapts (layer, t). */
int mxl_merge_adapts(const mxl_merge_source *s, int layer, mxl_lora_target t);

#endif
