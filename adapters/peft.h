/* PEFT interchange: a LoRA set as Hugging Face PEFT saves one for
 * GptOssForCausalLM (docs/gpt-oss.md §8), i.e. a directory with
 * adapter_model.safetensors and adapter_config.json.
 *
 * Keys (layer l):
 *   base_model.model.model.layers.l.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight
 *     A [R, in], B [out, R]: our tensors as they are
 *   base_model.model.model.layers.l.mlp.experts[.base_layer].lora_{A,B}.weight
 *     A [E·R, in]: our [E, R, in] as it is (rows e·R + k)
 *     B [out, R·E]: column k·E + e = our B[e][:, k] (mxl_lora_b_to_peft)
 *   When both expert projections of a layer are adapted PEFT nests two
 *   ParamWrappers: gate_up_proj (registered first in GptOssExperts) is the
 *   inner one, ".base_layer.", down_proj the outer; a lone one is bare.
 * adapter_config.json: r, lora_alpha, use_rslora, target_modules (the
 * short "q_proj" when a target covers every layer, else full module names
 * "model.layers.l.self_attn.q_proj"), target_parameters
 * ("l.mlp.experts.gate_up_proj", as the OpenAI cookbook writes them). */
#ifndef MXL_ADAPTERS_PEFT_H
#define MXL_ADAPTERS_PEFT_H

#include <stddef.h>

#include "adapters/lora.h"

/* PEFT's key for tensor i of a layout. */
void mxl_peft_key(const mxl_lora_layout *lay, int i, char *buf, size_t cap);

/* Writes dir/adapter_model.safetensors (F32 or BF16 tensors, keys sorted)
 * and dir/adapter_config.json, each atomically; creates dir if needed. */
mxl_status mxl_peft_export(const mxl_lora *lora, mxl_adapter_dtype dtype, const char *dir);

/* Reads a PEFT adapter directory for a model with config c into a new host
 * set: every expert layout peft_import.c lists, attention-only adapters,
 * rank and alpha patterns (folded into one rank and alpha, the same
 * deltas), rsLoRA; F32, BF16 and F16 tensors; keys with or without the
 * "base_model.model." prefix. Refuses DoRA, LoRA biases, fan_in_fan_out,
 * keys it does not know and shapes that do not fit c; every error names
 * the file and the key or field. *report_out (may be NULL) receives a
 * malloc'd description of what was found and how it was converted. */
mxl_status mxl_peft_import_report(const char *dir, const mxl_config *c, mxl_lora **out,
                                  char **report_out);
mxl_status mxl_peft_import(const char *dir, const mxl_config *c, mxl_lora **out);

#endif
