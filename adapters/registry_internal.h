/* What the scheduler reads of a registry reference: the model's view of
 * that adapter version (scale 1: the request's scale multiplies it). The
 * view stays valid while the reference is held. */
#ifndef MXL_ADAPTERS_REGISTRY_INTERNAL_H
#define MXL_ADAPTERS_REGISTRY_INTERNAL_H

#include "model/lora_view.h"
#include "mxlora.h"

const mxl_lora_view *mxl_adapter_ref_view(const mxl_adapter_ref *ref);

/* Names this version in the process: two references with the same uid
 * read the same parameters (a reload or a re-read after eviction gets a
 * new one). Keys the scheduler's prefix cache without holding the
 * version. */
uint64_t mxl_adapter_ref_uid(const mxl_adapter_ref *ref);

/* The largest rank over the version's adapted (layer, target) pairs. */
int mxl_adapter_ref_rank(const mxl_adapter_ref *ref);

#endif
