/* The server's pure parts: request bodies → structs with OpenAI-shaped
 * errors, response and chunk JSON, stop strings, adapter paths, bearer
 * keys. (tests/test_server.c runs the server itself.) */
#include <cjson/cJSON.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/strbuf.h"
#include "server/api.h"
#include "server/reply.h"
#include "server/stop.h"
#include "test.h"

static mxl_api_limits lim;

static int chat(const char *body, mxl_api_generation *g, mxl_api_error *e) {
  return mxl_api_parse_chat(body, strlen(body), &lim, g, e);
}

/* A chat body that must be refused with `status`, naming `param` and
 * saying `needle`. */
#define CHAT_FAILS(body, status, field, needle)                                              \
  do {                                                                                       \
    mxl_api_generation g_;                                                                   \
    mxl_api_error e_ = {0};                                                                  \
    MXL_CHECK_MSG(chat(body, &g_, &e_) == -1, "accepted: %s", body);                         \
    MXL_CHECK_MSG(e_.http_status == (status), "%s: status %d: %s", body, e_.http_status,     \
                  e_.message);                                                               \
    MXL_CHECK_MSG(!strcmp(e_.param, field), "%s: param \"%s\"", body, e_.param);             \
    MXL_CHECK_MSG(strstr(e_.message, needle) != NULL, "%s: message \"%s\" lacks \"%s\"",     \
                  body, e_.message, needle);                                                 \
    MXL_CHECK(g_.conversation == NULL && g_.n_stop == 0);                                    \
  } while (0)

#define MSGS "\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]"
/* A function tool as OpenAI clients send it. */
#define TOOL(name) "{\"type\": \"function\", \"function\": {\"name\": \"" name "\"}}"

static void test_chat_defaults(void) {
  mxl_api_generation g;
  mxl_api_error e = {0};
  MXL_CHECK(chat("{\"model\": \"base\", " MSGS "}", &g, &e) == 0);
  MXL_CHECK(g.chat == 1 && !strcmp(g.model, "base"));
  MXL_CHECK(g.sampling.temperature == 1.0f && g.sampling.top_p == 1.0f && g.sampling.min_p == 0.0f);
  MXL_CHECK(g.sampling.repetition_penalty == 1.0f && g.sampling.top_k == 0);
  MXL_CHECK(g.max_tokens == 0 && !g.has_seed && !g.stream && !g.include_usage);
  MXL_CHECK(g.n_adapters == 0 && g.n_stop == 0 && g.prompt == NULL);
  MXL_CHECK_MSG(g.conversation && !strcmp(g.conversation,
                                          "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}"),
                "%s", g.conversation);
  mxl_api_generation_free(&g);
}

static void test_chat_every_field(void) {
  const char *body =
      "{\"model\": \"a1\", \"messages\": ["
      "{\"role\": \"system\", \"content\": \"Be brief.\"},"
      "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Hi\"}]},"
      "{\"role\": \"assistant\", \"content\": \"Hello\", \"reasoning_content\": \"greet\"},"
      "{\"role\": \"user\", \"content\": \"Again\", \"channel\": \"final\"}],"
      "\"temperature\": 0, \"top_p\": 0.5, \"top_k\": -1, \"min_p\": 0.1, \"seed\": -3,"
      "\"max_completion_tokens\": 12, \"stop\": [\"END\", \"##\"], \"stream\": true,"
      "\"stream_options\": {\"include_usage\": true}, \"reasoning_effort\": \"high\","
      "\"adapters\": [{\"name\": \"a2\", \"scale\": 0.5}, {\"name\": \"a2\"}],"
      "\"n\": 1, \"presence_penalty\": 0, \"logprobs\": false, \"user\": \"x\","
      "\"response_format\": {\"type\": \"text\"}, \"tool_choice\": \"none\"}";
  mxl_api_generation g;
  mxl_api_error e = {0};
  MXL_CHECK_MSG(chat(body, &g, &e) == 0, "%s", e.message);
  MXL_CHECK(g.sampling.temperature == 0.0f && g.sampling.top_p == 0.5f && g.sampling.top_k == 0);
  MXL_CHECK_NEAR(g.sampling.min_p, 0.1, 1e-7);
  MXL_CHECK(g.has_seed && g.sampling.seed == (uint64_t)-3);
  MXL_CHECK(g.max_tokens == 12 && g.stream && g.include_usage);
  MXL_CHECK(g.n_stop == 2 && !strcmp(g.stop[0], "END") && !strcmp(g.stop[1], "##"));
  MXL_CHECK(g.n_adapters == 2 && !strcmp(g.adapters[0].name, "a2"));
  MXL_CHECK(g.adapters[0].scale == 0.5f && g.adapters[1].scale == 1.0f);
  /* reasoning_content becomes the renderer's "thinking"; harmony header
   * fields from a client (channel) are dropped; effort travels along. */
  MXL_CHECK_MSG(strstr(g.conversation, "\"thinking\":\"greet\"") &&
                    !strstr(g.conversation, "channel") &&
                    strstr(g.conversation, "\"reasoning_effort\":\"high\""),
                "%s", g.conversation);
  mxl_api_generation_free(&g);
  /* A bare stop string. */
  MXL_CHECK(chat("{\"model\": \"b\", " MSGS ", \"stop\": \"x\", \"max_tokens\": 3}", &g, &e) == 0);
  MXL_CHECK(g.n_stop == 1 && !strcmp(g.stop[0], "x") && g.max_tokens == 3);
  mxl_api_generation_free(&g);
}

static void test_chat_refusals(void) {
  CHAT_FAILS("", 400, "", "empty");
  CHAT_FAILS("  \n", 400, "", "empty");
  CHAT_FAILS("{\"model\": ", 400, "", "line 1, column");
  CHAT_FAILS("[1, 2]", 400, "", "expected an object");
  CHAT_FAILS("{\"model\": \"a\", \"model\": \"b\", " MSGS "}", 400, "", "model");
  CHAT_FAILS("{\"model\": \"\xff\", " MSGS "}", 400, "", "UTF-8");
  CHAT_FAILS("{\"model\": \"a\\u0000b\", " MSGS "}", 400, "", "\\u0000");
  CHAT_FAILS("{" MSGS "}", 400, "model", "model is required");
  CHAT_FAILS("{\"model\": 7, " MSGS "}", 400, "model", "expected a string");
  CHAT_FAILS("{\"model\": \"has space\", " MSGS "}", 400, "model", "printable ASCII");
  CHAT_FAILS("{\"model\": \"m\"}", 400, "messages", "expected an array");
  CHAT_FAILS("{\"model\": \"m\", \"messages\": []}", 400, "messages", "at least one");
  CHAT_FAILS("{\"model\": \"m\", \"messages\": [3]}", 400, "messages", "messages[0]");
  CHAT_FAILS("{\"model\": \"m\", \"messages\": [{\"role\": \"boss\", \"content\": \"x\"}]}", 400,
             "messages", "boss");
  CHAT_FAILS("{\"model\": \"m\", \"messages\": [{\"role\": \"user\"}]}", 400, "messages",
             "content");
  CHAT_FAILS("{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": "
             "[{\"type\": \"image_url\", \"image_url\": {\"url\": \"x\"}}]}]}",
             400, "messages", "content[0]");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"temperature\": 2.5}", 400, "temperature",
             "out of range");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"temperature\": \"hot\"}", 400, "temperature",
             "expected");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"top_p\": 0}", 400, "top_p", "(0, 1]");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"max_tokens\": 0}", 400, "max_tokens", "at least 1");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"max_tokens\": 5000}", 400, "max_tokens",
             "limit of 4096");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"max_tokens\": 1.5}", 400, "max_tokens", "integer");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"seed\": 1e300}", 400, "seed", "seed");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"n\": 2}", 400, "n", "not supported");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"logprobs\": true}", 400, "logprobs", "not supported");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"frequency_penalty\": 0.5}", 400, "frequency_penalty",
             "not supported");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"tools\": [{\"type\": \"function\"}]}", 400, "tools",
             "tools[0]: expected");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"tools\": [{\"type\": \"code_interpreter\"}]}", 400,
             "tools", "only function tools");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"tools\": {\"type\": \"function\"}}", 400, "tools",
             "expected a list");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"tools\": [" TOOL("get weather") "]}", 400, "tools",
             "tools[0].function.name");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"tools\": [" TOOL("f") ", " TOOL("a.b") "]}", 400,
             "tools", "tools[1].function.name");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"tools\": [{\"type\": \"function\", \"function\": "
             "{\"name\": \"f\", \"parameters\": \"x\"}}]}", 400, "tools", "parameters");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"tool_choice\": \"required\"}", 400, "tool_choice",
             "no tools");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"tools\": [" TOOL("f") "], \"tool_choice\": "
             "{\"type\": \"function\", \"function\": {\"name\": \"g\"}}}", 400, "tool_choice",
             "\"g\" is not among the tools");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"tools\": [" TOOL("f") "], \"tool_choice\": "
             "{\"type\": \"function\"}}", 400, "tool_choice", "expected \"auto\"");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"tools\": [" TOOL("f") "], \"tool_choice\": "
             "\"any\"}", 400, "tool_choice", "\"required\"");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"parallel_tool_calls\": 1}", 400,
             "parallel_tool_calls", "boolean");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"functions\": [{\"name\": \"f\"}]}", 400,
             "functions", "not supported");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"response_format\": {\"type\": \"json_object\"}}", 400,
             "response_format", "text");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"stop\": [\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "stop",
             "at most 4");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"stop\": [\"\"]}", 400, "stop", "stop[0]");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"stop\": 5}", 400, "stop", "expected a string");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"stream\": \"yes\"}", 400, "stream", "true or false");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"reasoning_effort\": \"max\"}", 400,
             "reasoning_effort", "low, medium or high");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"adapters\": {\"name\": \"a\"}}", 400, "adapters",
             "expected an array");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"adapters\": [{\"name\": \"a b\"}]}", 400, "adapters",
             "adapters[0].name");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"adapters\": [{\"name\": \"a\", \"scale\": 1e9}]}", 400,
             "adapters", "adapters[0].scale");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"adapters\": [{\"name\": \"a\", \"scale\": \"x\"}]}",
             400, "adapters", "scale");
  CHAT_FAILS("{\"model\": \"m\", " MSGS ", \"adapters\": [{\"name\":\"a\"},{\"name\":\"a\"},"
             "{\"name\":\"a\"},{\"name\":\"a\"},{\"name\":\"a\"},{\"name\":\"a\"},{\"name\":\"a\"},"
             "{\"name\":\"a\"},{\"name\":\"a\"}]}",
             400, "adapters", "at most 8");
  lim.max_messages = 2;
  CHAT_FAILS("{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"1\"},"
             "{\"role\": \"assistant\", \"content\": \"2\"},{\"role\": \"user\", \"content\": \"3\"}]}",
             400, "messages", "at most 2");
  mxl_api_limits_default(&lim);
}

/* The prompt text a parsed chat request renders to (malloc'd). */
static char *rendered_text(const mxl_api_generation *g) {
  mxl_render_options opts = {0};
  opts.mode = MXL_RENDER_PROMPT;
  mxl_rendered r = {0};
  MXL_CHECK_OK(mxl_harmony_render_json(NULL, g->conversation, strlen(g->conversation), "t", &opts,
                                       &r));
  char *text = r.text ? strdup(r.text) : NULL;
  mxl_rendered_free(&r);
  return text;
}

/* Function tools: offered in the developer message as harmony renders
 * them (test_harmony holds the renderer to openai-harmony), left out with
 * tool_choice "none"; an assistant call and the tool's answer in the
 * history render as harmony's call and function messages. */
static void test_chat_tools(void) {
  const char *weather =
      "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": "
      "\"Current weather in a city\", \"parameters\": {\"type\": \"object\", \"properties\": "
      "{\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}";
  char body[2048];
  snprintf(body, sizeof body,
           "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"Weather in "
           "Paris?\"}], \"tools\": [%s], \"tool_choice\": \"auto\", \"parallel_tool_calls\": "
           "false}", weather);
  mxl_api_generation g;
  mxl_api_error e = {0};
  MXL_CHECK_MSG(chat(body, &g, &e) == 0, "%s", e.message);
  MXL_CHECK(g.tools == 1 && strstr(g.conversation, "\"tools\":[") != NULL);
  char *text = rendered_text(&g);
  MXL_CHECK_MSG(text && strstr(text, "<|start|>developer<|message|># Tools\n\n## functions\n\n"
                                     "namespace functions {\n\n// Current weather in a city\n"
                                     "type get_weather = (_: {\ncity: string,\n}) => any;"),
                "%s", text);
  free(text);
  mxl_api_generation_free(&g);

  snprintf(body, sizeof body,
           "{\"model\": \"m\", " MSGS ", \"tools\": [%s], \"tool_choice\": \"none\"}", weather);
  MXL_CHECK_MSG(chat(body, &g, &e) == 0, "%s", e.message);
  MXL_CHECK(g.tools == 0 && !strstr(g.conversation, "tools"));
  text = rendered_text(&g);
  MXL_CHECK_MSG(text && !strstr(text, "namespace functions"), "%s", text);
  free(text);
  mxl_api_generation_free(&g);

  snprintf(body, sizeof body,
           "{\"model\": \"m\", \"tools\": [%s], \"messages\": ["
           "{\"role\": \"user\", \"content\": \"Weather in Paris?\"}, "
           "{\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"call_1\", "
           "\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": "
           "\"{\\\"city\\\":\\\"Paris\\\"}\"}}]}, "
           "{\"role\": \"tool\", \"tool_call_id\": \"call_1\", \"content\": \"20 C\"}]}", weather);
  MXL_CHECK_MSG(chat(body, &g, &e) == 0, "%s", e.message);
  text = rendered_text(&g);
  MXL_CHECK_MSG(text && strstr(text, "<|start|>assistant to=functions.get_weather<|channel|>commentary"
                                     " <|constrain|>json<|message|>{\"city\":\"Paris\"}<|call|>") &&
                    strstr(text, "<|start|>functions.get_weather to=assistant<|channel|>commentary"
                                 "<|message|>20 C<|end|>"),
                "%s", text);
  free(text);
  mxl_api_generation_free(&g);

  /* a call required: of any tool, or of the one named */
  snprintf(body, sizeof body, "{\"model\": \"m\", " MSGS ", \"tools\": [%s, " TOOL("f") "], "
           "\"tool_choice\": \"required\"}", weather);
  MXL_CHECK_MSG(chat(body, &g, &e) == 0, "%s", e.message);
  MXL_CHECK(g.tools && g.force_call && g.call[0] == '\0');
  mxl_api_generation_free(&g);
  snprintf(body, sizeof body, "{\"model\": \"m\", " MSGS ", \"tools\": [%s, " TOOL("f") "], "
           "\"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}}",
           weather);
  MXL_CHECK_MSG(chat(body, &g, &e) == 0, "%s", e.message);
  MXL_CHECK(g.tools && g.force_call && !strcmp(g.call, "get_weather"));
  mxl_api_generation_free(&g);
  snprintf(body, sizeof body, "{\"model\": \"m\", " MSGS ", \"tools\": [%s]}", weather);
  MXL_CHECK_MSG(chat(body, &g, &e) == 0, "%s", e.message);
  MXL_CHECK(g.tools && !g.force_call);
  mxl_api_generation_free(&g);

  const char *raw = "{\"model\": \"m\", \"prompt\": \"x\", \"tools\": [" TOOL("f") "]}";
  MXL_CHECK(mxl_api_parse_completion(raw, strlen(raw), &lim, &g, &e) == -1);
  MXL_CHECK(e.http_status == 400 && !strcmp(e.param, "tools") && strstr(e.message, "not supported"));
}

static void test_completion(void) {
  mxl_api_generation g;
  mxl_api_error e = {0};
  const char *body = "{\"model\": \"m\", \"prompt\": \"Once\", \"max_tokens\": 4}";
  MXL_CHECK(mxl_api_parse_completion(body, strlen(body), &lim, &g, &e) == 0);
  MXL_CHECK(!g.chat && g.prompt && !strcmp(g.prompt, "Once") && !g.conversation);
  mxl_api_generation_free(&g);
  body = "{\"model\": \"m\", \"prompt\": [\"Twice\"]}";
  MXL_CHECK(mxl_api_parse_completion(body, strlen(body), &lim, &g, &e) == 0);
  MXL_CHECK(g.prompt && !strcmp(g.prompt, "Twice"));
  mxl_api_generation_free(&g);
  const char *bad[] = {"{\"model\": \"m\", \"prompt\": [1, 2]}", "{\"model\": \"m\"}",
                       "{\"model\": \"m\", \"prompt\": \"x\", \"echo\": true}",
                       "{\"model\": \"m\", \"prompt\": \"x\", \"logprobs\": 2}",
                       "{\"model\": \"m\", \"prompt\": \"x\", \"best_of\": 3}"};
  const char *param[] = {"prompt", "prompt", "echo", "logprobs", "best_of"};
  for (int i = 0; i < 5; i++) {
    MXL_CHECK(mxl_api_parse_completion(bad[i], strlen(bad[i]), &lim, &g, &e) == -1);
    MXL_CHECK_MSG(e.http_status == 400 && !strcmp(e.param, param[i]), "%s: %d %s", bad[i],
                  e.http_status, e.param);
  }
}

static void test_adapter_ops(void) {
  mxl_api_adapter_op op;
  mxl_api_error e = {0};
  const char *body = "{\"lora_name\": \"sql\", \"lora_path\": \"sql.mxla\"}";
  MXL_CHECK(mxl_api_parse_adapter_op(MXL_API_LOAD, body, strlen(body), &lim, &op, &e) == 0);
  MXL_CHECK(op.action == MXL_API_LOAD && !strcmp(op.name, "sql") && !strcmp(op.path, "sql.mxla"));
  MXL_CHECK(op.scale == 1.0f && op.pinned == -1);
  mxl_api_adapter_op_free(&op);
  body = "{\"lora_name\": \"sql\", \"lora_path\": \"b.mxla\", \"load_inplace\": true, "
         "\"scale\": 0.25, \"pinned\": true}";
  MXL_CHECK(mxl_api_parse_adapter_op(MXL_API_LOAD, body, strlen(body), &lim, &op, &e) == 0);
  MXL_CHECK(op.action == MXL_API_RELOAD && op.scale == 0.25f && op.pinned == 1);
  mxl_api_adapter_op_free(&op);
  body = "{\"lora_name\": \"sql\"}";
  MXL_CHECK(mxl_api_parse_adapter_op(MXL_API_UNLOAD, body, strlen(body), &lim, &op, &e) == 0);
  MXL_CHECK(op.path == NULL && op.action == MXL_API_UNLOAD);
  MXL_CHECK(mxl_api_parse_adapter_op(MXL_API_RELOAD, body, strlen(body), &lim, &op, &e) == 0);
  MXL_CHECK(mxl_api_parse_adapter_op(MXL_API_LOAD, body, strlen(body), &lim, &op, &e) == -1);
  MXL_CHECK(e.http_status == 400 && !strcmp(e.param, "lora_path"));
  body = "{\"lora_name\": \"../x\", \"lora_path\": \"x\"}";
  MXL_CHECK(mxl_api_parse_adapter_op(MXL_API_LOAD, body, strlen(body), &lim, &op, &e) == 0);
  mxl_api_adapter_op_free(&op);
  body = "{\"lora_name\": \"a\\\"b\", \"lora_path\": \"x\"}";
  MXL_CHECK(mxl_api_parse_adapter_op(MXL_API_LOAD, body, strlen(body), &lim, &op, &e) == -1);
  MXL_CHECK(!strcmp(e.param, "lora_name"));
  body = "{\"lora_name\": \"a\", \"lora_path\": \"\"}";
  MXL_CHECK(mxl_api_parse_adapter_op(MXL_API_LOAD, body, strlen(body), &lim, &op, &e) == -1);
  MXL_CHECK(!strcmp(e.param, "lora_path"));
}

static void test_error_json(void) {
  mxl_api_error e = {0};
  MXL_CHECK(mxl_api_fail(&e, 404, "model", "The model `%s` does not exist.", "x") == -1);
  char *text = mxl_api_error_json(&e);
  cJSON *root = cJSON_Parse(text);
  const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
  MXL_CHECK(cJSON_IsObject(err));
  MXL_CHECK(!strcmp(cJSON_GetObjectItem(err, "message")->valuestring,
                    "The model `x` does not exist."));
  MXL_CHECK(!strcmp(cJSON_GetObjectItem(err, "type")->valuestring, "not_found_error"));
  MXL_CHECK(!strcmp(cJSON_GetObjectItem(err, "param")->valuestring, "model"));
  MXL_CHECK(!strcmp(cJSON_GetObjectItem(err, "code")->valuestring, "model_not_found"));
  cJSON_Delete(root);
  free(text);
  mxl_api_fail(&e, 400, NULL, "bad");
  text = mxl_api_error_json(&e);
  MXL_CHECK_MSG(!strcmp(text, "{\"error\":{\"message\":\"bad\",\"type\":\"invalid_request_error\","
                              "\"param\":null,\"code\":null}}"),
                "%s", text);
  free(text);
  MXL_CHECK(mxl_api_status_http(MXL_ERR_ARGUMENT) == 400);
  MXL_CHECK(mxl_api_status_http(MXL_ERR_STATE) == 503);
  MXL_CHECK(mxl_api_status_http(MXL_ERR_BACKEND) == 500);
}

static void test_response_json(void) {
  mxl_api_reply r = {1, "chatcmpl-1", "base", 1700000000};
  mxl_api_usage u = {5, 3};
  mxl_api_delta d = {0};
  d.content = "Hi\xff", d.content_len = 3;
  d.reasoning = "think", d.reasoning_len = 5;
  d.finish = "stop";
  d.usage = &u;
  char *text = mxl_api_response_json(&r, &d);
  MXL_CHECK_MSG(text && !strcmp(text,
      "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1700000000,"
      "\"model\":\"base\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
      "\"content\":\"Hi\xEF\xBF\xBD\",\"reasoning_content\":\"think\"},\"logprobs\":null,"
      "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,"
      "\"total_tokens\":8,\"prompt_tokens_details\":{\"cached_tokens\":0}}}"), "%s", text);
  free(text);
  mxl_api_delta c = {0};
  c.role = 1;
  c.content = "", c.content_len = 0;
  text = mxl_api_chunk_json(&r, &c);
  MXL_CHECK_MSG(text && strstr(text, "\"object\":\"chat.completion.chunk\"") &&
                    strstr(text, "\"delta\":{\"role\":\"assistant\",\"content\":\"\"}") &&
                    strstr(text, "\"finish_reason\":null") && !strstr(text, "usage"),
                "%s", text);
  free(text);
  mxl_api_delta last = {0};
  last.usage = &u;
  last.usage_only = 1;
  text = mxl_api_chunk_json(&r, &last);
  MXL_CHECK_MSG(text && strstr(text, "\"choices\":[]") && strstr(text, "\"total_tokens\":8"),
                "%s", text);
  free(text);
  /* A tool call: content null, the call with its id; streamed, the id,
   * type and name in the call's first chunk only. */
  mxl_api_tool_call call = {0, "call_abc", "get_weather", "{\"city\":\"Paris\"}", 16};
  mxl_api_delta tc = {0};
  tc.content = "", tc.content_len = 0;
  tc.finish = "tool_calls";
  tc.calls = &call, tc.n_calls = 1;
  text = mxl_api_response_json(&r, &tc);
  MXL_CHECK_MSG(text && !strcmp(text,
      "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1700000000,"
      "\"model\":\"base\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
      "\"content\":null,\"tool_calls\":[{\"id\":\"call_abc\",\"type\":\"function\","
      "\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},"
      "\"logprobs\":null,\"finish_reason\":\"tool_calls\"}]}"), "%s", text);
  free(text);
  tc.content = "Let me check.", tc.content_len = 13;
  text = mxl_api_response_json(&r, &tc);
  MXL_CHECK_MSG(text && strstr(text, "\"content\":\"Let me check.\",\"tool_calls\":["), "%s", text);
  free(text);
  mxl_api_tool_call parts[2] = {{0, "call_abc", "get_weather", "{\"ci", 4},
                                {1, NULL, "get_weather", "ty\"}", 4}};
  mxl_api_delta ch = {0};
  ch.calls = parts, ch.n_calls = 2;
  text = mxl_api_chunk_json(&r, &ch);
  MXL_CHECK_MSG(text && strstr(text, "\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_abc\","
                                     "\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                                     "\"arguments\":\"{\\\"ci\"}},{\"index\":1,\"function\":"
                                     "{\"arguments\":\"ty\\\"}\"}}]}") &&
                    !strstr(text, "\"content\"") && strstr(text, "\"finish_reason\":null"),
                "%s", text);
  free(text);
  mxl_api_reply rc = {0, "cmpl-2", "a1", 1};
  mxl_api_delta t = {0};
  t.content = "a\0b", t.content_len = 3;
  t.finish = "length";
  text = mxl_api_response_json(&rc, &t);
  MXL_CHECK_MSG(text && strstr(text, "\"object\":\"text_completion\"") &&
                    strstr(text, "\"text\":\"a\xEF\xBF\xBD" "b\"") &&
                    strstr(text, "\"finish_reason\":\"length\""),
                "%s", text);
  free(text);
  /* One U+FFFD per maximal ill-formed subsequence, as Python decodes:
   * b"a\xe2\x82b\xff\xf0\x9f\x98\xc0\x80".decode(errors="replace"). */
  const char bad[] = "a\xe2\x82" "b\xff\xf0\x9f\x98\xc0\x80\xed\xa0\x80";
  char *clean = mxl_api_utf8_clean(bad, sizeof bad - 1);
  const char *want = "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                     "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD";
  MXL_CHECK_MSG(clean && !strcmp(clean, want), "%s", clean);
  free(clean);
  mxl_api_model models[2] = {{"base", NULL, NULL, 5, 4096}, {"sql", "/a/sql.mxla", "base", 6, 4096}};
  text = mxl_api_models_json(models, 2);
  cJSON *root = cJSON_Parse(text);
  const cJSON *data = cJSON_GetObjectItem(root, "data");
  MXL_CHECK(cJSON_GetArraySize(data) == 2);
  const cJSON *m1 = cJSON_GetArrayItem(data, 1);
  MXL_CHECK(!strcmp(cJSON_GetObjectItem(m1, "parent")->valuestring, "base"));
  MXL_CHECK(!strcmp(cJSON_GetObjectItem(m1, "root")->valuestring, "/a/sql.mxla"));
  MXL_CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(data, 0), "parent")));
  cJSON_Delete(root);
  free(text);
}

/* Feeds `pieces` one by one; returns what the client would see. */
static char *run_stop(const char *const *stops, int n_stops, const char *const *pieces, int n,
                      int *matched) {
  mxl_stop_matcher m;
  mxl_stop_init(&m, stops, n_stops);
  mxl_strbuf out = {0};
  *matched = 0;
  for (int i = 0; i < n && !*matched; i++) *matched = mxl_stop_feed(&m, pieces[i], strlen(pieces[i]), &out);
  if (!*matched) mxl_stop_flush(&m, &out);
  mxl_stop_free(&m);
  return mxl_strbuf_take(&out);
}

static void test_stop_strings(void) {
  const char *stops[] = {"END", "##"};
  int matched = 0;
  const char *p1[] = {"hello E", "N", "D world"};
  char *s = run_stop(stops, 2, p1, 3, &matched);
  MXL_CHECK_MSG(matched && !strcmp(s, "hello "), "%s", s);
  free(s);
  const char *p2[] = {"a#", "b E", "N"}; /* partial prefixes released when they fail */
  s = run_stop(stops, 2, p2, 3, &matched);
  MXL_CHECK_MSG(!matched && !strcmp(s, "a#b EN"), "%s", s);
  free(s);
  const char *p3[] = {"x ## y END"}; /* the earliest stop wins */
  s = run_stop(stops, 2, p3, 1, &matched);
  MXL_CHECK_MSG(matched && !strcmp(s, "x "), "%s", s);
  free(s);
  /* The stop that completes first wins, fed whole or in pieces: "b" is
   * complete before "abc" is (a fuzzer found the two disagreeing). */
  const char *nested[] = {"abc", "b"};
  const char *p4[] = {"x abc"}, *p5[] = {"x a", "bc"}, *p6[] = {"x ", "a", "b", "c"};
  const char *const *feeds[] = {p4, p5, p6};
  int n_feeds[] = {1, 2, 4};
  for (int f = 0; f < 3; f++) {
    s = run_stop(nested, 2, feeds[f], n_feeds[f], &matched);
    MXL_CHECK_MSG(matched && !strcmp(s, "x a"), "feed %d: %s", f, s);
    free(s);
  }
  s = run_stop(NULL, 0, p3, 1, &matched);
  MXL_CHECK(!matched && !strcmp(s, "x ## y END"));
  free(s);
  /* Nothing that could begin a stop string is shown early. */
  mxl_stop_matcher m;
  mxl_stop_init(&m, stops, 2);
  mxl_strbuf out = {0};
  MXL_CHECK(mxl_stop_feed(&m, "abcE", 4, &out) == 0);
  MXL_CHECK(out.len == 3 && !memcmp(out.data, "abc", 3));
  MXL_CHECK(mxl_stop_feed(&m, "NDx", 3, &out) == 1);
  MXL_CHECK(out.len == 3);
  MXL_CHECK(mxl_stop_feed(&m, "more", 4, &out) == 1 && out.len == 3);
  mxl_stop_free(&m);
  mxl_strbuf_free(&out);
}

static void test_adapter_paths(void) {
  char dir[64], other[64], path[256];
  snprintf(dir, sizeof dir, "/tmp/mxl_srvapi_XXXXXX");
  snprintf(other, sizeof other, "/tmp/mxl_srvapi_XXXXXX");
  MXL_CHECK(mkdtemp(dir) && mkdtemp(other));
  snprintf(path, sizeof path, "%s/sub", dir);
  MXL_CHECK_OK(mxl_make_dirs(path));
  snprintf(path, sizeof path, "%s/sub/a.mxla", dir);
  MXL_CHECK_OK(mxl_write_file_atomic(path, "x", 1));
  snprintf(path, sizeof path, "%s/secret.mxla", other);
  MXL_CHECK_OK(mxl_write_file_atomic(path, "x", 1));
  char link[256];
  snprintf(link, sizeof link, "%s/escape.mxla", dir);
  MXL_CHECK(symlink(path, link) == 0);
  snprintf(link, sizeof link, "%s/inner.mxla", dir);
  MXL_CHECK(symlink("sub/a.mxla", link) == 0);

  char *out = NULL;
  mxl_api_error e = {0};
  MXL_CHECK_MSG(mxl_api_resolve_adapter_path(dir, "sub/a.mxla", &out, &e) == 0, "%s", e.message);
  MXL_CHECK(out && strstr(out, "/sub/a.mxla") && out[0] == '/');
  free(out);
  MXL_CHECK(mxl_api_resolve_adapter_path(dir, "inner.mxla", &out, &e) == 0);
  MXL_CHECK(out && strstr(out, "/sub/a.mxla"));
  free(out);
  snprintf(path, sizeof path, "%s/sub/../sub/a.mxla", dir);
  MXL_CHECK(mxl_api_resolve_adapter_path(dir, path, &out, &e) == 0);
  free(out);
  struct {
    const char *path;
    int status;
  } refused[] = {{"escape.mxla", 403}, {"../", 403}, {"nope.mxla", 404}, {"sub", 400},
                 {"/etc/passwd", 403}, {"/nonexistent/x.mxla", 403}};
  char rel[300];
  snprintf(rel, sizeof rel, "../%s/secret.mxla", other + 5); /* other is /tmp/... */
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    out = NULL;
    MXL_CHECK(mxl_api_resolve_adapter_path(dir, refused[i].path, &out, &e) == -1 && !out);
    MXL_CHECK_MSG(e.http_status == refused[i].status, "%s: %d %s", refused[i].path,
                  e.http_status, e.message);
  }
  MXL_CHECK(mxl_api_resolve_adapter_path(dir, rel, &out, &e) == -1 && e.http_status == 403);
  MXL_CHECK(mxl_api_resolve_adapter_path(NULL, "sub/a.mxla", &out, &e) == -1);
  MXL_CHECK(e.http_status == 403 && strstr(e.message, "--adapter-dir"));
  char cmd[200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir, other);
  MXL_CHECK(system(cmd) == 0);
}

static void test_bearer(void) {
  MXL_CHECK(mxl_api_bearer_ok("Bearer s3cret", "s3cret"));
  MXL_CHECK(mxl_api_bearer_ok("bearer s3cret", "s3cret"));
  MXL_CHECK(!mxl_api_bearer_ok("Bearer s3cre", "s3cret"));
  MXL_CHECK(!mxl_api_bearer_ok("Bearer s3cretX", "s3cret"));
  MXL_CHECK(!mxl_api_bearer_ok("Basic s3cret", "s3cret"));
  MXL_CHECK(!mxl_api_bearer_ok("s3cret", "s3cret"));
  MXL_CHECK(!mxl_api_bearer_ok(NULL, "s3cret"));
  MXL_CHECK(!mxl_api_bearer_ok("Bearer ", "s3cret"));
  MXL_CHECK(!mxl_api_bearer_ok("Bearer ", "")); /* found by fuzz_http_request */
}

static void test_names(void) {
  MXL_CHECK(mxl_api_name_valid("gpt-oss-20b") && mxl_api_name_valid("sql/v2:1"));
  MXL_CHECK(!mxl_api_name_valid("") && !mxl_api_name_valid("a b") && !mxl_api_name_valid("a\"b"));
  MXL_CHECK(!mxl_api_name_valid("caf\xc3\xa9"));
  char long_name[MXL_API_NAME_MAX + 2];
  memset(long_name, 'a', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  MXL_CHECK(!mxl_api_name_valid(long_name));
  long_name[MXL_API_NAME_MAX] = '\0';
  MXL_CHECK(mxl_api_name_valid(long_name));
}

/* Replies from token ids: harmony channels → reasoning and content, the
 * answer cut at a stop string, raw stop ids hidden. The tokenizer is the
 * tiny model's (harmony special tokens included). */
static void test_reply_tokens(void) {
  char dir[64];
  snprintf(dir, sizeof dir, "/tmp/mxl_srvapi_XXXXXX");
  MXL_CHECK(mkdtemp(dir) != NULL);
  mxl_tiny_options opt = {0};
  opt.layout = "hf";
  mxl_tokenizer *tok = NULL;
  MXL_CHECK_OK(mxl_tiny_write(dir, &opt, NULL, NULL));
  MXL_CHECK_OK(mxl_tokenizer_load(dir, &tok));
  mxl_chat_ids ids;
  if (!tok || mxl_chat_ids_lookup(tok, &ids) != MXL_OK) MXL_SKIP("no tokenizer");
  const char *text = "<|channel|>analysis<|message|>Let me think.<|end|><|start|>assistant"
                     "<|channel|>final<|message|>The answer END is here<|return|>";
  mxl_ids t = {0};
  MXL_CHECK_OK(mxl_tokenizer_encode(tok, text, strlen(text), 1, &t));
  const char *stops[] = {"END"};
  mxl_reply r;
  mxl_reply_init(&r, tok, &ids, 1, stops, 1, NULL, 0);
  mxl_strbuf content = {0};
  int matched_at = -1;
  for (size_t i = 0; i < t.n; i++) {
    if (mxl_reply_push(&r, t.data[i])) matched_at = (int)i;
    mxl_strbuf_append(&content, r.content.data, r.content.len);
    if (i + 1 < t.n) mxl_strbuf_clear(&r.content);
  }
  mxl_reply_finish(&r);
  MXL_CHECK_MSG(content.data && !strcmp(content.data, "The answer "), "%s", content.data);
  MXL_CHECK_MSG(r.reasoning.data && !strcmp(r.reasoning.data, "Let me think."), "%s",
                r.reasoning.data);
  MXL_CHECK(r.stop_matched && matched_at > 0 && r.tokens_at_stop == matched_at + 1);
  mxl_reply_free(&r);
  mxl_strbuf_free(&content);
  /* Function calls, where the request offered tools: a message addressed
   * to functions.NAME (after the channel, or in the role part as harmony
   * renders calls in a history) is a call, its text the arguments; a
   * commentary preamble stays content. Without tools the call's text stays
   * in content, as before. */
  const char *calls_text =
      "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>"
      "commentary<|message|>Checking.<|end|><|start|>assistant<|channel|>commentary "
      "to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\"}<|end|>"
      "<|start|>assistant to=functions.get_time<|channel|>commentary json<|message|>{}<|call|>";
  mxl_ids ct = {0};
  MXL_CHECK_OK(mxl_tokenizer_encode(tok, calls_text, strlen(calls_text), 1, &ct));
  for (int tools = 0; tools < 2; tools++) {
    mxl_reply_init(&r, tok, &ids, 1, NULL, 0, NULL, 0);
    if (tools) mxl_reply_parse_calls(&r);
    for (size_t i = 0; i < ct.n; i++) MXL_CHECK(mxl_reply_push(&r, ct.data[i]) == 0);
    mxl_reply_finish(&r);
    MXL_CHECK_MSG(r.reasoning.data && !strcmp(r.reasoning.data, "Need the weather."), "%s",
                  r.reasoning.data);
    if (tools) {
      MXL_CHECK_MSG(r.content.data && !strcmp(r.content.data, "Checking."), "%s", r.content.data);
      MXL_CHECK(r.n_calls == 2 && !strcmp(r.calls[0].name, "get_weather") &&
                !strcmp(r.calls[1].name, "get_time"));
      MXL_CHECK_MSG(r.calls[0].arguments.data &&
                        !strcmp(r.calls[0].arguments.data, "{\"city\":\"Paris\"}"),
                    "%s", r.calls[0].arguments.data);
      MXL_CHECK(r.calls[1].arguments.data && !strcmp(r.calls[1].arguments.data, "{}"));
    } else {
      MXL_CHECK_MSG(r.n_calls == 0 && r.content.data &&
                        !strcmp(r.content.data, "Checking.{\"city\":\"Paris\"}{}"),
                    "%s", r.content.data);
    }
    mxl_reply_free(&r);
  }
  mxl_ids_free(&ct);
  /* Calls past MXL_JOB_MAX_CALLS stay text, in content. */
  mxl_strbuf many = {0};
  for (int i = 0; i <= MXL_JOB_MAX_CALLS; i++)
    mxl_strbuf_printf(&many, "%s<|channel|>commentary to=functions.f%d<|message|>(%d)<|end|>",
                      i ? "<|start|>assistant" : "", i, i);
  MXL_CHECK_OK(mxl_tokenizer_encode(tok, many.data, many.len, 1, &ct));
  mxl_reply_init(&r, tok, &ids, 1, NULL, 0, NULL, 0);
  mxl_reply_parse_calls(&r);
  for (size_t i = 0; i < ct.n; i++) mxl_reply_push(&r, ct.data[i]);
  mxl_reply_finish(&r);
  MXL_CHECK(r.n_calls == MXL_JOB_MAX_CALLS && !strcmp(r.calls[MXL_JOB_MAX_CALLS - 1].name, "f7"));
  MXL_CHECK_MSG(r.content.data && !strcmp(r.content.data, "(8)"), "%s", r.content.data);
  mxl_reply_free(&r);
  mxl_ids_free(&ct);
  mxl_strbuf_free(&many);
  /* Raw text: every token shows but the hidden stop id. */
  mxl_ids raw = {0};
  MXL_CHECK_OK(mxl_tokenizer_encode(tok, "Hello there", 11, 0, &raw));
  int32_t hidden[1] = {ids.ret};
  MXL_CHECK_OK(mxl_ids_push(&raw, ids.ret));
  mxl_reply_init(&r, tok, &ids, 0, NULL, 0, hidden, 1);
  for (size_t i = 0; i < raw.n; i++) MXL_CHECK(mxl_reply_push(&r, raw.data[i]) == 0);
  mxl_reply_finish(&r);
  MXL_CHECK_MSG(r.content.data && !strcmp(r.content.data, "Hello there"), "%s", r.content.data);
  MXL_CHECK(r.n_seen == (int)raw.n && !r.stop_matched);
  mxl_reply_free(&r);
  mxl_ids_free(&raw);
  mxl_ids_free(&t);
  mxl_tokenizer_free(tok);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  MXL_CHECK(system(cmd) == 0);
}

/* What the official openai Python client sends (recorded by
 * tools/openai_client_check.py --record) parses as meant. */
static int parse_fixture(const char *name, int chat, mxl_api_generation *g) {
  char path[512], *text = NULL;
  size_t n = 0;
  snprintf(path, sizeof path, "%s/tests/fixtures/openai_client/%s", MXL_SOURCE_DIR, name);
  if (mxl_read_file(path, 1 << 20, &text, &n) != MXL_OK) return -1;
  mxl_api_error e = {0};
  int rc = chat ? mxl_api_parse_chat(text, n, &lim, g, &e)
                : mxl_api_parse_completion(text, n, &lim, g, &e);
  MXL_CHECK_MSG(rc == 0, "%s: %s", name, e.message);
  free(text);
  return rc;
}

static void test_openai_client_requests(void) {
  mxl_api_generation g;
  if (parse_fixture("chat.json", 1, &g) == 0) {
    MXL_CHECK(!strcmp(g.model, "sql") && g.sampling.temperature == 0 && g.max_tokens == 40);
    MXL_CHECK(g.has_seed && g.sampling.seed == 7 && g.n_stop == 1 && !strcmp(g.stop[0], "END"));
    MXL_CHECK(!g.stream && strstr(g.conversation, "\"Be brief.\"") &&
              strstr(g.conversation, "Say 3"));
    mxl_api_generation_free(&g);
  }
  if (parse_fixture("chat_stream.json", 1, &g) == 0) {
    MXL_CHECK(g.stream && g.include_usage && g.max_tokens == 40);
    MXL_CHECK(strstr(g.conversation, "\"reasoning_effort\":\"low\""));
    mxl_api_generation_free(&g);
  }
  if (parse_fixture("chat_adapters.json", 1, &g) == 0) {
    MXL_CHECK(g.n_adapters == 2 && !strcmp(g.adapters[1].name, "tone"));
    MXL_CHECK(g.adapters[0].scale == 0.5f && g.adapters[1].scale == 1.5f && g.sampling.top_p == 0.9f);
    mxl_api_generation_free(&g);
  }
  if (parse_fixture("chat_tools.json", 1, &g) == 0) {
    MXL_CHECK(g.tools == 1 && strstr(g.conversation, "\"tool_call_id\":\"call_1\""));
    char *text = rendered_text(&g);
    MXL_CHECK_MSG(text && strstr(text, "type get_weather = (_: {") &&
                      strstr(text, "<|start|>functions.get_weather to=assistant<|channel|>"
                                   "commentary<|message|>20 C<|end|>"),
                  "%s", text);
    free(text);
    mxl_api_generation_free(&g);
  }
  if (parse_fixture("completion.json", 0, &g) == 0) {
    MXL_CHECK(!strcmp(g.prompt, "Once upon") && g.max_tokens == 24 && g.n_stop == 1);
    MXL_CHECK_NEAR(g.sampling.temperature, 0.7, 1e-6);
    mxl_api_generation_free(&g);
  }
  if (parse_fixture("completion_stream.json", 0, &g) == 0) {
    MXL_CHECK(g.stream && !g.include_usage && g.n_adapters == 1 && g.adapters[0].scale == -1.0f);
    mxl_api_generation_free(&g);
  }
  char path[512], *auth = NULL;
  size_t n = 0;
  snprintf(path, sizeof path, "%s/tests/fixtures/openai_client/authorization.txt", MXL_SOURCE_DIR);
  MXL_CHECK_OK(mxl_read_file(path, 4096, &auth, &n));
  if (auth) {
    if (n && auth[n - 1] == '\n') auth[n - 1] = '\0';
    MXL_CHECK(mxl_api_bearer_ok(auth, "s3cret") && !mxl_api_bearer_ok(auth, "s3cre"));
  }
  free(auth);
}

int main(void) {
  mxl_api_limits_default(&lim);
  MXL_RUN(test_chat_defaults);
  MXL_RUN(test_chat_every_field);
  MXL_RUN(test_chat_refusals);
  MXL_RUN(test_chat_tools);
  MXL_RUN(test_completion);
  MXL_RUN(test_openai_client_requests);
  MXL_RUN(test_adapter_ops);
  MXL_RUN(test_error_json);
  MXL_RUN(test_response_json);
  MXL_RUN(test_stop_strings);
  MXL_RUN(test_reply_tokens);
  MXL_RUN(test_adapter_paths);
  MXL_RUN(test_bearer);
  MXL_RUN(test_names);
  return mxl_test_summary("server_api");
}
