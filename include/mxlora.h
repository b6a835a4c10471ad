/* mxlora — LoRA fine-tuning and adapters for gpt-oss, on its MXFP4 weights.
 *
 * The public C API. The `mxlora` command-line tool is written against this
 * header alone. Conventions (as in OpenAI's gpt-oss C library):
 *   - every fallible function returns mxl_status; MXL_OK is zero;
 *   - on failure, mxl_last_error() holds a message naming the file, line or
 *     field at fault, and every `_out` pointer is set to NULL (or 0);
 *   - objects are opaque handles created by `mxl_<thing>_open/create` and
 *     released by the matching `mxl_<thing>_close/destroy`, which accept NULL;
 *   - the library never prints to stdout and never exits; long operations
 *     report progress through callbacks.
 */
#ifndef MXLORA_H
#define MXLORA_H

#ifdef __cplusplus
extern "C" {
#endif

#include <stddef.h>
#include <stdint.h>

#define MXL_VERSION_MAJOR 0
#define MXL_VERSION_MINOR 1
#define MXL_VERSION_PATCH 0

typedef enum mxl_status {
  MXL_OK = 0,
  MXL_ERR_ARGUMENT,    /* a caller passed something invalid */
  MXL_ERR_UNSUPPORTED, /* valid, but not something mxlora does */
  MXL_ERR_IO,          /* the operating system refused (open, read, write) */
  MXL_ERR_FORMAT,      /* a file or input is malformed */
  MXL_ERR_MEMORY,      /* an allocation failed */
  MXL_ERR_STATE,       /* the object is not in a state that allows this */
  MXL_ERR_NUMERIC,     /* NaN/Inf or another numeric failure */
  MXL_ERR_BACKEND,     /* a compute backend failed (driver, device) */
  MXL_ERR_INTERRUPTED, /* the user asked to stop (Ctrl-C) */
  MXL_ERR_NOT_FOUND,   /* a named thing (adapter, request) does not exist */
  MXL_ERR_BUSY,        /* a limit is reached for now (queue, memory budget): retry later */
} mxl_status;

/* The message recorded by the last failing call on this thread. Never NULL. */
const char *mxl_last_error(void);

/* A short fixed name for a status ("malformed input"). Never NULL. */
const char *mxl_status_name(mxl_status status);

/* Warnings: conditions that do not stop an operation but that the user
 * should hear about (an adapter file in an old format whose header has no
 * checksum). The library passes each message to the handler, on the
 * calling thread; with none installed (the default) warnings are dropped.
 * The mxlora tool installs one that prints "warning: MESSAGE" to stderr. */
typedef void (*mxl_warning_fn)(void *user, const char *message);
void mxl_set_warning_handler(mxl_warning_fn fn, void *user);

/* "0.1.0". */
const char *mxl_version_string(void);

/* What this build and machine offer, one line: the CPU kernel path chosen
 * (e.g. "cpu avx512-bf16"), and whether the CUDA backend was built and a
 * device answers. */
const char *mxl_build_features(void);

/* Which path each product family of the CPU backend takes on this machine
 * (its kernels or oneDNN, and the instruction set), one line. */
const char *mxl_cpu_paths(void);

/* Makes this program's OpenMP threads wait passively (OMP_WAIT_POLICY=
 * passive) unless the user chose how they wait (OMP_WAIT_POLICY,
 * GOMP_SPINCOUNT or KMP_BLOCKTIME set). Spinning threads make a machine
 * shared with other processes many times slower; passive waiting costs
 * microseconds per parallel region on idle cores. The OpenMP runtime reads
 * its environment only as the program starts, so this sets the variable and
 * re-executes the program (/proc/self/exe with `argv`, the environment
 * kept): call it first thing in main, before any thread or open file
 * matters. It returns when nothing needed doing, or when re-execution
 * failed (the program then goes on with spinning threads). */
void mxl_wait_passively(char **argv);

/* 1 when the environment chooses how OpenMP threads wait (one of the
 * variables above is set; after mxl_wait_passively, always). */
int mxl_wait_policy_chosen(void);

#ifdef __cplusplus
}
#endif

/* One header per area; each is usable on its own after this one. */
#include "mxlora/model.h"     /* checkpoints: open, inspect, tiny */
#include "mxlora/tokenizer.h" /* o200k_harmony tokenizer, harmony rendering */
#include "mxlora/data.h"      /* datasets, loss masks, batching, stats */
#include "mxlora/generate.h"  /* text generation */
#include "mxlora/adapter.h"   /* adapter files, overlay */
#include "mxlora/train.h"     /* LoRA training, eval */
#include "mxlora/registry.h"  /* adapters loaded by name at runtime */
#include "mxlora/scheduler.h" /* continuous batching of generation requests */
#include "mxlora/server.h"    /* serving: jobs by text, the OpenAI-compatible HTTP server */
#include "mxlora/plan.h"      /* GPU memory planning */

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif
