/* Harmony rendering: byte- and token-exact parity with openai-harmony on the
 * fixtures of tools/gen_harmony_fixtures.py, loss-mask spans, the analysis
 * rules, and the errors of the dataset-JSON mapping. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/fileio.h"
#include "core/status.h"
#include "datasets/harmony.h"
#include "datasets/tokenizer.h"
#include "mxlora/data.h"
#include "test.h"

static mxl_tokenizer *tokenizer; /* NULL when the shared vocabulary is absent */

static void load_tokenizer(void) {
  const char *path = MXL_SHARED_DIR "/data/o200k_base.tiktoken";
  if (!mxl_path_exists(path)) return;
  if (mxl_tokenizer_load(path, &tokenizer) != MXL_OK) {
    fprintf(stderr, "cannot load %s: %s\n", path, mxl_last_error());
    tokenizer = NULL;
  }
}

/* Renders JSON text at the text level with options. */
static mxl_status render(const char *json, const mxl_render_options *o, mxl_rendered *r) {
  return mxl_harmony_render_json(NULL, json, strlen(json), "t.json", o, r);
}

/* The rendered text with each run trained under `mode` put in brackets. */
static char *bracketed(const mxl_rendered *r, mxl_loss_mask mode) {
  char *s = malloc(r->text_len * 3 + 3);
  size_t n = 0;
  int in = 0;
  for (size_t i = 0; i < r->text_len; i++) {
    int t = (r->text_flags[i] & MXL_MASK_BIT(mode)) != 0;
    if (t != in) s[n++] = t ? '[' : ']';
    in = t;
    s[n++] = r->text[i];
  }
  if (in) s[n++] = ']';
  s[n] = '\0';
  return s;
}

/* The part of the bracketed text after the system (and developer) prompt. */
static const char *after_prompt(const char *s) {
  const char *p = strstr(s, "<|start|>user");
  return p ? p : s;
}

/* ------------------------------------------------------------------ parity */

static mxl_status case_options(const cJSON *c, mxl_render_options *o) {
  memset(o, 0, sizeof *o);
  const cJSON *opt = cJSON_GetObjectItem(c, "options");
  const cJSON *v;
  if ((v = cJSON_GetObjectItem(opt, "identity"))) o->model_identity = v->valuestring;
  if ((v = cJSON_GetObjectItem(opt, "cutoff"))) o->knowledge_cutoff = v->valuestring;
  if ((v = cJSON_GetObjectItem(opt, "date"))) o->date = v->valuestring;
  if ((v = cJSON_GetObjectItem(opt, "effort"))) MXL_TRY(mxl_effort_parse(v->valuestring, &o->effort));
  if ((v = cJSON_GetObjectItem(c, "analysis")))
    MXL_TRY(mxl_analysis_rule_parse(v->valuestring, &o->analysis));
  const char *mode = cJSON_GetStringValue(cJSON_GetObjectItem(c, "mode"));
  o->mode = !mode || !strcmp(mode, "train") ? MXL_RENDER_TRAIN
            : !strcmp(mode, "prompt")       ? MXL_RENDER_PROMPT
                                            : MXL_RENDER_PLAIN;
  return MXL_OK;
}

static void check_case(const cJSON *c, int *n_text, int *n_ids) {
  const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(c, "name"));
  mxl_render_options o;
  MXL_CHECK_OK(case_options(c, &o));
  char *conv = cJSON_PrintUnformatted(cJSON_GetObjectItem(c, "conversation"));
  const char *want_text = cJSON_GetStringValue(cJSON_GetObjectItem(c, "text"));
  const cJSON *want_ids = cJSON_GetObjectItem(c, "ids");
  mxl_rendered r;
  mxl_status st = mxl_harmony_render_json(tokenizer, conv, strlen(conv), name, &o, &r);
  MXL_CHECK_MSG(st == MXL_OK, "%s: %s", name, mxl_last_error());
  if (st == MXL_OK) {
    int same = r.text_len == strlen(want_text) && !memcmp(r.text, want_text, r.text_len);
    MXL_CHECK_MSG(same, "%s: text differs:\n--- got\n%s\n--- want\n%s", name, r.text, want_text);
    *n_text += same;
    if (tokenizer) {
      int n = cJSON_GetArraySize(want_ids), first_diff = -1;
      for (int i = 0; i < n && i < (int)r.n && first_diff < 0; i++)
        if (r.ids[i] != (int32_t)cJSON_GetArrayItem(want_ids, i)->valueint) first_diff = i;
      if (first_diff < 0 && (size_t)n != r.n) first_diff = n < (int)r.n ? n : (int)r.n;
      MXL_CHECK_MSG(first_diff < 0, "%s: ids differ at %d (got %zu ids, want %d)", name,
                    first_diff, r.n, n);
      *n_ids += first_diff < 0;
    }
    mxl_rendered_free(&r);
  }
  free(conv);
}

static void test_openai_harmony_parity(void) {
  char *data = NULL;
  size_t size = 0;
  MXL_CHECK_OK(mxl_read_file(MXL_SOURCE_DIR "/tests/fixtures/harmony/cases.jsonl", 1 << 22,
                             &data, &size));
  if (!data) return;
  int cases = 0, n_text = 0, n_ids = 0;
  for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
    cJSON *c = cJSON_Parse(line);
    MXL_CHECK(c != NULL);
    if (!c) continue;
    check_case(c, &n_text, &n_ids);
    cJSON_Delete(c);
    cases++;
  }
  free(data);
  MXL_CHECK(cases >= 30);
  printf("openai-harmony parity: %d cases, %d text-exact, %d token-exact%s\n", cases, n_text,
         n_ids, tokenizer ? "" : " (no vocabulary: ids not checked)");
  if (!tokenizer) MXL_SKIP("token ids: %s/data/o200k_base.tiktoken absent", MXL_SHARED_DIR);
}

/* ------------------------------------------------------------------ masks */

static const char two_turns[] =
    "{\"messages\":[{\"role\":\"user\",\"content\":\"A\"},"
    "{\"role\":\"assistant\",\"thinking\":\"t1\",\"content\":\"B\"},"
    "{\"role\":\"user\",\"content\":\"C\"},"
    "{\"role\":\"assistant\",\"thinking\":\"t2\",\"content\":\"D\"}]}";

static void expect_spans(const char *json, const mxl_render_options *o, mxl_loss_mask mode,
                         const char *want) {
  mxl_rendered r;
  MXL_CHECK_OK(render(json, o, &r));
  char *got = bracketed(&r, mode);
  const char *tail = mode == MXL_MASK_ALL ? got : after_prompt(got);
  MXL_CHECK_MSG(!strcmp(tail, want), "mode %s:\n got  %s\n want %s", mxl_loss_mask_name(mode),
                tail, want);
  free(got);
  mxl_rendered_free(&r);
}

static void test_mask_modes(void) {
  mxl_render_options o = {0}; /* earlier-turns: t1 dropped, t2 kept */
  expect_spans(two_turns, &o, MXL_MASK_ASSISTANT,
               "<|start|>user<|message|>A<|end|><|start|>assistant[<|channel|>final<|message|>B"
               "<|end|>]<|start|>user<|message|>C<|end|><|start|>assistant[<|channel|>analysis"
               "<|message|>t2<|end|><|start|>assistant<|channel|>final<|message|>D<|return|>]");
  expect_spans(two_turns, &o, MXL_MASK_LAST_TURN,
               "<|start|>user<|message|>A<|end|><|start|>assistant<|channel|>final<|message|>B"
               "<|end|><|start|>user<|message|>C<|end|><|start|>assistant[<|channel|>analysis"
               "<|message|>t2<|end|><|start|>assistant<|channel|>final<|message|>D<|return|>]");
  expect_spans(two_turns, &o, MXL_MASK_FINAL,
               "<|start|>user<|message|>A<|end|><|start|>assistant[<|channel|>final<|message|>B"
               "<|end|>]<|start|>user<|message|>C<|end|><|start|>assistant<|channel|>analysis"
               "<|message|>t2<|end|><|start|>assistant[<|channel|>final<|message|>D<|return|>]");
  mxl_rendered r;
  MXL_CHECK_OK(render(two_turns, &o, &r));
  MXL_CHECK(mxl_rendered_trained(&r, MXL_MASK_ALL) == r.text_len);
  char *all = bracketed(&r, MXL_MASK_ALL);
  MXL_CHECK(all[0] == '[' && all[strlen(all) - 1] == ']' && !strchr(all + 1, '['));
  free(all);
  /* counts agree with the spans: ASSISTANT ⊇ LAST_TURN, ASSISTANT ⊇ FINAL */
  size_t a = mxl_rendered_trained(&r, MXL_MASK_ASSISTANT);
  MXL_CHECK(a > mxl_rendered_trained(&r, MXL_MASK_LAST_TURN));
  MXL_CHECK(a > mxl_rendered_trained(&r, MXL_MASK_FINAL));
  mxl_rendered_free(&r);
}

static void test_mask_tool_chain(void) {
  /* the reply to the last user message spans a tool call and its result:
   * the tool result is never trained; the assistant run after it starts a
   * new prompt boundary (the harness appends <|start|>assistant) */
  const char *json =
      "{\"messages\":[{\"role\":\"user\",\"content\":\"Q\"},"
      "{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":{}}}]},"
      "{\"role\":\"tool\",\"content\":\"R\"},"
      "{\"role\":\"assistant\",\"content\":\"A\"}]}";
  mxl_render_options o = {0};
  expect_spans(json, &o, MXL_MASK_LAST_TURN,
               "<|start|>user<|message|>Q<|end|><|start|>assistant[ to=functions.f<|channel|>"
               "commentary <|constrain|>json<|message|>{}<|call|>]<|start|>functions.f to="
               "assistant<|channel|>commentary<|message|>R<|end|><|start|>assistant[<|channel|>"
               "final<|message|>A<|return|>]");
  expect_spans(json, &o, MXL_MASK_FINAL,
               "<|start|>user<|message|>Q<|end|><|start|>assistant to=functions.f<|channel|>"
               "commentary <|constrain|>json<|message|>{}<|call|><|start|>functions.f to="
               "assistant<|channel|>commentary<|message|>R<|end|><|start|>assistant[<|channel|>"
               "final<|message|>A<|return|>]");
}

static void test_prompt_mode(void) {
  mxl_render_options o = {.mode = MXL_RENDER_PROMPT};
  const char *json = "[{\"role\":\"user\",\"content\":\"hi\"}]";
  mxl_rendered r;
  MXL_CHECK_OK(render(json, &o, &r));
  const char *end = "<|start|>user<|message|>hi<|end|><|start|>assistant";
  MXL_CHECK(r.text_len > strlen(end) && !strcmp(r.text + r.text_len - strlen(end), end));
  MXL_CHECK(mxl_rendered_trained(&r, MXL_MASK_ASSISTANT) == 0);
  mxl_rendered_free(&r);
}

/* ------------------------------------------------------------------ analysis rules */

/* Which analysis texts survive: "t1,t2," style. */
static void expect_kept(const char *json, mxl_analysis_rule rule, mxl_render_mode mode,
                        const char *want) {
  mxl_render_options o = {.analysis = rule, .mode = mode};
  mxl_rendered r;
  MXL_CHECK_OK(render(json, &o, &r));
  char got[256] = "";
  const char *tag = "<|channel|>analysis<|message|>";
  for (const char *p = r.text ? strstr(r.text, tag) : NULL; p; p = strstr(p + 1, tag)) {
    const char *s = p + strlen(tag), *e = strstr(s, "<|end|>");
    strncat(got, s, (size_t)(e - s));
    strcat(got, ",");
  }
  MXL_CHECK_MSG(!strcmp(got, want), "rule %s: kept \"%s\", want \"%s\"",
                mxl_analysis_rule_name(rule), got, want);
  mxl_rendered_free(&r);
}

static void test_analysis_rules(void) {
  expect_kept(two_turns, MXL_ANALYSIS_EARLIER_TURNS, MXL_RENDER_TRAIN, "t2,");
  expect_kept(two_turns, MXL_ANALYSIS_HARMONY, MXL_RENDER_TRAIN, "t2,");
  expect_kept(two_turns, MXL_ANALYSIS_HF, MXL_RENDER_TRAIN, "t2,");
  expect_kept(two_turns, MXL_ANALYSIS_KEEP, MXL_RENDER_TRAIN, "t1,t2,");
  /* single turn: harmony's auto-drop removes the target's own thinking */
  const char *one = "[{\"role\":\"user\",\"content\":\"U\"},"
                    "{\"role\":\"assistant\",\"thinking\":\"T\",\"content\":\"C\"}]";
  expect_kept(one, MXL_ANALYSIS_HARMONY, MXL_RENDER_TRAIN, "");
  expect_kept(one, MXL_ANALYSIS_EARLIER_TURNS, MXL_RENDER_TRAIN, "T,");
  expect_kept(one, MXL_ANALYSIS_HF, MXL_RENDER_TRAIN, "T,");
  /* three turns: harmony keeps analysis between finals, the others do not */
  const char *three =
      "[{\"role\":\"user\",\"content\":\"1\"},{\"role\":\"assistant\",\"thinking\":\"a\",\"content\":\"A\"},"
      "{\"role\":\"user\",\"content\":\"2\"},{\"role\":\"assistant\",\"thinking\":\"b\",\"content\":\"B\"},"
      "{\"role\":\"user\",\"content\":\"3\"},{\"role\":\"assistant\",\"thinking\":\"c\",\"content\":\"C\"}]";
  expect_kept(three, MXL_ANALYSIS_HARMONY, MXL_RENDER_TRAIN, "b,c,");
  expect_kept(three, MXL_ANALYSIS_EARLIER_TURNS, MXL_RENDER_TRAIN, "c,");
  expect_kept(three, MXL_ANALYSIS_HF, MXL_RENDER_TRAIN, "c,");
  /* tool chain in the last turn: HF drops the thinking of the call once a
   * final answer follows; earlier-turns keeps the whole last turn */
  const char *chain =
      "[{\"role\":\"user\",\"content\":\"Q\"},"
      "{\"role\":\"assistant\",\"thinking\":\"call\",\"tool_calls\":[{\"function\":{\"name\":\"f\"}}]},"
      "{\"role\":\"tool\",\"content\":\"R\"},"
      "{\"role\":\"assistant\",\"thinking\":\"answer\",\"content\":\"A\"}]";
  expect_kept(chain, MXL_ANALYSIS_HF, MXL_RENDER_TRAIN, "answer,");
  expect_kept(chain, MXL_ANALYSIS_EARLIER_TURNS, MXL_RENDER_TRAIN, "call,answer,");
  expect_kept(chain, MXL_ANALYSIS_HARMONY, MXL_RENDER_TRAIN, "");
  /* an ongoing chain (no final yet) keeps its thinking under every rule */
  const char *ongoing =
      "[{\"role\":\"user\",\"content\":\"Q\"},"
      "{\"role\":\"assistant\",\"thinking\":\"call\",\"tool_calls\":[{\"function\":{\"name\":\"f\"}}]},"
      "{\"role\":\"tool\",\"content\":\"R\"}]";
  for (int rule = 0; rule < 4; rule++)
    expect_kept(ongoing, (mxl_analysis_rule)rule, MXL_RENDER_PROMPT, "call,");
}

static void test_option_names(void) {
  for (int m = 0; m < MXL_MASK_COUNT; m++) {
    mxl_loss_mask back;
    MXL_CHECK_OK(mxl_loss_mask_parse(mxl_loss_mask_name((mxl_loss_mask)m), &back));
    MXL_CHECK(back == (mxl_loss_mask)m);
  }
  for (int a = 0; a < 4; a++) {
    mxl_analysis_rule back;
    MXL_CHECK_OK(mxl_analysis_rule_parse(mxl_analysis_rule_name((mxl_analysis_rule)a), &back));
    MXL_CHECK(back == (mxl_analysis_rule)a);
  }
  mxl_loss_mask m;
  mxl_analysis_rule a;
  mxl_effort e;
  MXL_CHECK_FAILS(mxl_loss_mask_parse("everything", &m), MXL_ERR_ARGUMENT, "last-turn");
  MXL_CHECK_FAILS(mxl_analysis_rule_parse("drop", &a), MXL_ERR_ARGUMENT, "earlier-turns");
  MXL_CHECK_FAILS(mxl_effort_parse("max", &e), MXL_ERR_ARGUMENT, "low, medium or high");
}

/* ------------------------------------------------------------------ mapping errors */

static void expect_error(const char *json, const char *needle) {
  mxl_render_options o = {0};
  mxl_rendered r;
  MXL_CHECK_FAILS(render(json, &o, &r), MXL_ERR_FORMAT, needle);
  MXL_CHECK(r.text == NULL && r.ids == NULL);
}

static void test_mapping_errors(void) {
  expect_error("{\"messages\":[{\"role\":\"bot\",\"content\":\"x\"}]}",
               "t.json: messages[0].role: unknown role 'bot'");
  expect_error("{\"messages\":[{\"content\":\"x\"}]}", "messages[0].role: missing");
  expect_error("{\"messages\":[{\"role\":7}]}", "messages[0].role: expected a string, got number");
  expect_error("{\"messages\":[{\"role\":\"user\"}]}", "messages[0].content: missing");
  expect_error("{\"messages\":[{\"role\":\"user\",\"content\":5}]}",
               "messages[0].content: expected a string or a list of text parts, got number");
  expect_error("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\"}]}]}",
               "messages[0].content[0]");
  expect_error("{\"messages\":[\"hi\"]}", "messages[0]: expected a message object, got string");
  expect_error("{\"messages\":{}}", "messages: expected a list of messages, got object");
  expect_error("{\"messages\":[]}", "no user, assistant or tool message");
  expect_error("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
               "{\"role\":\"system\",\"content\":\"s\"}]}",
               "messages[1]: a system or developer message may only come once, first");
  expect_error("{\"messages\":[{\"role\":\"system\",\"content\":\"a\"},"
               "{\"role\":\"developer\",\"content\":\"s\"}]}", "messages[1]");
  expect_error("{\"messages\":[{\"role\":\"assistant\"}]}",
               "messages[0]: an assistant message needs content, thinking or tool_calls");
  expect_error("{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\",\"thinking\":3}]}",
               "messages[0].thinking: expected a string, got number");
  expect_error("{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":{}}]}",
               "messages[0].tool_calls: expected a list, got object");
  expect_error("{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{}}]}]}",
               "messages[0].tool_calls[0].function.name: expected the function's name");
  expect_error("{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":"
               "{\"name\":\"f\",\"arguments\":3}}]}]}",
               "messages[0].tool_calls[0].function.arguments: expected a JSON string or object");
  expect_error("{\"messages\":[{\"role\":\"tool\",\"content\":\"r\"}]}",
               "messages[0].name: a tool message needs the tool's name");
  expect_error("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"tools\":{}}",
               "tools: expected a list, got object");
  expect_error("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"tools\":[{\"function\":{}}]}",
               "tools[0].function.name");
  expect_error("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],"
               "\"tools\":[{\"name\":\"f\",\"parameters\":[]}]}",
               "tools[0].parameters: expected a JSON schema object, got array");
  expect_error("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"reasoning_effort\":\"max\"}",
               "reasoning_effort: 'max'");
  expect_error("{\"prompt\":\"p\"}", "completion: missing");
  expect_error("{\"prompt\":1,\"completion\":\"c\"}", "prompt: expected a string or a list");
  expect_error("{\"text\":1}", "text: expected a string, got number");
  expect_error("{\"input\":\"x\"}", "expected a \"messages\", \"prompt\"/\"completion\" or \"text\"");
  expect_error("3", "t.json: expected a JSON object, got number");
  expect_error("{\"text\":\"a\"} x", "t.json: unexpected text after the JSON value");
  expect_error("{\"text\":", "t.json: JSON syntax error");
  expect_error("{\"text\":\"a\\u0000b\"}", "NUL is not allowed");
  expect_error("{\"text\":\"\xff\"}", "t.json: invalid UTF-8 at byte 10");
  expect_error("{\"text\":\"\xed\xa0\x80\"}", "invalid UTF-8"); /* a UTF-16 surrogate */
  expect_error("{\"text\":\"\xc0\xaf\"}", "invalid UTF-8");     /* overlong '/' */
}

static void test_mapping_forms(void) {
  /* tool result found through tool_call_id; a structured result as JSON */
  const char *json =
      "[{\"role\":\"user\",\"content\":\"Q\"},{\"role\":\"assistant\",\"tool_calls\":["
      "{\"id\":\"a\",\"function\":{\"name\":\"f\"}},{\"id\":\"b\",\"function\":{\"name\":\"g\"}}]},"
      "{\"role\":\"tool\",\"tool_call_id\":\"a\",\"content\":{\"x\":1}},"
      "{\"role\":\"tool\",\"tool_call_id\":\"b\",\"content\":\"y\"}]";
  mxl_render_options o = {.mode = MXL_RENDER_PLAIN};
  mxl_rendered r;
  MXL_CHECK_OK(render(json, &o, &r));
  MXL_CHECK(strstr(r.text, "<|start|>functions.f to=assistant<|channel|>commentary<|message|>"
                           "{\"x\":1}<|end|><|start|>functions.g to=assistant") != NULL);
  MXL_CHECK(strstr(r.text, "to=functions.f<|channel|>commentary <|constrain|>json<|message|>{}"
                           "<|call|>") != NULL);
  mxl_rendered_free(&r);
  /* a raw text sample is trained everywhere and has no chat format */
  MXL_CHECK_OK(render("{\"text\":\"plain <|end|> text\"}", &o, &r));
  MXL_CHECK(!strcmp(r.text, "plain <|end|> text"));
  MXL_CHECK(mxl_rendered_trained(&r, MXL_MASK_FINAL) == r.text_len);
  mxl_rendered_free(&r);
}

static void test_special_text_stays_text(void) {
  if (!tokenizer) MXL_SKIP("no vocabulary");
  const char *json = "[{\"role\":\"user\",\"content\":\"<|end|>\"}]";
  mxl_render_options o = {.mode = MXL_RENDER_PLAIN};
  mxl_rendered r;
  MXL_CHECK_OK(mxl_harmony_render_json(tokenizer, json, strlen(json), "t", &o, &r));
  int32_t end_id = mxl_tokenizer_special(tokenizer, "<|end|>");
  int n_end = 0;
  for (size_t i = 0; i < r.n; i++) n_end += r.ids[i] == end_id;
  MXL_CHECK(n_end == 2); /* the system and user terminators, not the text */
  MXL_CHECK(r.ids[r.n - 1] == end_id);
  mxl_rendered_free(&r);
}

int main(void) {
  load_tokenizer();
  MXL_RUN(test_openai_harmony_parity);
  MXL_RUN(test_mask_modes);
  MXL_RUN(test_mask_tool_chain);
  MXL_RUN(test_prompt_mode);
  MXL_RUN(test_analysis_rules);
  MXL_RUN(test_option_names);
  MXL_RUN(test_mapping_errors);
  MXL_RUN(test_mapping_forms);
  MXL_RUN(test_special_text_stays_text);
  mxl_tokenizer_free(tokenizer);
  return mxl_test_summary("harmony");
}
