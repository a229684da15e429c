#include <gtest/gtest.h>

#include "op_testing.h"
#include "ops/lti_scan.h"

namespace mamba::ops {
namespace {

using testing::dot;
using testing::numeric_gradient;
using testing::random_tensor;

LtiScanInputs random_inputs(int64_t batch, int64_t length, int64_t dim, int64_t n, DType dtype, uint64_t seed) {
  Rng rng(seed);
  LtiScanInputs in;
  in.u = random_tensor({batch, length, dim}, dtype, rng);
  in.z = random_tensor({batch, length, dim}, dtype, rng);
  in.A = random_tensor({dim, n}, dtype, rng, -2.0, -0.1);
  in.B = random_tensor({dim, n}, dtype, rng);
  in.C = random_tensor({dim, n}, dtype, rng);
  in.D = random_tensor({dim}, dtype, rng);
  in.delta_bias = random_tensor({dim}, dtype, rng, -3.0, 0.5);
  return in;
}

TEST(LtiScan, CpuMatchesReference) {
  LtiScanInputs in = random_inputs(2, 129, 37, 16, DType::f32, 1);
  Rng rng(2);
  Tensor dout = random_tensor(in.u.shape(), DType::f32, rng);
  EXPECT_LT(relative_error(cpu::lti_scan_forward(in), ref::lti_scan_forward(in)), 1e-5);
  LtiScanGrads fast = cpu::lti_scan_backward(in, dout), exact = ref::lti_scan_backward(in, dout);
  EXPECT_LT(relative_error(fast.du, exact.du), 1e-5);
  EXPECT_LT(relative_error(fast.dz, exact.dz), 1e-5);
  EXPECT_LT(relative_error(fast.dA, exact.dA), 1e-5);
  EXPECT_LT(relative_error(fast.dB, exact.dB), 1e-5);
  EXPECT_LT(relative_error(fast.dC, exact.dC), 1e-5);
  EXPECT_LT(relative_error(fast.dD, exact.dD), 1e-5);
  EXPECT_LT(relative_error(fast.ddelta_bias, exact.ddelta_bias), 1e-5);
}

TEST(LtiScan, ReferenceGradientsMatchFiniteDifferences) {
  LtiScanInputs in = random_inputs(2, 6, 3, 4, DType::f64, 3);
  Rng rng(4);
  Tensor dout = random_tensor(in.u.shape(), DType::f64, rng);
  LtiScanGrads g = ref::lti_scan_backward(in, dout);
  auto loss = [&] { return dot(ref::lti_scan_forward(in), dout); };
  for (auto [input, grad, name] : {std::tuple{&in.u, &g.du, "u"},
                                   {&in.z, &g.dz, "z"},
                                   {&in.A, &g.dA, "A"},
                                   {&in.B, &g.dB, "B"},
                                   {&in.C, &g.dC, "C"},
                                   {&in.D, &g.dD, "D"},
                                   {&in.delta_bias, &g.ddelta_bias, "delta_bias"}})
    EXPECT_LT(relative_error(*grad, numeric_gradient(*input, loss)), 1e-7) << name;
}

TEST(LtiScan, ShapeMismatchNamesTheTensor) {
  LtiScanInputs in = random_inputs(1, 4, 3, 2, DType::f32, 5);
  in.C = Tensor::zeros({3, 3}, DType::f32);
  EXPECT_ERROR_MENTIONS(lti_scan_forward(in), "LTI scan: C");
}

}  // namespace
}  // namespace mamba::ops
