#include <gtest/gtest.h>

#include "core/threads.h"
#include "op_testing.h"
#include "ops/causal_conv1d.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/mixer_step.h"
#include "ops/norm.h"

namespace mamba::ops {
namespace {

using testing::random_tensor;

// Columns [begin, begin + width) of a [rows, cols] f64 tensor.
Tensor columns(const Tensor& t, int64_t begin, int64_t width) {
  const int64_t rows = t.size(0), cols = t.size(1);
  Tensor out = Tensor::empty({rows, width}, DType::f64);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < width; ++c) out.data<double>()[r * width + c] = t.data<double>()[r * cols + begin + c];
  return out;
}

struct Sizes {
  int64_t batch, d, C, R, N;
};

MixerStep random_step(const Sizes& s, DType weight_dtype, bool biases, Rng& rng) {
  const Tensor none;
  return {{{random_tensor({s.batch, s.d}, DType::f32, rng),
            random_tensor({s.batch, s.d}, DType::f32, rng),
            random_tensor({s.d}, DType::f32, rng, 0.5, 1.5),
            {},
            1e-5f,
            NormKind::rms},
           random_tensor({2 * s.C, s.d}, weight_dtype, rng, -0.3, 0.3),
           biases ? random_tensor({2 * s.C}, DType::f32, rng) : none,
           random_tensor({s.C, 4}, DType::f32, rng),
           biases ? random_tensor({s.C}, DType::f32, rng) : none},
          random_tensor({s.R + 2 * s.N, s.C}, weight_dtype, rng, -0.3, 0.3),
          random_tensor({s.C, s.R}, weight_dtype, rng, -0.5, 0.5),
          random_tensor({s.C}, DType::f32, rng, -2.0, 0.0),
          random_tensor({s.C, s.N}, DType::f32, rng, -2.0, -0.05),
          biases ? random_tensor({s.C}, DType::f32, rng) : none,
          random_tensor({s.d, s.C}, weight_dtype, rng, -0.2, 0.2),
          biases ? random_tensor({s.d}, DType::f32, rng) : none};
}

// The CPU step (one team run) against the same composition of float64 reference ops; C = 40
// leaves a partial block of 16 channels, N = 5 the state update's general loop.
TEST(OpsMixerStep, CpuMatchesComposedReference) {
  set_num_threads(2);
  for (int64_t N : {16, 5}) {
    SCOPED_TRACE(detail::concat("N ", N));
    Rng rng(71);
    const Sizes s{3, 24, 40, 6, N};
    const MixerStep in = random_step(s, DType::f32, true, rng);
    Tensor conv = random_tensor({s.batch, s.C, 3}, DType::f32, rng),
           ssm = random_tensor({s.batch, s.C, N}, DType::f32, rng);
    Tensor ref_conv = conv.to(DType::f64), ref_ssm = ssm.to(DType::f64);
    const MixerStepOutputs out = mamba1_mixer_step(in, conv, ssm);

    const NormOutputs normed = ref::add_norm_forward(in.in_projection.norm);
    const Tensor xz = ref::linear_forward(normed.out, in.in_projection.weight, in.in_projection.bias);
    const Tensor x_conv = ref::causal_conv1d_step(
        {columns(xz, 0, s.C), in.in_projection.conv_weight, in.in_projection.conv_bias, {}, {}, true}, ref_conv);
    const Tensor x_proj = ref::linear_forward(x_conv, in.x_proj_weight, {});
    const Tensor y = ref::selective_state_update(
        mixer_step_scan_inputs(in, {x_conv, columns(xz, s.C, s.C), normed.residual_out},
                               {columns(x_proj, 0, s.R), columns(x_proj, s.R, N), columns(x_proj, s.R + N, N)}),
        ref_ssm);
    const Tensor ref_out = ref::linear_forward(y, in.out_proj_weight, in.out_proj_bias);
    EXPECT_LT(relative_error(out.out, ref_out), 1e-5);
    EXPECT_LT(relative_error(out.residual_out, normed.residual_out), 1e-6);
    EXPECT_LT(relative_error(conv, ref_conv), 1e-5);
    EXPECT_LT(relative_error(ssm, ref_ssm), 1e-5);
  }
}

// The team run is bitwise the ops one after another (in_projection_step, linear_forward_split,
// selective_state_update, linear_forward), for batch 1 and 3, f32 and bf16 weights, with and
// without the optional biases and D, at 1, 2 and 3 threads; C = 200 gives every product several
// chunks per thread.
TEST(OpsMixerStep, CpuTeamRunEqualsTheOps) {
  for (int threads : {2, 1, 3})
    for (int64_t batch : {1, 3})
      for (DType weight_dtype : {DType::f32, DType::bf16})
        for (bool biases : {true, false}) {
          SCOPED_TRACE(detail::concat(threads, " threads, batch ", batch, " weights ", dtype_name(weight_dtype),
                                      biases ? " with biases" : " without biases"));
          set_num_threads(threads);
          Rng rng(73);
          const Sizes s{batch, 64, 200, 8, 16};
          const MixerStep in = random_step(s, weight_dtype, biases, rng);
          Tensor conv = random_tensor({s.batch, s.C, 3}, DType::f32, rng);
          Tensor ssm = random_tensor({s.batch, s.C, s.N}, DType::f32, rng);
          Tensor ops_conv = conv.clone(), ops_ssm = ssm.clone();
          const MixerStepOutputs out = mamba1_mixer_step(in, conv, ssm);

          const InProjectionOutputs projected = in_projection_step(in.in_projection, ops_conv);
          const std::vector<Tensor> pieces = linear_forward_split(projected.x_conv, in.x_proj_weight, {s.R, s.N, s.N});
          const Tensor y = selective_state_update(mixer_step_scan_inputs(in, projected, pieces), ops_ssm);
          const Tensor ops_out = linear_forward(y, in.out_proj_weight, in.out_proj_bias);
          EXPECT_EQ(out.out.to_double_vector(), ops_out.to_double_vector());
          EXPECT_EQ(out.residual_out.to_double_vector(), projected.residual_out.to_double_vector());
          EXPECT_EQ(conv.to_double_vector(), ops_conv.to_double_vector());
          EXPECT_EQ(ssm.to_double_vector(), ops_ssm.to_double_vector());
        }
  set_num_threads(2);
}

TEST(OpsMixerStep, BadShapesNameTheTensor) {
  set_num_threads(2);
  Rng rng(79);
  const Sizes s{2, 24, 40, 6, 16};
  Tensor conv = Tensor::zeros({s.batch, s.C, 3}, DType::f32), ssm = Tensor::zeros({s.batch, s.C, s.N}, DType::f32);
  MixerStep in = random_step(s, DType::f32, true, rng);
  in.x_proj_weight = random_tensor({s.R + 2 * s.N + 1, s.C}, DType::f32, rng);
  EXPECT_ERROR_MENTIONS(mamba1_mixer_step(in, conv, ssm), "x_proj weight");
  in = random_step(s, DType::f32, true, rng);
  in.dt_proj_weight = random_tensor({s.C * s.R}, DType::f32, rng);
  EXPECT_ERROR_MENTIONS(mamba1_mixer_step(in, conv, ssm), "dt_proj weight");
  in = random_step(s, DType::f32, true, rng);
  in.out_proj_weight = random_tensor({s.d, s.C + 1}, DType::f32, rng);
  EXPECT_ERROR_MENTIONS(mamba1_mixer_step(in, conv, ssm), "linear");
  in = random_step(s, DType::f32, true, rng);
  Tensor small_ssm = Tensor::zeros({s.batch, s.C, s.N - 1}, DType::f32);
  EXPECT_ERROR_MENTIONS(mamba1_mixer_step(in, conv, small_ssm), "state");
}

}  // namespace
}  // namespace mamba::ops
