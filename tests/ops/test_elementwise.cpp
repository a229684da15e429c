#include <gtest/gtest.h>

#include <cmath>

#include "core/threads.h"
#include "op_testing.h"
#include "ops/cpu/vec.h"
#include "ops/elementwise.h"

namespace mamba::ops {
namespace {

using testing::random_tensor;

TEST(OpsElementwise, AddAndScale) {
  set_num_threads(2);
  Rng rng(61);
  // Large enough to be split over threads.
  Tensor a = random_tensor({301, 117}, DType::f32, rng), b = random_tensor({301, 117}, DType::f32, rng);
  std::vector<double> x = a.to_double_vector(), y = b.to_double_vector();
  add_(a, b);
  scale_(a, -0.5);
  std::vector<double> expected(x.size());
  for (size_t i = 0; i < x.size(); ++i) expected[i] = (double(float(x[i] + y[i]))) * -0.5;
  EXPECT_LT(relative_error(a, Tensor::from_vector(expected, {301, 117}, DType::f64)), 1e-7);
  EXPECT_ERROR_MENTIONS(add_(a, random_tensor({301, 116}, DType::f32, rng)), "add_ operand b");
}

// A = −exp(A_log) from f32 and bf16 parameters, and the chain rule dA_log += dA ⊙ A.
TEST(OpsElementwise, NegativeExpAndAddProduct) {
  set_num_threads(2);
  Rng rng(63);
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor a_log = random_tensor({37, 16}, dtype, rng);
    const Tensor a = negative_exp(a_log);
    EXPECT_EQ(a.dtype(), DType::f32);
    std::vector<double> expected;
    for (double v : a_log.to_double_vector()) expected.push_back(-std::exp(v));
    EXPECT_LT(relative_error(a, Tensor::from_vector(expected, {37, 16}, DType::f64)), 1e-6) << dtype_name(dtype);
  }
  // Large enough to be split over threads.
  Tensor sum = random_tensor({301, 117}, DType::f32, rng);
  const Tensor b = random_tensor({301, 117}, DType::f32, rng), c = random_tensor({301, 117}, DType::f32, rng);
  const std::vector<double> s0 = sum.to_double_vector(), bv = b.to_double_vector(), cv = c.to_double_vector();
  add_product_(sum, b, c);
  std::vector<double> expected(s0.size());
  for (size_t i = 0; i < s0.size(); ++i) expected[i] = s0[i] + bv[i] * cv[i];
  EXPECT_LT(relative_error(sum, Tensor::from_vector(expected, {301, 117}, DType::f64)), 1e-6);
  EXPECT_ERROR_MENTIONS(add_product_(sum, b, random_tensor({301, 116}, DType::f32, rng)), "add_product_ operand c");
}

TEST(OpsElementwise, SplitThenConcatRoundTrips) {
  Rng rng(62);
  Tensor x = random_tensor({2, 5, 23}, DType::f32, rng);
  std::vector<Tensor> parts = split_columns(x, {7, 0, 16});
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].shape(), (Shape{2, 5, 7}));
  EXPECT_EQ(parts[1].shape(), (Shape{2, 5, 0}));
  EXPECT_EQ(parts[2].shape(), (Shape{2, 5, 16}));
  EXPECT_EQ(parts[2].item(0), x.item(7));
  EXPECT_EQ(parts[0].item(7 + 3), x.item(23 + 3));
  Tensor back = concat_columns(parts);
  EXPECT_EQ(back.shape(), x.shape());
  EXPECT_EQ(relative_error(back, x), 0.0);
  Tensor ids = Tensor::from_vector({1, 2, 3, 4}, {2, 2}, DType::i64);
  EXPECT_EQ(split_columns(ids, {1, 1})[1].item(1), 4);
}

TEST(OpsElementwise, BadWidthsAndPartsAreErrors) {
  Rng rng(63);
  Tensor x = random_tensor({4, 10}, DType::f32, rng);
  EXPECT_ERROR_MENTIONS(split_columns(x, {3, 3}), "widths sum to 6");
  EXPECT_ERROR_MENTIONS(concat_columns({x, random_tensor({3, 2}, DType::f32, rng)}), "part 1");
  EXPECT_ERROR_MENTIONS(concat_columns({x, random_tensor({4, 2}, DType::bf16, rng)}), "dtype bf16");
}

TEST(OpsElementwise, CopyAllCopiesEveryPairAndNamesABadOne) {
  Rng rng(64);
  std::vector<Tensor> src = {random_tensor({3, 5, 2}, DType::f32, rng), random_tensor({7}, DType::f32, rng)};
  std::vector<Tensor> dst = {Tensor::zeros({3, 5, 2}, DType::f32), Tensor::zeros({7}, DType::f32)};
  copy_all_(dst, src);
  for (size_t i = 0; i < src.size(); ++i) EXPECT_EQ(dst[i].to_double_vector(), src[i].to_double_vector()) << i;
  EXPECT_ERROR_MENTIONS(copy_all_(dst, {src[0]}), "2 destinations for 1 sources");
  EXPECT_ERROR_MENTIONS(copy_all_(dst, {src[0], random_tensor({6}, DType::f32, rng)}), "copy_all_ pair 1 source");
  EXPECT_ERROR_MENTIONS(copy_all_(dst, {src[0], random_tensor({7}, DType::bf16, rng)}), "copy_all_ pair 1 source");
}

}  // namespace
}  // namespace mamba::ops

namespace mamba::ops::cpu {
namespace {

TEST(OpsCpuVec, VectorisedExpAndSiluMatchTheLibrary) {
  std::vector<float> x;
  for (int i = 0; i <= 2000; ++i) x.push_back(-100.0f + 0.0943f * float(i));  // [−100, 88.6], not a multiple of 16
  std::vector<float> e = x, s = x;
  exp_shifted_inplace(e.data(), int64_t(e.size()), 0.5f);
  silu_inplace(s.data(), int64_t(s.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double want_exp = std::exp(double(x[i] - 0.5f)), want_silu = double(x[i]) / (1 + std::exp(-double(x[i])));
    ASSERT_NEAR(e[i], want_exp, 3e-7 * want_exp + 1e-35) << "x = " << x[i];
    ASSERT_NEAR(s[i], want_silu, 3e-7 * std::abs(want_silu) + 1e-35) << "x = " << x[i];
  }
  std::vector<float> nan(17, NAN);
  exp_shifted_inplace(nan.data(), 17, 0.0f);
  silu_inplace(nan.data() + 1, 16);
  for (float v : nan) EXPECT_TRUE(std::isnan(v));
}

}  // namespace
}  // namespace mamba::ops::cpu
