// The CPU in-projection of a decode step as one pool run after the norm: threads take chunks of
// W_in's rows as for any streaming product, and a chunk of the x half then runs the conv step and
// SiLU of its channels. Unfused, the conv step ran on one thread between two products while the
// other waited (docs/perf/cpu_model.md, v11). Every output row is the same dot product as in the
// unfused ops, so the results are bitwise equal to them.
#include "ops/in_projection_step.h"

#include <algorithm>

#include "core/threads.h"
#include "ops/cpu/conv_step.h"
#include "ops/cpu/gemm.h"
#include "ops/cpu/vec.h"
#include "ops/linear.h"

namespace mamba::ops::cpu {

std::optional<InProjectionOutputs> in_projection_step(const InProjectionStep& in, Tensor& conv_state) {
  const int64_t batch = in.norm.x.size(0), d = in.norm.x.size(1);
  const int64_t channels = in.conv_weight.size(0), width = in.conv_weight.size(-1);
  if (!use_streaming_kernel(batch, d, in.weight.dtype())) return std::nullopt;
  check_float_weight(in.weight, "linear weight");
  if (in.bias.defined()) check_float_weight(in.bias, "linear bias");
  check_float_weight(in.conv_weight, "conv weight");
  if (in.conv_bias.defined()) check_float_weight(in.conv_bias, "conv bias");
  check_f32_activation(conv_state, "conv state");

  NormOutputs normed = cpu::add_norm_forward(in.norm);
  const Tensor bias = parameter_as_f32(in.bias);
  const Tensor conv_weight = parameter_as_f32(in.conv_weight.view({channels, width}));
  const Tensor conv_bias = parameter_as_f32(in.conv_bias);
  const Tensor x_weight = in.weight.slice(0, channels), z_weight = in.weight.slice(channels, 2 * channels);
  Tensor x_in = Tensor::empty({batch, channels}, DType::f32);
  InProjectionOutputs out{Tensor::empty({batch, channels}, DType::f32), Tensor::empty({batch, channels}, DType::f32),
                          normed.residual_out};
  const float* n = normed.out.data<float>();
  const float* b = bias.defined() ? bias.data<float>() : nullptr;
  float *x = x_in.data<float>(), *z = out.z.data<float>();
  const ConvStepPointers conv{batch,
                              channels,
                              width,
                              x,
                              conv_weight.data<float>(),
                              conv_bias.defined() ? conv_bias.data<float>() : nullptr,
                              conv_state.data<float>(),
                              out.x_conv.data<float>(),
                              true};
  // Rows [r0, r1) of one half of the product (its own output [batch, C]), plus the bias.
  auto project = [&](const Tensor& half, float* y, const float* half_bias, int64_t r0, int64_t r1) {
    stream_x_wt_rows(n, batch, half, r0, r1, y, channels);
    if (half_bias)
      for (int64_t row = 0; row < batch; ++row)
        for (int64_t c = r0; c < r1; ++c) y[row * channels + c] += half_bias[c];
  };
  parallel_for_chunks(2 * channels, stream_chunk_rows(in.weight, batch), [&](int64_t r0, int64_t r1, int) {
    if (r0 < channels) {
      const int64_t end = std::min(r1, channels);
      project(x_weight, x, b, r0, end);
      conv_step_channels(conv, r0, end);
    }
    if (r1 > channels)
      project(z_weight, z, b ? b + channels : nullptr, std::max(r0, channels) - channels, r1 - channels);
  });
  return out;
}

}  // namespace mamba::ops::cpu
