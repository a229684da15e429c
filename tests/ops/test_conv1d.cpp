#include <gtest/gtest.h>

#include "core/threads.h"
#include "op_testing.h"
#include "ops/causal_conv1d.h"
#include "ops/elementwise.h"

namespace mamba::ops {
namespace {

using testing::random_tensor;

// batch 3, L 11, C 37, K 4; sequence lengths 11, 0 and 2 (shorter than K − 1).
ConvInputs make_inputs(DType act, DType weight_dtype, bool silu, bool with_state, bool with_lengths, Rng& rng,
                       int64_t batch = 3, int64_t L = 11, int64_t C = 37, int64_t K = 4) {
  ConvInputs in;
  in.x = random_tensor({batch, L, C}, act, rng);
  in.weight = random_tensor({C, K}, weight_dtype, rng);
  in.bias = random_tensor({C}, weight_dtype, rng);
  if (with_state) in.initial_state = random_tensor({batch, C, K - 1}, act, rng);
  if (with_lengths) {
    std::vector<double> lengths = {double(L), 0, 2};
    lengths.resize(size_t(batch), double(L));
    in.lengths = Tensor::from_vector(lengths, {batch}, DType::i32);
  }
  in.silu = silu;
  return in;
}

TEST(OpsConv1d, CpuMatchesReference) {
  set_num_threads(2);
  Rng rng(31);
  for (DType wt : {DType::f32, DType::bf16})
    for (bool silu : {true, false})
      for (bool with_state : {true, false})
        for (bool with_lengths : {true, false}) {
          ConvInputs in = make_inputs(DType::f32, wt, silu, with_state, with_lengths, rng);
          ConvOutputs got = cpu::causal_conv1d_forward(in), expected = ref::causal_conv1d_forward(in);
          std::string what = std::string(dtype_name(wt)) + (silu ? " silu" : "") + (with_state ? " state" : "") +
                             (with_lengths ? " lengths" : "");
          EXPECT_LT(relative_error(got.out, expected.out), 1e-5) << what;
          EXPECT_LT(relative_error(got.final_state, expected.final_state), 1e-7) << what;

          Tensor dout = random_tensor(in.x.shape(), DType::f32, rng);
          ConvGrads g = cpu::causal_conv1d_backward(in, dout), e = ref::causal_conv1d_backward(in, dout);
          EXPECT_LT(relative_error(g.dx, e.dx), 1e-5) << what;
          EXPECT_LT(relative_error(g.dweight, e.dweight), 1e-5) << what;
          EXPECT_LT(relative_error(g.dbias, e.dbias), 1e-5) << what;
          EXPECT_EQ(g.dinitial_state.defined(), with_state) << what;
          if (with_state) {
            EXPECT_LT(relative_error(g.dinitial_state, e.dinitial_state), 1e-5) << what;
          }
          // Into the caller's gradients (a model's): added onto what is there, none returned.
          Tensor dw_into = random_tensor(in.weight.shape(), DType::f32, rng);
          Tensor db_into = random_tensor(in.bias.shape(), DType::f32, rng);
          Tensor dw_expected = dw_into.clone(), db_expected = db_into.clone();
          add_(dw_expected, g.dweight);
          add_(db_expected, g.dbias);
          ConvGrads into = causal_conv1d_backward(in, dout, &dw_into, &db_into);
          EXPECT_FALSE(into.dweight.defined() || into.dbias.defined()) << what;
          EXPECT_LT(relative_error(into.dx, g.dx), 1e-7) << what;
          EXPECT_LT(relative_error(dw_into, dw_expected), 1e-6) << what;
          EXPECT_LT(relative_error(db_into, db_expected), 1e-6) << what;
        }
}

TEST(OpsConv1d, LengthsZeroThePaddingAndKeepTheTrueState) {
  Rng rng(32);
  ConvInputs in = make_inputs(DType::f32, DType::f32, true, true, true, rng);
  ConvOutputs o = causal_conv1d_forward(in);
  const int64_t C = 37, K = 4, L = 11;
  // Sequence 1 (length 0): all outputs 0, final state = initial state.
  for (int64_t i = 0; i < L * C; ++i) ASSERT_EQ(o.out.item(L * C + i), 0.0);
  for (int64_t i = 0; i < C * (K - 1); ++i)
    ASSERT_EQ(o.final_state.item(C * (K - 1) + i), in.initial_state.item(C * (K - 1) + i));
  // Sequence 2 (length 2): state = [initial newest slot, x0, x1] per channel; outputs past 2 are 0.
  for (int64_t c = 0; c < C; ++c) {
    const int64_t s = (2 * C + c) * (K - 1);
    EXPECT_EQ(o.final_state.item(s + 0), in.initial_state.item(s + 2));
    EXPECT_EQ(o.final_state.item(s + 1), in.x.item((2 * L + 0) * C + c));
    EXPECT_EQ(o.final_state.item(s + 2), in.x.item((2 * L + 1) * C + c));
    EXPECT_EQ(o.out.item((2 * L + 5) * C + c), 0.0);
  }
  // Padding must not change the result: sequence 2 alone, truncated to length 2, agrees.
  ConvInputs alone;
  std::vector<double> xs;
  for (int64_t i = 0; i < 2 * C; ++i) xs.push_back(in.x.item(2 * L * C + i));
  alone.x = Tensor::from_vector(xs, {1, 2, C}, DType::f32);
  alone.weight = in.weight;
  alone.bias = in.bias;
  alone.initial_state = in.initial_state.slice(2, 3);
  ConvOutputs a = causal_conv1d_forward(alone);
  EXPECT_LT(relative_error(a.final_state, o.final_state.slice(2, 3)), 1e-7);
  EXPECT_LT(relative_error(a.out, o.out.slice(2, 3).view({L * C}).slice(0, 2 * C)), 1e-7);
}

// Enough channels for two threads' ranges, the second starting inside a row (3 × 2731 =
// 8193), with the fixed-width path (K = 4) and the general one.
TEST(OpsConv1d, StepMatchesReferenceAcrossRangeAndRowBoundaries) {
  set_num_threads(2);
  Rng rng(35);
  const int64_t batch = 3, C = 2731;
  for (int64_t K : {4, 3}) {
    ConvInputs in = make_inputs(DType::f32, DType::f32, true, true, false, rng, batch, 1, C, K);
    in.x = in.x.view({batch, C});
    Tensor state = in.initial_state.clone(), ref_state = in.initial_state.to(DType::f64);
    Tensor y = causal_conv1d_step(in, state);
    Tensor y_ref = ref::causal_conv1d_step(in, ref_state);
    EXPECT_LT(relative_error(y, y_ref), 1e-6) << "K=" << K;
    EXPECT_LT(relative_error(state, ref_state), 1e-12) << "K=" << K;
  }
}

TEST(OpsConv1d, StepLoopReproducesForward) {
  Rng rng(33);
  const int64_t batch = 2, L = 9, C = 21, K = 4;
  for (DType wt : {DType::f32, DType::bf16}) {
    ConvInputs in = make_inputs(DType::f32, wt, true, true, false, rng, batch, L, C, K);
    ConvOutputs full = causal_conv1d_forward(in);
    Tensor state = in.initial_state.clone(), ref_state = in.initial_state.to(DType::f64);
    for (int64_t t = 0; t < L; ++t) {
      ConvInputs step = in;
      std::vector<double> token;
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t c = 0; c < C; ++c) token.push_back(in.x.item((b * L + t) * C + c));
      step.x = Tensor::from_vector(token, {batch, C}, DType::f32);
      Tensor y = causal_conv1d_step(step, state);
      Tensor y_ref = ref::causal_conv1d_step(step, ref_state);
      std::vector<double> expected;
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t c = 0; c < C; ++c) expected.push_back(full.out.item((b * L + t) * C + c));
      Tensor expected_t = Tensor::from_vector(expected, {batch, C}, DType::f64);
      EXPECT_LT(relative_error(y, expected_t), 1e-6) << "t=" << t;
      EXPECT_LT(relative_error(y_ref, expected_t), 1e-6) << "t=" << t;
    }
    EXPECT_EQ(relative_error(state, full.final_state), 0.0);
    EXPECT_LT(relative_error(ref_state, full.final_state), 1e-12);
  }
}

TEST(OpsConv1d, ReferenceBackwardMatchesFiniteDifferences) {
  Rng rng(34);
  for (bool silu : {true, false}) {
    ConvInputs in = make_inputs(DType::f64, DType::f64, silu, true, true, rng, 3, 5, 3, 4);
    Tensor dout = random_tensor(in.x.shape(), DType::f64, rng);
    auto loss = [&] { return testing::dot(ref::causal_conv1d_forward(in).out, dout); };
    ConvGrads g = ref::causal_conv1d_backward(in, dout);
    EXPECT_LT(relative_error(g.dx, testing::numeric_gradient(in.x, loss)), 1e-7);
    EXPECT_LT(relative_error(g.dweight, testing::numeric_gradient(in.weight, loss)), 1e-7);
    EXPECT_LT(relative_error(g.dbias, testing::numeric_gradient(in.bias, loss)), 1e-7);
    EXPECT_LT(relative_error(g.dinitial_state, testing::numeric_gradient(in.initial_state, loss)), 1e-7);
  }
}

TEST(OpsConv1d, BadInputsNameTheTensor) {
  Rng rng(35);
  ConvInputs in = make_inputs(DType::f32, DType::f32, true, true, true, rng);
  ConvInputs bad = in;
  bad.lengths = Tensor::from_vector({11, 12, 3}, {3}, DType::i32);
  EXPECT_ERROR_MENTIONS(causal_conv1d_forward(bad), "conv lengths: lengths[1] = 12");
  bad = in;
  bad.weight = random_tensor({36, 4}, DType::f32, rng);
  EXPECT_ERROR_MENTIONS(causal_conv1d_forward(bad), "conv weight");
  bad = in;
  bad.initial_state = random_tensor({3, 37, 4}, DType::f32, rng);
  EXPECT_ERROR_MENTIONS(causal_conv1d_forward(bad), "conv initial_state");
  Tensor state = random_tensor({3, 37, 2}, DType::f32, rng);
  ConvInputs step = in;
  step.x = random_tensor({3, 37}, DType::f32, rng);
  EXPECT_ERROR_MENTIONS(causal_conv1d_step(step, state), "conv state");
  // The checkpoint layout [C, 1, K] is accepted as is.
  ConvInputs checkpoint_layout = in;
  checkpoint_layout.weight = in.weight.view({37, 1, 4});
  EXPECT_LT(relative_error(causal_conv1d_forward(checkpoint_layout).out, causal_conv1d_forward(in).out), 1e-12);
}

}  // namespace
}  // namespace mamba::ops
