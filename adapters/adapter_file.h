/* The mxlora adapter file, in the checksummed container of core/container.h
 * (docs/adapter-format.md is the full byte-level description):
 *
 *   offset 0   8 bytes  magic "MXLADAPT"
 *          8   u32 LE   format version (2; version 1 is read with a warning)
 *         12   u32 LE   reserved, 0
 *         16   u64 LE   header length N (bytes of JSON, space-padded)
 *         24   32 bytes SHA-256 of the header (absent in version 1)
 *         56   N bytes  JSON header: base-model fingerprint and config
 *                       summary, LoRA hyper-parameters, payload dtype,
 *                       provenance, tensor directory with checksums
 *          D = round_up(56 + N, 64): payloads, zstd frames in directory
 *              order, back to back, up to the end of the file
 *
 * Everything is validated before use, and the same parser serves files and
 * memory buffers (the fuzz target). */
#ifndef MXL_ADAPTERS_ADAPTER_FILE_H
#define MXL_ADAPTERS_ADAPTER_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "adapters/lora.h"
#include "core/container.h"
#include "core/sha256.h"
#include "mxlora.h"

#define MXL_ADAPTER_MAGIC "MXLADAPT"
enum {
  MXL_ADAPTER_VERSION = 2,        /* the header has a checksum */
  MXL_ADAPTER_LEGACY_VERSION = 1, /* no header checksum: read with a warning */
  MXL_ADAPTER_MAX_HEADER = 64 << 20, /* bytes of JSON */
  MXL_ADAPTER_TEXT_SIZE = 256,       /* provenance strings, with the NUL */
};

typedef enum mxl_adapter_encoding {
  MXL_ENCODING_ZSTD = 0,         /* "zstd": the tensor's bytes, compressed */
  MXL_ENCODING_SHUFFLE_ZSTD = 1, /* "shuffle+zstd": byte planes, then zstd */
} mxl_adapter_encoding;

/* One directory entry. */
typedef struct mxl_adapter_entry {
  int ndim;         /* 2 (attention) or 3 (experts) */
  int64_t shape[3];
  uint64_t offset;  /* from the start of the payload area */
  uint64_t compressed_size, raw_size;
  uint8_t sha256[MXL_SHA256_SIZE]; /* of the raw (unshuffled) tensor bytes */
  mxl_adapter_encoding encoding;
} mxl_adapter_entry;

/* A parsed and validated header. Tensor i of `layout` is entry i. */
typedef struct mxl_adapter_header {
  uint32_t version;
  int header_checked; /* 0: a version-1 file, whose header has no checksum */
  uint8_t fingerprint[MXL_SHA256_SIZE];
  char fingerprint_hex[MXL_SHA256_HEX_SIZE];
  mxl_config config; /* the fingerprinted fields only (fingerprint.h) */
  mxl_adapter_dtype dtype;
  mxl_lora_layout *layout; /* the expected tensors for config + lora settings */
  mxl_adapter_entry *entries;
  /* provenance */
  char recipe[MXL_ADAPTER_TEXT_SIZE], created_by[MXL_ADAPTER_TEXT_SIZE];
  char created_at[MXL_ADAPTER_TEXT_SIZE], dataset_sha256[MXL_SHA256_HEX_SIZE];
  int64_t steps;
  double final_loss; /* NaN when absent */
  uint64_t header_start; /* where the JSON header starts: 56 (24 in version 1) */
  uint64_t header_bytes; /* N */
  uint64_t data_start;   /* D: where the payload area starts */
  uint64_t file_size;
  uint64_t raw_total;    /* Σ raw_size */
} mxl_adapter_header;

/* The adapter's container: magic, versions, header bound. */
extern const mxl_container_format mxl_adapter_container;

/* Parses and validates the prefix, header and directory of an adapter held
 * in memory (`size` bytes: the whole file). Payloads are not decompressed.
 * `source` names the file in messages. */
mxl_status mxl_adapter_header_parse(const uint8_t *data, size_t size, const char *source,
                                    mxl_adapter_header **out);
void mxl_adapter_header_destroy(mxl_adapter_header *h);

/* Decompresses tensor i of a parsed file into fp32 `dst` (layout count
 * floats), checking the frame's size and the SHA-256 of the raw bytes. */
mxl_status mxl_adapter_decode(const mxl_adapter_header *h, const uint8_t *data, int i,
                              float *dst, const char *source);

/* Writes `lora` to `path` atomically. `config` and `fingerprint` describe
 * the base model (see mxl_adapter_save for the variant that takes the
 * model). */
mxl_status mxl_adapter_write(const char *path, const mxl_lora *lora, const mxl_config *config,
                             const uint8_t fingerprint[MXL_SHA256_SIZE],
                             const mxl_adapter_save_options *opt);

/* Checks that a header's base model is `config` with digest `fingerprint`;
 * the error names both fingerprints and any config differences. */
mxl_status mxl_adapter_check_base_of(const mxl_adapter_header *h, const mxl_config *config,
                                     const uint8_t fingerprint[MXL_SHA256_SIZE],
                                     const char *source);

/* Loads an opened adapter into a new LoRA set in backend memory (be == NULL:
 * host), after checking it against the model. */
mxl_status mxl_adapter_load_on(const mxl_adapter *a, const struct mxl_model *model,
                               mxl_backend *be, mxl_lora **out);

/* Loads an opened adapter for a forward pass to overlay (generate, eval,
 * the registry): checked as mxl_adapter_load_on does, its q/k B matrices
 * rewritten into the model's layout while in host memory (metal/model.bin
 * stores q/k rows permuted and pre-scaled: model/lora_view.h), then
 * uploaded when `be` keeps its memory on a device (be NULL or a host
 * backend: left in host memory). Not in the file's coordinates any more:
 * for mxl_lora_fill_view, never for saving or training. `be` is not
 * synced. */
mxl_status mxl_adapter_load_overlay(const mxl_adapter *a, const struct mxl_model *model,
                                    mxl_backend *be, mxl_lora **out);

/* Reads every tensor (checksums verified) into a new host set shaped by the
 * header alone, without a base model (for export and inspection). */
mxl_status mxl_adapter_read_lora(const mxl_adapter *a, mxl_lora **out);

/* The parsed header of an opened adapter. */
const mxl_adapter_header *mxl_adapter_header_of(const mxl_adapter *a);

/* "q:0-23 k:0-23 gate_up:7,15,23": targets and their layers, runs of three
 * or more layers as ranges. */
void mxl_adapter_targets_text(const mxl_lora_config *lc, int n_layers, char *buf, size_t cap);

/* Byte-plane shuffle of n elements of `width` bytes: dst[j·n + i] =
 * src[i·width + j]; unshuffle is the inverse. */
void mxl_byte_shuffle(uint8_t *dst, const uint8_t *src, size_t n, size_t width);
void mxl_byte_unshuffle(uint8_t *dst, const uint8_t *src, size_t n, size_t width);

#endif
