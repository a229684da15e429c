#include <cublasLt.h>

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

// Owns the descriptors of one call.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  ~Descriptors() {
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

}  // namespace

void gemm(const GemmOperand& a, const GemmOperand& b, void* d, DType d_type, float alpha, float beta) {
  MAMBA_CHECK(a.dtype == b.dtype, "gemm (cuda): operand dtypes differ (", dtype_name(a.dtype), " and ",
              dtype_name(b.dtype), ")");
  const int64_t m = a.transpose ? a.cols : a.rows, k = a.transpose ? a.rows : a.cols;
  const int64_t n = b.transpose ? b.rows : b.cols;
  MAMBA_CHECK((b.transpose ? b.cols : b.rows) == k, "gemm (cuda): inner dimensions differ");
  if (m == 0 || n == 0) return;
  // Column-major view: Dᵀ[n, m] = op(B)ᵀ · op(A)ᵀ, where a stored row-major [r, c] matrix is the
  // column-major [c, r] matrix X̃ = Xᵀ; op(B)ᵀ is B̃ when B is not transposed, B̃ᵀ otherwise.
  Context& ctx = context();
  Descriptors desc;
  const cudaDataType_t in_type = cuda_type(a.dtype), out_type = cuda_type(d_type);
  check_cublas(cublasLtMatmulDescCreate(&desc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t op_first = b.transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = a.transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
  check_cublas(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)),
               "set TRANSA");
  check_cublas(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)),
               "set TRANSB");
  // Stored column-major shapes (rows = leading dimension) of B̃ and Ã.
  check_cublas(cublasLtMatrixLayoutCreate(&desc.a, in_type, uint64_t(b.cols), uint64_t(b.rows), b.cols),
               "layout of the first operand");
  check_cublas(cublasLtMatrixLayoutCreate(&desc.b, in_type, uint64_t(a.cols), uint64_t(a.rows), a.cols),
               "layout of the second operand");
  check_cublas(cublasLtMatrixLayoutCreate(&desc.d, out_type, uint64_t(n), uint64_t(m), n), "layout of the result");
  check_cublas(cublasLtMatmulPreferenceCreate(&desc.preference), "cublasLtMatmulPreferenceCreate");
  const size_t workspace = kWorkspaceBytes;
  check_cublas(cublasLtMatmulPreferenceSetAttribute(desc.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &workspace, sizeof(workspace)),
               "set workspace");
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  check_cublas(cublasLtMatmulAlgoGetHeuristic(ctx.handle, desc.op, desc.a, desc.b, desc.d, desc.d, desc.preference, 1,
                                              &heuristic, &found),
               "cublasLtMatmulAlgoGetHeuristic");
  MAMBA_CHECK(found > 0, "gemm (cuda): cuBLASLt has no algorithm for a ", m, "×", k, " by ", k, "×", n, " ",
              dtype_name(a.dtype), " product");
  check_cublas(cublasLtMatmul(ctx.handle, desc.op, &alpha, b.data, desc.a, a.data, desc.b, &beta, d, desc.d, d, desc.d,
                              &heuristic.algo, ctx.workspace, kWorkspaceBytes, nullptr),
               "cublasLtMatmul");
}

}  // namespace mamba::ops::cuda_detail
