/* One ordered pass of a batcher through the model without gradients: the
 * summed loss over trained tokens and their count. Shared by `mxlora eval`
 * and the trainer's periodic evaluation. */
#ifndef MXL_TRAIN_EVALUATE_H
#define MXL_TRAIN_EVALUATE_H

#include "model/train_step.h"

mxl_status mxl_evaluate_batches(mxl_engine *e, mxl_train_state *st, mxl_batcher *b,
                                const mxl_lora_stack *lora, mxl_progress_fn progress,
                                void *user, double *loss_sum, long long *tokens);

#endif
