#include <cuda_fp16.h>

#include "ops/cuda/common.cuh"

namespace mamba::ops::cuda_detail {

int multiprocessor_count() {
  static const int count = [] {
    int device = 0, sms = 0;
    check_cuda(cudaGetDevice(&device), "cudaGetDevice");
    check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    return sms;
  }();
  return count;
}

namespace {
template <typename T>
__global__ void widen_kernel(const T* src, float* dst, int64_t n) {
  wait_for_previous_kernels();  // no early launch of the next kernel: these also convert weights
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  if constexpr (std::is_same_v<T, __half>)
    dst[i] = __half2float(src[i]);
  else
    dst[i] = __bfloat162float(src[i]);
}
__global__ void narrow_kernel(const float* src, __nv_bfloat16* dst, int64_t n) {
  wait_for_previous_kernels();  // no early launch of the next kernel: these also convert weights
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = __float2bfloat16_rn(src[i]);
}
}  // namespace

Tensor bf16_on_device(const Tensor& t, const char* name) {
  require_cuda_tensor(t, name);
  if (t.dtype() == DType::bf16) return t;
  MAMBA_CHECK(t.dtype() == DType::f32, name, ": expected f32 or bf16, got ", dtype_name(t.dtype()));
  Tensor out = Tensor::empty(t.shape(), DType::bf16, Device::cuda);
  const int64_t n = t.numel();
  if (n == 0) return out;
  launch_overlapping("narrow to bf16", narrow_kernel, dim3(blocks_for(n, 256)), dim3(256), 0, t.data<float>(),
                     static_cast<__nv_bfloat16*>(out.raw()), n);
  return out;
}

Tensor float32_on_device(const Tensor& t, const char* name) {
  require_cuda_tensor(t, name);
  if (t.dtype() == DType::f32) return t;
  MAMBA_CHECK(t.dtype() == DType::bf16 || t.dtype() == DType::f16, name, ": expected f32, bf16 or f16, got ",
              dtype_name(t.dtype()));
  Tensor out = Tensor::empty(t.shape(), DType::f32, Device::cuda);
  const int64_t n = t.numel();
  if (n == 0) return out;
  if (t.dtype() == DType::f16)
    launch_overlapping("widen to float32", widen_kernel<__half>, dim3(blocks_for(n, 256)), dim3(256), 0,
                       static_cast<const __half*>(t.raw()), out.data<float>(), n);
  else
    launch_overlapping("widen to float32", widen_kernel<__nv_bfloat16>, dim3(blocks_for(n, 256)), dim3(256), 0,
                       static_cast<const __nv_bfloat16*>(t.raw()), out.data<float>(), n);
  return out;
}

DType product_dtype(const Tensor& a, const Tensor& b) {
  return a.dtype() == DType::bf16 || b.dtype() == DType::bf16 ? DType::bf16 : DType::f32;
}

Tensor on_device_as(const Tensor& t, DType dtype, const char* name) {
  if (t.dtype() == dtype) return t;
  Tensor wide = float32_on_device(t, name);
  return dtype == DType::f32 ? wide : bf16_on_device(wide, name);
}

}  // namespace mamba::ops::cuda_detail
