#include "ops/causal_conv1d.h"

#include "ops/dispatch.h"

namespace mamba::ops {

namespace {

// Checks shared by the sequence and step forms: weight [C, K] (or [C, 1, K]) and bias [C].
int64_t check_conv_parameters(const ConvInputs& in, int64_t C) {
  const Tensor& w = in.weight;
  MAMBA_CHECK(w.defined(), "conv weight: tensor is missing");
  bool layout_ok = (w.ndim() == 2 || (w.ndim() == 3 && w.size(1) == 1)) && w.size(0) == C && w.size(-1) >= 1;
  MAMBA_CHECK(layout_ok, "conv weight: expected shape [", C, ", K] (or [", C, ", 1, K]) with K >= 1, got ",
              shape_string(w.shape()));
  MAMBA_CHECK(dtype_is_float(w.dtype()), "conv weight: expected a float dtype, got ", dtype_name(w.dtype()));
  if (in.bias.defined()) {
    check_shape(in.bias, {C}, "conv bias");
    MAMBA_CHECK(dtype_is_float(in.bias.dtype()), "conv bias: expected a float dtype, got ",
                dtype_name(in.bias.dtype()));
  }
  check_device(w, in.x.device(), "conv weight");
  check_device(in.bias, in.x.device(), "conv bias");
  return w.size(-1);
}

}  // namespace

void check_conv_inputs(const ConvInputs& in) {
  MAMBA_CHECK(in.x.defined() && in.x.ndim() == 3, "conv input x: expected a tensor [batch, L, C]",
              in.x.defined() ? ", got shape " + shape_string(in.x.shape()) : std::string(" (missing)"));
  MAMBA_CHECK(dtype_is_float(in.x.dtype()), "conv input x: expected a float dtype, got ", dtype_name(in.x.dtype()));
  const int64_t batch = in.x.size(0), L = in.x.size(1), C = in.x.size(2);
  const int64_t K = check_conv_parameters(in, C);
  if (in.initial_state.defined()) {
    check_shape(in.initial_state, {batch, C, K - 1}, "conv initial_state");
    MAMBA_CHECK(dtype_is_float(in.initial_state.dtype()), "conv initial_state: expected a float dtype, got ",
                dtype_name(in.initial_state.dtype()));
    check_device(in.initial_state, in.x.device(), "conv initial_state");
  }
  if (in.lengths.defined()) {
    check_shape(in.lengths, {batch}, "conv lengths");
    check_dtype(in.lengths, DType::i32, "conv lengths");
    check_device(in.lengths, in.x.device(), "conv lengths");
    Tensor host = in.lengths.device() == Device::cpu ? in.lengths : in.lengths.to(Device::cpu);
    const int32_t* len = host.data<int32_t>();
    for (int64_t b = 0; b < batch; ++b)
      MAMBA_CHECK(len[b] >= 0 && len[b] <= L, "conv lengths: lengths[", b, "] = ", len[b], " is outside [0, ", L, "]");
  }
}

void check_conv_step_inputs(const ConvInputs& step, const Tensor& state) {
  MAMBA_CHECK(step.x.defined() && step.x.ndim() == 2, "conv step input x: expected a tensor [batch, C]",
              step.x.defined() ? ", got shape " + shape_string(step.x.shape()) : std::string(" (missing)"));
  MAMBA_CHECK(dtype_is_float(step.x.dtype()), "conv step input x: expected a float dtype, got ",
              dtype_name(step.x.dtype()));
  const int64_t batch = step.x.size(0), C = step.x.size(1);
  const int64_t K = check_conv_parameters(step, C);
  check_shape(state, {batch, C, K - 1}, "conv state");
  MAMBA_CHECK(dtype_is_float(state.dtype()), "conv state: expected a float dtype, got ", dtype_name(state.dtype()));
  check_device(state, step.x.device(), "conv state");
}

ConvOutputs causal_conv1d_forward(const ConvInputs& in) {
  check_conv_inputs(in);
  MAMBA_OPS_DISPATCH(in.x.device(), "causal_conv1d_forward", causal_conv1d_forward(in));
}

ConvGrads causal_conv1d_backward(const ConvInputs& in, const Tensor& dout, Tensor* dweight_into, Tensor* dbias_into) {
  check_conv_inputs(in);
  check_shape(dout, in.x.shape(), "conv output gradient");
  check_device(dout, in.x.device(), "conv output gradient");
  check_gradient_into(dweight_into, in.weight, in.x.device(), "conv", "weight");
  check_gradient_into(dbias_into, in.bias, in.x.device(), "conv", "bias");
  MAMBA_OPS_DISPATCH(in.x.device(), "causal_conv1d_backward",
                     causal_conv1d_backward(in, dout, dweight_into, dbias_into));
}

Tensor causal_conv1d_step(const ConvInputs& step, Tensor& state) {
  check_conv_step_inputs(step, state);
  MAMBA_OPS_DISPATCH(step.x.device(), "causal_conv1d_step", causal_conv1d_step(step, state));
}

}  // namespace mamba::ops
