// CUDA linear layer through cuBLASLt (see gemm.cuh): y = x·Wᵀ + b, dx = dy·W, dW += dyᵀ·x,
// db += Σ_rows dy. Both operands of a product share one dtype, product_dtype: bf16 when x or W is
// bf16 (a float32 x is rounded to bf16 for the product, as autocast does: mixed-precision training
// and bf16 decode read 16-bit weights), else float32. Outputs have x's dtype; weight gradients
// accumulate in float32. Up to 4 rows of float32 x (decode) go through a mat-vec kernel instead
// (small_batch_linear below): float32 x, no rounding of x. Up to 16 rows of bf16 x with bf16 weights
// (bf16 decode) go through the tensor-core decode product (decode_matvec.cuh), which also writes
// column pieces for linear_forward_split.
#include <optional>
#include <type_traits>
#include <vector>

#include "ops/cuda/common.cuh"
#include "ops/cuda/decode_matvec.cuh"
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

// Small batches (decode: M ≤ 4 rows) skip cuBLASLt, whose launch costs more than the product:
// one warp per output column j reads W[j, :] once (16-byte loads, bf16 or f32, four in flight per
// lane) and keeps one float32 sum per row of x, which all warps read through L1 (more rows would
// no longer fit there: cuBLASLt, reading W once for all rows, is faster from 5 rows on).
constexpr int kSmallBatchRows = 4;
constexpr int kGemvWarps = 8;
constexpr int kGemvUnroll = 4;

__device__ __forceinline__ void load8(const float* p, float* v) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p)), b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void load8(const __nv_bfloat16* p, float* v) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(pairs[i]);
    v[2 * i] = f.x, v[2 * i + 1] = f.y;
  }
}

template <typename W, int kMaxRows>
__global__ void small_batch_linear_kernel(const float* __restrict__ x, int m, int k, const W* __restrict__ w, int n,
                                          const float* __restrict__ bias, float* __restrict__ y) {
  const int lane = threadIdx.x % 32, j = blockIdx.x * kGemvWarps + threadIdx.x / 32;
  if (j >= n) return;
  float acc[kMaxRows] = {};
  const W* row = w + int64_t(j) * k;
  for (int c0 = lane * 8; c0 < k; c0 += kGemvUnroll * 32 * 8) {
    float wv[kGemvUnroll][8];
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u)
      if (c0 + u * 256 < k) load8(row + c0 + u * 256, wv[u]);
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int c = c0 + u * 256;
      if (c >= k) break;
#pragma unroll
      for (int i = 0; i < kMaxRows; ++i) {
        if (i < m) {
          float xv[8];
          load8(x + int64_t(i) * k + c, xv);
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[i] = fmaf(wv[u][e], xv[e], acc[i]);
        }
      }
    }
  }
  const float b = bias ? bias[j] : 0.0f;
#pragma unroll
  for (int i = 0; i < kMaxRows; ++i) {
    if (i < m) {
      const float total = warp_sum(acc[i]);
      if (lane == 0) y[int64_t(i) * n + j] = total + b;
    }
  }
}

// Runs y = x·Wᵀ + b with the small-batch kernel when it applies; false leaves it to cuBLASLt.
bool small_batch_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& y) {
  const int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
  if (m > kSmallBatchRows || x.dtype() != DType::f32 || k % 8 != 0 || !aligned16(x.raw()) || !aligned16(weight.raw()) ||
      (weight.dtype() != DType::f32 && weight.dtype() != DType::bf16) || n > INT32_MAX / 2 || k > INT32_MAX / 2)
    return false;
  Tensor b = bias.defined() ? float32_on_device(bias, "linear bias") : Tensor{};
  const float* bp = b.defined() ? b.data<float>() : nullptr;
  const unsigned blocks = unsigned((n + kGemvWarps - 1) / kGemvWarps);
  auto launch = [&](auto max_rows) {
    constexpr int kMax = decltype(max_rows)::value;
    if (weight.dtype() == DType::bf16)
      small_batch_linear_kernel<__nv_bfloat16, kMax>
          <<<blocks, kGemvWarps * 32>>>(x.data<float>(), int(m), int(k),
                                        static_cast<const __nv_bfloat16*>(weight.raw()), int(n), bp, y.data<float>());
    else
      small_batch_linear_kernel<float, kMax><<<blocks, kGemvWarps * 32>>>(
          x.data<float>(), int(m), int(k), weight.data<float>(), int(n), bp, y.data<float>());
  };
  if (m == 1)
    launch(std::integral_constant<int, 1>{});
  else
    launch(std::integral_constant<int, kSmallBatchRows>{});
  check_launch("small-batch linear");
  return true;
}

// Runs y = x·Wᵀ + b through decode_matvec when it takes these inputs (bf16 x and W, at most 16
// rows), writing the consecutive column ranges of y into `pieces`; false leaves the product to
// the other paths.
bool decode_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const std::vector<Tensor>& pieces) {
  const int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
  if (x.dtype() != DType::bf16 || weight.dtype() != DType::bf16 || pieces.size() > size_t(kDecodeMaxPieces) ||
      !decode_matvec_fits(m, k, n, x.raw(), weight.raw()))
    return false;
  Tensor b = bias.defined() ? float32_on_device(bias, "linear bias") : Tensor{};
  DecodeMatvecArgs args;
  args.x = static_cast<const __nv_bfloat16*>(x.raw());
  args.rows = int(m);
  args.k = int(k);
  args.weight = static_cast<const __nv_bfloat16*>(weight.raw());
  args.n = int(n);
  args.bias = data_or_null<float>(b);
  args.pieces = int(pieces.size());
  for (size_t i = 0; i < pieces.size(); ++i) {
    args.out[i] = static_cast<__nv_bfloat16*>(pieces[i].raw());
    args.piece_begin[i + 1] = args.piece_begin[i] + int(pieces[i].size(1));
  }
  decode_matvec(args);
  return true;
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
  if (bias.defined()) check_shape(bias, {n}, "linear bias");
  if (k > 0 && (small_batch_linear(x, weight, bias, y) || decode_linear(x, weight, bias, {y}))) return y;
  if (k == 0) {
    y.zero_();
  } else {
    const DType compute = product_dtype(x, weight);
    Tensor xc = on_device_as(x, compute, "linear x"), w = on_device_as(weight, compute, "linear weight");
    gemm({xc.raw(), compute, m, k, false}, {w.raw(), compute, n, k, true}, y.raw(), y.dtype(), 1.0f, 0.0f);
  }
  if (bias.defined()) {
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

std::optional<std::vector<Tensor>> linear_forward_split(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                                        const std::vector<int64_t>& widths) {
  check_activation(x, "linear x");
  check_weight(weight, x.size(1));
  std::vector<Tensor> pieces;
  for (int64_t width : widths) pieces.push_back(Tensor::empty({x.size(0), width}, x.dtype(), Device::cuda));
  if (x.size(1) == 0 || !decode_linear(x, weight, bias, pieces)) return std::nullopt;
  return pieces;
}

Tensor linear_backward(const Tensor& x, const Tensor& weight, const Tensor& dy, Tensor* dweight, Tensor* dbias,
                       Tensor* dx_into, bool overwrite_dweight) {
  check_activation(x, "linear x");
  const int64_t m = x.size(0), k = x.size(1);
  check_weight(weight, k);
  const int64_t n = weight.size(0);
  require_cuda_tensor(dy, "linear dy");
  check_shape(dy, {m, n}, "linear dy");
  check_dtype(dy, x.dtype(), "linear dy");
  const DType compute = product_dtype(x, weight);
  Tensor dyc = on_device_as(dy, compute, "linear dy");
  if (dx_into) {
    require_cuda_tensor(*dx_into, "linear dx_into");
    check_shape(*dx_into, {m, k}, "linear dx_into");
    check_dtype(*dx_into, x.dtype(), "linear dx_into");
  }
  // With dx_into the product adds onto what is there (beta = 1).
  Tensor dx = dx_into ? *dx_into : Tensor::empty({m, k}, x.dtype(), Device::cuda);
  if (m > 0 && k > 0) {
    if (n == 0) {
      if (!dx_into) dx.zero_();
    } else {
      Tensor w = on_device_as(weight, compute, "linear weight");
      gemm({dyc.raw(), compute, m, n, false}, {w.raw(), compute, n, k, false}, dx.raw(), dx.dtype(), 1.0f,
           dx_into ? 1.0f : 0.0f);
    }
  }
  if (dweight) {
    require_cuda_tensor(*dweight, "linear dweight");
    check_shape(*dweight, {n, k}, "linear dweight");
    check_dtype(*dweight, DType::f32, "linear dweight");
    if (m > 0) {
      Tensor xc = on_device_as(x, compute, "linear x");
      gemm({dyc.raw(), compute, m, n, true}, {xc.raw(), compute, m, k, false}, dweight->raw(), DType::f32, 1.0f,
           overwrite_dweight ? 0.0f : 1.0f);
    } else if (overwrite_dweight) {
      dweight->zero_();
    }
  }
  if (dbias) {
    require_cuda_tensor(*dbias, "linear dbias");
    check_shape(*dbias, {n}, "linear dbias");
    check_dtype(*dbias, DType::f32, "linear dbias");
    if (x.dtype() == DType::f32)
      add_column_sums(dy.data<float>(), m, int(n), dbias->data<float>());
    else
      add_column_sums(static_cast<const __nv_bfloat16*>(dy.raw()), m, int(n), dbias->data<float>());
  }
  return dx;
}

}  // namespace cuda
}  // namespace mamba::ops
