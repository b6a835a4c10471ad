/* Public API: o200k_harmony tokenizer and harmony chat rendering. */
#ifndef MXLORA_TOKENIZER_H
#define MXLORA_TOKENIZER_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif
