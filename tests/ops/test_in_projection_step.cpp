#include <gtest/gtest.h>

#include "core/threads.h"
#include "op_testing.h"
#include "ops/causal_conv1d.h"
#include "ops/in_projection_step.h"
#include "ops/linear.h"
#include "ops/norm.h"

namespace mamba::ops {
namespace {

using testing::random_tensor;

// The CPU path (the ops one after another) against the same composition of float64 reference
// ops: x_conv, z, residual_out and the shifted conv state; batch 3, d and C not multiples of 8.
TEST(OpsInProjectionStep, CpuMatchesComposedReference) {
  set_num_threads(2);
  Rng rng(61);
  const int64_t batch = 3, d = 29, C = 23, K = 4;
  InProjectionStep in{{random_tensor({batch, d}, DType::f32, rng),
                       random_tensor({batch, d}, DType::f32, rng),
                       random_tensor({d}, DType::f32, rng, 0.5, 1.5),
                       {},
                       1e-5f,
                       NormKind::rms},
                      random_tensor({2 * C, d}, DType::f32, rng, -0.3, 0.3),
                      random_tensor({2 * C}, DType::f32, rng),
                      random_tensor({C, 1, K}, DType::f32, rng),
                      random_tensor({C}, DType::f32, rng)};
  Tensor state = random_tensor({batch, C, K - 1}, DType::f32, rng);
  Tensor ref_state = state.to(DType::f64);
  const InProjectionOutputs out = in_projection_step(in, state);

  const NormOutputs normed = ref::add_norm_forward(in.norm);
  const Tensor xz = ref::linear_forward(normed.out, in.weight, in.bias);
  Tensor x_half = Tensor::empty({batch, C}, DType::f64), z_half = Tensor::empty({batch, C}, DType::f64);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < C; ++c) {
      x_half.data<double>()[b * C + c] = xz.data<double>()[b * 2 * C + c];
      z_half.data<double>()[b * C + c] = xz.data<double>()[b * 2 * C + C + c];
    }
  const Tensor x_conv =
      ref::causal_conv1d_step({x_half, in.conv_weight.view({C, K}), in.conv_bias, {}, {}, true}, ref_state);
  EXPECT_LT(relative_error(out.x_conv, x_conv), 1e-5);
  EXPECT_LT(relative_error(out.z, z_half), 1e-5);
  EXPECT_LT(relative_error(out.residual_out, normed.residual_out), 1e-6);
  EXPECT_LT(relative_error(state, ref_state), 1e-5);
  EXPECT_ERROR_MENTIONS(in_projection_step(in, ref_state), "conv state");
}

// The CPU's fused path (one pool run: the products, then each chunk's conv step) is bitwise equal
// to the ops one after another, for batch 1 and batch 2, f32 and bf16 W_in, conv widths 4 (the
// vectorised loop) and 3, and a C whose chunks of W_in rows straddle the x and z halves.
TEST(OpsInProjectionStep, CpuFusedPathEqualsTheOps) {
  set_num_threads(2);
  for (int64_t batch : {1, 2})
    for (DType weight_dtype : {DType::f32, DType::bf16})
      for (int64_t K : {4, 3}) {
        SCOPED_TRACE(detail::concat("batch ", batch, " W_in ", dtype_name(weight_dtype), " K ", K));
        Rng rng(67);
        const int64_t d = 40, C = 200;
        InProjectionStep in{{random_tensor({batch, d}, DType::f32, rng),
                             random_tensor({batch, d}, DType::f32, rng),
                             random_tensor({d}, DType::f32, rng, 0.5, 1.5),
                             {},
                             1e-5f,
                             NormKind::rms},
                            random_tensor({2 * C, d}, weight_dtype, rng, -0.3, 0.3),
                            random_tensor({2 * C}, DType::f32, rng),
                            random_tensor({C, K}, DType::f32, rng),
                            random_tensor({C}, DType::f32, rng)};
        Tensor state = random_tensor({batch, C, K - 1}, DType::f32, rng);
        Tensor ops_state = state.clone();
        const InProjectionOutputs out = in_projection_step(in, state);

        const NormOutputs normed = add_norm_forward(in.norm);
        const std::vector<Tensor> xz = linear_forward_split(normed.out, in.weight, {C, C}, in.bias);
        const Tensor x_conv = causal_conv1d_step({xz[0], in.conv_weight, in.conv_bias, {}, {}, true}, ops_state);
        EXPECT_EQ(out.x_conv.to_double_vector(), x_conv.to_double_vector());
        EXPECT_EQ(out.z.to_double_vector(), xz[1].to_double_vector());
        EXPECT_EQ(out.residual_out.to_double_vector(), normed.residual_out.to_double_vector());
        EXPECT_EQ(state.to_double_vector(), ops_state.to_double_vector());
      }
}

}  // namespace
}  // namespace mamba::ops
