/* Terminal output shared by long-running commands: durations and a
 * one-line progress bar that redraws in place on a terminal and prints
 * plain lines otherwise. */
#ifndef MXL_CLI_PROGRESS_H
#define MXL_CLI_PROGRESS_H

#include <stddef.h>

#include "mxlora.h"

/* "1h02m", "3m12s", "45s", "?" for negative or non-finite. */
void mxl_format_duration(double seconds, char *buf, size_t cap);

/* Draws "label [#####.....] 42% suffix" on stderr. On a terminal the line is
 * redrawn in place (finish with mxl_progress_end); otherwise a line is
 * printed only when `force` is set. */
void mxl_progress_line(const char *label, double done, double total, const char *suffix,
                       int force);
void mxl_progress_end(void);
int mxl_stderr_is_tty(void);

/* The weight options of --no-mmap (no_mmap 0: the defaults), with a progress
 * line for the copy: "copying the weights into 2 MB pages [###...] 42%
 * 5.40 / 12.82 GB, 2.1 s" (on a pipe, the last one only). `clock` (0 to
 * start) holds the copy's start time and must outlive the copy. */
mxl_weight_options mxl_cli_weight_options(int no_mmap, double *clock);

#endif
