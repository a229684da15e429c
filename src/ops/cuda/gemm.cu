#include <cublasLt.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string_view>
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
  bool operator==(const PlanKey&) const = default;
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    size_t h = size_t(k.in) * 31 + size_t(k.out);
    for (int64_t v : {k.a_rows, k.a_cols, k.b_rows, k.b_cols}) h = h * 1000003 + size_t(v);
    return h * 4 + size_t(k.a_transpose) * 2 + size_t(k.b_transpose);
  }
};

// Whether a new shape's candidate algorithms are timed (choose_algorithm). MAMBACPP_GEMM_TUNING=0
// keeps cuBLASLt's first suggestion everywhere, so that results are equal bit for bit from one
// process to the next (timing may choose differently in another run).
bool tuning_enabled() {
  static const bool enabled = [] {
    const char* value = std::getenv("MAMBACPP_GEMM_TUNING");
    if (!value || std::string_view(value) == "1") return true;
    MAMBA_CHECK(std::string_view(value) == "0", "environment variable MAMBACPP_GEMM_TUNING='", value,
                "': expected 1 (time cuBLASLt's candidate algorithms for each new product shape, the default) or 0 "
                "(take its first suggestion)");
    return false;
  }();
  return enabled;
}

// Keeps the GPU busy for `nanoseconds`, so that the products queued behind it run back to back
// and their events time the GPU, not the host's queuing (which takes longer than a small product).
__global__ void hold_gpu(uint64_t nanoseconds) {
  uint64_t start = 0, now = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < nanoseconds);
}

// Candidates cuBLASLt suggests for a shape, of which the fastest on the GPU is kept: its first
// suggestion made the batch-16 prefills 1–3% slower (docs/perf/cuda_model.md, m68). Timing them
// costs milliseconds once per shape.
constexpr int kCandidates = 12;
// Another candidate replaces the first suggestion only when it is this much faster: less changes of
// algorithm between runs from timing noise.
constexpr float kRequiredGain = 0.97f;

struct Operands {
  const void *a, *b;  // in cuBLASLt's order (the row-major B first)
  size_t d_bytes;
  float alpha, beta;
};

// The fastest of `candidates` on the operands (results into scratch memory, so the product's
// output keeps its values), or the first where none can be timed: inside a recording, or without
// memory for the scratch result.
cublasLtMatmulAlgo_t choose_algorithm(const Plan& plan, const cublasLtMatmulHeuristicResult_t* candidates, int count,
                                      const Operands& operands) {
  if (count == 1 || !tuning_enabled() || RecordedWork::recording_now()) return candidates[0].algo;
  void* scratch_memory = nullptr;
  if (cudaMalloc(&scratch_memory, operands.d_bytes) != cudaSuccess) {
    (void)cudaGetLastError();  // out of memory is not an error here: the first suggestion serves
    return candidates[0].algo;
  }
  // Released however this ends (a CUDA error below throws).
  const std::unique_ptr<void, decltype(&cudaFree)> scratch(scratch_memory, &cudaFree);
  auto new_event = [] {
    cudaEvent_t event = nullptr;
    check_cuda(cudaEventCreate(&event), "cudaEventCreate (product timing)");
    return std::unique_ptr<CUevent_st, decltype(&cudaEventDestroy)>(event, &cudaEventDestroy);
  };
  const auto start = new_event(), stop = new_event();
  Context& ctx = context();
  const cudaStream_t stream = cudaStreamPerThread;
  check_cuda(cudaMemsetAsync(scratch.get(), 0, operands.d_bytes, stream), "cudaMemsetAsync (product timing)");
  constexpr int kRuns = 5;
  float ms[kCandidates];
  std::fill(ms, ms + kCandidates, -1.0f);
  for (int i = 0; i < count; ++i) {
    auto run = [&] {
      return cublasLtMatmul(ctx.handle, plan.op, &operands.alpha, operands.a, plan.a, operands.b, plan.b,
                            &operands.beta, scratch.get(), plan.d, scratch.get(), plan.d, &candidates[i].algo,
                            ctx.workspace, kWorkspaceBytes, stream);
    };
    if (run() != CUBLAS_STATUS_SUCCESS) continue;  // warm-up; a candidate that fails is skipped
    hold_gpu<<<1, 1, 0, stream>>>(200'000);
    check_launch("hold_gpu (product timing)");
    check_cuda(cudaEventRecord(start.get(), stream), "cudaEventRecord");
    bool ran = true;
    for (int r = 0; r < kRuns && ran; ++r) ran = run() == CUBLAS_STATUS_SUCCESS;
    check_cuda(cudaEventRecord(stop.get(), stream), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(stop.get()), "cudaEventSynchronize (product timing)");
    if (ran) check_cuda(cudaEventElapsedTime(&ms[i], start.get(), stop.get()), "cudaEventElapsedTime");
  }
  int best = 0;
  for (int i = 1; i < count; ++i)
    if (ms[i] >= 0 && (ms[best] < 0 || ms[i] < ms[best] * (best == 0 ? kRequiredGain : 1.0f))) best = i;
  return candidates[best].algo;
}

// Column-major view: Dᵀ[n, m] = op(B)ᵀ · op(A)ᵀ, where a stored row-major [r, c] matrix is the
// column-major [c, r] matrix X̃ = Xᵀ; op(B)ᵀ is B̃ when B is not transposed, B̃ᵀ otherwise.
std::unique_ptr<Plan> make_plan(const PlanKey& key, int64_t m, int64_t n, int64_t k, const Operands& operands) {
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
  cublasLtMatmulHeuristicResult_t candidates[kCandidates] = {};
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
  plan->algo = choose_algorithm(*plan, candidates, found, operands);
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
  const PlanKey key{a.dtype, d_type, a.rows, a.cols, b.rows, b.cols, a.transpose, b.transpose};
  std::unique_ptr<Plan>& plan = plans[key];
  if (!plan) plan = make_plan(key, m, n, k, {b.data, a.data, size_t(m * n) * dtype_size(d_type), alpha, beta});
  Context& ctx = context();
  check_cublas(cublasLtMatmul(ctx.handle, plan->op, &alpha, b.data, plan->a, a.data, plan->b, &beta, d, plan->d, d,
                              plan->d, &plan->algo, ctx.workspace, kWorkspaceBytes, cudaStreamPerThread),
               "cublasLtMatmul");
}

}  // namespace mamba::ops::cuda_detail
