/* Public API: text generation with the frozen base (and adapters). */
#ifndef MXLORA_GENERATE_H
#define MXLORA_GENERATE_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif
