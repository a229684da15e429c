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
#include "ops/cpu/step_work.h"
#include "ops/cpu/vec.h"
#include "ops/linear.h"

namespace mamba::ops::cpu {

std::optional<InProjectionWork> prepare_in_projection_step(const InProjectionStep& in, Tensor& conv_state) {
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
  InProjectionWork work{
      {Tensor::empty({batch, channels}, DType::f32), Tensor::empty({batch, channels}, DType::f32), normed.residual_out},
      {2 * channels, stream_chunk_rows(in.weight), {}}};
  // The lambda holds the tensors whose pointers it uses.
  work.rows.run = [batch, channels, width, bias, conv_weight, conv_bias, x_weight, z_weight, x_in, state = conv_state,
                   x_conv = work.out.x_conv, z = work.out.z, normed = normed.out](int64_t r0, int64_t r1) {
    const float* n = normed.data<float>();
    const float* b = bias.defined() ? bias.data<float>() : nullptr;
    const ConvStepPointers conv{batch,
                                channels,
                                width,
                                x_in.data<float>(),
                                conv_weight.data<float>(),
                                conv_bias.defined() ? conv_bias.data<float>() : nullptr,
                                state.data<float>(),
                                x_conv.data<float>(),
                                true};
    // Rows [h0, h1) of one half of the product (its own output [batch, C]), plus the bias.
    auto project = [&](const Tensor& half, float* y, const float* half_bias, int64_t h0, int64_t h1) {
      stream_x_wt_rows(n, batch, half, h0, h1, y, channels);
      if (half_bias)
        for (int64_t row = 0; row < batch; ++row)
          for (int64_t c = h0; c < h1; ++c) y[row * channels + c] += half_bias[c];
    };
    if (r0 < channels) {
      const int64_t end = std::min(r1, channels);
      project(x_weight, x_in.data<float>(), b, r0, end);
      conv_step_channels(conv, r0, end);
    }
    if (r1 > channels)
      project(z_weight, z.data<float>(), b ? b + channels : nullptr, std::max(r0, channels) - channels, r1 - channels);
  };
  return work;
}

std::optional<InProjectionOutputs> in_projection_step(const InProjectionStep& in, Tensor& conv_state) {
  std::optional<InProjectionWork> work = prepare_in_projection_step(in, conv_state);
  if (!work) return std::nullopt;
  parallel_for_chunks(work->rows.items, work->rows.chunk, [&](int64_t r0, int64_t r1, int) { work->rows.run(r0, r1); });
  return work->out;
}

}  // namespace mamba::ops::cpu
