// How op entry points choose a backend: by the device of the op's first input. Every other
// tensor of the call must live on that device. A CUDA tensor in a build without CUDA is a clear
// error naming the op, never a link error or a crash.
#pragma once
#include <string>

#include "core/tensor.h"

namespace mamba::ops {

// Throws when a defined tensor `t` (called `name`) is not on `device`.
inline void check_device(const Tensor& t, Device device, const char* name) {
  MAMBA_CHECK(!t.defined() || t.device() == device, name, ": tensor is on ", device_name(t.device()),
              " but the op runs on ", device_name(device));
}

// Throws unless an optional float32 gradient the op adds into (`grad`, null when not given) has
// the shape of the op's parameter `param` and lives on `device`; errors read e.g. "conv bias
// gradient: …".
inline void check_gradient_into(const Tensor* grad, const Tensor& param, Device device, const char* op,
                                const char* param_name) {
  if (!grad) return;
  const std::string name = std::string(op) + " " + param_name + " gradient";
  MAMBA_CHECK(param.defined(), name, ": given, but the ", op, " has no ", param_name);
  check_shape(*grad, param.shape(), name.c_str());
  check_dtype(*grad, DType::f32, name.c_str());
  check_device(*grad, device, name.c_str());
}

// Whether the ops of `device` take bf16 activations (the CUDA kernels do; the CPU kernels compute
// on float32 activations, with 16-bit weights only).
inline bool bf16_activations_supported(Device device) { return device == Device::cuda; }

[[noreturn]] inline void fail_without_cuda(const char* op) {
  fail(op, ": input is a CUDA tensor, but this build of mambacpp has no CUDA support");
}

}  // namespace mamba::ops

// Returns backend::call for the device: cpu::call, cuda::call (CUDA builds), or an error.
#ifdef MAMBACPP_CUDA
#define MAMBA_OPS_DISPATCH(device, op_name, call) \
  do {                                            \
    if ((device) == ::mamba::Device::cuda) {      \
      return cuda::call;                          \
    }                                             \
    return cpu::call;                             \
  } while (0)
#else
#define MAMBA_OPS_DISPATCH(device, op_name, call)                      \
  do {                                                                 \
    if ((device) == ::mamba::Device::cuda) fail_without_cuda(op_name); \
    return cpu::call;                                                  \
  } while (0)
#endif
