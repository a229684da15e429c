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

}  // namespace
}  // namespace mamba::ops
