/* Attention (ops.h `attention`, `attention_bwd`) through cuDNN's graph API: the
 * cuDNN 9 backend descriptors (cudnnBackendCreateDescriptor / SetAttribute /
 * Finalize / Execute), no frontend. Written once for the device build and
 * the CPU emulator build: every library call goes through namespace
 * mxl_dnn, which is cuDNN itself on the device and, under MXL_CUDA_EMULATE,
 * the CPU interpreter of tests/cuda/cudnn_standin.cpp (NVIDIA's documented
 * semantics of each descriptor and operation, written from the
 * documentation, not from our kernels), so the argument mapping of every
 * call runs in the emulator tests. The list below is exactly the set of
 * calls the backend makes.
 *
 * Forward: the operation graph, one per shape (nq, nk, nh, nkv, d, window),
 * in the form cuDNN's runtime-fusion attention engines take: two matmuls
 * around a pointwise/reduction softmax, fp32 intermediates (virtual
 * tensors), bf16 Q, K, V and O, fp32 Stats. With b = 1 and the op's
 * row-major [n, heads, d] buffers described by strides, no copy of layout:
 *   Q [1, nh, nq, d]   strides (-, d, nh·d, 1)        bf16 copy of q
 *   Kᵀ[1, nkv, d, nk]  strides (-, d, 1, nkv·d)       bf16 copy of k
 *   V [1, nkv, nk, d]  strides (-, d, nkv·d, 1)       bf16 copy of v
 *   O [1, nh, nq, d]   strides (-, d, nh·d, 1)        bf16, then out (fp32)
 *   S  = matmul(Q, Kᵀ) [1, nh, nq, nk]: GQA is the matmul's batch
 *        broadcast, query head h reads KV head h / (nh/nkv), as the SDPA
 *        documentation states for h_q a multiple of h_k;
 *   S1 = S · scale                       (by-value fp32 scalar)
 *   the mask of ops.h from the op's own position and segment arrays,
 *        int32 tensors qpos, qseg [1, 1, nq, 1] and kpos, kseg
 *        [1, 1, 1, nk] broadcast by the pointwise ops:
 *          ok = (qseg == kseg) AND (qpos >= kpos)
 *               [AND (qpos − kpos) < window]     (by-value int32 scalar)
 *        S2 = select(S1, −inf, ok)     (BINARY_SELECT: ok ? S1 : −inf)
 *   softmax with the sink, as the frontend composes it before cuDNN 9.21:
 *        M  = max(rowmax(S2), sink_h)  sink fp32 [1, nh, 1, 1]
 *        E  = exp(S2 − M)
 *        Z  = rowsum(E) + exp(sink_h − M)
 *        Stats = M + log Z             [1, nh, nq, 1] fp32 = ops.h's lse
 *        P  = E / Z
 *   O  = matmul(P, V).
 * A row with no allowed key gets M = sink_h, Z = 1, O = 0 and Stats =
 * sink_h, as the reference (kernels/ref/ref_attention.h).
 *
 * Backward, as the frontend composes the SDPA backward: the same masked
 * scores S2 from Q and Kᵀ, then with the forward's Stats (which hold the
 * sink, so the sink needs no operand: it is frozen and gets no gradient)
 *   P   = exp(S2 − Stats)
 *   dVᵀ = matmul(dOᵀ, P)            [1, nh, d, nk], then for GQA a group
 *         reduction [1, nh, ...] → [1, nkv, ...] (query heads h of KV head
 *         h / (nh/nkv) summed), written through strides into dv's layout;
 *   D   = rowsum(dO ∘ O)            [1, nh, nq, 1]
 *   dS  = scale · P ∘ (matmul(dO, Vᵀ) − D)
 *   dKᵀ = matmul(Qᵀ, dS) (grouped as dV), dQ = matmul(dS, K).
 * Transposed operands are the same buffers under a second unique id with
 * exchanged strides (Qᵀ, dOᵀ, K beside Kᵀ); dQ, dKᵀ, dVᵀ are fp32 scratch,
 * then added into the op's "+=" gradients.
 *
 * Why the mask compares positions instead of generating indices
 * (GEN_INDEX row/column, as the frontend's causal and sliding-window masks
 * do): ops.h's mask is per token — packed documents restart positions in
 * one sequence, and the KV cache of a sliding layer is a ring whose slots
 * are not in position order — so index arithmetic is right only for one
 * unpacked sequence in order. Comparing the op's arrays is exact for every
 * caller; whether an engine of the installed cuDNN fuses these per-row and
 * per-column int32 operands is what the run-time support check asks.
 *
 * Which configurations go where (the run-time check has the last word):
 *   cuDNN        a sequence attending to itself (nq == nk), forward and
 *                backward, where the plan finalizes: training (packed
 *                documents, causal, window 128 on alternate layers, GQA
 *                64/8 at d = 64) and a prompt's first prefill chunk;
 *   own kernels  (ops_attention.cuh)
 *                - queries against a KV cache holding earlier tokens
 *                  (nq != nk: decode, later prefill chunks), by policy:
 *                  nk changes with every step, and each new shape costs a
 *                  plan (a heuristic query, finalize, possibly a runtime
 *                  compilation of the fused kernel) that one decode step
 *                  cannot repay, and would churn the plan cache. The graph
 *                  itself is exact for them (the mask operands describe the
 *                  ring and its empty slots; the tests run it there with
 *                  any_shape set), so a GPU measurement can lift this;
 *                - shapes the library refuses: the heuristic returns no
 *                  engine, or no engine configuration's plan finalizes
 *                  (e.g. a head dim that is not a multiple of 8, above
 *                  256, or an engine that does not take the mask operands);
 *                  asked once per shape, the answer remembered;
 *                - a backend whose cuDNN handle could not be created, or
 *                  MXL_CUDNN_ATTENTION=0 in the environment.
 *
 * Costs around the library call: q, k, v (and out, dout) converted to bf16
 * in scratch, O back to fp32, Stats transposed between cuDNN's [nh, nq]
 * and lse [nq, nh], the backward's fp32 gradients added; the plan's
 * workspace is one growable device buffer per backend. */
#ifndef MXL_KERNELS_CUDA_CUDNN_ATTENTION_CUH
#define MXL_KERNELS_CUDA_CUDNN_ATTENTION_CUH

#include <cudnn_graph.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/blas.cuh" /* bf16 conversions */
#include "kernels/cuda/runtime.cuh"

#ifdef MXL_CUDA_EMULATE
namespace mxl_dnn {
cudnnStatus_t cudnnCreate(cudnnHandle_t *handle);
cudnnStatus_t cudnnDestroy(cudnnHandle_t handle);
cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream);
size_t cudnnGetVersion(void);
const char *cudnnGetErrorString(cudnnStatus_t status);
void cudnnGetLastErrorString(char *message, size_t max_size);
cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t type,
                                           cudnnBackendDescriptor_t *desc);
cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t desc);
cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t desc,
                                       cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t count,
                                       const void *values);
cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const desc,
                                       cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t requested,
                                       int64_t *count, void *values);
cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t desc);
cudnnStatus_t cudnnBackendExecute(cudnnHandle_t handle, cudnnBackendDescriptor_t plan,
                                  cudnnBackendDescriptor_t variant_pack);
}  // namespace mxl_dnn
#else
namespace mxl_dnn {
using ::cudnnBackendCreateDescriptor;
using ::cudnnBackendDestroyDescriptor;
using ::cudnnBackendExecute;
using ::cudnnBackendFinalize;
using ::cudnnBackendGetAttribute;
using ::cudnnBackendSetAttribute;
using ::cudnnCreate;
using ::cudnnDestroy;
using ::cudnnGetErrorString;
using ::cudnnGetLastErrorString;
using ::cudnnGetVersion;
using ::cudnnSetStream;
}  // namespace mxl_dnn
#endif

enum {
  MXL_DNN_PLANS = 32,     /* cached shapes per backend (each layer kind, prefill, decode) */
  MXL_DNN_DESCS = 128,    /* descriptors one plan is built from (about 95) */
  MXL_DNN_ENGINE_CFGS = 8 /* engine configurations asked of the heuristic */
};

/* Planted mistakes (tests only: the emulator tests check that the
 * stand-in exposes each; the device build never sets one). */
enum mxl_dnn_plant {
  MXL_DNN_PLANT_NONE = 0,
  MXL_DNN_PLANT_KV_STRIDES = 1,   /* Kᵀ's head and sequence strides exchanged */
  MXL_DNN_PLANT_GQA_GROUP = 2,    /* K and V declared with one head: every query head reads 0 */
  MXL_DNN_PLANT_STRIDE_COUNT = 3, /* Q's strides one entry short of its dims */
  MXL_DNN_PLANT_NO_MATMUL_DESC = 4, /* Q·Kᵀ without its matmul descriptor */
  MXL_DNN_PLANT_WINDOW = 5,       /* the window compared with <= instead of < */
  MXL_DNN_PLANT_NO_SINK = 6,      /* exp(sink − M) left out of the denominator */
  MXL_DNN_PLANT_BWD_NO_SCALE = 7, /* backward: dS not multiplied by the scale */
};

/* Tensor unique ids of the graph: the real ones the variant pack binds,
 * then the virtual intermediates. */
enum mxl_dnn_uid {
  MXL_DNN_QPOS = 1, MXL_DNN_QSEG, MXL_DNN_KPOS, MXL_DNN_KSEG, /* both graphs */
  MXL_DNN_SCALE, MXL_DNN_NEG_INF, MXL_DNN_WINDOW,
  MXL_DNN_Q, MXL_DNN_KT, MXL_DNN_STATS, MXL_DNN_O,
  MXL_DNN_V, MXL_DNN_SINK,                            /* forward */
  MXL_DNN_QT, MXL_DNN_K, MXL_DNN_VT, MXL_DNN_DO, MXL_DNN_DOT,
  MXL_DNN_DQ, MXL_DNN_DKT, MXL_DNN_DVT,               /* backward */
  MXL_DNN_VIRTUAL = 100
};

/* What identifies a plan. */
struct mxl_dnn_key {
  int32_t backward, nq, nk, nh, nkv, d, windowed, plant;
};

struct mxl_dnn_plan {
  mxl_dnn_key key;
  int usable; /* 0: cuDNN refused the shape (own kernels), remembered */
  cudnnBackendDescriptor_t plan;
  int64_t workspace;
  cudnnBackendDescriptor_t descs[MXL_DNN_DESCS]; /* what the plan was built from */
  int n_descs;
};

/* The cuDNN state of one backend. */
struct mxl_dnn_state {
  cudnnHandle_t handle;
  mxl_dnn_plan plans[MXL_DNN_PLANS];
  int n_plans, next_victim;
  void *workspace;
  size_t workspace_bytes;
  long long executed, fell_back; /* calls run by cuDNN / given to the own kernels */
  long long kv_calls;            /* of fell_back: nq != nk, by policy (file comment) */
  char refusal[320];             /* why the last refused shape was refused */
  int plant;                     /* mxl_dnn_plant (tests) */
  int any_shape;                 /* tests: nq != nk through cuDNN too */
};

/* ---------------------------------------------------------------- building */

/* Creates, sets and finalizes descriptors into a plan's list; after the
 * first failure every call is a no-op and `why` names the failing step. */
struct mxl_dnn_builder {
  mxl_dnn_plan *p;
  cudnnStatus_t status;
  const char *step;

  bool ok() const { return status == CUDNN_STATUS_SUCCESS; }

  bool check(cudnnStatus_t s, const char *what) {
    if (ok() && s != CUDNN_STATUS_SUCCESS) {
      status = s;
      step = what;
    }
    return ok();
  }

  cudnnBackendDescriptor_t make(cudnnBackendDescriptorType_t type, const char *what) {
    cudnnBackendDescriptor_t d = NULL;
    if (!ok()) return NULL;
    if (p->n_descs == MXL_DNN_DESCS) {
      check(CUDNN_STATUS_INTERNAL_ERROR, "too many descriptors for one plan");
      return NULL;
    }
    if (!check(mxl_dnn::cudnnBackendCreateDescriptor(type, &d), what)) return NULL;
    p->descs[p->n_descs++] = d;
    return d;
  }

  void set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
           cudnnBackendAttributeType_t type, int64_t count, const void *values,
           const char *what) {
    if (ok()) check(mxl_dnn::cudnnBackendSetAttribute(d, name, type, count, values), what);
  }

  void set_desc(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                cudnnBackendDescriptor_t value, const char *what) {
    set(d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value, what);
  }

  void finalize(cudnnBackendDescriptor_t d, const char *what) {
    if (ok()) check(mxl_dnn::cudnnBackendFinalize(d), what);
  }

  /* A 4-d tensor; `virt`: an intermediate of the graph, `by_value`: a
   * host scalar passed in the variant pack. */
  cudnnBackendDescriptor_t tensor(int64_t uid, cudnnDataType_t type, const int64_t dims[4],
                                  const int64_t strides[4], bool virt, bool by_value,
                                  int n_strides = 4) {
    cudnnBackendDescriptor_t t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR, "tensor descriptor");
    const int64_t alignment = 16;
    set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "tensor data type");
    set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims, "tensor dimensions");
    set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, n_strides, strides, "tensor strides");
    set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor unique id");
    set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment,
        "tensor alignment");
    if (virt) set(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt, "virtual");
    if (by_value) set(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value,
                      "by value");
    finalize(t, "tensor finalize");
    return t;
  }

  /* A virtual tensor of `dims`, packed row-major. */
  cudnnBackendDescriptor_t inter(int64_t *next_uid, cudnnDataType_t type, int64_t d0,
                                 int64_t d1, int64_t d2, int64_t d3) {
    const int64_t dims[4] = {d0, d1, d2, d3};
    const int64_t strides[4] = {d1 * d2 * d3, d2 * d3, d3, 1};
    return tensor((*next_uid)++, type, dims, strides, true, false);
  }

  /* A by-value scalar [1, 1, 1, 1]. */
  cudnnBackendDescriptor_t scalar(int64_t uid, cudnnDataType_t type) {
    const int64_t one[4] = {1, 1, 1, 1};
    return tensor(uid, type, one, one, false, true);
  }

  /* y = mode(x[, b][, t]) in `math` precision. */
  cudnnBackendDescriptor_t pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t math,
                                     cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b,
                                     cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t pw = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "pointwise");
    set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
    set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math, "pointwise math");
    finalize(pw, "pointwise finalize");
    cudnnBackendDescriptor_t op =
        make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, "pointwise operation");
    set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw, "pointwise descriptor");
    set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x, "pointwise x");
    if (b) set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b, "pointwise b");
    if (t) set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t, "pointwise t");
    set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y, "pointwise y");
    finalize(op, "pointwise operation finalize");
    return op;
  }

  /* y = reduction of x over the dims where y has extent 1. */
  cudnnBackendDescriptor_t reduction(cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x,
                                     cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t r = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, "reduction");
    const cudnnDataType_t math = CUDNN_DATA_FLOAT;
    set(r, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode,
        "reduction operator");
    set(r, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &math, "reduction math");
    finalize(r, "reduction finalize");
    cudnnBackendDescriptor_t op =
        make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, "reduction operation");
    set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x, "reduction x");
    set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y, "reduction y");
    set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, r, "reduction descriptor");
    finalize(op, "reduction operation finalize");
    return op;
  }

  /* c = a·b over the last two dims, batch dims broadcast. */
  cudnnBackendDescriptor_t matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b,
                                  cudnnBackendDescriptor_t c, bool with_desc = true) {
    cudnnBackendDescriptor_t m = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR, "matmul");
    const cudnnDataType_t math = CUDNN_DATA_FLOAT;
    set(m, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &math, "matmul compute type");
    finalize(m, "matmul finalize");
    cudnnBackendDescriptor_t op =
        make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, "matmul operation");
    set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a, "matmul a");
    set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, b, "matmul b");
    set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c, "matmul c");
    if (with_desc) set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, m, "matmul descriptor");
    finalize(op, "matmul operation finalize");
    return op;
  }
};

/* The op's row-major buffers as cuDNN tensors (file comment): dims and
 * strides of one graph, with the planted mistakes of the tests. */
struct mxl_dnn_layout {
  int64_t nq, nk, nh, nkv, d, kv_heads;
  int64_t q_dims[4], q_strides[4];   /* Q, O, dO, dQ: [1, nh, nq, d] */
  int64_t qt_dims[4], qt_strides[4]; /* Qᵀ, dOᵀ: [1, nh, d, nq] */
  int64_t kt_dims[4], kt_strides[4]; /* Kᵀ, Vᵀ, dKᵀ, dVᵀ: [1, nkv, d, nk] */
  int64_t kv_dims[4], kv_strides[4]; /* K, V: [1, nkv, nk, d] */

  explicit mxl_dnn_layout(const mxl_dnn_key &k)
      : nq(k.nq), nk(k.nk), nh(k.nh), nkv(k.nkv), d(k.d),
        kv_heads(k.plant == MXL_DNN_PLANT_GQA_GROUP ? 1 : k.nkv) {
    const int64_t qs = nq * nh * d, ks = nk * nkv * d;
    set(q_dims, q_strides, nh, nq, d, qs, d, nh * d, 1);
    set(qt_dims, qt_strides, nh, d, nq, qs, d, 1, nh * d);
    set(kt_dims, kt_strides, kv_heads, d, nk, ks, d, 1, nkv * d);
    set(kv_dims, kv_strides, kv_heads, nk, d, ks, d, nkv * d, 1);
    if (k.plant == MXL_DNN_PLANT_KV_STRIDES) { /* as if k were [nkv, nk, d] */
      kt_strides[1] = nk * d;
      kt_strides[3] = d;
    }
  }

  static void set(int64_t *dims, int64_t *strides, int64_t d1, int64_t d2, int64_t d3,
                  int64_t s0, int64_t s1, int64_t s2, int64_t s3) {
    dims[0] = 1, dims[1] = d1, dims[2] = d2, dims[3] = d3;
    strides[0] = s0, strides[1] = s1, strides[2] = s2, strides[3] = s3;
  }
};

/* A graph under construction: the builder, its operations and the next
 * virtual tensor id. */
struct mxl_dnn_graph {
  mxl_dnn_builder &b;
  const mxl_dnn_key &k;
  cudnnBackendDescriptor_t *ops;
  int n;
  int64_t uid;

  cudnnBackendDescriptor_t real(int64_t id, cudnnDataType_t type, const int64_t *dims,
                                const int64_t *strides, int n_strides = 4) {
    return b.tensor(id, type, dims, strides, false, false, n_strides);
  }
  cudnnBackendDescriptor_t inter(cudnnDataType_t type, int64_t d1, int64_t d2, int64_t d3) {
    return b.inter(&uid, type, 1, d1, d2, d3);
  }
  void add(cudnnBackendDescriptor_t op) { ops[n++] = op; }
};

/* The scaled, masked scores S2 [1, nh, nq, nk] of Q·Kᵀ (file comment). */
static inline cudnnBackendDescriptor_t mxl_dnn_masked_scores(mxl_dnn_graph &g,
                                                             const mxl_dnn_layout &L,
                                                             cudnnBackendDescriptor_t Q,
                                                             cudnnBackendDescriptor_t Kt,
                                                             cudnnBackendDescriptor_t scale) {
  mxl_dnn_builder &b = g.b;
  const cudnnDataType_t F = CUDNN_DATA_FLOAT, I = CUDNN_DATA_INT32, B = CUDNN_DATA_BOOLEAN;
  const int64_t nq = L.nq, nk = L.nk, nh = L.nh;
  const int64_t row_dims[4] = {1, 1, nq, 1}, row_strides[4] = {nq, nq, 1, 1};
  const int64_t col_dims[4] = {1, 1, 1, nk}, col_strides[4] = {nk, nk, nk, 1};
  cudnnBackendDescriptor_t qpos = g.real(MXL_DNN_QPOS, I, row_dims, row_strides);
  cudnnBackendDescriptor_t qseg = g.real(MXL_DNN_QSEG, I, row_dims, row_strides);
  cudnnBackendDescriptor_t kpos = g.real(MXL_DNN_KPOS, I, col_dims, col_strides);
  cudnnBackendDescriptor_t kseg = g.real(MXL_DNN_KSEG, I, col_dims, col_strides);
  cudnnBackendDescriptor_t neg_inf = b.scalar(MXL_DNN_NEG_INF, F);

  cudnnBackendDescriptor_t S = g.inter(F, nh, nq, nk);
  g.add(b.matmul(Q, Kt, S, g.k.plant != MXL_DNN_PLANT_NO_MATMUL_DESC));
  cudnnBackendDescriptor_t S1 = g.inter(F, nh, nq, nk);
  g.add(b.pointwise(CUDNN_POINTWISE_MUL, F, S, scale, NULL, S1));

  cudnnBackendDescriptor_t same = g.inter(B, 1, nq, nk);
  g.add(b.pointwise(CUDNN_POINTWISE_CMP_EQ, B, qseg, kseg, NULL, same));
  cudnnBackendDescriptor_t causal = g.inter(B, 1, nq, nk);
  g.add(b.pointwise(CUDNN_POINTWISE_CMP_GE, B, qpos, kpos, NULL, causal));
  cudnnBackendDescriptor_t ok = g.inter(B, 1, nq, nk);
  g.add(b.pointwise(CUDNN_POINTWISE_LOGICAL_AND, B, same, causal, NULL, ok));
  if (g.k.windowed) {
    cudnnBackendDescriptor_t window = b.scalar(MXL_DNN_WINDOW, I);
    cudnnBackendDescriptor_t dist = g.inter(I, 1, nq, nk);
    g.add(b.pointwise(CUDNN_POINTWISE_SUB, I, qpos, kpos, NULL, dist));
    cudnnBackendDescriptor_t near = g.inter(B, 1, nq, nk);
    const cudnnPointwiseMode_t below =
        g.k.plant == MXL_DNN_PLANT_WINDOW ? CUDNN_POINTWISE_CMP_LE : CUDNN_POINTWISE_CMP_LT;
    g.add(b.pointwise(below, B, dist, window, NULL, near));
    cudnnBackendDescriptor_t both = g.inter(B, 1, nq, nk);
    g.add(b.pointwise(CUDNN_POINTWISE_LOGICAL_AND, B, ok, near, NULL, both));
    ok = both;
  }
  cudnnBackendDescriptor_t S2 = g.inter(F, nh, nq, nk);
  g.add(b.pointwise(CUDNN_POINTWISE_BINARY_SELECT, F, S1, neg_inf, ok, S2));
  return S2;
}

/* The forward graph (file comment) into g. */
static inline void mxl_dnn_forward_graph(mxl_dnn_graph &g) {
  mxl_dnn_builder &b = g.b;
  const mxl_dnn_layout L(g.k);
  const cudnnDataType_t F = CUDNN_DATA_FLOAT, BF = CUDNN_DATA_BFLOAT16;
  const int64_t nq = L.nq, nk = L.nk, nh = L.nh;
  const int64_t sink_dims[4] = {1, nh, 1, 1}, sink_strides[4] = {nh, 1, 1, 1};
  const int64_t stats_dims[4] = {1, nh, nq, 1}, stats_strides[4] = {nh * nq, nq, 1, 1};

  cudnnBackendDescriptor_t Q = g.real(MXL_DNN_Q, BF, L.q_dims, L.q_strides,
                                      g.k.plant == MXL_DNN_PLANT_STRIDE_COUNT ? 3 : 4);
  cudnnBackendDescriptor_t Kt = g.real(MXL_DNN_KT, BF, L.kt_dims, L.kt_strides);
  cudnnBackendDescriptor_t V = g.real(MXL_DNN_V, BF, L.kv_dims, L.kv_strides);
  cudnnBackendDescriptor_t O = g.real(MXL_DNN_O, BF, L.q_dims, L.q_strides);
  cudnnBackendDescriptor_t stats = g.real(MXL_DNN_STATS, F, stats_dims, stats_strides);
  cudnnBackendDescriptor_t sink = g.real(MXL_DNN_SINK, F, sink_dims, sink_strides);
  cudnnBackendDescriptor_t scale = b.scalar(MXL_DNN_SCALE, F);
  cudnnBackendDescriptor_t S2 = mxl_dnn_masked_scores(g, L, Q, Kt, scale);

  /* softmax with the sink */
  cudnnBackendDescriptor_t row_max = g.inter(F, nh, nq, 1);
  g.add(b.reduction(CUDNN_REDUCE_TENSOR_MAX, S2, row_max));
  cudnnBackendDescriptor_t M = g.inter(F, nh, nq, 1);
  g.add(b.pointwise(CUDNN_POINTWISE_MAX, F, row_max, sink, NULL, M));
  cudnnBackendDescriptor_t shifted = g.inter(F, nh, nq, nk);
  g.add(b.pointwise(CUDNN_POINTWISE_SUB, F, S2, M, NULL, shifted));
  cudnnBackendDescriptor_t E = g.inter(F, nh, nq, nk);
  g.add(b.pointwise(CUDNN_POINTWISE_EXP, F, shifted, NULL, NULL, E));
  cudnnBackendDescriptor_t row_sum = g.inter(F, nh, nq, 1);
  g.add(b.reduction(CUDNN_REDUCE_TENSOR_ADD, E, row_sum));
  cudnnBackendDescriptor_t Z = row_sum;
  if (g.k.plant != MXL_DNN_PLANT_NO_SINK) {
    cudnnBackendDescriptor_t sink_shifted = g.inter(F, nh, nq, 1);
    g.add(b.pointwise(CUDNN_POINTWISE_SUB, F, sink, M, NULL, sink_shifted));
    cudnnBackendDescriptor_t sink_exp = g.inter(F, nh, nq, 1);
    g.add(b.pointwise(CUDNN_POINTWISE_EXP, F, sink_shifted, NULL, NULL, sink_exp));
    Z = g.inter(F, nh, nq, 1);
    g.add(b.pointwise(CUDNN_POINTWISE_ADD, F, row_sum, sink_exp, NULL, Z));
  }
  cudnnBackendDescriptor_t log_z = g.inter(F, nh, nq, 1);
  g.add(b.pointwise(CUDNN_POINTWISE_LOG, F, Z, NULL, NULL, log_z));
  g.add(b.pointwise(CUDNN_POINTWISE_ADD, F, M, log_z, NULL, stats));
  cudnnBackendDescriptor_t P = g.inter(F, nh, nq, nk);
  g.add(b.pointwise(CUDNN_POINTWISE_DIV, F, E, Z, NULL, P));
  g.add(b.matmul(P, V, O));
}

/* The backward graph (file comment, "Backward") into g. */
static inline void mxl_dnn_backward_graph(mxl_dnn_graph &g) {
  mxl_dnn_builder &b = g.b;
  const mxl_dnn_layout L(g.k);
  const cudnnDataType_t F = CUDNN_DATA_FLOAT, BF = CUDNN_DATA_BFLOAT16;
  const int64_t nq = L.nq, nk = L.nk, nh = L.nh, d = L.d;
  const int64_t stats_dims[4] = {1, nh, nq, 1}, stats_strides[4] = {nh * nq, nq, 1, 1};
  const bool grouped = nh != L.kv_heads;

  cudnnBackendDescriptor_t Q = g.real(MXL_DNN_Q, BF, L.q_dims, L.q_strides);
  cudnnBackendDescriptor_t Qt = g.real(MXL_DNN_QT, BF, L.qt_dims, L.qt_strides);
  cudnnBackendDescriptor_t Kt = g.real(MXL_DNN_KT, BF, L.kt_dims, L.kt_strides);
  cudnnBackendDescriptor_t K = g.real(MXL_DNN_K, BF, L.kv_dims, L.kv_strides);
  cudnnBackendDescriptor_t Vt = g.real(MXL_DNN_VT, BF, L.kt_dims, L.kt_strides);
  cudnnBackendDescriptor_t O = g.real(MXL_DNN_O, BF, L.q_dims, L.q_strides);
  cudnnBackendDescriptor_t dO = g.real(MXL_DNN_DO, BF, L.q_dims, L.q_strides);
  cudnnBackendDescriptor_t dOt = g.real(MXL_DNN_DOT, BF, L.qt_dims, L.qt_strides);
  cudnnBackendDescriptor_t stats = g.real(MXL_DNN_STATS, F, stats_dims, stats_strides);
  cudnnBackendDescriptor_t dQ = g.real(MXL_DNN_DQ, F, L.q_dims, L.q_strides);
  cudnnBackendDescriptor_t dKt = g.real(MXL_DNN_DKT, F, L.kt_dims, L.kt_strides);
  cudnnBackendDescriptor_t dVt = g.real(MXL_DNN_DVT, F, L.kt_dims, L.kt_strides);
  cudnnBackendDescriptor_t scale = b.scalar(MXL_DNN_SCALE, F);
  cudnnBackendDescriptor_t S2 = mxl_dnn_masked_scores(g, L, Q, Kt, scale);

  /* P = exp(S2 − Stats): Stats already holds the sink */
  cudnnBackendDescriptor_t shifted = g.inter(F, nh, nq, nk);
  g.add(b.pointwise(CUDNN_POINTWISE_SUB, F, S2, stats, NULL, shifted));
  cudnnBackendDescriptor_t P = g.inter(F, nh, nq, nk);
  g.add(b.pointwise(CUDNN_POINTWISE_EXP, F, shifted, NULL, NULL, P));

  /* dVᵀ = dOᵀ·P, summed over each KV head's query heads */
  cudnnBackendDescriptor_t dVt_full = grouped ? g.inter(F, nh, d, nk) : dVt;
  g.add(b.matmul(dOt, P, dVt_full));
  if (grouped) g.add(b.reduction(CUDNN_REDUCE_TENSOR_ADD, dVt_full, dVt));

  /* dS = scale·P∘(dO·Vᵀ − D), D = rowsum(dO∘O) */
  cudnnBackendDescriptor_t dO_O = g.inter(F, nh, nq, d);
  g.add(b.pointwise(CUDNN_POINTWISE_MUL, F, dO, O, NULL, dO_O));
  cudnnBackendDescriptor_t D = g.inter(F, nh, nq, 1);
  g.add(b.reduction(CUDNN_REDUCE_TENSOR_ADD, dO_O, D));
  cudnnBackendDescriptor_t dP = g.inter(F, nh, nq, nk);
  g.add(b.matmul(dO, Vt, dP));
  cudnnBackendDescriptor_t dP_D = g.inter(F, nh, nq, nk);
  g.add(b.pointwise(CUDNN_POINTWISE_SUB, F, dP, D, NULL, dP_D));
  cudnnBackendDescriptor_t dS = g.inter(F, nh, nq, nk);
  g.add(b.pointwise(CUDNN_POINTWISE_MUL, F, dP_D, P, NULL, dS));
  cudnnBackendDescriptor_t dS_scaled = dS;
  if (g.k.plant != MXL_DNN_PLANT_BWD_NO_SCALE) {
    dS_scaled = g.inter(F, nh, nq, nk);
    g.add(b.pointwise(CUDNN_POINTWISE_MUL, F, dS, scale, NULL, dS_scaled));
  }

  /* dKᵀ = Qᵀ·dS (grouped as dV), dQ = dS·K */
  cudnnBackendDescriptor_t dKt_full = grouped ? g.inter(F, nh, d, nk) : dKt;
  g.add(b.matmul(Qt, dS_scaled, dKt_full));
  if (grouped) g.add(b.reduction(CUDNN_REDUCE_TENSOR_ADD, dKt_full, dKt));
  g.add(b.matmul(dS_scaled, K, dQ));
}

/* Destroys what a plan holds. */
static inline void mxl_dnn_release_plan(mxl_dnn_plan *p) {
  if (p->plan) mxl_dnn::cudnnBackendDestroyDescriptor(p->plan);
  for (int i = p->n_descs - 1; i >= 0; i--) mxl_dnn::cudnnBackendDestroyDescriptor(p->descs[i]);
  p->plan = NULL;
  p->n_descs = 0;
}

/* Finalizes the operation graph of ops[n_ops] (built with b), asks the
 * heuristic for engine configurations and keeps in b.p the first whose
 * execution plan finalizes, with its workspace size; false (b says where)
 * when cuDNN refuses. */
static inline bool mxl_dnn_plan_graph(cudnnHandle_t handle, mxl_dnn_builder &b,
                                      cudnnBackendDescriptor_t *ops, int n_ops) {
  mxl_dnn_plan *p = b.p;
  cudnnBackendDescriptor_t graph = b.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "graph");
  b.set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "graph handle");
  b.set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n_ops, ops,
        "graph operations");
  b.finalize(graph, "graph finalize");
  cudnnBackendDescriptor_t heur = b.make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "heuristic");
  const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  b.set_desc(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph, "heuristic graph");
  b.set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristic mode");
  b.finalize(heur, "heuristic finalize");
  cudnnBackendDescriptor_t cfgs[MXL_DNN_ENGINE_CFGS];
  for (int i = 0; i < MXL_DNN_ENGINE_CFGS; i++)
    cfgs[i] = b.make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine configuration");
  int64_t n_cfgs = 0;
  if (b.ok())
    b.check(mxl_dnn::cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                              CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                              MXL_DNN_ENGINE_CFGS, &n_cfgs, cfgs),
            "heuristic results");
  if (b.ok() && n_cfgs == 0) b.check(CUDNN_STATUS_NOT_SUPPORTED, "heuristic: no engine");
  cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
  for (int64_t i = 0; b.ok() && i < n_cfgs && !p->plan; i++) {
    cudnnBackendDescriptor_t plan = NULL;
    if (mxl_dnn::cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan) !=
        CUDNN_STATUS_SUCCESS)
      continue;
    last = mxl_dnn::cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE,
                                             CUDNN_TYPE_HANDLE, 1, &handle);
    if (last == CUDNN_STATUS_SUCCESS)
      last = mxl_dnn::cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]);
    if (last == CUDNN_STATUS_SUCCESS) last = mxl_dnn::cudnnBackendFinalize(plan);
    if (last == CUDNN_STATUS_SUCCESS)
      p->plan = plan;
    else
      mxl_dnn::cudnnBackendDestroyDescriptor(plan);
  }
  if (b.ok() && !p->plan) b.check(last, "execution plan: no engine configuration finalizes");
  int64_t got = 0;
  if (b.ok())
    b.check(mxl_dnn::cudnnBackendGetAttribute(p->plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                              CUDNN_TYPE_INT64, 1, &got, &p->workspace),
            "workspace size");
  return b.ok();
}

/* Builds the graph of `k` and its plan. False with `why` when cuDNN
 * refuses (the caller remembers the refusal). */
static inline bool mxl_dnn_make_plan(mxl_dnn_state *ds, const mxl_dnn_key &k, mxl_dnn_plan *p,
                                     char *why, size_t why_size) {
  mxl_dnn_builder b = {p, CUDNN_STATUS_SUCCESS, ""};
  cudnnBackendDescriptor_t ops[48];
  mxl_dnn_graph g = {b, k, ops, 0, MXL_DNN_VIRTUAL};
  if (k.backward)
    mxl_dnn_backward_graph(g);
  else
    mxl_dnn_forward_graph(g);
  if (!mxl_dnn_plan_graph(ds->handle, b, ops, g.n)) {
    char detail[160] = "";
    mxl_dnn::cudnnGetLastErrorString(detail, sizeof detail);
    snprintf(why, why_size, "%s: %s (status %d)%s%s", b.step,
             mxl_dnn::cudnnGetErrorString(b.status), (int)b.status, detail[0] ? ": " : "",
             detail);
    mxl_dnn_release_plan(p);
    return false;
  }
  return true;
}

/* The cached plan of `k` (made, or its refusal remembered, on a miss; the
 * oldest entry makes room). */
static inline mxl_dnn_plan *mxl_dnn_plan_for(mxl_dnn_state *ds, const mxl_dnn_key &k) {
  for (int i = 0; i < ds->n_plans; i++)
    if (memcmp(&ds->plans[i].key, &k, sizeof k) == 0) return &ds->plans[i];
  int slot = ds->n_plans;
  if (slot == MXL_DNN_PLANS) {
    slot = ds->next_victim;
    ds->next_victim = (ds->next_victim + 1) % MXL_DNN_PLANS;
    mxl_dnn_release_plan(&ds->plans[slot]);
  } else {
    ds->n_plans++;
  }
  mxl_dnn_plan *p = &ds->plans[slot];
  memset(p, 0, sizeof *p);
  p->key = k;
  p->usable = mxl_dnn_make_plan(ds, k, p, ds->refusal, sizeof ds->refusal);
  return p;
}

/* ---------------------------------------------------------------- state */

/* Creates the cuDNN handle of a backend on its stream. Leaves st->dnn NULL
 * (own kernels) when the library cannot be used or MXL_CUDNN_ATTENTION=0;
 * `why` says which. The emulator backend calls it only when a test asks. */
static inline void mxl_cu_dnn_init(mxl_cuda_state *st, char *why, size_t why_size) {
  const char *env = getenv("MXL_CUDNN_ATTENTION");
  if (env && !strcmp(env, "0")) {
    snprintf(why, why_size, "MXL_CUDNN_ATTENTION=0");
    return;
  }
  mxl_dnn_state *ds = static_cast<mxl_dnn_state *>(calloc(1, sizeof *ds));
  if (!ds) {
    snprintf(why, why_size, "out of host memory");
    return;
  }
  cudnnStatus_t s = mxl_dnn::cudnnCreate(&ds->handle);
  if (s == CUDNN_STATUS_SUCCESS) {
    s = mxl_dnn::cudnnSetStream(ds->handle, (cudaStream_t)st->stream);
    if (s != CUDNN_STATUS_SUCCESS) mxl_dnn::cudnnDestroy(ds->handle);
  }
  if (s != CUDNN_STATUS_SUCCESS) {
    snprintf(why, why_size, "cudnnCreate: %s", mxl_dnn::cudnnGetErrorString(s));
    free(ds);
    return;
  }
  st->dnn = ds;
}

/* Releases plans, workspace and handle (backend destruction, stream idle). */
static inline void mxl_cu_dnn_release(mxl_cuda_state *st) {
  mxl_dnn_state *ds = st->dnn;
  if (!ds) return;
  for (int i = 0; i < ds->n_plans; i++) mxl_dnn_release_plan(&ds->plans[i]);
  mxl_cu_device_free(st, ds->workspace, ds->workspace_bytes);
  mxl_dnn::cudnnDestroy(ds->handle);
  free(ds);
  st->dnn = NULL;
}

/* ---------------------------------------------------------------- the ops */

/* lse[i, h] = stats[h, i] — stats [nh, nq] (cuDNN's [1, nh, nq, 1]); with
 * to_stats, the other way round. */
MXL_GLOBAL void mxl_dnn_stats_kernel(float *lse, float *stats, int nq, int nh, int to_stats) {
  MXL_FOR_EACH(e, (int64_t)nq * nh) {
    int64_t i = e / nh, h = e % nh;
    if (to_stats)
      stats[h * nq + i] = lse[e];
    else
      lse[e] = stats[h * nq + i];
  }
}

/* y[i] += x[i] — the backward's "+=" gradients. */
MXL_GLOBAL void mxl_dnn_accumulate_kernel(float *y, const float *x, int64_t n) {
  MXL_FOR_EACH(i, n) y[i] += x[i];
}

static inline bool mxl_dnn_stats(mxl_backend *be, const char *op, float *lse, float *stats,
                                 int nq, int nh, int to_stats) {
  return mxl_cu_launched(
      be, op,
      MXL_LAUNCH(mxl_dnn_stats_kernel,
                 mxl_cu_grid((int64_t)nq * nh, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS),
                 MXL_CU_ELEMENTWISE_THREADS, 0, mxl_cu_state(be)->stream, lse, stats, nq, nh,
                 to_stats));
}

static inline bool mxl_dnn_accumulate(mxl_backend *be, const char *op, float *y, const float *x,
                                      int64_t n) {
  return mxl_cu_launched(
      be, op,
      MXL_LAUNCH(mxl_dnn_accumulate_kernel,
                 mxl_cu_grid(n, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS),
                 MXL_CU_ELEMENTWISE_THREADS, 0, mxl_cu_state(be)->stream, y, x, n));
}

/* The usable plan of `key` with its workspace allocated, or NULL: the
 * shape goes to the own kernels (counted in fell_back), or the workspace
 * could not be had (*failed, error recorded). */
static inline mxl_dnn_plan *mxl_dnn_prepare(mxl_backend *be, const char *op,
                                            const mxl_dnn_key &key, bool *failed) {
  mxl_cuda_state *st = mxl_cu_state(be);
  mxl_dnn_state *ds = st->dnn;
  *failed = false;
  if (key.nq != key.nk && !ds->any_shape) { /* a KV cache: own kernels (file comment) */
    ds->fell_back++;
    ds->kv_calls++;
    return NULL;
  }
  mxl_dnn_plan *p = key.nk > 0 ? mxl_dnn_plan_for(ds, key) : NULL;
  if (!p || !p->usable) {
    ds->fell_back++;
    return NULL;
  }
  if (!ds->workspace || (size_t)p->workspace > ds->workspace_bytes) {
    /* MXL_CUDA_DNN_WORKSPACE, what `mxlora plan` budgets, unless a plan
     * asks for more */
    size_t want = (size_t)p->workspace > MXL_CUDA_DNN_WORKSPACE ? (size_t)p->workspace
                                                               : MXL_CUDA_DNN_WORKSPACE;
    mxl_cu_device_free(st, ds->workspace, ds->workspace_bytes);
    ds->workspace_bytes = 0;
    ds->workspace = mxl_cu_device_alloc(st, want);
    if (!ds->workspace) {
      mxl_cu_fail(be, MXL_ERR_MEMORY, op, "cannot allocate the %zu-byte cuDNN workspace", want);
      *failed = true;
      return NULL;
    }
    ds->workspace_bytes = want;
  }
  return p;
}

/* Binds uids[i] to ptrs[i] and runs the plan; false with the error
 * recorded. */
static inline bool mxl_dnn_execute(mxl_backend *be, const char *op, mxl_dnn_plan *p,
                                   const int64_t *uids, void *const *ptrs, int64_t n) {
  mxl_dnn_state *ds = mxl_cu_state(be)->dnn;
  cudnnBackendDescriptor_t pack = NULL;
  cudnnStatus_t s =
      mxl_dnn::cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
  const char *step = "variant pack";
  if (s == CUDNN_STATUS_SUCCESS)
    s = mxl_dnn::cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS,
                                          CUDNN_TYPE_INT64, n, uids);
  if (s == CUDNN_STATUS_SUCCESS)
    s = mxl_dnn::cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                                          CUDNN_TYPE_VOID_PTR, n, ptrs);
  if (s == CUDNN_STATUS_SUCCESS)
    s = mxl_dnn::cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
                                          CUDNN_TYPE_VOID_PTR, 1, &ds->workspace);
  if (s == CUDNN_STATUS_SUCCESS) s = mxl_dnn::cudnnBackendFinalize(pack);
  if (s == CUDNN_STATUS_SUCCESS) {
    step = "execute";
    s = mxl_dnn::cudnnBackendExecute(ds->handle, p->plan, pack);
  }
  if (pack) mxl_dnn::cudnnBackendDestroyDescriptor(pack);
  if (s != CUDNN_STATUS_SUCCESS) {
    char detail[160] = "";
    mxl_dnn::cudnnGetLastErrorString(detail, sizeof detail);
    mxl_cu_fail(be, MXL_ERR_BACKEND, op, "%s: %s (status %d) %s", step,
                mxl_dnn::cudnnGetErrorString(s), (int)s, detail);
    return false;
  }
  ds->executed++;
  return true;
}

/* The variant pack's bindings: first the mask arrays and scalars both
 * graphs have (the window only when the graph has one; the scalars are
 * host values in this struct, which the pack points to), then what the
 * caller binds. Not copyable: the pointers point into it. */
struct mxl_dnn_common {
  float scale, neg_inf;
  int32_t window;
  int64_t uids[24];
  void *ptrs[24];
  int n;
  mxl_dnn_common(const mxl_dnn_common &) = delete;

  mxl_dnn_common(const mxl_attn_mask *mask, float s) : scale(s), neg_inf(-INFINITY),
                                                        window(mask->window), n(0) {
    bind(MXL_DNN_QPOS, mask->q_pos);
    bind(MXL_DNN_QSEG, mask->q_seg);
    bind(MXL_DNN_KPOS, mask->k_pos);
    bind(MXL_DNN_KSEG, mask->k_seg);
    bind(MXL_DNN_SCALE, &scale);
    bind(MXL_DNN_NEG_INF, &neg_inf);
    if (mask->window > 0) bind(MXL_DNN_WINDOW, &window);
  }
  void bind(int64_t uid, const void *p) {
    uids[n] = uid;
    ptrs[n++] = const_cast<void *>(p);
  }
};

/* Runs the attention forward through cuDNN. False when the shape goes to
 * the own kernels (no cuDNN, or cuDNN refused it: counted in fell_back);
 * true when cuDNN ran it or the attempt failed with the error recorded. */
static inline bool mxl_cu_dnn_attention(mxl_backend *be, float *out, float *lse, const float *q,
                                        const float *k, const float *v, const uint16_t *sinks,
                                        const mxl_attn_mask *mask, int nq, int nk, int nh,
                                        int nkv, int d, float scale) {
  static const char op[] = "attention (cuDNN)";
  mxl_dnn_state *ds = mxl_cu_state(be)->dnn;
  if (!ds) return false;
  const mxl_dnn_key key = {0, nq, nk, nh, nkv, d, mask->window > 0, ds->plant};
  bool failed;
  mxl_dnn_plan *p = mxl_dnn_prepare(be, op, key, &failed);
  if (!p) return failed;
  const size_t nqd = (size_t)nq * nh * d, nkd = (size_t)nk * nkv * d;
  void *scratch = mxl_cu_scratch(be, mxl_cuda_scratch_attention_cudnn(nq, nk, nh, nkv, d), op);
  if (!scratch) return true;
  mxl_cu_carve carve = {static_cast<char *>(scratch)};
  uint16_t *q16 = carve.take<uint16_t>(nqd * 2), *o16 = carve.take<uint16_t>(nqd * 2);
  uint16_t *k16 = carve.take<uint16_t>(nkd * 2), *v16 = carve.take<uint16_t>(nkd * 2);
  float *sink32 = carve.take<float>((size_t)nh * 4);
  float *stats = carve.take<float>((size_t)nq * nh * 4);
  if (!mxl_cu_to_bf16(be, op, q16, q, (int64_t)nqd) ||
      !mxl_cu_to_bf16(be, op, k16, k, (int64_t)nkd) ||
      !mxl_cu_to_bf16(be, op, v16, v, (int64_t)nkd) ||
      !mxl_cu_from_bf16(be, op, sink32, sinks, nh))
    return true;
  mxl_dnn_common c(mask, scale);
  c.bind(MXL_DNN_Q, q16);
  c.bind(MXL_DNN_KT, k16);
  c.bind(MXL_DNN_V, v16);
  c.bind(MXL_DNN_O, o16);
  c.bind(MXL_DNN_STATS, stats);
  c.bind(MXL_DNN_SINK, sink32);
  if (!mxl_dnn_execute(be, op, p, c.uids, c.ptrs, c.n)) return true;
  if (mxl_cu_from_bf16(be, op, out, o16, (int64_t)nqd) && lse)
    mxl_dnn_stats(be, op, lse, stats, nq, nh, 0);
  return true;
}

/* The attention backward through cuDNN ("+=" gradients, ops.h); returns
 * as mxl_cu_dnn_attention. */
static inline bool mxl_cu_dnn_attention_bwd(mxl_backend *be, float *dq, float *dk, float *dv,
                                            const float *dout, const float *out,
                                            const float *lse, const float *q, const float *k,
                                            const float *v, const mxl_attn_mask *mask, int nq,
                                            int nk, int nh, int nkv, int d, float scale) {
  static const char op[] = "attention_bwd (cuDNN)";
  mxl_dnn_state *ds = mxl_cu_state(be)->dnn;
  if (!ds) return false;
  const mxl_dnn_key key = {1, nq, nk, nh, nkv, d, mask->window > 0, ds->plant};
  bool failed;
  mxl_dnn_plan *p = mxl_dnn_prepare(be, op, key, &failed);
  if (!p) return failed;
  const size_t nqd = (size_t)nq * nh * d, nkd = (size_t)nk * nkv * d;
  void *scratch =
      mxl_cu_scratch(be, mxl_cuda_scratch_attention_cudnn_bwd(nq, nk, nh, nkv, d), op);
  if (!scratch) return true;
  mxl_cu_carve carve = {static_cast<char *>(scratch)};
  uint16_t *q16 = carve.take<uint16_t>(nqd * 2), *o16 = carve.take<uint16_t>(nqd * 2);
  uint16_t *do16 = carve.take<uint16_t>(nqd * 2);
  uint16_t *k16 = carve.take<uint16_t>(nkd * 2), *v16 = carve.take<uint16_t>(nkd * 2);
  float *stats = carve.take<float>((size_t)nq * nh * 4);
  float *dq32 = carve.take<float>(nqd * 4), *dk32 = carve.take<float>(nkd * 4);
  float *dv32 = carve.take<float>(nkd * 4);
  if (!mxl_cu_to_bf16(be, op, q16, q, (int64_t)nqd) ||
      !mxl_cu_to_bf16(be, op, o16, out, (int64_t)nqd) ||
      !mxl_cu_to_bf16(be, op, do16, dout, (int64_t)nqd) ||
      !mxl_cu_to_bf16(be, op, k16, k, (int64_t)nkd) ||
      !mxl_cu_to_bf16(be, op, v16, v, (int64_t)nkd) ||
      !mxl_dnn_stats(be, op, const_cast<float *>(lse), stats, nq, nh, 1))
    return true;
  mxl_dnn_common c(mask, scale);
  c.bind(MXL_DNN_Q, q16);
  c.bind(MXL_DNN_QT, q16);
  c.bind(MXL_DNN_KT, k16);
  c.bind(MXL_DNN_K, k16);
  c.bind(MXL_DNN_VT, v16);
  c.bind(MXL_DNN_O, o16);
  c.bind(MXL_DNN_DO, do16);
  c.bind(MXL_DNN_DOT, do16);
  c.bind(MXL_DNN_STATS, stats);
  c.bind(MXL_DNN_DQ, dq32);
  c.bind(MXL_DNN_DKT, dk32);
  c.bind(MXL_DNN_DVT, dv32);
  if (!mxl_dnn_execute(be, op, p, c.uids, c.ptrs, c.n)) return true;
  if (mxl_dnn_accumulate(be, op, dq, dq32, (int64_t)nqd) &&
      mxl_dnn_accumulate(be, op, dk, dk32, (int64_t)nkd))
    mxl_dnn_accumulate(be, op, dv, dv32, (int64_t)nkd);
  return true;
}

/* One line for `mxlora version` / the backend's description; once calls
 * were made, how many cuDNN ran and why the last refused shape was
 * refused (what a first GPU run needs to know). */
static inline void mxl_cu_dnn_describe(const mxl_cuda_state *st, char *buf, size_t size,
                                       const char *why_off) {
  size_t v = mxl_dnn::cudnnGetVersion();
  const mxl_dnn_state *ds = st ? st->dnn : NULL;
  if (ds && ds->executed + ds->fell_back == 0)
    snprintf(buf, size,
             "attention: cuDNN %zu.%zu.%zu graph (forward and backward), own kernels against a "
             "KV cache and where cuDNN refuses a shape",
             v / 10000, v / 100 % 100, v % 100);
  else if (ds)
    snprintf(buf, size,
             "attention: cuDNN %zu.%zu.%zu graph: %lld calls by cuDNN, %lld by the own kernels "
             "(%lld against a KV cache)%s%s",
             v / 10000, v / 100 % 100, v % 100, ds->executed, ds->fell_back, ds->kv_calls,
             ds->refusal[0] ? "; last refusal: " : "", ds->refusal);
  else
    snprintf(buf, size, "attention: own kernels (cuDNN %zu.%zu.%zu not used: %s)", v / 10000,
             v / 100 % 100, v % 100, why_off && *why_off ? why_off : "no device");
}

#endif
