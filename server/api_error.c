/* Errors in OpenAI's JSON shape, and the HTTP status of library failures. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "server/api.h"

static const char *type_of(int http_status) {
  switch (http_status) {
  case 401: return "authentication_error";
  case 403: return "permission_error";
  case 404: return "not_found_error";
  case 429: return "rate_limit_error";
  case 503: return "service_unavailable";
  default: return http_status >= 500 ? "server_error" : "invalid_request_error";
  }
}

static const char *code_of(int http_status, const char *param) {
  switch (http_status) {
  case 401: return "invalid_api_key";
  case 404: return param && !strcmp(param, "model") ? "model_not_found" : "not_found";
  case 405: return "method_not_allowed";
  case 413: return "request_too_large";
  case 429: return "server_busy";
  default: return NULL;
  }
}

int mxl_api_fail(mxl_api_error *e, int http_status, const char *param, const char *fmt, ...) {
  e->http_status = http_status;
  e->type = type_of(http_status);
  e->code = code_of(http_status, param);
  snprintf(e->param, sizeof e->param, "%s", param ? param : "");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->message, sizeof e->message, fmt, ap);
  va_end(ap);
  return -1;
}

int mxl_api_status_http(mxl_status st) {
  switch (st) {
  case MXL_OK: return 200;
  case MXL_ERR_ARGUMENT:
  case MXL_ERR_FORMAT:
  case MXL_ERR_UNSUPPORTED: return 400;
  case MXL_ERR_NOT_FOUND: return 404;
  case MXL_ERR_BUSY: return 429;
  case MXL_ERR_STATE:
  case MXL_ERR_INTERRUPTED:
  case MXL_ERR_MEMORY: return 503;
  default: return 500;
  }
}

int mxl_api_fail_status(mxl_api_error *e, mxl_status st, const char *param) {
  return mxl_api_fail(e, mxl_api_status_http(st), param, "%s", mxl_last_error());
}

char *mxl_api_error_json(const mxl_api_error *e) {
  cJSON *root = cJSON_CreateObject();
  cJSON *err = cJSON_AddObjectToObject(root, "error");
  cJSON_AddStringToObject(err, "message", e->message);
  cJSON_AddStringToObject(err, "type", e->type ? e->type : type_of(e->http_status));
  if (e->param[0])
    cJSON_AddStringToObject(err, "param", e->param);
  else
    cJSON_AddNullToObject(err, "param");
  if (e->code)
    cJSON_AddStringToObject(err, "code", e->code);
  else
    cJSON_AddNullToObject(err, "code");
  char *text = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  return text;
}
