/* Public API: datasets: loaders, loss masks, packing, statistics. */
#ifndef MXLORA_DATA_H
#define MXLORA_DATA_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif
