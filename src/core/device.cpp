#include "core/device.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"

#ifdef MAMBACPP_CUDA
#include <cuda_runtime_api.h>
#endif

namespace mamba {

const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

Device device_from_name(const std::string& name, const std::string& what) {
  if (name == "cpu") return Device::cpu;
  if (name == "cuda") return Device::cuda;
  fail(what, ": unknown device '", name, "' (expected cpu or cuda)");
}

bool cuda_compiled() {
#ifdef MAMBACPP_CUDA
  return true;
#else
  return false;
#endif
}

bool cuda_available() {
#ifdef MAMBACPP_CUDA
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
#else
  return false;
#endif
}

#ifdef MAMBACPP_CUDA
static void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) fail("CUDA ", what, " failed: ", cudaGetErrorString(status));
}
#endif

[[maybe_unused]] static void require_cuda() {
  MAMBA_CHECK(cuda_compiled(), "--device cuda: this build of mambacpp has no CUDA support (nvcc was not found when it was built)");
}

void* device_alloc(Device d, size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (d == Device::cpu) {
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    MAMBA_CHECK(p != nullptr, "out of memory: could not allocate ", bytes, " bytes on the CPU");
    return p;
  }
  require_cuda();
#ifdef MAMBACPP_CUDA
  void* p = nullptr;
  cudaError_t status = cudaMalloc(&p, bytes);
  MAMBA_CHECK(status == cudaSuccess, "out of GPU memory: could not allocate ", bytes, " bytes (", cudaGetErrorString(status), ")");
  return p;
#else
  return nullptr;
#endif
}

void device_free(Device d, void* p) {
  if (d == Device::cpu) {
    std::free(p);
    return;
  }
#ifdef MAMBACPP_CUDA
  cudaFree(p);
#endif
}

void device_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device == Device::cpu && src_device == Device::cpu) {
    std::memcpy(dst, src, bytes);
    return;
  }
  require_cuda();
#ifdef MAMBACPP_CUDA
  cudaMemcpyKind kind = src_device == Device::cpu ? cudaMemcpyHostToDevice
                        : dst_device == Device::cpu ? cudaMemcpyDeviceToHost
                                                    : cudaMemcpyDeviceToDevice;
  cuda_check(cudaMemcpy(dst, src, bytes, kind), "cudaMemcpy");
#endif
}

void device_memset_zero(void* p, Device d, size_t bytes) {
  if (d == Device::cpu) {
    std::memset(p, 0, bytes);
    return;
  }
  require_cuda();
#ifdef MAMBACPP_CUDA
  cuda_check(cudaMemset(p, 0, bytes), "cudaMemset");
#endif
}

}  // namespace mamba
