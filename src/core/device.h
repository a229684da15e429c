// Where a tensor's memory lives. CUDA support is compiled in when nvcc is found at build
// time (MAMBACPP_CUDA); without it, asking for a CUDA tensor is a clear error.
#pragma once
#include <cstddef>
#include <string>

namespace mamba {

enum class Device : unsigned char { cpu, cuda };

const char* device_name(Device d);
Device device_from_name(const std::string& name, const std::string& what);  // "cpu" | "cuda"

bool cuda_compiled();   // built with CUDA
bool cuda_available();  // built with CUDA and a GPU is present

// Raw allocation on a device; CPU memory is 64-byte aligned.
void* device_alloc(Device d, size_t bytes);
void device_free(Device d, void* p);
// Copies bytes between any two devices (synchronous).
void device_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void device_memset_zero(void* p, Device d, size_t bytes);

}  // namespace mamba
