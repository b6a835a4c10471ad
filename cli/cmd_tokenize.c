/* mxlora tokenize: text to ids (JSON), ids to text, tokenizer conversion.
 *
 * Each mode is one function taking the loaded tokenizer and the input; a
 * new mode (e.g. rendering a chat) adds an option and a function. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli/cli.h"

MXL_DECLARE_COMMAND(tokenize);

const char mxl_cmd_tokenize_help[] = "encode text to token ids, or decode ids to text";

static const char usage_line[] =
    "--model DIR|FILE [--special] [--decode] [--chat FILE.json] [--export-hf DIR] [TEXT]\n\n"
    "Encodes TEXT (or standard input) and prints the ids as a JSON array. With\n"
    "--decode, reads ids (a JSON array or whitespace-separated) and prints the text.\n"
    "With --chat, renders a conversation (a sample object or a message array) in the\n"
    "harmony format and prints {\"text\", \"ids\", \"mask\", \"trained\"} as JSON.\n"
    "The model is a folder (tokenizer.json, *.tiktoken or metal/model.bin) or one\n"
    "such file.";

typedef struct tokenize_args {
  const char *model;
  const char *export_hf;
  const char *chat;      /* conversation file for --chat */
  const char *chat_mode; /* "train" or "prompt" */
  const char *mask;      /* loss mask mode for the printed mask */
  int special;
  int decode;
  const char *text; /* NULL: standard input */
} tokenize_args;

/* All of a stream (malloc'd, NUL-terminated). */
static char *read_stream(FILE *in, size_t *len) {
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap + 1);
  while (buf) {
    n += fread(buf + n, 1, cap - n, in);
    buf[n] = '\0';
    if (n < cap) break;
    char *grown = realloc(buf, cap * 2 + 1);
    if (!grown) {
      free(buf);
      return NULL;
    }
    buf = grown;
    cap *= 2;
  }
  if (buf && ferror(in)) {
    free(buf);
    return NULL;
  }
  *len = n;
  return buf;
}

/* The input: the positional TEXT, else all of standard input (malloc'd). */
static char *read_input(const tokenize_args *a, size_t *len) {
  if (a->text) {
    *len = strlen(a->text);
    return strdup(a->text);
  }
  return read_stream(stdin, len);
}

static void print_ids(const mxl_ids *ids) {
  fputc('[', stdout);
  for (size_t i = 0; i < ids->n; i++) printf(i ? ", %d" : "%d", (int)ids->data[i]);
  fputs("]\n", stdout);
}

static int run_encode(const mxl_tokenizer *tok, const tokenize_args *a) {
  size_t len = 0;
  char *text = read_input(a, &len);
  if (!text) {
    fprintf(stderr, "mxlora tokenize: cannot read the input: %s\n", strerror(errno));
    return 1;
  }
  mxl_ids ids = {0};
  mxl_status st = mxl_tokenizer_encode(tok, text, len, a->special, &ids);
  free(text);
  if (st != MXL_OK) return mxl_cli_fail("tokenize", st);
  print_ids(&ids);
  mxl_ids_free(&ids);
  return 0;
}

/* Parses "[1, 2, 3]" or "1 2 3"; returns 0 on success, else prints why. */
static int parse_ids(const char *s, mxl_ids *ids) {
  const char *p = s;
  while (*p) {
    if (strchr(" \t\r\n,[]", *p)) {
      p++;
      continue;
    }
    char *end = NULL;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (end == p || errno || v < 0 || v > INT32_MAX || (*end && !strchr(" \t\r\n,[]", *end))) {
      fprintf(stderr, "mxlora tokenize: --decode: not a token id at \"%.20s\"\n", p);
      return 1;
    }
    if (mxl_ids_push(ids, (int32_t)v) != MXL_OK) return mxl_cli_fail("tokenize", MXL_ERR_MEMORY);
    p = end;
  }
  return 0;
}

static int run_decode(const mxl_tokenizer *tok, const tokenize_args *a) {
  size_t len = 0;
  char *input = read_input(a, &len);
  if (!input) {
    fprintf(stderr, "mxlora tokenize: cannot read the input: %s\n", strerror(errno));
    return 1;
  }
  mxl_ids ids = {0};
  int rc = strlen(input) != len ? (fprintf(stderr, "mxlora tokenize: --decode: NUL in input\n"), 1)
                                : parse_ids(input, &ids);
  free(input);
  char *text = NULL;
  size_t n = 0;
  if (!rc) {
    mxl_status st = mxl_tokenizer_decode(tok, ids.data, ids.n, &text, &n);
    if (st != MXL_OK) rc = mxl_cli_fail("tokenize", st);
    else fwrite(text, 1, n, stdout);
  }
  free(text);
  mxl_ids_free(&ids);
  return rc;
}

static int run_export(const mxl_tokenizer *tok, const tokenize_args *a) {
  mxl_status st = mxl_tokenizer_save_hf(tok, a->export_hf);
  if (st != MXL_OK) return mxl_cli_fail("tokenize", st);
  fprintf(stderr, "mxlora tokenize: wrote the tokenizer files to %s\n", a->export_hf);
  return 0;
}

/* Renders a conversation file and prints its text, ids and loss mask. */
static int run_chat(const mxl_tokenizer *tok, const tokenize_args *a) {
  mxl_render_options o = {0};
  mxl_loss_mask mode = MXL_MASK_ASSISTANT;
  mxl_status st = MXL_OK;
  if (a->chat_mode && !strcmp(a->chat_mode, "prompt"))
    o.mode = MXL_RENDER_PROMPT;
  else if (a->chat_mode && strcmp(a->chat_mode, "train"))
    {
    fprintf(stderr, "mxlora tokenize: --chat-mode '%s': expected train or prompt\n", a->chat_mode);
    return 2;
  }
  if (st == MXL_OK && a->mask) st = mxl_loss_mask_parse(a->mask, &mode);
  char *json = NULL;
  size_t len = 0;
  FILE *fp = st == MXL_OK ? fopen(a->chat, "rb") : NULL;
  if (st == MXL_OK && !fp) {
    fprintf(stderr, "mxlora tokenize: %s: %s\n", a->chat, strerror(errno));
    return 1;
  }
  if (fp) {
    json = read_stream(fp, &len);
    fclose(fp);
  }
  mxl_rendered r = {0};
  if (st == MXL_OK) st = mxl_harmony_render_json(tok, json, len, a->chat, &o, &r);
  free(json);
  if (st != MXL_OK) return mxl_cli_fail("tokenize", st);
  cJSON *out = cJSON_CreateObject();
  cJSON_AddStringToObject(out, "text", r.text);
  cJSON *ids = cJSON_AddArrayToObject(out, "ids"), *mask = cJSON_AddArrayToObject(out, "mask");
  for (size_t i = 0; i < r.n; i++) {
    cJSON_AddItemToArray(ids, cJSON_CreateNumber(r.ids[i]));
    cJSON_AddItemToArray(mask, cJSON_CreateNumber((r.flags[i] & MXL_MASK_BIT(mode)) ? 1 : 0));
  }
  cJSON_AddNumberToObject(out, "trained", (double)mxl_rendered_trained(&r, mode));
  char *text = cJSON_PrintUnformatted(out);
  if (text) printf("%s\n", text);
  free(text);
  cJSON_Delete(out);
  mxl_rendered_free(&r);
  return 0;
}

int mxl_cmd_tokenize(int argc, char **argv) {
  tokenize_args a = {0};
  const mxl_opt opts[] = {
      {"--model", MXL_OPT_STRING, &a.model, "DIR|FILE: model folder or tokenizer file"},
      {"--special", MXL_OPT_FLAG, &a.special, "recognise special tokens (<|start|>) in text"},
      {"--decode", MXL_OPT_FLAG, &a.decode, "read ids, print text"},
      {"--export-hf", MXL_OPT_STRING, &a.export_hf,
       "DIR: write tokenizer.json + configs for this tokenizer"},
      {"--chat", MXL_OPT_STRING, &a.chat, "FILE.json: render a conversation in harmony"},
      {"--chat-mode", MXL_OPT_STRING, &a.chat_mode, "train|prompt: training render (default) or "
       "generation prompt"},
      {"--mask", MXL_OPT_STRING, &a.mask, "assistant|last-turn|final|all: the mask printed"},
  };
  const char *pos[1];
  int npos = 0;
  int rc = mxl_cli_parse(argc, argv, usage_line, opts, (int)(sizeof opts / sizeof opts[0]), pos,
                         1, &npos);
  if (rc) return rc == 1 ? 0 : 2;
  if (!a.model) {
    fprintf(stderr, "mxlora tokenize: --model is required (see mxlora tokenize --help)\n");
    return 2;
  }
  a.text = npos ? pos[0] : NULL;
  mxl_tokenizer *tok = NULL;
  mxl_status st = mxl_tokenizer_load(a.model, &tok);
  if (st != MXL_OK) return mxl_cli_fail("tokenize", st);
  rc = a.export_hf ? run_export(tok, &a)
       : a.chat    ? run_chat(tok, &a)
       : a.decode  ? run_decode(tok, &a)
                   : run_encode(tok, &a);
  mxl_tokenizer_free(tok);
  return rc;
}
