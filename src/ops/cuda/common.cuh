// Helpers shared by the CUDA kernels: error checks, element conversions between the storage
// types (f32, bf16) and float32 arithmetic, and tensor argument checks for device entry points.
// Every kernel runs on the default stream; entry points return once the work is queued, and any
// host read of a result (Tensor::to, cudaMemcpy) waits for it.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#include "core/error.h"
#include "core/tensor.h"

namespace mamba::ops::cuda_detail {

inline void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) fail("CUDA error in ", what, ": ", cudaGetErrorString(status));
}
// Launch errors (bad configuration, too much shared memory) surface here, named by kernel.
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

int multiprocessor_count();

inline void require_cuda_tensor(const Tensor& t, const char* name) {
  MAMBA_CHECK(t.defined(), name, ": tensor is missing");
  MAMBA_CHECK(t.device() == Device::cuda, name, ": expected a tensor on cuda, got one on ", device_name(t.device()));
}
// The optional tensors of an op: absent, or on the GPU.
inline void require_cuda_or_absent(const Tensor& t, const char* name) {
  if (t.defined()) require_cuda_tensor(t, name);
}

template <typename T>
const T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// Storage types the kernels read and write; arithmetic is always float32.
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// kN consecutive elements as one load or store of 2, 4, 8 or 16 bytes (the address aligned to
// that size), widened to or rounded from float32: a warp then moves up to 512 bytes per
// instruction, and kernels that read a few bytes per thread are not bound by load instructions.
template <typename T, int kN>
using PackedVector = std::conditional_t<
    sizeof(T) * kN == 2, uint16_t,
    std::conditional_t<sizeof(T) * kN == 4, uint32_t, std::conditional_t<sizeof(T) * kN == 8, uint2, uint4>>>;

template <typename T, int kN>
__device__ __forceinline__ void load_packed(const T* src, float (&dst)[kN]) {
  static_assert(sizeof(T) * kN <= 16, "at most 16 bytes a load");
  union {
    PackedVector<T, kN> vec;
    T vals[kN];
  } u;
  u.vec = *reinterpret_cast<const PackedVector<T, kN>*>(src);
#pragma unroll
  for (int i = 0; i < kN; ++i) dst[i] = to_float(u.vals[i]);
}

template <typename T, int kN>
__device__ __forceinline__ void store_packed(T* dst, const float (&src)[kN]) {
  static_assert(sizeof(T) * kN <= 16, "at most 16 bytes a store");
  union {
    PackedVector<T, kN> vec;
    T vals[kN];
  } u;
#pragma unroll
  for (int i = 0; i < kN; ++i) u.vals[i] = from_float<T>(src[i]);
  *reinterpret_cast<PackedVector<T, kN>*>(dst) = u.vec;
}

// 16 bytes from device to shared memory without a register round trip; zeros when !valid.
__device__ __forceinline__ void copy_async_16(void* dst, const void* src, bool valid) {
  const auto to = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(to), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void commit_async_copies() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void wait_async_copies() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Waits until at most kPending of this thread's latest commit groups are still in flight.
template <int kPending>
__device__ __forceinline__ void wait_async_copies_but() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// c += A·B on the tensor cores (m16n8k16, bf16 in, f32 accumulate). Lane (g, t) = (lane / 4,
// lane % 4) holds A's rows g (a0, a2) and g + 8 (a1, a3) at k pairs 2t (a0, a1) and 2t + 8 (a2, a3),
// B's column g at the same k pairs (b0, b1), and c's rows g (c[0], c[1]) and g + 8 (c[2], c[3]) at
// columns 2t, 2t + 1.
__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }
__device__ __forceinline__ float softplus(float x) { return x <= 20.0f ? log1pf(__expf(x)) : x; }
constexpr float kLog2e = 1.4426950408889634f;  // exp(x) = exp2(x · kLog2e)

// condition ? a : b as one select instruction, a and b computed whatever the condition. Written as
// a ternary, the compiler may move a's computation under a branch of its own (one per element of
// an unrolled loop), so that the elements' chains of dependent instructions no longer overlap.
__device__ __forceinline__ float select_computed(bool condition, float a, float b) {
  float result;
  asm("{\n .reg .pred p;\n setp.ne.b32 p, %3, 0;\n selp.f32 %0, %1, %2, p;\n}"
      : "=f"(result)
      : "f"(a), "f"(b), "r"(int(condition)));
  return result;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Block-wide sum for blocks of up to 32 warps; every thread gets the total. `scratch` holds 32
// floats of shared memory and may be reused after the call.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

// Programmatic dependent launch (sm_90): a kernel started by launch_overlapping may begin while the
// kernel before it in the stream is still running, once every block of that kernel has called
// allow_next_kernel_launch(); its launch, and its loads of what that kernel does not write
// (weights), then overlap that kernel's work. Such a kernel must call wait_for_previous_kernels()
// in every thread before it reads what earlier kernels wrote or writes anything they read; the wait
// returns once the previous kernel has finished and its writes are visible. Kernels allow the next
// launch only after their own wait, so a kernel never overlaps any but the one right before it,
// and a kernel that never allows it (one that may write weights) has finished before the next
// starts. Both calls are no-ops in a kernel launched the ordinary way.
__device__ __forceinline__ void wait_for_previous_kernels() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_next_kernel_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

template <typename... Params, typename... Args>
void launch_overlapping(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                        Args&&... args) {
  cudaLaunchAttribute overlap{};
  overlap.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  overlap.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = cudaStreamPerThread;
  config.attrs = &overlap;
  config.numAttrs = 1;
  check_cuda(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), name);
}

inline unsigned blocks_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

// Whether 16-byte vector loads and stores may use this address.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// into[j] += Σ_r values[r, j] over rows [rows, n] (f32 or bf16): a block of 32 columns × 8 row
// lanes over kColumnSumRows rows, one atomic per column and block (a linear layer's bias gradient,
// the norm backward's per-block partial rows).
constexpr int kColumnSumRows = 256;
template <typename T>
__global__ void add_column_sums_kernel(const T* values, int64_t rows, int n, float* into) {
  __shared__ float partial[8][33];
  const int cx = threadIdx.x % 32, ry = threadIdx.x / 32, j = blockIdx.x * 32 + cx;
  const int64_t r0 = int64_t(blockIdx.y) * kColumnSumRows, r1 = min(rows, r0 + kColumnSumRows);
  float acc = 0.0f;
  if (j < n)
    for (int64_t r = r0 + ry; r < r1; r += 8) acc += to_float(values[r * n + j]);
  partial[ry][cx] = acc;
  __syncthreads();
  if (ry == 0 && j < n) {
    float sum = 0.0f;
    for (int k = 0; k < 8; ++k) sum += partial[k][cx];
    atomicAdd(into + j, sum);
  }
}

template <typename T>
void add_column_sums(const T* values, int64_t rows, int n, float* into) {
  if (rows == 0 || n == 0) return;
  const dim3 grid(unsigned((n + 31) / 32), blocks_for(rows, kColumnSumRows));
  add_column_sums_kernel<<<grid, 256>>>(values, rows, n, into);
  check_launch("column sums");
}

}  // namespace mamba::ops::cuda_detail

namespace mamba::ops::cuda_detail {
// A float32 copy on the GPU of a small f32 | bf16 | f16 tensor (weights, biases); f32 tensors are
// returned as they are.
Tensor float32_on_device(const Tensor& t, const char* name);
// A bf16 copy on the GPU of an f32 tensor (round to nearest even); bf16 tensors are returned as they are.
Tensor bf16_on_device(const Tensor& t, const char* name);
// The dtype a product of a and b runs in on the tensor cores: bf16 when either is bf16 (float32
// accumulation, as autocast does), else f32.
DType product_dtype(const Tensor& a, const Tensor& b);
// t (f32, bf16 or f16) converted on the GPU to `dtype` (f32 or bf16); t itself when it has it.
Tensor on_device_as(const Tensor& t, DType dtype, const char* name);
}  // namespace mamba::ops::cuda_detail
