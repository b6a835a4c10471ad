/* The scheduler's lists of sequences (infer/sched_internal.h): small
 * ordered arrays; the queue keeps submission order. */
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "infer/sched_internal.h"

mxl_status mxl_seq_list_insert(mxl_seq_list *l, int at, mxl_seq *q) {
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 16;
    mxl_seq **grown = realloc(l->items, (size_t)cap * sizeof *grown);
    if (!grown) return mxl_errorf(MXL_ERR_MEMORY, "scheduler: out of memory");
    l->items = grown;
    l->cap = cap;
  }
  memmove(l->items + at + 1, l->items + at, (size_t)(l->n - at) * sizeof *l->items);
  l->items[at] = q;
  l->n++;
  return MXL_OK;
}

mxl_status mxl_seq_list_push(mxl_seq_list *l, mxl_seq *q) { return mxl_seq_list_insert(l, l->n, q); }

void mxl_seq_list_remove(mxl_seq_list *l, const mxl_seq *q) {
  for (int i = 0; i < l->n; i++)
    if (l->items[i] == q) {
      memmove(l->items + i, l->items + i + 1, (size_t)(l->n - i - 1) * sizeof *l->items);
      l->n--;
      return;
    }
}

mxl_seq *mxl_seq_list_find(const mxl_seq_list *l, uint64_t id) {
  for (int i = 0; i < l->n; i++)
    if (l->items[i]->id == id) return l->items[i];
  return NULL;
}

void mxl_seq_list_free(mxl_seq_list *l) {
  free(l->items);
  memset(l, 0, sizeof *l);
}
