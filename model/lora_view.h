/* What the forward and backward passes need to know about LoRA adapters:
 * per layer and target, the A/B matrices and the scale. adapters/ owns the
 * parameter sets and files and fills these views; model/ only reads them
 * (and, in training, writes gradients into the matching dA/dB views).
 *
 * Shapes (PEFT orientation, fp32, backend memory):
 *   attention target:  A [R, in],        B [out, R]
 *   expert target:     A [E][R, in],     B [E][out, R]   (expert e at e*R*in, e*out*R)
 * y += scale·(x·Aᵀ)·Bᵀ, per routed token for experts (ΔW never materialised). */
#ifndef MXL_MODEL_LORA_VIEW_H
#define MXL_MODEL_LORA_VIEW_H

#include "mxlora.h"

typedef enum mxl_lora_target {
  MXL_LORA_Q,
  MXL_LORA_K,
  MXL_LORA_V,
  MXL_LORA_O,
  MXL_LORA_GATE_UP,
  MXL_LORA_DOWN,
  MXL_LORA_N_TARGETS
} mxl_lora_target;

typedef struct mxl_lora_mat {
  float *A; /* NULL: this target is not adapted */
  float *B;
  int rank;
  float scale; /* alpha/r (or alpha/√r) times the user's overlay scale */
} mxl_lora_mat;

typedef struct mxl_lora_layer {
  mxl_lora_mat t[MXL_LORA_N_TARGETS];
} mxl_lora_layer;

/* One adapter as the model sees it: a view per layer. Several adapters can
 * be stacked at inference (their deltas add). */
typedef struct mxl_lora_view {
  mxl_lora_layer *layers; /* [n_layers] */
  int n_layers;
  float dropout; /* attention-input dropout probability during training */
} mxl_lora_view;

/* Adapters are trained and stored in the Hugging Face layout's coordinates.
 * metal/model.bin stores q and k with each head's rows permuted into
 * adjacent RoPE pairs (new row 2j = old row j, new 2j+1 = old d/2 + j) and
 * scaled (q by 0.5, k by 0.25). For such a model this replaces the view's
 * q and k B matrices with copies transformed the same way, so that the
 * overlay adds exactly what it adds on the other layouts. *owned_out
 * receives the one allocation holding the copies (free() it after the
 * view; NULL when nothing needed changing). Host-memory views only. */
struct mxl_weights;
struct mxl_config;
mxl_status mxl_lora_view_to_layout(const struct mxl_weights *w, const struct mxl_config *c,
                                   mxl_lora_view *view, float **owned_out);

#endif
