#include "ops/in_projection_step.h"

#include "ops/causal_conv1d.h"
#include "ops/dispatch.h"
#include "ops/linear.h"

namespace mamba::ops {

void check_in_projection_step_inputs(const InProjectionStep& in, const Tensor& conv_state) {
  check_norm_inputs(in.norm);
  MAMBA_CHECK(in.norm.kind == NormKind::rms && !in.norm.bias.defined(),
              "in_projection_step: the block norm must be an RMSNorm");
  MAMBA_CHECK(in.norm.x.ndim() == 2, "in_projection_step x: expected [batch, d], got ",
              shape_string(in.norm.x.shape()));
  check_linear_inputs(in.norm.x, in.weight, in.bias);
  const Tensor& w = in.conv_weight;
  MAMBA_CHECK(w.defined() && (w.ndim() == 2 || (w.ndim() == 3 && w.size(1) == 1)) && w.size(-1) >= 1 &&
                  dtype_is_float(w.dtype()),
              "in_projection_step conv weight: expected a float tensor [C, K] or [C, 1, K]",
              w.defined() ? ", got " + shape_string(w.shape()) : std::string(" (missing)"));
  const int64_t channels = w.size(0), width = w.size(-1);
  MAMBA_CHECK(in.weight.size(0) == 2 * channels, "in_projection_step: W_in has ", in.weight.size(0),
              " rows, expected 2 × ", channels, " conv channels");
  if (in.conv_bias.defined()) {
    check_shape(in.conv_bias, {channels}, "in_projection_step conv bias");
    MAMBA_CHECK(dtype_is_float(in.conv_bias.dtype()), "in_projection_step conv bias: expected a float dtype");
  }
  check_shape(conv_state, {in.norm.x.size(0), channels, width - 1}, "in_projection_step conv state");
  check_dtype(conv_state, DType::f32, "in_projection_step conv state");
  check_device(w, in.norm.x.device(), "in_projection_step conv weight");
  check_device(in.conv_bias, in.norm.x.device(), "in_projection_step conv bias");
  check_device(conv_state, in.norm.x.device(), "in_projection_step conv state");
}

InProjectionOutputs in_projection_step(const InProjectionStep& in, Tensor& conv_state) {
  check_in_projection_step_inputs(in, conv_state);
#ifdef MAMBACPP_CUDA
  if (in.norm.x.device() == Device::cuda)
    if (auto fused = cuda::in_projection_step(in, conv_state)) return *fused;
#endif
  if (in.norm.x.device() == Device::cpu)
    if (auto fused = cpu::in_projection_step(in, conv_state)) return *fused;
  const int64_t channels = in.conv_weight.size(0);
  NormOutputs normed = add_norm_forward(in.norm);
  std::vector<Tensor> xz = linear_forward_split(normed.out, in.weight, {channels, channels}, in.bias);
  const Tensor conv_weight = in.conv_weight.view({channels, in.conv_weight.size(-1)});
  Tensor x_conv = causal_conv1d_step({xz[0], conv_weight, in.conv_bias, {}, {}, true}, conv_state);
  return {x_conv, xz[1], normed.residual_out};
}

}  // namespace mamba::ops
