/* What `serve` and `chat` share: the engine options, opening the service
 * and the adapters given on the command line. */
#ifndef MXL_CLI_SERVING_H
#define MXL_CLI_SERVING_H

#include "cli/cli.h"

typedef struct mxl_serving_args {
  const char *model, *backend, *model_id, *kv_memory, *adapter_memory;
  int threads, ctx, max_batch, max_queue, prefill_chunk, default_max_tokens, no_mmap;
  int prefix_cache; /* kept caches (0: max-batch); --no-prefix-cache sets -1 */
  int no_prefix_cache;
  int shared_prefix; /* 0: automatic (the whole prompt while the KV budget has room) */
  mxl_opt_list adapters; /* NAME=FILE[:SCALE] or FILE[:SCALE] */
} mxl_serving_args;

enum { MXL_SERVING_N_OPTS = 16 };

/* Writes the shared option entries into opts[0..MXL_SERVING_N_OPTS). */
void mxl_serving_opts(mxl_serving_args *a, mxl_opt *opts);

/* Opens the service and loads the --adapter files, printing what fails.
 * Returns 0, or the exit status (1: failed, 2: bad argument). */
int mxl_serving_open(const char *cmd, const mxl_serving_args *a, mxl_service **out);

/* "NAME=FILE[:SCALE]" or "FILE[:SCALE]" (NAME: the file's name without
 * its extension). 0, or -1 when it is malformed. */
int mxl_adapter_spec(const char *spec, char *name, size_t name_cap, char *path, size_t path_cap,
                     float *scale);

/* "1073741824", "512M", "2G" (binary units K, M, G, T) → bytes; -1 when
 * malformed. */
int mxl_parse_size(const char *text, uint64_t *out);

#endif
