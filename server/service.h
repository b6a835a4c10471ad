/* The service's insides, shared by service.c and job.c. */
#ifndef MXL_SERVER_SERVICE_H
#define MXL_SERVER_SERVICE_H

#include <pthread.h>

#include "mxlora.h"

typedef struct mxl_service_scale {
  char name[MXL_REGISTRY_NAME_MAX + 1];
  float scale;
} mxl_service_scale;

struct mxl_service {
  mxl_model *model;
  mxl_tokenizer *tok;
  mxl_scheduler *sched;
  mxl_registry *reg;
  pthread_t engine;
  int engine_started;
  char *model_id;
  char summary[512];
  int max_context, default_max_tokens;
  mxl_chat_ids chat_ids;
  int has_chat; /* the tokenizer has the harmony tokens */
  int32_t raw_stops[MXL_REQUEST_MAX_STOP];
  int n_raw_stops;
  pthread_mutex_t mu; /* guards scales */
  mxl_service_scale *scales;
  int n_scales, cap_scales;
};

#endif
