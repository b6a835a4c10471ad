/* Public API: LoRA training and evaluation. */
#ifndef MXLORA_TRAIN_H
#define MXLORA_TRAIN_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif
