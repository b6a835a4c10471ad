/* Harmony chat rendering (docs/gpt-oss.md §7): the conversation model, the mapping
 * from dataset JSON to it, and the renderer with per-token loss flags.
 *
 * Rendering happens in two steps so that the format can be checked without
 * a tokenizer: the renderer writes a list of pieces, each either one
 * structural (special) token or one text piece, into a byte string with
 * special tokens spelled by name and a parallel per-byte flag array; then
 * mxl_harmony_tokenize encodes each text piece on its own with ordinary
 * encoding (special-token strings inside text stay text) and looks the
 * structural tokens up by name, which is how openai-harmony renders. */
#ifndef MXL_DATASETS_HARMONY_H
#define MXL_DATASETS_HARMONY_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "datasets/tokenizer.h"
#include "mxlora/data.h"

typedef enum mxl_role {
  MXL_ROLE_SYSTEM = 0,
  MXL_ROLE_DEVELOPER,
  MXL_ROLE_USER,
  MXL_ROLE_ASSISTANT,
  MXL_ROLE_TOOL,
} mxl_role;

const char *mxl_role_name(mxl_role role);

/* One harmony message. Strings are owned (malloc'd) or NULL. */
typedef struct mxl_hmsg {
  mxl_role role;
  char *name;         /* author name; a tool message's tool ("functions.f") */
  char *recipient;    /* "functions.f", "assistant"; NULL for none */
  char *channel;      /* "analysis", "commentary", "final"; NULL for none */
  char *content_type; /* "<|constrain|>json", "json"; NULL for none */
  char *content;      /* text, never NULL */
  int src;            /* index of the dataset message it came from */
  int from_tool_call; /* part of a dataset message that has tool_calls */
} mxl_hmsg;

/* A function tool, rendered in the developer message. */
typedef struct mxl_htool {
  char *name;
  char *description; /* never NULL */
  cJSON *parameters; /* JSON schema (owned), or NULL */
} mxl_htool;

typedef struct mxl_conversation {
  mxl_effort effort;  /* the sample's reasoning_effort; DEFAULT if absent */
  char *instructions; /* developer instructions, or NULL */
  mxl_htool *tools;
  int n_tools;
  mxl_hmsg *msgs;
  int n_msgs, cap_msgs;
  int n_src;          /* dataset messages read */
} mxl_conversation;

void mxl_conversation_free(mxl_conversation *c);
/* Appends a message (strings copied; content NULL is taken as ""). */
mxl_status mxl_conversation_add(mxl_conversation *c, mxl_role role, const char *name,
                                const char *recipient, const char *channel,
                                const char *content_type, const char *content, int src);

/* What a JSON sample object holds. */
typedef enum mxl_json_sample {
  MXL_JSON_CHAT,
  MXL_JSON_TEXT,
} mxl_json_sample;

/* Reads one sample object (or a bare array of messages). For chat samples
 * fills *conv; for {"text"} sets *text to the string inside `item` (owned
 * by the cJSON tree). `where` prefixes errors ("data.jsonl:12"). */
mxl_status mxl_sample_from_json(const cJSON *item, const char *where, mxl_json_sample *kind,
                                mxl_conversation *conv, const char **text);

/* A rendered conversation before tokenization. */
typedef struct mxl_hpiece {
  size_t off, len;   /* bytes in the text */
  int special;       /* 1: one structural token spelled by name */
  uint8_t flags;     /* MXL_MASK_BIT flags */
} mxl_hpiece;

typedef struct mxl_hrender {
  char *text;
  uint8_t *text_flags;
  size_t len, cap;
  mxl_hpiece *pieces;
  size_t n_pieces, cap_pieces;
} mxl_hrender;

void mxl_hrender_free(mxl_hrender *r);

/* Renders the conversation. */
mxl_status mxl_harmony_render(const mxl_conversation *conv, const mxl_render_options *opts,
                              mxl_hrender *out);

/* Encodes the pieces, appending to ids; *flags (capacity *flags_cap,
 * grown with realloc) gets one entry per id, so it always holds ids->n. */
mxl_status mxl_harmony_tokenize(const mxl_tokenizer *tok, const mxl_hrender *r, mxl_ids *ids,
                                uint8_t **flags, size_t *flags_cap);

/* The TypeScript-like text harmony uses for a JSON schema (exposed for
 * tests). Returns a malloc'd string or NULL when out of memory. */
char *mxl_harmony_schema_text(const cJSON *schema, const char *indent);

#endif
