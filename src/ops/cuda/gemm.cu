#include <cublasLt.h>

#include <memory>
#include <unordered_map>

#include "core/device.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/gemm.cuh"

namespace mamba::ops::cuda_detail {
namespace {

void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) fail("cuBLASLt error in ", what, ": status ", int(status));
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32:
      return CUDA_R_32F;
    case DType::bf16:
      return CUDA_R_16BF;
    case DType::f16:
      return CUDA_R_16F;
    default:
      fail("gemm (cuda): unsupported dtype ", dtype_name(t), " (expected f32, bf16 or f16)");
  }
}

constexpr size_t kWorkspaceBytes = 32u << 20;
constexpr int kCandidates = 8;  // algorithms asked of the heuristic

// One handle and workspace per process (the library is used from one host thread at a time).
struct Context {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  Context() {
    check_cublas(cublasLtCreate(&handle), "cublasLtCreate");
    check_cuda(cudaMalloc(&workspace, kWorkspaceBytes), "cudaMalloc (cuBLASLt workspace)");
  }
};

Context& context() {
  static Context ctx;
  return ctx;
}

// The descriptors and the chosen algorithm of one product shape. Building them and asking the
// heuristic costs tens of microseconds of host time, more than a small product takes on the GPU,
// so each shape is planned once and reused.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

struct PlanKey {
  DType in, out;
  int64_t a_rows, a_cols, b_rows, b_cols;
  bool a_transpose, b_transpose;
  bool accumulate;  // β ≠ 0: timed apart, as cuBLASLt runs other kernels for it
  bool operator==(const PlanKey&) const = default;
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    size_t h = size_t(k.in) * 31 + size_t(k.out);
    for (int64_t v : {k.a_rows, k.a_cols, k.b_rows, k.b_cols}) h = h * 1000003 + size_t(v);
    return h * 8 + size_t(k.a_transpose) * 4 + size_t(k.b_transpose) * 2 + size_t(k.accumulate);
  }
};

// Products of at least this many multiply-adds have their algorithm chosen by timing cuBLASLt's
// candidates once; below it the heuristic's first choice is kept (timing would cost more than it
// could save).
constexpr double kTimedMultiplyAdds = double(1 << 27);

// The fastest of `candidates` on the product's own operands, into a scratch result (so an
// accumulating product's D is untouched), with the product's β (cuBLASLt picks other kernels for
// β = 0). Each candidate is timed as a replayed CUDA graph of kRuns products, as the recorded
// training step and prefill run them: some candidates put a memset before their kernel, which costs
// more inside a graph (a node and a dependency) than queued directly. The first candidate when the
// scratch or a stream cannot be had.
cublasLtMatmulAlgo_t fastest_candidate(const Plan& plan, DType out, int64_t m, int64_t n, float beta,
                                       const cublasLtMatmulHeuristicResult_t* candidates, int count, const void* a_data,
                                       const void* b_data) {
  const size_t scratch_bytes = size_t(m) * size_t(n) * dtype_size(out);
  void* scratch = nullptr;
  cudaStream_t stream = nullptr;
  if (cudaMalloc(&scratch, scratch_bytes) != cudaSuccess ||
      cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) {
    (void)cudaGetLastError();
    if (scratch) cudaFree(scratch);
    return candidates[0].algo;
  }
  // The operands are written by work queued before this product.
  check_cuda(cudaStreamSynchronize(cudaStreamPerThread), "cudaStreamSynchronize");
  check_cuda(cudaMemsetAsync(scratch, 0, scratch_bytes, stream), "cudaMemsetAsync");
  Context& ctx = context();
  cudaEvent_t start = nullptr, stop = nullptr;
  check_cuda(cudaEventCreate(&start), "cudaEventCreate");
  check_cuda(cudaEventCreate(&stop), "cudaEventCreate");
  const float alpha = 1.0f;
  auto run = [&](const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(ctx.handle, plan.op, &alpha, b_data, plan.a, a_data, plan.b, &beta, scratch, plan.d, scratch,
                          plan.d, &algo, ctx.workspace, kWorkspaceBytes, stream);
  };
  constexpr int kRuns = 5;
  cublasLtMatmulAlgo_t best = candidates[0].algo;
  float best_ms = 0.0f;
  for (int i = 0; i < count; ++i) {
    if (run(candidates[i].algo) != CUBLAS_STATUS_SUCCESS) continue;  // a candidate may decline
    check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
    for (int r = 0; r < kRuns && status == CUBLAS_STATUS_SUCCESS; ++r) status = run(candidates[i].algo);
    cudaGraph_t graph = nullptr;
    check_cuda(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
    cudaGraphExec_t exec = nullptr;
    const bool recorded = status == CUBLAS_STATUS_SUCCESS && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
    cudaGraphDestroy(graph);
    if (!recorded) {
      (void)cudaGetLastError();
      continue;
    }
    check_cuda(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");  // warm-up
    check_cuda(cudaEventRecord(start, stream), "cudaEventRecord");
    check_cuda(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
    check_cuda(cudaEventRecord(stop, stream), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
    cudaGraphExecDestroy(exec);
    float ms = 0.0f;
    check_cuda(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    if (best_ms == 0.0f || ms < best_ms) best_ms = ms, best = candidates[i].algo;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  check_cuda(cudaStreamDestroy(stream), "cudaStreamDestroy");
  check_cuda(cudaFree(scratch), "cudaFree (product timing scratch)");
  return best;
}

// Column-major view: Dᵀ[n, m] = op(B)ᵀ · op(A)ᵀ, where a stored row-major [r, c] matrix is the
// column-major [c, r] matrix X̃ = Xᵀ; op(B)ᵀ is B̃ when B is not transposed, B̃ᵀ otherwise.
// Large products take the fastest of the heuristic's candidates (its first choice is not always
// the fastest), except while work is being recorded: nothing may wait for the GPU then, and the
// heuristic's first choice stands.
std::unique_ptr<Plan> make_plan(const PlanKey& key, int64_t m, int64_t n, int64_t k, float beta, const void* a_data,
                                const void* b_data) {
  auto plan = std::make_unique<Plan>();
  Context& ctx = context();
  const cudaDataType_t in_type = cuda_type(key.in), out_type = cuda_type(key.out);
  check_cublas(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t op_first = key.b_transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = key.a_transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
  check_cublas(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)),
               "set TRANSA");
  check_cublas(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)),
               "set TRANSB");
  // Stored column-major shapes (rows = leading dimension) of B̃ and Ã.
  check_cublas(cublasLtMatrixLayoutCreate(&plan->a, in_type, uint64_t(key.b_cols), uint64_t(key.b_rows), key.b_cols),
               "layout of the first operand");
  check_cublas(cublasLtMatrixLayoutCreate(&plan->b, in_type, uint64_t(key.a_cols), uint64_t(key.a_rows), key.a_cols),
               "layout of the second operand");
  check_cublas(cublasLtMatrixLayoutCreate(&plan->d, out_type, uint64_t(n), uint64_t(m), n), "layout of the result");
  cublasLtMatmulPreference_t preference = nullptr;
  check_cublas(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
  const size_t workspace = kWorkspaceBytes;
  cublasLtMatmulHeuristicResult_t candidates[kCandidates]{};
  int found = 0;
  cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                               &workspace, sizeof(workspace));
  if (status == CUBLAS_STATUS_SUCCESS)
    status = cublasLtMatmulAlgoGetHeuristic(ctx.handle, plan->op, plan->a, plan->b, plan->d, plan->d, preference,
                                            kCandidates, candidates, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  check_cublas(status, "cublasLtMatmulAlgoGetHeuristic");
  MAMBA_CHECK(found > 0, "gemm (cuda): cuBLASLt has no algorithm for a ", m, "×", k, " by ", k, "×", n, " ",
              dtype_name(key.in), " product");
  const bool timed = found > 1 && double(m) * double(n) * double(k) >= kTimedMultiplyAdds && !RecordedWork::recording();
  plan->algo =
      timed ? fastest_candidate(*plan, key.out, m, n, beta, candidates, found, a_data, b_data) : candidates[0].algo;
  return plan;
}

}  // namespace

void gemm(const GemmOperand& a, const GemmOperand& b, void* d, DType d_type, float alpha, float beta) {
  MAMBA_CHECK(a.dtype == b.dtype, "gemm (cuda): operand dtypes differ (", dtype_name(a.dtype), " and ",
              dtype_name(b.dtype), ")");
  const int64_t m = a.transpose ? a.cols : a.rows, k = a.transpose ? a.rows : a.cols;
  const int64_t n = b.transpose ? b.rows : b.cols;
  MAMBA_CHECK((b.transpose ? b.cols : b.rows) == k, "gemm (cuda): inner dimensions differ");
  if (m == 0 || n == 0) return;
  static std::unordered_map<PlanKey, std::unique_ptr<Plan>, PlanKeyHash> plans;  // one host thread at a time
  const PlanKey key{a.dtype, d_type, a.rows, a.cols, b.rows, b.cols, a.transpose, b.transpose, beta != 0.0f};
  std::unique_ptr<Plan>& plan = plans[key];
  if (!plan) plan = make_plan(key, m, n, k, beta, a.data, b.data);
  Context& ctx = context();
  check_cublas(cublasLtMatmul(ctx.handle, plan->op, &alpha, b.data, plan->a, a.data, plan->b, &beta, d, plan->d, d,
                              plan->d, &plan->algo, ctx.workspace, kWorkspaceBytes, cudaStreamPerThread),
               "cublasLtMatmul");
}

}  // namespace mamba::ops::cuda_detail
