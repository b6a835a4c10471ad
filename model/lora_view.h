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

#endif
