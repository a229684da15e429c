// CUDA embedding lookup and its gradient.
//
// Forward: one thread per output element (rows of d contiguous), reading the weight row of the
// row's id (the entry points in ops/embedding.cpp have checked every id). Backward: atomics into
// the float32 gradient, one per element of dout.
#include <cuda_fp16.h>

#include "ops/cuda/common.cuh"
#include "ops/embedding.h"

namespace mamba::ops {
namespace {
using namespace cuda_detail;

__device__ __forceinline__ float widen(float x) { return x; }
__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float widen(__half x) { return __half2float(x); }

template <typename W, typename Id>
__global__ void embedding_forward_kernel(const W* weight, const Id* ids, int64_t count, int d, float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count * d) return;
  const int64_t row = i / d;
  out[i] = widen(weight[int64_t(ids[row]) * d + i % d]);
}

template <typename Id>
__global__ void embedding_backward_kernel(const Id* ids, const float* dout, int64_t count, int d, float* dweight) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count * d) return;
  atomicAdd(dweight + int64_t(ids[i / d]) * d + i % d, dout[i]);
}

void check_id_tensor(const Tensor& ids) {
  require_cuda_tensor(ids, "embedding ids");
  MAMBA_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64, "embedding ids: expected i32 or i64, got ",
              dtype_name(ids.dtype()));
}

template <typename Id>
Tensor forward(const Tensor& weight, const Tensor& ids) {
  const int64_t count = ids.numel();
  const int d = int(weight.size(1));
  Tensor out = Tensor::empty({count, d}, DType::f32, Device::cuda);
  const int64_t n = count * d;
  if (n == 0) return out;
  const Id* id = ids.data<Id>();
  float* o = out.data<float>();
  switch (weight.dtype()) {
    case DType::f32:
      embedding_forward_kernel<<<blocks_for(n, 256), 256>>>(weight.data<float>(), id, count, d, o);
      break;
    case DType::bf16:
      embedding_forward_kernel<<<blocks_for(n, 256), 256>>>(static_cast<const __nv_bfloat16*>(weight.raw()), id, count,
                                                            d, o);
      break;
    case DType::f16:
      embedding_forward_kernel<<<blocks_for(n, 256), 256>>>(static_cast<const __half*>(weight.raw()), id, count, d, o);
      break;
    default:
      fail("embedding weight: expected f32, bf16 or f16, got ", dtype_name(weight.dtype()));
  }
  check_launch("embedding forward");
  return out;
}

}  // namespace

namespace cuda {

Tensor embedding_forward(const Tensor& weight, const Tensor& ids) {
  require_cuda_tensor(weight, "embedding weight");
  MAMBA_CHECK(weight.ndim() == 2, "embedding weight: expected [V, d], got ", shape_string(weight.shape()));
  check_id_tensor(ids);
  return ids.dtype() == DType::i32 ? forward<int32_t>(weight, ids) : forward<int64_t>(weight, ids);
}

void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dweight) {
  check_id_tensor(ids);
  require_cuda_tensor(dweight, "embedding dweight");
  check_dtype(dweight, DType::f32, "embedding dweight");
  MAMBA_CHECK(dweight.ndim() == 2, "embedding dweight: expected [V, d], got ", shape_string(dweight.shape()));
  const int64_t count = ids.numel();
  const int d = int(dweight.size(1));
  require_cuda_tensor(dout, "embedding dout");
  check_shape(dout, {count, d}, "embedding dout");
  check_dtype(dout, DType::f32, "embedding dout");
  const int64_t n = count * d;
  if (n == 0) return;
  if (ids.dtype() == DType::i32) {
    embedding_backward_kernel<<<blocks_for(n, 256), 256>>>(ids.data<int32_t>(), dout.data<float>(), count, d,
                                                           dweight.data<float>());
  } else {
    embedding_backward_kernel<<<blocks_for(n, 256), 256>>>(ids.data<int64_t>(), dout.data<float>(), count, d,
                                                           dweight.data<float>());
  }
  check_launch("embedding backward");
}

}  // namespace cuda
}  // namespace mamba::ops
