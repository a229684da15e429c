// CUDA linear layer through cuBLASLt (see gemm.cuh): y = x·Wᵀ + b, dx = dy·W, dW += dyᵀ·x,
// db += Σ_rows dy. Both operands of a product share one dtype, product_dtype: bf16 when x or W is
// bf16 (a float32 x is rounded to bf16 for the product, as autocast does: mixed-precision training
// and bf16 decode read 16-bit weights), else float32. Outputs have x's dtype; weight gradients
// accumulate in float32.
#include "ops/cuda/common.cuh"
#include "ops/cuda/gemm.cuh"
#include "ops/linear.h"

namespace mamba::ops {
namespace {
using namespace cuda_detail;

template <typename T>
__global__ void add_bias_kernel(T* y, const float* bias, int64_t rows, int n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * n) y[i] = from_float<T>(to_float(y[i]) + bias[i % n]);
}

// db[j] += Σ_rows dy[r, j]: a block of 32 columns × 8 row lanes, one atomic per column and block.
template <typename T>
__global__ void column_sum_kernel(const T* dy, int64_t rows, int n, int rows_per_block, float* db) {
  __shared__ float partial[8][33];
  const int cx = threadIdx.x % 32, ry = threadIdx.x / 32, j = blockIdx.x * 32 + cx;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_block, r1 = min(rows, r0 + rows_per_block);
  float acc = 0.0f;
  if (j < n)
    for (int64_t r = r0 + ry; r < r1; r += 8) acc += to_float(dy[r * n + j]);
  partial[ry][cx] = acc;
  __syncthreads();
  if (ry == 0 && j < n) {
    float sum = 0.0f;
    for (int k = 0; k < 8; ++k) sum += partial[k][cx];
    atomicAdd(db + j, sum);
  }
}

void check_activation(const Tensor& x, const char* name) {
  require_cuda_tensor(x, name);
  MAMBA_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::bf16, name, ": expected f32 or bf16 on cuda, got ",
              dtype_name(x.dtype()));
  MAMBA_CHECK(x.ndim() == 2, name, ": expected [M, K], got ", shape_string(x.shape()));
}

void check_weight(const Tensor& weight, int64_t k) {
  require_cuda_tensor(weight, "linear weight");
  MAMBA_CHECK(weight.ndim() == 2 && weight.size(1) == k, "linear weight: expected [N, ", k, "], got ",
              shape_string(weight.shape()));
}

}  // namespace

namespace cuda {

Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_activation(x, "linear x");
  const int64_t m = x.size(0), k = x.size(1);
  check_weight(weight, k);
  const int64_t n = weight.size(0);
  Tensor y = Tensor::empty({m, n}, x.dtype(), Device::cuda);
  if (m == 0 || n == 0) return y;
  if (k == 0) {
    y.zero_();
  } else {
    const DType compute = product_dtype(x, weight);
    Tensor xc = on_device_as(x, compute, "linear x"), w = on_device_as(weight, compute, "linear weight");
    gemm({xc.raw(), compute, m, k, false}, {w.raw(), compute, n, k, true}, y.raw(), y.dtype(), 1.0f, 0.0f);
  }
  if (bias.defined()) {
    check_shape(bias, {n}, "linear bias");
    Tensor b = float32_on_device(bias, "linear bias");
    if (x.dtype() == DType::f32)
      add_bias_kernel<<<blocks_for(m * n, 256), 256>>>(y.data<float>(), b.data<float>(), m, int(n));
    else
      add_bias_kernel<<<blocks_for(m * n, 256), 256>>>(static_cast<__nv_bfloat16*>(y.raw()), b.data<float>(), m,
                                                       int(n));
    check_launch("linear bias");
  }
  return y;
}

Tensor linear_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor* dweight, Tensor* dbias) {
  check_activation(x, "linear x");
  const int64_t m = x.size(0), k = x.size(1);
  check_weight(weight, k);
  const int64_t n = weight.size(0);
  require_cuda_tensor(dy, "linear dy");
  check_shape(dy, {m, n}, "linear dy");
  check_dtype(dy, x.dtype(), "linear dy");
  const DType compute = product_dtype(x, weight);
  Tensor dyc = on_device_as(dy, compute, "linear dy");
  Tensor dx = Tensor::empty({m, k}, x.dtype(), Device::cuda);
  if (m > 0 && k > 0) {
    if (n == 0) {
      dx.zero_();
    } else {
      Tensor w = on_device_as(weight, compute, "linear weight");
      gemm({dyc.raw(), compute, m, n, false}, {w.raw(), compute, n, k, false}, dx.raw(), dx.dtype(), 1.0f, 0.0f);
    }
  }
  if (dweight) {
    require_cuda_tensor(*dweight, "linear dweight");
    check_shape(*dweight, {n, k}, "linear dweight");
    check_dtype(*dweight, DType::f32, "linear dweight");
    if (m > 0) {
      Tensor xc = on_device_as(x, compute, "linear x");
      gemm({dyc.raw(), compute, m, n, true}, {xc.raw(), compute, m, k, false}, dweight->raw(), DType::f32, 1.0f, 1.0f);
    }
  }
  if (dbias) {
    require_cuda_tensor(*dbias, "linear dbias");
    check_shape(*dbias, {n}, "linear dbias");
    check_dtype(*dbias, DType::f32, "linear dbias");
    if (m > 0 && n > 0) {
      const int rows_per_block = 256;
      const dim3 grid(unsigned((n + 31) / 32), unsigned((m + rows_per_block - 1) / rows_per_block));
      if (x.dtype() == DType::f32)
        column_sum_kernel<<<grid, 256>>>(dy.data<float>(), m, int(n), rows_per_block, dbias->data<float>());
      else
        column_sum_kernel<<<grid, 256>>>(static_cast<const __nv_bfloat16*>(dy.raw()), m, int(n), rows_per_block,
                                         dbias->data<float>());
      check_launch("linear bias gradient");
    }
  }
  return dx;
}

}  // namespace cuda
}  // namespace mamba::ops
