// The cuDNN stand-in itself (tests/cuda/cudnn_standin.cpp), so that
// test_cuda_cudnn, which runs the backend's graph code against it, tests
// the backend's argument mapping and not a mirror of it:
//   - small graphs worked out by hand from the documented semantics: a
//     matmul whose B is stored through strides and broadcast over grouped
//     query heads, a compare + BINARY_SELECT mask with broadcast operands
//     and a by-value scalar, whole and grouped reductions;
//   - calls the documentation makes invalid, each refused with its status:
//     a wrong attribute type, an attribute after finalize, a missing
//     required attribute, dims and strides of different counts, shapes that
//     do not broadcast or multiply, an unfinalized descriptor as a value, a
//     virtual tensor never produced, an unbound or unknown unique id.
#include "kernels/cuda/emulator.h"  // first: it defines MXL_CUDA_EMULATE

#include <math.h>
#include <string.h>

#include "kernels/cuda/cudnn_attention.cuh"
#include "test.h"
#include "tests/cuda/cudnn_standin.h"

namespace {

cudnnHandle_t handle;

uint16_t bf(float x) {  // exact for the small values used here
  uint32_t b;
  memcpy(&b, &x, 4);
  return (uint16_t)(b >> 16);
}

const cudnnDataType_t F = CUDNN_DATA_FLOAT, BF = CUDNN_DATA_BFLOAT16, I = CUDNN_DATA_INT32,
                      B = CUDNN_DATA_BOOLEAN;

// A graph built with the backend's builder: descriptors kept in `plan`,
// released at the end.
struct graph {
  mxl_dnn_plan store;
  mxl_dnn_builder b;
  cudnnBackendDescriptor_t ops[16];
  int n = 0;
  graph() : b{&store, CUDNN_STATUS_SUCCESS, ""} { memset(&store, 0, sizeof store); }
  ~graph() { mxl_dnn_release_plan(&store); }

  cudnnBackendDescriptor_t t(int64_t uid, cudnnDataType_t type, std::initializer_list<int64_t> d,
                             std::initializer_list<int64_t> s, bool virt = false) {
    int64_t dims[4], strides[4];
    std::copy(d.begin(), d.end(), dims);
    std::copy(s.begin(), s.end(), strides);
    return b.tensor(uid, type, dims, strides, virt, false);
  }

  // Plans the graph as the backend does (mxl_dnn_plan_graph) and runs it
  // with the bindings.
  cudnnStatus_t run(const int64_t *uids, void *const *ptrs, int64_t count) {
    if (!mxl_dnn_plan_graph(handle, b, ops, n)) return b.status;
    static char workspace[4096];
    if (store.workspace > (int64_t)sizeof workspace) return CUDNN_STATUS_INTERNAL_ERROR;
    void *wp = workspace;
    cudnnBackendDescriptor_t pack = b.make(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, "pack");
    b.set(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, count, uids, "uids");
    b.set(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, count, ptrs, "ptrs");
    b.set(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &wp, "ws");
    b.finalize(pack, "pack");
    if (!b.ok()) return b.status;
    return mxl_dnn::cudnnBackendExecute(handle, store.plan, pack);
  }
};

// C [1, 4, 1, 1] = A [1, 4, 1, 8] · B [1, 2, 8, 1]: four query heads, two
// KV heads (head h reads B's h / 2), B stored with its head stride 1 and
// its K stride 2 (K = 8: the SDPA engines' smallest head dim).
void test_matmul_gqa() {
  graph g;
  uint16_t a[32] = {0}, bm[16] = {0};
  for (int h = 0; h < 4; h++) a[8 * h] = bf((float)(h + 1)), a[8 * h + 1] = bf(1);
  bm[0] = bf(1), bm[1] = bf(2), bm[2] = bf(10), bm[3] = bf(20);  // B[k][g]: k0 (1, 2), k1 (10, 20)
  float c[4] = {0};
  cudnnBackendDescriptor_t A = g.t(1, BF, {1, 4, 1, 8}, {32, 8, 8, 1});
  cudnnBackendDescriptor_t Bt = g.t(2, BF, {1, 2, 8, 1}, {16, 1, 2, 1});
  cudnnBackendDescriptor_t C = g.t(3, F, {1, 4, 1, 1}, {4, 1, 1, 1});
  g.ops[g.n++] = g.b.matmul(A, Bt, C);
  int64_t uids[3] = {1, 2, 3};
  void *ptrs[3] = {a, bm, c};
  MXL_CHECK_MSG(g.run(uids, ptrs, 3) == CUDNN_STATUS_SUCCESS, "%s",
                mxl_cudnn_standin_last_error());
  // head h: (h+1)·B[0][g] + 1·B[1][g], g = h / 2
  const float want[4] = {1 + 10, 2 + 10, 3 * 2 + 20, 4 * 2 + 20};
  for (int h = 0; h < 4; h++) MXL_CHECK_MSG(c[h] == want[h], "head %d: %g vs %g", h, c[h], want[h]);
}

// y [1, 1, 2, 3] = (qpos >= kpos) ? x : −100, qpos [1, 1, 2, 1] and kpos
// [1, 1, 1, 3] broadcast; then the row max and a group sum.
void test_mask_and_reductions() {
  graph g;
  float x[6] = {1, 2, 3, 4, 5, 6}, y[6], row_max[2], pair_sum[1];
  int32_t qpos[2] = {1, 2}, kpos[3] = {0, 1, 2};
  const float fill = -100;
  cudnnBackendDescriptor_t X = g.t(1, F, {1, 1, 2, 3}, {6, 6, 3, 1});
  cudnnBackendDescriptor_t Q = g.t(2, I, {1, 1, 2, 1}, {2, 2, 1, 1});
  cudnnBackendDescriptor_t K = g.t(3, I, {1, 1, 1, 3}, {3, 3, 3, 1});
  cudnnBackendDescriptor_t fill_t = g.b.scalar(4, F);
  cudnnBackendDescriptor_t Y = g.t(5, F, {1, 1, 2, 3}, {6, 6, 3, 1});
  cudnnBackendDescriptor_t M = g.t(6, F, {1, 1, 2, 1}, {2, 2, 1, 1});
  cudnnBackendDescriptor_t S = g.t(7, F, {1, 1, 1, 1}, {1, 1, 1, 1});
  cudnnBackendDescriptor_t ok = g.t(100, B, {1, 1, 2, 3}, {6, 6, 3, 1}, true);
  g.ops[g.n++] = g.b.pointwise(CUDNN_POINTWISE_CMP_GE, B, Q, K, NULL, ok);
  g.ops[g.n++] = g.b.pointwise(CUDNN_POINTWISE_BINARY_SELECT, F, X, fill_t, ok, Y);
  g.ops[g.n++] = g.b.reduction(CUDNN_REDUCE_TENSOR_MAX, Y, M);
  g.ops[g.n++] = g.b.reduction(CUDNN_REDUCE_TENSOR_ADD, M, S);
  int64_t uids[7] = {1, 2, 3, 4, 5, 6, 7};
  void *ptrs[7] = {x, qpos, kpos, const_cast<float *>(&fill), y, row_max, pair_sum};
  MXL_CHECK_MSG(g.run(uids, ptrs, 7) == CUDNN_STATUS_SUCCESS, "%s",
                mxl_cudnn_standin_last_error());
  const float want[6] = {1, 2, -100, 4, 5, 6};
  for (int i = 0; i < 6; i++) MXL_CHECK_MSG(y[i] == want[i], "y[%d] = %g", i, y[i]);
  MXL_CHECK(row_max[0] == 2 && row_max[1] == 6 && pair_sum[0] == 8);
}

// Y [1, 2, 1, 1] sums X [1, 4, 1, 2] over groups of two heads.
void test_group_reduction() {
  graph g;
  float x[8] = {1, 2, 3, 4, 10, 20, 30, 40}, y[2];
  cudnnBackendDescriptor_t X = g.t(1, F, {1, 4, 1, 2}, {8, 2, 2, 1});
  cudnnBackendDescriptor_t Y = g.t(2, F, {1, 2, 1, 1}, {2, 1, 1, 1});
  g.ops[g.n++] = g.b.reduction(CUDNN_REDUCE_TENSOR_ADD, X, Y);
  int64_t uids[2] = {1, 2};
  void *ptrs[2] = {x, y};
  MXL_CHECK_MSG(g.run(uids, ptrs, 2) == CUDNN_STATUS_SUCCESS, "%s",
                mxl_cudnn_standin_last_error());
  MXL_CHECK_MSG(y[0] == 10 && y[1] == 100, "%g %g", y[0], y[1]);
}

// A tensor descriptor with the required attributes; returns its status.
cudnnStatus_t plain_tensor(cudnnBackendDescriptor_t *t, int64_t uid, int n_strides) {
  const int64_t dims[4] = {1, 1, 2, 2}, strides[4] = {4, 4, 2, 1}, align = 16;
  const cudnnDataType_t type = CUDNN_DATA_FLOAT;
  cudnnStatus_t s;
  if ((s = mxl_dnn::cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, t)) ||
      (s = mxl_dnn::cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DATA_TYPE,
                                             CUDNN_TYPE_DATA_TYPE, 1, &type)) ||
      (s = mxl_dnn::cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64,
                                             4, dims)) ||
      (s = mxl_dnn::cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64,
                                             n_strides, strides)) ||
      (s = mxl_dnn::cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT,
                                             CUDNN_TYPE_INT64, 1, &align)))
    return s;
  if (uid >= 0 && (s = mxl_dnn::cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_UNIQUE_ID,
                                                         CUDNN_TYPE_INT64, 1, &uid)))
    return s;
  return mxl_dnn::cudnnBackendFinalize(*t);
}

void test_refusals() {
  cudnnBackendDescriptor_t t = NULL;
  // a wrong attribute type
  MXL_CHECK(mxl_dnn::cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, &t) == 0);
  const int32_t dims32[4] = {1, 1, 2, 2};
  MXL_CHECK(mxl_dnn::cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT32,
                                              4, dims32) == CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE);
  mxl_dnn::cudnnBackendDestroyDescriptor(t);
  // a missing unique id
  MXL_CHECK(plain_tensor(&t, -1, 4) == CUDNN_STATUS_BAD_PARAM);
  mxl_dnn::cudnnBackendDestroyDescriptor(t);
  // dims and strides of different counts
  MXL_CHECK(plain_tensor(&t, 1, 3) == CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH);
  MXL_CHECK(strstr(mxl_cudnn_standin_last_error(), "4 dimensions but 3 strides") != NULL);
  mxl_dnn::cudnnBackendDestroyDescriptor(t);
  // an attribute after finalize
  MXL_CHECK(plain_tensor(&t, 1, 4) == CUDNN_STATUS_SUCCESS);
  const int64_t uid = 2;
  MXL_CHECK(mxl_dnn::cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64,
                                              1, &uid) == CUDNN_STATUS_BAD_PARAM);
  // an unfinalized descriptor as an attribute value
  cudnnBackendDescriptor_t op = NULL, raw = NULL;
  mxl_dnn::cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, &op);
  mxl_dnn::cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, &raw);
  MXL_CHECK(mxl_dnn::cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC,
                                              CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw) ==
            CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED);
  mxl_dnn::cudnnBackendDestroyDescriptor(raw);
  mxl_dnn::cudnnBackendDestroyDescriptor(op);
  mxl_dnn::cudnnBackendDestroyDescriptor(t);

  {  // shapes that do not broadcast
    graph g;
    cudnnBackendDescriptor_t X = g.t(1, F, {1, 1, 2, 3}, {6, 6, 3, 1});
    cudnnBackendDescriptor_t Y = g.t(2, F, {1, 1, 3, 3}, {9, 9, 3, 1});
    g.b.pointwise(CUDNN_POINTWISE_EXP, F, X, NULL, NULL, Y);
    MXL_CHECK(g.b.status == CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH);
  }
  {  // a matmul whose inner dimensions differ
    graph g;
    cudnnBackendDescriptor_t A = g.t(1, F, {1, 1, 2, 3}, {6, 6, 3, 1});
    cudnnBackendDescriptor_t Bm = g.t(2, F, {1, 1, 2, 2}, {4, 4, 2, 1});
    cudnnBackendDescriptor_t C = g.t(3, F, {1, 1, 2, 2}, {4, 4, 2, 1});
    g.b.matmul(A, Bm, C);
    MXL_CHECK(g.b.status == CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH);
  }
  {  // a virtual tensor no operation produces
    graph g;
    cudnnBackendDescriptor_t V = g.t(100, F, {1, 1, 2, 2}, {4, 4, 2, 1}, true);
    cudnnBackendDescriptor_t Y = g.t(2, F, {1, 1, 2, 2}, {4, 4, 2, 1});
    g.ops[g.n++] = g.b.pointwise(CUDNN_POINTWISE_EXP, F, V, NULL, NULL, Y);
    float y[4];
    int64_t uids[1] = {2};
    void *ptrs[1] = {y};
    MXL_CHECK(g.run(uids, ptrs, 1) == CUDNN_STATUS_BAD_PARAM);
    MXL_CHECK(strstr(mxl_cudnn_standin_last_error(), "never produced") != NULL);
  }
  {  // an unbound id, then an unknown one
    float x[4] = {0}, y[4];
    for (int unknown = 0; unknown < 2; unknown++) {
      graph g;
      cudnnBackendDescriptor_t X = g.t(1, F, {1, 1, 2, 2}, {4, 4, 2, 1});
      cudnnBackendDescriptor_t Y = g.t(2, F, {1, 1, 2, 2}, {4, 4, 2, 1});
      g.ops[g.n++] = g.b.pointwise(CUDNN_POINTWISE_EXP, F, X, NULL, NULL, Y);
      int64_t uids[3] = {1, 2, 9};
      void *ptrs[3] = {x, y, y};
      MXL_CHECK(g.run(uids, ptrs, unknown ? 3 : 1) == CUDNN_STATUS_BAD_PARAM);
      MXL_CHECK(strstr(mxl_cudnn_standin_last_error(),
                       unknown ? "id 9 is no real tensor" : "tensor 2 is not bound") != NULL);
    }
  }
}

}  // namespace

int main() {
  if (mxl_dnn::cudnnCreate(&handle) != CUDNN_STATUS_SUCCESS) return 1;
  MXL_RUN(test_matmul_gqa);
  MXL_RUN(test_mask_and_reductions);
  MXL_RUN(test_group_reduction);
  MXL_RUN(test_refusals);
  mxl_dnn::cudnnDestroy(handle);
  MXL_CHECK_MSG(mxl_cudnn_standin_live_descriptors() == 0, "%ld descriptors leaked",
                mxl_cudnn_standin_live_descriptors());
  return mxl_test_summary("cuda_cudnn_standin");
}
