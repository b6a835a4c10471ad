/* Public API: LoRA adapter files: save, open, verify, inspect, load, and
 * PEFT interchange.
 *
 * An adapter file (docs/adapter-format.md) holds one LoRA parameter set, the
 * fingerprint of the base model it was trained on, its hyper-parameters and
 * training provenance, and zstd-compressed tensors with SHA-256 checksums.
 * Opening validates the header and tensor directory; loading also checks
 * every payload and refuses a base model with another fingerprint. */
#ifndef MXLORA_ADAPTER_H
#define MXLORA_ADAPTER_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mxl_model mxl_model;
/* A LoRA parameter set (targets, rank, one fp32 block of A/B tensors); the
 * trainer creates it, the generator overlays it. */
typedef struct mxl_lora mxl_lora;
/* An opened adapter file: validated header, payloads not yet read. */
typedef struct mxl_adapter mxl_adapter;

typedef enum mxl_adapter_dtype {
  MXL_ADAPTER_F32 = 0, /* exact copy of the fp32 parameters */
  MXL_ADAPTER_BF16 = 1 /* rounded to nearest even; half the size */
} mxl_adapter_dtype;

/* Where an adapter came from; stored in the header, shown by inspect. */
typedef struct mxl_adapter_provenance {
  const char *recipe;         /* recipe name, or NULL */
  const char *dataset_sha256; /* 64 hex digits identifying the training data, or NULL */
  int64_t steps;              /* optimizer steps taken */
  double final_loss;          /* NaN when unknown */
  const char *created_by;     /* NULL: "mxlora <version>" */
  const char *created_at;     /* ISO 8601 UTC; NULL: the time of saving */
} mxl_adapter_provenance;

typedef struct mxl_adapter_save_options {
  mxl_adapter_dtype dtype;
  int zstd_level; /* 1..19; 0 means 3 */
  mxl_adapter_provenance provenance;
  mxl_progress_fn progress; /* optional: called once per tensor ("saving") */
  void *progress_user;
} mxl_adapter_save_options;

/* F32 payloads, zstd level 3, no provenance beyond creator and date. */
void mxl_adapter_save_options_default(mxl_adapter_save_options *opt);

/* Saves `lora` (host or backend memory), trained on `model`, to `path`.
 * The file is written to a temporary name, fsynced and renamed: a crash
 * leaves the previous file or the complete new one. */
mxl_status mxl_adapter_save(const char *path, const mxl_lora *lora, const mxl_model *model,
                            const mxl_adapter_save_options *opt);

/* Opens `path`: checks the magic, the format version (an unknown version
 * is MXL_ERR_UNSUPPORTED naming both versions; version 1, whose header has
 * no checksum, is read with a warning), the header's checksum, the header
 * (every field type-checked) and the tensor directory (offsets, sizes,
 * names and shapes against the declared targets, rank and layers). Payloads are checked by
 * mxl_adapter_verify or when loading. */
mxl_status mxl_adapter_open(const char *path, mxl_adapter **adapter_out);
void mxl_adapter_close(mxl_adapter *adapter);

/* Decompresses every payload and checks its size and SHA-256. */
mxl_status mxl_adapter_verify(const mxl_adapter *adapter);

/* The header summary; strings are owned by the adapter. */
typedef struct mxl_adapter_info {
  const char *path;
  unsigned format_version;
  int header_checksum; /* 0: an old (version 1) file whose header has no checksum */
  const char *fingerprint; /* 64 hex digits of the base model's fingerprint */
  int base_layers, base_experts, base_hidden;
  int rank;
  double alpha, scaling;
  int rslora;
  const char *targets; /* "q:0-23 k:0-23 ... gate_up:7,15,23" */
  mxl_adapter_dtype dtype;
  int n_tensors;
  uint64_t n_params, raw_bytes, file_bytes;
  const char *recipe, *dataset_sha256, *created_by, *created_at; /* "" when absent */
  int64_t steps;
  double final_loss; /* NaN when absent */
} mxl_adapter_info;

const mxl_adapter_info *mxl_adapter_get_info(const mxl_adapter *adapter);

/* A readable description (or a JSON document) of the header and tensor
 * directory, for `mxlora inspect`. The caller frees *report_out. */
mxl_status mxl_adapter_describe(const mxl_adapter *adapter, int as_json, char **report_out);

/* MXL_OK when `model` is the adapter's base model (any of its layouts);
 * otherwise MXL_ERR_ARGUMENT naming both fingerprints and the config
 * fields that differ. */
mxl_status mxl_adapter_check_model(const mxl_adapter *adapter, const mxl_model *model);

/* Checks the model, then reads every tensor (verifying checksums) into a
 * new host-memory LoRA set. */
mxl_status mxl_adapter_load(const mxl_adapter *adapter, const mxl_model *model,
                            mxl_lora **lora_out);
/* Frees a set from mxl_adapter_load or mxl_adapter_import_peft; NULL is
 * fine. */
void mxl_lora_destroy(mxl_lora *lora);

/* PEFT interchange: `dir` receives adapter_model.safetensors (keys as
 * PEFT saves them for GptOssForCausalLM, fp32 or bf16 as the adapter) and
 * adapter_config.json (r, lora_alpha, use_rslora, target_modules,
 * target_parameters). */
mxl_status mxl_adapter_export_peft(const mxl_adapter *adapter, const char *dir);

/* GGUF LoRA adapter for llama.cpp's gpt-oss (`--lora FILE`), Ollama
 * (ADAPTER) and LM Studio. Attention pairs adapt blk.N.attn_{q,k,v,output};
 * expert pairs are per-expert stacks on blk.N.ffn_down_exps and on the
 * gate/up experts, whose interleaved HF rows are de-interleaved as
 * llama.cpp's converter does for the base. */
typedef struct mxl_gguf_export_options {
  /* 0 (default): gate and up rows as blk.N.ffn_gate_exps and ffn_up_exps,
   * the split convert_hf_to_gguf.py writes by default; 1: one
   * blk.N.ffn_gate_up_exps (gate rows, then up rows) for a base converted
   * with fused gate/up experts. */
  int gate_up_fused;
  /* Optional: the user's base .gguf. Gate/up follow how it stores them and
   * every adapted tensor must exist in it with matching shapes (the error
   * names the first that does not). Only its header is read. */
  const char *match_base;
} mxl_gguf_export_options;

mxl_status mxl_adapter_export_gguf(const mxl_adapter *adapter, const char *path,
                                   const mxl_gguf_export_options *opt);

/* Reads a PEFT adapter directory for `model` into a new host LoRA set:
 * attention q/k/v/o and experts in any of the three layouts in use; r,
 * lora_alpha, use_rslora, rank_pattern and alpha_pattern (per-module
 * values become one rank and alpha with the same deltas); no DoRA or LoRA
 * biases. PEFT records no base fingerprint: only the shapes are checked
 * against the model. */
mxl_status mxl_adapter_import_peft(const char *dir, const mxl_model *model,
                                   mxl_lora **lora_out);
/* The same, also describing (malloc'd, in *report_out) the expert layout
 * found (PEFT target_parameters, per-expert modules, Unsloth's
 * gate_up_projs.N) and any rank or alpha folding. */
mxl_status mxl_adapter_import_peft_report(const char *dir, const mxl_model *model,
                                          mxl_lora **lora_out, char **report_out);

/* ---- merged weights ---- */

typedef struct mxl_merge_options {
  const char *model;            /* the base checkpoint (repo root, or original/) */
  const char *const *adapters;  /* adapter files, summed */
  const float *scales;          /* [n_adapters] or NULL (all 1) */
  int n_adapters;
  const char *out;              /* the folder to create (must not exist) */
  int mxfp4;                    /* 0: every tensor bf16; 1: experts re-quantized to MXFP4 */
  int hf, original;             /* layouts to write (neither: hf); original/ beside the root */
  uint64_t shard_bytes;         /* 0: shards of 4.8e9 bytes as published */
  mxl_progress_fn progress;     /* optional: (user, file, bytes done, bytes total) */
  void *progress_user;
} mxl_merge_options;

typedef struct mxl_merge_result {
  uint64_t bytes_written;
  /* MXFP4 only, over every adapted expert projection (0 otherwise): */
  double rel_rms_error;  /* ‖Q(W+ΔW) − (W+ΔW)‖ / ‖W+ΔW‖ */
  double delta_kept;     /* ⟨Q(W+ΔW) − W, ΔW⟩ / ‖ΔW‖²: the share of ΔW that survives */
  double delta_norm_ratio; /* ‖Q(W+ΔW) − Q(W)‖ / ‖ΔW‖ */
  double delta_rel_error;  /* ‖Q(W+ΔW) − W − ΔW‖ / ‖ΔW‖ */
  int tensors, tensors_mostly_lost; /* adapted expert tensors; those keeping < 50% of ΔW */
  char *report_json;     /* what was merged and, for MXFP4, the per-tensor report (also
                            OUT/mxlora_merge_report.json); free() it */
} mxl_merge_result;

/* Writes a complete model folder at opt->out: config.json (with
 * quantization_config for MXFP4, without for bf16), generation_config.json,
 * the tokenizer files, the weights in the asked layouts with their shard
 * index. Tensor by tensor and expert by expert: memory stays bounded
 * (base pages are released as they are read). Atomic: everything is
 * written under a temporary folder renamed to opt->out at the end, so an
 * interrupted merge leaves nothing under the final name. */
mxl_status mxl_merge(const mxl_merge_options *opt, mxl_merge_result *result);

#ifdef __cplusplus
}
#endif

#endif
