/* Public API: harmony rendering with loss masks, dataset loaders, packing
 * into batches, a resumable data cursor, and dataset statistics.
 *
 * The pipeline: a file of samples (JSONL or a JSON array) is parsed line by
 * line, each sample is rendered in the harmony chat format (docs/gpt-oss.md §7) and
 * tokenized, and every token gets a set of flags saying which loss-mask
 * modes train it. A batcher then packs documents into fixed-length rows.
 *
 * Loss masks (what is trained; "trained" means the token is a target whose
 * prediction is in the loss):
 *   MXL_MASK_ASSISTANT (default): every token of every assistant message,
 *     header through terminator inclusive, except the `<|start|>assistant`
 *     that opens a run of consecutive assistant messages (the prompt gives
 *     it: generation prompts end with `<|start|>assistant`). Inside a run the
 *     model itself emits `<|start|>assistant` between messages, so those
 *     are trained.
 *   MXL_MASK_LAST_TURN: as above, but only the assistant messages after the
 *     last user message (the reply to it, tool calls included).
 *   MXL_MASK_FINAL: only assistant messages on the `final` channel, from
 *     `<|channel|>` through the terminator (`<|return|>` / `<|end|>`).
 *   MXL_MASK_ALL: every token, the system prompt included.
 * Raw {"text"} samples are trained on every token in every mode.
 *
 * Previous-turn analysis (docs/gpt-oss.md §7.4), mxl_analysis_rule:
 *   MXL_ANALYSIS_EARLIER_TURNS (default): analysis messages before the last
 *     user message are dropped; the last turn keeps its chain of thought
 *     (including the analysis before tool calls), which is what the model
 *     produces and sees when it answers that turn.
 *   MXL_ANALYSIS_HARMONY: openai-harmony's auto_drop_analysis=True: if the
 *     last assistant message is on `final`, every analysis message before the
 *     first `final` message is dropped. Note: this drops the target turn's
 *     own chain of thought in a single-turn sample (the gotcha of docs/gpt-oss.md §7.3).
 *   MXL_ANALYSIS_HF: the Hugging Face chat template: the thinking of an
 *     assistant message is kept only for the last message, or for a message
 *     with tool calls that no later final answer follows.
 *   MXL_ANALYSIS_KEEP: nothing dropped (auto_drop_analysis=False).
 *
 * Sample formats (one JSON object per JSONL line, or a JSON array of them):
 *   {"messages": [...]}  roles system, developer, user, assistant, tool.
 *     A leading system or developer message becomes the developer
 *     instructions (as in the gpt-oss HF template); the harmony system
 *     message is generated from mxl_render_options. Assistant messages take
 *     "content", "thinking" (analysis channel; null allowed) and
 *     "tool_calls" ([{"function": {"name", "arguments"}}], arguments a JSON
 *     string or object). Tool messages take "content" and "name" (defaults
 *     to the last call's name). Any message may set the harmony header
 *     fields "channel", "recipient", "content_type" and "name" directly.
 *     Optional top-level "tools" ([{"type":"function","function":{name,
 *     description, parameters}}] or the inner objects) and
 *     "reasoning_effort" ("low"/"medium"/"high").
 *   {"prompt": P, "completion": C}  strings (user / assistant final) or
 *     message lists.
 *   {"text": T}  raw text, no chat format.
 */
#ifndef MXLORA_DATA_H
#define MXLORA_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "mxlora.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mxl_tokenizer mxl_tokenizer; /* see mxlora/tokenizer.h */

/* ------------------------------------------------------------------ options */

typedef enum mxl_loss_mask {
  MXL_MASK_ASSISTANT = 0,
  MXL_MASK_LAST_TURN,
  MXL_MASK_FINAL,
  MXL_MASK_ALL,
  MXL_MASK_COUNT
} mxl_loss_mask;

/* The flag bit a token carries when `mode` trains it. */
#define MXL_MASK_BIT(mode) ((uint8_t)(1u << (mode)))

typedef enum mxl_analysis_rule {
  MXL_ANALYSIS_EARLIER_TURNS = 0,
  MXL_ANALYSIS_HARMONY,
  MXL_ANALYSIS_HF,
  MXL_ANALYSIS_KEEP,
} mxl_analysis_rule;

typedef enum mxl_effort {
  MXL_EFFORT_DEFAULT = 0, /* the sample's "reasoning_effort", else medium */
  MXL_EFFORT_LOW,
  MXL_EFFORT_MEDIUM,
  MXL_EFFORT_HIGH,
} mxl_effort;

typedef enum mxl_render_mode {
  MXL_RENDER_TRAIN = 0, /* a last `final` assistant message ends in <|return|> */
  MXL_RENDER_PROMPT,    /* generation prompt: history, then <|start|>assistant */
  MXL_RENDER_PLAIN,     /* every message ends as stored (<|end|> / <|call|>) */
} mxl_render_mode;

/* Zero-initialised options are the defaults. */
typedef struct mxl_render_options {
  const char *model_identity;   /* NULL: "You are ChatGPT, a large language model
                                   trained by OpenAI." */
  const char *knowledge_cutoff; /* NULL: "2024-06" */
  const char *date;             /* NULL: no "Current date:" line; else YYYY-MM-DD */
  mxl_effort effort;            /* overrides the sample's reasoning_effort */
  mxl_analysis_rule analysis;
  mxl_render_mode mode;
} mxl_render_options;

/* Names used on the command line and in configs; parse functions fail with
 * a message listing the valid names. */
const char *mxl_loss_mask_name(mxl_loss_mask mode); /* "assistant", "last-turn", "final", "all" */
mxl_status mxl_loss_mask_parse(const char *name, mxl_loss_mask *out);
const char *mxl_analysis_rule_name(mxl_analysis_rule rule); /* "earlier-turns", "harmony", "hf", "keep" */
mxl_status mxl_analysis_rule_parse(const char *name, mxl_analysis_rule *out);
mxl_status mxl_effort_parse(const char *name, mxl_effort *out); /* "low", "medium", "high" */

/* ------------------------------------------------------------------ rendering */

/* One rendered conversation. `text` is the rendered string with special
 * tokens written by name; text_flags gives each byte's mask flags. ids and
 * flags are the tokens (NULL when rendered without a tokenizer). */
typedef struct mxl_rendered {
  char *text;          /* [text_len] + NUL */
  uint8_t *text_flags; /* [text_len] MXL_MASK_BIT flags per byte */
  size_t text_len;
  int32_t *ids;        /* [n] token ids */
  uint8_t *flags;      /* [n] MXL_MASK_BIT flags per token */
  size_t n;
} mxl_rendered;

/* Renders one sample given as JSON text: a sample object (any format
 * above), or a bare array of messages. `source` names it in errors
 * ("chat.json"). With tok == NULL only the text is produced. Structural
 * tokens are emitted by id and each text piece is encoded separately
 * without special-token parsing, exactly as openai-harmony does. */
mxl_status mxl_harmony_render_json(const mxl_tokenizer *tok, const char *json, size_t len,
                                   const char *source, const mxl_render_options *opts,
                                   mxl_rendered *out);
void mxl_rendered_free(mxl_rendered *r);
/* Tokens (or bytes, without ids) that `mode` trains. */
size_t mxl_rendered_trained(const mxl_rendered *r, mxl_loss_mask mode);

/* ------------------------------------------------------------------ datasets */

typedef enum mxl_bad_line {
  MXL_BAD_LINE_ERROR = 0, /* the first bad sample fails the load */
  MXL_BAD_LINE_SKIP,      /* bad samples are counted and skipped */
} mxl_bad_line;

/* Called now and then while loading: bytes read so far of `total`. */
typedef void (*mxl_data_progress)(void *user, uint64_t done, uint64_t total);

typedef struct mxl_data_options {
  mxl_render_options render;
  mxl_bad_line on_bad_line;
  /* JSONL is streamed line by line; a longer line is a bad line (0: 64 MiB). */
  size_t max_line_bytes;
  /* A JSON array is read whole: larger files are refused (0: 256 MiB). */
  size_t max_array_bytes;
  mxl_data_progress progress;
  void *progress_user;
} mxl_data_options;

/* A tokenized dataset: each sample is a document of ids and flags. */
typedef struct mxl_dataset mxl_dataset;

typedef enum mxl_sample_kind { MXL_SAMPLE_CHAT = 0, MXL_SAMPLE_TEXT } mxl_sample_kind;

typedef struct mxl_sample_view {
  const int32_t *ids;   /* [n] */
  const uint8_t *flags; /* [n] MXL_MASK_BIT flags */
  size_t n;
  int64_t line;         /* 1-based line (JSONL) or element (JSON array) */
  mxl_sample_kind kind;
} mxl_sample_view;

/* Loads a .jsonl or .json file (detected by the first non-blank byte: '['
 * is a JSON array, '{' JSONL). Errors name "file:line: field: problem".
 * Invalid UTF-8 is an error at its line. */
mxl_status mxl_dataset_load(const char *path, const mxl_tokenizer *tok,
                            const mxl_data_options *opts, mxl_dataset **out);
void mxl_dataset_destroy(mxl_dataset *ds);
size_t mxl_dataset_size(const mxl_dataset *ds);
mxl_status mxl_dataset_sample(const mxl_dataset *ds, size_t i, mxl_sample_view *out);
/* Bad samples skipped under MXL_BAD_LINE_SKIP, and the first one's error. */
size_t mxl_dataset_skipped(const mxl_dataset *ds);
const char *mxl_dataset_first_skip(const mxl_dataset *ds); /* "" if none */

/* Splits into train and eval parts: eval_count samples if non-zero, else
 * round(eval_fraction * size), chosen by a permutation seeded with `seed`
 * (the same seed and data always give the same split; both parts keep file
 * order). The parts share the parent's storage and outlive it. */
mxl_status mxl_dataset_split(const mxl_dataset *ds, double eval_fraction, size_t eval_count,
                             uint64_t seed, mxl_dataset **train_out, mxl_dataset **eval_out);

/* ------------------------------------------------------------------ statistics */

enum { MXL_STATS_BINS = 16 }; /* length bins: <=16, <=32, ..., <=2^19, more */

typedef struct mxl_data_stats {
  size_t samples, chat_samples, text_samples, skipped;
  size_t tokens, min_len, max_len, median_len, p95_len;
  double mean_len;
  size_t bin_upper[MXL_STATS_BINS]; /* inclusive upper bound; last is SIZE_MAX */
  size_t bin_count[MXL_STATS_BINS];
  size_t trained[MXL_MASK_COUNT];   /* trained tokens per mask mode */
  size_t untrained_samples[MXL_MASK_COUNT]; /* samples with nothing trained */
  size_t seq_len;                   /* as passed (0: not checked) */
  size_t over_seq_len;              /* samples longer than seq_len */
  size_t over_seq_len_tokens;       /* tokens beyond seq_len in those samples */
} mxl_data_stats;

mxl_status mxl_dataset_stats(const mxl_dataset *ds, size_t seq_len, mxl_data_stats *out);

/* A sample as runs of decoded text that share one trained/untrained state
 * under `mode`, for display. */
typedef struct mxl_text_run {
  char *text; /* [len] + NUL */
  size_t len;
  int trained;
} mxl_text_run;

mxl_status mxl_dataset_show(const mxl_dataset *ds, const mxl_tokenizer *tok, size_t i,
                            mxl_loss_mask mode, mxl_text_run **runs_out, size_t *n_out);
void mxl_text_runs_free(mxl_text_run *runs, size_t n);

/* ------------------------------------------------------------------ batching */

typedef enum mxl_truncation {
  MXL_TRUNCATE_DROP = 0, /* documents longer than seq_len are dropped */
  MXL_TRUNCATE_CUT,      /* they keep their first seq_len tokens */
} mxl_truncation;

typedef struct mxl_batch_options {
  int seq_len;    /* T: tokens per row */
  int rows;       /* B: rows per batch */
  int pack;       /* 1: several whole documents per row; 0: one per row */
  mxl_truncation truncation;
  mxl_loss_mask mask;
  int shuffle;    /* shuffle documents each epoch (seeded) */
  uint64_t seed;
  int group_by_length; /* within windows of 64*B shuffled documents, longest first */
  int loop;       /* 1: endless epochs (training); 0: one pass (evaluation) */
  int32_t pad_id; /* id written into padding (its weight is 0 either way) */
  /* Data-parallel training: the batcher builds global batches of
   * n_shards·rows rows (exactly the batches of one process with that many
   * rows) and returns rows [shard·rows, (shard+1)·rows) of each. Every
   * rank builds the same global batches, so the cursor is the same on all
   * of them and does not depend on the world size. n_shards 0 or 1: whole
   * batches. */
  int shard, n_shards;
} mxl_batch_options;

/* One batch, B rows of T tokens. For each document in a row, positions
 * restart at 0 and the document gets a segment id unique in the batch
 * (padding: position 0, segment -1), ready for mxl_attn_mask. The label of
 * a token is the next token of its document; the last token of a document
 * has label -1 and weight 0 (nothing is predicted across a boundary). The
 * weight is 1 where the label is a trained token under the mask mode. */
typedef struct mxl_batch {
  int rows, seq_len;
  int32_t *ids;    /* [B, T] */
  int32_t *labels; /* [B, T] next-token id, -1 for none */
  float *weights;  /* [B, T] loss weight of each label, 0 or 1 */
  int32_t *pos;    /* [B, T] position within the document */
  int32_t *seg;    /* [B, T] document id within the batch, -1 for padding */
  int rows_used;   /* rows holding at least one document */
  size_t docs;     /* documents in the batch */
  size_t trained;  /* labels with weight > 0 */
  uint64_t epoch;  /* epoch of the batch's first document */
} mxl_batch;

/* Where the batcher is: the next document is order(epoch)[index]. The
 * per-epoch order is a function of the seed and the epoch; rng is the
 * state the epoch's shuffle starts from and fingerprint identifies the
 * documents and options, both checked on restore. */
typedef struct mxl_data_cursor {
  uint64_t seed, epoch, index, rng, fingerprint;
} mxl_data_cursor;

typedef struct mxl_batcher mxl_batcher;

typedef struct mxl_batcher_counts {
  size_t docs;            /* documents the batcher serves */
  size_t dropped_long;    /* longer than seq_len, dropped */
  size_t truncated;       /* longer than seq_len, cut */
  size_t dropped_untrained; /* no trained token under the mask (after cutting) */
} mxl_batcher_counts;

/* Fails if no document is left to serve. The dataset must outlive it. */
mxl_status mxl_batcher_create(const mxl_dataset *ds, const mxl_batch_options *opts,
                              mxl_batcher **out);
void mxl_batcher_destroy(mxl_batcher *b);
mxl_batcher_counts mxl_batcher_get_counts(const mxl_batcher *b);
/* Builds the next batch (owned by the batcher, valid until the next call).
 * With loop = 0, the call after the last document was served sets
 * *done = 1 and *batch_out = NULL (the last real batch may use fewer
 * rows); with loop = 1 epochs follow one another without end. */
mxl_status mxl_batcher_next(mxl_batcher *b, const mxl_batch **batch_out, int *done);
mxl_data_cursor mxl_batcher_cursor(const mxl_batcher *b);
/* Continues from a saved cursor: the batches that follow are exactly those
 * the saving run would have produced. Fails (MXL_ERR_STATE) if the cursor
 * belongs to other data or options. */
mxl_status mxl_batcher_seek(mxl_batcher *b, const mxl_data_cursor *c);

/* Cursor as one line of text ("mxl-cursor 1 seed=... epoch=... index=...
 * rng=... fp=..."), for checkpoints; buf needs MXL_CURSOR_TEXT_MAX bytes. */
enum { MXL_CURSOR_TEXT_MAX = 160 };
void mxl_data_cursor_format(const mxl_data_cursor *c, char *buf, size_t cap);
mxl_status mxl_data_cursor_parse(const char *text, mxl_data_cursor *out);

#ifdef __cplusplus
}
#endif

#endif
