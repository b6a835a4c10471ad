/* Public API: LoRA adapter files: save, load, verify, overlay. */
#ifndef MXLORA_ADAPTER_H
#define MXLORA_ADAPTER_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif
