// The CUDA in-projection of a decode step (ops/in_projection_step.h): up to 16 sequences, one
// decode_matvec launch with the RMSNorm prologue and the conv-step epilogue on the x half where it
// fits; else, for up to kOneProductCudaRows sequences, the norm, one product over all of W_in (as
// linear_forward_split runs it there) and one kernel for the conv step of the x half and the copy
// of the z half, where the ops would copy both halves out first and then run the conv step.
#include "ops/causal_conv1d.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/decode_matvec.cuh"
#include "ops/in_projection_step.h"
#include "ops/linear.h"

namespace mamba::ops::cuda {

namespace {
std::optional<InProjectionOutputs> product_then_conv_step(const InProjectionStep& in, Tensor& conv_state) {
  const int64_t batch = in.norm.x.size(0), channels = in.conv_weight.size(0);
  if (batch > kOneProductCudaRows || in.weight.size(1) == 0) return std::nullopt;
  const NormOutputs normed = ops::add_norm_forward(in.norm);
  const Tensor xz = ops::linear_forward(normed.out, in.weight, in.bias);
  Tensor z = Tensor::empty({batch, channels}, xz.dtype(), Device::cuda);
  const Tensor conv_weight = in.conv_weight.view({channels, in.conv_weight.size(-1)});
  Tensor x_conv = causal_conv1d_step_first_half({xz, conv_weight, in.conv_bias, {}, {}, true}, conv_state, z);
  return InProjectionOutputs{x_conv, z, normed.residual_out};
}
}  // namespace

std::optional<InProjectionOutputs> in_projection_step(const InProjectionStep& in, Tensor& conv_state) {
  using namespace cuda_detail;
  const Tensor& x = in.norm.x;
  const int64_t batch = x.size(0), d = x.size(1), channels = in.conv_weight.size(0);
  const bool residual_fits =
      !in.norm.residual.defined() || (in.norm.residual.dtype() == DType::f32 && aligned16(in.norm.residual.raw()));
  // At 16 rows of the 130m shape every block stages and normalises all rows (72 KB of x and the
  // residual per block over 96 blocks), yet since the staging is one pass (docs/perf/cuda_model.md
  // m47, m49) the fused kernel beats the three kernels of the product path there too (0.654 against
  // 0.667 ms a step); it was slower with two passes (m31).
  if (x.dtype() != DType::bf16 || in.weight.dtype() != DType::bf16 || !residual_fits ||
      !decode_matvec_fits(batch, d, 2 * channels, x.raw(), in.weight.raw(), channels))
    return product_then_conv_step(in, conv_state);
  require_cuda_tensor(conv_state, "in_projection_step conv state");
  const Tensor norm_weight = float32_on_device(in.norm.weight, "in_projection_step norm weight");
  const Tensor bias = in.bias.defined() ? float32_on_device(in.bias, "in_projection_step bias") : Tensor{};
  const Tensor conv_weight = float32_on_device(in.conv_weight, "in_projection_step conv weight");
  const Tensor conv_bias =
      in.conv_bias.defined() ? float32_on_device(in.conv_bias, "in_projection_step conv bias") : Tensor{};
  if (!aligned16(norm_weight.raw())) return product_then_conv_step(in, conv_state);

  InProjectionOutputs out{Tensor::empty({batch, channels}, DType::bf16, Device::cuda),
                          Tensor::empty({batch, channels}, DType::bf16, Device::cuda),
                          Tensor::empty({batch, d}, DType::f32, Device::cuda)};
  DecodeMatvecArgs args;
  args.x = static_cast<const __nv_bfloat16*>(x.raw());
  args.rows = int(batch);
  args.k = int(d);
  args.weight = static_cast<const __nv_bfloat16*>(in.weight.raw());
  args.n = int(2 * channels);
  args.bias = data_or_null<float>(bias);
  args.residual = in.norm.residual.defined() ? in.norm.residual.data<float>() : nullptr;
  args.norm_weight = norm_weight.data<float>();
  args.eps = in.norm.eps;
  args.residual_out = out.residual_out.data<float>();
  args.pieces = 2;
  args.out[0] = static_cast<__nv_bfloat16*>(out.x_conv.raw());
  args.out[1] = static_cast<__nv_bfloat16*>(out.z.raw());
  args.piece_begin[1] = int(channels);
  args.piece_begin[2] = int(2 * channels);
  args.conv_state = conv_state.data<float>();
  args.conv_weight = conv_weight.data<float>();
  args.conv_bias = data_or_null<float>(conv_bias);
  args.conv_width = int(in.conv_weight.size(-1));
  decode_matvec(args);
  return out;
}

}  // namespace mamba::ops::cuda
