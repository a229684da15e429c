// CUDA argmax over rows (ops/argmax.h): one block per row; each thread keeps the best (value,
// index) of its columns, then warps and the block combine them, the smaller index winning ties, so
// the result is the first maximum whatever the thread count. Where rows start on 16-byte
// boundaries a thread issues kRound 16-byte loads before it compares any: at batch 1 the row is
// the whole step's tail, and one block with a load or two in flight per thread took ≈ 24 µs over
// 50,280 logits.
#include "ops/argmax.h"
#include "ops/cuda/common.cuh"

namespace mamba::ops {
namespace {
using namespace cuda_detail;

constexpr int kThreads = 1024;
constexpr int kRound = 4;

struct Best {
  float value;
  int index;  // −1: nothing seen yet
};

__device__ __forceinline__ Best better(Best a, Best b) {
  if (b.index < 0) return a;
  if (a.index < 0 || b.value > a.value || (b.value == a.value && b.index < a.index)) return b;
  return a;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    argmax_kernel(const T* x, int64_t width, int columns, bool vector_rows, int32_t* out, int32_t* also_out) {
  constexpr int kPer = 16 / int(sizeof(T));
  __shared__ Best partial[kThreads / 32];
  wait_for_previous_kernels();
  allow_next_kernel_launch();
  const T* row = x + int64_t(blockIdx.x) * width;
  Best best{0.0f, -1};
  auto consider = [&](float v, int j) {
    if (v == v) best = better(best, Best{v, j});  // NaN is never chosen
  };
  int scalar_from = 0;
  if (vector_rows) {
    const int vectors = columns / kPer;
    for (int first = threadIdx.x; first < vectors; first += kThreads * kRound) {
      float values[kRound][kPer];
      int at[kRound];
#pragma unroll
      for (int r = 0; r < kRound; ++r) {
        // Past the end: the last vector again, which changes nothing.
        at[r] = min(first + r * kThreads, vectors - 1);
        load_packed<T, kPer>(row + int64_t(at[r]) * kPer, values[r]);
      }
#pragma unroll
      for (int r = 0; r < kRound; ++r)
#pragma unroll
        for (int i = 0; i < kPer; ++i) consider(values[r][i], at[r] * kPer + i);
    }
    scalar_from = vectors * kPer;
  }
  for (int j = scalar_from + threadIdx.x; j < columns; j += kThreads) consider(to_float(row[j]), j);
  for (int offset = 16; offset > 0; offset /= 2)
    best = better(
        best, Best{__shfl_xor_sync(0xffffffffu, best.value, offset), __shfl_xor_sync(0xffffffffu, best.index, offset)});
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) best = better(best, partial[w]);
    const int32_t id = best.index < 0 ? 0 : best.index;
    out[blockIdx.x] = id;
    if (also_out) also_out[blockIdx.x] = id;
  }
}

}  // namespace

namespace cuda {

namespace {
void launch_argmax(const Tensor& x, int64_t columns, int32_t* out, int32_t* also_out) {
  require_cuda_tensor(x, "argmax_rows x");
  MAMBA_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::bf16, "argmax_rows (cuda): x must be f32 or bf16, got ",
              dtype_name(x.dtype()));
  const int64_t rows = x.size(0), width = x.size(1), n = columns < 0 ? width : columns;
  MAMBA_CHECK(n <= INT32_MAX, "argmax_rows (cuda): rows of ", n, " columns are too long");
  if (rows == 0) return;
  const bool vector_rows = aligned16(x.raw()) && width * int64_t(dtype_size(x.dtype())) % 16 == 0;
  if (x.dtype() == DType::f32)
    launch_overlapping("argmax_rows", argmax_kernel<float>, dim3(unsigned(rows)), dim3(kThreads), 0, x.data<float>(),
                       width, int(n), vector_rows, out, also_out);
  else
    launch_overlapping("argmax_rows", argmax_kernel<__nv_bfloat16>, dim3(unsigned(rows)), dim3(kThreads), 0,
                       static_cast<const __nv_bfloat16*>(x.raw()), width, int(n), vector_rows, out, also_out);
}
}  // namespace

Tensor argmax_rows(const Tensor& x, int64_t columns) {
  Tensor out = Tensor::empty({x.size(0)}, DType::i32, Device::cuda);
  launch_argmax(x, columns, out.data<int32_t>(), nullptr);
  return out;
}

void argmax_rows_into(const Tensor& x, int64_t columns, const std::vector<Tensor>& into) {
  launch_argmax(x, columns, into[0].data<int32_t>(), into.size() > 1 ? into[1].data<int32_t>() : nullptr);
}

}  // namespace cuda
}  // namespace mamba::ops
