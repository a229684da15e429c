// Input validation shared by every selective-scan backend, and the device dispatch.
#include "ops/selective_scan.h"

#include <vector>

#include "ops/elementwise.h"

namespace mamba::ops {

namespace {

// Parameters are f32; the reference also takes f64 (fast backends check for f32 themselves).
void check_parameter_dtype(const Tensor& t, const char* name) {
  MAMBA_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, name, ": expected dtype f32, got ",
              dtype_name(t.dtype()));
}

void check_same_device(const Tensor& t, Device device, const char* name) {
  MAMBA_CHECK(t.device() == device, name, ": expected a tensor on ", device_name(device), " (the device of u), got ",
              device_name(t.device()));
}

// A tensor with the shape, dtype and device given, for activations (inputs and gradients).
void check_activation(const Tensor& t, const Shape& shape, DType dtype, Device device, const char* name) {
  check_shape(t, shape, name);
  check_dtype(t, dtype, name);
  check_same_device(t, device, name);
}

void check_parameter(const Tensor& t, const Shape& shape, Device device, const char* name) {
  check_shape(t, shape, name);
  check_parameter_dtype(t, name);
  check_same_device(t, device, name);
}

// The parts shared by the scan and the step: u's dtype, A, D and delta_bias.
void check_common(const ScanInputs& in, int u_rank, const char* u_layout) {
  MAMBA_CHECK(in.u.defined(), "selective scan: input u is missing");
  MAMBA_CHECK(in.u.ndim() == u_rank, "selective scan: u must have shape ", u_layout, ", got ",
              shape_string(in.u.shape()));
  DType t = in.u.dtype();
  MAMBA_CHECK(t == DType::f32 || t == DType::bf16 || t == DType::f64,
              "selective scan: u must be f32, bf16 or f64, got ", dtype_name(t));
  MAMBA_CHECK(in.A.defined() && in.A.ndim() == 2, "selective scan: A must have shape [D, N], got ",
              in.A.defined() ? shape_string(in.A.shape()) : std::string("nothing"));
  int64_t dim = in.u.size(-1), n_states = in.A.size(1);
  MAMBA_CHECK(n_states >= 1, "selective scan: A must have at least one state column, got shape ",
              shape_string(in.A.shape()));
  Device device = in.u.device();
  check_parameter(in.A, {dim, n_states}, device, "selective scan: A");
  if (in.D.defined()) check_parameter(in.D, {dim}, device, "selective scan: D");
  if (in.delta_bias.defined()) check_parameter(in.delta_bias, {dim}, device, "selective scan: delta_bias");
}

}  // namespace

void check_scan_inputs(const ScanInputs& in) {
  check_common(in, 3, "[batch, L, D]");
  MAMBA_CHECK(!in.delta_proj.defined(), "selective scan: delta_proj is for the decode step only");
  const Shape& shape = in.u.shape();
  int64_t batch = shape[0], length = shape[1], n_states = in.A.size(1);
  DType t = in.u.dtype();
  Device device = in.u.device();
  check_activation(in.delta, shape, t, device, "selective scan: delta");
  check_activation(in.B, {batch, length, n_states}, t, device, "selective scan: B");
  check_activation(in.C, {batch, length, n_states}, t, device, "selective scan: C");
  if (in.z.defined()) check_activation(in.z, shape, t, device, "selective scan: z");
  if (in.initial_state.defined())
    check_parameter(in.initial_state, {batch, shape[2], n_states}, device, "selective scan: initial_state");
  if (in.lengths.defined()) {
    check_activation(in.lengths, {batch}, DType::i32, device, "selective scan: lengths");
    Tensor host = device == Device::cpu ? in.lengths : in.lengths.to(Device::cpu);
    const int32_t* lengths = host.data<int32_t>();
    for (int64_t b = 0; b < batch; ++b)
      MAMBA_CHECK(lengths[b] >= 0 && lengths[b] <= length, "selective scan: lengths[", b, "] = ", lengths[b],
                  " is outside [0, ", length, "] (L of u)");
  }
}

void check_scan_backward_inputs(const ScanInputs& in, const Tensor& dout, const Tensor& dlast_state) {
  check_scan_inputs(in);
  check_activation(dout, in.u.shape(), in.u.dtype(), in.u.device(), "selective scan backward: dout");
  if (dlast_state.defined())
    check_parameter(dlast_state, {in.u.size(0), in.u.size(2), in.A.size(1)}, in.u.device(),
                    "selective scan backward: dlast_state");
}

void check_step_inputs(const ScanInputs& step, const Tensor& state) {
  check_common(step, 2, "[batch, D]");
  const Shape& shape = step.u.shape();
  int64_t batch = shape[0], n_states = step.A.size(1);
  DType t = step.u.dtype();
  Device device = step.u.device();
  if (step.delta_proj.defined()) {
    MAMBA_CHECK(step.delta.defined() && step.delta.ndim() == 2 && step.delta.size(1) >= 1,
                "selective state update: with delta_proj, delta must have shape [batch, R], got ",
                step.delta.defined() ? shape_string(step.delta.shape()) : std::string("nothing"));
    check_activation(step.delta, {batch, step.delta.size(1)}, t, device, "selective state update: delta");
    check_shape(step.delta_proj, {shape[1], step.delta.size(1)}, "selective state update: delta_proj");
    check_same_device(step.delta_proj, device, "selective state update: delta_proj");
    const DType w = step.delta_proj.dtype();
    MAMBA_CHECK(w == DType::f32 || w == DType::bf16 || w == DType::f16 || w == DType::f64,
                "selective state update: delta_proj must be f32, bf16, f16 or f64, got ", dtype_name(w));
  } else {
    check_activation(step.delta, shape, t, device, "selective state update: delta");
  }
  check_activation(step.B, {batch, n_states}, t, device, "selective state update: B");
  check_activation(step.C, {batch, n_states}, t, device, "selective state update: C");
  if (step.z.defined()) check_activation(step.z, shape, t, device, "selective state update: z");
  check_shape(state, {batch, shape[1], n_states}, "selective state update: state");
  check_same_device(state, device, "selective state update: state");
  check_parameter_dtype(state, "selective state update: state");
}

#ifndef MAMBACPP_CUDA
namespace {
[[noreturn]] void fail_no_cuda(const char* op) {
  fail(op, ": u is a CUDA tensor but this build has no CUDA support (rebuild with nvcc available)");
}
}  // namespace
#endif

ScanOutputs selective_scan_forward(const ScanInputs& in) {
  check_scan_inputs(in);
  if (in.u.device() == Device::cuda) {
#ifdef MAMBACPP_CUDA
    return cuda::selective_scan_forward(in);
#else
    fail_no_cuda("selective_scan_forward");
#endif
  }
  if (in.u.dtype() == DType::f64) return ref::selective_scan_forward(in);
  return cpu::selective_scan_forward(in);
}

ScanGrads selective_scan_backward(const ScanInputs& in, const Tensor& dout, const Tensor& dlast_state) {
  check_scan_backward_inputs(in, dout, dlast_state);
  if (in.u.device() == Device::cuda) {
#ifdef MAMBACPP_CUDA
    return cuda::selective_scan_backward(in, dout, dlast_state);
#else
    fail_no_cuda("selective_scan_backward");
#endif
  }
  if (in.u.dtype() == DType::f64) return ref::selective_scan_backward(in, dout, dlast_state);
  return cpu::selective_scan_backward(in, dout, dlast_state);
}

Tensor selective_state_update(const ScanInputs& step, Tensor& state) {
  check_step_inputs(step, state);
  if (step.u.device() == Device::cuda) {
#ifdef MAMBACPP_CUDA
    return cuda::selective_state_update(step, state);
#else
    fail_no_cuda("selective_state_update");
#endif
  }
  if (step.u.dtype() == DType::f64) return ref::selective_state_update(step, state);
  return cpu::selective_state_update(step, state);
}

Tensor selective_state_update_packed(const ScanInputs& step, const Tensor& delta_B_C, Tensor& state) {
  MAMBA_CHECK(step.delta_proj.defined() && step.delta_proj.ndim() == 2,
              "selective state update (packed): needs delta_proj [D, R]");
  MAMBA_CHECK(!step.delta.defined() && !step.B.defined() && !step.C.defined(),
              "selective state update (packed): delta, B and C come in delta_B_C, not apart");
  MAMBA_CHECK(step.A.defined() && step.A.ndim() == 2, "selective state update (packed): needs A [D, N]");
  const int64_t rank = step.delta_proj.size(1), n_states = step.A.size(1);
  MAMBA_CHECK(delta_B_C.defined() && delta_B_C.ndim() == 2 && delta_B_C.size(1) == rank + 2 * n_states,
              "selective state update (packed): delta_B_C must have shape [batch, R + 2N] = [batch, ",
              rank + 2 * n_states, "], got ", delta_B_C.defined() ? shape_string(delta_B_C.shape()) : "nothing");
  if (step.u.defined() && step.u.device() == Device::cuda && delta_B_C.device() == Device::cuda) {
#ifdef MAMBACPP_CUDA
    return cuda::selective_state_update_packed(step, delta_B_C, state);
#else
    fail_no_cuda("selective_state_update_packed");
#endif
  }
  const std::vector<Tensor> pieces = split_columns(delta_B_C, {rank, n_states, n_states});
  ScanInputs apart = step;
  apart.delta = pieces[0];
  apart.B = pieces[1];
  apart.C = pieces[2];
  return selective_state_update(apart, state);
}

}  // namespace mamba::ops
