/* The run folder of a training run: one trainer at a time (an exclusive
 * lock), no silent reuse of a finished or running run, no leftovers of
 * killed saves, and enough room for the saves before the first step. */
#ifndef MXL_TRAIN_RUN_DIR_H
#define MXL_TRAIN_RUN_DIR_H

#include <stdint.h>

#include "mxlora.h"

typedef struct mxl_run_dir {
  char *path;
  int lock_fd; /* -1: not locked */
} mxl_run_dir;

/* Creates `path` if needed and locks it (flock on path/.mxlora.lock, held
 * until close or process exit): a second trainer on the folder is refused,
 * naming the first one's pid. A folder holding a run (adapter, checkpoint,
 * metrics, summary) is refused unless `resume` (continue it) or
 * `overwrite` (its run files are removed first). Temporaries of saves by
 * processes that no longer exist (NAME.tmp.PID, NAME.pending.PID) are
 * removed; *removed counts them. */
mxl_status mxl_run_dir_open(const char *path, int resume, int overwrite, mxl_run_dir *out,
                            int *removed);
void mxl_run_dir_close(mxl_run_dir *d);

/* Fails unless the folder's file system has `bytes` free and the file size
 * limit (ulimit -f) allows a file of `largest` bytes; `what` says what the
 * bytes are for. */
mxl_status mxl_run_dir_check_space(const char *path, uint64_t bytes, uint64_t largest,
                                   const char *what);

/* The temporary name of a file of a save in progress: NAME.pending.PID. */
char *mxl_run_dir_pending(const char *dir, const char *name);

#endif
