// CPU stand-ins for exactly the cuDNN calls of kernels/cuda/cudnn_attention.cuh
// (the list in its namespace mxl_dnn), for the emulated CUDA backend: the
// backend's own graph-building code runs unchanged in the emulator tests,
// against a small interpreter of the finalized operation graph. Written
// from NVIDIA's documentation of the cuDNN 9 backend API (cudnn_graph.h and
// the Graph API / backend descriptor reference), not from our kernels:
//   - descriptors are created with a type, take attributes of the documented
//     attribute type (CUDNN_TYPE_*), and are finalized once; a missing
//     required attribute, a wrong attribute type, an attribute set after
//     finalize, or a descriptor-valued attribute that is not a finalized
//     descriptor of the expected kind is refused (CUDNN_STATUS_BAD_PARAM*);
//   - a tensor has a data type, dimensions and strides of the same count
//     (generalized packed or broadcast layouts: element (i0..in) is at
//     Σ i·stride), a unique id and a byte alignment; it is virtual (an
//     intermediate of the graph, never bound) or real (bound by the variant
//     pack to device memory), or by value (a host scalar, all dims 1);
//   - pointwise operations: y = f(x[, b][, t]); every input dimension equals
//     y's or is 1 (broadcast); comparisons and LOGICAL_AND give BOOLEAN;
//     BINARY_SELECT is y = t ? x : b; the math precision is the type the
//     arithmetic runs in;
//   - reductions: y has x's dims with 1 where x is reduced (ADD, MAX), or a
//     divisor of x's where groups of consecutive indices are reduced (how the
//     SDPA backward sums a KV head's query heads: dK, dV of grouped-query
//     attention);
//   - matmul: C[..., M, N] = A[..., M, K]·B[..., K, N], the computation type
//     fp32; batch dimensions of A or B equal C's or are 1 (broadcast), or,
//     as the SDPA documentation states for grouped-query attention, divide
//     C's: batch index c reads c / (C's extent / the operand's);
//   - an operation graph's tensors are identified by unique id: a virtual
//     tensor is produced by exactly one operation and consumed by one or
//     more, no cycles; operations run in dependency order;
//   - the heuristic returns finalized engine configurations, none for a
//     graph no engine supports: attention matmuls with a head dimension
//     that is not a multiple of 8 or above 256 (the SDPA support limits);
//   - execution binds every real tensor's unique id in the variant pack
//     (device pointers; by-value tensors: host pointers to the value), a
//     workspace at least as large as the plan's; an unbound or unknown id
//     is refused.
// Anything else is refused, so a new call or attribute shows up in the tests.
#include "kernels/cuda/emulator.h"  // first: MXL_CUDA_EMULATE

#include "tests/cuda/cudnn_standin.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "kernels/cuda/cudnn_attention.cuh"  // the declarations of namespace mxl_dnn

struct cudnnContext {
  uint64_t magic;
  cudaStream_t stream;
};

namespace {

constexpr uint64_t HANDLE_MAGIC = 0x444e4e48414e444cull, DESC_MAGIC = 0x444e4e4445534331ull;
constexpr int64_t WORKSPACE_BYTES = 256;  // what every plan of the stand-in asks for

std::string last_error;
bool offer_engines = true;
long heuristic_queries = 0, live = 0;

cudnnStatus_t refuse(cudnnStatus_t status, const std::string &why) {
  last_error = why;
  return status;
}

struct attr {
  cudnnBackendAttributeType_t type;
  int64_t count;
  std::vector<unsigned char> bytes;
};

struct desc {
  uint64_t magic;
  cudnnBackendDescriptorType_t type;
  bool final_;
  std::map<int, attr> attrs;
  // tensor
  cudnnDataType_t dtype;
  std::vector<int64_t> dims, strides;
  int64_t uid;
  bool virt, by_value;
  // pointwise / reduction / matmul descriptors
  int mode;
  cudnnDataType_t math;
  // operations: inputs x, b, t (matmul: a = x, b), output y; op descriptor
  desc *x, *b, *t, *y, *op_desc;
  // operation graph: operations in dependency order; engine config and
  // execution plan: the graph
  std::vector<desc *> ops;
  desc *graph;
  // variant pack
  std::map<int64_t, void *> bound;
  void *workspace;
};

desc *as_desc(cudnnBackendDescriptor_t d) {
  desc *p = static_cast<desc *>(d);
  return p && p->magic == DESC_MAGIC ? p : nullptr;
}

size_t type_size(cudnnBackendAttributeType_t t) {
  switch (t) {
    case CUDNN_TYPE_HANDLE: return sizeof(cudnnHandle_t);
    case CUDNN_TYPE_DATA_TYPE: return sizeof(cudnnDataType_t);
    case CUDNN_TYPE_BOOLEAN: return sizeof(bool);
    case CUDNN_TYPE_INT64: return sizeof(int64_t);
    case CUDNN_TYPE_VOID_PTR: return sizeof(void *);
    case CUDNN_TYPE_HEUR_MODE: return sizeof(cudnnBackendHeurMode_t);
    case CUDNN_TYPE_POINTWISE_MODE: return sizeof(cudnnPointwiseMode_t);
    case CUDNN_TYPE_BACKEND_DESCRIPTOR: return sizeof(cudnnBackendDescriptor_t);
    case CUDNN_TYPE_REDUCTION_OPERATOR_TYPE: return sizeof(cudnnReduceTensorOp_t);
    default: return 0;
  }
}

// The attributes the backend uses, per descriptor type, with their
// documented attribute type and at most how many values.
struct attr_rule {
  cudnnBackendDescriptorType_t desc_type;
  cudnnBackendAttributeName_t name;
  cudnnBackendAttributeType_t type;
  int64_t max_count;
};

const attr_rule rules[] = {
    {CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1},
    {CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 8},
    {CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 8},
    {CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1},
    {CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1},
    {CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1},
    {CUDNN_BACKEND_TENSOR_DESCRIPTOR, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1},
    {CUDNN_BACKEND_POINTWISE_DESCRIPTOR, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1},
    {CUDNN_BACKEND_POINTWISE_DESCRIPTOR, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1},
    {CUDNN_BACKEND_REDUCTION_DESCRIPTOR, CUDNN_ATTR_REDUCTION_OPERATOR,
     CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1},
    {CUDNN_BACKEND_REDUCTION_DESCRIPTOR, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1},
    {CUDNN_BACKEND_MATMUL_DESCRIPTOR, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1},
    {CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR,
     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1},
    {CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, CUDNN_ATTR_OPERATION_POINTWISE_XDESC,
     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1},
    {CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, CUDNN_ATTR_OPERATION_POINTWISE_BDESC,
     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1},
    {CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, CUDNN_ATTR_OPERATION_POINTWISE_TDESC,
     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1},
    {CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, CUDNN_ATTR_OPERATION_POINTWISE_YDESC,
     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1},
    {CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, CUDNN_ATTR_OPERATION_REDUCTION_XDESC,
     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1},
    {CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, CUDNN_ATTR_OPERATION_REDUCTION_YDESC,
     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1},
    {CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, CUDNN_ATTR_OPERATION_REDUCTION_DESC,
     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1},
    {CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, CUDNN_ATTR_OPERATION_MATMUL_ADESC,
     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1},
    {CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, CUDNN_ATTR_OPERATION_MATMUL_BDESC,
     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1},
    {CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, CUDNN_ATTR_OPERATION_MATMUL_CDESC,
     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1},
    {CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, CUDNN_ATTR_OPERATION_MATMUL_DESC,
     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1},
    {CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE,
     1},
    {CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, CUDNN_ATTR_OPERATIONGRAPH_OPS,
     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1 << 20},
    {CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1},
    {CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1},
    {CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE,
     1},
    {CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1},
    {CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64,
     1 << 20},
    {CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
     CUDNN_TYPE_VOID_PTR, 1 << 20},
    {CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
     CUDNN_TYPE_VOID_PTR, 1},
};

const attr *find(const desc *d, cudnnBackendAttributeName_t name) {
  auto it = d->attrs.find((int)name);
  return it == d->attrs.end() ? nullptr : &it->second;
}

template <class T>
T value(const attr *a, int64_t i = 0) {
  T v;
  std::memcpy(&v, a->bytes.data() + i * sizeof(T), sizeof(T));
  return v;
}

// The descriptor-valued attribute `name` of d: present, finalized, of
// type `want`; nullptr (with last_error) otherwise.
desc *linked(const desc *d, cudnnBackendAttributeName_t name, cudnnBackendDescriptorType_t want,
             const char *what, bool required = true) {
  const attr *a = find(d, name);
  if (!a) {
    if (required) last_error = std::string("missing required attribute: ") + what;
    return nullptr;
  }
  desc *l = as_desc(value<cudnnBackendDescriptor_t>(a));
  if (!l || l->type != want || !l->final_) {
    last_error = std::string(what) + ": not a finalized descriptor of the expected type";
    return nullptr;
  }
  return l;
}

// ------------------------------------------------------------ finalize

cudnnStatus_t finalize_tensor(desc *d) {
  const attr *type = find(d, CUDNN_ATTR_TENSOR_DATA_TYPE), *dims = find(d, CUDNN_ATTR_TENSOR_DIMENSIONS);
  const attr *strides = find(d, CUDNN_ATTR_TENSOR_STRIDES), *uid = find(d, CUDNN_ATTR_TENSOR_UNIQUE_ID);
  const attr *align = find(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT);
  if (!type || !dims || !strides || !uid || !align)
    return refuse(CUDNN_STATUS_BAD_PARAM,
                  "tensor: data type, dimensions, strides, unique id and byte alignment are "
                  "required");
  if (dims->count != strides->count)
    return refuse(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH,
                  "tensor " + std::to_string(value<int64_t>(uid)) + ": " +
                      std::to_string(dims->count) + " dimensions but " +
                      std::to_string(strides->count) + " strides");
  d->dtype = value<cudnnDataType_t>(type);
  if (d->dtype != CUDNN_DATA_FLOAT && d->dtype != CUDNN_DATA_BFLOAT16 &&
      d->dtype != CUDNN_DATA_INT32 && d->dtype != CUDNN_DATA_BOOLEAN)
    return refuse(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE, "tensor data type not in the stand-in");
  d->uid = value<int64_t>(uid);
  d->dims.clear();
  d->strides.clear();
  for (int64_t i = 0; i < dims->count; i++) {
    d->dims.push_back(value<int64_t>(dims, i));
    d->strides.push_back(value<int64_t>(strides, i));
    if (d->dims.back() < 1 || d->strides.back() < 0)
      return refuse(CUDNN_STATUS_BAD_PARAM, "tensor: a dimension below 1 or a negative stride");
  }
  const attr *v = find(d, CUDNN_ATTR_TENSOR_IS_VIRTUAL), *bv = find(d, CUDNN_ATTR_TENSOR_IS_BY_VALUE);
  d->virt = v && value<bool>(v);
  d->by_value = bv && value<bool>(bv);
  if (d->virt && d->by_value) return refuse(CUDNN_STATUS_BAD_PARAM, "tensor both virtual and by value");
  if (d->by_value)
    for (int64_t x : d->dims)
      if (x != 1) return refuse(CUDNN_STATUS_BAD_PARAM, "a by-value tensor must be a scalar");
  return CUDNN_STATUS_SUCCESS;
}

bool is_compare(int m) {
  return m == CUDNN_POINTWISE_CMP_EQ || m == CUDNN_POINTWISE_CMP_NEQ || m == CUDNN_POINTWISE_CMP_GT ||
         m == CUDNN_POINTWISE_CMP_GE || m == CUDNN_POINTWISE_CMP_LT || m == CUDNN_POINTWISE_CMP_LE ||
         m == CUDNN_POINTWISE_LOGICAL_AND;
}

bool is_unary(int m) { return m == CUDNN_POINTWISE_EXP || m == CUDNN_POINTWISE_LOG; }

bool is_binary(int m) {
  return is_compare(m) || m == CUDNN_POINTWISE_ADD || m == CUDNN_POINTWISE_SUB ||
         m == CUDNN_POINTWISE_MUL || m == CUDNN_POINTWISE_DIV || m == CUDNN_POINTWISE_MAX;
}

// Every dimension of `in` equals `out`'s or is 1, same rank.
bool broadcasts(const desc *in, const desc *out) {
  if (in->dims.size() != out->dims.size()) return false;
  for (size_t i = 0; i < in->dims.size(); i++)
    if (in->dims[i] != out->dims[i] && in->dims[i] != 1) return false;
  return true;
}

cudnnStatus_t finalize_pointwise_op(desc *d) {
  desc *pw = linked(d, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR,
                    CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "pointwise descriptor");
  desc *x = linked(d, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_BACKEND_TENSOR_DESCRIPTOR, "x");
  desc *y = linked(d, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_BACKEND_TENSOR_DESCRIPTOR, "y");
  if (!pw || !x || !y) return CUDNN_STATUS_BAD_PARAM;
  desc *b = linked(d, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_BACKEND_TENSOR_DESCRIPTOR, "b",
                   false);
  desc *t = linked(d, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_BACKEND_TENSOR_DESCRIPTOR, "t",
                   false);
  const int m = pw->mode;
  const bool select = m == CUDNN_POINTWISE_BINARY_SELECT;
  if ((is_binary(m) || select) && !b)
    return refuse(CUDNN_STATUS_BAD_PARAM, "a binary pointwise mode without its b input");
  if (is_unary(m) && b) return refuse(CUDNN_STATUS_BAD_PARAM, "a unary pointwise mode with b");
  if (select != (t != nullptr))
    return refuse(CUDNN_STATUS_BAD_PARAM, "t is the condition of BINARY_SELECT, and only of it");
  if (y->by_value) return refuse(CUDNN_STATUS_BAD_PARAM, "a pointwise output by value");
  for (desc *in : {x, b, t})
    if (in && !broadcasts(in, y))
      return refuse(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH,
                    "pointwise: input " + std::to_string(in->uid) +
                        " does not broadcast to output " + std::to_string(y->uid));
  if (is_compare(m) && y->dtype != CUDNN_DATA_BOOLEAN)
    return refuse(CUDNN_STATUS_BAD_PARAM, "a comparison's output must be BOOLEAN");
  if (select && t->dtype != CUDNN_DATA_BOOLEAN)
    return refuse(CUDNN_STATUS_BAD_PARAM, "BINARY_SELECT's condition must be BOOLEAN");
  d->op_desc = pw;
  d->x = x;
  d->b = b;
  d->t = t;
  d->y = y;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t finalize_reduction_op(desc *d) {
  desc *r = linked(d, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_BACKEND_REDUCTION_DESCRIPTOR,
                   "reduction descriptor");
  desc *x = linked(d, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_BACKEND_TENSOR_DESCRIPTOR, "x");
  desc *y = linked(d, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_BACKEND_TENSOR_DESCRIPTOR, "y");
  if (!r || !x || !y) return CUDNN_STATUS_BAD_PARAM;
  bool divides = x->dims.size() == y->dims.size();
  for (size_t i = 0; divides && i < x->dims.size(); i++) divides = x->dims[i] % y->dims[i] == 0;
  if (!divides)
    return refuse(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH,
                  "reduction: y's dims must divide x's (1: reduced whole; a divisor: reduced "
                  "in groups of consecutive indices)");
  d->op_desc = r;
  d->x = x;
  d->y = y;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t finalize_matmul_op(desc *d) {
  desc *m = linked(d, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_BACKEND_MATMUL_DESCRIPTOR,
                   "matmul descriptor");
  desc *a = linked(d, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_BACKEND_TENSOR_DESCRIPTOR, "a");
  desc *b = linked(d, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_BACKEND_TENSOR_DESCRIPTOR, "b");
  desc *c = linked(d, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_BACKEND_TENSOR_DESCRIPTOR, "c");
  if (!m || !a || !b || !c) return CUDNN_STATUS_BAD_PARAM;
  size_t n = c->dims.size();
  if (n < 3 || a->dims.size() != n || b->dims.size() != n)
    return refuse(CUDNN_STATUS_BAD_PARAM, "matmul: A, B, C of the same rank, at least 3");
  if (a->dims[n - 1] != b->dims[n - 2] || a->dims[n - 2] != c->dims[n - 2] ||
      b->dims[n - 1] != c->dims[n - 1])
    return refuse(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH,
                  "matmul: A [M, K], B [K, N], C [M, N] do not agree");
  for (size_t i = 0; i + 2 < n; i++)
    for (const desc *in : {a, b})
      if (c->dims[i] % in->dims[i] != 0)
        return refuse(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH,
                      "matmul: a batch dimension of A or B does not divide C's");
  if (m->math != CUDNN_DATA_FLOAT)
    return refuse(CUDNN_STATUS_NOT_SUPPORTED, "matmul: compute type other than FLOAT");
  d->op_desc = m;
  d->x = a;
  d->b = b;
  d->y = c;
  return CUDNN_STATUS_SUCCESS;
}

bool is_operation(const desc *d) {
  return d->type == CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR ||
         d->type == CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR ||
         d->type == CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR;
}

std::vector<desc *> inputs_of(const desc *op) {
  std::vector<desc *> in;
  for (desc *t : {op->x, op->b, op->t})
    if (t) in.push_back(t);
  return in;
}

// Orders the operations by dependency and checks the graph's tensors.
cudnnStatus_t finalize_graph(desc *g) {
  const attr *ops = find(g, CUDNN_ATTR_OPERATIONGRAPH_OPS);
  if (!ops || ops->count == 0)
    return refuse(CUDNN_STATUS_BAD_PARAM, "operation graph: no operations");
  std::vector<desc *> todo;
  std::map<int64_t, desc *> by_uid;
  std::map<int64_t, int> producers;
  for (int64_t i = 0; i < ops->count; i++) {
    desc *op = as_desc(value<cudnnBackendDescriptor_t>(ops, i));
    if (!op || !is_operation(op) || !op->final_)
      return refuse(CUDNN_STATUS_BAD_PARAM, "operation graph: an entry is not a finalized operation");
    todo.push_back(op);
    std::vector<desc *> all = inputs_of(op);
    all.push_back(op->y);
    for (desc *t : all) {
      auto it = by_uid.find(t->uid);
      if (it != by_uid.end() && it->second != t &&
          (it->second->dims != t->dims || it->second->strides != t->strides ||
           it->second->dtype != t->dtype || it->second->virt != t->virt))
        return refuse(CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES,
                      "operation graph: unique id " + std::to_string(t->uid) +
                          " names two different tensors");
      by_uid[t->uid] = t;
    }
    if (++producers[op->y->uid] > 1)
      return refuse(CUDNN_STATUS_BAD_PARAM,
                    "operation graph: tensor " + std::to_string(op->y->uid) + " produced twice");
  }
  std::set<int64_t> ready;
  for (auto &kv : by_uid)
    if (!producers.count(kv.first)) {
      if (kv.second->virt)
        return refuse(CUDNN_STATUS_BAD_PARAM, "operation graph: virtual tensor " +
                                                  std::to_string(kv.first) + " is never produced");
      ready.insert(kv.first);
    }
  std::set<int64_t> consumed;
  for (desc *op : todo)
    for (desc *t : inputs_of(op)) consumed.insert(t->uid);
  for (auto &kv : by_uid)
    if (kv.second->virt && !consumed.count(kv.first))
      return refuse(CUDNN_STATUS_BAD_PARAM, "operation graph: virtual tensor " +
                                                std::to_string(kv.first) + " is never used");
  g->ops.clear();
  while (!todo.empty()) {
    bool progress = false;
    for (size_t i = 0; i < todo.size(); i++) {
      bool can = true;
      for (desc *t : inputs_of(todo[i])) can = can && ready.count(t->uid);
      if (can) {
        g->ops.push_back(todo[i]);
        ready.insert(todo[i]->y->uid);
        todo.erase(todo.begin() + (long)i);
        progress = true;
        break;
      }
    }
    if (!progress) return refuse(CUDNN_STATUS_BAD_PARAM, "operation graph: a cycle");
  }
  return CUDNN_STATUS_SUCCESS;
}

// The SDPA support limits on the head dimension: the inner dimension of
// the graph's first matmul (Q·Kᵀ, the scores, in both directions).
bool engine_supports(const desc *g, std::string *why) {
  for (const desc *op : g->ops)
    if (op->type == CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR) {
      int64_t head = op->x->dims.back();
      if (head % 8 != 0 || head > 256) {
        *why = "head dimension " + std::to_string(head) + " (SDPA: a multiple of 8, at most 256)";
        return false;
      }
      return true;
    }
  return true;
}

cudnnStatus_t finalize(desc *d) {
  switch (d->type) {
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR:
      return finalize_tensor(d);
    case CUDNN_BACKEND_POINTWISE_DESCRIPTOR: {
      const attr *m = find(d, CUDNN_ATTR_POINTWISE_MODE), *p = find(d, CUDNN_ATTR_POINTWISE_MATH_PREC);
      if (!m || !p) return refuse(CUDNN_STATUS_BAD_PARAM, "pointwise: mode and math precision required");
      d->mode = (int)value<cudnnPointwiseMode_t>(m);
      d->math = value<cudnnDataType_t>(p);
      if (!is_binary(d->mode) && !is_unary(d->mode) && d->mode != CUDNN_POINTWISE_BINARY_SELECT)
        return refuse(CUDNN_STATUS_NOT_SUPPORTED, "pointwise mode not in the stand-in");
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_REDUCTION_DESCRIPTOR: {
      const attr *m = find(d, CUDNN_ATTR_REDUCTION_OPERATOR), *p = find(d, CUDNN_ATTR_REDUCTION_COMP_TYPE);
      if (!m || !p) return refuse(CUDNN_STATUS_BAD_PARAM, "reduction: operator and compute type required");
      d->mode = (int)value<cudnnReduceTensorOp_t>(m);
      d->math = value<cudnnDataType_t>(p);
      if (d->mode != CUDNN_REDUCE_TENSOR_ADD && d->mode != CUDNN_REDUCE_TENSOR_MAX)
        return refuse(CUDNN_STATUS_NOT_SUPPORTED, "reduction operator not in the stand-in");
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_MATMUL_DESCRIPTOR: {
      const attr *p = find(d, CUDNN_ATTR_MATMUL_COMP_TYPE);
      if (!p) return refuse(CUDNN_STATUS_BAD_PARAM, "matmul: compute type required");
      d->math = value<cudnnDataType_t>(p);
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR:
      return finalize_pointwise_op(d);
    case CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR:
      return finalize_reduction_op(d);
    case CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR:
      return finalize_matmul_op(d);
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR:
      return finalize_graph(d);
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR: {
      d->graph = linked(d, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                        CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "heuristic's operation graph");
      if (!d->graph) return CUDNN_STATUS_BAD_PARAM;
      if (!find(d, CUDNN_ATTR_ENGINEHEUR_MODE))
        return refuse(CUDNN_STATUS_BAD_PARAM, "missing required attribute: heuristic mode");
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR: {
      desc *cfg = linked(d, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                         CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine configuration");
      if (!cfg) return CUDNN_STATUS_BAD_PARAM;
      d->graph = cfg->graph;
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR: {
      const attr *ids = find(d, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS);
      const attr *ptrs = find(d, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS);
      const attr *ws = find(d, CUDNN_ATTR_VARIANT_PACK_WORKSPACE);
      if (!ids || !ptrs || !ws)
        return refuse(CUDNN_STATUS_BAD_PARAM, "variant pack: ids, pointers and workspace required");
      if (ids->count != ptrs->count)
        return refuse(CUDNN_STATUS_BAD_PARAM, "variant pack: as many pointers as ids");
      d->bound.clear();
      for (int64_t i = 0; i < ids->count; i++)
        if (!d->bound.emplace(value<int64_t>(ids, i), value<void *>(ptrs, i)).second)
          return refuse(CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES, "variant pack: an id twice");
      d->workspace = value<void *>(ws);
      return CUDNN_STATUS_SUCCESS;
    }
    default:
      return refuse(CUDNN_STATUS_NOT_SUPPORTED, "descriptor type not in the stand-in");
  }
}

// ------------------------------------------------------------ execution

float bf16_to_float(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (std::isnan(f)) return (uint16_t)((bits >> 16) | 0x40);
  bits += 0x7fff + ((bits >> 16) & 1);
  return (uint16_t)(bits >> 16);
}

// A value as its data type holds it.
double in_type(cudnnDataType_t t, double v) {
  switch (t) {
    case CUDNN_DATA_FLOAT: return (double)(float)v;
    case CUDNN_DATA_BFLOAT16: return (double)bf16_to_float(float_to_bf16((float)v));
    case CUDNN_DATA_INT32: return (double)(int32_t)v;
    default: return v != 0.0 ? 1.0 : 0.0;  // BOOLEAN
  }
}

size_t elements(const desc *t) {
  size_t n = 1;
  for (int64_t x : t->dims) n *= (size_t)x;
  return n;
}

// Dense row-major index -> the tensor's coordinates.
void coords(const desc *t, size_t i, int64_t *c) {
  for (size_t k = t->dims.size(); k-- > 0;) {
    c[k] = (int64_t)(i % (size_t)t->dims[k]);
    i /= (size_t)t->dims[k];
  }
}

// The dense index in `in` of output coordinates c (broadcast dims read 0;
// matmul batch dims that divide read c / ratio).
size_t index_in(const desc *in, const desc *out, const int64_t *c, size_t skip_last) {
  size_t i = 0;
  for (size_t k = 0; k < in->dims.size(); k++) {
    int64_t x = c[k];
    if (k + skip_last < in->dims.size()) x = x / (out->dims[k] / in->dims[k]);
    else if (in->dims[k] == 1) x = 0;
    i = i * (size_t)in->dims[k] + (size_t)x;
  }
  return i;
}

struct interpreter {
  std::map<int64_t, std::vector<double>> values;
  const desc *pack;

  size_t element_bytes(cudnnDataType_t t) {
    return t == CUDNN_DATA_BFLOAT16 ? 2 : t == CUDNN_DATA_BOOLEAN ? 1 : 4;
  }

  // Byte offset of dense element i of a real tensor (its strides).
  size_t offset(const desc *t, size_t i) {
    int64_t c[8];
    coords(t, i, c);
    int64_t at = 0;
    for (size_t k = 0; k < t->dims.size(); k++) at += c[k] * t->strides[k];
    return (size_t)at * element_bytes(t->dtype);
  }

  double load_one(const desc *t, const char *base, size_t i) {
    const char *p = base + offset(t, i);
    switch (t->dtype) {
      case CUDNN_DATA_FLOAT: { float f; std::memcpy(&f, p, 4); return f; }
      case CUDNN_DATA_BFLOAT16: { uint16_t h; std::memcpy(&h, p, 2); return bf16_to_float(h); }
      case CUDNN_DATA_INT32: { int32_t v; std::memcpy(&v, p, 4); return v; }
      default: return *p ? 1.0 : 0.0;
    }
  }

  const std::vector<double> &input(const desc *t) {
    auto it = values.find(t->uid);
    if (it != values.end()) return it->second;
    std::vector<double> &v = values[t->uid];
    const char *base = static_cast<const char *>(pack->bound.at(t->uid));
    v.resize(elements(t));
    for (size_t i = 0; i < v.size(); i++) v[i] = load_one(t, base, i);
    return v;
  }

  void store(const desc *t, std::vector<double> v) {
    for (double &x : v) x = in_type(t->dtype, x);
    if (!t->virt) {
      char *base = static_cast<char *>(pack->bound.at(t->uid));
      for (size_t i = 0; i < v.size(); i++) {
        char *p = base + offset(t, i);
        if (t->dtype == CUDNN_DATA_FLOAT) { float f = (float)v[i]; std::memcpy(p, &f, 4); }
        else if (t->dtype == CUDNN_DATA_BFLOAT16) { uint16_t h = float_to_bf16((float)v[i]); std::memcpy(p, &h, 2); }
        else if (t->dtype == CUDNN_DATA_INT32) { int32_t x = (int32_t)v[i]; std::memcpy(p, &x, 4); }
        else *p = v[i] != 0.0;
      }
    }
    values[t->uid] = std::move(v);
  }

  static double apply(int m, cudnnDataType_t math, double x, double b, double t) {
    if (math == CUDNN_DATA_FLOAT) {
      float fx = (float)x, fb = (float)b;
      switch (m) {
        case CUDNN_POINTWISE_ADD: return fx + fb;
        case CUDNN_POINTWISE_SUB: return fx - fb;
        case CUDNN_POINTWISE_MUL: return fx * fb;
        case CUDNN_POINTWISE_DIV: return fx / fb;
        case CUDNN_POINTWISE_MAX: return fx > fb ? fx : fb;
        case CUDNN_POINTWISE_EXP: return std::exp(fx);
        case CUDNN_POINTWISE_LOG: return std::log(fx);
        default: break;
      }
    } else if (math == CUDNN_DATA_INT32) {
      int64_t ix = (int64_t)x, ib = (int64_t)b;
      switch (m) {
        case CUDNN_POINTWISE_ADD: return (double)(int32_t)(ix + ib);
        case CUDNN_POINTWISE_SUB: return (double)(int32_t)(ix - ib);
        case CUDNN_POINTWISE_MUL: return (double)(int32_t)(ix * ib);
        case CUDNN_POINTWISE_MAX: return (double)(ix > ib ? ix : ib);
        default: break;
      }
    }
    switch (m) {  // comparisons, logic and selection: exact on the inputs
      case CUDNN_POINTWISE_CMP_EQ: return x == b;
      case CUDNN_POINTWISE_CMP_NEQ: return x != b;
      case CUDNN_POINTWISE_CMP_GT: return x > b;
      case CUDNN_POINTWISE_CMP_GE: return x >= b;
      case CUDNN_POINTWISE_CMP_LT: return x < b;
      case CUDNN_POINTWISE_CMP_LE: return x <= b;
      case CUDNN_POINTWISE_LOGICAL_AND: return x != 0.0 && b != 0.0;
      case CUDNN_POINTWISE_BINARY_SELECT: return t != 0.0 ? x : b;
      default: return NAN;  // an arithmetic mode in a math type the stand-in lacks
    }
  }

  void pointwise(const desc *op) {
    const desc *y = op->y;
    const std::vector<double> &x = input(op->x);
    const std::vector<double> *b = op->b ? &input(op->b) : nullptr;
    const std::vector<double> *t = op->t ? &input(op->t) : nullptr;
    std::vector<double> out(elements(y));
    int64_t c[8];
    for (size_t i = 0; i < out.size(); i++) {
      coords(y, i, c);
      double xv = x[index_in(op->x, y, c, 99)];
      double bv = b ? (*b)[index_in(op->b, y, c, 99)] : 0.0;
      double tv = t ? (*t)[index_in(op->t, y, c, 99)] : 0.0;
      out[i] = apply(op->op_desc->mode, op->op_desc->math, xv, bv, tv);
    }
    store(y, std::move(out));
  }

  void reduction(const desc *op) {
    const desc *x = op->x, *y = op->y;
    const std::vector<double> &in = input(x);
    const bool max = op->op_desc->mode == CUDNN_REDUCE_TENSOR_MAX;
    std::vector<double> out(elements(y), max ? -INFINITY : 0.0);
    int64_t c[8];
    for (size_t i = 0; i < in.size(); i++) {
      coords(x, i, c);
      size_t o = index_in(y, x, c, 0);  // group reduction: index / (X / Y)
      float acc = (float)out[o], v = (float)in[i];
      out[o] = max ? (v > acc ? v : acc) : acc + v;
    }
    store(y, std::move(out));
  }

  void matmul(const desc *op) {
    const desc *a = op->x, *b = op->b, *c = op->y;
    const std::vector<double> &av = input(a), &bv = input(b);
    size_t n = c->dims.size();
    const int64_t K = a->dims[n - 1];
    std::vector<double> out(elements(c));
    int64_t co[8], ca[8], cb[8];
    for (size_t i = 0; i < out.size(); i++) {
      coords(c, i, co);
      std::memcpy(ca, co, sizeof ca);
      std::memcpy(cb, co, sizeof cb);
      float acc = 0.0f;
      for (int64_t k = 0; k < K; k++) {
        ca[n - 1] = k;  // A [.., m, k]
        cb[n - 2] = k;  // B [.., k, n]
        acc = std::fma((float)av[index_in(a, c, ca, 2)], (float)bv[index_in(b, c, cb, 2)], acc);
      }
      out[i] = acc;
    }
    store(c, std::move(out));
  }
};

}  // namespace

extern "C" const char *mxl_cudnn_standin_last_error(void) { return last_error.c_str(); }
extern "C" void mxl_cudnn_standin_offer_engines(int yes) { offer_engines = yes != 0; }
extern "C" long mxl_cudnn_standin_heuristic_queries(void) { return heuristic_queries; }
extern "C" long mxl_cudnn_standin_live_descriptors(void) { return live; }

namespace mxl_dnn {

cudnnStatus_t cudnnCreate(cudnnHandle_t *handle) {
  if (!handle) return refuse(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnCreate: NULL");
  *handle = new cudnnContext{HANDLE_MAGIC, nullptr};
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
  if (!handle || handle->magic != HANDLE_MAGIC)
    return refuse(CUDNN_STATUS_BAD_PARAM, "cudnnDestroy: not a handle");
  handle->magic = 0;
  delete handle;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
  if (!handle || handle->magic != HANDLE_MAGIC)
    return refuse(CUDNN_STATUS_BAD_PARAM, "cudnnSetStream: not a handle");
  handle->stream = stream;
  return CUDNN_STATUS_SUCCESS;
}

size_t cudnnGetVersion(void) { return CUDNN_VERSION; }

const char *cudnnGetErrorString(cudnnStatus_t status) {
  switch (status) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_BAD_PARAM_NULL_POINTER: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
    case CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED: return "CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED";
    case CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH: return "CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH";
    case CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES: return "CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES";
    case CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE: return "CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE";
    case CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE: return "CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE";
    case CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT: return "CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE: return "CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    default: return "CUDNN_STATUS (other)";
  }
}

// The message of the last refusal, then cleared (as cuDNN's is).
void cudnnGetLastErrorString(char *message, size_t max_size) {
  if (!message || max_size == 0) return;
  std::snprintf(message, max_size, "%s", last_error.c_str());
  last_error.clear();
}

cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t type,
                                           cudnnBackendDescriptor_t *out) {
  if (!out) return refuse(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "create: NULL");
  desc *d = new desc();
  d->magic = DESC_MAGIC;
  d->type = type;
  live++;
  *out = d;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t handle) {
  desc *d = as_desc(handle);
  if (!d) return refuse(CUDNN_STATUS_BAD_PARAM, "destroy: not a descriptor");
  d->magic = 0;
  delete d;
  live--;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t handle,
                                       cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t count,
                                       const void *values) {
  desc *d = as_desc(handle);
  if (!d) return refuse(CUDNN_STATUS_BAD_PARAM, "set: not a descriptor");
  if (d->final_) return refuse(CUDNN_STATUS_BAD_PARAM, "set: the descriptor is finalized");
  const attr_rule *rule = nullptr;
  for (const attr_rule &r : rules)
    if (r.desc_type == d->type && r.name == name) rule = &r;
  if (!rule)
    return refuse(CUDNN_STATUS_NOT_SUPPORTED,
                  "set: attribute " + std::to_string((int)name) + " on descriptor type " +
                      std::to_string((int)d->type) + " not in the stand-in");
  if (type != rule->type)
    return refuse(CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE,
                  "set: attribute " + std::to_string((int)name) + " takes type " +
                      std::to_string((int)rule->type) + ", given " + std::to_string((int)type));
  if (count < 1 || count > rule->max_count || !values)
    return refuse(CUDNN_STATUS_BAD_PARAM, "set: element count out of range");
  if (type == CUDNN_TYPE_BACKEND_DESCRIPTOR)
    for (int64_t i = 0; i < count; i++) {
      desc *l = as_desc(static_cast<const cudnnBackendDescriptor_t *>(values)[i]);
      if (!l) return refuse(CUDNN_STATUS_BAD_PARAM, "set: a value is not a descriptor");
      if (!l->final_)
        return refuse(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, "set: a descriptor value is not finalized");
    }
  attr a{type, count, {}};
  const unsigned char *p = static_cast<const unsigned char *>(values);
  a.bytes.assign(p, p + count * (int64_t)type_size(type));
  d->attrs[(int)name] = std::move(a);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const handle,
                                       cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t requested,
                                       int64_t *count, void *values) {
  desc *d = as_desc(handle);
  if (!d || !count) return refuse(CUDNN_STATUS_BAD_PARAM, "get: not a descriptor, or count NULL");
  if (!d->final_) return refuse(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, "get: not finalized");
  if (d->type == CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR && name == CUDNN_ATTR_ENGINEHEUR_RESULTS) {
    if (type != CUDNN_TYPE_BACKEND_DESCRIPTOR)
      return refuse(CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE, "heuristic results are descriptors");
    heuristic_queries++;
    std::string why;
    *count = offer_engines && engine_supports(d->graph, &why) ? 1 : 0;
    if (!*count) last_error = why.empty() ? "no engine offered (test setting)" : why;
    if (*count > requested) *count = requested;
    for (int64_t i = 0; i < *count; i++) {
      desc *cfg = as_desc(static_cast<cudnnBackendDescriptor_t *>(values)[i]);
      if (!cfg || cfg->type != CUDNN_BACKEND_ENGINECFG_DESCRIPTOR || cfg->final_)
        return refuse(CUDNN_STATUS_BAD_PARAM, "heuristic results: pass created engine configurations");
      cfg->graph = d->graph;
      cfg->final_ = true;
    }
    return CUDNN_STATUS_SUCCESS;
  }
  if (d->type == CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR &&
      name == CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE) {
    if (type != CUDNN_TYPE_INT64 || requested < 1 || !values)
      return refuse(CUDNN_STATUS_BAD_PARAM, "workspace size: one INT64");
    *count = 1;
    *static_cast<int64_t *>(values) = WORKSPACE_BYTES;
    return CUDNN_STATUS_SUCCESS;
  }
  return refuse(CUDNN_STATUS_NOT_SUPPORTED, "get: attribute not in the stand-in");
}

cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t handle) {
  desc *d = as_desc(handle);
  if (!d) return refuse(CUDNN_STATUS_BAD_PARAM, "finalize: not a descriptor");
  if (d->final_) return refuse(CUDNN_STATUS_BAD_PARAM, "finalize: already finalized");
  cudnnStatus_t s = finalize(d);
  if (s == CUDNN_STATUS_SUCCESS) d->final_ = true;
  return s;
}

cudnnStatus_t cudnnBackendExecute(cudnnHandle_t handle, cudnnBackendDescriptor_t plan_handle,
                                  cudnnBackendDescriptor_t pack_handle) {
  if (!handle || handle->magic != HANDLE_MAGIC)
    return refuse(CUDNN_STATUS_BAD_PARAM, "execute: not a handle");
  desc *plan = as_desc(plan_handle), *pack = as_desc(pack_handle);
  if (!plan || plan->type != CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR || !plan->final_ || !pack ||
      pack->type != CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR || !pack->final_)
    return refuse(CUDNN_STATUS_BAD_PARAM, "execute: a finalized plan and variant pack");
  std::map<int64_t, const desc *> real;
  for (const desc *op : plan->graph->ops) {
    std::vector<desc *> all = inputs_of(op);
    all.push_back(op->y);
    for (const desc *t : all)
      if (!t->virt) real[t->uid] = t;
  }
  for (auto &kv : real)
    if (!pack->bound.count(kv.first) || !pack->bound.at(kv.first))
      return refuse(CUDNN_STATUS_BAD_PARAM,
                    "execute: tensor " + std::to_string(kv.first) + " is not bound");
  for (auto &kv : pack->bound)
    if (!real.count(kv.first))
      return refuse(CUDNN_STATUS_BAD_PARAM,
                    "execute: id " + std::to_string(kv.first) + " is no real tensor of the graph");
  if (!pack->workspace) return refuse(CUDNN_STATUS_BAD_PARAM, "execute: no workspace");
  // The graph reads and writes device memory, as the engine's kernels do.
  void (*access)(bool) = mxl_emu::settings().device_access;
  if (access) access(true);
  std::memset(pack->workspace, 0xA5, WORKSPACE_BYTES);
  interpreter run;
  run.pack = pack;
  for (const desc *op : plan->graph->ops) {
    if (op->type == CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR) run.pointwise(op);
    else if (op->type == CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR) run.reduction(op);
    else run.matmul(op);
  }
  if (access) access(false);
  return CUDNN_STATUS_SUCCESS;
}

}  // namespace mxl_dnn
