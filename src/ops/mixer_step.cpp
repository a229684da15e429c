#include "ops/mixer_step.h"

#include "ops/linear.h"

namespace mamba::ops {

ScanInputs mixer_step_scan_inputs(const MixerStep& in, const InProjectionOutputs& projected,
                                  const std::vector<Tensor>& x_proj_pieces) {
  ScanInputs scan;
  scan.u = projected.x_conv;
  scan.delta = x_proj_pieces[0];
  scan.delta_proj = in.dt_proj_weight;
  scan.A = in.A;
  scan.B = x_proj_pieces[1];
  scan.C = x_proj_pieces[2];
  scan.D = in.D;
  scan.z = projected.z;
  scan.delta_bias = in.dt_proj_bias;
  scan.delta_softplus = true;
  return scan;
}

MixerStepOutputs mamba1_mixer_step(const MixerStep& in, Tensor& conv_state, Tensor& ssm_state) {
  check_in_projection_step_inputs(in.in_projection, conv_state);
  MAMBA_CHECK(in.dt_proj_weight.defined() && in.dt_proj_weight.ndim() == 2,
              "mixer step dt_proj weight: expected [C, R], got ",
              in.dt_proj_weight.defined() ? shape_string(in.dt_proj_weight.shape()) : std::string("nothing"));
  MAMBA_CHECK(in.A.defined() && in.A.ndim() == 2, "mixer step A: expected [C, N], got ",
              in.A.defined() ? shape_string(in.A.shape()) : std::string("nothing"));
  const int64_t channels = in.in_projection.conv_weight.size(0), R = in.dt_proj_weight.size(1), N = in.A.size(1);
  check_shape(in.x_proj_weight, {R + 2 * N, channels}, "mixer step x_proj weight");
  if (in.in_projection.norm.x.device() == Device::cpu && in.in_projection.norm.x.dtype() == DType::f32)
    if (auto fused = cpu::mamba1_mixer_step(in, conv_state, ssm_state)) return *fused;
  const InProjectionOutputs projected = in_projection_step(in.in_projection, conv_state);
  const std::vector<Tensor> pieces = linear_forward_split(projected.x_conv, in.x_proj_weight, {R, N, N});
  const Tensor y = selective_state_update(mixer_step_scan_inputs(in, projected, pieces), ssm_state);
  return {linear_forward(y, in.out_proj_weight, in.out_proj_bias), projected.residual_out};
}

}  // namespace mamba::ops
